"""train.dtype bf16 (pretrain/engine.py train_step): the whole loss under torch.autocast, on the CPU as on a
GPU. Before, DeepSpeed's `torch_autocast` wrapped only the engine's forward and the mixture head (called by the
loss outside it) met bf16 hidden states with fp32 weights: every bf16 run failed at its first step."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import moe_ts.objectives as objectives
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from pretrain.config import PretrainConfig, TrainConfig

# d_model 384 as the small config; one layer and 8 experts keep the step short.
MODEL = ModelConfig(patch_size=16, max_seq_len=64, d_model=384, num_layers=1, num_heads=6,
                    moe=MoEConfig(num_experts=8, top_k=2, d_ff=512))


def _batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    return {"target": torch.randn(4, 64 * 16, generator=gen).cumsum(1),
            "sample_id": torch.ones(4, 64, dtype=torch.long)}


def _engine(dtype: str, model: MoiraiMoEModel):
    from pretrain.engine import build_engine, setup_distributed

    run = PretrainConfig(model=MODEL, train=TrainConfig(steps=1, batch_size=4, warmup_steps=0, zero_stage=0,
                                                        grad_clip=0.0, dtype=dtype, wandb_mode="disabled"))
    return build_engine(run, setup_distributed(), model=copy.deepcopy(model))


def test_a_bf16_step_runs_the_loss_in_bf16_and_keeps_float32_weights():
    from pretrain.engine import train_step, unwrap

    torch.manual_seed(0)
    model = MoiraiMoEModel(MODEL)
    losses = {}
    for dtype in ("fp32", "bf16"):
        engine = _engine(dtype, model)
        stats = train_step(engine, [_batch()], torch.device("cpu"),
                           autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
        losses[dtype] = stats.loss
        assert all(p.dtype == torch.float32 for p in unwrap(engine).parameters())
    assert np.isfinite(losses["bf16"])
    # bf16 GEMMs change the loss in its third or fourth digit; an autocast that is not applied changes nothing.
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def test_bf16_gradients_point_where_the_fp32_ones_do():
    torch.manual_seed(0)
    model = MoiraiMoEModel(MODEL)
    batch = _batch()
    grads = {}
    for dtype in (None, torch.bfloat16):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = objectives.pretrain_loss(model, batch["target"], batch["sample_id"]).loss
        loss.backward()
        grads[dtype] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    cos = torch.nn.functional.cosine_similarity(grads[None], grads[torch.bfloat16], dim=0)
    # measured 0.93 (bf16 activations round every product to 8 bits); < 1: the bf16 path ran
    assert 0.8 < cos < 1.0, cos


def test_the_scored_targets_and_weights_stay_float32_under_autocast(monkeypatch):
    seen = []
    real = objectives.shifted_targets
    monkeypatch.setattr(objectives, "shifted_targets", lambda *a: seen.append(a[-1]) or real(*a))
    torch.manual_seed(0)
    model = MoiraiMoEModel(MODEL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        objectives.pretrain_loss(model, _batch()["target"], _batch()["sample_id"])
    assert seen == [torch.float32]  # bf16 would round the targets and the NLL's denominator


def test_deepspeed_keeps_the_autocast_inside_the_engine_forward_on_cuda(monkeypatch):
    """On CUDA, DeepSpeed reads `torch.is_autocast_enabled()` (CUDA's state) and, unless its config enables
    `torch_autocast`, disables autocast inside engine.forward: the network would run in fp32 unnoticed. Simulated
    here by answering that no-argument call with the CPU's state, as CUDA's would be on a GPU run."""
    from pretrain.engine import train_step

    real = torch.is_autocast_enabled
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *device: real(*(device or ("cpu",))))
    torch.manual_seed(0)
    engine = _engine("bf16", MoiraiMoEModel(MODEL))
    seen = []
    engine.module.layers[0].attn.register_forward_hook(
        lambda module, args, out: seen.append((out[0] if isinstance(out, tuple) else out).dtype))
    train_step(engine, [_batch()], torch.device("cpu"), autocast_dtype=torch.bfloat16)
    assert seen and all(d == torch.bfloat16 for d in seen), seen
