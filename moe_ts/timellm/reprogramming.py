"""Patching and reprogramming (Time-LLM's `layers/Embed.py` PatchEmbedding and `ReprogrammingLayer`).

- `PatchEmbedding`: the normalised series, right-padded by `stride` copies of its last value (replication), cut
  into patches of `patch_len` every `stride` points ((L − P) / S + 2 patches) and embedded to d_model by a
  circular Conv1d (kernel 3, no bias) over the patch axis, as the reference's TokenEmbedding.
- `TextPrototypes`: a trainable Linear(V → S) over the LLM's frozen vocabulary embeddings [V, D_llm] gives S
  prototype vectors [S, D_llm] ("text prototypes"); computed in the embeddings' dtype so a bf16 LLM's table is
  never copied to float32, returned in the map's own dtype.
- `Reprogramming`: multi-head cross-attention, patch embeddings as queries, prototypes as keys and values
  (head width d_keys), projected to the LLM's width.

Shape legend: B series, L points, N patches, P patch length, D d_model, S prototypes, V vocabulary, E LLM width,
H heads, K per-head width.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def num_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Patches of a padded context: (L − P) // S + 2 (the reference's patch_nums)."""
    return (context_length - patch_len) // stride + 2


class PatchEmbedding(nn.Module):
    """[B, L] → [B, N, D]."""

    def __init__(self, patch_len: int, stride: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.conv = nn.Conv1d(patch_len, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_bl: Tensor) -> Tensor:
        padded = torch.cat((x_bl, x_bl[:, -1:].expand(-1, self.stride)), dim=1)
        patches_bnp = padded.unfold(1, self.patch_len, self.stride)
        return self.dropout(self.conv(patches_bnp.transpose(1, 2)).transpose(1, 2))


class TextPrototypes(nn.Module):
    """Vocabulary embeddings [V, E] → prototypes [S, E] by a trainable Linear(V → S)."""

    def __init__(self, vocab_size: int, num_prototypes: int) -> None:
        super().__init__()
        self.map = nn.Linear(vocab_size, num_prototypes)

    def forward(self, vocab_ve: Tensor) -> Tensor:
        weight, bias = self.map.weight.to(vocab_ve.dtype), self.map.bias.to(vocab_ve.dtype)
        return (weight @ vocab_ve + bias[:, None]).to(self.map.weight.dtype)


class Reprogramming(nn.Module):
    """Cross-attention from patch embeddings [B, N, D] to prototypes [S, E] → [B, N, E]."""

    def __init__(self, d_model: int, num_heads: int, d_keys: int, d_llm: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.d_keys = num_heads, d_keys
        self.query = nn.Linear(d_model, d_keys * num_heads)
        self.key = nn.Linear(d_llm, d_keys * num_heads)
        self.value = nn.Linear(d_llm, d_keys * num_heads)
        self.out = nn.Linear(d_keys * num_heads, d_llm)
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches_bnd: Tensor, prototypes_se: Tensor) -> Tensor:
        b, n, _ = patches_bnd.shape
        q_bnhk = self.query(patches_bnd).view(b, n, self.num_heads, self.d_keys)
        k_shk = self.key(prototypes_se).view(-1, self.num_heads, self.d_keys)
        v_shk = self.value(prototypes_se).view(-1, self.num_heads, self.d_keys)
        scores_bhns = torch.einsum("bnhk,shk->bhns", q_bnhk, k_shk) / math.sqrt(self.d_keys)
        attn_bhns = self.dropout(F.softmax(scores_bhns, dim=-1))
        out_bnhk = torch.einsum("bhns,shk->bnhk", attn_bhns, v_shk)
        return self.out(out_bnhk.reshape(b, n, -1))
