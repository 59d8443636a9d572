"""Pretraining configuration (docs/ARCHITECTURE.md §4): one YAML holds `model:`, `train:` and `parallel:`.

`load_pretrain_config(path)` reads both into typed dataclasses (unknown keys raise naming their dotted
path); `deepspeed_config(train, world_size)` generates the DeepSpeed JSON from `TrainConfig`, so no
DeepSpeed JSON is kept by hand beside the YAML.

Mixture weights: by default each dataset of the corpus is drawn with probability proportional to
its number of (usable) series (`mixture_default: series`) or its square root (`sqrt_series`, tempered so
that one dataset of many short series cannot take a quarter of the draws), to its observed values
(`points`) or their square root (`sqrt_points`), or uniformly (`uniform`). `mixture_share` fixes the
probability of some datasets (e.g. the synthetic ones) and spreads the rest by `mixture_default`. A non-empty
`mixture` mapping gives the weights explicitly; corpus datasets it leaves out get weight 0 (and are
listed in the run log), and a name absent from the corpus is an error. Within a dataset a series is
drawn with probability proportional to min(ceil(length / (max_seq_len·patch_size)),
max_windows_per_series): long series give more windows, capped so that one huge series cannot
dominate its dataset.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moe_ts.config import ModelConfig, drop_runtime_keys
from moe_ts.typed_config import ConfigError, from_dict, load_file


@dataclass
class TrainConfig:
    """Optimisation, data sampling, logging and checkpointing of one pretraining run."""

    steps: int = 1000  # optimizer steps; also the length of the cosine schedule
    batch_size: int = 32  # packed sequences per optimizer step, over all ranks and micro-batches
    grad_accum: int = 1  # micro-batches per optimizer step and rank
    lr: float = 1e-3
    min_lr: float = 1e-4  # the cosine schedule ends here
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    weight_decay: float = 0.1  # on matrices only (biases and norm gains get none)
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    # torch's fused AdamW kernel (CPU and CUDA): one pass over each parameter instead of a dozen elementwise ops;
    # the small config's optimizer step 0.21 -> 0.06 s on the CPU (BENCHMARKS.md, "The CPU allocator, bf16 autocast and fused AdamW"). False:
    # the for-loop implementation (the same update, rounded differently).
    fused_adamw: bool = True
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200  # steps; a final checkpoint is always written
    keep_checkpoints: int = 2  # newest step-N directories kept
    time_budget_s: float | None = None  # wall-clock cap: stop at the next step boundary and save
    zero_stage: Literal[0, 1, 2] = 1
    dtype: Literal["fp32", "bf16"] = "fp32"  # bf16: torch.autocast around the loss (GEMMs in bf16); weights fp32
    num_threads: int | None = None  # torch CPU threads per process (None: torch's default)
    peak_tflops: float | None = None  # per-device peak (e.g. ~800 for H100 bf16): logs MFU when given
    wandb_project: str = "moe-ts"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # WANDB_MODE in the env wins
    mixture: dict[str, float] = field(default_factory=dict)  # dataset -> weight; empty: mixture_default
    mixture_default: Literal["series", "sqrt_series", "points", "sqrt_points", "uniform"] = "series"
    # dataset -> fixed probability (sum < 1); the rest of the mass goes to the other datasets by mixture_default
    mixture_share: dict[str, float] = field(default_factory=dict)
    max_windows_per_series: int = 16
    min_window_patches: int = 2  # shortest window drawn from a long enough series (1 stats + 1 scored)
    # "sequential": pretrain.data.WindowSampler (one window at a time); "vectorised": pretrain.batch_sampler
    # (windows drawn in bulk, batch k a function of (seed, rank, k); ~6x the patches/s of one core, BENCHMARKS.md)
    sampler: Literal["sequential", "vectorised"] = "sequential"
    loader_workers: int = 0  # processes making vectorised batches ahead of the trainer (0: in the trainer)
    input_noise: float = 0.0  # std of Gaussian noise on the normalised inputs (not the targets); see objectives
    self_feed: float = 0.0  # scheduled sampling: share of input patches replaced by the model's own draws
    # Any-variate pretraining (pretrain/variate_groups.py): the share of a row's window draws that take a multivariate
    # group (corpus rows sharing a group_id) instead of one series, packed variate-major; 0 = univariate only.
    multivariate_share: float = 0.0
    max_variates: int = 128  # variates kept of a drawn group at most (a random subset; uni2ts' max_dim)
    horizon_loss_weight: float = 1.0  # weight of the long-horizon head's NLL (models with model.horizon_patches > 0)

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "log_every": self.log_every, "checkpoint_every": self.checkpoint_every,
                    "keep_checkpoints": self.keep_checkpoints,
                    "max_windows_per_series": self.max_windows_per_series,
                    "min_window_patches": self.min_window_patches}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {value}")
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"train.min_lr must be in (0, lr={self.lr}], got {self.min_lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.loader_workers < 0:
            raise ConfigError(f"train.loader_workers must be >= 0, got {self.loader_workers}")
        if self.loader_workers and self.sampler != "vectorised":
            raise ConfigError("train.loader_workers needs train.sampler: vectorised (the sequential sampler's "
                              "batches depend on every batch before them, so workers cannot make them apart)")
        if self.input_noise < 0:
            raise ConfigError(f"train.input_noise must be >= 0, got {self.input_noise}")
        if not 0.0 <= self.self_feed <= 1.0:
            raise ConfigError(f"train.self_feed must be in [0, 1], got {self.self_feed}")
        if self.horizon_loss_weight < 0:
            raise ConfigError(f"train.horizon_loss_weight must be >= 0, got {self.horizon_loss_weight}")
        if isinstance(self.multivariate_share, bool) or not 0.0 <= self.multivariate_share <= 1.0:
            raise ConfigError(f"train.multivariate_share must be in [0, 1], got {self.multivariate_share!r}")
        if self.max_variates < 2:
            raise ConfigError(f"train.max_variates must be >= 2 (a group keeps 2..max_variates variates), "
                              f"got {self.max_variates}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"train.time_budget_s must be > 0, got {self.time_budget_s}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"train.peak_tflops must be > 0, got {self.peak_tflops}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"train.num_threads must be >= 1, got {self.num_threads}")
        for name, weight in self.mixture.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or weight < 0:
                raise ConfigError(f"train.mixture.{name}: weight must be a finite number >= 0, got {weight!r}")
        if self.mixture and not any(w > 0 for w in self.mixture.values()):
            raise ConfigError("train.mixture: at least one weight must be > 0")
        for name, share in self.mixture_share.items():
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
                raise ConfigError(f"train.mixture_share.{name}: must be a number in [0, 1), got {share!r}")
        if sum(self.mixture_share.values()) >= 1:
            raise ConfigError(f"train.mixture_share: shares must sum to < 1, got {sum(self.mixture_share.values())}")
        if self.mixture and self.mixture_share:
            raise ConfigError("train.mixture and train.mixture_share exclude each other (mixture names every weight)")

    def micro_batch_size(self, world_size: int) -> int:
        """Sequences per forward pass on one rank."""
        per_pass = world_size * self.grad_accum
        if self.batch_size % per_pass:
            raise ConfigError(f"train.batch_size={self.batch_size} must be divisible by world_size({world_size})"
                              f" x grad_accum({self.grad_accum}) = {per_pass}")
        return self.batch_size // per_pass


@dataclass
class ParallelConfig:
    """Runtime choices of how the model runs: never stored in a released model's config.json."""

    moe_dispatcher: Literal["torch", "triton", "deepspeed", "megablocks"] = "torch"  # moe_ts.dispatch
    capacity_factor: float = 1.25  # moe_dispatcher "deepspeed" only (capacity-based; drops past capacity)
    # Ranks that share one copy of the experts, each holding num_experts/ep_size of them (pretrain/expert_parallel.py);
    # 1: every rank holds every expert. Must divide model.moe.num_experts and the world size.
    ep_size: int = 1
    # Seconds a collective may wait for the other ranks before the job fails (a dead or stuck rank).
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.capacity_factor <= 0:
            raise ConfigError(f"parallel.capacity_factor must be > 0, got {self.capacity_factor}")
        if isinstance(self.ep_size, bool) or not isinstance(self.ep_size, int) or self.ep_size < 1:
            raise ConfigError(f"parallel.ep_size must be an integer >= 1, got {self.ep_size!r}")
        if self.ep_size > 1 and self.moe_dispatcher != "torch":
            raise ConfigError(f"parallel.ep_size={self.ep_size} needs parallel.moe_dispatcher 'torch' (the expert-parallel "
                              f"dispatcher replaces the local one), got {self.moe_dispatcher!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"parallel.timeout_s must be > 0, got {self.timeout_s}")

    def check_world_size(self, world_size: int) -> None:
        """ConfigError unless the job's `world_size` is a multiple of ep_size."""
        if world_size % self.ep_size:
            raise ConfigError(f"parallel.ep_size={self.ep_size} must divide the world size ({world_size} processes)")


@dataclass
class PretrainConfig:
    """Everything one pretraining run reads from its YAML."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self) -> None:
        if self.train.min_window_patches > self.model.max_seq_len:
            raise ConfigError(f"train.min_window_patches={self.train.min_window_patches} exceeds "
                              f"model.max_seq_len={self.model.max_seq_len}")
        if self.train.multivariate_share > 0 and self.model.max_seq_len < 2 * self.train.min_window_patches:
            raise ConfigError(f"train.multivariate_share > 0 needs model.max_seq_len >= 2 x train.min_window_patches "
                              f"= {2 * self.train.min_window_patches} (two variates of the shortest window), got "
                              f"{self.model.max_seq_len}")
        if self.model.moe.num_experts % self.parallel.ep_size:
            raise ConfigError(f"parallel.ep_size={self.parallel.ep_size} must divide "
                              f"model.moe.num_experts={self.model.moe.num_experts}")


RENAMED_KEYS = {("parallel", "moe_backend"): "moe_dispatcher"}  # old name -> new name, in place


def rename_old_keys(data: dict[str, Any], source: str) -> list[str]:
    """Rename, in place, the keys of a run-config dict that have a new name (`RENAMED_KEYS`); returns a note per
    rename. Every reader of a saved run config (loading, `--resume`, the reference curve) goes through here."""
    notes = []
    for (section, old), new in RENAMED_KEYS.items():
        part = data.get(section)
        if isinstance(part, dict) and old in part:
            if new in part:
                raise ConfigError(f"{source}: {section}.{old} and {section}.{new} are one setting; keep {new}")
            part[new] = part.pop(old)
            notes.append(f"{section}.{old} is now {section}.{new}")
    return notes


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    """Read a run YAML/JSON with `model:`, `train:` and `parallel:` sections; errors name the file and key path.

    Old files with `model.moe.backend` / `model.moe.capacity_factor` load with a FutureWarning; their values
    move to `parallel:` unless that section sets them itself. `parallel.moe_backend` (the name before
    `moe_dispatcher`) loads as `moe_dispatcher`, with a FutureWarning.
    """
    data = load_file(path)
    renamed = rename_old_keys(data, str(path))
    if renamed:
        warnings.warn(f"{path}: {', '.join(renamed)}", FutureWarning, stacklevel=2)
    if isinstance(data.get("model"), dict):
        data["model"], dropped = drop_runtime_keys(data["model"], str(path))
        if dropped:
            parallel = data.setdefault("parallel", {})
            if isinstance(parallel, dict):
                parallel.setdefault("moe_dispatcher", dropped.get("backend", "torch"))
                if "capacity_factor" in dropped:
                    parallel.setdefault("capacity_factor", dropped["capacity_factor"])
    try:
        return from_dict(PretrainConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def lr_factor(step: int, train: TrainConfig) -> float:
    """Multiplier of `train.lr` used by optimizer step `step` (0-based): linear warmup, then cosine to min_lr."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    floor = train.min_lr / train.lr
    decay_steps = max(1, train.steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_flops_per_token(active_params: int, num_layers: int, d_model: int, seq_len: int) -> float:
    """Forward+backward FLOPs per token: 6·active_params + 12·layers·d_model·seq_len (PaLM's attention term)."""
    return 6.0 * active_params + 12.0 * num_layers * d_model * seq_len


def deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict for `train` on `world_size` data-parallel ranks.

    The optimizer is torch's AdamW (`torch_adam`: no DeepSpeed FusedAdam build; torch's own fused kernel with
    `train.fused_adamw`, DeepSpeed passes the flag through); the LR schedule is passed to
    `deepspeed.initialize` as a LambdaLR over `lr_factor`, so it is not listed here.
    """
    cfg: dict[str, Any] = {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size(world_size),
        "gradient_accumulation_steps": train.grad_accum,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": train.lr,
                "betas": list(train.betas),
                "eps": train.adam_eps,
                "weight_decay": train.weight_decay,
                "torch_adam": True,
                "fused": train.fused_adamw,
            },
        },
        "gradient_clipping": train.grad_clip,
        "zero_optimization": {"stage": train.zero_stage},
        "steps_per_print": 2**31 - 1,  # progress is ours (tqdm + metrics.jsonl)
        "wall_clock_breakdown": False,
    }
    # train.dtype bf16 is torch.autocast around the whole loss (pretrain/engine.py train_step): DeepSpeed's own
    # `torch_autocast` wraps only engine.forward, so the mixture head (called by the loss outside the engine) met
    # bf16 hidden states with fp32 weights and every bf16 run failed. DeepSpeed must still be told: on CUDA it sees
    # the outer autocast and, without this entry, switches it OFF inside the engine's forward. With it, the engine
    # re-enters the same autocast; no module's parameters are cast for communication (gradients reduce in fp32).
    if train.dtype == "bf16":
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    return cfg
