"""The decoder network (docs/ARCHITECTURE.md §2): normalised patches → hidden states (+ MoE stats), no loss.

Patch tokens → residual-MLP input projection → pre-norm decoder layers (causal attention with RoPE
and QK-norm, sparse MoE FFN) → final RMSNorm; the mixture-distribution head (`head`) turns a hidden
state into the distribution of the next patch (or the next `predict_patches`), the optional long-horizon
head (`horizon_head`, when `horizon_patches` > 0) into that of the next `horizon_patches`. Losses live in
`moe_ts.objectives`, sampling in `moe_ts.forecasting`, the released class with Hugging Face I/O in `moe_ts.model`.

Shape legend: B batch, N patches, P patch size, D model width, L layers, E experts.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from moe_ts.attention import Attention, LayerCache, RopeAngles, RopeTable, rope_angles
from moe_ts.config import ModelConfig
from moe_ts.distributions import MixtureHead
from moe_ts.moe import MoELayer, MoEStats


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
        self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.rope_base, cfg.norm_eps, cfg.variate_bias)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.moe = MoELayer(cfg.d_model, cfg.moe, cfg.init_std)

    def forward(
        self, x_bnd: Tensor, positions_bn: Tensor, mask_bnl: Tensor, cache: LayerCache | None,
        token_mask_bn: Tensor | None = None, variate_bn: Tensor | None = None, rope: RopeAngles | None = None,
    ) -> tuple[Tensor, LayerCache, MoEStats]:
        attn_out, new_cache = self.attn(self.attn_norm(x_bnd), positions_bn, mask_bnl, cache, variate_bn, rope)
        x_bnd = x_bnd + attn_out
        b, n, d = x_bnd.shape
        token_mask_t = None if token_mask_bn is None else token_mask_bn.reshape(b * n)
        ffn_out, stats = self.moe(self.ffn_norm(x_bnd).reshape(b * n, d), token_mask_t)
        return x_bnd + ffn_out.reshape(b, n, d), new_cache, stats


class MoiraiMoENetwork(nn.Module):
    """Decoder-only sparse-MoE network: `forward` gives hidden states, `head` the next-patch distribution."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_proj = PatchProjection(config.patch_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = MixtureHead(config.d_model, config.patch_size * config.predict_patches)
        self.apply(self._init_weights)
        self.horizon_head: MixtureHead | None = None
        if config.horizon_patches:
            # Built after the rest is initialised and on a forked RNG, so the trunk and `head` of a seeded model
            # are the same with or without it, and so is the global RNG stream that follows.
            with torch.random.fork_rng(devices=[]):
                self.horizon_head = MixtureHead(config.d_model, config.patch_size * config.horizon_patches)
                self.horizon_head.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self, patches_bnp: Tensor, positions_bn: Tensor, mask_bnl: Tensor, caches: list[LayerCache] | None = None,
        token_mask_bn: Tensor | None = None, variate_bn: Tensor | None = None, rope_table: RopeTable | None = None,
    ) -> tuple[Tensor, list[LayerCache], list[MoEStats]]:
        """Hidden states [B, N, D] of normalised patches, given the tokens already in `caches` (written in place).

        `token_mask_bn` (True = real patch) keeps padding out of the MoE losses and expert counts;
        `variate_bn` (variate ids of a multivariate row) feeds the variate attention bias, if configured.
        RoPE's angles are computed once for all layers, or looked up in `rope_table` (a decoder's, built once).
        """
        x = self.patch_proj(patches_bnp)
        rope = (rope_angles(positions_bn, self.config.head_dim, self.config.rope_base) if rope_table is None
                else rope_table.lookup(positions_bn))
        new_caches, all_stats = [], []
        for i, layer in enumerate(self.layers):
            x, cache, stats = layer(x, positions_bn, mask_bnl, None if caches is None else caches[i], token_mask_bn,
                                    variate_bn, rope)
            new_caches.append(cache)
            all_stats.append(stats)
        return self.final_norm(x), new_caches, all_stats

    def decoding_head(self, name: str) -> tuple[MixtureHead, int]:
        """The head `forecast(..., head=name)` decodes with and the patches it predicts per position:
        "next" (`head`, predict_patches) or "horizon" (`horizon_head`, horizon_patches)."""
        if name == "next":
            return self.head, self.config.predict_patches
        if name == "horizon":
            if self.horizon_head is None:
                raise ValueError("head='horizon' needs a model with a long-horizon head (model.horizon_patches > 0); "
                                 "this one has none")
            return self.horizon_head, self.config.horizon_patches
        raise ValueError(f"head must be 'next' or 'horizon', got {name!r}")

    def rope_table(self, size: int) -> RopeTable:
        """RoPE's angles for positions 0..size-1 on this network's device (`forward`'s `rope_table`)."""
        return RopeTable(self.config.head_dim, self.config.rope_base, size, next(self.parameters()).device)

    def empty_caches(self, batch: int, capacity: int) -> list[LayerCache]:
        """One empty KV cache per layer with room for `capacity` tokens (`forward` fills them in place)."""
        cfg, param = self.config, next(self.parameters())
        return [LayerCache.empty(batch, cfg.num_heads, capacity, cfg.head_dim, param.dtype, param.device)
                for _ in self.layers]

    def num_parameters(self, active: bool = False) -> int:
        """Total parameters, or those a token uses (top-k of E experts per layer)."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        moe = self.config.moe
        expert_params = sum(p.numel() for layer in self.layers for p in layer.moe.experts.parameters())
        return total - expert_params + expert_params * moe.top_k // moe.num_experts
