"""TSMixup: new training series as convex combinations of real ones (Ansari et al., 2024, "Chronos", §4.1).

Each mixed series takes k ~ U{1..max_components} distinct real series, cuts a window of one common length
l ~ U[min_length, max_length] (capped by the shortest chosen series) at a random offset from each, divides
every window by its mean absolute value, and sums them with Dirichlet(alpha) weights. The result keeps the
texture of real data (seasonality, noise, level changes) in combinations the corpus does not hold.

`moe-ts prepare --tsmixup-count N` mixes the real rows of the decontaminated corpus (data_prep.prepare), so a
mixed series can only hold values the leak check already passed. Series are seeded per index: the first n of
a larger count are the same n series.

Shape legend: k mixed components, l window length.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from data_prep.series import Series

DATASET = "tsmixup"
_STREAM = 31  # seed-sequence stream id, distinct from the synthetic generators'
MIN_LENGTH = 128  # shortest window mixed (Chronos: 128)
MAX_LENGTH = 2048


def mean_scaled(window: np.ndarray) -> np.ndarray:
    """`window` divided by the mean absolute value of its observed points (unchanged when that is 0 or undefined)."""
    observed = np.abs(window[~np.isnan(window)])
    scale = observed.mean() if observed.size else 0.0
    return window / scale if np.isfinite(scale) and scale > 0 else window.astype(np.float64)


def mix_one(pool: Sequence[np.ndarray], freqs: Sequence[str], seed: int, index: int, *, max_components: int = 3,
            alpha: float = 1.5, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH) -> Series:
    """The `index`-th mixed series of `pool` (targets of at least `min_length` points) under `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, index]))
    k = int(rng.integers(1, min(max_components, len(pool)) + 1))
    chosen = rng.choice(len(pool), size=k, replace=False)
    length = min(int(rng.integers(min_length, max_length + 1)), min(len(pool[j]) for j in chosen))
    windows_kl = np.stack([
        mean_scaled(np.asarray(pool[j][s:s + length], dtype=np.float64))
        for j, s in ((j, int(rng.integers(0, len(pool[j]) - length + 1))) for j in chosen)
    ])
    weights_k = rng.dirichlet(np.full(k, alpha))
    target_l = weights_k @ windows_kl  # a NaN in any component stays a missing point
    return Series(item_id=f"{DATASET}/{seed}/{index}", target=target_l, freq=freqs[chosen[np.argmax(weights_k)]],
                  start=None, dataset=DATASET)


def generate_tsmixup(pool: Sequence[np.ndarray], freqs: Sequence[str], count: int, seed: int = 0, *,
                     max_components: int = 3, alpha: float = 1.5, min_length: int = MIN_LENGTH,
                     max_length: int = MAX_LENGTH) -> Iterator[Series]:
    """`count` mixed series from the members of `pool` with at least `min_length` points (`freqs` aligned with it).

    Raises ValueError when no member is long enough to mix."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"tsmixup: need 1 <= min_length <= max_length, got {min_length} and {max_length}")
    if max_components < 1 or alpha <= 0:
        raise ValueError(f"tsmixup: need max_components >= 1 and alpha > 0, got {max_components} and {alpha}")
    keep = [i for i, target in enumerate(pool) if len(target) >= min_length]
    if count and not keep:
        raise ValueError(f"tsmixup: no real series of at least {min_length} points to mix "
                         f"({len(pool)} candidates, longest {max((len(t) for t in pool), default=0)})")
    if len(keep) == len(pool):  # a pool already filtered (e.g. rows read on demand): used as it is
        long_pool, long_freqs = pool, freqs
    else:
        long_pool, long_freqs = [pool[i] for i in keep], [freqs[i] for i in keep]
    for index in range(count):
        yield mix_one(long_pool, long_freqs, seed, index, max_components=max_components, alpha=alpha,
                      min_length=min_length, max_length=max_length)
