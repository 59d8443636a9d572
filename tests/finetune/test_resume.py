"""`moe-ts finetune --resume` (issue 25): a real subprocess stopped by a real SIGINT or SIGKILL it sends itself in
the middle of a training step (the 8th backward pass; the state was kept at the step-6 validation), then
`--resume` continues from step 6 and writes the same weights and validation history as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli.main import main
from moe_ts.io.kept_state import progress_dir

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "ett" / "ETTh1.csv").is_file() else Path("/work/shared/data")

# Runs `moe-ts ARGV`, sending itself SIG at the AFTER-th call of torch.Tensor.backward.
BOOT = """
import os, sys, torch
sig, after, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real, calls = torch.Tensor.backward, [0]
def backward(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), sig)
    return real(self, *args, **kwargs)
torch.Tensor.backward = backward
from cli.main import main
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ft") / "source", seed=0, patch_size=16, max_seq_len=64,
                           moe=dict(num_experts=4, top_k=2, d_ff=16))


def argv(source: Path, out: Path) -> list[str]:
    return ["finetune", "--checkpoint", str(source), "--method", "head", "--dataset", "etth1", "--data-dir", str(DATA),
            "--out", str(out), "--steps", "10", "--eval-every", "3", "--patience", "10", "--batch-size", "2",
            "--window", "256", "--no-eval"]


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft_ref") / "ft"
    assert main(argv(source, out)) == 0
    return out


def _history(out: Path) -> list[dict]:
    return json.loads((out / "finetune.json").read_text())["result"]["history"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_finetune_resumes_exactly(source, reference, tmp_path, sig, capsys):
    out = tmp_path / "ft"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BOOT, str(int(sig)), "8", *argv(source, out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    kept = progress_dir(out, "finetune")
    if sig == signal.SIGINT:
        assert proc.returncode == 130, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"moe-ts finetune: interrupted (the state at step 6 is kept in {kept}; --out untouched; rerun with "
            f"--resume to continue from it)")
    else:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and (kept / "state.pt").is_file()
    capsys.readouterr()
    assert main([*argv(source, out), "--resume"]) == 0
    assert f"resumed at step 6 from {kept}" in capsys.readouterr().out
    assert _history(out) == _history(reference)
    mine, theirs = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not kept.exists()


def test_resume_with_other_options_is_one_line(source, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main([*argv(source, out), "--steps", "3"]) == 0  # a finished run leaves nothing to resume ...
    assert not progress_dir(out, "finetune").exists()
    from finetune.run import build_parser, _progress

    _progress(build_parser().parse_args(argv(source, tmp_path / "other")[1:]))  # ... a started one does
    capsys.readouterr()
    assert main([*argv(source, tmp_path / "other"), "--resume", "--lr", "0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was made with other options (lr was 0.001, now 0.01)" in err, err
