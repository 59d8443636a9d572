"""Synthetic generators: determinism, shapes, kinds, and that the GP sampler draws from the kernel it is given."""
import numpy as np
import pytest

from data_prep.synthetic import (
    SYNTHETIC_KINDS,
    generate_kernelsynth,
    generate_synthetic,
    random_kernel,
    sample_gp,
)


def test_kernelsynth_is_seeded_and_prefix_stable():
    a = generate_kernelsynth(6, seed=3, length=300)
    b = generate_kernelsynth(6, seed=3, length=300)
    c = generate_kernelsynth(3, seed=3, length=300)
    d = generate_kernelsynth(6, seed=4, length=300)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.target, y.target)
        assert x.attributes["kernel"] == y.attributes["kernel"]
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x.target, y.target)
    assert not any(np.array_equal(x.target, y.target) for x, y in zip(a, d))
    assert all(len(s) == 300 and s.dataset == "kernelsynth" and np.isfinite(s.target).all() for s in a)
    assert len({s.item_id for s in a}) == 6


def test_kernelsynth_long_series_are_interpolated_from_a_grid():
    series = generate_kernelsynth(4, seed=0, length=1024)
    assert all(len(s) == 1024 and np.isfinite(s.target).all() and s.target.std() > 0 for s in series)


def test_random_kernels_are_positive_semidefinite():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 64)
    for _ in range(20):
        k, desc = random_kernel(rng, x, 512)
        assert k.shape == (64, 64) and np.allclose(k, k.T)
        assert np.linalg.eigvalsh(k).min() > -1e-6 * np.abs(k).max(), desc


def test_sample_gp_matches_the_covariance():
    x = np.linspace(0, 1, 8)
    cov = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 0.3**2)
    rng = np.random.default_rng(1)
    draws = np.stack([sample_gp(cov, rng) for _ in range(4000)])
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.08)


def test_sample_gp_survives_a_singular_covariance():
    cov = np.ones((50, 50))  # rank one: plain Cholesky fails without jitter
    draw = sample_gp(cov, np.random.default_rng(0))
    assert np.isfinite(draw).all() and np.ptp(draw) < 1e-2 * max(1.0, abs(draw[0]))


def test_simple_generators():
    series = generate_synthetic(20, seed=7, min_length=50, max_length=120)
    again = generate_synthetic(20, seed=7, min_length=50, max_length=120)
    assert [s.attributes["kind"] for s in series[:5]] == list(SYNTHETIC_KINDS)
    for s, t in zip(series, again):
        np.testing.assert_array_equal(s.target, t.target)
        assert 50 <= len(s) <= 120 and np.isfinite(s.target).all() and s.dataset == "synthetic"
    intermittent = [s for s in series if s.attributes["kind"] == "intermittent"]
    assert all((s.target == 0).any() and (s.target >= 0).all() for s in intermittent)
    other = generate_synthetic(20, seed=8, min_length=50, max_length=120)
    assert not np.array_equal(series[0].target[:50], other[0].target[:50])


def test_generator_arguments_are_checked():
    with pytest.raises(ValueError, match="min_length"):
        generate_synthetic(1, min_length=10, max_length=5)
    with pytest.raises(ValueError, match="unknown synthetic kind 'wavy'"):
        generate_synthetic(1, kinds=("wavy",))
    with pytest.raises(ValueError, match="at least 2"):
        generate_kernelsynth(1, length=1)


def test_periodic_series_are_seeded_prefix_stable_and_in_range():
    from data_prep.synthetic import generate_periodic

    a = generate_periodic(8, seed=5, min_length=300, max_length=900)
    b = generate_periodic(8, seed=5, min_length=300, max_length=900)
    c = generate_periodic(3, seed=5, min_length=300, max_length=900)
    d = generate_periodic(8, seed=6, min_length=300, max_length=900)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.target, y.target)
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x.target, y.target)
    assert not any(np.array_equal(x.target, y.target) for x, y in zip(a, d))
    assert all(300 <= len(s) <= 900 and s.dataset == "periodic" and np.isfinite(s.target).all() for s in a)
    with pytest.raises(ValueError, match="min_length"):
        generate_periodic(1, min_length=10, max_length=5)


def test_periodic_series_repeat_at_their_period():
    """The point of the generator: one cycle back predicts much better than the last value (Seasonal Naive vs
    Naive, computed here independently of any forecasting code), most of all on the near-clean series."""
    from data_prep.synthetic import generate_periodic

    ratios, clean_ratios = [], []
    for s in generate_periodic(200, seed=0):
        period, y = s.attributes["period"], s.target
        if not 8 <= period <= len(y) / 3:  # the last value is a fair guess for short cycles; need 2+ cycles
            continue
        lag = int(round(period))
        origins = np.arange(lag, len(y) - lag + 1, lag)  # forecast y[o : o + lag] from what precedes o
        snaive = np.mean([np.abs(y[o:o + lag] - y[o - lag:o]).mean() for o in origins])
        naive = np.mean([np.abs(y[o:o + lag] - y[o - 1]).mean() for o in origins])
        ratios.append(snaive / naive)
        if s.attributes["noise_sd"] < 0.05:
            clean_ratios.append(snaive / naive)
    assert len(ratios) > 100 and len(clean_ratios) > 20
    assert np.median(ratios) < 0.4, np.median(ratios)
    assert np.median(clean_ratios) < 0.2, np.median(clean_ratios)
