import json, sys, shutil
from pathlib import Path
import numpy as np, pandas as pd, yaml, datasets
from pretrain.train import main
out = Path(sys.argv[1])
work = Path("/tmp/legacy_run_work"); shutil.rmtree(work, ignore_errors=True); work.mkdir()
rng = np.random.default_rng(0)
cols = {k: [] for k in ("item_id", "dataset", "freq", "start", "target", "group_id")}
for i in range(8):
    length = int(rng.integers(30, 100)); t = np.arange(length)
    y = (np.sin(t / rng.uniform(2, 8)) * rng.uniform(1, 5)).astype(np.float32)
    for k, v in (("item_id", f"s-{i}"), ("dataset", "sines"), ("freq", "h"), ("start", pd.Timestamp("2022-01-01")),
                 ("target", y.tolist()), ("group_id", f"s-{i}")):
        cols[k].append(v)
datasets.Dataset.from_dict(cols).save_to_disk(str(out / "corpus"))
(out / "corpus" / "manifest.json").write_text(json.dumps({"complete": True}))
MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 16, "num_layers": 1, "num_heads": 2, "stats_ratio": 0.3,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 16}}
TRAIN = {"steps": 6, "batch_size": 4, "grad_accum": 1, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 1, "seed": 0, "wandb_mode": "disabled"}
(out / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN}))
main(["--config", str(out / "run.yaml"), "--data", str(out / "corpus"), "--out", str(out / "run"), "--stop-at", "2"])
