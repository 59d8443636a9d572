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
    else:
        got = model.forecast(context, 16, num_samples=8, seed=3).samples
    np.testing.assert_array_equal(got, np.load(FOLDERS / f"{kind}_forecast.npy"))


def test_a_run_folder_written_before_the_layout_change_resumes_to_its_end(tmp_path):
    work = tmp_path / "legacy"
    shutil.copytree(LEGACY / "run", work)
    before = read_metrics(work / "run" / "metrics.jsonl")
    assert [m["step"] for m in before if "loss" in m][-1] == 2
    pretrain_main(["--config", str(work / "run.yaml"), "--data", str(work / "corpus"), "--out", str(work / "run"),
                   "--resume"])
    after = [m for m in read_metrics(work / "run" / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in after] == list(range(1, 7))
    assert [m["loss"] for m in after[:2]] == [m["loss"] for m in before if "loss" in m][:2]
    assert json.loads((work / "run" / "final" / "training.json").read_text())["step"] == 6
