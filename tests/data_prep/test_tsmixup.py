"""TSMixup (data_prep.tsmixup): mixes are convex combinations of mean-scaled windows of the pool, seeded, within
the length bounds; prepare appends them after decontamination, and the leak check still passes."""
import json
import re

import numpy as np
import pytest

from data_prep import leak_check, prepare
from data_prep.corpus import load_corpus_dataset
from data_prep.tsmixup import generate_tsmixup


def _pool(n: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(10 * (i + 1), 1 + i, size=int(rng.integers(150, 900))) for i in range(n)]


def test_mixes_of_constant_series_are_exactly_one():
    """Each window is divided by its mean |value| and the weights sum to 1, so positive constants of any level mix to 1."""
    pool = [np.full(300 + 7 * i, level) for i, level in enumerate([0.5, 3.0, 40.0, 1e4, 7.0])]
    for s in generate_tsmixup(pool, ["h"] * 5, 40, seed=3, min_length=16, max_length=400):
        np.testing.assert_allclose(s.target, 1.0, rtol=1e-6)


def _scaled_window_offset(target: np.ndarray, pool: list[np.ndarray]) -> int | None:
    """Independent search: the offset of a window of a pool series that, divided by its own mean |value|, equals
    `target`; None when there is none."""
    n = len(target)
    for series in pool:
        if len(series) < n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(series, n)
        scaled = windows / np.abs(windows).mean(axis=1, keepdims=True)
        hits = np.flatnonzero(np.all(np.abs(scaled - target) < 1e-5, axis=1))
        if hits.size:
            return int(hits[0])
    return None


def test_single_component_mix_is_a_scaled_window_of_a_pool_series():
    pool = _pool()
    mixes = generate_tsmixup(pool, ["h"] * len(pool), 30, seed=1, max_components=1, min_length=128, max_length=140)
    offsets = [_scaled_window_offset(s.target, pool) for s in mixes]
    assert None not in offsets and len(set(offsets)) > 10  # windows start anywhere in their series
    several = generate_tsmixup(pool, ["h"] * len(pool), 30, seed=1, max_components=3)
    singles = sum(_scaled_window_offset(s.target, pool) is not None for s in several)
    assert 3 <= singles <= 20  # k ~ U{1, 2, 3}: about a third are one window, the rest blend several


def test_lengths_components_and_seeding():
    pool = _pool()
    freqs = ["h", "D", "W"] * 4
    mixes = list(generate_tsmixup(pool, freqs, 50, seed=7, max_length=600))
    longest = max(len(p) for p in pool)
    assert all(128 <= len(s) <= min(600, longest) for s in mixes)
    assert len({len(s) for s in mixes}) > 10 and {s.freq for s in mixes} <= set(freqs)
    assert [s.item_id for s in mixes[:3]] == ["tsmixup/7/0", "tsmixup/7/1", "tsmixup/7/2"]
    again = list(generate_tsmixup(pool, freqs, 20, seed=7, max_length=600))  # a prefix of the larger count
    assert all(np.array_equal(a.target, b.target) for a, b in zip(again, mixes))
    other = next(generate_tsmixup(pool, freqs, 1, seed=8, max_length=600))
    assert not np.array_equal(other.target[:128], mixes[0].target[:128])


def test_missing_values_stay_missing_and_short_pools_are_refused():
    series = np.arange(1, 301, dtype=np.float64)
    series[50:60] = np.nan
    s = next(generate_tsmixup([series], ["h"], 1, seed=0, min_length=300, max_length=300))
    assert np.isnan(s.target[50:60]).all() and np.isfinite(np.delete(s.target, range(50, 60))).all()
    np.testing.assert_allclose(s.target[0], 1 / np.nanmean(series), rtol=1e-6)
    with pytest.raises(ValueError, match=r"no real series of at least 128 points to mix \(2 candidates, longest 100\)"):
        list(generate_tsmixup([np.ones(100), np.ones(50)], ["h", "h"], 1))
    assert list(generate_tsmixup([np.ones(100)], ["h"], 0)) == []  # nothing asked, nothing needed


def test_prepare_appends_mixes_of_decontaminated_real_rows(tmp_path, capsys):
    args = ["--datasets", "m4_hourly,tourism_monthly,car_parts", "--max-series-per-dataset", "8", "--synthetic-count",
            "3", "--kernelsynth-count", "0", "--periodic-count", "0"]
    assert prepare.main(["--out", str(tmp_path / "c"), *args, "--tsmixup-count", "6"]) == 0
    assert re.search(r"^tsmixup +6 +\d+  seed 0, mixed from 16 real series$", capsys.readouterr().out, re.M)
    corpus = load_corpus_dataset(tmp_path / "c").to_pandas()
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["tsmixup_count"] == 6 and manifest["rows"] == len(corpus)
    mixed = corpus[corpus.dataset == "tsmixup"]
    assert len(mixed) == 6 and all(len(t) >= 128 for t in mixed.target)
    source = next(s for s in manifest["sources"] if s["name"] == "tsmixup")
    assert source["series"] == 6 and source["points"] == sum(len(t) for t in mixed.target)
    assert source["note"] == "seed 0, mixed from 16 real series"  # car_parts' 39-point series are too short to mix
    assert leak_check.main([str(tmp_path / "c"), "--datasets", "m4_hourly,tourism_monthly,car_parts"]) == 0
    assert prepare.main(["--out", str(tmp_path / "none"), *args, "--tsmixup-count", "0"]) == 0
    assert "tsmixup" not in set(load_corpus_dataset(tmp_path / "none")["dataset"])


def test_prepare_without_long_real_series_says_how_to_skip_mixing(tmp_path):
    with pytest.raises(SystemExit, match=r"no real series of at least 128 points to mix \(4 candidates, longest \d+\); "
                                         r"pass --tsmixup-count 0"):
        prepare.main(["--out", str(tmp_path / "c"), "--datasets", "tourism_yearly", "--max-series-per-dataset", "4",
                      "--synthetic-count", "0", "--kernelsynth-count", "0", "--periodic-count", "0"])
    assert not (tmp_path / "c").exists()  # no half-made corpus
