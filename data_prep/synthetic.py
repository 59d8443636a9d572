"""Seeded synthetic series: KernelSynth-style Gaussian-process samples (Chronos, Ansari et al. 2024), simple
seasonal / trend / noise / intermittent generators, and periodic series (harmonic cycles of any period with
trend, level shifts and noise: the long clean cycles a model must learn to continue).

Every series i of a call is drawn from its own generator seeded by (seed, kind, i), so the same seed gives the same
series, and the first k series do not depend on how many are asked for.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from data_prep.series import Series

# --- KernelSynth -------------------------------------------------------------------------------------------------
# Periods (in time steps) of the periodic kernels: daily/weekly/yearly cycles of common frequencies, as in Chronos'
# kernel bank (ExpSineSquared periodicities 24, 48, 96, 168, 336, 672, 7, 14, 30, 60, 365, 730, 4, 26, 52, 6, 12).
PERIODS = (4, 6, 7, 12, 14, 24, 26, 30, 48, 52, 60, 96, 168, 336, 365, 672, 730)
_MAX_GRID = 256  # the GP is sampled on at most this many points, then linearly interpolated to the full length
_KERNEL_TYPES = ("periodic", "rbf", "linear", "rational_quadratic", "white", "constant")


def _lag_index(grid: int) -> np.ndarray:
    i = np.arange(grid)
    return np.abs(i[:, None] - i[None, :])


def _kernel(kind: str, rng: np.random.Generator, x: np.ndarray, length: int, lags: np.ndarray) -> np.ndarray | None:
    """One kernel matrix on the uniform grid x ∈ [0, 1] (None when a drawn periodic kernel would be
    under-resolved). Stationary kernels are evaluated once per lag and gathered through `lags` = |i - j|."""
    grid = len(x)
    d = x - x[0]  # distance for each lag on the uniform grid
    if kind == "periodic":
        period = rng.choice(PERIODS)
        if period * grid / length < 4:  # fewer than 4 grid points per cycle: cannot be represented
            return None
        p = period / length
        ls = rng.choice([0.5, 1.0, 2.0])
        return np.exp(-2.0 * np.sin(np.pi * d / p) ** 2 / ls**2)[lags]
    if kind == "rbf":
        ls = rng.choice([0.05, 0.1, 0.3, 1.0])
        return np.exp(-0.5 * d**2 / ls**2)[lags]
    if kind == "linear":
        sigma0 = rng.choice([0.0, 1.0, 10.0])
        return sigma0**2 + x[:, None] * x[None, :]
    if kind == "rational_quadratic":
        alpha = rng.choice([0.1, 1.0, 10.0])
        ls = rng.choice([0.1, 0.3, 1.0])
        return ((1.0 + d**2 / (2.0 * alpha * ls**2)) ** (-alpha))[lags]
    if kind == "white":
        return np.eye(grid) * rng.choice([0.01, 0.1])
    if kind == "constant":
        return np.full((grid, grid), rng.choice([0.1, 1.0]))
    raise ValueError(f"unknown kernel type {kind!r}")


def random_kernel(rng: np.random.Generator, x: np.ndarray, length: int, max_kernels: int = 5) -> tuple[np.ndarray, str]:
    """Compose 1..max_kernels kernels from the bank with random + / × ; returns (matrix, description)."""
    n = int(rng.integers(1, max_kernels + 1))
    lags = _lag_index(len(x))
    parts: list[tuple[np.ndarray, str]] = []
    while len(parts) < n:
        kind = _KERNEL_TYPES[int(rng.integers(len(_KERNEL_TYPES)))]
        k = _kernel(kind, rng, x, length, lags)
        if k is not None:
            parts.append((k, kind))
    matrix, desc = parts[0]
    for k, kind in parts[1:]:
        if rng.random() < 0.5:
            matrix, desc = matrix + k, f"({desc} + {kind})"
        else:
            matrix, desc = matrix * k, f"({desc} * {kind})"
    return matrix, desc


def sample_gp(cov: np.ndarray, rng: np.random.Generator, max_tries: int = 6) -> np.ndarray:
    """One zero-mean draw with covariance `cov`: Cholesky with growing jitter (1e-6 × mean diagonal, ×10 per try),
    falling back to an eigen-decomposition with clipped eigenvalues if Cholesky never succeeds."""
    n = len(cov)
    cov = 0.5 * (cov + cov.T)
    scale = float(np.mean(np.diag(cov))) or 1.0
    z = rng.standard_normal(n)
    jitter = 1e-6 * scale
    for _ in range(max_tries):
        try:
            chol = np.linalg.cholesky(cov + jitter * np.eye(n))
            return chol @ z
        except np.linalg.LinAlgError:
            jitter *= 10.0
    vals, vecs = np.linalg.eigh(cov)
    return vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * z)


def _rng(seed: int, stream: int, i: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, i]))


def kernelsynth_series(seed: int, i: int, length: int = 1024, max_kernels: int = 5) -> Series:
    """The i-th KernelSynth series for `seed`."""
    rng = _rng(seed, 1, i)
    grid = min(length, _MAX_GRID)
    x = np.linspace(0.0, 1.0, grid)
    cov, desc = random_kernel(rng, x, length, max_kernels)
    values = sample_gp(cov, rng)
    if grid < length:
        values = np.interp(np.linspace(0.0, 1.0, length), x, values)
    return Series(item_id=f"kernelsynth/{seed}/{i}", target=values, freq="h", start=None, dataset="kernelsynth",
                  attributes={"kernel": desc})


def generate_kernelsynth(count: int, seed: int = 0, length: int = 1024, max_kernels: int = 5) -> list[Series]:
    """`count` KernelSynth series of `length` points (dataset 'kernelsynth')."""
    if length < 2:
        raise ValueError(f"kernelsynth length must be at least 2, got {length}")
    return [kernelsynth_series(seed, i, length, max_kernels) for i in range(count)]


# --- simple generators ---------------------------------------------------------------------------------------------
_FREQ_PERIODS = {"h": (24, 168), "D": (7, 365), "W": (52,), "MS": (12,), "QS": (4,), "30min": (48, 336)}


def _seasonal(rng: np.random.Generator, t: np.ndarray, freq: str) -> np.ndarray:
    out = np.zeros_like(t)
    for period in _FREQ_PERIODS[freq]:
        if period >= len(t):
            continue
        for harmonic in range(1, int(rng.integers(1, 4)) + 1):
            out += rng.normal(0, 1.0 / harmonic) * np.sin(2 * np.pi * harmonic * t / period + rng.uniform(0, 2 * np.pi))
    return out


def _trend(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    n = len(t)
    kind = rng.integers(4)
    if kind == 0:  # linear
        return rng.normal(0, 3) * t / n
    if kind == 1:  # quadratic
        return rng.normal(0, 3) * (t / n) ** 2 + rng.normal(0, 1) * t / n
    if kind == 2:  # exponential growth / decay
        return np.expm1(rng.normal(0, 1.5) * t / n)
    knots = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))  # piecewise linear
    slopes = rng.normal(0, 3, size=len(knots) + 1) / n
    return np.cumsum(slopes[np.searchsorted(knots, t, side="right")])


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(3)
    eps = rng.standard_normal(n)
    if kind == 0:
        return eps
    if kind == 1:  # AR(1)
        phi = rng.uniform(-0.9, 0.95)
        out = np.empty(n)
        out[0] = eps[0]
        for k in range(1, n):
            out[k] = phi * out[k - 1] + eps[k]
        return out
    return np.cumsum(eps) / np.sqrt(n) * 5.0  # random walk, scaled to stay comparable


def _intermittent(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.uniform(0.05, 0.5)
    occurs = rng.random(n) < p
    sizes = rng.poisson(rng.uniform(1.0, 20.0), size=n) + 1
    return np.where(occurs, sizes, 0).astype(np.float64)


def _series(kind: str, rng: np.random.Generator, length: int) -> tuple[np.ndarray, str]:
    freq = list(_FREQ_PERIODS)[int(rng.integers(len(_FREQ_PERIODS)))]
    t = np.arange(length, dtype=np.float64)
    if kind == "intermittent":
        return _intermittent(rng, length), freq
    level, scale = rng.normal(0, 10), rng.lognormal(0, 1)
    noise_sd = rng.uniform(0.05, 0.5)
    if kind == "seasonal":
        core = _seasonal(rng, t, freq) + 0.3 * _trend(rng, t)
    elif kind == "trend":
        core = _trend(rng, t)
    elif kind == "noise":
        core, noise_sd = _noise(rng, length), 0.0
    elif kind == "mixed":
        core = _seasonal(rng, t, freq) + _trend(rng, t) + 0.3 * _noise(rng, length)
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}")
    return level + scale * (core + noise_sd * rng.standard_normal(length)), freq


SYNTHETIC_KINDS = ("seasonal", "trend", "noise", "intermittent", "mixed")


def synthetic_series(seed: int, i: int, kind: str, length: int, missing_share: float | None = None,
                     shift_share: float | None = None) -> Series:
    """The i-th series of generator `kind` for `seed` (gaps and level shifts: `add_gaps_and_shifts`)."""
    rng = _rng(seed, 2 + SYNTHETIC_KINDS.index(kind), i)
    values, freq = _series(kind, rng, length)
    if kind != "intermittent":  # zeros are its signal; a level shift or a gap would change what it is
        values = add_gaps_and_shifts(values, _rng(seed, 40 + SYNTHETIC_KINDS.index(kind), i), missing_share, shift_share)
    return Series(item_id=f"synthetic/{kind}/{seed}/{i}", target=values, freq=freq, start=pd.Timestamp("2000-01-01"),
                  dataset="synthetic", attributes={"kind": kind})


def generate_synthetic(
    count: int, seed: int = 0, min_length: int = 64, max_length: int = 1024, kinds: tuple[str, ...] = SYNTHETIC_KINDS,
    missing_share: float | None = None, shift_share: float | None = None,
) -> list[Series]:
    """`count` series cycling through `kinds`, lengths drawn in [min_length, max_length] (dataset 'synthetic');
    gaps and level shifts in the given shares of the series (None: `MISSING_SHARE`, `SHIFT_SHARE`)."""
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
    for kind in kinds:
        if kind not in SYNTHETIC_KINDS:
            raise ValueError(f"unknown synthetic kind {kind!r}; known: {', '.join(SYNTHETIC_KINDS)}")
    out = []
    for i in range(count):
        length = int(_rng(seed, 99, i).integers(min_length, max_length + 1))
        out.append(synthetic_series(seed, i, kinds[i % len(kinds)], length, missing_share, shift_share))
    return out


# --- periodic series: cycles of several patches, which real corpora hold few of (EXPERIMENTS.md, 2026-12-01) ---
# Real-valued base periods, log-uniform over this range (points), or one of the calendar periods below.
PERIODIC_RANGE = (4.0, 400.0)
CALENDAR_PERIODS = (7, 12, 24, 48, 52, 96, 144, 168, 336, 365)
# A second, longer cycle as a multiple of the first (daily → weekly, monthly → yearly, ...).
SECOND_CYCLE_MULTIPLES = (4, 7, 12, 52)


def _waveform(rng: np.random.Generator, t: np.ndarray, period: float) -> np.ndarray:
    """One cycle shape: 1–5 harmonics with decaying random amplitudes and phases, unit standard deviation."""
    out = np.zeros_like(t)
    for h in range(1, int(rng.integers(1, 6)) + 1):
        if period / h < 2.5:  # above a third of the sampling rate: aliased, not a shape
            break
        out += rng.normal(0, 1.0 / h) * np.sin(2 * np.pi * h * t / period + rng.uniform(0, 2 * np.pi))
    sd = out.std()
    return out / sd if sd > 0 else out


def _periodic(rng: np.random.Generator, length: int) -> tuple[np.ndarray, float, float]:
    """(values, base period, noise sd relative to the cycle's sd)."""
    t = np.arange(length, dtype=np.float64)
    if rng.random() < 0.5:
        period = float(rng.choice(CALENDAR_PERIODS))
    else:
        period = float(np.exp(rng.uniform(*np.log(PERIODIC_RANGE))))
    core = _waveform(rng, t, period)
    if rng.random() < 0.3:  # multi-seasonal: a longer cycle on top
        long_period = period * float(rng.choice(SECOND_CYCLE_MULTIPLES))
        if long_period < length:
            core += rng.uniform(0.2, 1.0) * _waveform(rng, t, long_period)
    if rng.random() < 0.2:  # slowly varying amplitude
        core *= 1.0 + 0.3 * np.sin(2 * np.pi * t / (length * rng.uniform(1.0, 4.0)) + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.4:  # linear trend: a total drift of N(0, 2) cycle amplitudes
        core += rng.normal(0, 2.0) * t / length
    if rng.random() < 0.15:  # one level shift
        core += rng.normal(0, 1.5) * (t >= rng.integers(length // 4, length))
    noise_sd = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5))))  # from near-clean to noisy
    noise = rng.standard_normal(length)
    if rng.random() < 0.3:  # AR(1) noise
        phi = rng.uniform(0.3, 0.9)
        for k in range(1, length):
            noise[k] += phi * noise[k - 1]
        noise *= np.sqrt(1 - phi**2)
    return rng.normal(0, 10) + rng.lognormal(0, 1) * (core + noise_sd * noise), period, noise_sd


def periodic_series(seed: int, i: int, length: int, missing_share: float | None = None,
                    shift_share: float | None = None) -> Series:
    """The i-th periodic series for `seed` (dataset "periodic"; attributes: base period, relative noise sd)."""
    values, period, noise_sd = _periodic(_rng(seed, 20, i), length)
    values = add_gaps_and_shifts(values, _rng(seed, 22, i), missing_share, shift_share)
    return Series(item_id=f"periodic/{seed}/{i}", target=values, freq="h", start=None, dataset="periodic",
                  attributes={"kind": "periodic", "period": round(period, 3), "noise_sd": round(noise_sd, 4)})


def generate_periodic(count: int, seed: int = 0, min_length: int = 512, max_length: int = 2048,
                      missing_share: float | None = None, shift_share: float | None = None) -> list[Series]:
    """`count` periodic series (harmonic cycles of random period, optional second cycle, trend, level shift,
    amplitude modulation, white or AR(1) noise from 1% to 50% of the cycle's sd), lengths in [min, max]; gaps
    and further level shifts in the given shares of the series (None: `MISSING_SHARE`, `SHIFT_SHARE`)."""
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
    return [periodic_series(seed, i, int(_rng(seed, 21, i).integers(min_length, max_length + 1)), missing_share,
                            shift_share) for i in range(count)]


# --- gaps and level shifts: real series have both, the rest of the corpus almost neither (NaN in 0.2% of its
# values, all in NN5 and Sunspot), so a model trained on it has never seen a zero-filled (missing) patch and
# reads one as a real value at the mean (EXPERIMENTS.md, 2026-12-07, parts 2 and 3).
# Shares of the periodic and synthetic series that get them; 0 keeps the corpus as before (the default until an
# experiment shows otherwise on two seeds).
MISSING_SHARE = 0.0
SHIFT_SHARE = 0.0
GAP_LENGTHS = (8, 96)  # points: half a patch to six patches of 16


def add_gaps_and_shifts(values: np.ndarray, rng: np.random.Generator, missing_share: float | None = None,
                        shift_share: float | None = None) -> np.ndarray:
    """A copy of `values`: with probability `shift_share` one or two level shifts (each N(0, 2) series sds, from a
    point in the last 80%); with probability `missing_share` NaN in scattered points (1-25%), in one to three
    gaps of GAP_LENGTHS points, or both. None takes the module's MISSING_SHARE / SHIFT_SHARE. Draws from `rng`
    only, so the clean values do not depend on the shares."""
    missing_share = MISSING_SHARE if missing_share is None else missing_share
    shift_share = SHIFT_SHARE if shift_share is None else shift_share
    for name, share in (("missing_share", missing_share), ("shift_share", shift_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    out = np.array(values, dtype=np.float64)
    n = len(out)
    u_shift, u_missing, mode = rng.random(3)
    if u_shift < shift_share and n >= 10:
        sd = float(np.nanstd(out)) or 1.0
        for at in rng.integers(n // 5, n, size=int(rng.integers(1, 3))):
            out[at:] += rng.normal(0.0, 2.0) * sd
    if u_missing < missing_share and n >= 10:
        if mode < 2 / 3:  # scattered, alone or with gaps
            out[rng.random(n) < rng.uniform(0.01, 0.25)] = np.nan
        if mode >= 1 / 3:  # gaps, alone or with scattered points
            for _ in range(int(rng.integers(1, 4))):
                length = int(rng.integers(GAP_LENGTHS[0], GAP_LENGTHS[1] + 1))
                start = int(rng.integers(0, max(1, n - length)))
                out[start:start + length] = np.nan
        if np.isnan(out).all():
            out[-1] = values[-1]
    return out


# --- random walks: integrated series whose best forecast is persistence (exchange rates, prices) ---
def _random_walk(rng: np.random.Generator, length: int) -> tuple[np.ndarray, str]:
    """(values, description): a random walk whose increments are Gaussian or Student-t, optionally with
    GARCH(1,1) volatility clusters, AR(1) momentum and drift; additive or geometric (positive values)."""
    parts = []
    if rng.random() < 0.5:
        increments = rng.standard_normal(length)
        parts.append("gaussian")
    else:
        df = rng.uniform(3.0, 10.0)
        increments = rng.standard_t(df, size=length) / np.sqrt(df / (df - 2.0))  # unit variance
        parts.append(f"t{df:.1f}")
    if rng.random() < 0.3:  # volatility clusters
        alpha = rng.uniform(0.05, 0.15)
        beta = rng.uniform(0.75, 0.97 - alpha)
        omega = 1.0 - alpha - beta  # unit long-run variance
        var, prev = 1.0, 0.0
        for k in range(length):
            var = omega + alpha * prev**2 + beta * var
            increments[k] *= np.sqrt(var)
            prev = increments[k]
        parts.append("garch")
    if rng.random() < 0.4:  # momentum or mean reversion in the increments: ARIMA(1, 1, 0)
        phi = rng.uniform(-0.3, 0.7)
        for k in range(1, length):
            increments[k] += phi * increments[k - 1]
        parts.append(f"ar{phi:.2f}")
    if rng.random() < 0.3:
        increments = increments + rng.normal(0, 0.1)  # drift, in increment standard deviations
        parts.append("drift")
    path = np.cumsum(increments)
    if rng.random() < 0.3:  # geometric: log-returns of 0.2-2% per step, like prices and exchange rates
        values = rng.lognormal(0, 2) * np.exp(np.exp(rng.uniform(np.log(0.002), np.log(0.02))) * path)
        parts.append("geometric")
    else:
        values = rng.normal(0, 10) + rng.lognormal(0, 1) * path
    return values, "+".join(parts)


def random_walk_series(seed: int, i: int, length: int) -> Series:
    """The i-th random walk for `seed` (dataset "random_walk"; attribute `kind` names its parts)."""
    values, kind = _random_walk(_rng(seed, 30, i), length)
    return Series(item_id=f"random_walk/{seed}/{i}", target=values, freq="D", start=None, dataset="random_walk",
                  attributes={"kind": kind})


def generate_random_walks(count: int, seed: int = 0, min_length: int = 512, max_length: int = 2048) -> list[Series]:
    """`count` random walks (Gaussian or Student-t increments, optional GARCH volatility, AR(1) momentum,
    drift; additive or geometric), lengths in [min_length, max_length]."""
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
    return [random_walk_series(seed, i, int(_rng(seed, 31, i).integers(min_length, max_length + 1)))
            for i in range(count)]


GENERATORS: dict[str, Callable[..., list[Series]]] = {"kernelsynth": generate_kernelsynth, "synthetic": generate_synthetic,
                                                     "periodic": generate_periodic, "random_walk": generate_random_walks}
