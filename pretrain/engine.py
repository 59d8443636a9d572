"""DeepSpeed engine: distributed setup, model + optimizer + schedule, and one optimizer step (docs/ARCHITECTURE.md §4).

Runs as one process (gloo on CPU over an in-memory store; no launcher needed) or under
`deepspeed` / `torchrun` with several processes. deepspeed and torch.distributed stay here, out of
`moe_ts/`. `parallel.ep_size > 1` shards the experts over DeepSpeed's expert-parallel groups
(pretrain/expert_parallel.py); otherwise every rank holds all experts (data parallelism + ZeRO).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from pretrain.config import PretrainConfig, deepspeed_config, lr_factor


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(timeout_s: float | None = None) -> DistInfo:
    """Initialise torch.distributed for DeepSpeed (gloo on CPU, nccl on CUDA); idempotent.

    Under a launcher (RANK in the env) the launcher's rendezvous is used. Without one this is a
    one-process group over an in-memory store: no port, and no RANK/MASTER_* left in the env for child
    processes to trip over (only LOCAL_RANK=0, which `deepspeed.initialize` insists on).
    `timeout_s` (parallel.timeout_s): how long a collective waits for the other ranks before it raises,
    for the world group and for every group created later (DeepSpeed's data/expert groups).
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    # The CPU shared-memory comm op is a 27 s JIT build that one-node gloo runs do not need.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    on_cuda = os.environ.get("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu") != "cpu"
    backend = "nccl" if on_cuda else "gloo"
    if "RANK" not in os.environ:
        os.environ.setdefault("LOCAL_RANK", "0")
    local_rank = int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else 0
    device = torch.device("cuda", local_rank) if on_cuda else torch.device("cpu")
    if on_cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        timeout = timedelta(seconds=1800 if timeout_s is None else timeout_s)
        if timeout_s is not None:
            _set_default_group_timeout(timeout)
        if "RANK" not in os.environ:
            torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1,
                                                 timeout=timeout)
        deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
    return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, device)


def _set_default_group_timeout(timeout: timedelta) -> None:
    """Make `timeout` the default of groups created without one: DeepSpeed's `new_group` calls pass none,
    and torch would give them its own 30-minute (gloo) / 10-minute (nccl) default, not the world group's."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    if hasattr(distributed_c10d, "default_pg_nccl_timeout"):
        distributed_c10d.default_pg_nccl_timeout = timeout


def barrier() -> None:
    """Wait for every rank (no-op outside a distributed job)."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on at least one (so all ranks stop at the same step)."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on vectors (biases, norm gains). Expert-parallel
    expert weights go into groups of their own (DeepSpeed's MoE split), reduced over their expert-data group."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    if any(getattr(p, "allreduce", True) is False for p in decay + no_decay):
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        groups = [g for g in split_params_into_different_moe_groups_for_optimizer(groups) if g["params"]]
    return groups


def build_model(run: PretrainConfig) -> nn.Module:
    """A freshly initialised MoiraiMoEModel, seeded by train.seed (same weights on every rank)."""
    from moe_ts.model import MoiraiMoEModel

    torch.manual_seed(run.train.seed)
    return MoiraiMoEModel(run.model)


def apply_runtime(model: nn.Module, run: PretrainConfig) -> nn.Module:
    """Install the run's MoE dispatcher (`parallel.moe_dispatcher`) on every MoE layer of `model`."""
    from moe_ts.dispatch import set_moe_dispatcher

    if run.parallel.moe_dispatcher == "deepspeed":
        import pretrain.moe_deepspeed  # noqa: F401  (registers the "deepspeed" dispatcher)
    set_moe_dispatcher(model, run.parallel.moe_dispatcher, capacity_factor=run.parallel.capacity_factor)
    return model


def build_engine(run: PretrainConfig, dist: DistInfo, model: nn.Module | None = None) -> Any:
    """`deepspeed.initialize` over the model with AdamW (torch), the warmup+cosine LambdaLR, clipping, ZeRO."""
    import deepspeed

    if model is None:
        model = build_model(run)
    apply_runtime(model, run)
    if run.parallel.ep_size > 1:
        from pretrain.expert_parallel import setup_expert_parallel

        run.parallel.check_world_size(dist.world_size)
        setup_expert_parallel(model, run.parallel.ep_size)
    model.to(dist.device)
    train = run.train

    def schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, train))

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, train.weight_decay),
        config=deepspeed_config(train, dist.world_size),
        lr_scheduler=schedule,
    )
    return engine


@dataclass
class StepStats:
    """What one optimizer step measured (averaged over its micro-batches)."""

    loss: float
    nll: float
    aux_loss: float
    z_loss: float
    lr: float
    grad_norm: float
    tokens: int  # non-padding patches of this step, all ranks together
    expert_counts: torch.Tensor = field(repr=False)  # [L, E] summed over micro-batches and ranks


def train_step(engine: Any, micro_batches: list[dict[str, torch.Tensor]], device: torch.device,
               input_noise: float = 0.0, self_feed: float = 0.0, horizon_weight: float = 1.0,
               autocast_dtype: torch.dtype | None = None) -> StepStats:
    """Forward/backward each micro-batch, then one optimizer step (DeepSpeed scales by grad_accum).

    The loss is `moe_ts.objectives.pretrain_loss` with the engine as the network call (its hooks run).
    `autocast_dtype` (train.dtype bf16): the whole loss, the mixture head and the experts' grouped GEMMs
    included, runs under `torch.autocast` on the device (GEMMs in bf16, weights, statistics and the NLL in
    float32); the backward runs outside it, as torch's AMP recipe says.
    Losses, counts and tokens are summed on the device and read back once per step, not per micro-batch.
    """
    from moe_ts.objectives import pretrain_loss

    lr = float(engine.get_lr()[0])
    model = unwrap(engine)
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, nll, aux, z, tokens
    counts = None
    for batch in micro_batches:
        target = batch["target"].to(device, non_blocking=True)
        sample_id = batch["sample_id"].to(device, non_blocking=True)
        variate_id = batch.get("variate_id")  # any-variate batches only (train.multivariate_share > 0)
        variate_id = None if variate_id is None else variate_id.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = pretrain_loss(model, target, sample_id, forward=engine, input_noise=input_noise,
                                self_feed=self_feed, variate_id=variate_id, horizon_weight=horizon_weight)
        engine.backward(out.loss)
        engine.step()
        sums += torch.stack([out.loss.detach(), out.nll.detach(), out.aux_loss.detach(), out.z_loss.detach(),
                             (sample_id > 0).sum().to(out.loss.dtype)]).double()
        c = out.expert_counts.detach()
        counts = c if counts is None else counts + c
    world = 1
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        # Log the mean over ranks and the job's totals, not rank 0's share.
        world = torch.distributed.get_world_size()
        packed = torch.cat([sums, counts.double().flatten()])
        torch.distributed.all_reduce(packed)
        sums, counts = packed[:5], packed[5:].round().long().reshape(counts.shape)
    host = sums.cpu()
    means = (host[:4] / world / len(micro_batches)).tolist()
    grad_norm = engine.get_global_grad_norm()
    return StepStats(
        loss=means[0], nll=means[1], aux_loss=means[2], z_loss=means[3], lr=lr,
        grad_norm=float("nan") if grad_norm is None else float(grad_norm),
        tokens=int(host[4].item()), expert_counts=counts.cpu(),
    )


def unwrap(engine: Any) -> nn.Module:
    """The model inside the engine."""
    return engine.module

