"""`moe-ts distill --resume` (issue 25): a real subprocess stopped by a real SIGINT or SIGKILL it sends itself
while validating its third epoch (two epochs kept), then `--resume` continues after epoch 2 and writes the same
student and history as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli.main import main
from moe_ts.io.kept_state import progress_dir

REPO = Path(__file__).resolve().parents[2]

# Runs `moe-ts ARGV`, sending itself SIG at the AFTER-th call of distill.train.validation_mse (once per epoch).
BOOT = """
import os, sys
import distill.train as train
sig, after, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real, calls = train.validation_mse, [0]
def validation_mse(*args, **kwargs):
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), sig)
    return real(*args, **kwargs)
train.validation_mse = validation_mse
from cli.main import main
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, make_checkpoint) -> tuple[Path, Path]:
    from data_prep.corpus import write_corpus
    from data_prep.series import Series

    root = tmp_path_factory.mktemp("distill_resume")
    rng = np.random.default_rng(0)
    series = [Series(f"s{i}", (np.sin(np.arange(n) / 3.0) * 5 + 10 + rng.standard_normal(n)).astype(np.float32),
                     "h", dataset="toy") for i, n in enumerate([120, 130, 140])]
    write_corpus(series, root / "corpus")
    return make_checkpoint(root / "teacher", seed=0, max_seq_len=8), root / "corpus"


def argv(inputs, out: Path, cache: Path) -> list[str]:
    teacher, corpus = inputs
    return ["distill", "--teacher", str(teacher), "--data", str(corpus), "--context", "32", "--horizon", "16",
            "--out", str(out), "--hidden", "8", "--epochs", "5", "--patience", "5", "--stride", "4",
            "--teacher-samples", "4", "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill_ref")
    assert main(argv(inputs, root / "student", root / "cache")) == 0
    return root / "student"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_distill_resumes_exactly(inputs, reference, tmp_path, sig, capsys):
    out, cache = tmp_path / "student", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BOOT, str(int(sig)), "3", *argv(inputs, out, cache)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    kept = progress_dir(out, "distill")
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"moe-ts distill: interrupted (the teacher's outputs are kept in {cache}, a rerun reads them; the "
            f"student after epoch 2 is kept in {kept}, rerun with --resume to continue from it; --out untouched)")
    else:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and (kept / "state.pt").is_file()
    capsys.readouterr()
    assert main([*argv(inputs, out, cache), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resumed after epoch 2 from {kept}" in err and "teacher outputs read from" in err
    history = [json.loads((d / "distill.json").read_text())["history"] for d in (out, reference)]
    assert history[0] == history[1] and len(history[0]) == 5
    mine, theirs = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not kept.exists()


def test_resume_with_another_teacher_setting_is_one_line(inputs, tmp_path, capsys):
    out, cache = tmp_path / "student", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", BOOT, str(int(signal.SIGKILL)), "2", *argv(inputs, out, cache)], cwd=REPO,
                   env=env, capture_output=True, timeout=300)
    capsys.readouterr()
    assert main([*argv(inputs, out, cache), "--resume", "--teacher-samples", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was made with other options (teacher_samples was 4, now 5)" in err[0], err
