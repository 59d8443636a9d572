"""`moe-ts prepare` and a pretraining rank against corpus size (issue 22, deliverable 3; docs/ARCHITECTURE.md §4).

Writes a LOTSA-layout input (datasets.save_to_disk folders: Arrow stream shards listed in state.json; item_id,
start, freq "H", target list<float32>; rows of log-uniform length 200..5000, 2% of values missing, in 4 dataset
folders) of 10^7 values and of 10^8 (`--large`), then for each size:

- `moe-ts prepare --source lotsa:DIR --no-registered --tsmixup-count 1000` (the leak check against every
  registered evaluation set present, TSMixup from the ingested rows, row statistics, shard checksums) in a fresh
  process: wall seconds, values/s, and the peak resident memory of its process tree sampled every 50 ms, split
  into anonymous memory (the heap: what cannot be evicted) and all of it (plus the file-backed pages of the
  memory-mapped corpus it read, which RSS counts though the kernel can drop them), with --num-proc 1 and 2;
- a pretraining rank's data side in a fresh process: `open_corpus` + `VectorisedSampler` (configs/small.yaml's
  windows) + 20 batches of 32: start-up seconds and resident memory, anonymous (beside the imports alone) and all.

Flat means the anonymous peak at 10^8 is close to that at 10^7 (a ratio near 1); the table prints the ratio. Prints a markdown table and writes JSON:

    python benchmarks/prepare_scale.py --out benchmarks/results/prepare_scale.json [--large] [--workdir DIR]
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
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FOLDERS = 4
NAN_RATE = 0.02
ROWS_PER_BATCH = 1000  # rows per Arrow record batch of the input
BATCHES_PER_SHARD = 10


def write_lotsa(root: Path, values: int, seed: int = 0) -> dict[str, Any]:
    """The LOTSA-layout input of about `values` values under `root` (reused when root/done.json exists)."""
    import pyarrow as pa

    done = root / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    rng = np.random.default_rng(seed)
    schema = pa.schema([("item_id", pa.string()), ("start", pa.timestamp("s")), ("freq", pa.string()),
                        ("target", pa.list_(pa.float32()))])
    per_folder, total, rows = values // FOLDERS, 0, 0
    t0 = time.perf_counter()
    for f in range(FOLDERS):
        folder = root / f"lotsa_{f}"
        folder.mkdir(parents=True, exist_ok=True)
        written, shard, files = 0, 0, []
        while written < per_folder:
            name = f"data-{shard:05d}.arrow"
            with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for _ in range(BATCHES_PER_SHARD):
                    if written >= per_folder:
                        break
                    lengths = np.exp(rng.uniform(np.log(200), np.log(5000), ROWS_PER_BATCH)).astype(np.int64)
                    flat = np.cumsum(rng.standard_normal(int(lengths.sum()), dtype=np.float32))
                    flat[rng.random(len(flat)) < NAN_RATE] = np.nan
                    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                    ids = [f"f{f}-{rows + i}" for i in range(ROWS_PER_BATCH)]
                    batch = pa.record_batch([pa.array(ids), pa.array(np.full(ROWS_PER_BATCH, 1_600_000_000 + f * 3600),
                                                                        pa.timestamp("s")),
                                             pa.array(["H"] * ROWS_PER_BATCH),
                                             pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))], schema=schema)
                    writer.write_batch(batch)
                    written += len(flat)
                    rows += ROWS_PER_BATCH
            files.append({"filename": name})
            shard += 1
        (folder / "state.json").write_text(json.dumps({"_data_files": files, "_fingerprint": f"bench-{f}",
                                                        "_format_type": None, "_split": None}))
        total += written
    info = {"values": total, "rows": rows, "write_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(info))
    return info


def _tree_rss_mib(pid: int) -> tuple[float, float]:
    """(anonymous, file-backed) resident MiB of process `pid` and its children, from /proc."""
    import psutil

    anon = file = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    for proc in procs:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                          if line.startswith(("RssAnon", "RssFile", "RssShmem")))
        except OSError:
            continue
        anon += int(fields.get("RssAnon", "0 kB").split()[0]) / 1024
        file += int(fields.get("RssFile", "0 kB").split()[0]) / 1024
    return anon, file


def run_prepare(source: Path, out: Path, num_proc: int) -> dict[str, Any]:
    """`moe-ts prepare` in a child process: wall seconds and the peak resident memory of its process tree,
    sampled every 50 ms: anonymous (heap: what cannot be evicted) and file-backed (pages of the memory-mapped
    corpus it read, which the kernel can drop and which RSS counts anyway)."""
    cmd = [sys.executable, "-m", "data_prep.prepare", "--out", str(out), "--overwrite", "--no-registered",
           "--source", f"lotsa:{source}", "--synthetic-count", "0", "--kernelsynth-count", "0",
           "--periodic-count", "0", "--tsmixup-count", "1000", "--num-proc", str(num_proc)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    peak_anon = peak_total = 0.0
    while child.poll() is None:
        anon, file = _tree_rss_mib(child.pid)
        peak_anon, peak_total = max(peak_anon, anon), max(peak_total, anon + file)
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"prepare failed:\n{child.stderr.read()[-3000:]}")
    return {"seconds": seconds, "peak_anon_mib": peak_anon, "peak_rss_mib": peak_total}


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rank(corpus: Path) -> dict[str, Any]:
    """A pretraining rank's data side in this process: start-up seconds, resident memory after 20 batches
    (anonymous and total; the file-backed part is the memory-mapped corpus pages the batches touched)."""
    import datasets  # noqa: F401  (a rank has them imported before it opens the corpus)
    import torch  # noqa: F401

    from data_prep.corpus import check_manifest, open_corpus
    from pretrain.batch_sampler import VectorisedSampler
    from pretrain.config import load_pretrain_config

    run = load_pretrain_config(REPO / "configs" / "small.yaml")
    anon_imports, _ = _tree_rss_mib(os.getpid())
    t0 = time.perf_counter()
    check_manifest(corpus)
    sampler = VectorisedSampler(open_corpus(corpus), patch_size=run.model.patch_size,
                                seq_patches=run.model.max_seq_len, seed=0)
    startup = time.perf_counter() - t0
    for _ in range(20):
        sampler.next_batch(32)
    anon, file = _tree_rss_mib(os.getpid())
    return {"startup_s": startup, "anon_imports_mib": anon_imports, "anon_mib": anon, "rss_mib": anon + file,
            "rss_peak_mib": vm_hwm_mib()}


def run_rank(corpus: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, __file__, "--rank", str(corpus)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"rank failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "prepare_scale.json"))
    parser.add_argument("--workdir", help="keep inputs and corpora here (inputs reused on a rerun)")
    parser.add_argument("--large", action="store_true", help="also 10^8 values (about 2 GB of disk)")
    parser.add_argument("--rank", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        print(json.dumps(rank(Path(args.rank))))
        return 0
    cases = []
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        work = Path(args.workdir or tmp)
        for values in [10**7, 10**8] if args.large else [10**7]:
            tag = f"{values:.0e}".replace("+", "")
            info = write_lotsa(work / f"lotsa-{tag}", values)
            case: dict[str, Any] = {"values_target": values, **info}
            for num_proc in (1, 2):
                res = run_prepare(work / f"lotsa-{tag}", work / f"corpus-{tag}", num_proc)
                case[f"prepare_np{num_proc}"] = {**res, "values_per_s": info["values"] / res["seconds"]}
                print(f"  {tag} --num-proc {num_proc}: {res['seconds']:.1f} s, peak MiB anon {res['peak_anon_mib']:.0f}"
                      f", all {res['peak_rss_mib']:.0f}", flush=True)
            case["rank"] = run_rank(work / f"corpus-{tag}")
            cases.append(case)
    base = cases[0]
    for c in cases:
        c["prepare_anon_vs_smallest"] = c["prepare_np1"]["peak_anon_mib"] / base["prepare_np1"]["peak_anon_mib"]
        c["rank_anon_vs_smallest"] = c["rank"]["anon_mib"] / base["rank"]["anon_mib"]
        c["np2_speedup"] = c["prepare_np1"]["seconds"] / c["prepare_np2"]["seconds"]
    print("| values | rows | prepare s (np 1 / 2) | values/s (np 1) | np 2 vs 1 | prepare peak MiB anon / all (np 1) "
          "| anon vs 10^7 | np 2 peak MiB anon / all | rank start-up s | rank MiB anon (imports) / all | anon vs 10^7 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        p1, p2, r = c["prepare_np1"], c["prepare_np2"], c["rank"]
        print(f"| {c['values']:.2e} | {c['rows']:,} | {p1['seconds']:.1f} / {p2['seconds']:.1f} "
              f"| {p1['values_per_s'] / 1e6:.2f}M | {c['np2_speedup']:.2f}x | {p1['peak_anon_mib']:.0f} / "
              f"{p1['peak_rss_mib']:.0f} | {c['prepare_anon_vs_smallest']:.2f}x | {p2['peak_anon_mib']:.0f} / "
              f"{p2['peak_rss_mib']:.0f} | {r['startup_s']:.2f} | {r['anon_mib']:.0f} ({r['anon_imports_mib']:.0f}) / "
              f"{r['rss_mib']:.0f} | {c['rank_anon_vs_smallest']:.2f}x |")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "cases": cases}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
