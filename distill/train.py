"""Distil the MoE forecaster into an MLP student (TimeDistill; docs/ARCHITECTURE.md §8).

    moe-ts distill --teacher DIR (--data CORPUS | --dataset NAME) --context L --horizon H --out DIR
        [--alpha 1] [--beta 1] [--tau 0.5] [--hidden 512] [--epochs 20] [--patience 3] [--batch-size 64]
        [--lr 1e-3] [--stride 1] [--max-windows 20000] [--max-val-windows 4000] [--teacher-samples 20]
        [--teacher-point mean|median] [--teacher-decode median|mean|sample] [--cache-dir DIR] [--seed 0]
        [--data-dir DIR] [--threads 1] [--overwrite] [--resume]

The teacher's forecasts and features on the training windows are computed once (progress bar) and cached
(distill/teacher_cache.py); each epoch reuses them. Loss (moe_ts/student/objectives.py):
MSE(student, truth) + α·(L_freq + L_ms)(forecasts) + β·(L_freq + L_ms)(features), the teacher's feature
mapped to the student's hidden width by a learned linear regressor (trained with the student, not saved).
Early stopping on the validation windows' MSE against the truth; the best epoch's weights are kept.
`--alpha 0 --beta 0` is plain supervised training (the teacher is then not run). Writes the student as a
Hugging Face folder (config.json, model.safetensors, README.md) plus distill.json (settings, data, history).
An interrupted run (Ctrl-C, a kill) keeps the state after its last finished epoch beside --out
(moe_ts/io/kept_state.py); the same command with --resume continues from it and ends as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from moe_ts.device import add_device_arguments, place_model, resolve_device, resolve_dtype
from moe_ts.student.objectives import TAU, distill_loss, masked_mse
from moe_ts.model import MoiraiMoEModel
from moe_ts.io.kept_state import KeptState
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import DISTILL_FILE, card_fields, derived_records, record_files
from moe_ts.student.model import MLPForecaster, StudentConfig
from data_prep.download import cache_dir
from distill.data import DistillData, WindowSet, corpus_windows, dataset_windows
from distill.teacher_cache import TeacherSettings, cached_teacher_outputs, teacher_fingerprint



@dataclass
class DistillConfig:
    """Student size, loss weights and optimisation."""

    context_length: int = 512
    horizon: int = 96
    hidden: int = 512
    moving_avg: int = 25
    alpha: float = 1.0
    beta: float = 1.0
    tau: float = TAU
    epochs: int = 20
    patience: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    teacher: TeacherSettings = field(default_factory=TeacherSettings)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.tau <= 0 or self.lr <= 0:
            raise ValueError(f"--tau and --lr must be > 0, got {self.tau}, {self.lr}")

    def student_config(self) -> StudentConfig:
        return StudentConfig(context_length=self.context_length, horizon=self.horizon, hidden=self.hidden,
                             moving_avg=self.moving_avg)

    @property
    def uses_teacher(self) -> bool:
        return bool(self.alpha or self.beta)


@dataclass
class TeacherTargets:
    """The teacher's forecast [N, H] (raw scale of the windows) and feature [N, D] on the training windows."""

    forecast: np.ndarray
    feature: np.ndarray


def check_teacher_serves(teacher: MoiraiMoEModel, context: int, horizon: int) -> None:
    """ValueError when the teacher cannot forecast `horizon` points from `context` points within its trained
    positions (max_seq_len patches)."""
    cfg = teacher.config
    if context < 1 or horizon < 1:
        raise ValueError(f"--context and --horizon must be >= 1, got {context}, {horizon}")
    if context > cfg.max_context:
        raise ValueError(f"--context {context}: the teacher reads at most {cfg.max_context} points "
                         f"(max_seq_len {cfg.max_seq_len} x patch {cfg.patch_size})")
    ctx_p, hor_p = math.ceil(context / cfg.patch_size), math.ceil(horizon / cfg.patch_size)
    if ctx_p + hor_p > cfg.max_seq_len:
        raise ValueError(f"--context {context} --horizon {horizon}: {ctx_p} + {hor_p} patches exceed the teacher's "
                         f"{cfg.max_seq_len} trained positions; use a shorter --context or --horizon")


def load_teacher(folder: str | Path) -> MoiraiMoEModel:
    """The MoE teacher in `folder`; a one-line error when the folder holds no MoE forecaster."""
    from moe_ts.io.loading import MOE_MODEL_TYPE, model_type

    kind = model_type(folder)
    if kind != MOE_MODEL_TYPE:
        raise ValueError(f"--teacher {folder}: holds a {kind} model, not a MoE forecaster to distil")
    return MoiraiMoEModel.from_pretrained(folder)


def _normalised(student: MLPForecaster, windows: WindowSet, forecast: np.ndarray | None = None):
    """Windows on each context's own scale: (context [N, L], truth [N, H], teacher forecast [N, H] or None)."""
    ctx = torch.from_numpy(windows.contexts)
    normed, loc, scale = student.normalise(ctx)
    truth = (torch.from_numpy(windows.truth) - loc) / scale
    teacher = None if forecast is None else (torch.from_numpy(forecast) - loc) / scale
    return normed, truth, teacher


@torch.no_grad()
def validation_mse(student: MLPForecaster, normed_nl: torch.Tensor, truth_nh: torch.Tensor, batch: int = 4096) -> float:
    """MSE of the student against the truth on the normalised scale (observed values)."""
    student.eval()
    sq, count = 0.0, 0
    for lo in range(0, len(normed_nl), batch):
        pred, _ = student(normed_nl[lo:lo + batch])
        t = truth_nh[lo:lo + batch]
        n = int((~torch.isnan(t)).sum())
        sq += float(masked_mse(pred, t)) * n
        count += n
    student.train()
    return sq / max(count, 1)


def _modules_state(student: nn.Module, regressor: nn.Module | None, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator) -> dict[str, Any]:
    """What an epoch leaves that the next one reads (kept for `--resume`)."""
    state = {"student": copy.deepcopy(student.state_dict()), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if regressor is not None:
        state["regressor"] = copy.deepcopy(regressor.state_dict())
    return state


def _restore_modules(state: dict[str, Any], student: nn.Module, regressor: nn.Module | None,
                     optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    student.load_state_dict(state["student"])
    if regressor is not None:
        regressor.load_state_dict(state["regressor"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


def train_student(data: DistillData, cfg: DistillConfig, targets: TeacherTargets | None,
                  log: Callable[[str], None] | None = None,
                  progress: KeptState | None = None) -> tuple[MLPForecaster, list[dict]]:
    """Train a student on `data` (with the teacher's `targets` when α or β > 0); returns the best-validation
    student and the per-epoch history.

    Reproducible: the student is initialised right after torch.manual_seed(seed) (the regressor after it),
    batches follow torch.randperm with a generator seeded by `seed`, one permutation per epoch. With
    `progress` (moe_ts/io/kept_state.py), the state after each epoch is kept, and a kept state is continued.
    """
    if cfg.uses_teacher and targets is None:
        raise ValueError("alpha or beta > 0 needs the teacher's forecasts and features")
    torch.manual_seed(cfg.seed)
    student = MLPForecaster(cfg.student_config())
    params = list(student.parameters())
    regressor = None
    if cfg.beta and targets is not None:
        regressor = nn.Linear(targets.feature.shape[1], cfg.hidden)
        params += list(regressor.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    forecast = targets.forecast if (targets is not None and cfg.alpha) else None
    x_nl, y_nh, t_nh = _normalised(student, data.train, forecast)
    feat_nd = torch.from_numpy(targets.feature) if regressor is not None else None
    vx_nl, vy_nh, _ = _normalised(student, data.val)
    generator = torch.Generator().manual_seed(cfg.seed)
    best, best_state, stale, history = math.inf, copy.deepcopy(student.state_dict()), 0, []
    kept = progress.state if progress is not None else None
    if kept is not None:
        _restore_modules(kept, student, regressor, optimizer, generator)
        best, best_state, stale, history = kept["best"], kept["best_state"], kept["stale"], kept["history"]
        if log:
            log(f"resumed after epoch {kept['epoch']} from {progress.folder}")
    for epoch in range(1 + (kept["epoch"] if kept is not None else 0), cfg.epochs + 1):
        student.train()
        sums: dict[str, float] = {}
        perm = torch.randperm(len(x_nl), generator=generator)
        batches = 0
        for lo in range(0, len(perm), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            pred_bh, feat_bw = student(x_nl[idx])
            loss = distill_loss(pred_bh, y_nh[idx], None if t_nh is None else t_nh[idx], feat_bw,
                                None if regressor is None else regressor(feat_nd[idx]), cfg.alpha, cfg.beta, cfg.tau)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            for k, v in loss.parts().items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
        val = validation_mse(student, vx_nl, vy_nh)
        row = {"epoch": epoch, **{f"train_{k}": v / batches for k, v in sums.items()}, "val_mse": val}
        history.append(row)
        if log:
            log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if val < best:
            best, best_state, stale = val, copy.deepcopy(student.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                if log:
                    log(f"early stop: no validation gain for {cfg.patience} epoch(s); best {best:.4g}")
                break
        if progress is not None:
            progress.save({**_modules_state(student, regressor, optimizer, generator),
                           "best_state": copy.deepcopy(best_state)},
                          {"epoch": epoch, "best": best, "stale": stale, "history": history})
    student.load_state_dict(best_state)
    student.eval()
    return student, history


def teacher_targets(teacher: MoiraiMoEModel, data: DistillData, cfg: DistillConfig, cache_dir: str | Path,
                    log: Callable[[str], None] | None = None, progress: bool = True) -> TeacherTargets:
    """The teacher's forecasts and features on the training windows, from the cache when it has them."""
    pred, feat, hit = cached_teacher_outputs(teacher, data.train.contexts, cfg.horizon, cfg.teacher, cache_dir,
                                             progress)
    if log:
        log(f"teacher outputs {'read from' if hit else 'computed and cached in'} {cache_dir}")
    return TeacherTargets(pred, feat)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-ts distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="MoE model folder (save_pretrained / moe-ts pretrain's final)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="Arrow corpus from `moe-ts prepare`")
    src.add_argument("--dataset", help="registered dataset name (see `moe-ts eval --list`); its test span is not read")
    p.add_argument("--data-dir", help="--dataset's data folder (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    p.add_argument("--context", type=int, required=True, help="context length L of the student (and the teacher)")
    p.add_argument("--horizon", type=int, required=True, help="horizon H the student is trained for")
    p.add_argument("--out", type=Path, required=True, help="student folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    d = DistillConfig()
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"student hidden width (default {d.hidden})")
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the forecast distillation terms (default 1)")
    p.add_argument("--beta", type=float, default=d.beta, help="weight of the feature distillation terms (default 1)")
    p.add_argument("--tau", type=float, default=d.tau, help="spectrum softmax temperature (default 0.5)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"at most this many epochs (default {d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without validation gain before stopping")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"windows per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling and teacher sampling seed")
    p.add_argument("--stride", type=int, default=1, help="training window stride (default 1)")
    p.add_argument("--max-windows", type=int, default=20000, help="thin training windows evenly to at most N")
    p.add_argument("--max-val-windows", type=int, default=4000, help="thin validation windows evenly to at most N")
    p.add_argument("--teacher-samples", type=int, default=TeacherSettings.num_samples,
                   help="teacher sample paths per window (default 20)")
    p.add_argument("--teacher-point", choices=("mean", "median"), default=TeacherSettings.point,
                   help="teacher forecast = mean or median of its samples (default mean)")
    p.add_argument("--teacher-decode", choices=("median", "mean", "sample"), default=TeacherSettings.decode,
                   help="teacher decoding mode (moe_ts/forecasting.py; default median)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="teacher output cache (default: the moe-ts cache's teacher/ folder, data_prep.download.cache_dir)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command after its last finished epoch")
    add_device_arguments(p)  # where the teacher runs (the MLP student trains on the CPU)
    return p


def _settings(args: argparse.Namespace, teacher: MoiraiMoEModel, data: DistillData) -> dict[str, Any]:
    """What the student depends on: the options, the teacher's weights and the windows' bytes."""
    import hashlib

    windows = hashlib.sha256()
    for part in (data.train.contexts, data.train.truth, data.val.contexts, data.val.truth):
        windows.update(np.ascontiguousarray(part).tobytes())
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
               if k not in ("out", "overwrite", "resume", "cache_dir")}
    return {**options, "teacher_sha256": teacher_fingerprint(teacher), "windows_sha256": windows.hexdigest()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    for flag in ("stride", "max_windows", "max_val_windows", "teacher_samples", "threads", "hidden"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    torch.set_num_threads(args.threads)
    inputs = {"--teacher": args.teacher, "--data": args.data}
    check_output_dir(args.out, args.overwrite, kind="student", inputs=inputs)
    settings = TeacherSettings(num_samples=args.teacher_samples, point=args.teacher_point,
                               decode=args.teacher_decode, seed=args.seed)
    cfg = DistillConfig(context_length=args.context, horizon=args.horizon, hidden=args.hidden, alpha=args.alpha,
                        beta=args.beta, tau=args.tau, epochs=args.epochs, patience=args.patience,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, teacher=settings)
    device = resolve_device(args.device)  # a device this machine lacks: one line before anything loads
    teacher = place_model(load_teacher(args.teacher), device, resolve_dtype(args.dtype, device))
    check_teacher_serves(teacher, args.context, args.horizon)
    if args.dataset:
        data = dataset_windows(args.dataset, args.data_dir, args.context, args.horizon, args.stride,
                               args.max_windows, args.max_val_windows)
    else:
        data = corpus_windows(args.data, args.context, args.horizon, args.stride, args.max_windows,
                              args.max_val_windows)
    progress = KeptState(args.out, "distill", _settings(args, teacher, data), args.resume, unit="epoch")
    log(data.description)
    if args.cache_dir is None:  # resolved at run time: $MOE_TS_CACHE / $XDG_CACHE_HOME as the downloads see them
        args.cache_dir = cache_dir() / "teacher"
    targets = teacher_targets(teacher, data, cfg, args.cache_dir, log) if cfg.uses_teacher else None
    try:
        student, history = train_student(data, cfg, targets, log, progress)
    except KeyboardInterrupt:  # the teacher's outputs, the slow part, are on disk already
        kept = [f"the teacher's outputs are kept in {args.cache_dir}, a rerun reads them"] if targets is not None else []
        if progress.state is not None:
            kept.append(f"the student after epoch {progress.count} is kept in {progress.folder}, rerun with "
                        f"--resume to continue from it")
        raise KeyboardInterrupt("; ".join(kept or ["nothing kept"]) + "; --out untouched") from None
    best = min(history, key=lambda r: r["val_mse"])
    training = (f"Distilled from `{Path(args.teacher).name}` (TimeDistill, alpha {cfg.alpha}, beta {cfg.beta}) on "
                f"{data.description}. Best validation MSE {best['val_mse']:.4g} (epoch {best['epoch']} of "
                f"{len(history)}), on each window's normalised scale.")
    report = {
        "command": "moe-ts distill " + " ".join(sys.argv[1:] if argv is None else argv),
        "summary": training, "teacher": str(args.teacher), "teacher_sha256": teacher_fingerprint(teacher), "data": data.description,
        "config": asdict(cfg), "history": history,
    }
    records = derived_records(args.teacher, {DISTILL_FILE: report})  # a converted teacher's credit travels on
    student.save_pretrained(args.out, overwrite=args.overwrite, folder_kind="student", inputs=inputs,
                            extra_files=record_files(records), remedy="pass --overwrite to replace it",
                            model_card_kwargs={"model_name": args.out.name, **card_fields(records)})
    progress.remove()
    log(f"wrote student ({student.num_parameters():,} parameters, teacher {teacher.num_parameters():,}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
