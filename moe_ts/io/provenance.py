"""What an artefact was made from: the training record of a model folder and the weights an evaluation used.

- `training.json` beside a trained model's weights: steps done and planned, whether the run finished (or why
  it stopped), the corpus fingerprint and the datasets it held. Written by `moe-ts pretrain`; the model card
  shows it.
- `checkpoint.json` in an `moe-ts eval --out` folder: the checkpoint evaluated, the SHA-256 of its
  `model.safetensors` and the decoding, so `moe-ts export` can refuse to pair an evaluation with other weights.
- `conversion.json` beside converted weights (`moe-ts convert`): the uni2ts source, its weights' SHA-256, the
  licence. Every folder made from such weights (export, finetune, distill, centroids, `pretrain --init`) carries
  it on (`derived_records`; RUN/final's training.json holds it as "conversion"), and its card credits the source
  and names the licence (`card_fields`): the weights stay Salesforce's, under their terms.
- finetune.json / distill.json / centroids.json: what the deriving command did; `card_fields` turns a folder's
  records into its card's origin, training, intended use, licence and datasets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moe_ts.io.hub import WEIGHTS_NAME, file_sha256
from moe_ts.io.model_card import training_data_summary

TRAINING_FILE = "training.json"
EVAL_SOURCE_FILE = "checkpoint.json"
CONVERSION_FILE = "conversion.json"
FINETUNE_FILE, DISTILL_FILE, CENTROIDS_FILE = "finetune.json", "distill.json", "centroids.json"
RECORD_FILES = (TRAINING_FILE, CONVERSION_FILE, FINETUNE_FILE, DISTILL_FILE, CENTROIDS_FILE)  # travel with weights
UNI2TS_CREDIT = ("Salesforce AI Research, [uni2ts](https://github.com/SalesforceAIResearch/uni2ts); Liu et al., "
                 "\"Moirai-MoE: Empowering Time Series Foundation Models with Sparse Mixture of Experts\", 2024")


class ProvenanceError(ValueError):
    """Two artefacts that must belong together do not."""


def weights_fingerprint(folder: str | Path) -> str:
    """SHA-256 (hex) of a model folder's weights file."""
    return file_sha256(Path(folder) / WEIGHTS_NAME)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None when absent; ProvenanceError naming the file when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProvenanceError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ProvenanceError(f"{path}: expected a JSON object")
    return data


def read_training_info(model_folder: str | Path) -> dict[str, Any] | None:
    """The training record of a model folder, None when it has none (e.g. converted weights)."""
    return read_json(Path(model_folder) / TRAINING_FILE)


def training_summary(info: dict[str, Any] | None) -> str:
    """One sentence for the model card."""
    if not info:
        return "No training record (`training.json`) was found beside these weights."
    step, planned = info.get("step"), info.get("planned_steps")
    if info.get("finished"):
        state = f"finished: {step} of {planned} planned optimizer steps"
    else:
        state = (f"NOT finished: stopped at step {step} of {planned} planned optimizer steps "
                 f"({info.get('reason', 'unknown reason')}); the learning-rate schedule was not completed")
    return f"Training {state}."


def write_eval_source(out: str | Path, checkpoint: str | Path | None, decoding: str | None = None) -> None:
    """Record in an evaluation folder which weights were evaluated (None: a baseline, no weights) and how."""
    record: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint), "weights_sha256": None,
                              "decoding": decoding}
    if checkpoint is not None:
        record["weights_sha256"] = weights_fingerprint(checkpoint)
    (Path(out) / EVAL_SOURCE_FILE).write_text(json.dumps(record, indent=1) + "\n")


def check_eval_source(eval_dir: str | Path, checkpoint: str | Path) -> None:
    """ProvenanceError unless `eval_dir` was made from exactly the weights in `checkpoint`."""
    path = Path(eval_dir) / EVAL_SOURCE_FILE
    record = read_json(path)
    if record is None:
        raise ProvenanceError(f"{path}: missing, so the evaluation cannot be matched to {checkpoint}; "
                              f"rerun `moe-ts eval --checkpoint {checkpoint} --out {eval_dir}`")
    mine = weights_fingerprint(checkpoint)
    if record.get("weights_sha256") != mine:
        raise ProvenanceError(f"{eval_dir}: evaluates other weights ({record.get('checkpoint')}, sha256 "
                              f"{str(record.get('weights_sha256'))[:12]}) than {checkpoint} (sha256 {mine[:12]}); "
                              f"rerun `moe-ts eval --checkpoint {checkpoint} --out {eval_dir}`")


def read_conversion(folder: str | Path) -> dict[str, Any] | None:
    """The conversion record the weights in `folder` descend from: its conversion.json, else the "conversion"
    entry of its training.json (RUN/final of `pretrain --init CONVERTED`); None for our own weights."""
    folder = Path(folder)
    record = read_json(folder / CONVERSION_FILE)
    if record is None:
        record = (read_json(folder / TRAINING_FILE) or {}).get("conversion")
    return record if isinstance(record, dict) else None


def conversion_credit(record: dict[str, Any]) -> str:
    """One sentence crediting converted weights' source."""
    licence = f" (licence: {record['license']})" if record.get("license") else ""
    return (f"The weights descend from the uni2ts Moirai-MoE checkpoint `{record.get('source', '?')}` ({UNI2TS_CREDIT}), "
            f"converted by `moe-ts convert --from uni2ts`; moe-ts did not pretrain them, and the source's licence and "
            f"terms of use apply{licence}.")


def folder_records(folder: str | Path) -> dict[str, dict[str, Any]]:
    """{file name: content} of the provenance records a model folder holds (`RECORD_FILES`)."""
    found = {name: read_json(Path(folder) / name) for name in RECORD_FILES}
    return {name: record for name, record in found.items() if record is not None}


def record_files(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The records as the files to write beside the weights ({name: JSON text})."""
    return {name: json.dumps(record, indent=1) + "\n" for name, record in records.items()}


def _name(path: Any) -> str:
    return Path(str(path)).name if path else "?"


def card_fields(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The model card's origin, training, intended use, licence and datasets, from a folder's records: what
    the folder is, what it was made from and whose weights it carries."""
    conversion = records.get(CONVERSION_FILE) or (records.get(TRAINING_FILE) or {}).get("conversion")
    credit = "" if not isinstance(conversion, dict) else " " + conversion_credit(conversion)
    info = records.get(TRAINING_FILE)
    fields: dict[str, Any] = {}
    if FINETUNE_FILE in records:
        ft = records[FINETUNE_FILE]
        method, dataset, result = ft.get("config", {}).get("method", "?"), ft.get("dataset", "?"), ft.get("result", {})
        fields["origin"] = f"Finetuned (`{method}`) by `moe-ts finetune` from `{_name(ft.get('checkpoint'))}`.{credit}"
        fields["training"] = (f"Finetuned with `{method}` on `{dataset}` (its training split; early stopping on its "
                              f"validation split): best validation loss {result.get('best_val', float('nan')):.4f} at "
                              f"step {result.get('best_step')} of {result.get('steps_run')} (before finetuning "
                              f"{result.get('zero_shot_val', float('nan')):.4f}).")
        fields["intended_use"] = (f"Forecasting `{dataset}` and series like it. The model was finetuned on `{dataset}`'s "
                                  "training split: its numbers on that dataset are not zero-shot.")
    elif DISTILL_FILE in records:
        fields["training"] = records[DISTILL_FILE].get("summary", "") + credit  # the student's card has no origin
    elif CENTROIDS_FILE in records:
        report = records[CENTROIDS_FILE]
        fields["origin"] = (f"A centroid-gated model made by `moe-ts centroids` from `{_name(report.get('source'))}` "
                            f"({report.get('num_experts')} experts, top-{report.get('top_k')}, "
                            f"{report.get('select')} centroids).{credit}")
        fields["training"] = (f"No gradient training: per-layer centroids from k-means over the FFN inputs of "
                              f"{report.get('num_windows')} corpus windows (`{_name(report.get('corpus'))}`), experts "
                              f"from {report.get('experts_from', 'the source')}.")
        fields["intended_use"] = ("A starting point for `moe-ts pretrain --init`: the gates are fitted, not trained; "
                                  "forecast with it only after that training.")
    elif info is not None:
        fields["training"] = training_summary(info)
        if info.get("init"):
            fields["origin"] = (f"A Moirai-MoE-style sparse mixture-of-experts forecaster trained by moe-ts, starting "
                                f"from the weights of `{_name(info['init'])}`.{credit}")
    elif isinstance(conversion, dict):
        fields["origin"] = conversion_credit(conversion)
        fields["training"] = "None by moe-ts: the weights are converted (see the top of this card)."
    if info is not None and info.get("datasets"):
        fields["datasets"] = list(info["datasets"])
        fields["training_data"] = training_data_summary(info)
    if isinstance(conversion, dict) and conversion.get("license"):
        fields["license"] = conversion["license"]
    return fields


def derived_records(source: str | Path, own: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records of a folder made from `source` by a command whose own record is `own`: the conversion it
    descends from travels on."""
    record = read_conversion(source)
    return {**({CONVERSION_FILE: record} if record is not None else {}), **own}
