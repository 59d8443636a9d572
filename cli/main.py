"""The `moe-ts` command: one subcommand per entry point, each also runnable as `python -m <module>`.

    moe-ts prepare  --out CORPUS [...]                      (data_prep.prepare)
    moe-ts check    --corpus CORPUS [...]                   (data_prep.leak_check)
    moe-ts pretrain --config configs/tiny.yaml --data CORPUS --out RUN [--resume]   (pretrain.train)
    moe-ts eval     --checkpoint DIR --suite monash|lsf|zeroshot|all --out DIR      (eval.run)
    moe-ts forecast --checkpoint DIR --input FILE.tsf|FILE.csv [--horizon H] --out forecasts.csv (cli.forecast)
    moe-ts export   --checkpoint DIR --eval EVAL_DIR --out RELEASE                  (cli.export)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prepare": ("data_prep.prepare", "build the Arrow pretraining corpus (drops evaluation test windows)"),
    "check": ("data_prep.leak_check", "prove no evaluation test window is in a corpus"),
    "pretrain": ("pretrain.train", "pretrain a model with DeepSpeed"),
    "eval": ("eval.run", "zero-shot evaluation: results.csv, results.md and plots"),
    "forecast": ("cli.forecast", "forecast a .tsf or CSV file into a CSV of means and quantiles"),
    "export": ("cli.export", "release folder: checkpoint + model card with the evaluation table"),
}


def _usage() -> str:
    lines = ["usage: moe-ts COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`moe-ts COMMAND --help` shows a command's arguments.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"moe-ts: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
