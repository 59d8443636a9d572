"""A real SIGKILL of a real save (issue 25): a pretraining run killed inside its checkpoint save, and a model
folder killed while `model.safetensors` is being written. The next run never takes the half-written folder: a
resume continues from the last complete checkpoint exactly as an uninterrupted run, `latest` still names a
complete checkpoint, and a model folder killed mid-replacement still loads its old weights bit for bit.

Each subprocess blocks at a hook point reached mid-save (a flag file tells the test it is there) and is killed
there with SIGKILL: after DeepSpeed's files of a checkpoint, while RUN/checkpoints/latest is open for writing,
and once a model's new `model.safetensors` is written but not yet its checksum. (A kill inside the write itself
cannot be aimed at: safetensors writes the file in one call.)"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pretrain.metrics import read_metrics
from pretrain.train import main
from tests.pretrain.sigkill import kill_when_flagged

MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 32, "num_layers": 1, "num_heads": 2,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
TRAIN = {"steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2,
         "keep_checkpoints": 3, "seed": 0, "wandb_mode": "disabled", "num_threads": 1}
COMPARED = ("loss", "nll", "aux", "z", "lr", "grad_norm")

# Runs pretraining with a hook that, at its second call during a checkpoint save (step 4's), creates FLAG and
# sleeps until killed: "shard" is the expert-shard write (after DeepSpeed's files, before the trainer state),
# "latest" the moment RUN/checkpoints/latest's file is opened for writing (whatever its name: DeepSpeed's own
# `latest` inside the checkpoint is not it).
BOOT = """
import builtins, io, os, sys, time
from pathlib import Path
hook, flag, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
calls = [0]
def stop_here():
    calls[0] += 1
    if calls[0] == 2:
        Path(flag).write_text("in save")
        time.sleep(600)
import pretrain.checkpoint as checkpoint
if hook == "shard":
    real_shard = checkpoint.save_expert_shard
    def shard(*args, **kwargs):
        stop_here()
        return real_shard(*args, **kwargs)
    checkpoint.save_expert_shard = shard
else:
    real_open = builtins.open
    def opener(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        path = Path(str(file))
        if path.name.startswith("latest") and path.parent.name == "checkpoints" and ("w" in mode or "a" in mode):
            stop_here()
        return handle
    builtins.open = io.open = opener  # pathlib opens through io.open
from pretrain.train import main
from tests.pretrain.sigkill import kill_when_flagged
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_corpus):
    root = tmp_path_factory.mktemp("crash")
    shutil.copytree(small_corpus, root / "corpus")
    (root / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN}))
    return root


@pytest.fixture(scope="module")
def uninterrupted(workdir) -> list[dict]:
    out = workdir / "fresh"
    assert main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(out)]) == 0
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("hook", ["shard", "latest"])
def test_a_kill_inside_the_checkpoint_save_never_resumes_from_it(workdir, uninterrupted, tmp_path, hook, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", BOOT, hook, str(tmp_path / "flag"), "--config", str(workdir / "run.yaml"),
           "--data", str(workdir / "corpus"), "--out", str(out)]
    kill_when_flagged(cmd, tmp_path / "flag")
    root = out / "checkpoints"
    # `latest` names a complete checkpoint: step 2's, or step 4's once it is renamed into place
    assert (root / "latest").read_text() in {"step-2", "step-4"}
    assert (root / (root / "latest").read_text() / "trainer_rank0.json").is_file()
    if hook == "shard":  # killed before step 4's trainer state was written
        assert not (root / "step-4").exists() and (root / "tmp-step-4").is_dir()
    capsys.readouterr()
    assert main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(out),
                 "--resume"]) == 0
    complete = "step-2" if hook == "shard" else "step-4"  # the newest complete checkpoint
    assert f"resumed from {root / complete} at step {complete[5:]}" in capsys.readouterr().out
    assert not [p.name for p in root.iterdir() if p.name.startswith(("tmp-", "trash-"))]
    resumed = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    by_step = {r["step"]: r for r in resumed}  # the last record of each step: the resumed run's
    assert sorted(by_step) == [r["step"] for r in uninterrupted] == list(range(1, 7))
    for ref in uninterrupted:
        for key in COMPARED:
            assert by_step[ref["step"]][key] == pytest.approx(ref[key], abs=1e-6, rel=1e-6), (ref["step"], key)


# Saves model A into TARGET, then model B over it, blocking (FLAG written) once B's weights are written and
# their checksum is being computed: the middle of the folder's save, where a kill leaves B's new weights beside
# A's record unless the folder is staged.
SAVER = """
import sys, time, torch
from pathlib import Path
import moe_ts.io.hub as hub
from moe_ts.model import MoiraiMoEModel
from moe_ts.config import ModelConfig, MoEConfig
target, flag = sys.argv[1], Path(sys.argv[2])
config = ModelConfig(patch_size=8, max_seq_len=16, d_model=32, num_layers=2, num_heads=2,
                     moe=MoEConfig(num_experts=4, top_k=2, d_ff=32))
models = []
for seed in (0, 1):
    torch.manual_seed(seed)
    models.append(MoiraiMoEModel(config).eval())
models[0].save_pretrained(target)
real_sha = hub.file_sha256
def blocking_sha(path):
    flag.write_text(str(path))
    time.sleep(600)
hub.file_sha256 = blocking_sha
models[1].save_pretrained(target)
"""


def test_a_kill_in_the_middle_of_a_model_save_leaves_the_old_folder(tmp_path):
    from moe_ts.config import ModelConfig, MoEConfig
    from moe_ts.model import MoiraiMoEModel

    target, flag = tmp_path / "model", tmp_path / "flag"
    kill_when_flagged([sys.executable, "-c", SAVER, str(target), str(flag)], flag)
    assert Path(flag.read_text()).name == "model.safetensors"  # its bytes are written: the real save ran
    loaded = MoiraiMoEModel.from_pretrained(target)  # the checksum is verified at load
    torch.manual_seed(0)  # model A, as the killed process built it
    old = MoiraiMoEModel(ModelConfig(patch_size=8, max_seq_len=16, d_model=32, num_layers=2, num_heads=2,
                                     moe=MoEConfig(num_experts=4, top_k=2, d_ff=32))).state_dict()
    state = loaded.state_dict()
    assert set(state) == set(old) and all(torch.equal(state[k], old[k]) for k in old)
    # the killed save's staging folder is removed by the next save in that folder
    assert list(tmp_path.glob(".model.tmp-*"))
    loaded.save_pretrained(target)
    assert not list(tmp_path.glob(".model.tmp-*")) and not list(tmp_path.glob(".model.old-*"))
