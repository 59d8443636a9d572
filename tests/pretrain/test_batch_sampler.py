"""The vectorised sampler and its worker processes: provenance and layout of every value, an independent scalar
reference of the same draws, batches as a pure function of (seed, rank, k), mixture frequencies, all-missing
windows, exact resume, and the trainer running on worker-made batches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from data_prep.corpus import CorpusError, open_corpus
from pretrain.batch_sampler import VectorisedSampler
from pretrain.config import TrainConfig
from pretrain.data import WindowSampler
from pretrain.loader import BatchLoader
from moe_ts.typed_config import ConfigError

STRIDE = 10_000  # series r holds r * STRIDE + t at time t (exact in float32 for r < 1600)


def encoded_rows(specs, nan_rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r, (name, length) in enumerate(specs):
        y = (r * STRIDE + np.arange(length)).astype(np.float32)
        y[rng.random(length) < nan_rate] = np.nan
        rows.append({"item_id": f"{name}-{r}", "dataset": name, "target": y})
    return rows


SPECS = ([("short", n) for n in (1, 3, 5, 9, 13, 17)] + [("long", n) for n in (50, 200, 1000, 4000)]
         + [("mid", 30)] * 5 + [("gappy", 300)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, write_arrow_corpus):
    rows = encoded_rows(SPECS)
    rows[-1]["target"][20:280] = np.nan  # most windows of this series are entirely missing
    return open_corpus(write_arrow_corpus(tmp_path_factory.mktemp("c") / "corpus", rows))


def make(corpus, **kw):
    args = dict(patch_size=4, seq_patches=16, min_window_patches=2, max_windows_per_series=4, seed=0)
    args.update(kw)
    return VectorisedSampler(corpus, **args)


def same(a, b):
    return (np.array_equal(a["target"].numpy(), b["target"].numpy(), equal_nan=True)
            and np.array_equal(a["sample_id"].numpy(), b["sample_id"].numpy()))


def reference_batch(corpus, seed, rank, k, batch_size, patch_size, seq_patches, min_wp, max_windows):
    """The same draws made one window at a time with Python scalars (written apart from the sampler)."""
    from pretrain.data import mixture_probabilities

    usable = [r for r in range(len(corpus)) if corpus.n_observed[r] > 0]
    names = sorted({corpus.dataset[r] for r in usable})
    rows_of = {n: [r for r in usable if corpus.dataset[r] == n] for n in names}
    probs = mixture_probabilities(names, [len(rows_of[n]) for n in names], {}, "series")
    cap = seq_patches * patch_size
    weights = {n: [min(math.ceil(corpus.lengths[r] / cap), max_windows) for r in rows_of[n]] for n in names}
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(rank, k)))
    target = np.full((batch_size, seq_patches * patch_size), np.nan, np.float32)
    sample_id = np.zeros((batch_size, seq_patches), np.int64)
    for b in range(batch_size):
        free, windows = seq_patches, []
        while free >= min_wp:
            u_d, u_s, u_len, u_start = rng.random(4)
            acc, d = 0.0, len(names) - 1
            for i, p in enumerate(probs):
                acc += p
                if u_d * sum(probs) < acc:
                    d = i
                    break
            w = weights[names[d]]
            x, acc, pick = u_s * sum(w), 0.0, len(w) - 1
            for i, wi in enumerate(w):
                acc += wi
                if x < acc:
                    pick = i
                    break
            row = rows_of[names[d]][pick]
            length = int(corpus.lengths[row])
            hi = min(length, cap)
            lo = min(length, min_wp * patch_size, hi)
            wlen = min(lo + int(u_len * (hi - lo + 1)), hi)
            if math.ceil(wlen / patch_size) > free:
                wlen = free * patch_size  # the row's last window is cut to the free patches
            start = int(u_start * (length - wlen + 1))
            windows.append(corpus.values(row)[start:start + wlen])
            free -= math.ceil(wlen / patch_size)
        cursor, sid = 0, 0
        for window in windows:
            n = math.ceil(len(window) / patch_size)
            if not np.isnan(window).all():
                sid += 1
                target[b, cursor * patch_size:cursor * patch_size + len(window)] = window
                sample_id[b, cursor:cursor + n] = sid
            cursor += n
    return target, sample_id


@pytest.mark.parametrize("patch_size,seq_patches,min_wp,batch", [(4, 16, 2, 6), (4, 9, 1, 5), (8, 12, 3, 4)])
def test_batches_equal_an_independent_scalar_reference(corpus, patch_size, seq_patches, min_wp, batch):
    sampler = make(corpus, patch_size=patch_size, seq_patches=seq_patches, min_window_patches=min_wp, seed=3, rank=1)
    for k in (0, 1, 7):
        got = sampler.make_batch(k, batch)
        target, sample_id = reference_batch(corpus, 3, 1, k, batch, patch_size, seq_patches, min_wp, 4)
        # values dropped as an all-missing window are NaN in both
        np.testing.assert_array_equal(got["sample_id"].numpy(), sample_id)
        np.testing.assert_array_equal(np.where(sample_id.repeat(patch_size, 1) > 0, got["target"].numpy(), np.nan),
                                      target)


def test_every_value_comes_from_one_series_in_order_and_rows_are_laid_out_right(corpus):
    sampler = make(corpus, seed=5)
    p = sampler.patch_size
    for _ in range(20):
        batch = sampler.next_batch(8)
        for target, ids in zip(batch["target"].numpy(), batch["sample_id"].numpy()):
            present = ids[ids > 0]
            if not len(present):  # every window of the row was entirely missing: all padding
                assert np.isnan(target).all()
                continue
            assert list(np.unique(present)) == list(range(1, present.max() + 1))  # ids 1..m, each once, in order
            assert np.all(np.diff(present) >= 0)
            assert np.isnan(target.reshape(-1, p)[ids == 0]).all()  # padding (and dropped windows) hold no value
            for sid in range(1, present.max() + 1):
                patches = np.flatnonzero(ids == sid)
                assert np.array_equal(patches, np.arange(patches[0], patches[-1] + 1))  # contiguous patches
                values = target[patches[0] * p:(patches[-1] + 1) * p]
                observed = np.flatnonzero(~np.isnan(values))
                assert len(observed), "an all-missing window must be padding"
                codes = values[observed].astype(np.int64)
                assert len(set(codes // STRIDE)) == 1  # one series
                assert np.array_equal(codes % STRIDE - observed, np.full(len(observed), codes[0] % STRIDE - observed[0]))
                row = int(codes[0] // STRIDE)
                start = int(codes[0] % STRIDE - observed[0])
                assert 0 <= start and start + observed[-1] < corpus.lengths[row]


def test_batch_k_is_a_pure_function_of_seed_rank_and_k(corpus):
    a, b = make(corpus, seed=1), make(corpus, seed=1)
    seq = [a.next_batch(4) for _ in range(6)]
    b._per_row = 0.01  # a first draw far too small: more blocks drawn, the same uniforms in the same order
    assert same(b.make_batch(5, 4), seq[5]) and same(b.make_batch(2, 4), seq[2])
    assert not same(make(corpus, seed=2).make_batch(5, 4), seq[5])
    assert not same(make(corpus, seed=1, rank=1).make_batch(5, 4), seq[5])


def test_mixture_and_series_frequencies_follow_the_weights(tmp_path, write_arrow_corpus):
    specs = [("a", 100)] * 3 + [("b", 100), ("b", 2000)] + [("c", 40)] * 6
    corpus = open_corpus(write_arrow_corpus(tmp_path / "c", encoded_rows(specs, nan_rate=0.0)))
    sampler = make(corpus, patch_size=4, seq_patches=16, min_window_patches=16, max_windows_per_series=8,
                   dataset_weights={"c": 3.0})
    rows = []
    for _ in range(300):  # one window per row (min_window_patches = N): the row's first value names its series
        batch = sampler.next_batch(16)
        first = batch["target"].numpy()[:, :4]
        rows += [int(np.nanmin(v)) // STRIDE for v in first]
    rows = np.asarray(rows)
    names = np.asarray([s[0] for s in specs])
    shares = {n: np.mean(names[rows] == n) for n in "abc"}
    expected = dict(zip(sampler.dataset_names, sampler.dataset_probs))
    assert expected["c"] == pytest.approx(6 * 3 / (3 + 2 + 6 * 3))  # series counts times the manifest weight
    for name in "abc":
        assert shares[name] == pytest.approx(expected[name], abs=0.03)
    in_b = rows[names[rows] == "b"]  # 100 values -> 2 windows of 64, 2000 -> capped at 8
    assert np.mean(in_b == 4) == pytest.approx(8 / 10, abs=0.06)


def test_all_missing_windows_become_padding_and_an_unusable_corpus_is_refused(tmp_path, write_arrow_corpus):
    y = np.full(5000, np.nan, np.float32)
    y[0] = 1.0  # one observed value: almost every window is entirely missing
    corpus = open_corpus(write_arrow_corpus(tmp_path / "c", [{"item_id": "x", "dataset": "d", "target": y}]))
    sampler = make(corpus, patch_size=4, seq_patches=8, min_window_patches=1)
    with pytest.raises(CorpusError, match="consecutive windows were entirely missing"):
        for _ in range(2000):
            sampler.next_batch(8)
    assert sampler.skipped > 0 and sampler.windows < sampler.skipped


def test_state_resumes_exactly_and_other_states_are_refused(corpus):
    a = make(corpus, seed=4)
    for _ in range(3):
        a.next_batch(5)
    state = a.state_dict()
    b = make(corpus, seed=4)
    b.load_state_dict(state)
    for _ in range(3):
        assert same(a.next_batch(5), b.next_batch(5))
    assert a.state_dict() == b.state_dict()
    with pytest.raises(CorpusError, match="seed"):
        make(corpus, seed=9).load_state_dict(state)
    sequential = WindowSampler(corpus, patch_size=4, seq_patches=16, min_window_patches=2, max_windows_per_series=4)
    with pytest.raises(CorpusError, match="sampler"):
        make(corpus).load_state_dict(sequential.state_dict())


def test_worker_processes_hand_over_the_same_batches_in_order(corpus):
    reference = make(corpus, seed=6)
    expected = [reference.next_batch(4) for _ in range(9)]
    loader = BatchLoader(make(corpus, seed=6), workers=2)
    try:
        for i in range(5):
            assert same(loader.next_batch(4), expected[i]), i
        state = loader.state_dict()
        assert state["batches"] == 5 and state["rows"] == 20  # handed over, not made ahead
        resumed = BatchLoader(make(corpus, seed=6), workers=3)
        resumed.load_state_dict(state)
        for i in range(5, 9):
            assert same(resumed.next_batch(4), expected[i]), i
        resumed.close()
    finally:
        loader.close()


def test_workers_need_the_vectorised_sampler():
    with pytest.raises(ConfigError, match="loader_workers needs train.sampler: vectorised"):
        TrainConfig(loader_workers=2)
    assert TrainConfig(loader_workers=2, sampler="vectorised").loader_workers == 2


def test_pretraining_on_worker_batches_stops_and_resumes_exactly(tmp_path, small_corpus):
    from pretrain.metrics import read_metrics
    from pretrain.train import main

    model = {"patch_size": 4, "max_seq_len": 8, "d_model": 32, "num_layers": 1, "num_heads": 2,
             "moe": {"num_experts": 4, "top_k": 2, "d_ff": 32}}
    train = {"steps": 6, "batch_size": 4, "grad_accum": 2, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 3,
             "seed": 0, "wandb_mode": "disabled", "sampler": "vectorised"}

    def run(name, workers, *extra):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"model": model, "train": {**train, "loader_workers": workers}}))
        assert main(["--config", str(cfg), "--data", str(small_corpus), "--out", str(tmp_path / name), *extra]) == 0
        return read_metrics(tmp_path / name / "metrics.jsonl")

    in_process = run("in_process", 0)
    run("workers", 2, "--stop-at", "4")
    resumed = run("workers", 2, "--resume")
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(in_process, resumed):
        for key in ("loss", "nll", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)


def test_a_corpus_in_several_arrow_chunks_reads_each_row_from_its_own_chunk(tmp_path):
    import datasets

    rows = encoded_rows([("a", 40 + 7 * i) for i in range(30)], nan_rate=0.0)
    table = {"item_id": [r["item_id"] for r in rows], "dataset": [r["dataset"] for r in rows],
             "target": [r["target"].tolist() for r in rows]}
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "c"), num_shards=3)
    corpus = open_corpus(tmp_path / "c")
    assert len(corpus.chunk_values) == 3
    sampler = make(corpus, seed=2)
    for k in range(4):
        target, sample_id = reference_batch(corpus, 2, 0, k, 6, 4, 16, 2, 4)
        got = sampler.make_batch(k, 6)
        np.testing.assert_array_equal(got["sample_id"].numpy(), sample_id)
        np.testing.assert_array_equal(got["target"].numpy(), target)


def test_zero_copy_shard_files_are_gathered_from_and_match_the_reference(tmp_path):
    """A corpus as `moe-ts prepare` writes it (float32, memory-mapped, several shard files): batches gather short
    windows from one flat view per file and copy long ones, and both equal the scalar reference."""
    from data_prep.corpus import CorpusEntry, write_corpus
    from data_prep.series import Series
    from pretrain.batch_sampler import GATHER_BELOW

    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 1200, 60)
    entries = []
    for r, n in enumerate(lengths):
        y = (r * STRIDE + np.arange(n)).astype(np.float32)
        y[rng.random(n) < 0.05] = np.nan
        entries.append(CorpusEntry(Series(f"s{r}", y, "h", None, "ds" + str(r % 3)), f"s{r}", 0, int(n)))
    write_corpus(entries, tmp_path / "c", max_shard_size="60KB")
    corpus = open_corpus(tmp_path / "c")
    sampler = make(corpus, patch_size=16, seq_patches=32, min_window_patches=1, seed=7)
    files = list((tmp_path / "c").glob("*.arrow"))
    assert len(files) > 1 and len(sampler._homes) == len(files)  # one flat view per shard file
    assert not any(h is v for h in sampler._homes for v in corpus.chunk_values)  # views of the files, not copies
    seen_short = seen_long = False
    for k in range(6):
        got = sampler.make_batch(k, 4)
        target, sample_id = reference_batch(corpus, 7, 0, k, 4, 16, 32, 1, 16)
        np.testing.assert_array_equal(got["sample_id"].numpy(), sample_id)
        np.testing.assert_array_equal(got["target"].numpy(), target)
        rows, length, *_ = sampler._plan(np.random.default_rng(np.random.SeedSequence(7, spawn_key=(0, k))), 4)
        seen_short |= bool((length < GATHER_BELOW).any())
        seen_long |= bool((length >= GATHER_BELOW).any())
    assert seen_short and seen_long  # both copy paths ran
