"""Release folder: the checkpoint plus a model card holding its evaluation tables, training record and credits.

    moe-ts export --checkpoint MODEL_DIR [--eval EVAL_DIR ...] --out RELEASE_DIR [--license ID]
        [--push-to-hub REPO_ID] [--overwrite]

MODEL_DIR is any model folder (RUN/final, a finetuned, MSFT, converted, centroid or distilled one). Every
evaluation folder must have been made from exactly these weights (its checkpoint.json records their SHA-256,
see `moe_ts.io.provenance`); each gets its own table in the card, naming its decoding. The release keeps the
checkpoint's records (training.json, conversion.json, finetune.json, ...): converted weights keep their
source's credit and licence (--license overrides the licence id). An existing --out folder is replaced only
when it is a release moe-ts wrote, or with --overwrite (replace whatever it holds; never an input). The
folder is complete before anything is pushed; a failed push is one line and leaves it as it is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from moe_ts.io.hub import ModelFolderError
from moe_ts.io.loading import load_model
from moe_ts.io.model_card import eval_tables
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import card_fields, check_eval_source, folder_records, record_files


class PushError(RuntimeError):
    """The release folder is written, but the upload to the Hub failed."""


def export(checkpoint: str | Path, out: str | Path, eval_dir: str | Path | list | None = None,
           push_to_hub: str | None = None, overwrite: bool = False, license: str | None = None) -> Path:
    """Write `out` (config.json, model.safetensors, records, README.md with the eval tables); optionally push it."""
    eval_dirs = [] if eval_dir is None else [eval_dir] if isinstance(eval_dir, (str, Path)) else list(eval_dir)
    inputs = {"--checkpoint": checkpoint, **{f"--eval {e}": e for e in eval_dirs}}
    check_output_dir(out, overwrite, kind="release", inputs=inputs)
    model = load_model(checkpoint)  # a MoE model, an MSFT model or a distilled student
    records = folder_records(checkpoint)
    card_kwargs: dict = {"model_name": Path(out).name, **card_fields(records)}
    if license:
        card_kwargs["license"] = license
    if push_to_hub:
        card_kwargs["repo_id"] = push_to_hub
    tables = []
    for folder in eval_dirs:
        results = Path(folder) / "results.md"
        if not results.is_file():
            raise FileNotFoundError(f"{results}: no evaluation results (run `moe-ts eval --out {folder}` first)")
        check_eval_source(folder, checkpoint)
        tables.append((Path(folder).name, results.read_text()))
    if tables:
        card_kwargs["eval_table"] = eval_tables(tables)
    model.save_pretrained(out, model_card_kwargs=card_kwargs, overwrite=overwrite, folder_kind="release",
                          inputs=inputs, extra_files=record_files(records), remedy="pass --overwrite to replace it")
    if push_to_hub:
        try:
            model.push_to_hub(push_to_hub, model_card_kwargs=card_kwargs)
        except (ModelFolderError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - offline, refused, no access: the local folder is complete
            first = str(err).splitlines()[0] if str(err) else ""
            raise PushError(f"{out}: written, but the upload to the Hub as {push_to_hub} failed ({type(err).__name__}: "
                            f"{first}); push it later with `huggingface-cli upload {push_to_hub} {out}`") from err
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe-ts export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a model folder (e.g. RUN/final)")
    parser.add_argument("--eval", dest="eval_dir", action="append",
                        help="an `moe-ts eval --out` folder of this checkpoint whose results.md goes into the card "
                             "(repeat for several)")
    parser.add_argument("--out", required=True, help="release folder to write (new, empty or a moe-ts release)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    parser.add_argument("--license", help="licence id for the card's metadata (default: a converted source's, else "
                                          "'other'; see data/README.md for the training data's licences)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to the Hugging Face Hub (needs network)")
    args = parser.parse_args(argv)
    path = export(args.checkpoint, args.out, args.eval_dir, args.push_to_hub, args.overwrite, args.license)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
