"""Release folder: the checkpoint plus a model card holding its evaluation table.

    moe-ts export --checkpoint RUN/final --eval EVAL_DIR --out RELEASE_DIR [--push-to-hub REPO_ID]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from moe_ts.model import MoiraiMoEModel


def export(checkpoint: str | Path, out: str | Path, eval_dir: str | Path | None = None, push_to_hub: str | None = None) -> Path:
    """Write `out` (config.json, model.safetensors, README.md with the eval table); optionally push it."""
    model = MoiraiMoEModel.from_pretrained(checkpoint)
    card_kwargs: dict[str, str] = {"model_name": Path(out).name}
    if eval_dir is not None:
        results = Path(eval_dir) / "results.md"
        if not results.is_file():
            raise FileNotFoundError(f"{results}: no evaluation results (run `moe-ts eval --out {eval_dir}` first)")
        card_kwargs["eval_table"] = results.read_text()
    model.save_pretrained(out, model_card_kwargs=card_kwargs)
    if push_to_hub:
        model.push_to_hub(push_to_hub, model_card_kwargs=card_kwargs)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a folder written by save_pretrained (e.g. RUN/final)")
    parser.add_argument("--eval", dest="eval_dir", help="an `moe-ts eval --out` folder whose results.md goes into the card")
    parser.add_argument("--out", required=True)
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to the Hugging Face Hub (needs network)")
    args = parser.parse_args(argv)
    path = export(args.checkpoint, args.out, args.eval_dir, args.push_to_hub)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
