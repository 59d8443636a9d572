"""Periodic validation suite: its windows stay out of every test span, Seasonal Naive's MASE matches a hand
computation, and `moe-ts eval` reports it alone and beside the probes."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from data_prep import registry
from eval.baselines import SeasonalNaive
from eval.periodic_suite import PERIODIC_SETS, periodic_task, run_periodic, window_starts
from eval.probes import PROBE_NAMES
from eval.run import main
from eval.runner import EvalConfig, SNAIVE


def _read(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("pset", PERIODIC_SETS, ids=lambda s: s.name)
def test_windows_never_reach_a_test_span(pset):
    """Every target of every window ends at or before its series' test span; LSF sets' targets lie in the
    validation split. Shipped sets are checked on their real series, the others on a range of lengths."""
    if registry.available(pset.name):
        series = registry.load_series(pset.name)
        task = periodic_task(pset, series, n_series=len(series), windows=5)
        assert len(task) > 0
        pairs = [(len(task.values[s]), int(t)) for s, t in zip(task.series_index, task.starts)]
    else:
        lengths = [1000, 5000, 20000] if pset.split == "before_test" else [17420]
        pairs = [(n, int(t)) for n in lengths for t in window_starts(pset, n, 5)]
    for length, start in pairs:
        test_start = registry.test_span(pset.name, length)[0]
        assert start + pset.horizon <= test_start, (pset.name, length, start)
        assert start >= 2 * pset.period
        if pset.split == "lsf_val":
            lo, hi = registry.lsf_val_span(pset.name, length)
            assert lo <= start and start + pset.horizon <= hi


def test_before_test_windows_are_the_last_ones_before_the_test_window():
    pset = next(s for s in PERIODIC_SETS if s.name == "m4_hourly")
    # M4 Hourly's test span is the last 48 points: three windows of 48 before it
    np.testing.assert_array_equal(window_starts(pset, 1008, 3), [816, 864, 912])



def test_windows_keep_two_cycles_of_context_or_none_fit():
    """A window starting inside the first two cycles (no seasonal context for MASE's scale) is dropped; a series
    with no window left is one error naming the set."""
    pset = next(s for s in PERIODIC_SETS if s.name == "m4_hourly")  # period 24, horizon 48, test = last 48
    # 288 points: the test span starts at 240; windows of 48 before it start at 192, 144, 96, 48 and 0: the one at 0
    # has no context, 48 has exactly two cycles
    np.testing.assert_array_equal(window_starts(pset, 288, 5), [48, 96, 144, 192])
    with pytest.raises(ValueError, match="m4_hourly: a series of 120 points has no room"):
        window_starts(pset, 120, 2)

def test_seasonal_naive_mase_matches_a_hand_computation():
    """ETTh1's first channel: Seasonal Naive repeats the last 24 context points; MASE scale = mean |z[t] - z[t-24]|
    over everything before the window (no reuse of the suite's helpers)."""
    res = run_periodic(SeasonalNaive(), EvalConfig(plot_series=0), n_series=1, windows=3, names=("etth1",), log=None)
    got = res.tasks[0].metrics[SNAIVE]["MASE"].value
    y = np.asarray(registry.load_series("etth1", max_series=1)[0].target, np.float64)
    lo, hi = 8640, 11520  # ETTh1 validation split: months 12-16 of 30 x 24 h
    mases = []
    for start in np.linspace(lo, hi - 48, 3).round().astype(int):
        ctx = y[start - 512:start].astype(np.float32).astype(np.float64)
        forecast = np.tile(ctx[-24:], 2)
        scale = np.abs(y[24:start] - y[:start - 24]).mean()
        mases.append(np.abs(y[start:start + 48] - forecast).mean() / scale)
    assert got == pytest.approx(np.mean(mases), rel=1e-6)


def test_cli_reports_the_suite_alone_and_beside_the_probes(tmp_path, make_checkpoint):
    out = tmp_path / "periodic"
    assert main(["--checkpoint", "seasonal_naive", "--suite", "periodic", "--out", str(out), "--periodic-series", "2",
                 "--plot-series", "0", "--datasets", "m4_hourly,etth2"]) == 0
    rows = {r["set"]: r for r in _read(out / "periodic.csv")}
    assert set(rows) == {"m4_hourly", "etth2"}
    assert all(float(r["model_vs_snaive"]) == pytest.approx(1.0) for r in rows.values())
    assert float(rows["m4_hourly"]["MASE_naive"]) > float(rows["m4_hourly"]["MASE_seasonal_naive"])
    assert "periodic, seasonal_naive:" in (out / "periodic.md").read_text()

    ckpt = make_checkpoint(tmp_path / "tiny", seed=0, d_model=32, num_layers=1, num_heads=4,
                           moe=dict(num_experts=4, top_k=2, d_ff=24))
    both = tmp_path / "both"
    assert main(["--checkpoint", str(ckpt), "--suite", "probes", "--out", str(both), "--probe-series", "1",
                 "--periodic-series", "1", "--num-samples", "4", "--context-length", "400", "--plot-series", "0"]) == 0
    assert [r["probe"] for r in _read(both / "probes.csv")] == list(PROBE_NAMES)
    periodic = _read(both / "periodic.csv")
    assert {r["set"] for r in periodic} >= {"m4_hourly", "nn5_daily", "etth1", "etth2"}
    assert all(float(r["MASE_model"]) > 0 for r in periodic)
    suites = {r["suite"] for r in _read(both / "results.csv")}
    assert suites == {"probes", "periodic"}


def test_cli_names_a_set_outside_the_suite(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", "seasonal_naive", "--suite", "periodic", "--out", str(tmp_path / "o"),
              "--datasets", "etth1,m1_yearly"])
    assert "--datasets m1_yearly: not in the periodic suite" in capsys.readouterr().err
