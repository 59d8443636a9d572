"""Causal self-attention over patch tokens: RoPE on half the head dims, QK-norm, SDPA, KV cache.

Shape legend: B batch, N new tokens, L cached + new tokens, H heads, Dh head dim, D model width.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


RopeAngles = tuple[Tensor, Tensor]  # (cos, sin), each [B, 1, N, Dh/4]: the rotation of N tokens' positions


def rope_angles(positions_bn: Tensor, head_dim: int, base: float) -> RopeAngles:
    """cos and sin of RoPE's angles at `positions_bn` for heads of `head_dim` (half of the dims rotate)."""
    rot = head_dim // 2
    inv_freq = base ** (-torch.arange(0, rot, 2, device=positions_bn.device, dtype=torch.float32) / rot)  # [rot/2]
    angles = positions_bn.float()[:, None, :, None] * inv_freq  # [B, 1, N, rot/2]
    return angles.cos(), angles.sin()


def apply_rope(x_bhnd: Tensor, rope: RopeAngles) -> Tensor:
    """Rotate the first half of each head's dims in interleaved pairs (GPT-J style), as uni2ts does."""
    cos, sin = rope
    rot = x_bhnd.shape[-1] // 2
    x_rot, x_pass = x_bhnd[..., :rot].float(), x_bhnd[..., rot:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return torch.cat((rotated.to(x_bhnd.dtype), x_pass), dim=-1)


def rope_rotate(x_bhnd: Tensor, positions_bn: Tensor, base: float) -> Tensor:
    """`apply_rope` with the angles computed here (one call; the network computes them once per forward)."""
    return apply_rope(x_bhnd, rope_angles(positions_bn, x_bhnd.shape[-1], base))


class RopeTable:
    """RoPE's cos / sin for positions 0..size-1, built once per forecast and looked up at every step.

    A lookup equals `rope_angles` at the same positions (the same float32 products and cos / sin; elementwise
    ops, so equal bit for bit on this CPU, and to rounding where a vectorised cos differs from a scalar one)."""

    def __init__(self, head_dim: int, base: float, size: int, device: torch.device | str) -> None:
        self.cos_pr, self.sin_pr = (t[0, 0] for t in rope_angles(torch.arange(size, device=device)[None], head_dim,
                                                                  base))

    @property
    def size(self) -> int:
        return self.cos_pr.shape[0]

    def lookup(self, positions_bn: Tensor) -> RopeAngles:
        """(cos, sin) [B, 1, N, Dh/4] at `positions_bn` (each < `size`)."""
        return self.cos_pr[positions_bn][:, None], self.sin_pr[positions_bn][:, None]


@dataclass
class LayerCache:
    """Keys and values of the tokens seen so far by one attention layer: the first `length` positions of
    buffers preallocated for the whole forecast and written in place (`append`), so a step copies only its
    own tokens. With the variate bias (any-variate groups) it also holds each token's variate id, so a new
    query is biased against every cached key by same / other variate (docs/ARCHITECTURE.md §2, "Groups")."""

    keys: Tensor  # [B, H, C, Dh]: C >= length, the capacity
    values: Tensor  # [B, H, C, Dh]
    length: int = -1  # tokens held; -1: all C
    variates: Tensor | None = None  # [B, C] long: the variate id of each held token (None: no variate ids given)

    def __post_init__(self) -> None:
        if self.length < 0:
            self.length = self.keys.shape[2]

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, dtype: torch.dtype,
              device: torch.device | str) -> "LayerCache":
        """A cache with room for `capacity` tokens and none written."""
        keys = torch.empty(batch, heads, capacity, head_dim, dtype=dtype, device=device)
        return cls(keys, torch.empty_like(keys), 0)

    def append(self, k_bhnd: Tensor, v_bhnd: Tensor, variate_bn: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Write N new keys and values (and their variate ids, if given) after the held ones, growing the
        buffers only if they are full; returns the keys and values of all held tokens [B, H, L, Dh] (views of
        the buffers)."""
        end = self.length + k_bhnd.shape[2]
        if variate_bn is not None and self.variates is None:
            if self.length > 0:
                raise ValueError("this KV cache holds tokens without variate ids: pass variate ids from the first "
                                 "token on (the variate attention bias needs them for every key)")
            self.variates = torch.empty(self.keys.shape[0], self.keys.shape[2], dtype=torch.long,
                                        device=self.keys.device)
        if end > self.keys.shape[2]:  # past the reserved capacity: double it (amortised, rare)
            grow = max(end, 2 * self.keys.shape[2]) - self.keys.shape[2]
            pad = self.keys.new_empty(*self.keys.shape[:2], grow, self.keys.shape[3])
            self.keys, self.values = torch.cat((self.keys, pad), dim=2), torch.cat((self.values, pad), dim=2)
            if self.variates is not None:
                self.variates = torch.cat((self.variates, self.variates.new_empty(self.variates.shape[0], grow)), 1)
        self.keys[:, :, self.length:end] = k_bhnd
        self.values[:, :, self.length:end] = v_bhnd
        if self.variates is not None:
            if variate_bn is None:
                raise ValueError("this KV cache holds variate ids: pass the new tokens' variate ids too")
            self.variates[:, self.length:end] = variate_bn
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def key_variates(self) -> Tensor | None:
        """[B, L] the variate ids of all held tokens, or None when the cache holds none."""
        return None if self.variates is None else self.variates[:, :self.length]

    def expand(self, repeats: int) -> "LayerCache":
        """Repeat every batch row `repeats` times (one copy per sample path)."""
        rows = repeated_rows(self.keys.shape[0], repeats, self.keys.device)
        variates = None if self.variates is None else self.variates.index_select(0, rows)
        return LayerCache(self.keys.index_select(0, rows), self.values.index_select(0, rows), self.length, variates)


def repeated_rows(batch: int, repeats: int, device: torch.device) -> Tensor:
    """Row indices 0,0,..,1,1,..: `t.index_select(0, rows)` is `t.repeat_interleave(repeats, 0)`, several times
    faster on big rows (whole-row copies instead of a strided broadcast)."""
    return torch.arange(batch, device=device).repeat_interleave(repeats)


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

    def _mask(self, mask_bnl: Tensor, variate_bn: Tensor | None, key_variate_bl: Tensor | None,
              dtype: torch.dtype) -> Tensor:
        """SDPA's mask [B, 1|H, N, L]: boolean, or additive with the variate bias when there is one (the
        queries' variate ids `variate_bn` against the keys' `key_variate_bl`)."""
        if self.var_bias is None or variate_bn is None:
            return mask_bnl[:, None]
        same_bnl = variate_bn[:, :, None] == key_variate_bl[:, None, :]
        w_2h = self.var_bias.weight.to(dtype)
        bias = torch.where(same_bnl[:, None], w_2h[1][None, :, None, None], w_2h[0][None, :, None, None])
        return bias.masked_fill(~mask_bnl[:, None], float("-inf"))

    def forward(
        self, x_bnd: Tensor, positions_bn: Tensor, mask_bnl: Tensor, cache: LayerCache | None = None,
        variate_bn: Tensor | None = None, rope: RopeAngles | None = None,
    ) -> tuple[Tensor, LayerCache]:
        """Attend the N new tokens to the cached ones and to themselves; mask_bnl is True where allowed.

        A given `cache` is written in place and returned. `variate_bn` (the new tokens' variate ids) adds the
        variate bias when the layer has one, against the cached keys' ids (the cache keeps them); `rope` is `rope_angles` at `positions_bn` when the caller computed them."""
        rope = rope_angles(positions_bn, self.head_dim, self.rope_base) if rope is None else rope
        q = apply_rope(self.q_norm(self._heads(self.q_proj(x_bnd))), rope)
        k = apply_rope(self.k_norm(self._heads(self.k_proj(x_bnd))), rope)
        v = self._heads(self.v_proj(x_bnd))
        biased = self.var_bias is not None and variate_bn is not None
        key_variate_bl = variate_bn
        if cache is not None:
            k, v = cache.append(k, v, variate_bn if biased else None)
            key_variate_bl = cache.key_variates() if biased else None
        mask = self._mask(mask_bnl, variate_bn, key_variate_bl, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, n, _ = out.shape
        new_cache = cache if cache is not None else LayerCache(k, v, variates=variate_bn if biased else None)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1)), new_cache
