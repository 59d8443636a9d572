"""train.dtype bf16 (pretrain/engine.py train_step): the whole loss under torch.autocast, on the CPU as on a
GPU. Before, DeepSpeed's `torch_autocast` wrapped only the engine's forward and the mixture head (called by the
loss outside it) met bf16 hidden states with fp32 weights: every bf16 run failed at its first step."""
from __future__ import annotations

import copy

import numpy as np
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from pretrain.config import PretrainConfig, TrainConfig

# d_model 384 as the small config; one layer and 8 experts keep the step short.
MODEL = ModelConfig(patch_size=16, max_seq_len=64, d_model=384, num_layers=1, num_heads=6,
                    moe=MoEConfig(num_experts=8, top_k=2, d_ff=512))


def _step(dtype: str, model: MoiraiMoEModel, batch: dict) -> tuple[float, MoiraiMoEModel]:
    from pretrain.engine import build_engine, setup_distributed, train_step, unwrap

    run = PretrainConfig(model=MODEL, train=TrainConfig(steps=1, batch_size=4, warmup_steps=0, zero_stage=0,
                                                        grad_clip=0.0, dtype=dtype, wandb_mode="disabled"))
    engine = build_engine(run, setup_distributed(), model=copy.deepcopy(model))
    stats = train_step(engine, [batch], torch.device("cpu"),
                       autocast_dtype=torch.bfloat16 if dtype == "bf16" else None)
    return stats.loss, unwrap(engine)


def test_a_bf16_step_runs_the_loss_in_bf16_and_keeps_float32_weights():
    torch.manual_seed(0)
    model = MoiraiMoEModel(MODEL)
    gen = torch.Generator().manual_seed(1)
    batch = {"target": torch.randn(4, 64 * 16, generator=gen).cumsum(1),
             "sample_id": torch.ones(4, 64, dtype=torch.long)}
    loss32, after32 = _step("fp32", model, batch)
    loss16, after16 = _step("bf16", model, batch)
    assert np.isfinite(loss16)
    # bf16 GEMMs change the loss in its third or fourth digit; an autocast that is not applied changes nothing.
    assert loss16 != loss32 and abs(loss16 - loss32) < 2e-2 * abs(loss32), (loss16, loss32)
    assert all(p.dtype == torch.float32 for p in after16.parameters())
    moved16 = after16.layers[0].moe.experts.w_up - model.layers[0].moe.experts.w_up
    moved32 = after32.layers[0].moe.experts.w_up - model.layers[0].moe.experts.w_up
    # the experts trained (their gradients reached them through the bf16 grouped GEMMs) and the same way
    assert moved16.abs().max() > 0
    cos = torch.nn.functional.cosine_similarity(moved16.flatten(), moved32.flatten(), dim=0)
    assert cos > 0.9, cos
