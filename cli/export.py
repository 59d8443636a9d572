"""Release folder: the checkpoint plus a model card holding its evaluation table and training record.

    moe-ts export --checkpoint RUN/final --eval EVAL_DIR --out RELEASE_DIR [--push-to-hub REPO_ID] [--overwrite]

The evaluation folder must have been made from exactly these weights (its checkpoint.json records their
SHA-256, see `moe_ts.io.provenance`). An existing --out folder is replaced only when moe-ts wrote it, or with
--overwrite (see `moe_ts.io.output_dir`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from moe_ts.io.loading import load_model
from moe_ts.io.model_card import card_eval_table, training_data_summary
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import TRAINING_FILE, check_eval_source, read_training_info, training_summary


def export(checkpoint: str | Path, out: str | Path, eval_dir: str | Path | None = None, push_to_hub: str | None = None,
           overwrite: bool = False, license: str | None = None) -> Path:
    """Write `out` (config.json, model.safetensors, README.md with the eval table); optionally push it."""
    check_output_dir(out, overwrite)
    model = load_model(checkpoint)  # a MoE model or a distilled student
    info = read_training_info(checkpoint)
    card_kwargs: dict = {"model_name": Path(out).name, "training": training_summary(info),
                         "training_data": training_data_summary(info)}
    distill_record = Path(checkpoint) / "distill.json"  # a student's training record (distill/train.py)
    if info is None and distill_record.is_file():
        card_kwargs["training"] = json.loads(distill_record.read_text()).get("summary", "")
    if info and info.get("datasets"):
        card_kwargs["datasets"] = list(info["datasets"])
    if license:
        card_kwargs["license"] = license
    if push_to_hub:
        card_kwargs["repo_id"] = push_to_hub
    if eval_dir is not None:
        results = Path(eval_dir) / "results.md"
        if not results.is_file():
            raise FileNotFoundError(f"{results}: no evaluation results (run `moe-ts eval --out {eval_dir}` first)")
        check_eval_source(eval_dir, checkpoint)
        card_kwargs["eval_table"] = card_eval_table(results.read_text())
    model.save_pretrained(out, model_card_kwargs=card_kwargs, overwrite=overwrite)
    if info is not None:  # the release keeps the training record its card quotes
        (Path(out) / TRAINING_FILE).write_text(json.dumps(info, indent=1) + "\n")
    if push_to_hub:
        model.push_to_hub(push_to_hub, model_card_kwargs=card_kwargs)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe-ts export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a folder written by save_pretrained (e.g. RUN/final)")
    parser.add_argument("--eval", dest="eval_dir",
                        help="an `moe-ts eval --out` folder of this checkpoint whose results.md goes into the card")
    parser.add_argument("--out", required=True, help="release folder to write (a new, empty or moe-ts folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds files moe-ts did not write")
    parser.add_argument("--license", help="licence id for the card's metadata (default 'other'; see data/README.md "
                                          "for the training data's licences)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to the Hugging Face Hub (needs network)")
    args = parser.parse_args(argv)
    path = export(args.checkpoint, args.out, args.eval_dir, args.push_to_hub, args.overwrite, args.license)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
