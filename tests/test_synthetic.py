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
