"""Causal self-attention over patch tokens: RoPE on half the head dims, QK-norm, SDPA, KV cache.

Shape legend: B batch, N new tokens, L cached + new tokens, H heads, Dh head dim, D model width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rope_rotate(x_bhnd: Tensor, positions_bn: Tensor, base: float) -> Tensor:
    """Rotate the first half of each head's dims in interleaved pairs (GPT-J style), as uni2ts does."""
    head_dim = x_bhnd.shape[-1]
    rot = head_dim // 2
    inv_freq = base ** (-torch.arange(0, rot, 2, device=x_bhnd.device, dtype=torch.float32) / rot)  # [rot/2]
    angles = positions_bn.float()[:, None, :, None] * inv_freq  # [B, 1, N, rot/2]
    cos, sin = angles.cos(), angles.sin()
    x_rot, x_pass = x_bhnd[..., :rot].float(), x_bhnd[..., rot:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return torch.cat((rotated.to(x_bhnd.dtype), x_pass), dim=-1)


@dataclass
class LayerCache:
    """Keys and values of the tokens seen so far by one attention layer."""

    keys: Tensor  # [B, H, L, Dh]
    values: Tensor  # [B, H, L, Dh]

    def expand(self, repeats: int) -> "LayerCache":
        """Repeat every batch row `repeats` times (one copy per sample path)."""
        return LayerCache(self.keys.repeat_interleave(repeats, 0), self.values.repeat_interleave(repeats, 0))


class Attention(nn.Module):
    """Multi-head causal attention without biases; RMSNorm on q and k before RoPE."""

    def __init__(self, d_model: int, num_heads: int, rope_base: float, norm_eps: float,
                 variate_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.rope_base = rope_base
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=norm_eps)
        # uni2ts' BinaryAttentionBias: row 0 added for a key of another variate, row 1 for the same variate.
        self.var_bias = nn.Embedding(2, num_heads) if variate_bias else None

    def _heads(self, x_bnd: Tensor) -> Tensor:
        b, n, _ = x_bnd.shape
        return x_bnd.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, mask_bnl: Tensor, variate_bn: Tensor | None, cache: LayerCache | None, dtype: torch.dtype) -> Tensor:
        """SDPA's mask [B, 1|H, N, L]: boolean, or additive with the variate bias when there is one."""
        if self.var_bias is None or variate_bn is None:
            return mask_bnl[:, None]
        if cache is not None:
            raise ValueError("the variate attention bias is not supported with a KV cache (decode without one)")
        same_bnn = variate_bn[:, :, None] == variate_bn[:, None, :]
        w_2h = self.var_bias.weight.to(dtype)
        bias = torch.where(same_bnn[:, None], w_2h[1][None, :, None, None], w_2h[0][None, :, None, None])
        return bias.masked_fill(~mask_bnl[:, None], float("-inf"))

    def forward(
        self, x_bnd: Tensor, positions_bn: Tensor, mask_bnl: Tensor, cache: LayerCache | None = None,
        variate_bn: Tensor | None = None,
    ) -> tuple[Tensor, LayerCache]:
        """Attend the N new tokens to the cached ones and to themselves; mask_bnl is True where allowed.

        `variate_bn` (variate ids) adds the variate bias when the layer has one."""
        q = rope_rotate(self.q_norm(self._heads(self.q_proj(x_bnd))), positions_bn, self.rope_base)
        k = rope_rotate(self.k_norm(self._heads(self.k_proj(x_bnd))), positions_bn, self.rope_base)
        v = self._heads(self.v_proj(x_bnd))
        if cache is not None:
            k = torch.cat((cache.keys, k), dim=2)
            v = torch.cat((cache.values, v), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._mask(mask_bnl, variate_bn, cache, q.dtype))
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1)), LayerCache(k, v)
