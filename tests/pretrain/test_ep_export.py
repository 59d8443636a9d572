"""The expert-parallel export against the model that trained (issue 25), 2 gloo processes:

the same 4 steps on the same batches with parallel.ep_size=2 (experts sharded) and with ep_size=1 (every expert
on both ranks, plain data parallel: the one-model reference); `exportable_model` of the sharded run must equal
the reference model tensor by tensor, experts in their order included. Each tensor's difference is measured
against how far training moved it, so a weight taken from the initial or a fresh model, or an expert from
another slot, is a 100 % error where summation-order noise is well under 1 %.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from moe_ts.typed_config import from_dict
from pretrain.config import PretrainConfig

MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 16, "num_layers": 2, "num_heads": 2, "stats_ratio": 0.3,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 16}}
ROWS, STEPS = 4, 4  # global batch: rows 0-1 on rank 0, rows 2-3 on rank 1


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS global batches: target [ROWS, N·P], sample_id [ROWS, N]; the two halves route differently."""
    gen = torch.Generator().manual_seed(3)
    n, p = MODEL["max_seq_len"], MODEL["patch_size"]
    out = []
    for _ in range(STEPS):
        target = torch.cumsum(torch.randn(ROWS, n * p, generator=gen), dim=1)
        target[:2] += 5.0
        sample_id = torch.tensor([[1] * 5 + [2] * 3, [1] * 8, [1] * 3 + [2] * 4 + [0], [1] * 6 + [2] * 2])
        out.append((target, sample_id))
    return out


def _run(ep_size: int) -> PretrainConfig:
    return from_dict(PretrainConfig, {"model": MODEL, "parallel": {"ep_size": ep_size, "timeout_s": 120},
                                      "train": {"steps": STEPS, "batch_size": ROWS, "lr": 3e-3, "min_lr": 3e-4,
                                                "warmup_steps": 0, "grad_clip": 0.0, "seed": 5, "zero_stage": 1,
                                                "wandb_mode": "disabled"}})


def _train(run: PretrainConfig, info, rank: int):
    from pretrain.engine import build_engine, train_step

    engine = build_engine(run, info)
    half = slice(rank * ROWS // 2, (rank + 1) * ROWS // 2)
    for target, sample_id in _batches():
        train_step(engine, [{"target": target[half], "sample_id": sample_id[half]}], info.device)
    return engine


def _worker(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    from pretrain.engine import setup_distributed, unwrap
    from pretrain.trainer import exportable_model
    from moe_ts.model import MoiraiMoEModel

    info = setup_distributed(timeout_s=120)
    torch.manual_seed(_run(1).train.seed)
    initial = MoiraiMoEModel(_run(1).model).state_dict()  # build_model's seeded initialisation

    reference_engine = _train(_run(1), info, rank)
    reference = {k: v.detach().clone() for k, v in unwrap(reference_engine).state_dict().items()}
    reference_engine.destroy()

    sharded_engine = _train(_run(2), info, rank)
    assert unwrap(sharded_engine).layers[0].moe.experts.w_up.shape[0] == 2  # really sharded
    export = exportable_model(unwrap(sharded_engine), _run(2))  # collective: every rank calls it
    sharded_engine.destroy()
    if rank != 0:
        return
    exported = export.state_dict()
    assert set(exported) == set(reference) == set(initial)
    moved = 0
    for key, ref in reference.items():
        travel = float((ref - initial[key]).norm())
        error = float((exported[key] - ref).norm())
        if travel == 0.0:  # not trained (e.g. a buffer): the export holds it exactly
            assert torch.equal(exported[key], ref), key
            continue
        moved += 1
        assert error < 0.01 * travel, (key, error / travel)
    assert moved > 40 and sum(".experts." in k for k in reference) == 6


@pytest.mark.dist
def test_ep2_export_equals_the_one_model_run_tensor_by_tensor(free_port):
    mp.spawn(_worker, args=(2, free_port()), nprocs=2, join=True)
