"""`moe-ts eval --suite lsf --lsf-mode multivariate` (issue 27): all channels of a window forecast as one group,
scored per channel as in the per-channel mode."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.series import Series
from eval.multivariate import GroupForecaster
from eval.protocols import lsf_tasks
from eval.run import main
from eval.runner import MODEL, EvalConfig, evaluate_task
from moe_ts.forecast_output import ForecastOutput

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "ett").is_dir() else Path("/work/shared/data")


def channels(n: int = 400, c: int = 3) -> list[Series]:
    t = np.arange(n)
    return [Series(item_id=f"c{i}", target=np.sin(t / (3 + i)) * (i + 1) + 0.01 * t, freq="h") for i in range(c)]


def tasks(series: list[Series], multivariate: bool, horizon: int = 24):
    return lsf_tasks("toy", "Toy", series, (horizon,), 200, (300, 400), 24, context_length=64, stride=10,
                     multivariate=multivariate)[0]


def test_multivariate_tasks_hold_the_per_channel_instances_window_by_window():
    per, multi = tasks(channels(), False), tasks(channels(), True)
    assert multi.group_size == 3 and per.group_size == 1
    assert sorted(zip(per.series_index.tolist(), per.starts.tolist())) == \
        sorted(zip(multi.series_index.tolist(), multi.starts.tolist()))
    starts = list(range(300, 400 - 24 + 1, 10))
    assert multi.series_index.tolist() == [0, 1, 2] * len(starts)
    assert multi.starts.tolist() == [s for s in starts for _ in range(3)]
    assert multi.display_name == "Toy"


def test_a_window_with_an_undefined_channel_is_dropped_for_every_channel():
    series = channels()
    series[1].target[300:324] = np.nan  # channel 1 has no truth at start 300 (horizon 24)
    per, multi = tasks(series, False), tasks(series, True)
    assert len(per) == 3 * 8 - 1
    assert len(multi) == 3 * 7 and 300 not in multi.starts.tolist()
    assert "1 windows with an undefined channel" in multi.sampling.describe()


class RecordingGroups:
    """A stand-in model: `forecast_group` records each group and forecasts every channel's last value."""

    def __init__(self) -> None:
        self.groups: list[list[np.ndarray]] = []

    def forecast_group(self, group, prediction_length, num_samples, quantile_levels, seed=None, **kwargs):
        self.groups.append([np.asarray(g) for g in group])
        last = np.stack([g[-1] for g in group])[:, None, None]
        samples = np.broadcast_to(last, (len(group), num_samples, prediction_length)).astype(np.float32)
        return ForecastOutput.from_samples(samples.copy(), tuple(quantile_levels))

    def forecast(self, contexts, prediction_length, num_samples=1, quantile_levels=(), **kwargs):  # per channel
        return self.forecast_group(contexts, prediction_length, num_samples, quantile_levels)


def test_the_runner_hands_the_model_each_window_as_one_group_and_scores_per_channel():
    multi, per = tasks(channels(), True), tasks(channels(), False)
    model = RecordingGroups()
    cfg = EvalConfig(num_samples=2, chunk_size=5, plot_series=0)  # 5 is not a multiple of 3: rounded to 3
    got = evaluate_task(multi, {MODEL: model}, cfg)
    assert len(model.groups) == len(multi) // 3 and all(len(g) == 3 for g in model.groups)
    values = multi.values
    for group, start in zip(model.groups, sorted(set(multi.starts.tolist()))):
        for ch in range(3):  # the window's contexts, cut by hand
            np.testing.assert_array_equal(group[ch], values[ch][start - 64:start].astype(np.float32))
    ref = evaluate_task(per, {MODEL: RecordingGroups()}, cfg)
    for metric in ("MSE", "MAE"):
        assert got.metrics[MODEL][metric].value == pytest.approx(ref.metrics[MODEL][metric].value, rel=1e-9)


def test_group_forecaster_refuses_what_does_not_apply():
    with pytest.raises(ValueError, match="needs a Moirai-MoE model"):
        GroupForecaster(object(), 3)
    wrapped = GroupForecaster(RecordingGroups(), 3)
    with pytest.raises(ValueError, match="patches_per_step does not apply"):
        wrapped.forecast([np.zeros(8)] * 3, 4, num_samples=1, quantile_levels=(0.5,), patches_per_step=2)
    with pytest.raises(ValueError, match="not whole groups of 3"):
        wrapped.forecast([np.zeros(8)] * 4, 4, num_samples=1, quantile_levels=(0.5,))


def test_cli_multivariate_mode_end_to_end(tmp_path, capsys):
    from moe_ts.config import ModelConfig, MoEConfig
    from moe_ts.model import MoiraiMoEModel

    data = tmp_path / "data"
    data.mkdir()
    (data / "ett").symlink_to(DATA / "ett")
    torch.manual_seed(0)
    model = MoiraiMoEModel(ModelConfig(patch_size=16, max_seq_len=64, d_model=32, num_layers=1, num_heads=2,
                                       variate_bias=True, moe=MoEConfig(num_experts=4, top_k=2, d_ff=32)))
    model.save_pretrained(tmp_path / "model")
    args = ["--checkpoint", str(tmp_path / "model"), "--suite", "lsf", "--datasets", "etth1", "--data-dir",
            str(data), "--max-series", "3", "--max-windows", "2", "--num-samples", "4", "--plot-series", "0",
            "--lsf-mode", "multivariate"]
    main(args + ["--out", str(tmp_path / "out")])
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok" and r["role"] == MODEL and r["metric"] == "MSE"]
    assert sorted(int(r["horizon"]) for r in rows) == [96, 192, 336, 720]
    assert all(int(r["num_instances"]) == 6 and np.isfinite(float(r["value"])) for r in rows)
    assert "LSF mode multivariate" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--suite", "monash", "--lsf-mode", "multivariate", "--out",
              str(tmp_path / "o2")])
    assert "--lsf-mode multivariate applies to --suite lsf" in capsys.readouterr().err
