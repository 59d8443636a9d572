"""Naive and Seasonal Naive on tiny arrays."""
import numpy as np
import pytest

from eval.baselines import Naive, SeasonalNaive
from moe_ts.forecast_output import DEFAULT_QUANTILES

NAN = np.nan


def test_naive_uses_last_observed_value():
    out = Naive().forecast([np.array([1.0, 2.0, NAN]), np.array([5.0])], 3)
    np.testing.assert_array_equal(out.mean, [[2, 2, 2], [5, 5, 5]])
    assert out.quantiles.shape == (2, len(DEFAULT_QUANTILES), 3)
    np.testing.assert_array_equal(out.median, out.mean)
    assert out.samples is None


def test_seasonal_naive_repeats_last_season():
    out = SeasonalNaive(3).forecast([np.arange(1.0, 8.0)], 5)
    np.testing.assert_array_equal(out.mean, [[5, 6, 7, 5, 6]])


def test_seasonal_naive_missing_values_take_the_same_position_a_season_earlier():
    # seasons [1,2,3],[4,NaN,6] -> position 1 comes from the earlier season
    out = SeasonalNaive(3).forecast([np.array([1.0, 2.0, 3.0, 4.0, NAN, 6.0])], 3)
    np.testing.assert_array_equal(out.mean, [[4, 2, 6]])
    # position 1 never observed -> last observed value overall (6)
    out = SeasonalNaive(3).forecast([np.array([1.0, NAN, 3.0, 4.0, NAN, 6.0])], 3)
    np.testing.assert_array_equal(out.mean, [[4, 6, 6]])


def test_seasonal_naive_uses_the_end_of_a_ragged_context():
    out = SeasonalNaive(3).forecast([np.array([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])], 4)
    np.testing.assert_array_equal(out.mean, [[4, 5, 6, 4]])


def test_season_longer_than_context_falls_back_to_naive():
    out = SeasonalNaive(12).forecast([np.array([1.0, 2.0, 3.0])], 2)
    np.testing.assert_array_equal(out.mean, [[3, 3]])


def test_for_seasonality_and_extra_model_kwargs():
    f = SeasonalNaive().for_seasonality(2)
    out = f.forecast([np.array([1.0, 2.0, 3.0, 4.0])], 3, num_samples=100, seed=0, batch_size=8,
                     quantile_levels=(0.025, 0.5, 0.975))
    np.testing.assert_array_equal(out.mean, [[3, 4, 3]])
    assert out.quantile_levels == (0.025, 0.5, 0.975)


def test_bad_input_raises_clearly():
    with pytest.raises(ValueError, match="prediction_length"):
        Naive().forecast([np.ones(3)], 0)
    with pytest.raises(ValueError, match="all 2 values are NaN"):
        SeasonalNaive(2).forecast([np.ones(3), np.array([NAN, NAN])], 2)
    with pytest.raises(ValueError, match="season_length"):
        SeasonalNaive(0)
