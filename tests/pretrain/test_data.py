"""Window sampler and packer: packing layout, provenance of values, determinism, resumability, mixtures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data_prep.corpus import CorpusError, open_corpus
from pretrain.data import WindowSampler, mixture_probabilities, pack_windows, sample_window, series_weights

STRIDE = 100_000  # series r holds r * STRIDE + t at time t: every value names its series and position


def write_corpus(path, specs, nan_rate=0.1, seed=0):
    """specs: list of (dataset, length); values encode (row, t); a share of values is NaN."""
    import datasets

    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("item_id", "dataset", "freq", "start", "target", "group_id", "source")}
    for row, (name, length) in enumerate(specs):
        y = (row * STRIDE + np.arange(length)).astype(np.float32)
        y[rng.random(length) < nan_rate] = np.nan
        cols["item_id"].append(f"{name}-{row}")
        cols["dataset"].append(name)
        cols["freq"].append("D")
        cols["start"].append(pd.Timestamp("2021-01-01"))
        cols["target"].append(y.tolist())
        cols["group_id"].append(f"{name}-{row}")
        cols["source"].append("test")
    datasets.Dataset.from_dict(cols).save_to_disk(str(path))
    return path


def make_sampler(corpus, **kw):
    args = dict(patch_size=4, seq_patches=16, min_window_patches=2, max_windows_per_series=4, seed=0)
    args.update(kw)
    return WindowSampler(corpus, **args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    specs = [("short", n) for n in (1, 3, 5, 9, 13)] + [("long", n) for n in (50, 200, 1000)] + [("mid", 30)] * 4
    return open_corpus(write_corpus(tmp_path_factory.mktemp("c") / "corpus", specs))


def split_windows(target, sample_id, patch_size):
    """Per sample id: (first patch, values over its patches)."""
    out = {}
    for sid in np.unique(sample_id[sample_id > 0]):
        patches = np.flatnonzero(sample_id == sid)
        out[int(sid)] = (int(patches[0]), target[patches[0] * patch_size:(patches[-1] + 1) * patch_size])
    return out


# ---- pure functions -------------------------------------------------------------------------------

def test_pack_windows_layout_and_values():
    windows = [np.arange(5, dtype=np.float32), np.array([7.0, np.nan, 9.0], np.float32), np.arange(8, dtype=np.float32)]
    target, sid = pack_windows(windows, seq_patches=6, patch_size=4)
    assert target.shape == (24,) and sid.shape == (6,)
    assert sid.tolist() == [1, 1, 2, 3, 3, 0]
    np.testing.assert_array_equal(target[0:5], windows[0])
    assert np.isnan(target[5:8]).all()  # unused tail of window 1's last patch
    np.testing.assert_array_equal(target[8:11], windows[1])  # starts at patch boundary 2
    assert np.isnan(target[11])
    np.testing.assert_array_equal(target[12:20], windows[2])
    assert np.isnan(target[20:]).all()  # padding patch


def test_pack_windows_rejects_overflow_and_empty():
    with pytest.raises(ValueError, match="more than 2 patches"):
        pack_windows([np.ones(5, np.float32), np.ones(4, np.float32)], seq_patches=2, patch_size=4)
    with pytest.raises(ValueError, match="empty"):
        pack_windows([np.ones(0, np.float32)], seq_patches=2, patch_size=4)


def test_sample_window_bounds():
    rng = np.random.default_rng(1)
    for length in (1, 3, 8, 9, 100):
        for _ in range(200):
            start, wlen = sample_window(rng, length, min_len=8, max_len=20)
            assert min(length, 8) <= wlen <= min(length, 20)
            assert 0 <= start and start + wlen <= length
    lengths = {sample_window(rng, 100, 8, 20)[1] for _ in range(500)}
    assert lengths == set(range(8, 21))  # every allowed length occurs


def test_mixture_probabilities_rules():
    names, counts = ["a", "b", "c"], [10, 30, 60]
    np.testing.assert_allclose(mixture_probabilities(names, counts, {}, "series"), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(mixture_probabilities(names, counts, {}, "uniform"), [1 / 3] * 3)
    points = [900, 0, 100]
    np.testing.assert_allclose(mixture_probabilities(names, counts, {}, "points", points), [0.9, 0, 0.1])
    np.testing.assert_allclose(mixture_probabilities(names, counts, {}, "sqrt_points", points), [0.75, 0, 0.25])
    with pytest.raises(ValueError, match="needs point_counts"):
        mixture_probabilities(names, counts, {}, "points")
    np.testing.assert_allclose(mixture_probabilities(names, counts, {"a": 1, "c": 3}, "series"), [0.25, 0, 0.75])
    with pytest.raises(CorpusError, match=r"\['zz'\]"):
        mixture_probabilities(names, counts, {"a": 1, "zz": 1}, "series")
    # sqrt_series: weights 1 : 3 : 4 for 1 : 9 : 16 series
    np.testing.assert_allclose(mixture_probabilities(names, [1, 9, 16], {}, "sqrt_series"), [1 / 8, 3 / 8, 4 / 8])
    # shares: "b" fixed at 0.5, "a" and "c" split the other half by series count (10 : 60)
    np.testing.assert_allclose(mixture_probabilities(names, counts, {}, "series", shares={"b": 0.5}),
                               [0.5 * 10 / 70, 0.5, 0.5 * 60 / 70])
    with pytest.raises(CorpusError, match=r"mixture_share names dataset\(s\) \['zz'\].*--periodic-count N"):
        mixture_probabilities(names, counts, {}, "series", shares={"zz": 0.2})


def test_series_weights_capped_window_count():
    np.testing.assert_array_equal(series_weights(np.array([1, 64, 65, 640, 10**6]), 64, 4), [1, 1, 2, 4, 4])


# ---- corpus loading --------------------------------------------------------------------------------

def test_all_missing_corpus_is_rejected(tmp_path):
    corpus = open_corpus(write_corpus(tmp_path / "c", [("x", 10), ("x", 20)], nan_rate=1.1))
    with pytest.raises(CorpusError, match="all 2 series are empty or entirely missing"):
        make_sampler(corpus)


# ---- sampler ---------------------------------------------------------------------------------------

def test_batches_are_packed_source_slices(corpus):
    sampler = make_sampler(corpus)
    p, n = sampler.patch_size, sampler.seq_patches
    batch = sampler.next_batch(32)
    target, sid = batch["target"].numpy(), batch["sample_id"].numpy()
    assert target.shape == (32, n * p) and target.dtype == np.float32
    assert sid.shape == (32, n) and sid.dtype == np.int64
    multi = 0
    for b in range(32):
        ids = sid[b]
        used = ids[ids > 0]
        # ids run 1..m in order, each a contiguous block, padding only at the end
        assert used.tolist() == sorted(used.tolist()) and set(used.tolist()) == set(range(1, used.max() + 1))
        assert (ids[len(used):] == 0).all()
        assert np.isnan(target[b, len(used) * p:]).all()
        multi += used.max() > 1
        for s, (first, vals) in split_windows(target[b], ids, p).items():
            obs = np.flatnonzero(~np.isnan(vals))
            assert len(obs) > 0, "an all-missing window was packed"
            v0 = vals[obs[0]]
            row, t0 = int(v0 // STRIDE), int(v0 % STRIDE) - int(obs[0])  # series and start of the window
            src = corpus.values(row)
            wlen = int(obs[-1]) + 1
            assert t0 >= 0 and t0 + wlen <= len(src)
            np.testing.assert_array_equal(vals[:wlen], src[t0:t0 + wlen])  # NaNs included, same places
            n_patches = len(vals) // p
            assert wlen <= n_patches * p and t0 + (n_patches - 1) * p < len(src)  # the window reaches its last patch
    assert multi > 0, "no row packed more than one window"
    assert sampler.rows == 32 and sampler.windows >= 32


def test_window_lengths_respect_min_and_free_space(corpus):
    sampler = make_sampler(corpus, seq_patches=8, min_window_patches=3)
    for _ in range(50):
        windows = sampler.next_windows()
        patches = [math.ceil(len(w) / 4) for w in windows]
        assert sum(patches) <= 8
        assert 8 - sum(patches) < 3  # stops only when fewer than min_window_patches are free
        for w in windows:  # >= 3 patches, or the whole series when it is shorter
            v0 = w[~np.isnan(w)][0]
            assert len(w) >= min(corpus.lengths[int(v0 // STRIDE)], 12)


def test_same_seed_same_batches_other_seed_or_rank_differs(corpus):
    a, b = make_sampler(corpus, seed=3), make_sampler(corpus, seed=3)
    for _ in range(3):
        x, y = a.next_batch(4), b.next_batch(4)
        np.testing.assert_array_equal(x["target"].numpy(), y["target"].numpy())
        np.testing.assert_array_equal(x["sample_id"].numpy(), y["sample_id"].numpy())
    c = make_sampler(corpus, seed=4).next_batch(4)["target"].numpy()
    d = make_sampler(corpus, seed=3, rank=1).next_batch(4)["target"].numpy()
    first = make_sampler(corpus, seed=3).next_batch(4)["target"].numpy()
    assert not np.array_equal(c, first, equal_nan=True)
    assert not np.array_equal(d, first, equal_nan=True)


def test_state_dict_resumes_the_same_stream(corpus):
    import json

    full = make_sampler(corpus, seed=7)
    expected = [full.next_batch(3) for _ in range(5)]
    part = make_sampler(corpus, seed=7)
    for _ in range(2):
        part.next_batch(3)
    state = json.loads(json.dumps(part.state_dict()))  # survives a JSON round trip
    resumed = make_sampler(corpus, seed=7)
    resumed.load_state_dict(state)
    assert resumed.rows == 6
    for want in expected[2:]:
        got = resumed.next_batch(3)
        np.testing.assert_array_equal(got["target"].numpy(), want["target"].numpy())
        np.testing.assert_array_equal(got["sample_id"].numpy(), want["sample_id"].numpy())
    assert resumed.state_dict() == full.state_dict()


def test_state_from_other_config_is_refused(corpus):
    state = make_sampler(corpus, seed=1).state_dict()
    with pytest.raises(CorpusError, match="seed"):
        make_sampler(corpus, seed=2).load_state_dict(state)
    with pytest.raises(CorpusError, match="seq_patches"):
        make_sampler(corpus, seed=1, seq_patches=8).load_state_dict(state)


def test_mixture_weights_drive_dataset_frequencies(corpus):
    sampler = make_sampler(corpus, mixture={"short": 1.0, "long": 3.0}, seed=5)
    draws = [corpus.dataset[sampler.draw_series()] for _ in range(4000)]
    share_long = draws.count("long") / len(draws)
    assert "mid" not in draws
    assert abs(share_long - 0.75) < 0.03
    by_series = make_sampler(corpus, seed=5)  # default: proportional to series counts (5, 3, 4 of 12)
    draws = [corpus.dataset[by_series.draw_series()] for _ in range(4000)]
    assert abs(draws.count("short") / 4000 - 5 / 12) < 0.03


def test_long_series_drawn_by_capped_window_count(corpus):
    sampler = make_sampler(corpus, mixture={"long": 1.0}, seed=2)  # lengths 50, 200, 1000; window 64; cap 4
    rows = np.array([sampler.draw_series() for _ in range(4000)])
    counts = np.bincount(rows, minlength=len(corpus))[5:8] / 4000
    np.testing.assert_allclose(counts, np.array([1, 4, 4]) / 9, atol=0.03)


def test_all_missing_windows_are_skipped(tmp_path):
    import datasets

    y = np.full(400, np.nan, np.float32)
    y[390:] = 1.0  # only the very end is observed: most windows are all-missing
    cols = {"item_id": ["x"], "dataset": ["d"], "target": [y.tolist()]}
    datasets.Dataset.from_dict(cols).save_to_disk(str(tmp_path / "c"))
    sampler = make_sampler(open_corpus(tmp_path / "c"), seq_patches=4, min_window_patches=1)
    batch = sampler.next_batch(8)
    assert sampler.skipped > 0
    for b in range(8):
        for _, (_, vals) in split_windows(batch["target"][b].numpy(), batch["sample_id"][b].numpy(), 4).items():
            assert (~np.isnan(vals)).any()
