"""Ctrl-C in every `moe-ts` command is one line, `moe-ts COMMAND: interrupted (what was kept)`, and exit 130
(issue 25). Each case is a real subprocess that sends itself a real SIGINT (`os.kill`, Python's own handler) at
a chosen point deep inside the command: the n-th call of a function the command runs (a model forecast, a
backward pass, a weights save, ...), so the signal always lands mid-work, never before or after it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")
UNI2TS = REPO / "tests" / "data" / "uni2ts_moe_tiny"

# Runs `moe-ts ARGV` after wrapping MODULE:ATTR so that its N-th call sends SIGINT to this process.
BOOT = """
import importlib, os, signal, sys
target, after, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
module, _, attr = target.partition(":")
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original, calls = getattr(owner, name), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), signal.SIGINT)
    return original(*args, **kwargs)
setattr(owner, name, hooked)
from cli.main import main
sys.exit(main(argv))
"""


def interrupt(target: str, after: int, argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of `moe-ts ARGV` interrupted at the `after`-th call of `target`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BOOT, target, str(after), *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr


def last_line(err: str) -> str:
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]


def assert_one_line(code: int, err: str, command: str) -> str:
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    line = last_line(err)
    assert line.startswith(f"moe-ts {command}: interrupted ("), err
    return line


def _finetune_source(tmp_path: Path, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path / "source", seed=0, patch_size=16, max_seq_len=64,
                           moe=dict(num_experts=4, top_k=2, d_ff=16))


def _distill_corpus(tmp_path: Path) -> Path:
    from data_prep.corpus import write_corpus
    from data_prep.series import Series

    rng = np.random.default_rng(0)
    series = [Series(f"s{i}", (np.sin(np.arange(n) / 3.0) * 5 + 10 + rng.standard_normal(n)).astype(np.float32),
                     "h", dataset="toy") for i, n in enumerate([120, 130, 140])]
    write_corpus(series, tmp_path / "corpus")
    return tmp_path / "corpus"


def test_eval_keeps_its_finished_datasets(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    data.mkdir()
    (data / "expsmooth").symlink_to(DATA / "expsmooth")
    out = tmp_path / "eval"
    code, err = interrupt("eval.runner:evaluate_task", 2, [
        "eval", "--checkpoint", tiny_checkpoint, "--suite", "monash", "--datasets", "hospital,car_parts",
        "--data-dir", data, "--max-series", "5", "--num-samples", "4", "--plot-series", "0", "--out", out])
    line = assert_one_line(code, err, "eval")
    kept = tmp_path / ".eval.eval-progress"
    assert line == (f"moe-ts eval: interrupted (1 finished dataset(s) kept in {kept}; --out untouched; rerun with "
                    f"--resume to skip them)")
    assert not out.exists()
    assert [json.loads(p.read_text())["key"] for p in kept.glob("monash--*.json")] == ["monash/hospital"]


@pytest.mark.parametrize("command", ["forecast", "finetune", "distill", "prepare", "convert"])
def test_ctrl_c_is_one_line_and_leaves_no_output(command, tmp_path, tiny_checkpoint, make_checkpoint):
    out = tmp_path / "out"
    if command == "forecast":
        csv = tmp_path / "in.csv"
        csv.write_text("item_id,timestamp,target\n" + "".join(
            f"a,2024-01-01 {h:02d}:00,{np.sin(h / 3):.4f}\n" for h in range(24)))
        target, argv = "moe_ts.model:MoiraiMoEModel.forecast", [
            "forecast", "--checkpoint", tiny_checkpoint, "--input", csv, "--horizon", "8", "--out", tmp_path / "f.csv"]
        out = tmp_path / "f.csv"
    elif command == "finetune":
        target, argv = "torch:Tensor.backward", [
            "finetune", "--checkpoint", _finetune_source(tmp_path, make_checkpoint), "--method", "head",
            "--dataset", "etth1", "--data-dir", DATA, "--out", out, "--steps", "3", "--batch-size", "2", "--no-eval"]
    elif command == "distill":
        target, argv = "torch:Tensor.backward", [
            "distill", "--teacher", make_checkpoint(tmp_path / "teacher", seed=0, max_seq_len=8),
            "--data", _distill_corpus(tmp_path), "--context", "32", "--horizon", "16", "--out", out, "--hidden", "8",
            "--epochs", "2", "--stride", "4", "--teacher-samples", "4", "--cache-dir", tmp_path / "cache"]
    elif command == "prepare":
        data = tmp_path / "data"
        data.mkdir()
        (data / "expsmooth").symlink_to(DATA / "expsmooth")
        target, argv = "data_prep.prepare:decontaminate", [
            "prepare", "--out", out, "--data-dir", data, "--datasets", "hospital", "--max-series-per-dataset", "5",
            "--synthetic-count", "5", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]
    else:  # convert, interrupted inside the weights' save
        target, argv = "moe_ts.io.hub:save_file", ["convert", "--from", "uni2ts", UNI2TS, "--out", out]
    code, err = interrupt(target, 1, argv)
    line = assert_one_line(code, err, command)
    assert "untouched" in line
    assert not out.exists()
    if command == "distill":  # interrupted while the student trains: the teacher's forecasts are kept
        assert line.startswith(f"moe-ts distill: interrupted (the teacher's outputs are kept in {tmp_path / 'cache'}")
        assert list((tmp_path / "cache").glob("teacher-*.npz"))
    if command == "finetune":  # interrupted at its first step, before any validation step
        assert line == "moe-ts finetune: interrupted (no step finished, nothing kept; --out untouched)"
