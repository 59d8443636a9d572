"""Moirai-MoE-style decoder-only forecaster (DESIGN §3).

Patch tokens → residual-MLP input projection → pre-norm decoder layers (causal attention with RoPE
and QK-norm, sparse MoE FFN) → final RMSNorm → mixture-distribution head predicting the next patch.

Shape legend: B batch, N patches, P patch size, D model width, L layers, E experts.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from torch import Tensor, nn

from moe_ts.attention import Attention, LayerCache
from moe_ts.config import ModelConfig
from moe_ts.configuration import from_dict, to_dict
from moe_ts.distributions import MixtureHead
from moe_ts.forecast_output import ForecastOutput
from moe_ts.forecasting import forecast
from moe_ts.hub import HubIOMixin
from moe_ts.model_card import MODEL_CARD_TEMPLATE, architecture_summary
from moe_ts.moe import MoELayer, MoEStats
from moe_ts.scaling import PackedLayout, masked_stats, patchify, standardise


@dataclass
class PretrainOutput:
    """Losses of one training batch."""

    loss: Tensor  # nll + aux_loss_coef·aux + z_loss_coef·z: what the optimizer minimises
    nll: Tensor  # mean NLL per observed target value (normalised scale)
    aux_loss: Tensor  # mean over layers of the load-balancing loss
    z_loss: Tensor  # mean over layers of the router z-loss
    expert_counts: Tensor  # [L, E] tokens·k routed per expert


class PatchProjection(nn.Module):
    """uni2ts' residual MLP input projection: Linear(P→D) → SiLU → Linear(D→D), plus Linear(P→D)."""

    def __init__(self, patch_size: int, d_model: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(patch_size, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.res_proj = nn.Linear(patch_size, d_model)

    def forward(self, patches_bnp: Tensor) -> Tensor:
        return self.out_proj(nn.functional.silu(self.in_proj(patches_bnp))) + self.res_proj(patches_bnp)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)); x + moe(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.rope_base, cfg.norm_eps)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.moe = MoELayer(cfg.d_model, cfg.moe, cfg.init_std)

    def forward(
        self, x_bnd: Tensor, positions_bn: Tensor, mask_bnl: Tensor, cache: LayerCache | None,
        token_mask_bn: Tensor | None = None,
    ) -> tuple[Tensor, LayerCache, MoEStats]:
        attn_out, new_cache = self.attn(self.attn_norm(x_bnd), positions_bn, mask_bnl, cache)
        x_bnd = x_bnd + attn_out
        b, n, d = x_bnd.shape
        token_mask_t = None if token_mask_bn is None else token_mask_bn.reshape(b * n)
        ffn_out, stats = self.moe(self.ffn_norm(x_bnd).reshape(b * n, d), token_mask_t)
        return x_bnd + ffn_out.reshape(b, n, d), new_cache, stats


def _encode_config(cfg: ModelConfig) -> dict:
    return to_dict(cfg)


def _decode_config(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data, "config")


class MoiraiMoEModel(
    nn.Module,
    HubIOMixin,
    ModelHubMixin,
    library_name="moe-ts",
    tags=["time-series", "forecasting", "mixture-of-experts"],
    repo_url="https://github.com/moe-ts/moe-ts",
    pipeline_tag="time-series-forecasting",
    license="other",  # `moe-ts export --license` sets the release's licence
    coders={ModelConfig: (_encode_config, _decode_config)},
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """Decoder-only sparse-MoE forecaster: `forward` gives the pretraining loss, `forecast` sample paths."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = _decode_config(config)
        self.config = config
        self.patch_proj = PatchProjection(config.patch_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = MixtureHead(config.d_model, config.patch_size)
        self.apply(self._init_weights)

    @classmethod
    def from_model_config(cls, config: ModelConfig) -> "MoiraiMoEModel":
        """A freshly initialised model."""
        return cls(config)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def encode(
        self, patches_bnp: Tensor, positions_bn: Tensor, mask_bnl: Tensor, caches: list[LayerCache] | None = None,
        token_mask_bn: Tensor | None = None,
    ) -> tuple[Tensor, list[LayerCache], list[MoEStats]]:
        """Hidden states [B, N, D] of normalised patches, given the tokens already in `caches`.

        `token_mask_bn` (True = real patch) keeps padding out of the MoE losses and expert counts.
        """
        x = self.patch_proj(patches_bnp)
        new_caches, all_stats = [], []
        for i, layer in enumerate(self.layers):
            x, cache, stats = layer(x, positions_bn, mask_bnl, None if caches is None else caches[i], token_mask_bn)
            new_caches.append(cache)
            all_stats.append(stats)
        return self.final_norm(x), new_caches, all_stats

    def forward(self, target: Tensor, sample_id: Tensor) -> PretrainOutput:
        """Training loss of packed rows.

        target [B, N·P] raw values (NaN = missing); sample_id [B, N] (0 = padding, 1.. = packed series).
        Each sample is standardised with statistics of its leading ⌈stats_ratio·n⌉ patches, which get no
        loss; every other observed value is scored by the NLL of the prediction made at the previous patch,
        except in samples whose statistics are degenerate (see `masked_stats`).
        """
        cfg = self.config
        values, observed = patchify(target, cfg.patch_size)
        if sample_id.shape != values.shape[:2]:
            raise ValueError(f"sample_id shape {tuple(sample_id.shape)} must be [B, N] = {tuple(values.shape[:2])}")
        layout = PackedLayout.from_sample_id(sample_id)
        stats_bn = layout.stats_patches(cfg.stats_ratio)
        loc, scale, informative = masked_stats(values, observed, stats_bn, layout.sample_id, cfg.min_scale)
        normed = standardise(values, observed, loc, scale, cfg.missing_values)

        hidden, _, moe_stats = self.encode(normed, layout.position, layout.attention_mask(),
                                           token_mask_bn=layout.sample_id > 0)
        # Position j predicts patch j+1 of the same sample, unless that patch gave the statistics.
        same_next = (layout.sample_id[:, 1:] == layout.sample_id[:, :-1]) & (layout.sample_id[:, 1:] > 0)
        # Samples whose statistics are degenerate (constant or < 2 values) would score targets normalised by
        # the scale floor (|z| in the thousands) and swamp the loss: they get none.
        scored_bn = same_next & ~stats_bn[:, 1:] & informative[:, 1:]
        weight_bnp = (observed[:, 1:] & scored_bn[..., None]).to(hidden.dtype)
        distr = self.head.distribution(hidden[:, :-1])
        log_prob = distr.log_prob(normed[:, 1:])
        nll = -(log_prob * weight_bnp).sum() / weight_bnp.sum().clamp(min=1.0)

        aux = torch.stack([s.aux_loss for s in moe_stats]).mean()
        z = torch.stack([s.z_loss for s in moe_stats]).mean()
        loss = nll + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z
        counts = torch.stack([s.counts for s in moe_stats])
        return PretrainOutput(loss=loss, nll=nll, aux_loss=aux, z_loss=z, expert_counts=counts)

    def num_parameters(self, active: bool = False) -> int:
        """Total parameters, or those a token uses (top-k of E experts per layer)."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        moe = self.config.moe
        expert_params = sum(p.numel() for layer in self.layers for p in layer.moe.experts.parameters())
        return total - expert_params + expert_params * moe.top_k // moe.num_experts

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """The card template filled with this model's sizes (and `eval_table`, `training`, ... when given).

        `license` and `datasets` go into the card's YAML metadata.
        """
        kwargs.setdefault("architecture", architecture_summary(self))
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        for key in ("license", "datasets"):
            if kwargs.get(key):
                setattr(card_data, key, kwargs.pop(key))
        kwargs.pop("license", None), kwargs.pop("datasets", None)
        return ModelCard.from_template(card_data=card_data, template_str=self._hub_mixin_info.model_card_template,
                                       repo_url=self._hub_mixin_info.repo_url, **kwargs)

    def predict_df(self, df: Any, prediction_length: int, **kwargs: Any) -> Any:
        """Forecast a long pandas DataFrame (item_id, timestamp, target) into one (item_id, timestamp, mean,
        quantile columns); see `moe_ts.dataframe.predict_df` for the arguments."""
        from moe_ts.dataframe import predict_df

        return predict_df(self, df, prediction_length, **kwargs)

    def forecast(self, contexts: object, prediction_length: int, **kwargs: Any) -> ForecastOutput:
        """Probabilistic forecast; see `moe_ts.forecasting.forecast` for the arguments."""
        return forecast(self, contexts, prediction_length, **kwargs)
