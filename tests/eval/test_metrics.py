"""Metrics on small hand-computed cases (each expected value is worked out in the comment beside it)."""
import math

import numpy as np
import pytest

from eval import metrics as M

NAN = np.nan


def test_mae_mse_skip_missing_truth():
    y = np.array([[1.0, 2.0, NAN], [4.0, 0.0, 6.0]])
    f = np.array([[2.0, 2.0, 5.0], [1.0, 1.0, 6.0]])
    # observed abs errors: 1, 0, 3, 1, 0 -> MAE 5/5; squared 1, 0, 9, 1, 0 -> MSE 11/5
    assert M.mae(y, f) == pytest.approx(1.0)
    assert M.mse(y, f) == pytest.approx(2.2)


def test_smape_zero_over_zero_counts_as_zero():
    y = np.array([[1.0, 0.0, 2.0, NAN]])
    f = np.array([[3.0, 0.0, 2.0, 7.0]])
    # terms |1-3|/(1+3) = 0.5, 0 (0/0 -> 0), 0; NaN left out -> 2 * 0.5 / 3
    assert M.smape(y, f) == pytest.approx(1.0 / 3.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        M.mae(np.zeros((2, 3)), np.zeros((2, 4)))


def test_seasonal_scale_lag_fallback_and_nan_pairs():
    h = np.array([1.0, 3.0, 2.0, 5.0, NAN, 4.0])
    # m=2 pairs: |2-1|=1, |5-3|=2, (NaN,2) skipped, |4-5|=1 -> 4/3
    assert M.seasonal_scale(h, 2) == pytest.approx(4.0 / 3.0)
    # m=6 is not shorter than the history -> lag 1: 2, 1, 3 (two NaN pairs skipped) -> 2
    assert M.seasonal_scale(h, 6) == pytest.approx(2.0)
    assert M.seasonal_scale(np.array([5.0, 5.0, 5.0]), 1) == 0.0
    assert math.isnan(M.seasonal_scale(np.array([NAN, 1.0, NAN]), 1))
    with pytest.raises(ValueError, match="seasonality"):
        M.seasonal_scale(h, 0)


def test_mase_drops_undefined_instances_and_counts_them():
    y = np.array([[2.0, 4.0], [1.0, 1.0], [3.0, 3.0]])
    f = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    scale = np.array([2.0, 0.5, 0.0])
    # per-instance MAE 2, 0, 3; ratios 1, 0, inf -> the inf one is dropped -> (1 + 0) / 2
    out = M.mase(y, f, scale)
    assert out.value == pytest.approx(0.5)
    assert out.excluded == 1
    all_bad = M.mase(y, f, np.array([0.0, NAN, 0.0]))
    assert math.isnan(all_bad.value) and all_bad.excluded == 3


def test_mase_with_missing_truth_uses_observed_points_only():
    y = np.array([[2.0, NAN, 6.0]])
    f = np.array([[1.0, 100.0, 3.0]])
    # observed errors 1 and 3 -> MAE 2; scale 4 -> 0.5
    assert M.mase(y, f, np.array([4.0])).value == pytest.approx(0.5)


def test_msis_hand_case():
    y = np.array([[5.0, 0.0, 10.0]])
    lo = np.array([[4.0, 1.0, 2.0]])
    hi = np.array([[6.0, 3.0, 8.0]])
    # 2/alpha = 40: inside -> width 2; below by 1 -> 2 + 40 = 42; above by 2 -> 6 + 80 = 86
    # mean 130/3, scale 2 -> 65/3
    out = M.msis(y, lo, hi, np.array([2.0]), alpha=0.05)
    assert out.value == pytest.approx(65.0 / 3.0)
    assert out.excluded == 0


def test_weighted_quantile_loss_hand_case():
    y = np.array([[2.0, 4.0, NAN]])
    levels = (0.1, 0.5, 0.9)
    q = np.array([[[1.0, 1.0, 9.0], [2.0, 5.0, 9.0], [3.0, 6.0, 9.0]]])
    # q=0.1: (1-2)(0-0.1)=0.1, (1-4)(0-0.1)=0.3 -> 2*0.4 = 0.8
    # q=0.5: 0 at y=f, (5-4)(1-0.5)=0.5 -> 1.0
    # q=0.9: (3-2)(0.1)=0.1, (6-4)(0.1)=0.2 -> 0.6
    # sum |y| = 6 -> mean(0.8, 1.0, 0.6) / 6 = 0.8 / 6
    np.testing.assert_allclose(M.quantile_loss_sums(y, q, levels), [0.8, 1.0, 0.6])
    assert M.weighted_quantile_loss(y, q, levels) == pytest.approx(0.8 / 6.0)


def test_weighted_quantile_loss_of_a_point_forecast_is_the_normalised_deviation():
    y = np.array([[2.0, 4.0]])
    levels = M.CRPS_QUANTILES
    q = np.full((1, len(levels), 2), 3.0)
    # each level: (3-2)(1-q) + (3-4)(0-q) = 1 -> 2 per level; / sum|y| = 6 -> 1/3 = sum|e| / sum|y|
    assert M.weighted_quantile_loss(y, q, levels) == pytest.approx(1.0 / 3.0)
    assert math.isnan(M.weighted_quantile_loss(np.zeros((1, 2)), q, levels))


def test_crps_from_samples_hand_cases():
    y = np.array([[2.0, 1.0]])
    s = np.zeros((1, 3, 2))
    s[0, :, 0] = [1.0, 3.0, 2.0]
    s[0, :, 1] = [0.0, 0.0, 3.0]
    # point 1: E|X-y| = (1+1+0)/3 = 2/3; E|X-X'| = (2+1+2+1+1+1)/9 = 8/9 -> 2/3 - 4/9 = 2/9
    # point 2: E|X-y| = (1+1+2)/3 = 4/3; E|X-X'| = 4*3/9 = 4/3 -> 4/3 - 2/3 = 2/3
    np.testing.assert_allclose(M.crps_samples_pointwise(y, s), [[2.0 / 9.0, 2.0 / 3.0]])
    # dataset CRPS = (2/9 + 2/3) / (2 + 1)
    assert M.crps_from_samples(y, s) == pytest.approx((2.0 / 9.0 + 2.0 / 3.0) / 3.0)


def test_crps_of_degenerate_samples_is_absolute_error():
    y = np.array([[2.0, NAN, 5.0]])
    s = np.repeat(np.array([[[3.0, 0.0, 1.0]]]), 4, axis=1)
    # |3-2| + |1-5| = 5 over sum|y| = 7
    assert M.crps_from_samples(y, s) == pytest.approx(5.0 / 7.0)


def test_select_levels_and_missing_level():
    q = np.arange(12, dtype=float).reshape(1, 3, 4)
    np.testing.assert_array_equal(M.select_levels(q, (0.1, 0.5, 0.9), (0.9, 0.1)), q[:, [2, 0]])
    with pytest.raises(ValueError, match="0.975"):
        M.select_levels(q, (0.1, 0.5, 0.9), (0.975,))


def test_geometric_mean():
    assert M.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert M.geometric_mean([2.0, 8.0, 0.5]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        M.geometric_mean([1.0, 0.0])


def test_accumulator_over_chunks_equals_one_shot_functions():
    rng = np.random.default_rng(0)
    n, h, s = 7, 5, 6
    y = rng.normal(10, 3, (n, h))
    y[1, 2] = NAN
    samples = rng.normal(10, 3, (n, s, h))
    levels = (0.025,) + M.CRPS_QUANTILES + (0.975,)
    q = np.quantile(samples, levels, axis=1).transpose(1, 0, 2)
    median, mean = np.median(samples, axis=1), samples.mean(axis=1)
    scale = rng.uniform(0.5, 2.0, n)
    scale[3] = 0.0
    acc = M.MetricAccumulator(levels)
    for lo, hi in ((0, 3), (3, 7)):
        acc.update(y[lo:hi], median[lo:hi], mean[lo:hi], q[lo:hi], scale[lo:hi], samples[lo:hi])
    res = acc.result()
    assert res["MAE"].value == pytest.approx(M.mae(y, median))
    assert res["MSE"].value == pytest.approx(M.mse(y, mean))
    assert res["sMAPE"].value == pytest.approx(M.smape(y, median))
    assert res["CRPS"].value == pytest.approx(M.weighted_quantile_loss(y, q[:, 1:-1], M.CRPS_QUANTILES))
    assert res["CRPS_samples"].value == pytest.approx(M.crps_from_samples(y, samples))
    assert res["MASE"].value == pytest.approx(M.mase(y, median, scale).value)
    assert res["MASE"].excluded == 1
    assert res["MSIS"].value == pytest.approx(M.msis(y, q[:, 0], q[:, -1], scale).value)
