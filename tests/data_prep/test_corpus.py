"""Arrow corpus: schema, round trip (NaN, missing start, group ids), provenance of cut spans."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_prep.corpus import (CorpusEntry, CorpusError, cut_series, load_corpus_dataset, open_corpus, write_corpus,
                              write_row_stats)
from data_prep.series import Series


def test_round_trip_and_schema(tmp_path):
    a = Series("a", np.array([1.0, np.nan, 3.5]), "h", pd.Timestamp("2020-01-01 05:00"), "demo", group_id="g1")
    b = Series("b", np.arange(5, dtype=np.float64), "MS", None, "demo")
    n = write_corpus(iter([a, b]), tmp_path / "c")
    corpus = load_corpus_dataset(tmp_path / "c")
    assert n == 2 and len(corpus) == 2
    schema = corpus.data.schema
    assert schema.field("start").type == pa.timestamp("s")
    assert schema.field("target").type.value_type == pa.float32()
    rows = corpus[:]
    assert rows["item_id"] == ["a", "b"] and rows["freq"] == ["h", "MS"] and rows["group_id"] == ["g1", ""]
    assert rows["start"][0] == pd.Timestamp("2020-01-01 05:00").to_pydatetime() and rows["start"][1] is None
    assert np.isnan(rows["target"][0][1]) and rows["target"][0][2] == 3.5 and rows["target"][1] == [0, 1, 2, 3, 4]
    assert rows["source_item_id"] == ["a", "b"] and rows["span_start"] == [0, 0] and rows["span_end"] == [3, 5]


def test_cut_series_records_span_and_shifts_start(tmp_path):
    s = Series("x", np.arange(10.0), "D", pd.Timestamp("2021-01-01"), "demo")
    entry = cut_series(s, 3, 7)
    assert entry.series.target.tolist() == [3, 4, 5, 6] and entry.series.start == pd.Timestamp("2021-01-04")
    assert (entry.source_item_id, entry.span_start, entry.span_end) == ("x", 3, 7)
    monthly = cut_series(Series("m", np.arange(6.0), "MS", pd.Timestamp("2021-01-01")), 2, 6)
    assert monthly.series.start == pd.Timestamp("2021-03-01")
    write_corpus([entry, CorpusEntry(s, "x", 0, 10)], tmp_path / "c")
    rows = load_corpus_dataset(tmp_path / "c")[:]
    assert rows["span_start"] == [3, 0] and rows["span_end"] == [7, 10] and rows["target"][0] == [3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"bad span \[5, 20\)"):
        cut_series(s, 5, 20)


def test_rewrite_replaces_and_bad_inputs_fail(tmp_path):
    write_corpus([Series("a", [1.0, 2.0], "D")], tmp_path / "c")
    write_corpus([Series("b", [1.0, 2.0, 3.0], "D"), Series("c", [4.0], "D")], tmp_path / "c")
    assert load_corpus_dataset(tmp_path / "c")["item_id"] == ["b", "c"]
    with pytest.raises(ValueError, match="series 'e' of 'demo' is empty"):
        write_corpus([Series("e", np.array([]), "D", dataset="demo")], tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="no corpus at"):
        load_corpus_dataset(tmp_path / "nothing")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus-build")]  # temp cache cleaned up


# ---- the memory-mapped reader that training uses ------------------------------------------------------------------
STRIDE = 100_000  # row r holds r * STRIDE + t at time t: every value names its row and position


def test_open_corpus_views_match_source(tmp_path, write_arrow_corpus):
    rng = np.random.default_rng(0)
    lengths = [1, 3, 5, 9, 13, 50, 200, 1000, 30, 30, 30, 30]
    rows = []
    for row, length in enumerate(lengths):
        target = (row * STRIDE + np.arange(length)).astype(np.float32)
        target[rng.random(length) < 0.1] = np.nan
        rows.append({"item_id": f"r{row}", "dataset": "d", "target": target})
    corpus = open_corpus(write_arrow_corpus(tmp_path / "c", rows))
    assert len(corpus) == 12 and corpus.lengths.tolist() == lengths
    for row in range(len(corpus)):
        v = corpus.values(row)
        obs = ~np.isnan(v)
        np.testing.assert_array_equal(v[obs], (row * STRIDE + np.arange(len(v)))[obs])
        np.testing.assert_array_equal(obs, ~np.isnan(rows[row]["target"]))
        assert corpus.n_observed[row] == obs.sum()


def test_open_corpus_errors(tmp_path):
    import datasets

    with pytest.raises(CorpusError, match="not found"):
        open_corpus(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    with pytest.raises(CorpusError, match="junk: not a corpus"):
        open_corpus(tmp_path / "junk")
    empty = {"item_id": [], "dataset": [], "target": []}
    datasets.Dataset.from_dict(empty, features=datasets.Features(
        item_id=datasets.Value("string"), dataset=datasets.Value("string"),
        target=datasets.Sequence(datasets.Value("float32")))).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(CorpusError, match="empty"):
        open_corpus(tmp_path / "empty")


# ---- the per-row statistics side file (ROW_STATS): written once, read instead of scanning the values --------------
def _mixed_series():
    rng = np.random.default_rng(1)
    for i, length in enumerate([1, 7, 40, 300, 5, 2000, 3]):
        y = rng.normal(size=length)
        y[rng.random(length) < 0.2] = np.nan
        yield Series(f"s{i}", y, "h", None, ("b", "a", "c")[i % 3])
    yield Series("all-nan", np.full(4, np.nan), "h", None, "a")


def test_side_file_statistics_equal_the_scan(tmp_path, monkeypatch):
    import data_prep.corpus as corpus_mod

    write_corpus(_mixed_series(), tmp_path / "c")
    assert (tmp_path / "c" / corpus_mod.ROW_STATS).is_file()
    fast = open_corpus(tmp_path / "c")
    assert fast.row_stats == corpus_mod.ROW_STATS
    monkeypatch.setattr(corpus_mod, "SCAN_BLOCK", 16)  # blocks of a few rows, and the 300/2000-value rows alone
    (tmp_path / "c" / corpus_mod.ROW_STATS).unlink()
    scanned = open_corpus(tmp_path / "c")
    assert scanned.row_stats == "scan"
    for field in ("lengths", "n_observed", "dataset_index"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(scanned, field))
        assert getattr(fast, field).dtype == getattr(scanned, field).dtype
    assert fast.dataset_names == scanned.dataset_names == ["a", "b", "c"]
    rows = load_corpus_dataset(tmp_path / "c")[:]
    assert fast.dataset.tolist() == rows["dataset"] and fast.item_id.tolist() == rows["item_id"]
    assert fast.n_observed.tolist() == [int(np.isfinite(np.asarray(t, float)).sum()) for t in rows["target"]]
    assert fast.item_id[1] == "s1" and fast.item_id[[0, 7]].tolist() == ["s0", "all-nan"]


def test_side_file_opens_without_reading_values(tmp_path, monkeypatch):
    import data_prep.corpus as corpus_mod

    write_corpus(_mixed_series(), tmp_path / "c")

    def no_scan(*args, **kwargs):
        raise AssertionError("open_corpus scanned the corpus despite its side file")

    monkeypatch.setattr(corpus_mod, "_observed_counts", no_scan)
    monkeypatch.setattr(corpus_mod, "_dataset_codes", no_scan)
    corpus = open_corpus(tmp_path / "c")
    assert len(corpus) == 8 and corpus.n_observed[-1] == 0 and corpus.dataset[1] == "a"
    assert np.isnan(corpus.values(7)).all() and len(corpus.values(5)) == 2000


def test_stale_side_file_is_ignored_with_one_warning(tmp_path, write_arrow_corpus):
    import shutil

    import data_prep.corpus as corpus_mod

    write_corpus(_mixed_series(), tmp_path / "c")
    side = tmp_path / "c" / corpus_mod.ROW_STATS
    rows = [{"item_id": f"r{i}", "dataset": "d", "target": np.arange(3 + i, dtype=np.float32)} for i in range(2)]
    other = write_arrow_corpus(tmp_path / "other", rows)
    shutil.copy(side, other / corpus_mod.ROW_STATS)  # 8 rows described, 2 held
    with pytest.warns(UserWarning, match=r"row_stats.npz: describes 8 rows, the Arrow data holds 2; ignored"):
        corpus = open_corpus(other)
    assert corpus.row_stats == "scan" and corpus.lengths.tolist() == [3, 4] and corpus.dataset_names == ["d"]
    same_rows = write_arrow_corpus(tmp_path / "same", [{"item_id": f"r{i}", "dataset": "d",
                                                        "target": np.ones(2, np.float32)} for i in range(8)])
    shutil.copy(side, same_rows / corpus_mod.ROW_STATS)  # same row count, other data
    with pytest.warns(UserWarning, match="state.json differs"):
        assert open_corpus(same_rows).n_observed.tolist() == [2] * 8
    side.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable"):
        assert open_corpus(tmp_path / "c").row_stats == "scan"


def test_prepare_rewrite_keeps_the_side_file_current(tmp_path, recwarn, monkeypatch):
    """`prepare` rewrites the corpus (decontamination, TSMixup) and writes the side file once, for the final rows."""
    from data_prep import build, prepare

    write_corpus(_mixed_series(), tmp_path / "c")
    build.rewrite_with(tmp_path / "c", [Series("new", np.array([1.0, np.nan, 2.0]), "h", None, "z")], keep=[0, 5])
    corpus = open_corpus(tmp_path / "c")  # a rewrite alone leaves no side file: the values are scanned
    assert corpus.row_stats == "scan" and not (tmp_path / "c" / "row_stats.npz").exists()
    assert corpus.lengths.tolist() == [1, 2000, 3] and corpus.n_observed[-1] == 2
    assert corpus.dataset.tolist() == ["b", "c", "z"]

    passes = []
    monkeypatch.setattr(prepare, "write_row_stats", lambda path: passes.append(path) or write_row_stats(path))
    args = ["--datasets", "m4_hourly,tourism_monthly", "--max-series-per-dataset", "8", "--synthetic-count", "3",
            "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "4"]
    assert prepare.main(["--out", str(tmp_path / "p"), *args]) == 0
    assert len(passes) == 1  # one pass over the values, after the last rewrite
    recwarn.clear()
    corpus = open_corpus(tmp_path / "p")
    assert corpus.row_stats == "row_stats.npz" and not [w for w in recwarn if "row_stats" in str(w.message)]
    assert corpus.dataset.tolist().count("tsmixup") == 4
