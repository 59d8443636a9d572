"""The GPU path in one command, for the day a device is lent (issue 24): run it first, record its table.

    make gpu-check                                   # = the line below, from the repository's own install
    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json --md benchmarks/results/gpu_check.md
    python benchmarks/gpu_check.py --dry-run         # the plan, on any machine
    python benchmarks/gpu_check.py --smoke           # every section at toy sizes on the CPU (checks this script)

Sections, each timed and budgeted so that the whole run ends within 8 minutes on one H100 (a section that
fails is recorded with its error and the others still run; a section past the overall budget is skipped):

1. `tests`: the `gpu`-marked tests (`pytest -m gpu`, Triton compiled, not interpreted): passed / failed / skipped.
2. `moe_layer`: `benchmarks/moe_layer.py` in bf16 at its GPU size (T=65536, D=768, F=1024, E=32, k=2): each
   dispatcher (torch grouped-mm, triton, megablocks when installed) against a dense SwiGLU FFN of equal active
   FLOPs: TFLOP/s and the fraction of the dense FFN's (target >= 0.8).
3. `train_step`: the small config (`configs/small.yaml`: d_model 384, 6 layers, 32 experts top-2) forward +
   backward + AdamW in bf16 autocast on B x N patches: patches/s, MFU = 6·N_active·patches/s / peak bf16 FLOP/s
   (also with PaLM's attention term), peak memory; with and without activation checkpointing per layer
   (target >= 35% MFU).
4. `forecast`: series/s of `forecast` (KV cache, 20 sample paths) at horizons 96 and 720, batch 256, fp32 and bf16
   weights on the GPU, against the CPU on the same model (fewer series, all the machine's threads)
   (target >= 100x).
5. `kernels`: the Triton dispatcher against the torch one on one MoE layer at d_model 384 and 768 (fp32 and
   bf16): the output's and every gradient's relative error.

Without CUDA (and without --dry-run / --smoke) it exits with one line and status 2. Writes one JSON (--out) and
a markdown table (--md), and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
GPU = torch.cuda.is_available()
# The Makefile exports the CPU settings (Triton interpreter, DeepSpeed's CPU accelerator); on a GPU they must not
# apply, and both are read when triton / deepspeed are first imported.
os.environ["TRITON_INTERPRET"] = "0" if GPU else os.environ.get("TRITON_INTERPRET", "1")
os.environ["DS_ACCELERATOR"] = "cuda" if GPU else os.environ.get("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) by device name; --peak-tflops overrides.
PEAK_BF16 = {"H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12,
             "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
PLAN = [
    ("tests", "pytest -m gpu (every gpu-marked test; Triton compiled)", 240),
    ("moe_layer", "MoE layer bf16 fwd+bwd per dispatcher vs a dense FFN of equal active FLOPs", 60),
    ("train_step", "small config train step, bf16 autocast: patches/s, MFU, peak memory, +/- checkpointing", 60),
    ("forecast", "forecast series/s at h=96 / h=720, batch 256, GPU (fp32, bf16) vs CPU", 90),
    ("kernels", "triton vs torch dispatcher: output and every gradient at d_model 384 and 768", 30),
]
TARGETS = {"moe_layer": "dense fraction >= 0.8", "train_step": "MFU >= 35%", "forecast": "GPU/CPU >= 100x"}


def _sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median seconds of `repeats` calls after `warmup` calls (the device synchronised around each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s (None when unknown and not given)."""
    if override_tflops:
        return override_tflops * 1e12
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def mfu(flops_per_patch: float, patches_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: the FLOP/s the patch rate implies over the peak."""
    return None if not peak else flops_per_patch * patches_per_s / peak


# ----------------------------------------------------------------------------- sections


def section_tests(args: argparse.Namespace) -> dict:
    """The gpu-marked tests in a subprocess (its own Triton / DeepSpeed settings), counted from JUnit XML."""
    junit = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "junit.xml"
    env = dict(os.environ, TRITON_INTERPRET="0", DS_ACCELERATOR="cuda", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", f"--junitxml={junit}",
           *args.test_paths]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.tests_timeout)
        code: int | str = proc.returncode
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = "timeout", [f"stopped after {args.tests_timeout} s"]
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failing = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            if kinds & {"failure", "error"}:
                counts["failed"] += 1
                failing.append(f"{case.get('classname')}::{case.get('name')}")
            elif "skipped" in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    return {"command": " ".join(cmd[1:]), "exit_code": code, **counts, "failing": failing[:30],
            "summary": tail[0] if tail else "", "seconds": time.perf_counter() - start,
            "ok": code == 0 and counts["failed"] == 0 and counts["passed"] > 0}


def section_moe_layer(args: argparse.Namespace) -> dict:
    """benchmarks/moe_layer.py at its GPU size in bf16 (toy size under --smoke); dense fraction per dispatcher."""
    import moe_layer

    out = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "moe_layer.json"
    argv = ["--out", str(out), "--dtype", "bfloat16" if GPU else "float32", "--dispatchers", *args.dispatchers]
    if args.smoke:
        argv += ["--tokens", "256", "--d-model", "64", "--d-ff", "64", "--experts", "4", "--repeats", "1",
                 "--warmup", "0", "--copy-mib", "1"]
    result = moe_layer.main(argv)
    dense = next(r for r in result["layer"] if r["name"].startswith("dense"))
    rows = [{"name": r["name"], "ms": None if r["seconds"] is None else r["seconds"] * 1e3,
             "TFLOP_per_s": r["TFLOP_per_s"],
             "fraction_of_dense": None if r["seconds"] is None else dense["seconds"] / r["seconds"], "note": r["note"]}
            for r in result["layer"]]
    best = max((r["fraction_of_dense"] for r in rows if r["name"].startswith("moe") and r["fraction_of_dense"]),
               default=None)
    return {"size": {k: result[k] for k in ("tokens", "d_model", "d_ff", "experts", "top_k", "dtype")},
            "rows": rows, "best_fraction_of_dense": best, "ok": best is not None}


def small_model(smoke: bool) -> Any:
    """The small config's network (configs/small.yaml's model section), or a toy one under --smoke."""
    from moe_ts.config import ModelConfig, MoEConfig
    from moe_ts.model import MoiraiMoEModel
    from pretrain.config import load_pretrain_config

    cfg = load_pretrain_config(REPO / "configs" / "small.yaml").model
    if smoke:
        cfg = ModelConfig(patch_size=16, max_seq_len=64, d_model=32, num_layers=2, num_heads=2,
                          moe=MoEConfig(num_experts=4, top_k=2, d_ff=32))
    torch.manual_seed(0)
    return MoiraiMoEModel(cfg)


def _checkpointed(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (activation checkpointing)."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.layers:
        forward = layer.forward
        layer.forward = lambda *a, _f=forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)


def section_train_step(args: argparse.Namespace) -> dict:
    """Forward + backward + AdamW of the small config in bf16 autocast: patches/s, MFU, peak memory."""
    from moe_ts.objectives import pretrain_loss
    from pretrain.config import train_flops_per_token

    device = torch.device("cuda" if GPU else "cpu")
    b, n = (2, 16) if args.smoke else (args.train_batch, args.train_patches)
    name = torch.cuda.get_device_name() if GPU else platform.processor() or platform.machine()
    peak = peak_flops(name, args.peak_tflops)
    rows = []
    for checkpointing in (False, True):
        model = small_model(args.smoke).to(device).train()
        if checkpointing:
            _checkpointed(model)
        cfg = model.config
        target = torch.randn(b, n * cfg.patch_size, device=device).cumsum(-1)
        sample_id = torch.ones(b, n, dtype=torch.long, device=device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=GPU)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = pretrain_loss(model, target, sample_id).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        if GPU:
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, 1 if args.smoke else 3, 1 if args.smoke else 10)
        calls = []  # checkpointing shows as each layer running twice per step (forward, then recomputed)
        hooks = [layer.attn.register_forward_hook(lambda *_: calls.append(1)) for layer in model.layers]
        step()
        for hook in hooks:
            hook.remove()
        active = model.num_parameters(active=True)
        rate = b * n / seconds
        rows.append({"checkpointing": checkpointing, "batch": f"{b} x {n} patches", "seconds": seconds,
                     "patches_per_s": rate, "active_params": active,
                     "mfu_6n": mfu(6.0 * active, rate, peak),
                     "mfu_with_attention": mfu(train_flops_per_token(active, cfg.num_layers, cfg.d_model, n), rate,
                                               peak),
                     "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if GPU else None,
                     "layer_forwards_per_step": len(calls) / len(model.layers)})
        del model, opt
    return {"device": name, "peak_tflops": None if peak is None else peak / 1e12, "rows": rows,
            "ok": all(r["patches_per_s"] > 0 for r in rows)}


def section_forecast(args: argparse.Namespace) -> dict:
    """Series/s of `forecast` at each horizon: GPU (fp32 and bf16 weights, batch 256) against the CPU."""
    from moe_ts.device import place_model

    model = small_model(args.smoke).eval()
    p = model.config.patch_size
    context = 4 * p if args.smoke else 512
    gpu_series, cpu_series = (4, 2) if args.smoke else (args.forecast_batch, args.cpu_series)
    horizons = [16, 32] if args.smoke else [96, 720]
    rng = torch.Generator().manual_seed(0)
    series = list((torch.randn(max(gpu_series, cpu_series), context, generator=rng).cumsum(-1)).numpy())

    def rate(count: int) -> Callable[[int], float]:
        def run(h: int) -> float:
            start = time.perf_counter()
            model.forecast(series[:count], h, num_samples=args.samples, seed=0, batch_size=count,
                           context_length=context)
            _sync()
            return count / (time.perf_counter() - start)
        return run

    rows = []
    for h in horizons:
        place_model(model, "cpu", "float32")
        torch.set_num_threads(os.cpu_count() or 1)
        cpu = rate(cpu_series)(h)
        row = {"horizon": h, "samples": args.samples, "cpu_series": cpu_series, "cpu_series_per_s": cpu}
        if GPU:
            for dtype in ("float32", "bfloat16"):
                place_model(model, "cuda", dtype)
                rate(gpu_series)(h)  # warm-up: CUDA context, kernels
                gpu = rate(gpu_series)(h)
                row[f"gpu_{dtype}_series_per_s"] = gpu
                row[f"gpu_{dtype}_over_cpu"] = gpu / cpu
        rows.append(row)
    return {"gpu_batch": gpu_series, "rows": rows, "ok": all(r["cpu_series_per_s"] > 0 for r in rows)}


def section_kernels(args: argparse.Namespace) -> dict:
    """Triton vs torch dispatcher on one MoE layer: relative error of the output and of every gradient."""
    import copy

    from kernels.testing import rel_err
    from moe_ts.config import MoEConfig
    from moe_ts.dispatch import set_moe_dispatcher
    from moe_ts.moe import MoELayer

    device = torch.device("cuda" if GPU else "cpu")
    cases = [(64, 64, 256)] if args.smoke else [(384, 512, 8192), (768, 1024, 8192)]
    dtypes = [torch.float32] if args.smoke else [torch.float32, torch.bfloat16]
    rows = []
    for d_model, d_ff, tokens in cases:
        for dtype in dtypes:
            torch.manual_seed(d_model)
            base = MoELayer(d_model, MoEConfig(num_experts=32 if not args.smoke else 4, top_k=2, d_ff=d_ff),
                            init_std=d_model**-0.5).to(device=device, dtype=dtype)
            x = torch.randn(tokens, d_model, device=device, dtype=dtype)
            grad_y = torch.randn_like(x)
            outs = {}
            for backend in ("torch", "triton"):
                layer = copy.deepcopy(base)
                set_moe_dispatcher(layer, backend)
                xi = x.detach().clone().requires_grad_(True)
                y, stats = layer(xi)
                ((y * grad_y).sum() + stats.aux_loss + stats.z_loss).backward()
                outs[backend] = {"output": y.detach(), "input": xi.grad,
                                 **{n: q.grad for n, q in layer.named_parameters()}}
            errors = {k: float(rel_err(outs["triton"][k].float(), ref.float())) if ref is not None else None
                      for k, ref in outs["torch"].items()}
            bound = 2e-5 if dtype == torch.float32 else 3e-2
            worst = max(e for e in errors.values() if e is not None)
            rows.append({"d_model": d_model, "d_ff": d_ff, "tokens": tokens, "dtype": str(dtype).removeprefix("torch."),
                         "max_rel_err": worst, "bound": bound, "ok": worst <= bound and None not in errors.values(),
                         "rel_err": errors})
    return {"rows": rows, "ok": all(r["ok"] for r in rows)}


SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "tests": section_tests, "moe_layer": section_moe_layer, "train_step": section_train_step,
    "forecast": section_forecast, "kernels": section_kernels,
}


# ----------------------------------------------------------------------------- report


def _f(x: object, fmt: str = ".3g") -> str:
    if x is None or isinstance(x, bool):
        return {None: "-", True: "yes", False: "**no**"}[x]
    return format(x, fmt) if isinstance(x, (int, float)) else str(x)


def markdown(result: dict) -> str:
    """One table per section, headed by the machine."""
    lines = [f"gpu_check on {result['device']} (torch {result['torch']}, CUDA {result['cuda']}), "
             f"{result['seconds']:.0f} s{' (--smoke: toy sizes, CPU)' if result['smoke'] else ''}", ""]
    s = result["sections"]
    lines += ["| section | ok | seconds | result |", "|---|---|---|---|"]
    for name, sec in s.items():
        lines.append(f"| {name} | {_f(sec.get('ok'))} | {_f(sec.get('section_seconds'), '.1f')} | "
                     f"{sec.get('error') or sec.get('skipped') or _headline(name, sec)} |")
    if "rows" in s.get("moe_layer", {}):
        lines += ["", "| MoE layer, fwd+bwd (" + ", ".join(f"{k} {v}" for k, v in s["moe_layer"]["size"].items())
                  + ") | ms | TFLOP/s | fraction of dense |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {_f(r['ms'])} | {_f(r['TFLOP_per_s'])} | {_f(r['fraction_of_dense'], '.2f')} |"
                  for r in s["moe_layer"]["rows"]]
    if "rows" in s.get("train_step", {}):
        lines += ["", "| train step (small config, bf16 autocast) | patches/s | MFU 6N | MFU +attn | peak GiB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['batch']}, checkpointing {'on' if r['checkpointing'] else 'off'} | "
                  f"{_f(r['patches_per_s'], '.0f')} | {_f(r['mfu_6n'], '.1%')} | {_f(r['mfu_with_attention'], '.1%')} "
                  f"| {_f(r['peak_memory_gib'], '.2f')} |"
                  for r in s["train_step"]["rows"]]
    if "rows" in s.get("forecast", {}):
        lines += ["", "| forecast (KV cache) | CPU series/s | GPU fp32 series/s | x CPU | GPU bf16 series/s | x CPU |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| h={r['horizon']}, S={r['samples']} | {_f(r['cpu_series_per_s'])} | "
                  f"{_f(r.get('gpu_float32_series_per_s'))} | {_f(r.get('gpu_float32_over_cpu'), '.0f')} | "
                  f"{_f(r.get('gpu_bfloat16_series_per_s'))} | {_f(r.get('gpu_bfloat16_over_cpu'), '.0f')} |"
                  for r in s["forecast"]["rows"]]
    if "rows" in s.get("kernels", {}):
        lines += ["", "| triton vs torch (d_model, d_ff, tokens, dtype) | max rel err, output + every gradient "
                  "| bound |",
                  "|---|---|---|"]
        lines += [f"| {r['d_model']}, {r['d_ff']}, {r['tokens']}, {r['dtype']} | {_f(r['max_rel_err'], '.2e')} | "
                  f"{r['bound']:.0e} |" for r in s["kernels"]["rows"]]
    return "\n".join(lines) + "\n"


def _headline(name: str, sec: dict) -> str:
    if name == "tests":
        return f"{sec['passed']} passed, {sec['failed']} failed, {sec['skipped']} skipped (exit {sec['exit_code']})"
    if name == "moe_layer":
        return f"best MoE / dense {_f(sec['best_fraction_of_dense'], '.2f')} ({TARGETS[name]})"
    if name == "train_step":
        return f"MFU {_f(sec['rows'][0]['mfu_6n'], '.1%')} ({TARGETS[name]})"
    if name == "forecast":
        best = [r.get("gpu_bfloat16_over_cpu") for r in sec["rows"]]
        return f"GPU bf16 / CPU {', '.join(_f(b, '.0f') for b in best)} ({TARGETS[name]})"
    return "all within bounds" if sec["ok"] else "errors above bounds"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    parser.add_argument("--md", default="benchmarks/results/gpu_check.md")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=450, help="skip the sections left after this (default 450)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (any machine)")
    parser.add_argument("--smoke", action="store_true", help="every section at toy sizes on the CPU")
    parser.add_argument("--tests-timeout", type=int, default=240)
    parser.add_argument("--test-paths", nargs="+", default=["tests"])
    parser.add_argument("--dispatchers", nargs="+", default=["torch", "triton", "megablocks"])
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-patches", type=int, default=512)
    parser.add_argument("--forecast-batch", type=int, default=256)
    parser.add_argument("--cpu-series", type=int, default=16, help="series of the CPU forecast reference")
    parser.add_argument("--samples", type=int, default=20, help="sample paths per series in the forecast section")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: from its name)")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(f"gpu_check plan (budget {args.budget_s:.0f} s; CUDA here: {GPU}):")
        for name, what, budget in PLAN:
            if name in args.sections:
                print(f"  {name:<11} ~{budget:>3} s  {what}")
        print(f"writes {args.out} and {args.md}")
        return 0
    if not GPU and not args.smoke:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it where a GPU is lent "
              "(--dry-run shows the plan, --smoke runs it at toy sizes on the CPU)", file=sys.stderr)
        return 2
    if args.smoke:
        args.sections = [s for s in args.sections if s != "tests"]  # the gpu tests skip on a CPU anyway
    start = time.perf_counter()
    sections: dict[str, dict] = {}
    for name in args.sections:
        if time.perf_counter() - start > args.budget_s:
            sections[name] = {"ok": None, "skipped": f"past the {args.budget_s:.0f} s budget"}
            continue
        t0 = time.perf_counter()
        try:
            sections[name] = SECTIONS[name](args)
        except Exception as err:  # noqa: BLE001 - a broken section is a finding; the others still run
            first = str(err).splitlines()[0] if str(err) else ""
            sections[name] = {"ok": False, "error": f"{type(err).__name__}: {first}"}
        sections[name]["section_seconds"] = time.perf_counter() - t0
        print(f"gpu_check: {name} done in {sections[name]['section_seconds']:.1f} s", file=sys.stderr, flush=True)
    result = {"device": torch.cuda.get_device_name() if GPU else platform.processor() or platform.machine(),
              "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke,
              "machine": platform.platform(), "seconds": time.perf_counter() - start, "sections": sections,
              "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    table = markdown(result)
    print(table)
    for path, text in ((args.out, json.dumps(result, indent=1, default=str) + "\n"), (args.md, table)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return 0 if all(s.get("ok") is not False for s in sections.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
