"""The pretraining loader against a GPU's appetite (issue 22, deliverable 4; docs/ARCHITECTURE.md §4).

Generates corpora in our layout (`data_prep.corpus.write_corpus`, which also writes the per-row statistics side
file `row_stats.npz`) of 10^7 values (10^8 with `--large`) in rows of 100, of 1000 and of a mix (log-uniform
lengths 50..5000), 2% of values missing, and measures for each, in a fresh subprocess per case:

- start-up: seconds of `open_corpus` plus the `WindowSampler` built on it (imports excluded), read from the side
  file and, the baseline, by scanning the values (the side file ignored); also the reader as it was before the
  side file (`pre_change_open`: one cumsum over every value, dataset and item id as Python strings per row);
- peak RSS of that process (VmHWM; the interpreter with torch / datasets imported is reported beside it);
- sampling on one process: windows/s and patch slots/s of `next_batch(32)` with rows of 512 patches of 16 values
  (configs/small.yaml's model and train defaults) for the sequential sampler (`pretrain.data.WindowSampler`, the
  baseline) and the vectorised one (`pretrain.batch_sampler.VectorisedSampler`, `train.sampler: vectorised`);
  slots count padding, as the GPU computes it. `train.loader_workers` runs W such processes in parallel, so the
  cores one H100 needs is its appetite over one process' patch slots/s. On a shared machine the vectorised
  process also runs both samplers in 8 alternating bursts: the median of the per-round ratios (`paired`) and the
  best burst of each (`best`) are what load from other jobs disturbs least.

The GPU side: patches/s one H100 consumes at 40% MFU = 989 TFLOP/s (dense bf16 peak) x 0.4 / FLOPs per patch,
FLOPs per patch = `pretrain.config.train_flops_per_token(active params, layers, d_model, max_seq_len)`
(6 x active parameters + 12 x layers x d_model x seq_len, forward + backward, padding included), active
parameters from `MoiraiMoENetwork(config).num_parameters(active=True)`. Loader cores per H100 = H100 patches/s /
the loader's patch slots/s on one core. Prints a table and writes JSON:

    python benchmarks/loader_throughput.py --out benchmarks/results/loader_throughput.json [--large]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

H100_PEAK_FLOPS = 989e12  # dense bf16, SXM
MFU = 0.4
BATCH = 32
LAYOUTS = ("rows100", "rows1000", "mix")
NAN_RATE = 0.02
DATASETS = 8  # corpus datasets, rows assigned round-robin


def row_lengths(layout: str, values: int, seed: int = 0) -> np.ndarray:
    """Row lengths summing to about `values`: all 100, all 1000, or log-uniform in [50, 5000]."""
    if layout == "rows100":
        return np.full(values // 100, 100)
    if layout == "rows1000":
        return np.full(values // 1000, 1000)
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(50), np.log(5000), size=2 * values // 1000)).astype(np.int64)
    return lengths[: int(np.searchsorted(np.cumsum(lengths), values)) + 1]


def series(lengths: np.ndarray, seed: int = 0) -> Iterator[Any]:
    """Random-walk series of the given lengths, NAN_RATE of values missing, datasets round-robin."""
    from data_prep.series import Series

    rng = np.random.default_rng(seed)
    for i, n in enumerate(lengths):
        y = np.cumsum(rng.standard_normal(int(n), dtype=np.float32))
        y[rng.random(int(n)) < NAN_RATE] = np.nan
        yield Series(f"item-{i}", y, "h", None, f"ds{i % DATASETS}")


def build(folder: Path, layout: str, values: int) -> dict[str, Any]:
    """Write the corpus (reused when `folder`/done.json says it is complete); its rows, values and write seconds."""
    from data_prep.corpus import write_corpus

    done = folder / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    lengths = row_lengths(layout, values)
    t0 = time.perf_counter()
    rows = write_corpus(series(lengths), folder / "corpus")
    info = {"rows": rows, "values": int(lengths.sum()), "write_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(info))
    return info


def vm_hwm_mib() -> float:
    """Peak resident set of this process (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pre_change_open(path: Path) -> Any:
    """`open_corpus` as it was before the side file: observed counts by one int64 cumsum over all values of a chunk,
    every row's dataset and item id turned into Python strings (object arrays); returns today's `Corpus`."""
    import data_prep.corpus as c

    table = c._training_table(path)
    chunks = [c._chunk_arrays(chunk, path) for chunk in table.column("target").chunks]
    observed = []
    for vals, offs in chunks:
        csum = np.concatenate([[0], np.cumsum(~np.isnan(vals), dtype=np.int64)])
        observed.append(csum[offs[1:]] - csum[offs[:-1]])
    dataset = np.asarray(table.column("dataset").to_pylist(), dtype=object)
    item_id = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    names, codes = np.unique(dataset, return_inverse=True)
    rows = [len(offs) - 1 for _, offs in chunks]
    return c.Corpus(path, [v for v, _ in chunks], [o for _, o in chunks],
                    np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64),
                    np.concatenate([np.diff(o) for _, o in chunks]), np.concatenate(observed),
                    codes.astype(np.int32), names.tolist(), item_id,  # type: ignore[arg-type]  (old: object array)
                    row_stats="pre-change")


def measure(corpus: Path, side_file: bool, sample_s: float, pre_change: bool = False,
            kind: str = "sequential") -> dict[str, Any]:
    """One case in this process: start-up seconds, peak RSS, then (sample_s > 0) sampling throughput."""
    import datasets  # noqa: F401  imported before the clock starts, as any rank has it already
    import torch  # noqa: F401

    import data_prep.corpus as corpus_mod
    from pretrain.config import load_pretrain_config
    from pretrain.batch_sampler import VectorisedSampler
    from pretrain.data import WindowSampler

    run = load_pretrain_config(REPO / "configs" / "small.yaml")
    if not side_file:
        corpus_mod._read_row_stats = lambda path, lengths: None  # the baseline: scan the values
    rss_imports = vm_hwm_mib()
    t0 = time.perf_counter()
    corpus = pre_change_open(corpus) if pre_change else corpus_mod.open_corpus(corpus)
    t_open = time.perf_counter() - t0
    sampler = (VectorisedSampler if kind == "vectorised" else WindowSampler)(corpus, patch_size=run.model.patch_size, seq_patches=run.model.max_seq_len,
                            min_window_patches=run.train.min_window_patches,
                            max_windows_per_series=run.train.max_windows_per_series, seed=0)
    t_start = time.perf_counter() - t0
    out = {"row_stats": corpus.row_stats, "open_s": t_open, "startup_s": t_start, "rss_imports_mib": rss_imports,
           "rss_peak_startup_mib": vm_hwm_mib()}
    if sample_s > 0:
        out.update(_sampling(sampler, run.model.max_seq_len, sample_s))
        out["rss_peak_sampling_mib"] = vm_hwm_mib()
        if kind == "vectorised":  # the baseline in the same process, in alternating bursts (shared machines)
            baseline = WindowSampler(corpus, patch_size=run.model.patch_size, seq_patches=run.model.max_seq_len,
                                     min_window_patches=run.train.min_window_patches,
                                     max_windows_per_series=run.train.max_windows_per_series, seed=0)
            rounds = [(_sampling(sampler, run.model.max_seq_len, sample_s / 8)["slots_per_s"],
                       _sampling(baseline, run.model.max_seq_len, sample_s / 8)["slots_per_s"]) for _ in range(8)]
            out["paired_speedup"] = float(np.median([v / b for v, b in rounds]))
            out["paired_best"] = [max(v for v, _ in rounds), max(b for _, b in rounds)]
    return out


def _sampling(sampler: Any, seq_patches: int, seconds: float) -> dict[str, float]:
    """Windows/s and patch slots/s of `next_batch(BATCH)` over about `seconds` (at least 3 batches)."""
    sampler.next_batch(BATCH)  # warm-up
    w0, r0, p0, batches, t0 = sampler.windows, sampler.rows, sampler.padding, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or batches < 3:
        sampler.next_batch(BATCH)
        batches += 1
    dt = time.perf_counter() - t0
    return {"windows_per_s": (sampler.windows - w0) / dt, "slots_per_s": batches * BATCH * seq_patches / dt,
            "padding_share": (sampler.padding - p0) / ((sampler.rows - r0) * seq_patches)}


def run_case(corpus: Path, side_file: bool, sample_s: float, pre_change: bool = False,
             kind: str = "sequential") -> dict[str, Any]:
    """`measure` in a fresh subprocess (its own peak RSS), one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, __file__, "--measure", str(corpus), "--sample-s", str(sample_s), "--kind", kind]
    if not side_file:
        cmd.append("--scan")
    if pre_change:
        cmd.append("--pre-change")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {corpus} (side file {side_file}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_appetite() -> dict[str, dict[str, float]]:
    """Patches/s one H100 consumes at MFU for configs/small.yaml and configs/base.yaml, and how it is derived."""
    from moe_ts.network import MoiraiMoENetwork
    from pretrain.config import load_pretrain_config, train_flops_per_token

    out = {}
    for name in ("small", "base"):
        m = load_pretrain_config(REPO / "configs" / f"{name}.yaml").model
        active = MoiraiMoENetwork(m).num_parameters(active=True)
        flops = train_flops_per_token(active, m.num_layers, m.d_model, m.max_seq_len)
        out[name] = {"active_params": active, "flops_per_patch": flops,
                     "attention_flops_per_patch": 12.0 * m.num_layers * m.d_model * m.max_seq_len,
                     "h100_patches_per_s": H100_PEAK_FLOPS * MFU / flops}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "loader_throughput.json"))
    parser.add_argument("--workdir", help="keep the generated corpora here (reused on a rerun); default: a temp dir")
    parser.add_argument("--large", action="store_true", help="also 10^8 values per layout (~1.2 GB of disk)")
    parser.add_argument("--sample-s", type=float, default=4.0, help="seconds of sampling per case")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--scan", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pre-change", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="sequential", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), not args.scan, args.sample_s, args.pre_change, args.kind)))
        return 0
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        work = Path(args.workdir or tmp)
        rows = [one_corpus(work, layout, values, args.sample_s)
                for values in ([10**7, 10**8] if args.large else [10**7]) for layout in LAYOUTS]
    gpu = gpu_appetite()
    for r in rows:
        r["loader_cores_per_h100"] = {name: g["h100_patches_per_s"] / r["slots_per_s"] for name, g in gpu.items()}
        r["vectorised_cores_per_h100"] = {name: g["h100_patches_per_s"] / r["vectorised_slots_per_s"]
                                          for name, g in gpu.items()}
        r["best_cores_per_h100"] = {name: g["h100_patches_per_s"] / r["paired_best_slots_per_s"][0]
                                    for name, g in gpu.items()}
    print_table(rows, gpu)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "batch": BATCH, "h100_peak_flops": H100_PEAK_FLOPS, "mfu": MFU, "gpu": gpu, "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


def one_corpus(work: Path, layout: str, values: int, sample_s: float) -> dict[str, Any]:
    """Build one corpus, then measure it with the side file (and sampling) and with the scan (the baseline)."""
    folder = work / f"{layout}-{values:.0e}".replace("+", "")
    folder.mkdir(parents=True, exist_ok=True)
    info = build(folder, layout, values)
    fast = run_case(folder / "corpus", True, sample_s)
    vec = run_case(folder / "corpus", True, sample_s, kind="vectorised")
    scan = run_case(folder / "corpus", False, 0)
    old = run_case(folder / "corpus", False, 0, pre_change=True)
    assert (fast["row_stats"], scan["row_stats"], old["row_stats"]) == ("row_stats.npz", "scan", "pre-change")
    print(f"  {layout} {values:.0e}: written in {info['write_s']} s, start-up {fast['startup_s']:.2f} s "
          f"(scan {scan['startup_s']:.2f} s)", flush=True)
    return {"layout": layout, **info, "startup_s": fast["startup_s"], "open_s": fast["open_s"],
            "scan_startup_s": scan["startup_s"], "scan_open_s": scan["open_s"],
            "startup_speedup_vs_scan": scan["startup_s"] / fast["startup_s"],
            "pre_change_startup_s": old["startup_s"], "pre_change_rss_peak_startup_mib": old["rss_peak_startup_mib"],
            "startup_speedup_vs_pre_change": old["startup_s"] / fast["startup_s"],
            "rss_imports_mib": fast["rss_imports_mib"], "rss_peak_startup_mib": fast["rss_peak_startup_mib"],
            "scan_rss_peak_startup_mib": scan["rss_peak_startup_mib"],
            "rss_above_imports_vs_scan": (fast["rss_peak_startup_mib"] - fast["rss_imports_mib"])
            / max(scan["rss_peak_startup_mib"] - scan["rss_imports_mib"], 1e-9),
            **{k: fast[k] for k in ("windows_per_s", "slots_per_s", "padding_share", "rss_peak_sampling_mib")},
            **{f"vectorised_{k}": vec[k] for k in ("startup_s", "windows_per_s", "slots_per_s", "padding_share",
                                                  "rss_peak_sampling_mib")},
            "vectorised_speedup": vec["slots_per_s"] / fast["slots_per_s"],
            "paired_speedup": vec["paired_speedup"], "paired_best_slots_per_s": vec["paired_best"]}


def print_table(rows: list[dict[str, Any]], gpu: dict[str, dict[str, float]]) -> None:
    """The markdown table of BENCHMARKS.md."""
    for name, g in gpu.items():
        print(f"{name}: {g['active_params'] / 1e6:.1f}M active, {g['flops_per_patch'] / 1e6:.1f} MFLOP/patch "
              f"(attention {g['attention_flops_per_patch'] / 1e6:.1f}), one H100 at {MFU:.0%} MFU eats "
              f"{g['h100_patches_per_s'] / 1e6:.2f}M patches/s")
    print("| values | rows | layout | start-up s: side file / scan / pre-change | vs scan | vs pre-change "
          "| peak RSS MiB: side file / scan / pre-change | patch slots/s: sequential / vectorised | vectorised "
          "vs sequential (paired) | cores/H100 small: seq / vec (best) | cores/H100 base: seq / vec (best) | vec padding |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['values']:.1e} | {r['rows']:,} | {r['layout']} | {r['startup_s']:.2f} / {r['scan_startup_s']:.2f} "
              f"/ {r['pre_change_startup_s']:.2f} | {r['startup_speedup_vs_scan']:.1f}x "
              f"| {r['startup_speedup_vs_pre_change']:.1f}x | {r['rss_peak_startup_mib']:.0f} / "
              f"{r['scan_rss_peak_startup_mib']:.0f} / {r['pre_change_rss_peak_startup_mib']:.0f} "
              f"| {r['slots_per_s'] / 1e6:.2f}M / {r['vectorised_slots_per_s'] / 1e6:.2f}M "
              f"| {r['vectorised_speedup']:.1f}x ({r['paired_speedup']:.1f}x) "
              f"| {r['loader_cores_per_h100']['small']:.1f} / {r['vectorised_cores_per_h100']['small']:.1f} "
              f"({r['best_cores_per_h100']['small']:.1f}) "
              f"| {r['loader_cores_per_h100']['base']:.1f} / {r['vectorised_cores_per_h100']['base']:.1f} "
              f"({r['best_cores_per_h100']['base']:.1f}) "
              f"| {r['vectorised_padding_share']:.1%} |")


if __name__ == "__main__":
    raise SystemExit(main())
