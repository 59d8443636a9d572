"""Any-variate sampling (issue 27): multivariate groups drawn beside univariate series, packed variate-major and
time-aligned; share 0 leaves the sequential sampler as it was; bad combinations are refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_prep.corpus import CorpusError, open_corpus
from moe_ts.typed_config import ConfigError, from_dict
from pretrain.config import PretrainConfig, TrainConfig
from pretrain.data import WindowSampler
from pretrain.loader import BatchLoader
from pretrain.variate_batch_sampler import AnyVariateVectorisedSampler
from pretrain.variate_groups import AnyVariateSampler, pack_variate_windows
from tests.pretrain.grouped_corpus import COVARIATE_VALUE, write_grouped_corpus

P, N = 4, 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return open_corpus(write_grouped_corpus(tmp_path_factory.mktemp("grouped") / "corpus"))


KINDS = {"sequential": AnyVariateSampler, "vectorised": AnyVariateVectorisedSampler}


def sampler(corpus, share=0.5, max_variates=4, seed=0, kind="sequential", **kw):
    return KINDS[kind](corpus, multivariate_share=share, max_variates=max_variates, patch_size=P, seq_patches=N,
                       seed=seed, **kw)


def samples_of(batch):
    """(row, sample id) → (patch indices, variate ids) for every sample of a batch."""
    out = {}
    sid, var = batch["sample_id"].numpy(), batch["variate_id"].numpy()
    for r in range(len(sid)):
        for s in np.unique(sid[r][sid[r] > 0]):
            idx = np.flatnonzero(sid[r] == s)
            out[(r, int(s))] = (idx, var[r][idx])
    return out


def test_pack_variate_windows_lays_a_group_variate_major_from_patch_boundaries():
    series = np.arange(5, dtype=np.float32)  # 2 patches
    group = np.asarray([[10, 11, 12], [20, 21, np.nan]], dtype=np.float32)  # 2 variates x 1 patch
    target, sid, var = pack_variate_windows([series, group], seq_patches=5, patch_size=3)
    nan = np.nan
    np.testing.assert_array_equal(target, [0, 1, 2, 3, 4, nan, 10, 11, 12, 20, 21, nan, nan, nan, nan])
    np.testing.assert_array_equal(sid, [1, 1, 2, 2, 0])
    np.testing.assert_array_equal(var, [0, 0, 0, 1, 0])
    with pytest.raises(ValueError, match="more than 4 patches"):
        pack_variate_windows([series, group, series], seq_patches=4, patch_size=3)


@pytest.mark.parametrize("kind", KINDS)
def test_group_windows_are_time_aligned_variate_major_subsets_of_one_group(corpus, kind):
    s = sampler(corpus, share=1.0, max_variates=4, kind=kind)
    groups_seen, sizes, firsts = 0, set(), set()
    for _ in range(6):
        batch = s.next_batch(4)
        target = batch["target"].numpy().reshape(4, N, P)
        for (r, _), (idx, var) in samples_of(batch).items():
            assert np.all(np.diff(idx) == 1)  # one contiguous run of patches
            v = int(var.max()) + 1
            blocks = np.split(idx, v)
            assert v * len(blocks[0]) == len(idx)  # equal blocks
            np.testing.assert_array_equal(var, np.repeat(np.arange(v), len(blocks[0])))
            values = [target[r, b].ravel() for b in blocks]
            assert not any((vals == COVARIATE_VALUE).any() for vals in values)  # covariates are never drawn
            if v == 1 and np.nanmax(np.abs(values[0])) < 1:
                continue  # a univariate series (only drawn when two windows no longer fit)
            origin = [np.nanmin(vals) // 1000 for vals in values]  # variate index + 1 in its group
            times = [np.where(np.isnan(vals), np.nan, vals - 1000 * o) for vals, o in zip(values, origin)]
            assert origin == sorted(set(origin))  # distinct variates, in the group's order
            start = [np.nanmin(t) - np.flatnonzero(~np.isnan(t))[0] for t in times]
            assert len(set(start)) == 1, start  # the same time window for every variate
            assert 2 <= v <= 4 or v == 1  # at most max_variates (1 if the others were missing there)
            groups_seen += v > 1
            sizes.add(v)
            firsts.add(origin[0])
    assert groups_seen > 10 and {2, 3, 4} <= sizes  # several group sizes drawn, never more than 4
    assert {1, 2, 3} <= firsts  # random subsets: not always from a group's first variate
    assert s.group_windows >= groups_seen


@pytest.mark.parametrize("kind", KINDS)
def test_the_share_decides_how_often_a_window_is_a_group(corpus, kind):
    def group_share(share):
        s = sampler(corpus, share=share, seed=1, kind=kind)
        for _ in range(30):
            s.next_batch(4)
        return s.group_windows / s.windows

    low, high = group_share(0.2), group_share(0.8)
    assert 0.05 < low < 0.4 and high > 0.6


def test_share_zero_keeps_the_sequential_sampler_and_its_batches(corpus, tmp_path):
    from pretrain.trainer import _sampler
    from pretrain.engine import DistInfo

    run = from_dict(PretrainConfig, {"model": {"patch_size": P, "max_seq_len": N}, "train": {"seed": 3}})
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    made = _sampler(run, corpus, dist)
    assert type(made) is WindowSampler  # not the any-variate one
    plain = WindowSampler(corpus, patch_size=P, seq_patches=N, seed=3)
    a, b = made.next_batch(3), plain.next_batch(3)
    assert set(a) == {"target", "sample_id"}
    assert torch.equal(a["sample_id"], b["sample_id"]) and torch.equal(a["target"].nan_to_num(9), b["target"].nan_to_num(9))
    assert made.state_dict() == plain.state_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_state_continues_with_the_same_batches(corpus, kind):
    a = sampler(corpus, seed=5, kind=kind)
    a.next_batch(3)
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.next_batch(3) for _ in range(2)]
    b = sampler(corpus, seed=5, kind=kind)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch(3)
        for key in ("sample_id", "variate_id"):
            assert torch.equal(got[key], want[key])
        assert torch.equal(got["target"].nan_to_num(9), want["target"].nan_to_num(9))
    assert b.state_dict() == a.state_dict()
    with pytest.raises(CorpusError, match="multivariate_share"):
        sampler(corpus, share=0.25, seed=5, kind=kind).load_state_dict(state)


@pytest.mark.dist
def test_loader_workers_hand_over_the_vectorised_any_variate_batches_in_order(corpus):
    made = sampler(corpus, seed=6, kind="vectorised")
    expected = [made.next_batch(3) for _ in range(4)]
    loader = BatchLoader(sampler(corpus, seed=6, kind="vectorised"), workers=2)
    try:
        for want in expected:
            got = loader.next_batch(3)
            for key in ("sample_id", "variate_id"):
                assert torch.equal(got[key], want[key])
            assert torch.equal(got["target"].nan_to_num(9), want["target"].nan_to_num(9))
    finally:
        loader.close()
    assert loader.state_dict() == made.state_dict()


def test_groups_of_one_ragged_groups_and_covariates_are_not_groups(tmp_path):
    c = open_corpus(write_grouped_corpus(tmp_path / "c", groups=((2, 50),), ragged=True))
    s = sampler(c)
    assert len(s.groups) == 1 and s.groups.num_unaligned == 1
    assert [c.item_id[int(r)] for r in s.groups.rows(0)] == ["g0/0", "g0/1"]
    flat = open_corpus(write_grouped_corpus(tmp_path / "flat", groups=((1, 50),)))  # one target + a covariate
    with pytest.raises(CorpusError, match="no multivariate group"):
        sampler(flat)


@pytest.mark.parametrize("train, message", [
    ({"multivariate_share": 1.5}, "multivariate_share must be in [0, 1]"),
    ({"max_variates": 1}, "max_variates must be >= 2"),
])
def test_bad_any_variate_settings_are_refused_in_one_line(train, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**train)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_row_too_short_for_two_variates_is_refused():
    with pytest.raises(ConfigError, match="max_seq_len >= 2 x train.min_window_patches"):
        from_dict(PretrainConfig, {"model": {"max_seq_len": 6}, "train": {"multivariate_share": 0.2,
                                                                           "min_window_patches": 4}})


@pytest.mark.parametrize("kind", KINDS)
def test_groups_larger_than_a_row_and_variates_missing_in_the_window(tmp_path, kind):
    """A group of 30 variates in rows where 12 two-patch variates fit, one variate missing before its last 20 values:
    every group window fits its row, with at most N // min_window_patches variates; a variate with nothing observed
    in the window is dropped by the sequential sampler and kept (it gets no loss) by the vectorised one."""
    from moe_ts.config import ModelConfig, MoEConfig
    from moe_ts.network import MoiraiMoENetwork
    from moe_ts.objectives import pretrain_loss

    c = open_corpus(write_grouped_corpus(tmp_path / "c", groups=((30, 400),), univariate=2, blank=(0, 1, 380)))
    s = sampler(c, share=1.0, max_variates=128, kind=kind)
    torch.manual_seed(0)
    net = MoiraiMoENetwork(ModelConfig(patch_size=P, max_seq_len=N, d_model=16, num_layers=1, num_heads=2,
                                       variate_bias=True, moe=MoEConfig(num_experts=2, top_k=1, d_ff=8)))
    sizes, blank_blocks = set(), 0
    for _ in range(15):
        batch = s.next_batch(4)
        target = batch["target"].numpy().reshape(4, N, P)
        for (r, _), (idx, var) in samples_of(batch).items():
            v = int(var.max()) + 1
            assert len(idx) % v == 0 and v <= N // 2
            assert len(idx) // v >= 2  # min_window_patches per variate: a row's last window too (never all statistics)
            sizes.add(v)
            for block in np.split(idx, v):
                vals = target[r, block].ravel()
                blank_blocks += bool(np.isnan(vals).all())
        with torch.no_grad():
            out = pretrain_loss(net, batch["target"], batch["sample_id"], variate_id=batch["variate_id"])
        assert torch.isfinite(out.loss)
    assert max(sizes) > 6  # large subsets were drawn
    if kind == "sequential":
        assert blank_blocks == 0
    else:
        assert blank_blocks > 0


@pytest.mark.parametrize("by_keys", [256, 8])
def test_vectorised_subsets_are_uniform_and_in_variate_order(tmp_path, monkeypatch, by_keys):
    """Both ways of drawing a group's subset (one key per member up to SUBSET_BY_KEYS members, `choice` above):
    every variate of a 30-variate group is drawn about equally often, each subset in variate order."""
    import pretrain.variate_batch_sampler as vbs

    monkeypatch.setattr(vbs, "SUBSET_BY_KEYS", by_keys)
    c = open_corpus(write_grouped_corpus(tmp_path / "c", groups=((30, 400),), univariate=2))
    s = sampler(c, share=1.0, max_variates=3, kind="vectorised")
    counts = np.zeros(30)
    for _ in range(80):
        batch = s.next_batch(4)
        target = batch["target"].numpy().reshape(4, N, P)
        for (r, _), (idx, var) in samples_of(batch).items():
            blocks = [target[r, b].ravel() for b in np.split(idx, int(var.max()) + 1)]
            origin = [int(np.nanmin(x) // 1000) - 1 for x in blocks if not np.isnan(x).all()]
            assert origin == sorted(set(origin))
            counts[origin] += 1
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.6 * counts.mean(), counts


def test_vectorised_subsets_of_small_and_large_groups_stay_in_window_order(tmp_path, monkeypatch):
    import pretrain.variate_batch_sampler as vbs

    monkeypatch.setattr(vbs, "SUBSET_BY_KEYS", 8)  # the 30-variate group by `choice`, the 3-variate one by keys
    c = open_corpus(write_grouped_corpus(tmp_path / "c", groups=((30, 400), (3, 300)), univariate=2))
    s = sampler(c, kind="vectorised")
    big, small = (0, 1) if len(s.groups.rows(0)) == 30 else (1, 0)
    group, variates = np.asarray([big, small, big, small, big]), np.asarray([5, 2, 4, 3, 1])
    got = np.split(s._subsets(0, group, variates), np.cumsum(variates)[:-1])
    for g, v, rows in zip(group, variates, got):
        members = s._member_u[s.groups.bounds[g]:s.groups.bounds[g + 1]]  # usable-row indices, variate order
        place = np.searchsorted(members, rows)
        assert len(rows) == v and np.all(members[np.minimum(place, len(members) - 1)] == rows)  # its own group's
        assert np.all(np.diff(place) > 0)  # distinct, in variate order
