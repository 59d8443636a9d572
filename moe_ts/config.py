"""Model configuration (docs/ARCHITECTURE.md §2): nested dataclasses, serialised to YAML/JSON.

Only what defines a released model lives here. Runtime choices (the MoE dispatcher, DeepSpeed's
capacity factor, parallelism) belong to the run (`pretrain.config.ParallelConfig`) or to the caller
(`moe_ts.dispatch.set_moe_dispatcher`); `drop_runtime_keys` removes them from configs written before.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moe_ts.typed_config import ConfigError, from_dict, load_file


@dataclass
class MoEConfig:
    """Sparse MoE feed-forward layer."""

    num_experts: int = 32
    top_k: int = 2
    d_ff: int = 512
    gate: Literal["linear", "centroid"] = "linear"
    centroid_select: Literal["nearest", "farthest"] = "nearest"
    # softmax_topk: softmax over the k selected scores; softmax_renorm: softmax over all E, then renormalise the k.
    weighting: Literal["softmax_topk", "softmax_renorm"] = "softmax_topk"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    shared_expert: bool = False

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ConfigError(f"moe.num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"moe.top_k must be in 1..num_experts={self.num_experts}, got {self.top_k}")
        if self.d_ff < 1:
            raise ConfigError(f"moe.d_ff must be >= 1, got {self.d_ff}")


@dataclass
class ModelConfig:
    """Decoder-only Moirai-MoE-style forecaster."""

    patch_size: int = 16
    max_seq_len: int = 512  # patches
    d_model: int = 384
    num_layers: int = 6
    num_heads: int = 6
    moe: MoEConfig = field(default_factory=MoEConfig)
    stats_ratio: float = 0.3  # leading share of patches giving the scaler statistics in pretraining
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    min_scale: float = 1e-5  # scale = sqrt(var + min_scale): constant series never divide by zero
    # What a missing value becomes at the input: "zero_normalized" (0 after standardising: the series mean) or
    # "zero_raw" (0 in raw units, then standardised: -loc/scale, what uni2ts feeds released Moirai-MoE weights), or
    # "interpolate" (runs shorter than a patch filled from their neighbours, longer gaps 0: moe_ts/packing.py).
    missing_values: Literal["zero_normalized", "zero_raw", "interpolate"] = "zero_normalized"
    # How forecasting numbers a series' patches (RoPE positions and causality): "position" (index within the
    # series) or "observed" (uni2ts' forecaster: leading patches without an observed value share time id 0 with
    # the first observed patch, and patches with equal time ids see each other). Pretraining always uses "position".
    time_ids: Literal["position", "observed"] = "position"
    # uni2ts' any-variate attention: a learned per-layer, per-head bias for query/key of the same vs a different
    # variate (converted Moirai-MoE checkpoints). Our own models have one variate per sample and no such bias.
    variate_bias: bool = False
    init_std: float = 0.02
    # Patches predicted from each position (multi-patch prediction, as Moirai 2 / Time-MoE's multi-horizon
    # heads): 1 is Moirai-MoE's next-patch head; K > 1 trains position j on patches j+1..j+K and lets
    # forecasting emit K patches per decoding step.
    predict_patches: int = 1
    # A second, long-horizon mixture head beside `head` over the same hidden states (0 = none, the default:
    # Moirai-MoE's layout): position j also predicts patches j+1..j+K (K = horizon_patches), trained with the
    # run's `train.horizon_loss_weight`; forecast(..., head="horizon") decodes with it, K patches per step,
    # so patches 2..K are placed without feeding back patch 1 (EXPERIMENTS.md, 2026-12-07 session 2).
    horizon_patches: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.predict_patches < self.max_seq_len:
            raise ConfigError(f"predict_patches must be in 1..max_seq_len-1={self.max_seq_len - 1}, "
                              f"got {self.predict_patches}")
        if not 0 <= self.horizon_patches < self.max_seq_len:
            raise ConfigError(f"horizon_patches must be in 0..max_seq_len-1={self.max_seq_len - 1} (0 = no "
                              f"long-horizon head), got {self.horizon_patches}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 4:
            raise ConfigError(f"head dim {self.d_model // self.num_heads} must be a multiple of 4 (RoPE on half of it)")
        if not 0.0 < self.stats_ratio < 1.0:
            raise ConfigError(f"stats_ratio must be in (0, 1), got {self.stats_ratio}")
        if self.patch_size < 1 or self.max_seq_len < 2:
            raise ConfigError("patch_size must be >= 1 and max_seq_len >= 2")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def max_context(self) -> int:
        """Longest context in time steps."""
        return self.patch_size * self.max_seq_len


RUNTIME_MOE_KEYS = ("backend", "capacity_factor")  # were in `moe:` before they moved out of the model config


def drop_runtime_keys(model_data: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of a model-config dict without the old runtime keys `moe.backend` / `moe.capacity_factor`,
    and the dropped values; warns (FutureWarning) naming `source` when there were any."""
    moe = model_data.get("moe")
    if not isinstance(moe, dict) or not any(k in moe for k in RUNTIME_MOE_KEYS):
        return model_data, {}
    data = copy.deepcopy(model_data)
    dropped = {k: data["moe"].pop(k) for k in RUNTIME_MOE_KEYS if k in data["moe"]}
    warnings.warn(
        f"{source}: ignoring deprecated model keys {', '.join('moe.' + k for k in dropped)} ({dropped}); they are "
        "runtime choices now, not part of the model: set them in the run config's `parallel:` section "
        "(moe_dispatcher, capacity_factor) or call moe_ts.dispatch.set_moe_dispatcher(model, name)",
        FutureWarning, stacklevel=3)
    return data, dropped


def load_model_config(path: str | Path) -> ModelConfig:
    """Read the `model:` section of a YAML/JSON run config (or a bare model config)."""
    data = load_file(path)
    section, _ = drop_runtime_keys(data.get("model", data), str(path))
    try:
        return from_dict(ModelConfig, section, "model")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
