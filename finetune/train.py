"""The finetuning methods and loop (docs/ARCHITECTURE.md §9).

Methods, all from the same pretrained model:
- `msft`: `moe_ts.msft.network.MSFTNetwork` (K extra scales, per-scale LoRA, aggregator, heads, learnt scale
  weights; MoE gates trainable, experts frozen unless asked), loss `moe_ts.msft.network.msft_loss`.
- `lora`: the same network with no extra scale, LoRA on Q/K/V only (plain LoRA); merged back into a
  plain model at the end (exact up to rounding).
- `head`: only the mixture head trains; `full`: every weight trains. Both use the pretraining objective
  (`moe_ts.objectives.pretrain_loss`) on rows holding one window each.
- `time-llm`: no pretrained moe-ts model; `moe_ts.timellm.model.TimeLLMModel` reprograms patches into a frozen
  language model (`llm`), with Time-LLM's text prompt or a Time-DPD soft prompt of `soft_prompt` vectors; one
  direct head per horizon, trained together on windows of context + longest horizon, loss
  `moe_ts.timellm.forecasting.time_llm_loss` (MSE).

The loop: AdamW on the trainable parameters, global-norm clipping, validation loss every `eval_every`
steps (and before the first, the zero-shot value), early stopping after `patience` evaluations without
improvement, the best validation state restored at the end. With a `KeptState` (moe_ts/io/kept_state.py) the
loop's state is kept at every validation step and a resumed loop continues from it exactly.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from finetune.data import Splits, TrainWindows, check_window, val_windows
from moe_ts.model import MoiraiMoEModel
from moe_ts.msft.network import MSFTConfig, MSFTNetwork, merge_lora, msft_loss
from moe_ts.msft.model import MSFTModel
from moe_ts.io.kept_state import KeptState, ResumeError
from moe_ts.objectives import pretrain_loss
from moe_ts.timellm.config import TimeLLMConfig
from moe_ts.timellm.forecasting import time_llm_loss
from moe_ts.timellm.model import TimeLLMModel
from moe_ts.timellm.prompt import dataset_description

METHODS = ("msft", "full", "head", "lora", "time-llm")
TIME_LLM_FIELDS = ("llm_layers", "soft_prompt", "context_length", "horizons", "d_model", "d_ff", "num_prototypes")


@dataclass
class FinetuneConfig:
    """One finetuning run (the CLI's flags)."""

    method: str = "msft"
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    window: int = 512  # points per training window (MSFT: a multiple of patch_size·2^K)
    eval_every: int = 20
    patience: int = 5  # evaluations without a better validation loss before stopping
    max_val_windows: int = 64
    num_scales: int = 3
    lora_rank: int = 16
    lora_alpha: float = 16.0
    train_gates: bool = True
    train_experts: bool = False
    seed: int = 0
    # time-llm only (the window is context_length + the longest horizon)
    llm: str | None = None  # Hub id or local folder of the frozen LLM
    llm_layers: int = 0  # keep the LLM's first k layers (0 = all)
    soft_prompt: int = 0  # 0: Time-LLM's text prompt; N: Time-DPD's N trainable prompt vectors
    context_length: int = 512
    horizons: tuple[int, ...] = (96, 192, 336, 720)
    d_model: int = 32
    d_ff: int = 128
    num_prototypes: int = 1000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r}: unknown finetuning method (choose from {', '.join(METHODS)})")
        if (self.method == "time-llm") != (self.llm is not None):
            raise ValueError("--llm is required by --method time-llm and applies to it only")
        if self.method != "time-llm":  # its flags at other than their defaults would be silently ignored
            for name in TIME_LLM_FIELDS:
                if getattr(self, name) != getattr(FinetuneConfig, name):
                    flag = "--prototypes" if name == "num_prototypes" else f"--{name.replace('_', '-')}"
                    raise ValueError(f"{flag} applies to --method time-llm only, not {self.method}")
        for name in ("steps", "batch_size", "window", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


@dataclass
class FinetuneResult:
    """What the loop did."""

    best_val: float
    zero_shot_val: float
    best_step: int
    steps_run: int
    stopped_early: bool
    seconds_per_step: float
    trainable_params: int
    total_params: int
    history: list[dict] = field(default_factory=list)


def prepare_model(base: MoiraiMoEModel, cfg: FinetuneConfig, where: str) -> nn.Module:
    """The model to train for `cfg.method`, its trainable parameters set (base is not modified)."""
    if cfg.method == "msft":
        if cfg.train_gates and base.config.moe.num_experts == 1:
            raise ValueError(f"{where}: has no MoE layers (1 expert per layer), so there are no gates to finetune; "
                             "pass --freeze-gates")
        msft = MSFTConfig(num_scales=cfg.num_scales, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                          train_gates=cfg.train_gates, train_experts=cfg.train_experts)
        return MSFTModel.from_network(base, msft)
    if cfg.method == "lora":
        msft = MSFTConfig(num_scales=0, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, aggregator=False,
                          train_gates=False, train_experts=False, train_adapters=False)
        return MSFTModel.from_network(base, msft)
    model = copy.deepcopy(base)
    model.requires_grad_(cfg.method == "full")
    model.head.requires_grad_(True)
    return model


def prepare_time_llm(cfg: FinetuneConfig, dataset: str | None, llm_dtype: torch.dtype | None = None) -> TimeLLMModel:
    """A fresh Time-LLM / Time-DPD model over the frozen `cfg.llm` (in `llm_dtype`; the prompt describes
    `dataset`)."""
    return TimeLLMModel.build(TimeLLMConfig(
        llm=str(cfg.llm), llm_layers=cfg.llm_layers, soft_prompt=cfg.soft_prompt, context_length=cfg.context_length,
        horizons=tuple(cfg.horizons), d_model=cfg.d_model, d_ff=cfg.d_ff, num_prototypes=cfg.num_prototypes,
        description=dataset_description(dataset)), dtype=llm_dtype)


def training_window(model: nn.Module, cfg: FinetuneConfig) -> int:
    """Points per training window: `cfg.window`, or a Time-LLM model's context + longest horizon."""
    if isinstance(model, TimeLLMModel):
        return model.config.context_length + max(model.config.horizons)
    return cfg.window


def window_unit(model: nn.Module) -> int:
    """Training windows must be a multiple of this many points."""
    if isinstance(model, TimeLLMModel):
        return 1
    unit = model.config.patch_size
    return unit * model.msft.pool if isinstance(model, MSFTNetwork) else unit


def batch_loss(model: nn.Module, windows_bl: torch.Tensor) -> torch.Tensor:
    """The method's objective on rows holding one window each (moved to the model's device)."""
    windows_bl = windows_bl.to(next(model.parameters()).device, non_blocking=True)
    if isinstance(model, TimeLLMModel):
        return time_llm_loss(model, windows_bl)
    if isinstance(model, MSFTNetwork):
        return msft_loss(model, windows_bl).loss
    n = windows_bl.shape[1] // model.config.patch_size
    sample_id = torch.ones(windows_bl.shape[0], n, dtype=torch.long, device=windows_bl.device)
    return pretrain_loss(model, windows_bl, sample_id).loss


@torch.no_grad()
def validation_loss(model: nn.Module, windows_vl: torch.Tensor, batch_size: int) -> float:
    was = model.training
    model.eval()
    total = 0.0
    for s in range(0, len(windows_vl), batch_size):
        chunk = windows_vl[s:s + batch_size]
        total += float(batch_loss(model, chunk)) * len(chunk)
    model.train(was)
    return total / len(windows_vl)


def _trainable(state: dict[str, torch.Tensor], names: set[str]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items() if k in names}


def _keep(progress: KeptState, model: nn.Module, names: set[str], opt: torch.optim.Optimizer,
          train: TrainWindows, best_state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The loop's state after a validation step (what `_restore` puts back)."""
    tensors = {"model": _trainable(model.state_dict(), names), "best": _trainable(best_state, names),
               "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}
    progress.save(tensors, {**meta, "train_rng": train.rng.bit_generator.state})


def _restore(state: dict[str, Any], model: nn.Module, names: set[str], opt: torch.optim.Optimizer,
             train: TrainWindows, best_state: dict[str, torch.Tensor]) -> None:
    if set(state["model"]) != names:
        raise ResumeError("--resume: the kept state holds other trainable weights than this run's; rerun without "
                         "--resume")
    model.load_state_dict(state["model"], strict=False)
    best_state.update(state["best"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    train.rng.bit_generator.state = state["train_rng"]


def finetune(model: nn.Module, splits: Splits, cfg: FinetuneConfig,
             log: Callable[[str], None] = print, progress: KeptState | None = None) -> FinetuneResult:
    """Train `model` in place on `splits` (early stopping on validation); the best state is restored. With
    `progress`, continue from its kept state if any, and keep the state at every validation step."""
    unit, window = window_unit(model), training_window(model, cfg)
    if window % unit:
        raise ValueError(f"--window {window} must be a multiple of {unit} (patch size × 2^num_scales)")
    what = ("--context-length + the longest of --horizons" if isinstance(model, TimeLLMModel)
            else f"--window; {cfg.method} needs multiples of {unit}")
    check_window(splits, window, what)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = TrainWindows(splits.train, window, cfg.seed)
    val = val_windows(splits.val, window, cfg.max_val_windows)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    kept = progress.state if progress is not None else None
    if kept is None:
        zero_shot = best = validation_loss(model, val, cfg.batch_size)
        best_step, bad, history, seconds, step = 0, 0, [{"step": 0, "val": zero_shot}], 0.0, 0
    else:
        _restore(kept, model, names, opt, train, best_state)
        zero_shot, best, best_step, bad = kept["zero_shot"], kept["best_val"], kept["best_step"], kept["bad"]
        history, seconds, step = kept["history"], kept["seconds"], kept["step"]
        log(f"finetune {cfg.method}: resumed at step {step} from {progress.folder}")
    log(f"finetune {cfg.method}: {sum(p.numel() for p in params):,} trainable of "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; zero-shot validation loss {zero_shot:.4f} on "
        f"{len(val)} windows")
    model.train()
    stopped = False
    while step < cfg.steps:
        t0 = time.perf_counter()
        loss = batch_loss(model, train.batch(cfg.batch_size))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        seconds += time.perf_counter() - t0
        step += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"finetune step {step}: loss is {float(loss)}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            v = validation_loss(model, val, cfg.batch_size)
            history.append({"step": step, "train": float(loss.detach()), "val": v})
            log(f"step {step}: train {float(loss.detach()):.4f}, validation {v:.4f}")
            if v < best:
                best, best_step, bad = v, step, 0
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    stopped = True
                    break
            if progress is not None:
                _keep(progress, model, names, opt, train, best_state,
                      {"step": step, "zero_shot": zero_shot, "best_val": best, "best_step": best_step, "bad": bad,
                       "history": history, "seconds": seconds})
    model.load_state_dict(best_state)
    model.eval()
    return FinetuneResult(best_val=best, zero_shot_val=zero_shot, best_step=best_step, steps_run=step,
                          stopped_early=stopped, seconds_per_step=seconds / max(step, 1),
                          trainable_params=sum(p.numel() for p in params),
                          total_params=sum(p.numel() for p in model.parameters()), history=history)


def releasable(model: nn.Module) -> nn.Module:
    """What gets saved: plain LoRA merged into a plain `MoiraiMoEModel`; anything else as it is."""
    if isinstance(model, MSFTNetwork) and model.num_scales == 1 and not model.msft.train_adapters:
        merged = merge_lora(model)
        plain = MoiraiMoEModel(merged.config)
        plain.load_state_dict(merged.state_dict())
        return plain.eval()
    return model
