"""Expert-parallel checkpoints end to end (2 processes under torchrun, parallel.ep_size=2, ZeRO-1):

a run killed with SIGKILL (launcher and workers, after a checkpoint) resumes and its losses, weights and
exported model equal an uninterrupted run's; the export holds every expert in one Hugging Face folder
that forecasts and trains with ep_size=1; resuming with another ep_size or world size is a one-line error.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pretrain.metrics import read_metrics

pytestmark = pytest.mark.slow  # every test here waits on `runs`: three 2-process runs, about 30 s on 2 cores

REPO = Path(__file__).resolve().parents[2]
MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 16, "num_layers": 2, "num_heads": 2, "stats_ratio": 0.3,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 16}}
TRAIN = {"steps": 10, "batch_size": 4, "grad_accum": 1, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
         "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "seed": 0, "wandb_mode": "disabled",
         "zero_stage": 1, "num_threads": 1}
PARALLEL = {"ep_size": 2, "timeout_s": 60}
COMPARED = ("loss", "nll", "aux", "z", "lr", "grad_norm")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, write_arrow_corpus):
    root = tmp_path_factory.mktemp("ep_resume")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        length = int(rng.integers(20, 200))
        y = (np.sin(np.arange(length) / rng.uniform(2, 8)) * rng.uniform(1, 5) if i % 2
             else np.cumsum(rng.normal(size=length))).astype(np.float32)
        name = "sines" if i % 2 else "walks"
        rows.append({"item_id": f"{name}-{i}", "dataset": name, "target": y, "group_id": f"g{i}"})
    write_arrow_corpus(root / "corpus", rows)
    (root / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN, "parallel": PARALLEL}))
    return root


def _torchrun(workdir: Path, out: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "pretrain.train", "--config", str(workdir / "run.yaml"),
           "--data", str(workdir / "corpus"), "--out", str(out), *extra]
    log = out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*.log')))}.log"
    with open(log, "w") as err:  # the child keeps its own descriptor; a file cannot fill up like a pipe
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.log = log
    return proc


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers (torchrun starts each worker in a session of its own)."""
    import psutil

    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for p in [*workers, psutil.Process(proc.pid)]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        proc.communicate()
        pytest.fail(f"2-process run timed out: {proc.args}")
    assert proc.returncode == 0, proc.log.read_text()[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(workdir, free_port):
    """The uninterrupted run and the killed-then-resumed one (started together: 4 processes on the CPUs)."""
    full, killed = workdir / "full", workdir / "killed"
    full_proc = _torchrun(workdir, full, free_port())
    victim = _torchrun(workdir, killed, free_port())
    deadline = time.time() + 240
    latest = killed / "checkpoints" / "latest"
    try:
        while time.time() < deadline and victim.poll() is None and not latest.exists():
            time.sleep(0.01)
        assert victim.poll() is None, "the run ended before it could be killed"
        assert latest.exists(), "no checkpoint within the deadline"
        _kill_tree(victim)  # a real kill of the launcher and both ranks, mid-run
        victim.communicate()
    finally:
        if victim.poll() is None:
            _kill_tree(victim)
    assert victim.returncode == -signal.SIGKILL
    killed_at = latest.read_text()
    assert killed_at != "step-10" and not (killed / "final").exists()  # killed mid-run
    stdout = _finish(_torchrun(workdir, killed, free_port(), "--resume"))
    assert f"resumed from {killed / 'checkpoints' / killed_at}" in stdout
    assert "experts sharded over 2 ranks" in _finish(full_proc)
    return full, killed


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.dist
def test_killed_ep2_run_resumes_with_the_uninterrupted_losses_and_weights(runs):
    full, killed = runs
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    for ra, rb in zip(a, b):
        for key in COMPARED:
            assert rb[key] == pytest.approx(ra[key], abs=1e-6, rel=1e-6), (ra["step"], key)
    wa, wb = _final_state(full), _final_state(killed)
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-7, msg=name)
    ckpt = full / "checkpoints" / "step-10"
    assert sorted(p.name for p in ckpt.glob("experts_*")) == ["experts_ep0_of2.safetensors",
                                                              "experts_ep1_of2.safetensors"]
    assert json.loads((ckpt / "trainer_rank1.json").read_text())["ep_size"] == 2


@pytest.mark.dist
def test_export_holds_every_expert_and_serves_ep1_training_and_forecasting(runs):
    from safetensors.torch import load_file

    from moe_ts.model import MoiraiMoEModel
    from pretrain.config import PretrainConfig, TrainConfig
    from pretrain.engine import build_engine, setup_distributed, train_step

    full, _ = runs
    model = MoiraiMoEModel.from_pretrained(str(full / "final"))
    ckpt = full / "checkpoints" / "step-10"
    shards = [load_file(str(ckpt / f"experts_ep{r}_of2.safetensors")) for r in (0, 1)]
    state = model.state_dict()
    for key in shards[0]:
        assert state[key].shape[0] == 4  # every expert, not one rank's two
        torch.testing.assert_close(state[key], torch.cat([shards[0][key], shards[1][key]]), rtol=0, atol=0)
    assert not torch.equal(shards[0][key], shards[1][key])

    out = model.forecast([np.sin(np.arange(40) / 3.0)], prediction_length=6, num_samples=8, seed=0)
    assert out.mean.shape == (1, 6) and np.isfinite(out.mean).all()

    run = PretrainConfig(model=model.config, train=TrainConfig(steps=2, batch_size=2, warmup_steps=0, zero_stage=1,
                                                          wandb_mode="disabled"))
    engine = build_engine(run, setup_distributed(), model=model)  # one process, ep_size 1, every expert local
    gen = torch.Generator().manual_seed(0)
    batch = {"target": torch.randn(2, 32, generator=gen).cumsum(1), "sample_id": torch.ones(2, 8, dtype=torch.long)}
    stats = train_step(engine, [batch], torch.device("cpu"))
    assert np.isfinite(stats.loss) and stats.expert_counts.shape == (2, 4)


@pytest.mark.dist
def test_resume_with_another_ep_size_or_world_size_is_one_line(runs, workdir, tmp_path, capsys):
    from pretrain.checkpoint import check_checkpoint_layout
    from pretrain.errors import CheckpointError
    from pretrain.train import main

    full, _ = runs
    other = tmp_path / "ep1.yaml"
    other.write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN, "parallel": {**PARALLEL, "ep_size": 1}}))
    with pytest.raises(SystemExit) as err:
        main(["--config", str(other), "--data", str(workdir / "corpus"), "--out", str(full), "--resume"])
    assert err.value.code == 2
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and "parallel.ep_size: saved 2, requested 1" in msg

    ckpt = full / "checkpoints" / "step-10"
    check_checkpoint_layout(ckpt, world_size=2, ep_size=2)
    with pytest.raises(CheckpointError, match="saved with world size 2 and parallel.ep_size 2, resumed with "
                                              "world size 4 and parallel.ep_size 2"):
        check_checkpoint_layout(ckpt, world_size=4, ep_size=2)
    with pytest.raises(SystemExit) as err:  # one process, the saved config: refused before any collective
        main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(full),
              "--resume"])
    msg = capsys.readouterr().err.strip()
    assert len(msg.splitlines()) == 1 and "parallel.ep_size=2 must divide the world size (1 processes)" in msg
