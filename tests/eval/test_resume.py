"""`moe-ts eval --resume` (issue 25): a real SIGINT or SIGKILL to a real evaluation after its first dataset, then
`--resume` skips that dataset and writes the same results.csv and aggregate.csv as an uninterrupted run."""
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

from eval.resume import EvalProgress, progress_dir
from eval.run import main
from eval.runner import PlotExample, TaskResult
from eval.metrics import MetricValue

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")
DATASETS = "hospital,car_parts,m4_weekly"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_checkpoint):
    root = tmp_path_factory.mktemp("resume")
    data = root / "data"
    data.mkdir()
    for name in ("expsmooth", "m4"):
        (data / name).symlink_to(DATA / name)
    checkpoint = make_checkpoint(root / "ck", seed=0)
    return root, data, checkpoint


def command(setup, out: Path, *extra: str) -> list[str]:
    _, data, checkpoint = setup
    return [sys.executable, "-m", "cli.main", "eval", "--checkpoint", str(checkpoint), "--suite", "monash",
            "--datasets", DATASETS, "--data-dir", str(data), "--max-series", "60", "--num-samples", "100",
            "--plot-series", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(setup) -> Path:
    """An uninterrupted run's output folder (a subprocess too: same threads, same numbers)."""
    out = setup[0] / "reference"
    subprocess.run(command(setup, out), cwd=REPO, env=ENV, check=True, capture_output=True, timeout=300)
    return out


def interrupted(setup, out: Path, sig: signal.Signals) -> tuple[int, str]:
    """Run, and send `sig` as soon as the second dataset starts (the first one is finished and kept)."""
    proc = subprocess.Popen(command(setup, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[monash] car_parts:"):
                proc.send_signal(sig)
                break
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + rest


@pytest.mark.slow  # three evaluations of three datasets each, in subprocesses: about 15 s apiece on 2 cores
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_a_real_signal_equals_an_uninterrupted_run(setup, reference, tmp_path, sig):
    out = tmp_path / "eval"
    code, err = interrupted(setup, out, sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    assert not out.exists()
    kept = progress_dir(out)
    assert [json.loads(p.read_text())["key"] for p in kept.glob("monash--*.json")] == ["monash/hospital"]
    if sig == signal.SIGINT:
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("moe-ts eval: interrupted (1 ")
    resumed = subprocess.run(command(setup, out, "--resume"), cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "[monash] hospital: finished by the interrupted run (--resume), 1 task(s) kept" in resumed.stderr
    assert "hospital h=12 model" not in resumed.stderr  # skipped, not recomputed
    assert "car_parts h=12 model" in resumed.stderr
    for name in ("results.csv", "aggregate.csv"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert (out / "plots" / "monash" / "hospital_h12.png").is_file()  # kept results carry their plot examples
    assert not kept.exists()  # removed once --out is written


def test_resume_with_other_options_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = command(setup, out)[4:]
    from eval.run import build_parser
    from eval.resume import eval_settings
    from moe_ts.io.provenance import weights_fingerprint

    EvalProgress(out, eval_settings(build_parser().parse_args(argv), weights_fingerprint(setup[2])), resume=False)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--resume", "--num-samples", "11"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"--resume: {progress_dir(out)} was made with other options (num_samples was 100, now 11)" in err
    assert not out.exists()


def test_a_kept_task_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    task = TaskResult("monash", "hospital", "Hospital", 12, 30, 5, 5, "full protocol", True,
                      {"model": {"MAE": MetricValue(float(rng.random()) / 3, 1), "MSE": MetricValue(np.float64(1e-300))}},
                      {"model": 0.25},
                      [PlotExample("H1", rng.random(7).astype(np.float32), rng.random(3), rng.random((3, 3)))])
    progress = EvalProgress(tmp_path / "eval", {"seed": 0}, resume=False)
    progress.record("monash", "hospital", [task])
    (progress.folder / ".tmp-half").write_text("{")  # a write a kill interrupted: ignored and removed
    back = EvalProgress(tmp_path / "eval", {"seed": 0}, resume=True).finished("monash", "hospital")
    assert back is not None and len(back) == 1
    got = back[0]
    assert got.metrics == task.metrics and got.seconds == task.seconds and got.sampling == task.sampling
    for mine, theirs in zip(got.examples, task.examples):
        for field in ("context", "truth", "quantiles"):
            assert getattr(mine, field).dtype == getattr(theirs, field).dtype
            np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field))
    assert not (progress.folder / ".tmp-half").exists()
    assert EvalProgress(tmp_path / "eval", {"seed": 0}, resume=False).finished("monash", "hospital") is None
