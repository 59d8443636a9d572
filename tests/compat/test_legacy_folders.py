"""Folders written before the issue-21 layout still load and forecast the same (tests/data/legacy/README.md)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moe_ts.io.loading import load_model
from pretrain.metrics import read_metrics
from pretrain.train import main as pretrain_main

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"
FOLDERS = LEGACY / "folders"


@pytest.mark.parametrize("kind", ["moirai_moe", "msft", "student"])
def test_a_folder_written_before_the_layout_change_forecasts_identically(kind):
    model = load_model(FOLDERS / kind)
    context = np.load(FOLDERS / "context.npy")
    if kind == "student":  # a point forecaster without missing-value handling: its recorded output is the mean
        got = model.forecast(np.nan_to_num(context, nan=10.0), 16, seed=3).mean
    elif kind == "msft":  # recorded when MSFT re-encoded every step; its KV cache equals that to rounding only
        got = model.forecast(context, 16, num_samples=8, seed=3, use_kv_cache=False).samples
    else:
        got = model.forecast(context, 16, num_samples=8, seed=3).samples
    np.testing.assert_array_equal(got, np.load(FOLDERS / f"{kind}_forecast.npy"))


def test_the_usage_snippet_of_an_old_model_card_still_runs():
    card = (FOLDERS / "student" / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("THIS_FOLDER", str(FOLDERS / "student")).replace("[context_array]", "[context]")
    context = np.nan_to_num(np.load(FOLDERS / "context.npy")[0], nan=10.0)
    with pytest.warns(FutureWarning, match="moe_ts.io.loading.load_model"):
        exec(compile(snippet, "student/README.md", "exec"), {"context": context})


def test_a_run_folder_written_before_the_layout_change_resumes_exactly(tmp_path):
    """Resumed from its step-2 checkpoint, the old run continues as an uninterrupted run of today's code does."""
    work = tmp_path / "legacy"
    shutil.copytree(LEGACY / "run", work)
    before = [m for m in read_metrics(work / "run" / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in before] == [1, 2]
    common = ["--config", str(work / "run.yaml"), "--data", str(work / "corpus")]
    assert pretrain_main([*common, "--out", str(work / "run"), "--resume"]) == 0
    assert pretrain_main([*common, "--out", str(tmp_path / "fresh")]) == 0
    resumed = [m for m in read_metrics(work / "run" / "metrics.jsonl") if "loss" in m]
    fresh = [m for m in read_metrics(tmp_path / "fresh" / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in resumed] == [m["step"] for m in fresh] == list(range(1, 7))
    assert resumed[:2] == before  # the old lines are kept as written
    for key in ("loss", "grad_norm", "lr"):
        assert [m[key] for m in resumed] == [m[key] for m in fresh], key
    assert json.loads((work / "run" / "final" / "training.json").read_text())["step"] == 6
