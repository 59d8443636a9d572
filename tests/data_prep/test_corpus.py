"""Arrow corpus: schema, round trip (NaN, missing start, group ids), provenance of cut spans."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_prep.corpus import CorpusEntry, CorpusError, cut_series, load_corpus_dataset, open_corpus, write_corpus
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
