"""Time-LLM (Jin et al., ICLR 2024) and Time-DPD (its prompt made trainable) over a frozen LLM (docs/ARCHITECTURE.md §10).

Four stages, the LLM frozen throughout:
1. RevIN (`revin.py`): each series standardised by its own statistics, a trainable affine pair, inverted at the end.
2. Patches of 16 every 8 points (replication padding) embedded to d_model (`reprogramming.PatchEmbedding`).
3. Reprogramming (`reprogramming.py`): cross-attention from the patch embeddings to S text prototypes (a trainable
   map of the LLM's vocabulary embeddings), projected to the LLM's width; the prompt goes in front
   (`prompt.py`: Time-LLM's per-series statistics text embedded with the frozen table, or Time-DPD's trainable
   soft prompt). Text prompts are left-padded and masked, with positions counted from their first real token.
4. The frozen LLM's last hidden states at the patch positions, first d_ff features, flattened (patch-major; the
   reference's FlattenHead is feature-major, a permutation of a fresh head's inputs), dropout (on these features:
   the reference drops points of the forecast itself), one linear head per trained horizon (direct multi-step),
   RevIN inverted.

Trainable: RevIN's affine pair, the patch embedding, the prototype map, the reprogramming attention, the soft
prompt (Time-DPD) and the heads. The LLM is a registered submodule (it moves with `.to()` and counts in the total)
but `state_dict` leaves it out: the saved folder holds only the trainable weights, and config.json the LLM's name,
revision and sizes, so `from_pretrained` fetches or finds the LLM as `transformers` does and loads the rest.
The LLM stays in eval mode (no dropout) whatever the model's mode.

Shape legend: B series, L context, N patches, E LLM width, T prompt tokens, F d_ff, H horizon.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Iterable

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from torch import Tensor, nn

from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.io.model_card import POINT_FORECASTER_CARD_TAIL
from moe_ts.io.hub import HubIOMixin, ModelFolderError, released_class_keywords
from moe_ts.timellm.config import TIME_LLM_MODEL_TYPE, TimeLLMConfig
from moe_ts.timellm.forecasting import time_llm_forecast
from moe_ts.timellm.llm import LoadedLLM, default_llm_dtype, load_llm
from moe_ts.timellm.prompt import input_statistics, soft_prompt_text, statistics_prompt
from moe_ts.timellm.reprogramming import PatchEmbedding, Reprogramming, TextPrototypes, num_patches
from moe_ts.timellm.revin import RevIN

__all__ = ["TIME_LLM_MODEL_TYPE", "TimeLLMConfig", "TimeLLMModel"]
LLM_PREFIX = "llm."

TIME_LLM_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name | default("moe-ts Time-LLM forecaster", true) }}

{{ origin | default("A Time-LLM-style forecaster: time-series patches reprogrammed into a frozen language model.", true) }}

{{ architecture | default("", true) }}

This folder holds only the trainable weights; the frozen language model named above is loaded with `transformers`
(from the Hub or its local cache) when the folder loads.

""" + POINT_FORECASTER_CARD_TAIL + """
## Limitations

- Point forecasts at the trained horizons (or shorter) only; its quantiles all equal the point forecast.
- A fixed context window: shorter series are padded with missing values, longer ones truncated.
"""


class TimeLLMModel(
    nn.Module,
    HubIOMixin,
    ModelHubMixin,
    **released_class_keywords(TimeLLMConfig, "llm", "time-llm", model_card_template=TIME_LLM_CARD_TEMPLATE),
):
    """Reprogrammed frozen LLM with direct heads: `forward` on raw contexts, `forecast` with the shared interface."""

    def __init__(self, config: TimeLLMConfig, loaded_llm: LoadedLLM | None = None) -> None:
        config = self.typed_config(config)
        super().__init__()
        loaded = loaded_llm if loaded_llm is not None else load_llm(config.llm, config.llm_revision, config.llm_layers)
        for what, recorded, found in (("width", config.llm_hidden_size, loaded.hidden_size),
                                      ("vocabulary", config.llm_vocab_size, loaded.vocab_size)):
            if recorded and recorded != found:
                raise ModelFolderError(f"--llm {config.llm}: its {what} is {found}, but these weights were trained "
                                       f"on an LLM with {recorded}; load the LLM they were trained on")
        if config.d_ff > loaded.hidden_size:
            raise ValueError(f"d_ff {config.d_ff}: exceeds the LLM's width {loaded.hidden_size} (d_ff of its hidden "
                             "features are kept per patch)")
        self.config = config
        self.llm = loaded.model
        self.tokenizer = loaded.tokenizer
        self.num_patches = num_patches(config.context_length, config.patch_len, config.stride)
        self.revin = RevIN(config.eps)
        self.patch_embedding = PatchEmbedding(config.patch_len, config.stride, config.d_model, config.dropout)
        self.prototypes = TextPrototypes(loaded.vocab_size, config.num_prototypes)
        self.reprogramming = Reprogramming(config.d_model, config.num_heads, config.d_ff, loaded.hidden_size,
                                           config.dropout)
        if config.soft_prompt:
            self.soft_prompt = nn.Parameter(self._soft_prompt_init(config.soft_prompt))
        self.head_dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({str(h): nn.Linear(self.num_patches * config.d_ff, h) for h in config.horizons})

    @classmethod
    def build(cls, config: TimeLLMConfig, dtype: torch.dtype | None = None) -> "TimeLLMModel":
        """A freshly initialised model: the LLM loaded (in `dtype`, default `llm.default_llm_dtype`), and config
        completed with its path, revision and sizes."""
        loaded = load_llm(config.llm, config.llm_revision, config.llm_layers, dtype)
        config = replace(config, llm=loaded.name, llm_revision=loaded.revision, llm_layers=loaded.num_layers,
                         llm_hidden_size=loaded.hidden_size, llm_vocab_size=loaded.vocab_size)
        return cls(config, loaded_llm=loaded)

    def place(self, device: torch.device, dtype: torch.dtype | None = None) -> "TimeLLMModel":
        """Moved to `device`; the trainable parts cast to `dtype` (when given), the frozen LLM kept at the device's
        LLM precision (`llm.default_llm_dtype`: bfloat16 on a CUDA device that has it) unless bfloat16 is asked
        for: a float32 evaluation must not double a 7B LLM's memory (`moe_ts.device.place_model` calls this)."""
        llm_dtype = torch.bfloat16 if dtype == torch.bfloat16 else default_llm_dtype(device)
        self.to(device=device)
        if dtype is not None:
            for name, child in self.named_children():
                if name != "llm":
                    child.to(dtype=dtype)
            if hasattr(self, "soft_prompt"):
                self.soft_prompt.data = self.soft_prompt.data.to(dtype)
        self.llm.to(dtype=llm_dtype)
        return self

    # --- the frozen LLM never in the state, never trained ---
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """The trainable weights only (the LLM's are loaded from its own source)."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "") + LLM_PREFIX
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):  # type: ignore[override]
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(LLM_PREFIX)]
        unexpected = list(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(f"TimeLLMModel.load_state_dict: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return result

    def train(self, mode: bool = True) -> "TimeLLMModel":
        super().train(mode)
        self.llm.eval()
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """The card with this model's LLM and sizes."""
        cfg = self.config
        prompt = f"Time-DPD soft prompt of {cfg.soft_prompt} vectors" if cfg.soft_prompt else "Time-LLM text prompt"
        kwargs.setdefault("architecture", (
            f"Frozen LLM `{cfg.llm}` (revision {cfg.llm_revision or 'local folder'}, {cfg.llm_layers} layers, width "
            f"{cfg.llm_hidden_size}); {prompt}; context {cfg.context_length}, patches {cfg.patch_len}/{cfg.stride}, "
            f"d_model {cfg.d_model}, d_ff {cfg.d_ff}, {cfg.num_prototypes} prototypes, heads for horizons "
            f"{', '.join(map(str, cfg.horizons))}. Parameters: {self.num_parameters(True):,} trained of "
            f"{self.num_parameters():,}."))
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        for key in ("license", "datasets"):
            value = kwargs.pop(key, None)
            if value:
                setattr(card_data, key, value)
        return ModelCard.from_template(card_data=card_data, template_str=self._hub_mixin_info.model_card_template,
                                       repo_url=self._hub_mixin_info.repo_url, **kwargs)

    # --- the forward pass ---
    def _soft_prompt_init(self, n: int) -> Tensor:
        """[n, E] the frozen embeddings of the hand-written prompt's first n tokens (cycled when it is shorter)."""
        cfg = self.config
        text = soft_prompt_text(cfg.description, max(cfg.horizons), cfg.context_length)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
        if len(ids) == 0:
            raise ValueError(f"--llm {cfg.llm}: its tokenizer turns the hand-written prompt into no tokens")
        ids = ids.repeat((n + len(ids) - 1) // len(ids))[:n]
        with torch.no_grad():
            return self.llm.get_input_embeddings()(ids).float().clone()

    def _prompt(self, z_bl: Tensor, observed_bl: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(prompt embeddings [B, T, E], its attention mask [B, T] or None when nothing is padded)."""
        b = z_bl.shape[0]
        if self.config.soft_prompt:
            return self.soft_prompt[None].expand(b, -1, -1), None
        cfg, stats = self.config, input_statistics(z_bl.detach(), observed_bl)
        texts = [statistics_prompt(cfg.description, max(cfg.horizons), cfg.context_length, stats, i) for i in range(b)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True)
        ids, mask = batch.input_ids.to(z_bl.device), batch.attention_mask.to(z_bl.device)
        with torch.no_grad():
            return self.llm.get_input_embeddings()(ids), mask

    def features(self, x_bl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw contexts [B, L] (NaN = missing) → (LLM features [B, N·F], RevIN mean [B, 1], std [B, 1]).

        RevIN's statistics are float32 whatever the trainable parts' dtype (`.to(bfloat16)` casts them too)."""
        dtype = self.revin.weight.dtype
        mean, std = self.revin.statistics(x_bl.float())
        z_bl = self.revin.standardise(x_bl.float(), mean, std)
        patches_bnd = self.patch_embedding(self.revin.affine(z_bl.to(dtype)))
        prototypes_se = self.prototypes(self.llm.get_input_embeddings().weight)
        series_bne = self.reprogramming(patches_bnd, prototypes_se.to(dtype))
        prompt_bte, prompt_mask = self._prompt(z_bl, ~torch.isnan(x_bl))
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        inputs = torch.cat((prompt_bte.to(dtype), series_bne), dim=1).to(llm_dtype)
        kwargs: dict[str, Any] = {}
        if prompt_mask is not None:
            mask = torch.cat((prompt_mask, torch.ones_like(prompt_mask[:, :1]).expand(-1, series_bne.shape[1])), 1)
            kwargs = {"attention_mask": mask, "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0)}
        hidden_bte = self.llm(inputs_embeds=inputs, **kwargs).last_hidden_state
        feats_bnf = hidden_bte[:, -self.num_patches:, :self.config.d_ff].to(dtype)
        return self.head_dropout(feats_bnf.flatten(1)), mean, std

    def forward(self, x_bl: Tensor, horizons: Iterable[int] | None = None) -> dict[int, Tensor]:
        """Raw contexts of exactly `context_length` points → {horizon: forecast [B, H]} on their scale."""
        if x_bl.shape[1] != self.config.context_length:
            raise ValueError(f"expected contexts of {self.config.context_length} points, got {x_bl.shape[1]}")
        feats, mean, std = self.features(x_bl)
        wanted = self.config.horizons if horizons is None else tuple(horizons)
        return {h: self.revin.denormalise(self.heads[str(h)](feats).float(), mean, std) for h in wanted}

    @torch.no_grad()
    def forecast(self, contexts: object, prediction_length: int, num_samples: int = 1,
                 quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None, batch_size: int = 64,
                 context_length: int | None = None, allow_short_context: bool = False, progress: bool = False,
                 **decoding: Any) -> ForecastOutput:
        """Point forecasts (the MoE model's interface; `moe_ts.timellm.forecasting.time_llm_forecast`)."""
        return time_llm_forecast(self, contexts, prediction_length, quantile_levels=quantile_levels, seed=seed,
                                 batch_size=batch_size, context_length=context_length,
                                 allow_short_context=allow_short_context, progress=progress, **decoding)
