"""moe-ts vs uni2ts 2.0.0 on the same weights and inputs: forecasting (horizons 96 and 720) and one training step.

    python benchmarks/vs_uni2ts.py --uni2ts-python /work/uni2ts-venv/bin/python --size small --repeats 2 \\
        --out benchmarks/results/vs_uni2ts.json

uni2ts runs in its own virtual environment (install: tools/uni2ts_golden.py's docstring) as a long-lived
worker process (this file with --worker; it imports nothing of moe-ts). The worker builds a Moirai-MoE with
random weights (seed 0; `small` is uni2ts' Moirai-MoE-Small shape: d_model 384, 6 layers, 32 experts,
d_ff 512) and saves it; this process converts that folder with `moe_ts.uni2ts.convert`, so both sides run
the same weights on the same series. Tasks alternate between the two processes (order flipped every
repeat) and the median of the repeats is kept; both use `--threads` torch threads. Ratios are uni2ts'
seconds / ours (> 1: moe-ts faster).

- forecast: B series of context T, S sample paths. uni2ts: `MoiraiMoEForecast.forward` (its decoding loop
  re-encodes the whole sequence for every path at every step; GluonTS' predictor and imputation are left
  out). moe-ts: `forecast(decode="sample")` with the KV cache, and `decode="uni2ts"` (uni2ts' decoding:
  re-standardise and re-encode per step) at the horizons listed in --uni2ts-mode-horizons, and without the
  cache (`use_kv_cache=False`, the same draws) at --recompute-horizons: the cache's speed-up over our own
  recompute. `--baseline-tree DIR` (a checkout of another commit) also runs that commit's moe-ts with the KV
  cache and the training step, in its own process on the same weights: a change's before / after, measured
  in the same run.
- train step: forward + NLL of the next patch + backward on B rows of N patches (one series per row).
  uni2ts: `MoiraiMoEModule` forward, the mean NLL of patch j+1 under the distribution at patch j, backward.
  moe-ts: `pretrain_loss` (its scaler uses the leading 30% of each row; the network work is the same), in
  float32 as uni2ts, and under bf16 autocast (`train.dtype: bf16`: GEMMs in bf16, weights and NLL in float32;
  a different precision from uni2ts' row, reported beside it).
- Our side's glibc malloc is tuned as the `moe-ts` command tunes it (moe_ts/cpu_allocator.py; `--cpu-allocator
  default` leaves it as is); the uni2ts worker runs with the default, as a uni2ts user's process does.
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
from pathlib import Path
from typing import Any

import numpy as np

PATCH = 16
SIZES = {"small": dict(d_model=384, d_ff=512, num_layers=6), "tiny": dict(d_model=128, d_ff=64, num_layers=2)}


# ----------------------------------------------------------------------------- uni2ts side (its own venv)


def _worker(size: str, folder: Path, threads: int) -> None:
    """Build and save the uni2ts model, then answer timing requests (JSON lines on stdin / stdout)."""
    import torch
    from uni2ts.distribution import (LogNormalOutput, MixtureOutput, NegativeBinomialOutput,
                                     NormalFixedScaleOutput, StudentTOutput)
    from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    distr = MixtureOutput([StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()])
    module = MoiraiMoEModule(distr_output=distr, patch_sizes=(PATCH,), max_seq_len=512, attn_dropout_p=0.0,
                             dropout_p=0.0, **SIZES[size])
    with torch.no_grad():
        module.encoder.centroid.copy_(torch.randn_like(module.encoder.centroid))
    module.save_pretrained(folder / "uni2ts")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            return
        data = np.load(cmd["data"])
        if cmd["op"] == "forecast":
            module.eval()
            past = torch.from_numpy(data)[..., None]
            fc = MoiraiMoEForecast(prediction_length=cmd["horizon"], target_dim=1, feat_dynamic_real_dim=0,
                                   past_feat_dynamic_real_dim=0, context_length=past.shape[1], module=module,
                                   patch_size=PATCH, num_samples=cmd["samples"])
            start = time.perf_counter()
            with torch.no_grad():
                fc(past, torch.ones_like(past, dtype=torch.bool), torch.zeros(past.shape[:2], dtype=torch.bool),
                   num_samples=cmd["samples"])
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        else:  # train step
            module.train()
            b, length = data.shape
            n = length // PATCH
            target = torch.from_numpy(data).view(b, n, PATCH)
            ids = torch.ones(b, n, dtype=torch.long)
            start = time.perf_counter()
            distr_out = module(target, torch.ones_like(target, dtype=torch.bool), ids,
                               torch.arange(n).expand(b, n), torch.zeros(b, n, dtype=torch.long),
                               torch.zeros(b, n, dtype=torch.bool), torch.full((b, n), PATCH))
            nxt = torch.cat((target[:, 1:], torch.zeros_like(target[:, :1])), dim=1)
            loss = -distr_out.log_prob(nxt)[:, :-1].mean()
            forward_s = time.perf_counter() - start
            loss.backward()
            seconds = time.perf_counter() - start
            module.zero_grad(set_to_none=True)
            print(json.dumps({"seconds": seconds, "forward_seconds": forward_s}), flush=True)


def _moe_worker(folder: Path, threads: int) -> None:
    """moe-ts from another source tree (--baseline-tree, first on PYTHONPATH) timing its forecasts on the same
    converted weights: the before / after comparison of a change, measured under the same load."""
    import torch
    from moe_ts.model import MoiraiMoEModel
    from moe_ts.uni2ts.convert import convert_uni2ts_folder

    torch.set_num_threads(threads)
    conversion = convert_uni2ts_folder(folder / "uni2ts")
    model = MoiraiMoEModel(conversion.config)
    model.load_state_dict(conversion.state_dict)
    model.eval()
    import moe_ts

    print(json.dumps({"ready": True, "moe_ts": moe_ts.__file__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            return
        data = np.load(cmd["data"])
        if cmd["op"] == "train":
            seconds = _moe_train_step(model, torch.from_numpy(data))
        else:
            start = time.perf_counter()
            model.forecast(list(data), cmd["horizon"], num_samples=cmd["samples"], seed=0,
                           context_length=data.shape[1], decode=cmd["decode"])
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds}), flush=True)


def _moe_train_step(model: Any, train_bl: Any, bf16: bool = False) -> float:
    """Seconds of one forward + backward of moe-ts' `pretrain_loss` on rows of one series each; `bf16`: the loss
    under bf16 autocast, as `train.dtype: bf16` runs it (pretrain/engine.py)."""
    import torch
    from moe_ts.objectives import pretrain_loss

    ids_bn = torch.ones(train_bl.shape[0], train_bl.shape[1] // PATCH, dtype=torch.long)
    model.train()
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = pretrain_loss(model, train_bl, ids_bn).loss
    loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    model.eval()
    return seconds


# ----------------------------------------------------------------------------- moe-ts side


class Uni2tsWorker:
    """The uni2ts worker process."""

    def __init__(self, python: str, size: str, folder: Path, threads: int, kind: str = "--worker",
                 env: dict | None = None) -> None:
        self.proc = subprocess.Popen([python, __file__, kind, "--size", size, "--dir", str(folder),
                                      "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        while True:  # skip anything a library printed
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"the uni2ts worker exited (code {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uni2ts-python", default="/work/uni2ts-venv/bin/python")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--tasks", default="96:20,720:5", help="forecast horizon:samples pairs")
    parser.add_argument("--uni2ts-mode-horizons", default="96", help="horizons also run with decode=uni2ts")
    parser.add_argument("--recompute-horizons", default="720",
                        help="horizons also run without the KV cache (use_kv_cache=False): the cache's speed-up")
    parser.add_argument("--train-patches", type=int, default=128, help="patches per row of the training batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/vs_uni2ts.json")
    parser.add_argument("--baseline-tree", help="a checkout of the baseline commit (e.g. `git archive HEAD | tar -x "
                        "-C DIR`): its moe-ts runs the KV-cache forecasts too, in its own process, for before / after")
    parser.add_argument("--cpu-allocator", choices=("tuned", "default"), default="tuned",
                        help="our side's glibc malloc as the `moe-ts` command sets it (moe_ts/cpu_allocator.py), or "
                        "left as is; the uni2ts worker always runs with the default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-moe-ts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.size, Path(args.dir), args.threads)
        return {}
    if args.worker_moe_ts:
        _moe_worker(Path(args.dir), args.threads)
        return {}

    import torch

    from moe_ts.cpu_allocator import tune_cpu_allocator
    from moe_ts.uni2ts.convert import convert_uni2ts_folder
    from moe_ts.model import MoiraiMoEModel

    allocator = tune_cpu_allocator() if args.cpu_allocator == "tuned" else "left as is (--cpu-allocator default)"
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="vs-uni2ts-"))
    worker = Uni2tsWorker(args.uni2ts_python, args.size, tmp, args.threads)
    conversion = convert_uni2ts_folder(tmp / "uni2ts")
    baseline = None
    if args.baseline_tree:
        env = dict(os.environ, PYTHONPATH=str(Path(args.baseline_tree).resolve()))
        baseline = Uni2tsWorker(sys.executable, args.size, tmp, args.threads, "--worker-moe-ts", env)
    model = MoiraiMoEModel(conversion.config)
    model.load_state_dict(conversion.state_dict)
    model.eval()
    rng = np.random.default_rng(0)
    t = np.arange(args.context)
    contexts = np.stack([10 * np.sin(t / (5 + i)) + rng.normal(size=args.context) for i in range(args.series)])
    np.save(tmp / "contexts.npy", contexts.astype(np.float32))
    train = rng.normal(size=(args.series, args.train_patches * PATCH)).cumsum(axis=1).astype(np.float32)
    np.save(tmp / "train.npy", train)
    train_t = torch.from_numpy(train)

    def ours_forecast(horizon: int, samples: int, decode: str, use_kv_cache: bool = True) -> float:
        start = time.perf_counter()
        model.forecast(list(contexts), horizon, num_samples=samples, seed=0, context_length=args.context,
                       decode=decode, use_kv_cache=use_kv_cache)
        return time.perf_counter() - start

    tasks = []
    for pair in args.tasks.split(","):
        horizon, samples = (int(x) for x in pair.split(":"))
        task = {"task": f"forecast h={horizon} S={samples}",
                "uni2ts": lambda h=horizon, s=samples: worker.ask(op="forecast", horizon=h, samples=s,
                                                                   data=str(tmp / "contexts.npy"))["seconds"],
                "moe-ts kv-cache": lambda h=horizon, s=samples: ours_forecast(h, s, "sample")}
        if baseline is not None:
            task["baseline kv-cache"] = lambda h=horizon, s=samples: baseline.ask(
                op="forecast", horizon=h, samples=s, decode="sample", data=str(tmp / "contexts.npy"))["seconds"]
        if str(horizon) in args.uni2ts_mode_horizons.split(","):
            task["moe-ts decode=uni2ts"] = lambda h=horizon, s=samples: ours_forecast(h, s, "uni2ts")
        if str(horizon) in args.recompute_horizons.split(","):
            task["moe-ts recompute"] = lambda h=horizon, s=samples: ours_forecast(h, s, "sample", False)
        tasks.append(task)
    train_task = {"task": f"train step {args.series}x{args.train_patches} patches",
                  "uni2ts": lambda: worker.ask(op="train", data=str(tmp / "train.npy"))["seconds"],
                  "moe-ts": lambda: _moe_train_step(model, train_t),
                  "moe-ts bf16 autocast": lambda: _moe_train_step(model, train_t, bf16=True)}
    if baseline is not None:
        train_task["baseline"] = lambda: baseline.ask(op="train", data=str(tmp / "train.npy"))["seconds"]
    tasks.append(train_task)
    for name in (k for k in train_task if k != "task"):  # warm-ups: the first step of each runs ~2x slower
        train_task[name]()
    ours_forecast(16, 2, "sample")
    worker.ask(op="forecast", horizon=16, samples=2, data=str(tmp / "contexts.npy"))
    if baseline is not None:
        baseline.ask(op="forecast", horizon=16, samples=2, decode="sample", data=str(tmp / "contexts.npy"))
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for rep in range(args.repeats):
            for task in tasks:
                names = [k for k in task if k != "task"]
                for name in (names if rep % 2 == 0 else names[::-1]):
                    times.setdefault((task["task"], name), []).append(task[name]())
                    print(f"repeat {rep}: {task['task']}, {name}: {times[(task['task'], name)][-1]:.2f} s",
                          file=sys.stderr, flush=True)
    finally:
        worker.close()
        if baseline is not None:
            baseline.close()
    rows = []
    for task in tasks:
        base = statistics.median(times[(task["task"], "uni2ts")])
        for name in (k for k in task if k != "task"):
            sec = statistics.median(times[(task["task"], name)])
            rows.append({"task": task["task"], "system": name, "seconds": sec, "uni2ts_over_this": base / sec})
        if "moe-ts recompute" in task:  # the KV cache's speed-up over our own re-encoding, same draws
            recompute = statistics.median(times[(task["task"], "moe-ts recompute")])
            kv_row = next(r for r in rows if r["task"] == task["task"] and r["system"] == "moe-ts kv-cache")
            kv_row["recompute_over_this"] = recompute / kv_row["seconds"]
        for base_name, ours_name in (("baseline kv-cache", "moe-ts kv-cache"), ("baseline", "moe-ts")):
            if base_name in task:  # the change's speed-up, measured in the same run
                row = next(r for r in rows if r["task"] == task["task"] and r["system"] == ours_name)
                row["baseline_over_this"] = statistics.median(times[(task["task"], base_name)]) / row["seconds"]
    print(f"| task | system | seconds (median of {args.repeats}) | uni2ts s / this s | recompute s / this s "
          "| baseline s / this s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cache, base = (f"{r[k]:.2f}" if k in r else "" for k in ("recompute_over_this", "baseline_over_this"))
        print(f"| {r['task']} | {r['system']} | {r['seconds']:.2f} | {r['uni2ts_over_this']:.2f} | {cache} | {base} |")
    result = {"config": vars(args) | {"worker": None}, "rows": rows, "machine": platform.platform(),
              "moe_ts_cpu_allocator": allocator,
              "baseline_moe_ts": None if baseline is None else baseline.ready.get("moe_ts"),
              "command": "python benchmarks/vs_uni2ts.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
