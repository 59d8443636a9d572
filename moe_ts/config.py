"""Model configuration (DESIGN §3): nested dataclasses, serialised to YAML/JSON."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moe_ts.configuration import ConfigError, from_dict, load_file


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
    backend: Literal["torch", "triton", "deepspeed", "megablocks"] = "torch"
    capacity_factor: float = 1.25  # deepspeed backend only (capacity-based)
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
    # "zero_raw" (0 in raw units, then standardised: -loc/scale, what uni2ts feeds released Moirai-MoE weights).
    missing_values: Literal["zero_normalized", "zero_raw"] = "zero_normalized"
    init_std: float = 0.02
    # Patches predicted from each position (multi-patch prediction, as Moirai 2 / Time-MoE's multi-horizon
    # heads): 1 is Moirai-MoE's next-patch head; K > 1 trains position j on patches j+1..j+K and lets
    # forecasting emit K patches per decoding step.
    predict_patches: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.predict_patches < self.max_seq_len:
            raise ConfigError(f"predict_patches must be in 1..max_seq_len-1={self.max_seq_len - 1}, "
                              f"got {self.predict_patches}")
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


def load_model_config(path: str | Path) -> ModelConfig:
    """Read the `model:` section of a YAML/JSON run config (or a bare model config)."""
    data = load_file(path)
    section = data.get("model", data)
    try:
        return from_dict(ModelConfig, section, "model")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
