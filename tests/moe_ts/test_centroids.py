"""k-means centroids from a pretrained model's FFN inputs initialise the centroid gate."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from moe_ts.centroids import collect_ffn_inputs, init_centroid_gates, kmeans
from moe_ts.model import MoiraiMoEModel


@pytest.mark.parametrize("batch_size", [None, 64])
def test_kmeans_recovers_separated_blobs(batch_size):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 6, generator=gen) * 20
    labels = torch.randint(5, (800,), generator=gen)
    x = centers[labels] + torch.randn(800, 6, generator=gen) * 0.1
    found = kmeans(x, 5, iters=30, batch_size=batch_size, seed=1)
    # every true center has a found centroid close to it
    assert torch.cdist(centers, found).min(dim=1).values.max() < 1.0
    with pytest.raises(ValueError, match="at least 5 points"):
        kmeans(x[:3], 5)


def test_pretrained_representations_initialise_centroid_gates(tiny_model):
    pretrained = tiny_model(seed=0, max_seq_len=8, num_layers=2, moe=dict(num_experts=4, top_k=2))  # 64-point rows
    cfg = pretrained.config
    batches = [{"target": torch.randn(3, 64), "sample_id": torch.tensor([[1] * 8, [1] * 4 + [0] * 4, [1] * 8])}] * 2
    reps = collect_ffn_inputs(pretrained, batches, max_tokens=30)
    assert len(reps) == 2 and reps[0].shape == (30, 16)
    centroids = [kmeans(r, 4, iters=10) for r in reps]

    centroid_cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, gate="centroid"))
    moe_model = MoiraiMoEModel(centroid_cfg)
    init_centroid_gates(moe_model, centroids)
    gate = moe_model.layers[0].moe.gate
    torch.testing.assert_close(gate.centroids, centroids[0])
    assert "layers.0.moe.gate.centroids" in moe_model.state_dict()
    assert not any("centroids" in n for n, _ in moe_model.named_parameters())  # fixed in pretraining
    routed = moe_model.layers[0].moe.route(reps[0])
    assert torch.equal(routed.expert_ids[:, 0], torch.cdist(reps[0], centroids[0]).argmin(1))
    with pytest.raises(ValueError, match="set moe.gate: centroid"):
        init_centroid_gates(pretrained, centroids)
    init_centroid_gates(moe_model, centroids, trainable=True)  # finetuning may unfreeze them
    assert any("centroids" in n for n, _ in moe_model.named_parameters())
