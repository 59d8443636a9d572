"""Zero-shot runner end to end on small real datasets, with the baselines as the "model"."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest

from data_prep.series import Series
from data_prep import registry
from eval.protocols import Task, TaskOptions, build_tasks, last_window_task, lsf_starts, lsf_tasks
from eval.run import main
from eval.runner import MODEL, NAIVE, SNAIVE, EvalConfig, evaluate_task
from moe_ts.forecast_output import ForecastOutput

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")
M1_TSF = next(p for p in (REPO / "data" / "monash_tsf" / "m1_yearly_dataset.tsf",
                          Path("/work/shared/data/monash_tsf/m1_yearly_dataset.tsf")) if p.exists())


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A data folder holding only hospital/car parts (expsmooth) and ETT: every other non-wheel set is missing."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "expsmooth").symlink_to(DATA / "expsmooth")
    (d / "ett").symlink_to(DATA / "ett")
    return d


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _aggregate(path: Path, suite: str, metric: str, role: str) -> float:
    for row in _read_csv(path):
        if (row["suite"], row["metric"], row["role"]) == (suite, metric, role):
            return float(row["geomean_relative_to_seasonal_naive"])
    raise AssertionError(f"no aggregate row for {suite} {metric} {role}")


def test_monash_cli_seasonal_naive_vs_itself(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:  # asked for by name and missing: results written, exit 1
        main(["--checkpoint", "seasonal_naive", "--suite", "monash", "--datasets", "m1_monthly,hospital,cif_2016",
              "--data-dir", str(data_dir), "--max-series", "6", "--out", str(out)])
    printed = capsys.readouterr()
    assert exit_.value.code == 1 and "requested dataset(s) missing: cif_2016" in printed.err
    for name in ("results.csv", "results.md", "aggregate.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "plots" / "monash" / "hospital_h12.png").stat().st_size > 1000
    assert (out / "plots" / "monash" / "m1_monthly_h18.png").exists()
    # the same forecaster run twice (as the model and as the reference) gives a ratio of exactly 1
    assert _aggregate(out / "aggregate.csv", "monash", "MAE", MODEL) == 1.0
    assert _aggregate(out / "aggregate.csv", "monash", "MAE", NAIVE) != pytest.approx(1.0, abs=1e-3)
    rows = _read_csv(out / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["dataset"] for r in ok} == {"m1_monthly", "hospital"}
    assert {r["role"] for r in ok} == {MODEL, SNAIVE, NAIVE}
    mae = {(r["dataset"], r["role"]): float(r["value"]) for r in ok if r["metric"] == "MAE"}
    assert mae[("hospital", MODEL)] == mae[("hospital", SNAIVE)] != mae[("hospital", NAIVE)]
    assert all("SUBSAMPLED: 6 of" in r["sampling"] for r in ok)
    missing = [r for r in rows if r["status"] == "missing"]
    assert [r["dataset"] for r in missing] == ["cif_2016"]
    assert missing[0]["message"].startswith("missing: put monash_tsf/cif_2016_dataset.tsf under")
    md = (out / "results.md").read_text()
    assert "missing: put monash_tsf/cif_2016_dataset.tsf under " + str(data_dir) in md
    assert "1 of 3 dataset(s) missing, excluded from the aggregate: cif_2016" in md
    assert "SUBSAMPLE" in md
    assert "| Hospital* | 12 | 6 | 6 |" in md
    assert "# Zero-shot evaluation: seasonal_naive" in printed.out


def test_naive_model_differs_from_seasonal_naive_and_full_protocol_is_unmarked(tmp_path, data_dir):
    out = tmp_path / "out"
    main(["--checkpoint", "naive", "--suite", "monash", "--datasets", "hospital", "--data-dir", str(data_dir),
          "--out", str(out), "--plot-series", "0"])
    rel = _aggregate(out / "aggregate.csv", "monash", "MAE", MODEL)
    assert rel == _aggregate(out / "aggregate.csv", "monash", "MAE", NAIVE)
    assert rel != pytest.approx(1.0, abs=1e-3)
    rows = [r for r in _read_csv(out / "results.csv") if r["metric"] == "MAE"]
    assert {r["sampling"] for r in rows} == {"full protocol"}
    assert {int(r["num_instances"]) for r in rows} == {767}
    assert not (out / "plots").exists()
    assert "SUBSAMPLE" not in (out / "results.md").read_text()


def test_lsf_cli_subsampling_is_recorded(tmp_path, data_dir):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):  # exchange_rate was asked for and is missing
        main(["--checkpoint", "seasonal_naive", "--suite", "lsf", "--datasets", "etth1,exchange_rate", "--data-dir",
              str(data_dir), "--max-series", "2", "--max-windows", "5", "--lsf-stride", "7", "--out", str(out),
              "--plot-series", "1"])
    rows = _read_csv(out / "results.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted({int(r["horizon"]) for r in ok}) == [96, 192, 336, 720]
    assert {r["metric"] for r in ok} >= {"MSE", "MAE"} and "MASE" not in {r["metric"] for r in ok}
    h96 = next(r for r in ok if r["horizon"] == "96")
    assert h96["sampling"] == "SUBSAMPLED: 2 of 7 series, stride 7 (protocol 1), 10 of 5570 windows"
    assert int(h96["num_instances"]) == 10
    assert [r["dataset"] for r in rows if r["status"] == "missing"] == ["exchange_rate"]
    assert _aggregate(out / "aggregate.csv", "lsf", "MSE", MODEL) == 1.0
    assert (out / "plots" / "lsf" / "etth1_h720.png").exists()
    md = (out / "results.md").read_text()
    assert "| ETTh1* | mean |" in md


def test_tsf_cli_uses_the_file_horizon(tmp_path, capsys):
    out = tmp_path / "out"
    main(["--checkpoint", "seasonal_naive", "--tsf", str(M1_TSF), "--out", str(out), "--max-series", "4"])
    ok = [r for r in _read_csv(out / "results.csv") if r["status"] == "ok"]
    assert {r["horizon"] for r in ok} == {"6"}
    assert {r["dataset"] for r in ok} == {"m1_yearly_dataset"}
    assert "m1_yearly_dataset.tsf" in capsys.readouterr().out


def test_tsf_without_horizon_and_bad_horizon_fail_clearly(tmp_path, capsys):
    text = M1_TSF.read_text(encoding="utf-8", errors="replace")
    no_h = tmp_path / "no_horizon.tsf"
    no_h.write_text("\n".join(line for line in text.splitlines() if not line.startswith("@horizon")) + "\n")
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--tsf", str(no_h), "--out", str(tmp_path / "o")])
    assert "no @horizon line; pass --horizon" in capsys.readouterr().err
    main(["--checkpoint", "naive", "--tsf", str(no_h), "--horizon", "3", "--out", str(tmp_path / "o2"),
          "--max-series", "2", "--plot-series", "0"])
    assert {r["horizon"] for r in _read_csv(tmp_path / "o2" / "results.csv")} == {"3"}
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--tsf", str(M1_TSF), "--horizon", "0", "--out", str(tmp_path / "o3")])
    assert "must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "nope"), "--tsf", str(M1_TSF), "--out", str(tmp_path / "o4")])
    assert "not a folder" in capsys.readouterr().err


def test_last_window_task_matches_registry_test_span(data_dir):
    spec = registry.get_spec("hospital")
    series = registry.load_series(spec, data_dir)[:3]
    task = last_window_task(spec.name, series, spec.prediction_length, 3, 20, spec.seasonality, "monash")
    assert len(task) == 9
    for k, s in enumerate(series):
        mine = task.starts[task.series_index == k]
        span = registry.test_span(spec, len(s))  # one window per the registry; three here, each h long
        assert mine[-1] == span[0]
        assert list(np.diff(mine)) == [12, 12]
    idx = np.arange(len(task))
    ctx, truth = task.contexts(idx), task.truth(idx)
    assert all(len(c) == 20 for c in ctx)
    assert truth.shape == (9, 12)
    np.testing.assert_array_equal(truth[2], series[0].target[-12:])
    np.testing.assert_array_equal(ctx[2], series[0].target[-32:-12])


def test_lsf_windows_and_train_normalisation(data_dir):
    spec = registry.get_spec("etth1")
    series = registry.load_series(spec, data_dir)[:1]
    n = len(series[0])
    tasks = lsf_tasks(spec.name, spec.display_name, series, (96, 720), registry.lsf_train_end(spec, n),
                      registry.test_span(spec, n), spec.seasonality, context_length=512)
    assert [len(t) for t in tasks] == [2880 - 96 + 1, 2880 - 720 + 1]
    train = series[0].target[:8640].astype(np.float64)
    z = tasks[0].values[0][:8640]
    assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0)
    first = tasks[0].truth(np.array([0]))[0]
    np.testing.assert_allclose(first, (series[0].target[11520:11616] - train.mean()) / train.std(), rtol=1e-6)
    assert len(tasks[0].contexts(np.array([0]))[0]) == 512
    starts, total = lsf_starts(100, 200, 10, 3, 4)
    # stride 3 gives 100, 103, ..., 190 (31 starts); 4 evenly spaced of them: k = 0, 10, 20, 30
    assert total == 91 and list(starts) == [100, 130, 160, 190]


def test_lsf_validation_split_keeps_targets_out_of_the_test_split(data_dir):
    val = build_tasks("etth1", "lsf", data_dir, TaskOptions(lsf_split="val", lsf_stride=96))
    test = build_tasks("etth1", "lsf", data_dir, TaskOptions(lsf_stride=96))
    for v, t in zip(val, test):
        assert v.display_name == "ETTh1 [val]" and t.display_name == "ETTh1"
        ends = v.starts + v.horizon
        assert v.starts.min() == 8640 and ends.max() <= 11520  # months 12-16: after train, before test
        assert t.starts.min() == 11520
        np.testing.assert_array_equal(v.values[0], t.values[0])  # both normalised with the training split
    assert len(val[0]) == 7 * len(range(8640, 11520 - 96 + 1, 96))
    with pytest.raises(ValueError, match="LSF split must be one of"):
        build_tasks("etth1", "lsf", data_dir, TaskOptions(lsf_split="train"))


def test_lsf_split_flag_needs_an_lsf_suite(tmp_path, data_dir, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--suite", "monash", "--datasets", "hospital", "--data-dir", str(data_dir),
              "--lsf-split", "val", "--out", str(tmp_path / "o")])
    assert "--lsf-split applies to --suite lsf or all, not monash" in capsys.readouterr().err
    main(["--checkpoint", "naive", "--suite", "lsf", "--datasets", "etth1", "--data-dir", str(data_dir),
          "--lsf-split", "val", "--lsf-stride", "480", "--plot-series", "0", "--out", str(tmp_path / "v")])
    rows = _read_csv(tmp_path / "v" / "results.csv")
    assert rows and {r["display_name"] for r in rows} == {"ETTh1 [val]"}
    assert "LSF split val" in (tmp_path / "v" / "results.md").read_text()


class _NoisyForecaster:
    """A sampling forecaster: last value plus noise seeded by the context itself, so a series gets the same
    samples whichever chunk it lands in."""

    def forecast(self, contexts, prediction_length, num_samples=100, quantile_levels=(0.5,), seed=None, **_):
        rows = []
        for c in contexts:
            rng = np.random.default_rng(int(abs(np.nansum(c)) * 1000) % 2**32)
            rows.append(c[~np.isnan(c)][-1] + rng.normal(0, 1, (num_samples, prediction_length)))
        return ForecastOutput.from_samples(np.stack(rows), quantile_levels)


def _toy_task() -> Task:
    rng = np.random.default_rng(1)
    series = [Series(f"s{i}", rng.normal(5, 2, 40), "D") for i in range(5)]
    series[2].target[-3] = np.nan
    return last_window_task("toy", series, 6, 2, 12, 7, "zeroshot")


def test_runner_metrics_do_not_depend_on_chunking_and_use_samples():
    task = _toy_task()
    f = {MODEL: _NoisyForecaster()}
    whole = evaluate_task(task, f, EvalConfig(num_samples=20, chunk_size=100, plot_series=2))
    chunked = evaluate_task(task, f, EvalConfig(num_samples=20, chunk_size=3, plot_series=2))
    assert set(whole.metrics[MODEL]) == {"MAE", "MSE", "MASE", "sMAPE", "CRPS", "MSIS", "CRPS_samples"}
    for name, value in whole.metrics[MODEL].items():
        assert math.isfinite(value.value)
        assert chunked.metrics[MODEL][name].value == pytest.approx(value.value, rel=1e-12), name
    assert whole.num_instances == 10 and len(whole.examples) == 2
    assert whole.examples[0].quantiles.shape == (3, 6)


def test_runner_rejects_malformed_forecasts():
    class Bad:
        def forecast(self, contexts, prediction_length, **_):
            return ForecastOutput.from_point(np.zeros((len(contexts), prediction_length + 1)))

    with pytest.raises(ValueError, match=r"toy \(h=6\), model: forecast mean has shape"):
        evaluate_task(_toy_task(), {MODEL: Bad()}, EvalConfig())


@pytest.fixture(scope="module")
def tiny_yaml_checkpoint(tmp_path_factory, make_checkpoint) -> Path:
    """An untrained model of configs/tiny.yaml (seed 0) in a folder named `tiny`; read-only."""
    from moe_ts.config import load_model_config

    return make_checkpoint(tmp_path_factory.mktemp("tiny_yaml") / "tiny", seed=0,
                           config=load_model_config(REPO / "configs" / "tiny.yaml"))


def test_fresh_tiny_model_through_the_cli(tmp_path, data_dir, tiny_yaml_checkpoint):
    ckpt = tiny_yaml_checkpoint
    out = tmp_path / "out"
    main(["--checkpoint", str(ckpt), "--suite", "monash", "--datasets", "hospital", "--data-dir", str(data_dir),
          "--max-series", "4", "--num-samples", "8", "--out", str(out)])
    rows = [r for r in _read_csv(out / "results.csv") if r["status"] == "ok"]
    model_rows = {r["metric"]: float(r["value"]) for r in rows if r["role"] == MODEL}
    assert set(model_rows) == {"MAE", "MSE", "MASE", "sMAPE", "CRPS", "MSIS", "CRPS_samples"}
    assert all(math.isfinite(v) and v > 0 for v in model_rows.values())
    assert {r["model"] for r in rows if r["role"] == MODEL} == {"tiny"}
    rel = _aggregate(out / "aggregate.csv", "monash", "MAE", MODEL)
    assert math.isfinite(rel) and rel != 1.0
    assert (out / "plots" / "monash" / "hospital_h12.png").exists()
    # M1 yearly holds contexts shorter than one patch: the model pads them instead of failing
    # (series 6, 7 and 8 of the first ten have fewer than 16 context points)
    main(["--checkpoint", str(ckpt), "--tsf", str(M1_TSF), "--num-samples", "4", "--out", str(tmp_path / "o2"),
          "--plot-series", "0", "--max-series", "10"])
    assert any(r["role"] == MODEL for r in _read_csv(tmp_path / "o2" / "results.csv"))


def _untrained_tiny(ckpt: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """The untrained tiny-config checkpoint and eval arguments for a 2-series hospital run."""
    common = ["--suite", "monash", "--datasets", "hospital", "--data-dir", str(data_dir), "--max-series", "2",
              "--num-samples", "4", "--plot-series", "0"]
    return ckpt, common


def test_patches_per_step_is_checked_against_the_model(tmp_path, data_dir, capsys, tiny_yaml_checkpoint):
    ckpt, common = _untrained_tiny(tiny_yaml_checkpoint, data_dir)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), *common, "--patches-per-step", "2", "--out", str(tmp_path / "o1")])
    assert "--patches-per-step 2: the model predicts 1 patch(es) per position" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", *common, "--patches-per-step", "1", "--out", str(tmp_path / "o2")])
    assert "applies to a MoE model checkpoint" in capsys.readouterr().err
    main(["--checkpoint", str(ckpt), *common, "--patches-per-step", "1", "--out", str(tmp_path / "o3")])
    assert any(r["role"] == MODEL for r in _read_csv(tmp_path / "o3" / "results.csv"))


def test_feedback_noise_flag_is_checked(tmp_path, data_dir, capsys, tiny_yaml_checkpoint):
    ckpt, common = _untrained_tiny(tiny_yaml_checkpoint, data_dir)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), *common, "--feedback-noise", "0.5", "--decode", "median",
              "--out", str(tmp_path / "o1")])
    assert "--feedback-noise applies to --decode sample, not median" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", *common, "--feedback-noise", "0.5", "--out", str(tmp_path / "o2")])
    assert "--feedback-noise applies to a MoE model checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), *common, "--feedback-noise", "2", "--out", str(tmp_path / "o3")])
    assert "must be in [0, 1], got 2" in capsys.readouterr().err
    for bad in (["--decode", "greedy"], ["--feedback-noise", "2"], ["--feedback-noise", "0.5", "--decode", "mean"]):
        # refused before any checkpoint is read
        with pytest.raises(SystemExit):
            main(["--checkpoint", str(tmp_path / "no_such_folder"), *common, *bad, "--out", str(tmp_path / "o6")])
        err = capsys.readouterr().err
        assert bad[0] in err and "no_such_folder" not in err, err
    lsf = ["--suite", "lsf", "--datasets", "etth1", "--data-dir", str(data_dir), "--max-series", "1",
           "--max-windows", "1", "--num-samples", "4", "--plot-series", "0"]  # several decoding steps
    main(["--checkpoint", str(ckpt), *lsf, "--feedback-noise", "1", "--out", str(tmp_path / "o4")])
    main(["--checkpoint", str(ckpt), *lsf, "--feedback-noise", "0.2", "--out", str(tmp_path / "o5")])
    mae = [[float(r["value"]) for r in _read_csv(tmp_path / o / "results.csv")
            if r["role"] == MODEL and r["metric"] == "MAE"] for o in ("o4", "o5")]
    assert mae[0] != mae[1]  # the flag reaches the decoder
