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
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from moe_ts.typed_config import ConfigError, save_file, to_dict
from moe_ts.io.hub import ModelFolderError
from moe_ts.io.output_dir import OutputDirError, check_output_dir, mark
from pretrain.checkpoint import (CheckpointError, check_checkpoint_layout, latest_checkpoint, list_checkpoints,
                                 load_checkpoint, remove_leftovers, save_checkpoint, save_final)
from pretrain.config import PretrainConfig, load_pretrain_config, train_flops_per_token
from pretrain.data import Corpus, CorpusError, WindowSampler, load_corpus
from pretrain.manifest import check_manifest, corpus_fingerprint
from pretrain.resume_check import check_resume_config
from pretrain.engine import StepStats, any_rank, build_engine, setup_distributed, train_step, unwrap
from pretrain.metrics import MetricsLog, expert_load_stats


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


def _record(step: int, stats: StepStats, tokens_per_s: float, mfu: float | None) -> dict:
    record = {
        "step": step, "loss": stats.loss, "nll": stats.nll, "aux": stats.aux_loss, "z": stats.z_loss,
        "lr": stats.lr, "grad_norm": stats.grad_norm, "tokens_per_s": tokens_per_s,
    }
    if mfu is not None:
        record["mfu"] = mfu
    return {**record, **expert_load_stats(stats.expert_counts)}


def _manifest_field(corpus_path: Path, key: str) -> object:
    """A field of the corpus manifest, None when there is none (a corpus built by other means)."""
    try:
        return check_manifest(corpus_path).get(key)
    except CorpusError:
        return None


def load_init(run: PretrainConfig, init: str) -> tuple[PretrainConfig, torch.nn.Module]:
    """The model of folder `init` and the run config with its model config in place of the YAML's."""
    from moe_ts.model import MoiraiMoEModel

    model = MoiraiMoEModel.from_pretrained(init)
    model.train()
    return dataclasses.replace(run, model=model.config), model


def train(run: PretrainConfig, corpus: Corpus, out: Path, *, resume: bool = False, stop_at: int | None = None,
          t_start: float | None = None, init_model: torch.nn.Module | None = None,
          init_path: str | None = None) -> dict:
    """The training loop; returns a summary dict (steps, final loss, seconds, paths).

    `init_model` (with `run.model` equal to its config, see `load_init`) replaces the fresh model.
    """
    t_start = time.time() if t_start is None else t_start
    tc = run.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    dist = setup_distributed(run.parallel.timeout_s)
    say = print if dist.is_main else (lambda *a, **k: None)
    run.parallel.check_world_size(dist.world_size)
    if not resume and list_checkpoints(out):
        raise CheckpointError(f"{out}: holds checkpoints already; pass --resume to continue it or pick a new --out")
    if resume:
        check_resume_config(run, out)  # before anything under `out` changes
        if latest_checkpoint(out) is not None:  # every rank, before any collective: a mismatch fails, not hangs
            check_checkpoint_layout(latest_checkpoint(out), dist.world_size, run.parallel.ep_size)
    if not resume or not list_checkpoints(out):  # config.yaml, metrics.jsonl... must not replace a user's files
        check_output_dir(out, remedy="pass --resume if it is a run to continue")
    fingerprint = corpus_fingerprint(corpus.path)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        mark(out, "run")
        for name in remove_leftovers(out):
            say(f"removed incomplete checkpoint leftover {out / 'checkpoints' / name}")
        save_file(run, out / ".config.tmp.yaml")  # atomic: other ranks may be reading it for --resume
        os.replace(out / ".config.tmp.yaml", out / "config.yaml")

    sampler = WindowSampler(corpus, patch_size=run.model.patch_size, seq_patches=run.model.max_seq_len,
                            min_window_patches=tc.min_window_patches,
                            max_windows_per_series=tc.max_windows_per_series, mixture=tc.mixture,
                            mixture_default=tc.mixture_default,
                            mixture_share=tc.mixture_share, seed=tc.seed, rank=dist.rank)
    say(f"corpus {corpus.path}: {len(corpus)} series, {len(sampler.dataset_names)} datasets; mixture "
        + ", ".join(f"{n}={p:.3f}" for n, p in zip(sampler.dataset_names, sampler.dataset_probs)))
    if sampler.num_unusable:
        say(f"corpus: {sampler.num_unusable} series are empty or all-missing and are never sampled")
    random.seed(tc.seed + dist.rank)
    np.random.seed(tc.seed + dist.rank)
    engine = build_engine(run, dist, init_model)
    if init_model is not None:
        say(f"initialised from {init_path}")
    model = unwrap(engine)
    total_params, active = parameter_counts(run)

    step = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = load_checkpoint(engine, ckpt, dist)
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        say(f"resumed from {ckpt} at step {step}")
    elif resume:
        say(f"no checkpoint in {out / 'checkpoints'}; starting at step 0")
    start_step = step
    ep = f", experts sharded over {run.parallel.ep_size} ranks" if run.parallel.ep_size > 1 else ""
    say(f"model: {total_params:,} parameters ({active:,} active); world size {dist.world_size}{ep}, "
        f"ZeRO-{tc.zero_stage}, {tc.dtype}; {tc.steps} steps of {tc.batch_size} x {run.model.max_seq_len} patches")

    # MFU counts every position the model computes (padding included), over all ranks.
    flops_per_step = tc.batch_size * run.model.max_seq_len * train_flops_per_token(
        active, run.model.num_layers, run.model.d_model, run.model.max_seq_len)
    peak_flops = None if tc.peak_tflops is None else tc.peak_tflops * 1e12 * dist.world_size
    metrics = MetricsLog(out, step, dist.is_main, tc.wandb_project, tc.wandb_mode, to_dict(run))
    micro = tc.micro_batch_size(dist.world_size)
    last: StepStats | None = None
    reason = "finished"
    interval_tokens, interval_time, interval_steps = 0, 0.0, 0
    total_tokens, total_time = 0, 0.0
    progress = None
    if dist.is_main:
        from tqdm import tqdm

        progress = tqdm(total=tc.steps, initial=step, desc="pretrain", dynamic_ncols=True, mininterval=1.0)
    try:
        while step < tc.steps:
            t0 = time.perf_counter()
            batches = [sampler.next_batch(micro) for _ in range(tc.grad_accum)]
            last = train_step(engine, batches, dist.device, tc.input_noise, tc.self_feed)
            dt = time.perf_counter() - t0
            step += 1
            if not np.isfinite(last.loss):
                raise FloatingPointError(f"step {step}: loss is {last.loss} (nll {last.nll}, aux {last.aux_loss})")
            interval_tokens += last.tokens
            interval_time += dt
            interval_steps += 1
            total_tokens += last.tokens
            total_time += dt
            over_budget = tc.time_budget_s is not None and time.time() - t_start >= tc.time_budget_s
            at_stop = stop_at is not None and step >= stop_at
            stop = any_rank(over_budget or at_stop, dist.device)
            if stop or step == tc.steps or step % tc.log_every == 0:
                seconds = max(interval_time, 1e-9)
                mfu = None if peak_flops is None else flops_per_step * interval_steps / seconds / peak_flops
                metrics.log(_record(step, last, interval_tokens / seconds, mfu))
                interval_tokens, interval_time, interval_steps = 0, 0.0, 0
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{last.loss:.4f}", lr=f"{last.lr:.2e}", refresh=False)
            if stop or step == tc.steps or step % tc.checkpoint_every == 0:
                save_checkpoint(engine, out, step, sampler.state_dict(), dist, tc.keep_checkpoints,
                                {"planned_steps": tc.steps, "finished": step >= tc.steps,
                                 "corpus_fingerprint": fingerprint})
            if stop:
                reason = "time budget reached" if over_budget else f"--stop-at {stop_at}"
                break
    finally:
        if progress is not None:
            progress.close()
        metrics.close()

    final = out / "final"
    finished = step >= tc.steps
    training = {"step": step, "planned_steps": tc.steps, "finished": finished,
                "reason": "finished" if finished else reason, "corpus": corpus.path.name,
                "corpus_fingerprint": fingerprint, "datasets": list(sampler.dataset_names),
                "exclude_eval": _manifest_field(corpus.path, "exclude_eval")}
    if init_path is not None:
        training["init"] = str(init_path)
    export = exportable_model(model, run)  # collective when the experts are sharded
    if dist.is_main:
        final = save_final(export, out, training)
    elapsed = time.time() - t_start
    summary = {
        "start_step": start_step, "step": step, "steps": tc.steps, "reason": reason,
        "final_loss": None if last is None else last.loss, "seconds": elapsed,
        "tokens_per_s": total_tokens / total_time if total_time else 0.0, "final": str(final),
    }
    if last is None:
        say(f"nothing to do: {out} is already at step {step} of {tc.steps}; wrote {final}")
    else:
        say(f"pretrain: steps {start_step}->{step} of {tc.steps} ({reason}) in {elapsed:.1f} s; "
            f"final loss {last.loss:.4f} (nll {last.nll:.4f}, aux {last.aux_loss:.4f}, z {last.z_loss:.4f}); "
            f"{summary['tokens_per_s']:.0f} tokens/s; model in {final}")
    if not finished:
        say(f"NOTE: {final} holds an UNFINISHED run (step {step} of {tc.steps}, {reason}); "
            f"its training.json and model card say so; continue with --resume")
    return summary


def parameter_counts(run: PretrainConfig) -> tuple[int, int]:
    """(all, active) parameters of the whole model, whatever share of the experts this rank holds."""
    from moe_ts.model import MoiraiMoEModel

    with torch.device("meta"):
        full = MoiraiMoEModel(run.model)
    return full.num_parameters(), full.num_parameters(active=True)


def exportable_model(model: torch.nn.Module, run: PretrainConfig) -> torch.nn.Module:
    """What the main rank saves as RUN/final: `model` itself, or with sharded experts a copy holding every
    expert, gathered over the main rank's expert-parallel group (whose ranks must all call this)."""
    from moe_ts.model import MoiraiMoEModel
    from pretrain.expert_parallel import expert_parallel_group
    from pretrain.expert_shards import gather_experts

    group = expert_parallel_group(model)
    if group is None or 0 not in torch.distributed.get_process_group_ranks(group):
        return model  # not sharded, or another copy of the experts (the main rank's group exports)
    experts = gather_experts(model)
    if experts is None:
        return model
    full = MoiraiMoEModel(run.model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k in full.state_dict()}
    state.update(experts)
    full.load_state_dict(state, strict=True)
    return full


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; configuration and corpus problems exit with a one-line error."""
    t_start = time.time()
    args = parse_args(argv)
    try:
        run = apply_overrides(load_pretrain_config(args.config), args)
        init_model = None
        if args.init is not None:
            run, init_model = load_init(run, args.init)
        corpus = load_corpus(args.data)
        check_manifest(args.data)
        train(run, corpus, Path(args.out), resume=args.resume, stop_at=args.stop_at, t_start=t_start,
              init_model=init_model, init_path=args.init)
    except (ConfigError, CorpusError, CheckpointError, OutputDirError, ModelFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
