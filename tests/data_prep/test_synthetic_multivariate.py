"""Synthetic multivariate groups (issue 27): one group_id and length per group, consecutive variates, seeded, the
planted dependencies are really there, and `moe-ts prepare --multivariate-count` writes groups that any-variate
pretraining finds while the default corpus stays as it was."""
import json

import numpy as np
import pytest

from data_prep import prepare
from data_prep.corpus import load_corpus_dataset, open_corpus
from data_prep.synthetic_multivariate import MAX_LAG, MULTIVARIATE_KINDS, generate_multivariate_groups
from pretrain.data import SeriesIndex
from pretrain.variate_groups import VariateGroups

SMALL = ["--no-registered", "--synthetic-count", "5", "--kernelsynth-count", "2", "--kernelsynth-length", "128",
         "--periodic-count", "3", "--tsmixup-count", "0"]


def test_groups_share_one_id_and_length_with_variates_in_order():
    groups = generate_multivariate_groups(12, seed=1, min_length=100, max_length=300)
    ids = set()
    for i, group in enumerate(groups):
        assert 2 <= len(group) <= 8
        assert {s.group_id for s in group} == {f"multivariate/1/{i}"}
        assert len({len(s) for s in group}) == 1 and 100 <= len(group[0]) <= 300
        assert [s.item_id for s in group] == [f"multivariate/1/{i}/{v}" for v in range(len(group))]
        assert all(s.dataset == "multivariate" and np.isfinite(s.target).all() for s in group)
        assert {s.attributes["kind"] for s in group} == {MULTIVARIATE_KINDS[i % len(MULTIVARIATE_KINDS)]}
        ids |= {s.item_id for s in group}
    assert len(ids) == sum(len(g) for g in groups)
    assert len({len(g) for g in groups}) > 2  # V varies
    with pytest.raises(ValueError, match="min_length"):
        generate_multivariate_groups(1, min_length=MAX_LAG)
    with pytest.raises(ValueError, match="min_variates"):
        generate_multivariate_groups(1, min_variates=1)


def test_groups_are_seeded_and_prefix_stable():
    a = generate_multivariate_groups(6, seed=3, min_length=64, max_length=200)
    b = generate_multivariate_groups(6, seed=3, min_length=64, max_length=200)
    c = generate_multivariate_groups(3, seed=3, min_length=64, max_length=200)
    d = generate_multivariate_groups(6, seed=4, min_length=64, max_length=200)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s.target, t.target)
    for x, y in zip(a, c):
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s.target, t.target)
    assert not any(len(x[0]) == len(y[0]) and np.array_equal(x[0].target, y[0].target) for x, y in zip(a, d))


def _corr(x, y):
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def _r2(y, features):
    """Share of y's variance a least-squares fit on `features` (plus an intercept) explains."""
    design = np.column_stack([np.ones(len(y)), *features])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return 1.0 - float(np.var(y - design @ coef) / np.var(y))


def test_lagged_variates_follow_variate_zero_at_the_planted_lag():
    groups = [g for g in generate_multivariate_groups(16, seed=0) if g[0].attributes["kind"] == "lagged"]
    assert len(groups) == 4
    for group in groups:
        x0 = group[0].target.astype(np.float64)
        assert group[0].attributes["lag"] == 0
        for s in group[1:]:
            lag, xk = s.attributes["lag"], s.target.astype(np.float64)
            assert 1 <= lag <= MAX_LAG
            corr = [abs(_corr(x0[:len(x0) - k], xk[k:])) for k in range(MAX_LAG + 1)]
            assert corr[lag] > 0.9, (s.item_id, lag, corr[lag])
            assert int(np.argmax(corr)) == lag, (s.item_id, lag, int(np.argmax(corr)))


def test_sum_groups_last_variate_is_a_linear_combination_of_the_others():
    groups = [g for g in generate_multivariate_groups(16, seed=2) if g[0].attributes["kind"] == "sum"]
    for group in groups:
        values = np.stack([s.target.astype(np.float64) for s in group])
        assert _r2(values[-1], values[:-1]) > 0.98
        if len(group) >= 3:  # the components themselves are independent draws
            assert _r2(values[0], values[1:-1]) < 0.9


def test_driven_loads_depend_on_the_exogenous_temperature():
    groups = [g for g in generate_multivariate_groups(16, seed=5) if g[0].attributes["kind"] == "driven"]
    for group in groups:
        temp = group[0].target.astype(np.float64)
        t = np.arange(len(temp))
        daily = [f(2 * np.pi * h * t / 24) for h in (1, 2, 3) for f in (np.sin, np.cos)]
        lagged = [np.concatenate([np.full(k, temp[0]), temp[:len(temp) - k]]) for k in range(4)]
        with_temp = daily + lagged + [x**2 for x in lagged]
        for s in group[1:]:
            load = s.target.astype(np.float64)
            alone, driven = _r2(load, daily), _r2(load, with_temp)
            # the daily cycle alone explains part (temperature has one too); temperature removes most of the rest
            assert driven > 0.9 and 1 - driven < 0.25 * (1 - alone), (s.item_id, alone, driven)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv")
    assert prepare.main(["--out", str(root / "plain"), *SMALL]) == 0
    assert prepare.main(["--out", str(root / "zero"), *SMALL, "--multivariate-count", "0"]) == 0
    assert prepare.main(["--out", str(root / "mv"), *SMALL, "--multivariate-count", "6"]) == 0
    return root


def test_prepare_writes_groups_that_any_variate_pretraining_finds(built):
    rows = load_corpus_dataset(built / "mv").to_pandas()
    mv = rows[rows.dataset == "multivariate"]
    expected = generate_multivariate_groups(6, seed=0)
    assert len(mv) == sum(len(g) for g in expected)
    for i, group in enumerate(expected):
        mine = mv[mv.group_id == f"multivariate/0/{i}"]
        assert mine.variate.tolist() == list(range(len(group)))
        for (_, row), s in zip(mine.iterrows(), group):
            np.testing.assert_array_equal(np.asarray(row.target, dtype=np.float32), s.target)
            assert not row.covariate
    corpus = open_corpus(built / "mv")
    index = SeriesIndex(corpus, window_len=64)
    groups = VariateGroups.from_corpus(corpus, index, window_len=64, cap=16)
    assert len(groups) == 6 and groups.num_unaligned == 0
    sizes = sorted(len(groups.rows(g)) for g in range(len(groups)))
    assert sizes == sorted(len(g) for g in expected)
    for g in range(len(groups)):  # each found group is one written group, its rows in variate order
        found = rows.iloc[groups.rows(g)]
        assert found.group_id.nunique() == 1 and found.variate.tolist() == list(range(len(found)))
    manifest = json.loads((built / "mv" / "manifest.json").read_text())
    assert manifest["multivariate_count"] == 6
    assert {s["name"]: s["series"] for s in manifest["sources"]}["multivariate"] == len(mv)


def test_default_prepare_is_unchanged(built):
    plain = load_corpus_dataset(built / "plain").to_pandas()
    assert "multivariate" not in set(plain.dataset) and (plain.group_id == "").all() and (plain.variate == 0).all()
    manifests = {k: json.loads((built / k / "manifest.json").read_text()) for k in ("plain", "zero", "mv")}
    assert "multivariate_count" not in manifests["plain"]
    assert [s["name"] for s in manifests["plain"]["sources"]] == ["synthetic", "kernelsynth", "periodic"]
    assert manifests["plain"]["shards"] == manifests["zero"]["shards"]  # same bytes (SHA-256 of each shard)
    mv = load_corpus_dataset(built / "mv").to_pandas()
    head = mv[mv.dataset != "multivariate"].reset_index(drop=True)
    assert len(head) == len(plain)  # the groups come after the other rows, which are unchanged
    for a, b in zip(plain.target, head.target):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (mv.dataset == "multivariate").to_numpy()[len(plain):].all()


def test_negative_count_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--multivariate-count must be >= 0"):
        prepare.main(["--out", str(tmp_path / "c"), *SMALL, "--multivariate-count", "-1"])
