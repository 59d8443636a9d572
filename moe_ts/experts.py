"""Grouped SwiGLU experts and the shared expert (docs/ARCHITECTURE.md §3).

`GroupedExperts` holds the E experts' weights stacked ([E, D, F], [E, D, F], [E, F, D]) and applies
them to expert-contiguous rows through one method, `gmm` (grouped GEMM): a LoRA adapter or a
megablocks-style kernel replaces that method and nothing else. The SwiGLU formula itself is
`kernels.grouped.swiglu`, the only copy in the project.

Shape legend: P permuted rows (tokens·k, sorted by expert), D model width, F expert hidden width,
E experts, I/O a GEMM's input/output width.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kernels.grouped import GROUPED_MM, grouped_mm, grouped_mm_path, swiglu


class GroupedExperts(nn.Module):
    """E SwiGLU experts, weights stacked for grouped GEMMs: e(x) = (silu(x·W_gate) ⊙ x·W_up)·W_down."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.w_up = nn.Parameter(torch.randn(num_experts, d_model, d_ff) * init_std)
        self.w_gate = nn.Parameter(torch.randn(num_experts, d_model, d_ff) * init_std)
        self.w_down = nn.Parameter(torch.randn(num_experts, d_ff, d_model) * init_std)

    @property
    def num_experts(self) -> int:
        return self.w_up.shape[0]

    def gmm(self, x_pi: Tensor, w_eio: Tensor, offsets_e1: Tensor) -> Tensor:
        """Rows offsets[e]:offsets[e+1] times w[e] → [P, O]: `torch._grouped_mm` (no host sync) where it
        runs, else a per-expert loop over the weights unbound once (see `kernels.grouped.swiglu_loop`).
        Under autocast both operands take autocast's dtype first, as a matmul's would: `torch._grouped_mm` is on
        none of autocast's op lists, and mixed operands fell back to the per-expert loop and its per-expert casts
        (BENCHMARKS.md, "The CPU allocator, bf16 autocast and fused AdamW")."""
        if torch.is_autocast_enabled(x_pi.device.type) and x_pi.dtype != torch.float64:  # autocast leaves fp64
            dtype = torch.get_autocast_dtype(x_pi.device.type)
            x_pi, w_eio = x_pi.to(dtype), w_eio.to(dtype)
        if grouped_mm_path(x_pi, w_eio) == GROUPED_MM:
            return grouped_mm(x_pi, w_eio, offsets_e1[1:].to(torch.int32).contiguous())
        w_e = w_eio.unbind(0)  # one view per expert: indexing w[e] in the loop zero-fills [E, I, O] per expert
        counts = (offsets_e1[1:] - offsets_e1[:-1]).tolist()
        out = [chunk @ w_e[e] for e, chunk in enumerate(torch.split(x_pi, counts)) if chunk.shape[0] > 0]
        return torch.cat(out, dim=0) if out else x_pi.new_zeros(0, w_eio.shape[-1])

    def forward(self, x_pd: Tensor, offsets_e1: Tensor) -> Tensor:
        """Expert e on its contiguous block of rows offsets[e]:offsets[e+1] → [P, D]."""
        if x_pd.shape[0] == 0:
            return x_pd.new_zeros(0, self.w_down.shape[-1])
        return swiglu(x_pd, self.w_gate, self.w_up, self.w_down, lambda a, w: self.gmm(a, w, offsets_e1))

    def single(self, x_d: Tensor, e: int) -> Tensor:
        """Expert e on any batch of rows (used by test references)."""
        return swiglu(x_d, self.w_gate[e], self.w_up[e], self.w_down[e])



class SharedExpert(nn.Module):
    """Time-MoE-style always-on SwiGLU expert with a sigmoid gate."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.sigmoid_gate = nn.Linear(d_model, 1, bias=False)

    def forward(self, x_td: Tensor) -> Tensor:
        y = swiglu(x_td, self.gate_proj, self.up, self.down, lambda a, linear: linear(a))
        return torch.sigmoid(self.sigmoid_gate(x_td)) * y
