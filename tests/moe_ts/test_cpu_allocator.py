"""moe_ts/cpu_allocator.py: freed blocks of training-step sizes are reused without page faults once tuned,
and the user's own settings or opt-out are left alone. Each arm runs in a fresh interpreter: mallopt is
process-wide and cannot be undone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moe_ts import cpu_allocator

ROOT = Path(__file__).resolve().parents[2]
# One forward + backward of the small config's layers (d_model 384, 32 experts; 2 of its 6 layers) on 8 x 128 patches: its
# 25 MB stacked expert gradients and activations are allocated and freed every step.
PROBE = """
import json, resource, sys, torch
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.cpu_allocator import tune_cpu_allocator
from moe_ts.model import MoiraiMoEModel
from moe_ts.objectives import pretrain_loss
said = tune_cpu_allocator() if sys.argv[1] == "tune" else "untouched"
torch.manual_seed(0)
torch.set_num_threads(1)
model = MoiraiMoEModel(ModelConfig(d_model=384, num_layers=2, num_heads=6, moe=MoEConfig(num_experts=32, d_ff=512)))
series_bl = torch.randn(8, 128 * 16).cumsum(dim=1)
def step():
    pretrain_loss(model, series_bl, torch.ones(8, 128, dtype=torch.long)).loss.backward()
    model.zero_grad(set_to_none=True)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    step()
print(json.dumps({"said": said, "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in cpu_allocator.USER_SETTINGS + (cpu_allocator.OPT_OUT, "LD_PRELOAD", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=clean | env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only (Linux)")
def test_tuned_allocator_keeps_a_training_steps_memory_instead_of_faulting_it_in_again():
    untouched = _probe("untouched")
    tuned = _probe("tune")
    opted_out = _probe("tune", MOE_TS_CPU_ALLOCATOR="default")
    # 100 MB of fresh pages per round is ~25,000 faults of 4 kB; reused heap memory faults almost never.
    # Measured: ~35,000 page faults per step untouched (about 140 MB of fresh pages), ~1,800 tuned.
    assert tuned["said"] == "tuned"
    assert tuned["faults_per_step"] < 0.1 * untouched["faults_per_step"], (tuned, untouched)
    assert opted_out["said"] == f"left as is ({cpu_allocator.OPT_OUT}=default)"
    assert opted_out["faults_per_step"] > 0.5 * untouched["faults_per_step"], (opted_out, untouched)


@pytest.mark.parametrize("env, why", [({"MALLOC_TRIM_THRESHOLD_": "0"}, "the user's MALLOC_TRIM_THRESHOLD_"),
                                      ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
                                       "the user's GLIBC_TUNABLES glibc.malloc.*"),
                                      ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "an allocator is preloaded")])
def test_users_own_allocator_settings_are_left_alone(monkeypatch, env, why):
    called = []
    monkeypatch.setattr(cpu_allocator.ctypes, "CDLL", lambda *a: called.append(a))
    for name in cpu_allocator.USER_SETTINGS + (cpu_allocator.OPT_OUT, "LD_PRELOAD", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cpu_allocator.tune_cpu_allocator() == f"left as is ({why})"
    assert not called


def test_a_glibc_tunable_of_another_subsystem_does_not_opt_out(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    monkeypatch.setattr(cpu_allocator.ctypes, "CDLL", lambda *a: (_ for _ in ()).throw(OSError("no libc here")))
    assert cpu_allocator.tune_cpu_allocator() == "left as is (no C library found)"


def test_the_training_commands_tune_the_allocator_and_the_others_do_not(monkeypatch):
    from cli import main as cli_main

    calls = []
    monkeypatch.setattr(cli_main, "tune_cpu_allocator", lambda: calls.append(1) or "tuned")
    for command in ("pretrain", "finetune", "distill", "eval", "forecast", "prepare"):
        calls.clear()
        assert cli_main.main([command, "--help"]) == 0
        assert calls == ([1] if command in ("pretrain", "finetune", "distill") else []), command


def test_an_unknown_opt_out_value_is_one_line(monkeypatch, capsys):
    from cli import main as cli_main

    monkeypatch.setenv("MOE_TS_CPU_ALLOCATOR", "off")
    assert cli_main.main(["pretrain", "--help"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "moe-ts pretrain: error: MOE_TS_CPU_ALLOCATOR='off': expected 'tuned' or 'default'"
