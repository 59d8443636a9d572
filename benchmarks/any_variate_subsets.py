"""Drawing the variate subsets of a large group in the vectorised any-variate sampler (issue 27): one key per member
of the group for every group window (SUBSET_BY_KEYS unbounded, the first version) vs `Generator.choice` per window
above SUBSET_BY_KEYS members (the default), interleaved A/B.

    python benchmarks/any_variate_subsets.py [--variates 3000] [--batches 30]

A synthetic corpus of one group of `--variates` variates (length 200) and 200 single series (length 500) is written to
a temporary folder; prints the median time per micro-batch of 32 rows x 64 patches of 32 at multivariate_share 0.3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import pretrain.variate_batch_sampler as vbs
from data_prep.corpus import open_corpus


def write_corpus(path: Path, variates: int) -> None:
    import datasets

    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("item_id", "dataset", "target", "group_id", "variate")}
    rows = [(f"g/{i}", "multi", 200, "g", i) for i in range(variates)] + [(f"u{u}", "uni", 500, f"u{u}", 0)
                                                                         for u in range(200)]
    for item, dataset, length, group, variate in rows:
        for key, value in zip(cols, (item, dataset, rng.normal(size=length).astype(np.float32).tolist(), group,
                                     variate)):
            cols[key].append(value)
    datasets.Dataset.from_dict(cols).save_to_disk(str(path))
    (path / "manifest.json").write_text(json.dumps({"complete": True}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variates", type=int, default=3000)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    default = vbs.SUBSET_BY_KEYS
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "corpus", args.variates)
        corpus = open_corpus(Path(tmp) / "corpus")
        times: dict[str, list[float]] = {"keys for every member": [], f"choice above {default} members": []}
        for _ in range(2):
            for name, limit in zip(times, (10**12, default)):
                vbs.SUBSET_BY_KEYS = limit
                s = vbs.AnyVariateVectorisedSampler(corpus, multivariate_share=0.3, patch_size=32, seq_patches=64,
                                                    seed=0)
                for _ in range(args.batches):
                    t0 = time.perf_counter()
                    s.next_batch(32)
                    times[name].append(time.perf_counter() - t0)
        vbs.SUBSET_BY_KEYS = default
    for name, t in times.items():
        print(f"group of {args.variates} variates, batch of 32 x 64 patches, {name}: "
              f"{statistics.median(t) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
