"""Every expert of every layer of the converted uni2ts fixture computes what uni2ts' expert computes (issue 25).

The forward fixture's inputs route to 14 and 17 of the 32 experts of its two layers, so a wrong mapping of an
expert no input reaches went unseen. Here each expert is driven directly: rows sent to expert e through our
grouped experts (every expert in one call, as the MoE layer does) against uni2ts' gated feed-forward written
out on the source tensors, `fc2(silu(fc_gate(x)) * fc1(x))` with `nn.Linear`'s y = x·Wᵀ (uni2ts itself is not
needed). The expert's centroid, which routes to it, must sit at the same index.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from moe_ts.model import MoiraiMoEModel
from moe_ts.uni2ts.convert import convert_uni2ts_folder, read_uni2ts_folder

SOURCE = Path(__file__).resolve().parents[2] / "data" / "uni2ts_moe_tiny"
ROWS = 5  # rows per expert


def uni2ts_expert(tensors: dict[str, torch.Tensor], layer: int, e: int, x_pd: torch.Tensor) -> torch.Tensor:
    prefix = f"encoder.layers.{layer}.ffn.experts.{e}."
    hidden = F.silu(F.linear(x_pd, tensors[prefix + "fc_gate.weight"])) * F.linear(x_pd, tensors[prefix + "fc1.weight"])
    return F.linear(hidden, tensors[prefix + "fc2.weight"])


def mismatched_experts(model: MoiraiMoEModel, tensors: dict[str, torch.Tensor]) -> list[tuple[int, int, float]]:
    """(layer, expert, max abs error) of every expert whose output or centroid differs from uni2ts'."""
    gen = torch.Generator().manual_seed(0)
    bad = []
    for i, layer in enumerate(model.layers):
        experts, num = layer.moe.experts, layer.moe.experts.num_experts
        x_pd = torch.randn(num * ROWS, model.config.d_model, generator=gen)
        offsets = torch.arange(0, num * ROWS + 1, ROWS)
        with torch.no_grad():
            ours_pd = experts(x_pd, offsets)
        centroids = layer.moe.gate.centroids.detach()
        for e in range(num):
            rows = slice(e * ROWS, (e + 1) * ROWS)
            want = uni2ts_expert(tensors, i, e, x_pd[rows])
            error = float((ours_pd[rows] - want).abs().max())
            scale = float(want.abs().max())
            centroid_ok = torch.equal(centroids[e], tensors["encoder.centroid"][i, e].to(centroids.dtype))
            if error > 1e-5 * max(scale, 1.0) or not centroid_ok:
                bad.append((i, e, error))
    return bad


def test_every_expert_of_every_layer_matches_uni2ts():
    _, tensors = read_uni2ts_folder(SOURCE)
    conversion = convert_uni2ts_folder(SOURCE)
    model = MoiraiMoEModel(conversion.config).eval()
    model.load_state_dict(conversion.state_dict, strict=True)
    assert len(model.layers) == 2 and model.layers[0].moe.experts.num_experts == 32  # 64 experts checked
    assert mismatched_experts(model, tensors) == []
