"""Pretrain a Moirai-MoE-style model with DeepSpeed (docs/ARCHITECTURE.md §4).

    moe-ts pretrain --config configs/tiny.yaml --data CORPUS --out RUN [--resume] [--init MODEL_DIR]
        [--steps N] [--time-budget SECONDS] [--seed S] [--stop-at STEP] [--threads N]

Multi-process: `torchrun --nproc_per_node=2 -m pretrain.train ...` or `deepspeed --num_gpus=2 pretrain/train.py ...`
(multi-node and expert parallelism, `parallel.ep_size`: README "Multi-node pretraining").
Writes RUN/checkpoints/step-N (atomic), RUN/metrics.jsonl, RUN/config.yaml and, at the end, RUN/final
(the Hugging Face folder `MoiraiMoEModel.from_pretrained` loads, with training.json saying how far the
run got and whether it finished). `--resume` continues from the newest complete checkpoint with the same
batches and the same loss curve, after checking that the requested config matches RUN/config.yaml.
`--init MODEL_DIR` starts from the weights of a
Hugging Face folder (e.g. one written by `moe-ts centroids`) instead of a fresh model; the model
config is then MODEL_DIR's config.json and the YAML's `model:` section is replaced by it (config.yaml
records what ran). CLI flags override the YAML. CORPUS must be a finished `moe-ts prepare` output (complete manifest.json).
Ctrl-C or SIGTERM saves a checkpoint at the next step boundary and exits with one line (128 + the signal
number; pretrain/interrupt.py); `--resume` continues exactly. This module is the command; the run itself (set-up,
step loop, finish) is pretrain/trainer.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import torch

from data_prep.corpus import Corpus, CorpusError, check_manifest, open_corpus
from moe_ts.cpu_allocator import tune_cpu_allocator
from moe_ts.io.hub import ModelFolderError
from moe_ts.io.output_dir import OutputDirError
from moe_ts.typed_config import ConfigError
from pretrain.errors import CheckpointError
from pretrain.config import PretrainConfig, load_pretrain_config
from pretrain.interrupt import RunInterrupted
from pretrain.trainer import finish, run_steps, set_up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="moe-ts pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run YAML with model: and train: sections")
    p.add_argument("--data", required=True, help="corpus folder written by `moe-ts prepare`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, final model)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    p.add_argument("--init", help="Hugging Face model folder to start from (its config replaces model:)")
    p.add_argument("--steps", type=int, help="override train.steps (the schedule length)")
    p.add_argument("--time-budget", type=float, help="override train.time_budget_s (seconds, from start)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--threads", type=int, help="override train.num_threads (torch CPU threads per process; "
                                               "may differ on --resume)")
    p.add_argument("--stop-at", type=int, help="checkpoint and exit after this step, schedule unchanged "
                                               "(splits a run into chunks; continue with --resume)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by `deepspeed`
    return p.parse_args(argv)


def apply_overrides(run: PretrainConfig, args: argparse.Namespace) -> PretrainConfig:
    """CLI flags over the YAML values (validated again)."""
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.threads is not None:
        changes["num_threads"] = args.threads
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **changes)) if changes else run


def load_init(run: PretrainConfig, init: str) -> tuple[PretrainConfig, torch.nn.Module]:
    """The model of folder `init` and the run config with its model config in place of the YAML's."""
    from moe_ts.model import MoiraiMoEModel

    model = MoiraiMoEModel.from_pretrained(init)
    model.train()
    return dataclasses.replace(run, model=model.config), model


def train(run: PretrainConfig, corpus: Corpus, out: Path, *, resume: bool = False, stop_at: int | None = None,
          t_start: float | None = None, init_model: torch.nn.Module | None = None,
          init_path: str | None = None) -> dict:
    """Pretrain `run` on `corpus` into `out`: set up, run the steps, finish (pretrain/trainer.py); returns the
    summary dict (steps, final loss, seconds, paths).

    `init_model` (with `run.model` equal to its config, see `load_init`) replaces the fresh model.
    """
    t_start = time.time() if t_start is None else t_start
    session = set_up(run, corpus, out, resume=resume, t_start=t_start, init_model=init_model, init_path=init_path)
    return finish(session, run_steps(session, stop_at))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; configuration and corpus problems exit with a one-line error."""
    t_start = time.time()
    args = parse_args(argv)
    try:
        tune_cpu_allocator()  # also when launched by torchrun / deepspeed without the `moe-ts` command
        run = apply_overrides(load_pretrain_config(args.config), args)
        init_model = None
        if args.init is not None:
            run, init_model = load_init(run, args.init)
        corpus = open_corpus(args.data)
        check_manifest(args.data)
        train(run, corpus, Path(args.out), resume=args.resume, stop_at=args.stop_at, t_start=t_start,
              init_model=init_model, init_path=args.init)
    except (ConfigError, CorpusError, CheckpointError, OutputDirError, ModelFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except RunInterrupted as err:  # a checkpoint is saved: one line, no traceback
        if os.environ.get("RANK", "0") == "0":
            print(f"pretrain: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # outside the step loop, or a second Ctrl-C: nothing new was saved
        if os.environ.get("RANK", "0") == "0":
            print("pretrain: interrupted; nothing saved since the last checkpoint (--resume continues from it)",
                  file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
