"""Seeded synthetic multivariate groups: V = 2..8 related series sharing a `group_id`, with dependencies between
the variates that a model reading them together can exploit (any-variate pretraining, `train.multivariate_share`;
docs/ARCHITECTURE.md §4). The real multivariate sets (ETT, Exchange) are held out as LSF evaluation sets, so without
these the demo corpus has no group to train on.

Kinds of group (`MULTIVARIATE_KINDS`), each variate with its own level, scale and noise:
- factor: 1-2 latent factors (a cycle plus AR(1) or a random walk); variate v = loadings_v · factors + noise_v.
- lagged: variate 0 a cycle-plus-AR series; variate k >= 1 is variate 0 shifted by lag_k in 1..24 steps (a leading
  indicator), times a gain of random sign, plus noise: x_k[t] = a_k · x_0[t - lag_k] + e_k[t].
- driven: variate 0 an exogenous temperature-like series (a daily cycle of period 24, a slow cycle, AR(1) weather);
  the others are load-like, a response to variate 0 (quadratic around a comfort point, so heating and cooling both
  raise it, lagged by 0-3 steps) plus their own daily profile and noise.
- sum: variates 0..V-2 independent cycle/AR components; the last variate is their weighted sum plus small noise.

Group i of a call is drawn from its own generator seeded by (seed, stream, i), so the same seed gives the same
groups, and the first k groups do not depend on how many are asked for. A group's variates all have one length and
start; they are written as corpus rows with `variate` = 0..V-1 (data_prep.build.synthetic_entries).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.series import Series
from data_prep.synthetic import _rng

DATASET = "multivariate"
MULTIVARIATE_KINDS = ("factor", "lagged", "driven", "sum")
MAX_LAG = 24  # steps a lagged variate trails variate 0 by, at most
_STREAM, _LENGTH_STREAM = 60, 61  # seed streams of the groups and of their lengths (see data_prep.synthetic._rng)
_PERIODS = (12, 24, 48, 96, 168)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise."""
    eps = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = eps[0]
    scale = np.sqrt(1.0 - phi**2)
    for k in range(1, n):
        out[k] = phi * out[k - 1] + scale * eps[k]
    return out


def _cycle(rng: np.random.Generator, t: np.ndarray, period: float) -> np.ndarray:
    """1-3 harmonics of `period` with random amplitudes and phases, unit standard deviation."""
    out = np.zeros_like(t)
    for h in range(1, int(rng.integers(1, 4)) + 1):
        out += rng.normal(0, 1.0 / h) * np.sin(2 * np.pi * h * t / period + rng.uniform(0, 2 * np.pi))
    sd = out.std()
    return out / sd if sd > 0 else out


def _component(rng: np.random.Generator, n: int) -> np.ndarray:
    """A unit-scale driver: a cycle plus AR(1) noise, or a random walk."""
    t = np.arange(n, dtype=np.float64)
    if rng.random() < 0.25:
        walk = np.cumsum(rng.standard_normal(n))
        return (walk - walk.mean()) / (walk.std() or 1.0)
    return _cycle(rng, t, float(rng.choice(_PERIODS))) + rng.uniform(0.2, 1.0) * _ar1(rng, n, rng.uniform(0.3, 0.95))


def _factor(rng: np.random.Generator, n: int, v: int) -> np.ndarray:
    k = int(rng.integers(1, 3))
    factors = np.stack([_component(rng, n) for _ in range(k)])  # [K, n]
    loadings = rng.normal(0, 1, size=(v, k))  # [V, K]
    noise_sd = rng.uniform(0.05, 0.5, size=(v, 1))
    return loadings @ factors + noise_sd * rng.standard_normal((v, n))


def _lagged(rng: np.random.Generator, n: int, v: int) -> tuple[np.ndarray, list[int]]:
    base = _component(rng, n + MAX_LAG)  # variate 0 is base[MAX_LAG:]; lag L reads base[MAX_LAG - L:][:n]
    lags = [0] + [int(x) for x in rng.integers(1, MAX_LAG + 1, size=v - 1)]
    out = np.empty((v, n))
    for j, lag in enumerate(lags):
        gain = 1.0 if j == 0 else rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])
        noise_sd = 0.05 if j == 0 else rng.uniform(0.05, 0.3)
        out[j] = gain * base[MAX_LAG - lag:MAX_LAG - lag + n] + noise_sd * rng.standard_normal(n)
    return out, lags


def _driven(rng: np.random.Generator, n: int, v: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    slow = np.sin(2 * np.pi * t / rng.uniform(500.0, 3000.0) + rng.uniform(0, 2 * np.pi))
    temp = 15.0 + rng.uniform(3.0, 8.0) * np.sin(2 * np.pi * (t - rng.uniform(0, 24)) / 24.0) \
        + rng.uniform(3.0, 10.0) * slow + rng.uniform(1.0, 3.0) * _ar1(rng, n, rng.uniform(0.8, 0.98))
    out = np.empty((v, n))
    out[0] = temp
    for j in range(1, v):
        comfort, lag = rng.uniform(12.0, 20.0), int(rng.integers(0, 4))
        shifted = np.concatenate([np.full(lag, temp[0]), temp[:n - lag]])
        response = rng.uniform(0.2, 1.0) * (shifted - comfort) ** 2 / 10.0 + rng.normal(0, 0.5) * (shifted - comfort)
        profile = rng.uniform(0.5, 2.0) * _cycle(rng, t, 24.0)
        out[j] = response + profile + rng.uniform(0.1, 0.5) * rng.standard_normal(n)
    return out


def _sum(rng: np.random.Generator, n: int, v: int) -> np.ndarray:
    parts = np.stack([_component(rng, n) * rng.uniform(0.5, 2.0) for _ in range(v - 1)])  # [V-1, n]
    weights = rng.uniform(0.3, 1.5, size=v - 1)
    total = weights @ parts + 0.05 * rng.standard_normal(n)
    return np.concatenate([parts, total[None]])


def multivariate_group(seed: int, i: int, length: int, min_variates: int = 2, max_variates: int = 8) -> list[Series]:
    """The i-th group for `seed`: V series of `length` points (variate v = list index), one group_id, dataset
    "multivariate"; attributes name the kind (and a lagged group's lag of each variate)."""
    rng = _rng(seed, _STREAM, i)
    kind = MULTIVARIATE_KINDS[i % len(MULTIVARIATE_KINDS)]
    v = int(rng.integers(min_variates, max_variates + 1))
    lags: list[int] | None = None
    if kind == "factor":
        values = _factor(rng, length, v)
    elif kind == "lagged":
        values, lags = _lagged(rng, length, v)
    elif kind == "driven":
        values = _driven(rng, length, v)
    else:
        values = _sum(rng, length, v)
    if kind != "driven":  # driven groups keep their physical units (temperature around 15)
        values = rng.normal(0, 10, size=(v, 1)) + rng.lognormal(0, 1, size=(v, 1)) * values
    group_id = f"{DATASET}/{seed}/{i}"
    out = []
    for j in range(v):
        attributes = {"kind": kind, "variates": v}
        if lags is not None:
            attributes["lag"] = lags[j]
        out.append(Series(item_id=f"{group_id}/{j}", target=values[j], freq="h", start=pd.Timestamp("2000-01-01"),
                          dataset=DATASET, group_id=group_id, attributes=attributes))
    return out


def generate_multivariate_groups(count: int, seed: int = 0, min_length: int = 512, max_length: int = 2048,
                                 min_variates: int = 2, max_variates: int = 8) -> list[list[Series]]:
    """`count` groups cycling through MULTIVARIATE_KINDS, lengths in [min_length, max_length], V in
    [min_variates, max_variates]."""
    if not MAX_LAG < min_length <= max_length:
        raise ValueError(f"need {MAX_LAG} < min_length <= max_length, got {min_length}, {max_length}")
    if not 2 <= min_variates <= max_variates:
        raise ValueError(f"need 2 <= min_variates <= max_variates, got {min_variates}, {max_variates}")
    return [multivariate_group(seed, i, int(_rng(seed, _LENGTH_STREAM, i).integers(min_length, max_length + 1)),
                               min_variates, max_variates) for i in range(count)]
