"""Any-variate pretraining (issue 27) end to end: a run with `train.multivariate_share` > 0 and the variate bias,
killed with SIGKILL between checkpoints, resumes to exactly the curve and weights of an uninterrupted run (the
sequential sampler, and the vectorised one with loader workers)."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

from pretrain.checkpoint import DS_TAG
from pretrain.metrics import read_metrics
from pretrain.train import main
from tests.pretrain.grouped_corpus import write_grouped_corpus
from tests.pretrain.sigkill import kill_when_flagged

pytestmark = [pytest.mark.slow, pytest.mark.dist]  # per sampler a run, a run killed mid-way and its resume: ~15 s

MODEL = {"patch_size": 4, "max_seq_len": 16, "d_model": 32, "num_layers": 1, "num_heads": 2, "variate_bias": True,
         "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
TRAIN = {"steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2,
         "keep_checkpoints": 3, "seed": 0, "wandb_mode": "disabled", "num_threads": 1,
         "multivariate_share": 0.5, "max_variates": 3}
COMPARED = ("loss", "nll", "aux", "z", "lr", "grad_norm")

# Runs pretraining and, at the 5th optimizer step (after step 4's checkpoint), writes FLAG and sleeps until killed.
BOOT = """
import sys, time
from pathlib import Path
flag, argv = sys.argv[1], sys.argv[2:]
import pretrain.trainer as trainer
real_step, calls = trainer.train_step, [0]
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 5:
        Path(flag).write_text("at step 5")
        time.sleep(600)
    return real_step(*args, **kwargs)
trainer.train_step = step
from pretrain.train import main
sys.exit(main(argv))
"""


SAMPLERS = {"sequential": {}, "vectorised": {"sampler": "vectorised", "loader_workers": 2}}


@pytest.fixture(scope="module", params=list(SAMPLERS))
def workdir(tmp_path_factory, request):
    root = tmp_path_factory.mktemp(f"any_variate_{request.param}")
    write_grouped_corpus(root / "corpus")
    (root / "run.yaml").write_text(yaml.safe_dump({"model": MODEL, "train": {**TRAIN, **SAMPLERS[request.param]}}))
    return root


def args(workdir, out, *extra):
    return ["--config", str(workdir / "run.yaml"), "--data", str(workdir / "corpus"), "--out", str(out), *extra]


def test_a_multivariate_run_killed_between_checkpoints_resumes_exactly(workdir, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    assert main(args(workdir, fresh)) == 0
    uninterrupted = [r for r in read_metrics(fresh / "metrics.jsonl") if "loss" in r]
    state = json.loads((fresh / "checkpoints" / "step-6" / "trainer_rank0.json").read_text())["sampler"]
    assert state["group_windows"] > 0 and state["fingerprint"]["multivariate_share"] == 0.5  # groups were trained on

    out, flag = tmp_path / "killed", tmp_path / "flag"
    kill_when_flagged([sys.executable, "-c", BOOT, str(flag), *args(workdir, out)], flag)
    assert (out / "checkpoints" / "latest").read_text() == "step-4"

    capsys.readouterr()
    assert main(args(workdir, out, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    by_step = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "loss" in r}  # last record per step
    assert sorted(by_step) == [r["step"] for r in uninterrupted] == list(range(1, 7))
    for ref in uninterrupted:
        for key in COMPARED:
            assert by_step[ref["step"]][key] == ref[key], (ref["step"], key)  # exactly: same batches, same state
    weights = [torch.load(run / "checkpoints" / "step-6" / DS_TAG / "mp_rank_00_model_states.pt", map_location="cpu",
                          weights_only=False)["module"] for run in (fresh, out)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    bias = weights[0]["layers.0.attn.var_bias.weight"]
    assert not torch.equal(bias, torch.zeros_like(bias))  # the variate bias is a trained weight of the run
