"""Ctrl-C / SIGTERM in `moe-ts pretrain` (issue 25): a real signal to a real process checkpoints at the next step
boundary, exits with one line, and `--resume` continues exactly as an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pretrain.metrics import read_metrics
from pretrain.train import main

REPO = Path(__file__).resolve().parents[2]
MODEL = {"patch_size": 4, "max_seq_len": 8, "d_model": 32, "num_layers": 1, "num_heads": 2,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
STEPS = 400  # enough that the run is still going when the signal arrives; the tail is run by --resume only
TRAIN = {"steps": STEPS, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 1000,
         "keep_checkpoints": 2, "seed": 0, "wandb_mode": "disabled", "num_threads": 1}
COMPARED = ("loss", "nll", "aux", "z", "lr", "grad_norm")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_corpus):
    root = tmp_path_factory.mktemp("interrupt")
    shutil.copytree(small_corpus, root / "corpus")
    (root / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": TRAIN}))
    return root


def steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    try:
        return max([r["step"] for r in read_metrics(path) if "loss" in r], default=0)
    except ValueError:  # a line being written
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_at_the_next_step_and_resume_is_exact(workdir, sig, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pretrain.train", "--config", str(workdir / "run.yaml"), "--data",
           str(workdir / "corpus"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and steps_logged(out) < 3:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
    stopped = steps_logged(out)
    assert 3 <= stopped < STEPS
    assert last == (f"pretrain: interrupted by {signal.Signals(sig).name} at step {stopped} of {STEPS}: saved "
                    f"{out / 'checkpoints' / f'step-{stopped}'} (no final model); continue with --resume")
    assert (out / "checkpoints" / "latest").read_text() == f"step-{stopped}"
    assert not (out / "final").exists()
    # resume to a few steps past the stop, and compare with an uninterrupted run over the same steps
    target = stopped + 3
    assert main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(out),
                 "--resume", "--stop-at", str(target)]) == 0
    fresh = tmp_path / "fresh"
    assert main(["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(fresh),
                 "--stop-at", str(target)]) == 0
    resumed = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    reference = [r for r in read_metrics(fresh / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(1, target + 1))
    for a, b in zip(reference, resumed):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=1e-6), (a["step"], key)


def test_the_first_signal_is_noted_and_the_second_interrupts_at_once():
    from pretrain.interrupt import StopSignals

    previous = signal.getsignal(signal.SIGTERM)
    signals = StopSignals().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert signals.caught and signals.name() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) is previous
