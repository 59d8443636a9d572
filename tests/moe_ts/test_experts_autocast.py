"""GroupedExperts under bf16 autocast (train.dtype bf16): one grouped GEMM per projection in bf16, not the
per-expert loop that mixed bf16 rows and fp32 weights fell back to; float32 weights and gradients."""
from __future__ import annotations

import torch

import moe_ts.experts as experts_module
from moe_ts.experts import GroupedExperts

E, D, F = 8, 384, 512  # the small config's widths


def _rows_and_offsets() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    counts = torch.tensor([300, 0, 7, 120, 1, 64, 500, 32])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return torch.randn(int(counts.sum()), D, generator=gen), offsets


def test_autocast_runs_the_grouped_gemm_in_bf16_against_an_fp32_per_expert_reference(monkeypatch):
    torch.manual_seed(0)
    layer = GroupedExperts(E, D, F, init_std=0.05)
    x_pd, offsets = _rows_and_offsets()
    seen = []
    real = experts_module.grouped_mm
    monkeypatch.setattr(experts_module, "grouped_mm",
                        lambda a, w, ends: seen.append((a.dtype, w.dtype)) or real(a, w, ends))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_pd = layer(x_pd.to(torch.bfloat16), offsets)  # rows arrive in bf16 from autocast's projections
    assert seen == [(torch.bfloat16, torch.bfloat16)] * 3  # gate, up, down: grouped, never the loop
    # independent reference: each expert's SwiGLU written out in float32
    ref = []
    for e in range(E):
        rows = x_pd[offsets[e]:offsets[e + 1]].to(torch.bfloat16).float()
        h = torch.nn.functional.silu(rows @ layer.w_gate[e]) * (rows @ layer.w_up[e])
        ref.append(h @ layer.w_down[e])
    ref_pd = torch.cat(ref)
    err = (out_pd.float() - ref_pd).norm() / ref_pd.norm()
    assert err < 2e-2, err  # bf16 rounding of operands and products, not a wrong expert (that is ~100%)
    out_pd.float().square().sum().backward()
    assert layer.w_up.grad is not None and layer.w_up.grad.dtype == torch.float32
    assert layer.w_up.grad[1].abs().max() == 0 and layer.w_up.grad[0].abs().max() > 0  # expert 1 had no rows
