"""The `moe-ts` command: one subcommand per entry point, each also runnable as `python -m <module>`.

    moe-ts prepare  --out CORPUS [...]                      (data_prep.prepare)
    moe-ts check    --corpus CORPUS [...]                   (data_prep.leak_check)
    moe-ts pretrain --config configs/tiny.yaml --data CORPUS --out RUN [--resume]   (pretrain.train)
    moe-ts eval     --checkpoint DIR --suite monash|lsf|zeroshot|all --out DIR      (eval.run)
    moe-ts forecast --checkpoint DIR --input FILE.tsf|FILE.csv [--horizon H] --out forecasts.csv (cli.forecast)
    moe-ts export   --checkpoint DIR --eval EVAL_DIR --out RELEASE                  (cli.export)
    moe-ts centroids --checkpoint DIR --data CORPUS --out DIR [--num-windows N]     (pretrain.centroids)
    moe-ts finetune --checkpoint DIR --method msft|full|head|lora --dataset NAME|--csv FILE --out DIR (finetune.run)
    moe-ts finetune --method time-llm --llm NAME_OR_DIR [--soft-prompt N] --dataset NAME|--csv FILE --out DIR
    moe-ts distill  --teacher DIR --dataset NAME|--data CORPUS --context L --horizon H --out DIR (distill.train)
    moe-ts convert  --from uni2ts SRC --out DIR                                     (cli.convert)

Errors in the user's input (missing or malformed files, bad options, mismatched artefacts) are printed as one
line on stderr with a non-zero exit; `moe-ts --debug COMMAND ...` shows the traceback instead.
A mistyped option is one line too, with a pointer to `moe-ts COMMAND --help`; `moe-ts --version` prints the version.
Ctrl-C is one line too, `moe-ts COMMAND: interrupted (what was kept)`, and exit status 130 (128 + SIGINT): a
command that keeps work raises `KeyboardInterrupt(what it kept)`, the others write their output only once complete
(`KEPT_ON_INTERRUPT`). `pretrain` checkpoints at the next step and prints its own line (pretrain/interrupt.py).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn

from moe_ts.cpu_allocator import tune_cpu_allocator
from moe_ts.errors import is_user_error, one_line_error

COMMANDS = {
    "prepare": ("data_prep.prepare", "build the Arrow pretraining corpus (drops evaluation test windows)"),
    "check": ("data_prep.leak_check", "prove no evaluation test window is in a corpus"),
    "pretrain": ("pretrain.train", "pretrain a model with DeepSpeed"),
    "eval": ("eval.run", "zero-shot evaluation: results.csv, results.md and plots"),
    "forecast": ("cli.forecast", "forecast a .tsf or CSV file into a CSV of means and quantiles"),
    "export": ("cli.export", "release folder: checkpoint + model card with the evaluation table"),
    "centroids": ("pretrain.centroids", "centroid-gated MoE model from a pretrained one (k-means of FFN inputs)"),
    "finetune": ("finetune.run", "finetune a model on one dataset (MSFT multi-scale, full, head or LoRA)"),
    "distill": ("distill.train", "distil a model into an MLP student (TimeDistill) for cheap serving"),
    "convert": ("cli.convert", "convert a released uni2ts Moirai-MoE checkpoint into a moe-ts model folder"),
    "data": ("cli.data", "list the evaluation datasets (available / downloadable / manual) and download them"),
}

# What an interrupted command leaves, when it does not say itself (KeyboardInterrupt's argument).
_UNTOUCHED = "--out untouched: it is written only once complete; the next run removes the partial copy"
KEPT_ON_INTERRUPT = {
    "prepare": _UNTOUCHED, "check": "nothing to keep: the check writes nothing", "eval": _UNTOUCHED,
    "forecast": "--out untouched: the forecasts are written only once complete",
    "export": "--out is written only once complete (an interrupted upload leaves the written --out in place)",
    "centroids": _UNTOUCHED, "finetune": _UNTOUCHED, "distill": _UNTOUCHED,
    "convert": _UNTOUCHED, "data": "finished downloads kept; a partial one resumes on the next `moe-ts data download`",
}
INTERRUPTED_EXIT = 128 + signal.SIGINT
TRAINING_COMMANDS = ("pretrain", "finetune", "distill")


def interrupted_line(command: str, err: KeyboardInterrupt) -> str:
    """The one line printed for a Ctrl-C: what the command kept (its own words if it gave them)."""
    kept = str(err.args[0]) if err.args else KEPT_ON_INTERRUPT.get(command, "nothing kept")
    return f"moe-ts {command}: interrupted ({kept})"


def _usage() -> str:
    lines = ["usage: moe-ts [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`moe-ts COMMAND --help` shows a command's arguments; `--debug` shows the traceback of an error.")
    lines.append("See README.md (\"Using it\") for the whole workflow.")
    return "\n".join(lines)


def version() -> str:
    """The installed moe-ts version (setup.py's, via the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("moe-ts")
    except PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


@contextmanager
def one_line_usage_errors(command: str) -> Iterator[None]:
    """argparse's errors as one line and a pointer to --help, not the whole usage (restored after)."""
    def error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
        parser.exit(2, f"moe-ts {command}: error: {message} (see `moe-ts {command} --help`)\n")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error  # type: ignore[assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"moe-ts {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"moe-ts: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        if name in TRAINING_COMMANDS:  # freed tensors stay in the heap: no page faults per step (moe_ts/cpu_allocator.py)
            tune_cpu_allocator()
        module = importlib.import_module(COMMANDS[name][0])
        with one_line_usage_errors(name):
            result = module.main(rest)
    except KeyboardInterrupt as err:
        if debug:
            raise
        print(interrupted_line(name, err), file=sys.stderr)
        return INTERRUPTED_EXIT
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):  # argparse and the commands have printed their message already
            return int(exit_.code or 0)
        if debug:
            raise
        print(f"moe-ts {name}: error: {one_line_error(Exception(exit_.code))}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - reported in one line (see one_line_error), re-raised with --debug
        if debug or not is_user_error(err):
            raise
        print(f"moe-ts {name}: error: {one_line_error(err)}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
