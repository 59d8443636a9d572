"""What an artefact was made from: the training record of a model folder and the weights an evaluation used.

- `training.json` beside a trained model's weights: steps done and planned, whether the run finished (or why
  it stopped), the corpus fingerprint and the datasets it held. Written by `moe-ts pretrain`; the model card
  shows it.
- `checkpoint.json` in an `moe-ts eval --out` folder: the checkpoint evaluated and the SHA-256 of its
  `model.safetensors`, so `moe-ts export` can refuse to pair an evaluation with other weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from moe_ts.io.hub import WEIGHTS_NAME

TRAINING_FILE = "training.json"
EVAL_SOURCE_FILE = "checkpoint.json"


class ProvenanceError(ValueError):
    """Two artefacts that must belong together do not."""


def weights_fingerprint(folder: str | Path) -> str:
    """SHA-256 (hex) of a model folder's weights file."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_NAME, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_eval_source(out: str | Path, checkpoint: str | Path | None) -> None:
    """Record in an evaluation folder which weights were evaluated (None: a baseline, no weights)."""
    record: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint), "weights_sha256": None}
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
