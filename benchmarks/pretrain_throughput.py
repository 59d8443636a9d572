"""Pretraining step speed of the default (torch) path on one process (docs/ARCHITECTURE.md §5).

For each config, one training step's forward and forward+backward of `moe_ts.objectives.pretrain_loss`
on the same packed batch (random series packed like `pretrain.data.pack_windows`), three variants
measured in the same run:

- `pre-change experts`: the baseline. The expert GEMMs as before issue 7: a Python loop that indexes
  the stacked weights `w[e]` per expert (autograd then zero-fills a full [E, D, F] gradient per expert)
  and `counts.tolist()` per projection. Implemented as a `GroupedExperts.gmm` override, the seam a LoRA
  or megablocks replaces.
- `default`: this repository's default path (`torch._grouped_mm` where it runs, else the per-expert
  loop over weights unbound once; no host sync in routing, stats or layout).
- `dense FFN`: every MoE layer replaced by a dense SwiGLU FFN with the same active FLOPs (d_ff = k·F):
  the speed a sparse layer could hope for.

uni2ts is not installed here, so its step is not measured in the same run; see BENCHMARKS.md for how the
ratio to the pre-change path relates to the issue's uni2ts figure. Prints a table and writes JSON.

    python benchmarks/pretrain_throughput.py --out benchmarks/results/pretrain_throughput_cpu.json

`--parallel`: instead, full DeepSpeed training steps (`pretrain.engine.train_step`, ZeRO-1, fp32, gloo on
CPU) of the tiny config on the same global batch with 1 process, 2 processes data-parallel and 2 processes
with `parallel.ep_size=2`; patches/s over the whole job and each row's ratio to the 1-process row.

    python benchmarks/pretrain_throughput.py --parallel --out benchmarks/results/pretrain_parallel_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.grouped import grouped_mm_path, swiglu  # noqa: E402
from moe_ts.config import ModelConfig, load_model_config  # noqa: E402
from moe_ts.experts import GroupedExperts  # noqa: E402
from moe_ts.model import MoiraiMoEModel  # noqa: E402
from moe_ts.moe import MoEStats  # noqa: E402
from moe_ts.objectives import pretrain_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# config file, packed rows per step
CASES = {"tiny": (REPO / "configs" / "tiny.yaml", 8), "small": (REPO / "configs" / "small.yaml", 8)}


class PreChangeExperts(GroupedExperts):
    """The expert GEMMs as they were: `w[e]` indexed per expert in a Python loop, counts read per projection."""

    def gmm(self, x_pi: Tensor, w_eio: Tensor, offsets_e1: Tensor) -> Tensor:
        counts = (offsets_e1[1:] - offsets_e1[:-1]).tolist()
        out = [chunk @ w_eio[e] for e, chunk in enumerate(torch.split(x_pi, counts)) if chunk.shape[0] > 0]
        return torch.cat(out, dim=0) if out else x_pi.new_zeros(0, w_eio.shape[-1])


class DenseFFN(nn.Module):
    """SwiGLU FFN with d_ff = k·F (the MoE layer's active FLOPs), MoE layer interface, zero MoE losses."""

    def __init__(self, d_model: int, d_ff: int, num_experts: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.num_experts = num_experts

    def forward(self, x_td: Tensor, token_mask_t: Tensor | None = None) -> tuple[Tensor, MoEStats]:
        y = swiglu(x_td, self.gate_proj, self.up, self.down, lambda a, linear: linear(a))
        zero = x_td.new_zeros(())
        return y, MoEStats(zero, zero, torch.zeros(self.num_experts, dtype=torch.long))


def packed_batch(cfg: ModelConfig, rows: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random-walk series of 2..N patches packed into `rows` rows of N patches (a few NaNs, padding at the end)."""
    gen = torch.Generator().manual_seed(seed)
    n, p = cfg.max_seq_len, cfg.patch_size
    target = torch.full((rows, n * p), float("nan"))
    sample_id = torch.zeros(rows, n, dtype=torch.long)
    for r in range(rows):
        cursor, sid = 0, 0
        while cursor < n - 1:
            length = int(torch.randint(2, max(3, n // 3), (1,), generator=gen))
            length = min(length, n - cursor)
            sid += 1
            target[r, cursor * p:(cursor + length) * p] = torch.randn(length * p, generator=gen).cumsum(0)
            sample_id[r, cursor:cursor + length] = sid
            cursor += length
    target[torch.rand(target.shape, generator=gen) < 0.02] = float("nan")
    return target, sample_id


def build(cfg: ModelConfig, variant: str) -> MoiraiMoEModel:
    torch.manual_seed(0)
    model = MoiraiMoEModel(cfg)
    for layer in model.layers:
        if variant == "pre-change experts":
            old = layer.moe.experts
            new = PreChangeExperts(old.num_experts, cfg.d_model, cfg.moe.d_ff)
            new.load_state_dict(old.state_dict())
            layer.moe.experts = new
        elif variant == "dense FFN":
            layer.moe = DenseFFN(cfg.d_model, cfg.moe.top_k * cfg.moe.d_ff, cfg.moe.num_experts)
    return model.train()


def one_step(model: MoiraiMoEModel, target: Tensor, sample_id: Tensor) -> tuple[float, float]:
    """Seconds of the forward alone and of forward+backward of one step."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    out = pretrain_loss(model, target, sample_id)
    t1 = time.perf_counter()
    out.loss.backward()
    return t1 - t0, time.perf_counter() - t0


def time_variants(models: dict[str, MoiraiMoEModel], target: Tensor, sample_id: Tensor, repeats: int,
                  warmup: int) -> dict[str, tuple[float, float]]:
    """Median (forward s, step s) per variant; the variants take turns within each repeat, so a change of
    machine load (these CPUs are shared) hits all of them alike."""
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in models}
    for i in range(warmup + repeats):
        for v, model in models.items():
            t = one_step(model, target, sample_id)
            if i >= warmup:
                times[v].append(t)
    return {v: (statistics.median(f for f, _ in ts), statistics.median(s for _, s in ts)) for v, ts in times.items()}


PARALLEL_ROWS = (("1 process", 1, 1), ("2 processes, data parallel", 2, 1), ("2 processes, ep_size=2", 2, 2))


def _parallel_worker(rank: int, world: int, port: int, ep_size: int, rows: int, steps: int, warmup: int,
                     result: str) -> None:
    """One rank of a `--parallel` row: `warmup` + `steps` train steps on its share of the global batch."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    from moe_ts.typed_config import from_dict, load_file
    from pretrain.config import PretrainConfig
    from pretrain.engine import build_engine, setup_distributed, train_step

    data = load_file(CASES["tiny"][0])
    data["train"] = {**data["train"], "batch_size": rows, "steps": warmup + steps, "warmup_steps": 0,
                     "zero_stage": 1, "wandb_mode": "disabled", "time_budget_s": None}
    data["parallel"] = {"ep_size": ep_size}
    run = from_dict(PretrainConfig, data)
    info = setup_distributed(run.parallel.timeout_s)
    engine = build_engine(run, info)
    target, sample_id = packed_batch(run.model, rows, seed=0)
    share = slice(rank * rows // world, (rank + 1) * rows // world)
    batch = {"target": target[share], "sample_id": sample_id[share]}
    times, tokens = [], 0
    for i in range(warmup + steps):
        torch.distributed.barrier()
        t0 = time.perf_counter()
        stats = train_step(engine, [batch], info.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            tokens = stats.tokens
    if rank == 0:
        Path(result).write_text(json.dumps({"step_s": statistics.median(times), "tokens": tokens}))


def parallel_rows(rows: int, steps: int, warmup: int) -> list[dict]:
    """The `--parallel` table: one row per PARALLEL_ROWS entry, ratios against the first (1 process)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    results = []
    for label, world, ep_size in PARALLEL_ROWS:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            mp.spawn(_parallel_worker, args=(world, port, ep_size, rows, steps, warmup, str(out)), nprocs=world)
            measured = json.loads(out.read_text())
        results.append({"config": "tiny", "rows": rows, "variant": label, "processes": world, "ep_size": ep_size,
                        "step_s": measured["step_s"], "tokens_per_s": measured["tokens"] / measured["step_s"]})
    for r in results:
        r["tokens_per_s_vs_1_process"] = r["tokens_per_s"] / results[0]["tokens_per_s"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rows", type=int, default=None, help="packed rows per step (default: 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--parallel", action="store_true",
                        help="DeepSpeed steps of the tiny config: 1 process, 2 data-parallel, 2 with ep_size=2")
    parser.add_argument("--steps", type=int, default=20, help="--parallel: timed steps per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.parallel:
        return main_parallel(args)
    variants = ["pre-change experts", "default", "dense FFN"]
    results = []
    for name in args.configs:
        path, rows = CASES[name]
        cfg = load_model_config(path)
        rows = args.rows or rows
        target, sample_id = packed_batch(cfg, rows, seed=0)
        tokens = int((sample_id > 0).sum())
        model = build(cfg, "default")
        e = model.layers[0].moe.experts
        path_note = grouped_mm_path(torch.empty(16, cfg.d_model), e.w_gate, e.w_up, e.w_down)
        timings = time_variants({v: build(cfg, v) for v in variants}, target, sample_id, args.repeats, args.warmup)
        base_fwd, base_step = timings["pre-change experts"]
        for v in variants:
            fwd, step = timings[v]
            results.append({
                "config": name, "rows": rows, "patches": cfg.max_seq_len, "variant": v,
                "forward_s": fwd, "step_s": step, "backward_s": step - fwd, "tokens_per_s": tokens / step,
                "step_vs_pre_change": step / base_step, "forward_vs_pre_change": fwd / base_fwd,
                "note": f"experts: {path_note}" if v == "default" else "",
            })
    header = f"{'config':<6} {'variant':<20} {'fwd s':>8} {'bwd s':>8} {'step s':>8} {'tok/s':>9} {'step x base':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['config']:<6} {r['variant']:<20} {r['forward_s']:8.3f} {r['backward_s']:8.3f} {r['step_s']:8.3f} "
              f"{r['tokens_per_s']:9.0f} {r['step_vs_pre_change']:11.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
                "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats,
                "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
                "baseline": "pre-change experts"}
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def main_parallel(args: argparse.Namespace) -> int:
    """`--parallel`: print and save the 1-process / data-parallel / expert-parallel table."""
    rows = args.rows or 16
    results = parallel_rows(rows, args.steps, max(args.warmup, 2))
    header = f"{'run':<28} {'step s':>8} {'patches/s':>10} {'x 1 process':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['variant']:<28} {r['step_s']:8.4f} {r['tokens_per_s']:10.0f} {r['tokens_per_s_vs_1_process']:11.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
                "torch": torch.__version__, "threads_per_process": 1, "timed_steps": args.steps,
                "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs",
                "baseline": "1 process"}
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
