"""Probes suite: end to end on a tiny random model and on a briefly trained one, and the oracle / Seasonal Naive numbers
checked by hand."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_prep.corpus import write_corpus
from data_prep.series import Series
from eval.baselines import SeasonalNaive
from eval.probes import PROBE_NAMES, PROBES, get_probes, probe_task, run_probes
from eval.run import main
from eval.runner import MODEL, NAIVE, SNAIVE, EvalConfig
from moe_ts.config import load_model_config
from pretrain.train import main as pretrain_main


def _read(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def probe_checkpoint(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_random", seed=0, d_model=32, num_layers=2,
                           num_heads=4, moe=dict(num_experts=4, top_k=2, d_ff=24))


def test_probe_suite_end_to_end_on_a_random_model(probe_checkpoint, tmp_path):
    out = tmp_path / "out"
    rc = main(["--checkpoint", str(probe_checkpoint), "--suite", "probes", "--out", str(out), "--probe-series", "1",
               "--num-samples", "4", "--context-length", "400", "--plot-series", "0"])
    assert rc == 0
    rows = _read(out / "probes.csv")
    assert [r["probe"] for r in rows] == list(PROBE_NAMES)
    for col in ("MAE_model", "MASE_model", "CRPS_model", "MASE_seasonal_naive", "MASE_naive", "MASE_oracle",
                "model_vs_snaive", "model_vs_oracle"):
        assert col in rows[0], col
    by = {r["probe"]: r for r in rows}
    assert float(by["sine_p24"]["MASE_model"]) > 0
    ratio = float(by["sine_p24"]["MASE_model"]) / float(by["sine_p24"]["MASE_seasonal_naive"])
    assert float(by["sine_p24"]["model_vs_snaive"]) == pytest.approx(ratio)
    # the constant has a zero in-sample scale: MASE undefined, MAE of the oracle and Seasonal Naive exactly 0
    assert math.isnan(float(by["constant"]["MASE_model"]))
    assert float(by["constant"]["MAE_oracle"]) == 0.0 and float(by["constant"]["MAE_seasonal_naive"]) == 0.0
    res = _read(out / "results.csv")
    assert {r["role"] for r in res} == {MODEL, SNAIVE, NAIVE, "oracle"}
    assert {r["dataset"] for r in res} == set(PROBE_NAMES)
    assert {int(r["context_length"]) for r in res} == {400}
    assert "probes, tiny_random:" in (out / "probes.md").read_text()


def test_noiseless_periodic_probe_seasonal_naive_and_oracle_are_exact():
    res = run_probes(SeasonalNaive(), EvalConfig(plot_series=0), n_series=3, context_length=300, noise_sd=0.0,
                     names=["sine_p12", "sine_p24", "profile_p24", "constant"], log=None)
    for t in res.tasks:
        assert t.metrics[SNAIVE]["MAE"].value == pytest.approx(0.0, abs=1e-6), t.dataset  # float32 contexts
        assert t.metrics["oracle"]["MAE"].value == pytest.approx(0.0, abs=1e-6), t.dataset  # float32 contexts


def test_noisy_periodic_oracle_beats_seasonal_naive_by_the_expected_margin():
    probe = get_probes(["sine_p24"])[0]
    task, oracle = probe_task(probe, n_series=16, context_length=480, seed=3)
    idx = np.arange(len(task))
    truth = task.truth(idx)
    ctx = task.contexts(idx)
    # by hand: Seasonal Naive repeats the last 24 context points; the oracle is the noiseless sine
    snaive = np.stack([np.tile(c[-24:], 2) for c in ctx])
    mae_oracle = np.abs(truth - oracle).mean()
    mae_snaive = np.abs(truth - snaive).mean()
    # noise sd 0.1: E|e| = 0.1 sqrt(2/pi) = 0.0798 for the oracle, E|e - e'| = sqrt(2) times that for SNaive
    assert mae_oracle == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.1)
    assert mae_snaive == pytest.approx(0.1 * math.sqrt(2) * math.sqrt(2 / math.pi), rel=0.1)
    res = run_probes(SeasonalNaive(), EvalConfig(plot_series=0), n_series=16, context_length=480, seed=3,
                     names=["sine_p24"], log=None)
    m = res.tasks[0].metrics
    assert m[SNAIVE]["MAE"].value == pytest.approx(mae_snaive, rel=1e-6)
    assert m["oracle"]["MAE"].value == pytest.approx(mae_oracle, rel=1e-6)
    # MASE by hand: per series MAE / mean |z[t] - z[t-24]| over the context, averaged over series
    scales = np.array([np.abs(v[24:480] - v[:456]).mean() for v in task.values])
    mase_oracle = (np.abs(truth - oracle).mean(axis=1) / scales).mean()
    assert m["oracle"]["MASE"].value == pytest.approx(mase_oracle, rel=1e-9)
    assert m["oracle"]["MASE"].value < m[SNAIVE]["MASE"].value


def test_random_walk_oracle_is_naive_and_missing_probe_has_nans():
    res = run_probes(SeasonalNaive(), EvalConfig(plot_series=0), n_series=4, context_length=200,
                     names=["random_walk"], log=None)
    m = res.tasks[0].metrics
    assert m["oracle"]["MAE"].value == pytest.approx(m[NAIVE]["MAE"].value, rel=1e-6)
    task, oracle = probe_task(get_probes(["missing_p24"])[0], 2, 300)
    ctx = task.contexts(np.arange(2))
    # 20% scattered NaNs plus a 48-point gap: about 0.2 * 252/300 + 48/300 = 0.33 of the context
    assert all(0.25 < np.isnan(c).mean() < 0.42 for c in ctx)
    assert all(np.convolve(np.isnan(c), np.ones(48), "valid").max() == 48 for c in ctx)
    assert not np.isnan(task.truth(np.arange(2))).any()


def test_probes_are_deterministic_and_seeded():
    p = PROBES[0]
    a, _ = probe_task(p, 2, 100, seed=0)
    b, _ = probe_task(p, 2, 100, seed=0)
    c, _ = probe_task(p, 2, 100, seed=1)
    np.testing.assert_array_equal(a.values[1], b.values[1])
    assert not np.allclose(a.values[1], c.values[1])
    assert not np.allclose(a.values[0], a.values[1])  # different phases per series


def test_unknown_probe_and_too_short_context_are_named():
    with pytest.raises(ValueError, match="unknown probe 'sine_p13'"):
        get_probes(["sine_p13"])
    with pytest.raises(ValueError, match="sine_p168.*2 periods"):
        probe_task(get_probes(["sine_p168"])[0], 1, 200)


def test_cli_names_a_context_too_short_for_the_probes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", "seasonal_naive", "--suite", "probes", "--context-length", "100", "--out", str(tmp_path)])
    assert "--context-length 100: the probes need at least 336" in capsys.readouterr().err



@pytest.mark.slow  # 400 pretraining steps
def test_probes_see_what_a_briefly_trained_model_learned(tmp_path, make_checkpoint):
    """A small model pretrained (the real `moe-ts pretrain` path) for 400 steps on noisy sines of period 12-48
    continues the period-24 probe far better than the same model untrained and than Naive, and does not continue
    the period-168 probe, a period it never saw: the probe suite tells a learned cycle from an unlearned one."""
    rng = np.random.default_rng(0)
    t = np.arange(512)
    sines = []
    for i in range(200):
        amplitude = rng.uniform(1, 5)
        y = (rng.normal(0, 5) + amplitude * np.sin(2 * np.pi * t / rng.uniform(12, 48) + rng.uniform(0, 2 * np.pi))
             + rng.normal(0, 0.05 * amplitude, t.size))
        sines.append(Series(item_id=f"sine/{i}", target=y, freq="h", dataset="sines"))
    corpus = tmp_path / "corpus"
    write_corpus(sines, corpus)
    (corpus / "manifest.json").write_text(json.dumps({"complete": True}))  # as `moe-ts prepare` ends
    model = {"patch_size": 8, "max_seq_len": 32, "d_model": 32, "num_layers": 2, "num_heads": 4, "stats_ratio": 0.3,
             "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
    train = {"steps": 400, "batch_size": 16, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 30, "log_every": 100,
             "checkpoint_every": 1000, "seed": 0, "wandb_mode": "disabled"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"model": model, "train": train}))
    assert pretrain_main(["--config", str(tmp_path / "run.yaml"), "--data", str(corpus), "--out", str(tmp_path / "run")]) == 0
    untrained = make_checkpoint(tmp_path / "untrained", seed=0, config=load_model_config(tmp_path / "run.yaml"))

    def probes(checkpoint: Path) -> dict[str, dict]:
        out = tmp_path / f"eval_{checkpoint.name}"
        assert main(["--checkpoint", str(checkpoint), "--suite", "probes", "--out", str(out), "--probe-series", "4",
                     "--num-samples", "20", "--plot-series", "0", "--decode", "median"]) == 0
        return {r["probe"]: r for r in _read(out / "probes.csv")}

    trained, before = probes(tmp_path / "run" / "final"), probes(untrained)
    mase = {name: float(trained[name]["MASE_model"]) for name in ("sine_p24", "sine_p168")}
    assert mase["sine_p24"] < 0.5 * float(before["sine_p24"]["MASE_model"]), (mase, before["sine_p24"]["MASE_model"])
    assert mase["sine_p24"] < 0.25 * float(trained["sine_p24"]["MASE_naive"]), (mase, trained["sine_p24"]["MASE_naive"])
    assert mase["sine_p168"] > 2 * mase["sine_p24"], mase
