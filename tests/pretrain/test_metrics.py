"""Expert-load summary and metrics.jsonl truncation on resume."""
from __future__ import annotations

import json

import pytest
import torch

from pretrain.metrics import MetricsLog, expert_load_stats, read_metrics


def test_expert_load_stats_hand_computed():
    counts = torch.tensor([[10, 10, 10, 10], [40, 0, 0, 0]])
    s = expert_load_stats(counts)
    # layer 0 balanced (max share x E = 1), layer 1 all on one expert (4); averaged over layers
    assert s["expert_load_max"] == pytest.approx((1.0 + 4.0) / 2)
    assert s["expert_load_min"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["expert_load_cv"] == pytest.approx((0.0 + (300 ** 0.5) / 10) / 2)  # std 17.32 / mean 10
    assert s["dead_experts"] == 3
    assert s["expert_load"] == [[0.25] * 4, [1.0, 0.0, 0.0, 0.0]]


def test_metrics_log_drops_records_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in (10, 20, 30)))
    log = MetricsLog(tmp_path, resume_step=20, enabled=True, wandb_project="x", wandb_mode="disabled", config={})
    log.log({"step": 21, "loss": 0.5})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 21]
    MetricsLog(tmp_path, resume_step=0, enabled=True, wandb_project="x", wandb_mode="disabled", config={}).close()
    assert read_metrics(path) == []  # a fresh run starts a fresh file
