"""benchmarks/gpu_check.py on a machine without CUDA: it refuses in one line, shows its plan, and its sections run
end to end at toy sizes (--smoke), so the script that proves the GPU path is itself proven before a GPU is lent."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_refuses_in_one_line(tmp_path):
    proc = _run("--out", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no CUDA device" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.json").exists()


def test_dry_run_prints_every_section_of_the_plan():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    for name in ("tests", "moe_layer", "train_step", "forecast", "kernels"):
        assert f"  {name} " in proc.stdout
    budgets = [int(line.split("~")[1].split()[0]) for line in proc.stdout.splitlines() if "~" in line]
    assert sum(budgets) <= 8 * 60  # the plan fits the 8 minutes on one H100


def test_mfu_and_peak_lookup():
    gc = _module()
    assert gc.peak_flops("NVIDIA H100 80GB HBM3", None) == 989e12
    assert gc.peak_flops("NVIDIA H100 PCIe", None) == 756e12
    assert gc.peak_flops("Some GPU", None) is None and gc.peak_flops("Some GPU", 100.0) == 100e12
    # 6 · 1e8 active parameters · 5e5 patches/s = 3e14 FLOP/s of a 1e15 peak
    assert gc.mfu(6 * 1e8, 5e5, 1e15) == pytest.approx(0.3)


def test_smoke_runs_every_section_and_writes_json_and_markdown(tmp_path):
    gc = _module()
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert gc.main(["--smoke", "--out", str(out), "--md", str(md), "--dispatchers", "torch", "triton"]) == 0
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert set(sections) == {"moe_layer", "train_step", "forecast", "kernels"}
    assert all(s["ok"] for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    train = sections["train_step"]["rows"]
    assert [r["checkpointing"] for r in train] == [False, True] and all(r["patches_per_s"] > 0 for r in train)
    assert [r["layer_forwards_per_step"] for r in train] == [1, 2]  # checkpointed layers recompute in backward
    assert all(r["max_rel_err"] <= r["bound"] for r in sections["kernels"]["rows"])
    assert {r["horizon"] for r in sections["forecast"]["rows"]} == {16, 32}
    table = md.read_text()
    assert "| moe: triton |" in table and "checkpointing on" in table and "| h=32, S=20 |" in table
