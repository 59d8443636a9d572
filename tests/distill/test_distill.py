"""TimeDistill (docs/ARCHITECTURE.md §8): the loss terms on hand-made examples, the MLP student's folder and
forecasting interface, the teacher-output cache, α = β = 0 as plain supervised training, and `moe-ts distill`'s
one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cli.main import main
from moe_ts.student.objectives import distill_loss, multiscale_mse, spectral_kl
from moe_ts.io.loading import load_model
from moe_ts.model import MoiraiMoEModel
from moe_ts.student.model import MLPForecaster, StudentConfig, moving_average
from distill import teacher_cache
from distill.train import DistillConfig, TeacherTargets, train_student
from distill.data import DistillData, WindowSet
from distill.teacher_cache import TeacherSettings, cached_teacher_outputs


@pytest.fixture()
def tiny_teacher(tiny_model) -> MoiraiMoEModel:
    """The tiny model (conftest.py, seed 0) over 8 positions of 8 points: it reads at most 64 context points."""
    return tiny_model(seed=0, max_seq_len=8).eval()


def sine_windows(n: int, context: int, horizon: int, seed: int = 0) -> WindowSet:
    rng = np.random.default_rng(seed)
    t = np.arange(context + horizon)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    level = rng.uniform(-5, 5, size=(n, 1))
    x = (level + np.sin(2 * np.pi * t / 12 + phase) + 0.1 * rng.standard_normal((n, len(t)))).astype(np.float32)
    return WindowSet(x[:, :context], x[:, context:])


# --- loss terms ---------------------------------------------------------------------------------------------

def test_spectral_kl_of_pure_sinusoids_matches_the_closed_form():
    # A sinusoid of amplitude A at bin k of a length-T sequence has |rfft| = A·T/2 at bin k and 0 elsewhere, so
    # softmax over the 16 non-DC bins is p_hi at k and p_lo elsewhere. Teacher at bin 3, student at bin 5:
    # KL = p_hi log(p_hi/p_lo) + p_lo log(p_lo/p_hi) = (p_hi - p_lo)·(A·T/2)/tau.
    T, A, tau = 32, 0.05, 0.5
    t = torch.arange(T, dtype=torch.float64)
    teacher = (A * torch.cos(2 * math.pi * 3 * t / T))[None]
    student = (A * torch.cos(2 * math.pi * 5 * t / T))[None]
    a = A * T / 2 / tau
    p_hi, p_lo = math.exp(a) / (15 + math.exp(a)), 1 / (15 + math.exp(a))
    expected = (p_hi - p_lo) * a
    assert float(spectral_kl(student, teacher, tau)) == pytest.approx(expected, rel=1e-5)
    assert float(spectral_kl(teacher, teacher, tau)) == pytest.approx(0.0, abs=1e-7)
    # the DC bin is left out: a constant offset changes nothing
    assert float(spectral_kl(student + 3.0, teacher - 1.0, tau)) == pytest.approx(expected, rel=1e-5)
    # KL(teacher ‖ student), not the reverse: an asymmetric pair tells the two apart
    mixed = teacher + 0.5 * student
    forward, backward = float(spectral_kl(mixed, teacher, tau)), float(spectral_kl(teacher, mixed, tau))
    mags = lambda x: torch.fft.rfft(x, dim=-1).abs()[:, 1:] / tau  # noqa: E731
    p_t, p_s = F.softmax(mags(teacher), -1), F.softmax(mags(mixed), -1)
    assert forward == pytest.approx(float((p_t * (p_t / p_s).log()).sum()), rel=1e-5)
    assert forward != pytest.approx(backward, rel=1e-3)


def _pool_by_two(x: np.ndarray) -> np.ndarray:
    n = x.shape[1] // 2 * 2
    return x[:, :n].reshape(x.shape[0], -1, 2).mean(axis=2)


def test_multiscale_mse_is_the_mean_over_four_halvings():
    rng = np.random.default_rng(0)
    for length in (24, 13):  # 13 -> 6 -> 3 -> 1: a trailing odd point is dropped
        s, t = rng.standard_normal((3, length)), rng.standard_normal((3, length))
        expected, a, b = [], s, t
        for _ in range(4):
            expected.append(((a - b) ** 2).mean())
            a, b = _pool_by_two(a), _pool_by_two(b)
        got = float(multiscale_mse(torch.from_numpy(s), torch.from_numpy(t)))
        assert got == pytest.approx(float(np.mean(expected)), rel=1e-12)


def test_distill_loss_weights_its_terms():
    g = torch.Generator().manual_seed(0)
    pred, truth, tpred = (torch.randn(4, 16, generator=g) for _ in range(3))
    feat, tfeat = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    truth[0, 0] = float("nan")  # missing truth is left out of the supervised MSE
    out = distill_loss(pred, truth, tpred, feat, tfeat, alpha=0.3, beta=2.0)
    mse = float(((pred - truth)[~truth.isnan()] ** 2).mean())
    assert float(out.supervised) == pytest.approx(mse, rel=1e-6)
    parts = (0.3 * (spectral_kl(pred, tpred) + multiscale_mse(pred, tpred))
             + 2.0 * (spectral_kl(feat, tfeat) + multiscale_mse(feat, tfeat)))
    assert float(out.total) == pytest.approx(mse + float(parts), rel=1e-6)
    plain = distill_loss(pred, truth, None, feat, None, alpha=0, beta=0)  # no teacher needed
    assert float(plain.total) == pytest.approx(mse, rel=1e-6) and plain.pred_freq is None


# --- the student --------------------------------------------------------------------------------------------

def test_moving_average_repeats_the_ends():
    x = np.random.default_rng(1).standard_normal((2, 20))
    padded = np.concatenate([np.repeat(x[:, :1], 2, 1), x, np.repeat(x[:, -1:], 2, 1)], axis=1)
    expected = np.stack([np.convolve(row, np.ones(5) / 5, mode="valid") for row in padded])
    assert np.allclose(moving_average(torch.from_numpy(x), 5).numpy(), expected, atol=1e-12)


def test_student_saves_and_loads_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    student = MLPForecaster(StudentConfig(context_length=48, horizon=12, hidden=16, moving_avg=5))
    x = sine_windows(5, 60, 0).contexts
    x[1, :20] = np.nan  # missing values
    before = student.forecast(list(x), 30)
    student.save_pretrained(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "config.json").read_text())["model_type"] == "timedistill_mlp"
    assert "distilled" in (tmp_path / "s" / "README.md").read_text()
    loaded = load_model(tmp_path / "s")
    assert isinstance(loaded, MLPForecaster)
    after = loaded.forecast(list(x), 30)
    assert np.array_equal(before.mean, after.mean)
    with pytest.raises(Exception, match="is a distilled MLP student folder"):
        MoiraiMoEModel.from_pretrained(tmp_path / "s")  # a student folder is not a MoE model, and says so


def test_student_forecast_is_a_point_forecast_rolled_out_past_its_horizon():
    torch.manual_seed(0)
    student = MLPForecaster(StudentConfig(context_length=32, horizon=8, hidden=16, moving_avg=5)).eval()
    ctx = sine_windows(3, 40, 0).contexts
    out = student.forecast(ctx, 20, num_samples=50, seed=3)
    assert out.samples is None and out.mean.shape == (3, 20)
    assert np.allclose(out.quantiles, out.mean[:, None, :])
    # independent rollout: three calls of `predict` on the last 32 points, each fed back
    window = torch.from_numpy(ctx[:, -32:])
    steps = []
    for _ in range(3):
        with torch.no_grad():
            step = student.predict(window)
        steps.append(step)
        window = torch.cat([window, step], 1)[:, -32:]
    assert np.allclose(out.mean, torch.cat(steps, 1)[:, :20].numpy(), atol=1e-5)
    # normalisation: a shifted and scaled context gives the shifted and scaled forecast
    moved = student.forecast(ctx * 10 + 100, 8).mean
    assert np.allclose(moved, out.mean[:, :8] * 10 + 100, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="allow_short_context"):
        student.forecast([ctx[0, :10]], 8)
    assert student.forecast([ctx[0, :10]], 8, allow_short_context=True).mean.shape == (1, 8)


# --- teacher-output cache -----------------------------------------------------------------------------------

def test_teacher_cache_is_reused_and_invalidated_when_the_teacher_changes(tmp_path, monkeypatch, tiny_teacher):
    teacher = tiny_teacher
    ctx = sine_windows(6, 32, 0).contexts
    settings = TeacherSettings(num_samples=4, batch_size=4)
    calls = []
    real = teacher_cache.compute_teacher_outputs
    monkeypatch.setattr(teacher_cache, "compute_teacher_outputs",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    pred, feat, hit = cached_teacher_outputs(teacher, ctx, 16, settings, tmp_path, progress=False)
    assert not hit and len(calls) == 1 and pred.shape == (6, 16) and feat.shape == (6, 16)
    # the cached values are the teacher's: forecast mean and the last patch's hidden state
    direct = teacher.forecast(list(ctx[:4]), 16, num_samples=4, seed=0, batch_size=4, context_length=32,
                              decode="median")
    assert np.allclose(pred[:4], direct.mean, atol=1e-6)
    pred2, feat2, hit2 = cached_teacher_outputs(teacher, ctx, 16, settings, tmp_path, progress=False)
    assert hit2 and len(calls) == 1 and np.array_equal(pred, pred2) and np.array_equal(feat, feat2)
    with torch.no_grad():
        next(teacher.parameters()).add_(0.5)  # the input projection: changes forecasts and features
    pred3, _, hit3 = cached_teacher_outputs(teacher, ctx, 16, settings, tmp_path, progress=False)
    assert not hit3 and len(calls) == 2 and not np.allclose(pred3, pred)
    _, _, hit4 = cached_teacher_outputs(teacher, ctx[:5], 16, settings, tmp_path, progress=False)  # other data
    assert not hit4 and len(calls) == 3
    assert len(list(tmp_path.glob("teacher-*.npz"))) == 3


# --- training -----------------------------------------------------------------------------------------------

def _reference_supervised(data: DistillData, cfg: DistillConfig) -> MLPForecaster:
    """Plain MSE training written out by hand: same seed, init, shuffling and best-validation pick."""
    torch.manual_seed(cfg.seed)
    student = MLPForecaster(cfg.student_config())
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)

    def scaled(ws):
        ctx = torch.from_numpy(ws.contexts).double()
        loc = ctx.mean(1, keepdim=True)
        scale = torch.sqrt(ctx.var(1, keepdim=True) + student.config.min_scale)
        return ((ctx - loc) / scale).float(), ((torch.from_numpy(ws.truth) - loc) / scale).float()

    x, y = scaled(data.train)
    vx, vy = scaled(data.val)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state = math.inf, None
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for lo in range(0, len(x), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            loss = F.mse_loss(student(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(F.mse_loss(student(vx)[0], vy))
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best_state)
    return student


def test_alpha_beta_zero_is_plain_supervised_training():
    data = DistillData(sine_windows(40, 32, 8, seed=0), sine_windows(8, 32, 8, seed=1), "sines")
    cfg = DistillConfig(context_length=32, horizon=8, hidden=16, moving_avg=5, alpha=0, beta=0, epochs=3,
                        patience=10, batch_size=16, lr=1e-2, seed=7)
    rng = np.random.default_rng(0)
    junk = TeacherTargets(rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((40, 6)).astype(np.float32))
    got, history = train_student(data, cfg, junk)  # teacher outputs given but weighted 0: unused
    ref = _reference_supervised(data, cfg)
    assert len(history) == 3
    for (name, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    distilled, _ = train_student(data, DistillConfig(**{**cfg.__dict__, "alpha": 1.0, "beta": 1.0}), junk)
    assert not torch.allclose(distilled.seasonal.inp.weight, ref.seasonal.inp.weight, atol=1e-4)


# --- the command and its one-line errors --------------------------------------------------------------------

@pytest.fixture()
def teacher_dir(tmp_path, make_checkpoint):
    return make_checkpoint(tmp_path / "teacher", seed=0, max_seq_len=8)  # the tiny teacher's folder


def _corpus(tmp_path, lengths):
    from data_prep.corpus import write_corpus
    from data_prep.series import Series

    rng = np.random.default_rng(0)
    series = [Series(f"s{i}", (np.sin(np.arange(n) / 3.0) * 5 + 10 + rng.standard_normal(n)).astype(np.float32),
                     "h", dataset="toy") for i, n in enumerate(lengths)]
    write_corpus(series, tmp_path / "corpus")
    return tmp_path / "corpus"


def _one_line_error(capsys, argv):
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Warning" not in line]
    assert code != 0 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_distill_command_writes_a_student_that_eval_and_forecast_use(tmp_path, teacher_dir, capsys):
    corpus = _corpus(tmp_path, [120, 130, 140])
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(teacher_dir), "--data", str(corpus), "--context", "32", "--horizon", "16",
            "--out", str(out), "--hidden", "8", "--epochs", "2", "--stride", "4", "--teacher-samples", "4",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    record = json.loads((out / "distill.json").read_text())
    assert record["config"]["alpha"] == 1.0 and len(record["history"]) == 2
    assert "teacher outputs computed" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0  # the second run reads the cache
    assert "teacher outputs read from" in capsys.readouterr().err
    csv = tmp_path / "in.csv"
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=50, freq="h").astype(str),
                  "a": np.sin(np.arange(50.0)), "b": np.cos(np.arange(50.0))}).to_csv(csv, index=False)
    assert main(["forecast", "--checkpoint", str(out), "--input", str(csv), "--horizon", "20",
                 "--out", str(tmp_path / "f.csv")]) == 0
    frame = pd.read_csv(tmp_path / "f.csv")
    assert len(frame) == 40 and np.allclose(frame["q0.1"], frame["mean"]) and np.allclose(frame["q0.9"], frame["mean"])
    tsf = tmp_path / "toy.tsf"
    rows = [f"s{i}:2020-01-01 00-00-00:" + ",".join(f"{v:.3f}" for v in np.sin(np.arange(80) / 3.0 + i) * 5 + 10)
            for i in range(3)]
    tsf.write_text("@relation toy\n@attribute series_name string\n@attribute start_timestamp date\n@frequency hourly\n"
                   "@horizon 20\n@missing false\n@equallength true\n@data\n" + "\n".join(rows) + "\n")
    assert main(["eval", "--checkpoint", str(out), "--tsf", str(tsf), "--out", str(tmp_path / "ev"),
                 "--plot-series", "0"]) == 0  # horizon 20 > the student's 16: rolled out
    results = pd.read_csv(tmp_path / "ev" / "results.csv")
    mae = results[(results["role"] == "model") & (results["metric"] == "MAE") & (results["status"] == "ok")]
    assert len(mae) == 1 and np.isfinite(mae["value"]).all()
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "release"), "--license", "mit"]) == 0
    card = (tmp_path / "release" / "README.md").read_text()
    assert "Distilled from `teacher`" in card and "license: mit" in card


def test_distill_bad_inputs_are_one_line_errors(tmp_path, teacher_dir, capsys):
    corpus = _corpus(tmp_path, [120, 130])
    base = ["distill", "--teacher", str(teacher_dir), "--data", str(corpus), "--out", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "cache")]
    # the teacher reads at most 8 patches of 8 points
    assert "reads at most 64 points" in _one_line_error(capsys, base + ["--context", "72", "--horizon", "8"])
    assert "exceed the teacher's 8 trained positions" in _one_line_error(
        capsys, base + ["--context", "48", "--horizon", "24"])
    # a corpus whose series are shorter than context + horizon (+ the validation horizon)
    short = _corpus(tmp_path / "short", [40, 45])
    msg = _one_line_error(capsys, [a if a != str(corpus) else str(short) for a in base] + ["--context", "32",
                                                                                           "--horizon", "16"])
    assert "needs context + horizon = 32 + 16 = 48 points" in msg and "longest series: 29" in msg
    # teacher folders that hold no MoE forecaster
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    junk = [a if a != str(teacher_dir) else str(tmp_path / "junk") for a in base] + ["--context", "32", "--horizon", "8"]
    assert "config.json: missing" in _one_line_error(capsys, junk)
    MLPForecaster(StudentConfig(context_length=32, horizon=8, hidden=4)).save_pretrained(tmp_path / "stu")
    stu = [a if a != str(teacher_dir) else str(tmp_path / "stu") for a in base] + ["--context", "32", "--horizon", "8"]
    assert "holds a timedistill_mlp model, not a MoE forecaster" in _one_line_error(capsys, stu)


def test_lsf_windows_never_read_the_test_split(tmp_path):
    # ETTh1's layout: train [0, 8640), validation [8640, 11520), test [11520, 14400). Validation values are 1e3
    # and test values 1e6 (x10 for the second channel): after standardising by the training split, a validation
    # value is > 100 and a test value > 1e5.
    from distill.data import dataset_windows

    n = 14400
    rng = np.random.default_rng(0)
    base = np.sin(np.arange(n) / 5.0) + 0.1 * rng.standard_normal(n)
    base[8640:11520], base[11520:] = 1e3, 1e6
    (tmp_path / "ett").mkdir()
    pd.DataFrame({"date": pd.date_range("2016-07-01", periods=n, freq="h").astype(str), "a": base,
                  "b": base * 10}).to_csv(tmp_path / "ett" / "ETTh1.csv", index=False)
    data = dataset_windows("etth1", tmp_path, context=64, horizon=16, stride=8, max_windows=500, max_val=100)
    assert len(data.train) == 500 and len(data.val) == 100
    for ws in (data.train, data.val):
        assert np.abs(ws.contexts).max() < 1e5 and np.abs(ws.truth).max() < 1e5  # no test value anywhere
    assert np.abs(data.train.truth).max() < 100  # training targets stay inside the training split
    assert (np.abs(data.val.truth) > 100).all()  # validation targets inside the validation split


def test_the_default_teacher_cache_is_the_moe_ts_cache_at_run_time(tmp_path, teacher_dir, capsys, monkeypatch):
    corpus = _corpus(tmp_path, [120, 130])
    monkeypatch.setenv("MOE_TS_CACHE", str(tmp_path / "set-after-import"))  # as `data download` sees it
    argv = ["distill", "--teacher", str(teacher_dir), "--data", str(corpus), "--context", "32", "--horizon", "16",
            "--out", str(tmp_path / "student"), "--hidden", "8", "--epochs", "1", "--stride", "8",
            "--teacher-samples", "2"]
    assert main(argv) == 0
    assert f"cached in {tmp_path / 'set-after-import' / 'teacher'}" in capsys.readouterr().err
    assert any((tmp_path / "set-after-import" / "teacher").iterdir())
