"""MoE layer speed per dispatcher against a dense SwiGLU FFN with the same active FLOPs (docs/ARCHITECTURE.md §3).

    python benchmarks/moe_layer.py --out benchmarks/results/moe_layer_cpu.json          # CPU: small size
    python benchmarks/moe_layer.py --out benchmarks/results/moe_layer_h100.json         # GPU: T=65536, D=768, F=1024, E=32, k=2, bf16

Forward+backward time of `moe_ts.moe.MoELayer` for each dispatcher (`--dispatchers`: torch reference, triton, deepspeed,
megablocks) beside a dense SwiGLU FFN of hidden size k·F (same active FLOPs: 18·T·D·F·k for forward and
backward of the experts; the gate GEMM is not counted), as TFLOP/s and as a ratio to the dense FFN
measured in the same process. Routing alone (the fused Triton router and the torch reference router,
linear logits and centroids) in GB/s of the bytes it must move, against the device-to-device copy
bandwidth (`torch.Tensor.copy_`) measured in the same run. Prints a table and writes JSON.

On CPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set here before triton is
imported): their CPU times measure the interpreter, not the kernels.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # before anything imports triton / deepspeed
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pretrain.moe_deepspeed  # noqa: E402,F401  (registers the "deepspeed" dispatcher)
from moe_ts.config import MoEConfig  # noqa: E402
from moe_ts.dispatch import set_moe_dispatcher  # noqa: E402
from moe_ts.moe import MoELayer  # noqa: E402

GPU_SIZE = dict(tokens=65536, d_model=768, d_ff=1024, experts=32, top_k=2, dtype="bfloat16")
CPU_SIZE = dict(tokens=4096, d_model=256, d_ff=256, experts=8, top_k=2, dtype="float32")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class DenseSwiGLU(torch.nn.Module):
    """The baseline: one SwiGLU FFN of hidden size k·F, i.e. the active FLOPs of a top-k MoE layer."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_gate = torch.nn.Parameter(torch.randn(d_model, d_ff) * d_model**-0.5)
        self.w_up = torch.nn.Parameter(torch.randn(d_model, d_ff) * d_model**-0.5)
        self.w_down = torch.nn.Parameter(torch.randn(d_ff, d_model) * d_ff**-0.5)

    def forward(self, x_td: torch.Tensor) -> torch.Tensor:
        return (F.silu(x_td @ self.w_gate) * (x_td @ self.w_up)) @ self.w_down


def fwd_bwd(module: Callable[[torch.Tensor], object], x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """A closure running forward and backward once (parameter gradients accumulate; harmless for timing)."""

    def run() -> None:
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        y = out[0] if isinstance(out, tuple) else out
        y.backward(grad)

    return run


def copy_bandwidth(device: torch.device, nbytes: int, warmup: int, repeats: int) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    seconds = time_it(lambda: dst.copy_(src), device, warmup, repeats)
    return 2 * nbytes / seconds / 1e9


def routing_rows(args, device, dtype, dense_s: float, copy_gbs: float) -> list[dict]:
    """Routing alone: fused Triton router vs the torch reference, logits and centroids."""
    from kernels.routing import centroid_scores_reference, route_centroids, route_logits, route_reference

    T, D, E, k = args.tokens, args.d_model, args.experts, args.top_k
    el = torch.tensor([], dtype=dtype).element_size()
    logits = torch.randn(T, E, device=device, dtype=dtype)
    x = torch.randn(T, D, device=device, dtype=dtype)
    cent = torch.randn(E, D, device=device, dtype=dtype)
    out_bytes = T * k * (8 + el + 4) + 2 * (E + 1) * 4  # ids (long), weights, slots, counts + offsets
    cases = [
        ("route logits: triton", lambda: route_logits(logits, k), T * E * el + out_bytes),
        ("route logits: torch ref", lambda: route_reference(logits, k), T * E * el + out_bytes),
        ("route centroids: triton", lambda: route_centroids(x, cent, k), (T + E) * D * el + T * E * el + out_bytes),
        ("route centroids: torch ref", lambda: route_reference(centroid_scores_reference(x, cent), k),
         (T + E) * D * el + T * E * el + out_bytes),
    ]
    rows = []
    with torch.no_grad():
        for name, fn, nbytes in cases:
            seconds = time_it(fn, device, args.warmup, args.repeats)
            gbs = nbytes / seconds / 1e9
            rows.append({"name": name, "seconds": seconds, "bytes": nbytes, "GB_per_s": gbs,
                         "vs_copy_bandwidth": gbs / copy_gbs, "time_vs_dense_ffn": seconds / dense_s})
    return rows


def layer_rows(args, device, dtype) -> tuple[list[dict], float]:
    """Forward+backward of the dense FFN and of MoELayer for each dispatcher."""
    from kernels.grouped import grouped_mm_path

    T, D, Fh, E, k = args.tokens, args.d_model, args.d_ff, args.experts, args.top_k
    flops = 18 * T * D * Fh * k  # 3 GEMMs of 2·D·F per token and expert, ×3 for forward + backward, k experts
    x = torch.randn(T, D, device=device, dtype=dtype)
    grad = torch.randn(T, D, device=device, dtype=dtype)
    dense = DenseSwiGLU(D, k * Fh).to(device=device, dtype=dtype)
    dense_s = time_it(fwd_bwd(dense, x, grad), device, args.warmup, args.repeats)
    rows = [{"name": f"dense SwiGLU FFN (d_ff={k * Fh})", "seconds": dense_s, "TFLOP_per_s": flops / dense_s / 1e12,
             "time_vs_dense_ffn": 1.0, "note": ""}]
    cfg = MoEConfig(num_experts=E, top_k=k, d_ff=Fh, gate=args.gate)
    base = MoELayer(D, cfg, init_std=D**-0.5).to(device=device, dtype=dtype)
    for dispatcher in args.dispatchers:
        layer = copy.deepcopy(base)
        note = ""
        if dispatcher == "triton":
            note = "experts: " + grouped_mm_path(x, layer.experts.w_gate, layer.experts.w_up, layer.experts.w_down)
            if device.type == "cpu":
                note += "; Triton interpreter (CPU)"
        if dispatcher == "deepspeed":
            note = f"capacity factor {args.capacity_factor} (capacity-based: may drop)"
        try:
            set_moe_dispatcher(layer, dispatcher, capacity_factor=args.capacity_factor)
            seconds = time_it(fwd_bwd(layer, x, grad), device, args.warmup, args.repeats)
        except RuntimeError as err:  # e.g. megablocks on CPU: report the reason, keep the other rows
            rows.append({"name": f"moe: {dispatcher}", "seconds": None, "TFLOP_per_s": None, "time_vs_dense_ffn": None,
                         "note": f"not run: {err}"})
            continue
        rows.append({"name": f"moe: {dispatcher}", "seconds": seconds, "TFLOP_per_s": flops / seconds / 1e12,
                     "time_vs_dense_ffn": seconds / dense_s, "note": note})
    return rows, dense_s


def main(argv: list[str] | None = None) -> dict:
    gpu = torch.cuda.is_available()
    size = GPU_SIZE if gpu else CPU_SIZE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=size["tokens"])
    parser.add_argument("--d-model", type=int, default=size["d_model"])
    parser.add_argument("--d-ff", type=int, default=size["d_ff"])
    parser.add_argument("--experts", type=int, default=size["experts"])
    parser.add_argument("--top-k", type=int, default=size["top_k"])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=size["dtype"])
    parser.add_argument("--gate", choices=["linear", "centroid"], default="linear")
    parser.add_argument("--dispatchers", nargs="+", default=["torch", "triton", "deepspeed", "megablocks"])
    parser.add_argument("--capacity-factor", type=float, default=1.25, help="deepspeed dispatcher only")
    parser.add_argument("--copy-mib", type=int, default=1024 if gpu else 64, help="buffer size of the copy-bandwidth probe")
    parser.add_argument("--warmup", type=int, default=2 if gpu else 1)
    parser.add_argument("--repeats", type=int, default=10 if gpu else 5)
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads (0: leave torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/moe_layer.json")
    args = parser.parse_args(argv)
    if args.threads and not gpu:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if gpu else "cpu")
    dtype = DTYPES[args.dtype]

    copy_gbs = copy_bandwidth(device, args.copy_mib << 20, args.warmup, args.repeats)
    layers, dense_s = layer_rows(args, device, dtype)
    routes = routing_rows(args, device, dtype, dense_s, copy_gbs)
    device_name = torch.cuda.get_device_name(device) if gpu else (platform.processor() or platform.machine())
    result = {
        "benchmark": "moe_layer", "device": device_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "tokens": args.tokens, "d_model": args.d_model, "d_ff": args.d_ff, "experts": args.experts,
        "top_k": args.top_k, "dtype": args.dtype, "gate": args.gate, "copy_GB_per_s": copy_gbs,
        "active_flops_fwd_bwd": 18 * args.tokens * args.d_model * args.d_ff * args.top_k,
        "layer": layers, "routing": routes,
    }
    print(f"moe_layer on {device_name} (torch {torch.__version__}, {torch.get_num_threads()} threads): T={args.tokens} "
          f"D={args.d_model} F={args.d_ff} E={args.experts} k={args.top_k} {args.dtype}, gate {args.gate}")
    print(f"{'forward+backward':<34} {'ms':>10} {'TFLOP/s':>9} {'x dense':>8}  note")
    for row in layers:
        if row["seconds"] is None:
            print(f"{row['name']:<34} {'-':>10} {'-':>9} {'-':>8}  {row['note']}")
        else:
            print(f"{row['name']:<34} {row['seconds'] * 1e3:>10.2f} {row['TFLOP_per_s']:>9.4f} "
                  f"{row['time_vs_dense_ffn']:>7.2f}x  {row['note']}")
    print(f"{'routing alone':<34} {'ms':>10} {'GB/s':>9} {'x copy':>8} {'x dense':>8}   (copy_ {copy_gbs:.1f} GB/s)")
    for row in routes:
        print(f"{row['name']:<34} {row['seconds'] * 1e3:>10.3f} {row['GB_per_s']:>9.2f} "
              f"{row['vs_copy_bandwidth']:>8.3f} {row['time_vs_dense_ffn']:>7.3f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
