"""Expert parallelism in the trainer (pretrain/engine.py + pretrain/expert_parallel.py), 2 gloo processes:

- one DeepSpeed step with parallel.ep_size=2 against one process holding every expert (plain torch, no
  DeepSpeed) on the same global batch: the loss and every parameter's gradient, linear and centroid gates;
- ZeRO-1 and ZeRO-2 with ep_size=2 reduce the loss on the tiny config, the replicated weights stay equal
  on both ranks and the expert shards are reduced only inside their (size-1) expert-data-parallel group.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from moe_ts.typed_config import ConfigError, from_dict
from pretrain.config import PretrainConfig

MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 16, "num_layers": 2, "num_heads": 2, "stats_ratio": 0.3,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 16}}
ROWS = 4  # global batch: rows 0-1 on rank 0, rows 2-3 on rank 1


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """target [ROWS, N·P], sample_id [ROWS, N]: two packed series per row, some values missing."""
    gen = torch.Generator().manual_seed(3)
    n, p = MODEL["max_seq_len"], MODEL["patch_size"]
    target = torch.cumsum(torch.randn(ROWS, n * p, generator=gen), dim=1)
    target[:, 5] = float("nan")
    target[:2] += 5.0  # the two ranks' tokens route differently
    sample_id = torch.tensor([[1] * 5 + [2] * 3, [1] * 8, [1] * 3 + [2] * 4 + [0], [1] * 6 + [2] * 2] * (ROWS // 4))
    return target, sample_id


def _run(gate: str, zero_stage: int, ep_size: int, **train) -> PretrainConfig:
    model = {**MODEL, "moe": {**MODEL["moe"], "gate": gate}}
    return from_dict(PretrainConfig, {"model": model, "parallel": {"ep_size": ep_size, "timeout_s": 120},
                                 "train": {"steps": 10, "batch_size": ROWS, "lr": 3e-3, "min_lr": 3e-4,
                                           "warmup_steps": 0, "grad_clip": 0.0, "seed": 5, "zero_stage": zero_stage,
                                           "wandb_mode": "disabled", **train}})


def _init(rank: int, world: int, port: int, timeout_s: float = 120):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    from pretrain.engine import setup_distributed

    return setup_distributed(timeout_s=timeout_s)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _grad_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    from moe_ts.model import MoiraiMoEModel
    from moe_ts.objectives import pretrain_loss
    from pretrain.engine import build_engine, unwrap

    info = _init(rank, world, port)
    target, sample_id = _batch()
    half = slice(rank * ROWS // 2, (rank + 1) * ROWS // 2)
    for gate in ("linear", "centroid"):
        run = _run(gate, zero_stage=0, ep_size=2)
        # The reference: one process, every expert, plain torch; the global batch as the two halves' mean loss.
        torch.manual_seed(run.train.seed)
        ref = MoiraiMoEModel(run.model)
        ref_loss = sum(pretrain_loss(ref, target[h], sample_id[h]).loss / 2 for h in (slice(0, 2), slice(2, 4)))
        ref_loss.backward()

        engine = build_engine(run, info)
        model = unwrap(engine)
        assert model.layers[0].moe.experts.w_up.shape[0] == 2  # E/ep_size experts on this rank
        out = pretrain_loss(model, target[half], sample_id[half], forward=engine)
        engine.backward(out.loss)  # ZeRO-0: DeepSpeed all-reduces here (dense: world, experts: expert-data group)
        loss = out.loss.detach().clone()
        ref_loss = ref_loss.detach()
        dist.all_reduce(loss)
        assert abs(float(loss) / world - float(ref_loss)) < 1e-5, (gate, float(loss) / world, float(ref_loss))

        grads = {n: p.grad for n, p in model.named_parameters()}
        nonzero = 0
        for name, p in ref.named_parameters():
            g_ref = p.grad
            if ".experts." in name:
                g_ref = g_ref[rank * 2:(rank + 1) * 2]  # this rank's shard of the experts
            assert grads[name] is not None and grads[name].shape == g_ref.shape, name
            if not g_ref.any():  # e.g. an output component the loss does not reach yet
                assert not grads[name].any(), name
                continue
            assert _rel_err(grads[name], g_ref) < 1e-4, (gate, name, _rel_err(grads[name], g_ref))
            nonzero += 1
        assert len(grads) == len(dict(ref.named_parameters())) and nonzero > 10
        engine.destroy()


def _zero_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    from pretrain.engine import build_engine, train_step, unwrap

    info = _init(rank, world, port)
    target, sample_id = _batch()
    half = slice(rank * ROWS // 2, (rank + 1) * ROWS // 2)
    batch = {"target": target[half], "sample_id": sample_id[half]}
    for stage in (1, 2):
        engine = build_engine(_run("linear", zero_stage=stage, ep_size=2), info)
        assert engine.has_moe_layers and engine.zero_optimization_stage() == stage
        model = unwrap(engine)
        zero = engine.optimizer
        moe_ids = [i for i, is_moe in enumerate(zero.is_moe_param_group) if is_moe]
        assert moe_ids and all(p.group_name == "ep_size_2" and not p.allreduce
                               for i in moe_ids for p in zero.bit16_groups[i])
        # expert shards are partitioned/reduced over their expert-data-parallel group (1 rank here), the rest over 2
        assert [zero.partition_count[i] for i in range(len(zero.bit16_groups))] == \
            [1 if i in moe_ids else 2 for i in range(len(zero.bit16_groups))]
        losses = [train_step(engine, [batch], info.device).loss for _ in range(6)]
        assert losses[-1] < losses[0] - 0.05, (stage, losses)
        dense = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if ".experts." not in n])
        shard = model.layers[0].moe.experts.w_up.detach().clone()
        both_dense, both_shard = [torch.empty_like(dense) for _ in range(2)], [torch.empty_like(shard) for _ in range(2)]
        dist.all_gather(both_dense, dense)
        dist.all_gather(both_shard, shard)
        assert torch.equal(both_dense[0], both_dense[1])  # replicated weights: same updates on both ranks
        assert not torch.allclose(both_shard[0], both_shard[1])  # each rank trains its own experts
        engine.destroy()
    _exit_without_destructors()


@pytest.mark.dist
def test_two_process_ep2_step_matches_one_process_loss_and_every_gradient(free_port):
    mp.spawn(_grad_worker, args=(2, free_port()), nprocs=2, join=True)


@pytest.mark.dist
def test_zero1_and_zero2_with_ep2_reduce_the_loss(free_port):
    mp.spawn(_zero_worker, args=(2, free_port()), nprocs=2, join=True)


def test_ep_size_must_divide_the_experts_and_the_world_size():
    with pytest.raises(ConfigError, match="parallel.ep_size=3 must divide model.moe.num_experts=4"):
        _run("linear", 1, ep_size=3)
    with pytest.raises(ConfigError, match="parallel.ep_size=2 must divide the world size \\(3 processes\\)"):
        _run("linear", 1, ep_size=2).parallel.check_world_size(3)
    with pytest.raises(ConfigError, match="moe_dispatcher 'torch'"):
        from_dict(PretrainConfig, {"model": MODEL, "parallel": {"ep_size": 2, "moe_dispatcher": "triton"}})
    with pytest.raises(ConfigError, match="parallel.ep_size must be an integer >= 1"):
        from_dict(PretrainConfig, {"model": MODEL, "parallel": {"ep_size": 0}})


def _stalled_peer_worker(rank: int, world: int, port: int, result_path: str) -> None:
    import time

    import torch.distributed as dist
    from deepspeed.utils import groups

    _init(rank, world, port, timeout_s=3)

    groups._create_expert_and_data_parallel(2)
    ep_group = groups._get_expert_parallel_group("ep_size_2")
    if rank == 1:
        time.sleep(12)  # alive but stuck: never joins the collective
        _exit_without_destructors()
    try:
        dist.all_reduce(torch.ones(1), group=ep_group)
        outcome = "no error"
    except Exception as err:  # noqa: BLE001 - the backend's own exception type
        outcome = type(err).__name__ + ": " + str(err).splitlines()[0]
    with open(result_path, "w") as f:
        f.write(outcome)
    _exit_without_destructors()


def _exit_without_destructors() -> None:
    """End a worker whose checks passed without running C++ destructors: gloo's threads, after a timed-out or
    torn-down collective, can abort the interpreter's exit ("terminate called without an active exception"),
    which mp.spawn would report as a failure of a worker that did its job."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.slow  # the stuck rank sleeps 12 s
@pytest.mark.dist
def test_a_stuck_rank_fails_the_collective_after_parallel_timeout_s(tmp_path, free_port):
    """The timeout reaches DeepSpeed's expert-parallel group (created by `new_group`, which has its own default).
    Gloo's error names the timeout it waited (3000 ms, not the 30-minute default), so the check reads no clock:
    a peer that returns after 12 s closes its connection instead, with another message."""
    result = tmp_path / "result"
    mp.spawn(_stalled_peer_worker, args=(2, free_port(), str(result)), nprocs=2, join=True)
    outcome = result.read_text()
    assert "Timed out waiting 3000ms" in outcome, outcome


def test_a_run_saved_before_ep_size_existed_resumes_as_ep_size_1(tmp_path):
    import yaml

    from moe_ts.typed_config import to_dict
    from pretrain.errors import CheckpointError
    from pretrain.resume_check import check_resume_config

    saved = to_dict(_run("linear", 1, ep_size=1))
    del saved["parallel"]["ep_size"], saved["parallel"]["timeout_s"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_config(_run("linear", 1, ep_size=1), tmp_path)
    with pytest.raises(CheckpointError, match="parallel.ep_size: saved 1, requested 2"):
        check_resume_config(_run("linear", 1, ep_size=2), tmp_path)


def test_a_bad_expert_shard_file_is_a_one_line_checkpoint_error(tmp_path):
    from safetensors.torch import save_file

    from moe_ts.model import MoiraiMoEModel
    from pretrain.engine import setup_distributed
    from pretrain.errors import CheckpointError
    from pretrain.expert_parallel import shard_experts
    from pretrain.expert_shards import expert_shard_name, load_expert_shard, local_expert_state

    setup_distributed()  # one process: an expert-parallel group of 1
    model = MoiraiMoEModel(_run("linear", 1, ep_size=1).model)
    shard_experts(model)
    with pytest.raises(CheckpointError, match="no expert shard for this expert-parallel rank"):
        load_expert_shard(model, tmp_path)
    state = local_expert_state(model)
    key = next(iter(state))
    save_file({**state, key: state[key][:1].contiguous()}, str(tmp_path / expert_shard_name(0, 1)))
    with pytest.raises(CheckpointError, match=f"expected {key} of shape \\(4, .*found \\(1, "):
        load_expert_shard(model, tmp_path)
    (tmp_path / expert_shard_name(0, 1)).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable expert shard"):
        load_expert_shard(model, tmp_path)
