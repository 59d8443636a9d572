"""The Time-LLM / Time-DPD model's config (what its config.json holds; docs/ARCHITECTURE.md §10)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moe_ts.timellm.prompt import DEFAULT_DESCRIPTION
from moe_ts.typed_config import ConfigError

TIME_LLM_MODEL_TYPE = "time_llm"


@dataclass
class TimeLLMConfig:
    """Architecture of the trainable parts and which frozen LLM they read (never its weights)."""

    model_type: Literal["time_llm"] = TIME_LLM_MODEL_TYPE  # what `moe_ts.io.loading` dispatches on
    llm: str = "Qwen/Qwen2.5-0.5B"  # Hub id or local folder of the frozen LLM
    llm_revision: str | None = None  # Hub commit the weights were trained on (None: a local folder)
    llm_layers: int = 0  # LLM layers kept (0 = all; a built model records the number kept)
    llm_hidden_size: int = 0  # recorded at build, checked when the LLM loads again (0 = not recorded)
    llm_vocab_size: int = 0
    context_length: int = 512
    horizons: tuple[int, ...] = (96, 192, 336, 720)  # one direct head per horizon
    patch_len: int = 16
    stride: int = 8
    d_model: int = 32  # patch embedding width
    d_ff: int = 128  # LLM hidden features kept per patch (and the reprogramming heads' width)
    num_heads: int = 8  # reprogramming attention heads
    num_prototypes: int = 1000
    soft_prompt: int = 0  # 0: Time-LLM's text prompt; N: Time-DPD's N trainable prompt vectors
    description: str = DEFAULT_DESCRIPTION
    dropout: float = 0.1
    eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("patch_len", "stride", "d_model", "d_ff", "num_heads", "num_prototypes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context_length < self.patch_len:
            raise ConfigError(f"context_length {self.context_length} is shorter than one patch ({self.patch_len} "
                              "points)")
        self.horizons = tuple(sorted(set(int(h) for h in self.horizons)))
        if not self.horizons or self.horizons[0] < 1:
            raise ConfigError(f"horizons must be positive integers, got {list(self.horizons)}")
        if self.soft_prompt < 0 or self.llm_layers < 0:
            raise ConfigError(f"soft_prompt and llm_layers must be >= 0, got {self.soft_prompt}, {self.llm_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
