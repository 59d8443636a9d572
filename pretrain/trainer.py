"""One pretraining run in three parts: `set_up`, `run_steps`, `finish` (docs/ARCHITECTURE.md §4).

`set_up` checks the run folder, writes RUN/config.yaml, builds the sampler and the DeepSpeed engine and
restores the newest checkpoint on --resume; `run_steps` trains until the schedule, the time budget or
--stop-at ends it, logging RUN/metrics.jsonl and writing checkpoints; `finish` writes RUN/final with its
training.json and prints the summary. `pretrain.train.train` calls the three in turn.
"""
from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.corpus import Corpus, corpus_fingerprint, manifest_field, manifest_weights
from moe_ts import cpu_allocator
from moe_ts.io.output_dir import check_output_dir, mark
from moe_ts.io.provenance import read_conversion
from moe_ts.typed_config import save_file, to_dict
from pretrain.checkpoint import (check_checkpoint_layout, latest_checkpoint, list_checkpoints,
                                 load_checkpoint, remove_leftovers, save_checkpoint, save_final)
from pretrain.config import PretrainConfig, train_flops_per_token
from pretrain.batch_sampler import VectorisedSampler
from pretrain.data import WindowSampler
from pretrain.variate_batch_sampler import AnyVariateVectorisedSampler
from pretrain.variate_groups import AnyVariateSampler
from pretrain.loader import BatchLoader
from pretrain.engine import DistInfo, StepStats, any_rank, build_engine, setup_distributed, train_step, unwrap
from pretrain.errors import CheckpointError
from pretrain.interrupt import RunInterrupted, StopSignals
from pretrain.metrics import MetricsLog, expert_load_stats
from pretrain.resume_check import check_resume_config


@dataclass
class Session:
    """What the set-up hands to the step loop and the finish."""

    run: PretrainConfig
    out: Path
    dist: DistInfo
    engine: Any  # the DeepSpeed engine
    sampler: WindowSampler | VectorisedSampler | BatchLoader
    corpus_path: Path
    fingerprint: str  # of the corpus (data_prep.corpus.corpus_fingerprint)
    start_step: int  # 0, or the step of the checkpoint resumed from
    active_params: int
    t_start: float  # time.time() when the command started (the time budget counts from it)
    init_path: str | None

    def say(self, *args: Any, **kwargs: Any) -> None:
        """print, on the main rank only."""
        if self.dist.is_main:
            print(*args, **kwargs)


@dataclass
class LoopResult:
    """Where the step loop stopped."""

    step: int
    reason: str  # "finished", "time budget reached" or "--stop-at N"
    last: StepStats | None  # of the last step run here; None when there was nothing to do
    tokens_per_s: float  # over the steps run here


# --- set-up ----------------------------------------------------------------------------------------------------


def set_up(run: PretrainConfig, corpus: Corpus, out: Path, *, resume: bool, t_start: float,
           init_model: torch.nn.Module | None = None, init_path: str | None = None) -> Session:
    """Distributed setup, run folder, sampler, engine and (on `resume`) the newest checkpoint restored."""
    tc = run.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    dist = setup_distributed(run.parallel.timeout_s)
    run.parallel.check_world_size(dist.world_size)
    _check_run_folder(run, out, dist, resume, {"--data": corpus.path, "--init": init_path})
    fingerprint = corpus_fingerprint(corpus.path)
    if dist.is_main:
        _write_run_folder(run, out)
    sampler = _sampler(run, corpus, dist)
    random.seed(tc.seed + dist.rank)
    np.random.seed(tc.seed + dist.rank)
    engine = build_engine(run, dist, init_model)
    total_params, active = parameter_counts(run)
    session = Session(run, out, dist, engine, sampler, corpus.path, fingerprint, 0, active, t_start, init_path)
    if init_model is not None:
        session.say(f"initialised from {init_path}")
    session.start_step = _restore(session, resume)
    _say_model(session, total_params)
    return session


def _check_run_folder(run: PretrainConfig, out: Path, dist: DistInfo, resume: bool,
                      inputs: dict[str, Any] | None = None) -> None:
    """Refuse a folder with checkpoints without --resume, a changed config or checkpoint layout with it, and
    a folder moe-ts did not write."""
    if not resume and list_checkpoints(out):
        raise CheckpointError(f"{out}: holds checkpoints already; pass --resume to continue it or pick a new --out")
    if resume:
        check_resume_config(run, out)  # before anything under `out` changes
        if latest_checkpoint(out) is not None:  # every rank, before any collective: a mismatch fails, not hangs
            check_checkpoint_layout(latest_checkpoint(out), dist.world_size, run.parallel.ep_size)
    if not resume or not list_checkpoints(out):  # config.yaml, metrics.jsonl... must not replace a user's files
        check_output_dir(out, remedy="pass --resume if it is a run to continue", kind="run", inputs=inputs,
                         replaces=False)


def _write_run_folder(run: PretrainConfig, out: Path) -> None:
    """Main rank: the marked run folder, checkpoint leftovers removed, RUN/config.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "run")
    for name in remove_leftovers(out):
        print(f"removed incomplete checkpoint leftover {out / 'checkpoints' / name}")
    save_file(run, out / ".config.tmp.yaml")  # atomic: other ranks may be reading it for --resume
    os.replace(out / ".config.tmp.yaml", out / "config.yaml")


def _sampler(run: PretrainConfig, corpus: Corpus, dist: DistInfo) -> WindowSampler | VectorisedSampler | BatchLoader:
    """This rank's sampler of packed batches; the main rank prints the mixture. The corpus manifest's per-dataset
    weights (`moe-ts prepare --weights`) scale the draw weights unless the run config names `train.mixture`."""
    tc = run.train
    weights = None if tc.mixture else manifest_weights(corpus.path)
    kind: type = VectorisedSampler if tc.sampler == "vectorised" else WindowSampler
    extra: dict[str, Any] = {}
    if tc.multivariate_share > 0:  # any-variate: the same samplers with multivariate groups
        kind = AnyVariateVectorisedSampler if tc.sampler == "vectorised" else AnyVariateSampler
        extra = {"multivariate_share": tc.multivariate_share, "max_variates": tc.max_variates}
    sampler = kind(corpus, **extra, patch_size=run.model.patch_size, seq_patches=run.model.max_seq_len,
                   min_window_patches=tc.min_window_patches, max_windows_per_series=tc.max_windows_per_series,
                   mixture=tc.mixture, mixture_default=tc.mixture_default, mixture_share=tc.mixture_share,
                   dataset_weights=weights, seed=tc.seed, rank=dist.rank)
    if tc.loader_workers:
        sampler = BatchLoader(sampler, tc.loader_workers, pin_memory=dist.device.type == "cuda")
    if dist.is_main:
        if weights:
            print(f"corpus {corpus.path}: dataset weights from its manifest ({len(weights)} datasets)")
        print(f"corpus {corpus.path}: {len(corpus)} series, {len(sampler.dataset_names)} datasets; mixture "
              + ", ".join(f"{n}={p:.3f}" for n, p in zip(sampler.dataset_names, sampler.dataset_probs)))
        if sampler.num_unusable:
            print(f"corpus: {sampler.num_unusable} series are empty or all-missing and are never sampled")
        if sampler.num_covariates:
            print(f"corpus: {sampler.num_covariates} covariate series are kept but never sampled as targets")
        if tc.multivariate_share > 0:
            print(f"corpus: {len(sampler.groups)} multivariate groups, drawn for {tc.multivariate_share:.0%} of the "
                  f"windows (at most {tc.max_variates} variates each)"
                  + (f"; {sampler.groups.num_unaligned} groups with variates of unequal length are left out"
                     if sampler.groups.num_unaligned else ""))
    return sampler


def _restore(session: Session, resume: bool) -> int:
    """The step to start at: the newest checkpoint's (engine, RNGs and sampler restored) or 0."""
    ckpt = latest_checkpoint(session.out) if resume else None
    if ckpt is not None:
        state = load_checkpoint(session.engine, ckpt, session.dist)
        session.sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        session.say(f"resumed from {ckpt} at step {step}")
        restored = _adamw_implementation(session.engine)
        if restored is not None and restored != session.run.train.fused_adamw:
            # The optimizer's param groups come back from the checkpoint, `fused` flag included; switching a
            # restored state to the other kernel is not done (CUDA's fused kernel wants its step counts on the GPU).
            session.say(f"the resumed AdamW keeps the checkpoint's {'fused' if restored else 'for-loop'} "
                        f"implementation (train.fused_adamw={session.run.train.fused_adamw} applies to new runs)")
        return step
    if resume:
        session.say(f"no checkpoint in {session.out / 'checkpoints'}; starting at step 0")
    return 0


def _adamw_implementation(engine: Any) -> bool | None:
    """True / False: the engine's torch AdamW runs the fused kernel or not; None: no such optimizer."""
    opt = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps torch's optimizer
    groups = getattr(opt, "param_groups", None)
    return bool(groups[0].get("fused")) if groups else None


def _say_model(session: Session, total_params: int) -> None:
    run, tc, active = session.run, session.run.train, session.active_params
    ep = f", experts sharded over {run.parallel.ep_size} ranks" if run.parallel.ep_size > 1 else ""
    session.say(f"model: {total_params:,} parameters ({active:,} active); world size {session.dist.world_size}{ep}, "
                f"ZeRO-{tc.zero_stage}, {tc.dtype}; {tc.steps} steps of {tc.batch_size} x {run.model.max_seq_len} "
                f"patches; CPU malloc {cpu_allocator.state()}")


def parameter_counts(run: PretrainConfig) -> tuple[int, int]:
    """(all, active) parameters of the whole model, whatever share of the experts this rank holds."""
    from moe_ts.model import MoiraiMoEModel

    with torch.device("meta"):
        full = MoiraiMoEModel(run.model)
    return full.num_parameters(), full.num_parameters(active=True)


# --- the step loop ---------------------------------------------------------------------------------------------


@dataclass
class _Meter:
    """Tokens and seconds of the steps since the last metrics record, and of all steps run here."""

    tokens: int = 0
    seconds: float = 0.0
    steps: int = 0
    total_tokens: int = 0
    total_seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds
        self.steps += 1
        self.total_tokens += tokens
        self.total_seconds += seconds

    def reset_interval(self) -> None:
        self.tokens, self.seconds, self.steps = 0, 0.0, 0


def _record(step: int, stats: StepStats, tokens_per_s: float, mfu: float | None) -> dict:
    """One line of RUN/metrics.jsonl."""
    record = {
        "step": step, "loss": stats.loss, "nll": stats.nll, "aux": stats.aux_loss, "z": stats.z_loss,
        "lr": stats.lr, "grad_norm": stats.grad_norm, "tokens_per_s": tokens_per_s,
    }
    if mfu is not None:
        record["mfu"] = mfu
    return {**record, **expert_load_stats(stats.expert_counts)}


def run_steps(session: Session, stop_at: int | None = None) -> LoopResult:
    """Train from `session.start_step` until the schedule ends, the time budget is spent (counted from
    `session.t_start`) or step `stop_at` is done; logs metrics every log_every steps and checkpoints every
    checkpoint_every steps and at the stop (every rank stops at the same step)."""
    run, dist, out = session.run, session.dist, session.out
    tc, sampler, engine = run.train, session.sampler, session.engine
    step = session.start_step
    # MFU counts every position the model computes (padding included), over all ranks.
    flops_per_step = tc.batch_size * run.model.max_seq_len * train_flops_per_token(
        session.active_params, run.model.num_layers, run.model.d_model, run.model.max_seq_len)
    peak_flops = None if tc.peak_tflops is None else tc.peak_tflops * 1e12 * dist.world_size
    metrics = MetricsLog(out, step, dist.is_main, tc.wandb_project, tc.wandb_mode, to_dict(run))
    micro = tc.micro_batch_size(dist.world_size)
    last: StepStats | None = None
    reason = "finished"
    meter = _Meter()
    progress = None
    if dist.is_main:
        from tqdm import tqdm

        progress = tqdm(total=tc.steps, initial=step, desc="pretrain", dynamic_ncols=True, mininterval=1.0)
    autocast_dtype = torch.bfloat16 if tc.dtype == "bf16" else None
    signals = StopSignals().install()  # Ctrl-C / SIGTERM: checkpoint at the next step boundary (pretrain/interrupt.py)
    try:
        while step < tc.steps:
            t0 = time.perf_counter()
            batches = [sampler.next_batch(micro) for _ in range(tc.grad_accum)]
            last = train_step(engine, batches, dist.device, tc.input_noise, tc.self_feed, tc.horizon_loss_weight,
                              autocast_dtype)
            dt = time.perf_counter() - t0
            step += 1
            if not np.isfinite(last.loss):
                raise FloatingPointError(f"step {step}: loss is {last.loss} (nll {last.nll}, aux {last.aux_loss})")
            meter.add(last.tokens, dt)
            over_budget = tc.time_budget_s is not None and time.time() - session.t_start >= tc.time_budget_s
            at_stop = stop_at is not None and step >= stop_at
            stop = any_rank(over_budget or at_stop or signals.caught, dist.device)
            if stop or step == tc.steps or step % tc.log_every == 0:
                seconds = max(meter.seconds, 1e-9)
                mfu = None if peak_flops is None else flops_per_step * meter.steps / seconds / peak_flops
                metrics.log(_record(step, last, meter.tokens / seconds, mfu))
                meter.reset_interval()
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{last.loss:.4f}", lr=f"{last.lr:.2e}", refresh=False)
            if stop or step == tc.steps or step % tc.checkpoint_every == 0:
                save_checkpoint(engine, out, step, sampler.state_dict(), dist, tc.keep_checkpoints,
                                {"planned_steps": tc.steps, "finished": step >= tc.steps,
                                 "corpus_fingerprint": session.fingerprint})
            if stop:
                reason = ("time budget reached" if over_budget else f"--stop-at {stop_at}" if at_stop
                          else f"interrupted by {signals.name()}")
                break
    finally:
        signals.restore()
        if progress is not None:
            progress.close()
        metrics.close()
        if isinstance(sampler, BatchLoader):
            sampler.close()  # its worker processes; a later run_steps restarts them at the batch counter
    if reason.startswith("interrupted") and step < tc.steps:
        raise RunInterrupted(f"{reason} at step {step} of {tc.steps}: saved {out / 'checkpoints' / f'step-{step}'} "
                             "(no final model); continue with --resume", signals.signum or signal.SIGTERM)
    tokens_per_s = meter.total_tokens / meter.total_seconds if meter.total_seconds else 0.0
    return LoopResult(step, reason, last, tokens_per_s)


# --- finish ----------------------------------------------------------------------------------------------------


def finish(session: Session, result: LoopResult) -> dict:
    """Write RUN/final (training.json says how far the run got) and print the summary; returns the summary dict
    (start_step, step, steps, reason, final_loss, seconds, tokens_per_s, final)."""
    tc, out, step, last = session.run.train, session.out, result.step, result.last
    final = out / "final"
    finished = step >= tc.steps
    training = {"step": step, "planned_steps": tc.steps, "finished": finished,
                "reason": "finished" if finished else result.reason, "corpus": session.corpus_path.name,
                "corpus_fingerprint": session.fingerprint, "datasets": list(session.sampler.dataset_names),
                "exclude_eval": manifest_field(session.corpus_path, "exclude_eval")}
    if session.init_path is not None:
        training["init"] = str(session.init_path)
        conversion = read_conversion(session.init_path)
        if conversion is not None:  # converted weights keep their source's credit (moe_ts/io/provenance.py)
            training["conversion"] = conversion
    export = exportable_model(unwrap(session.engine), session.run)  # collective when the experts are sharded
    if session.dist.is_main:
        final = save_final(export, out, training)
    elapsed = time.time() - session.t_start
    summary = {
        "start_step": session.start_step, "step": step, "steps": tc.steps, "reason": result.reason,
        "final_loss": None if last is None else last.loss, "seconds": elapsed,
        "tokens_per_s": result.tokens_per_s, "final": str(final),
    }
    if last is None:
        session.say(f"nothing to do: {out} is already at step {step} of {tc.steps}; wrote {final}")
    else:
        session.say(f"pretrain: steps {session.start_step}->{step} of {tc.steps} ({result.reason}) in {elapsed:.1f} s; "
                    f"final loss {last.loss:.4f} (nll {last.nll:.4f}, aux {last.aux_loss:.4f}, z {last.z_loss:.4f}); "
                    f"{summary['tokens_per_s']:.0f} tokens/s; model in {final}")
    if not finished:
        session.say(f"NOTE: {final} holds an UNFINISHED run (step {step} of {tc.steps}, {result.reason}); "
                    f"its training.json and model card say so; continue with --resume")
    return summary


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
