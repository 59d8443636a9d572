"""prepare CLI + leak check: a corpus built with exclusion passes, one built with --include-eval is caught;
zero-shot sets are dropped whole; cross-series copies of test windows are cut away."""
import json

import numpy as np
import pandas as pd
import pytest

from data_prep import leak_check, prepare
from data_prep.corpus import load_corpus_dataset, write_corpus
from data_prep.series import Series
from data_prep.registry import get_spec, load_series
from data_prep.registry import test_span as span_of

REAL = "m4_hourly,hospital,etth1,tourism_yearly,nn5_daily"
SMALL = ["--max-series-per-dataset", "12", "--synthetic-count", "10", "--kernelsynth-count", "3", "--kernelsynth-length", "128",
         "--periodic-count", "4", "--tsmixup-count", "0"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    assert prepare.main(["--out", str(root / "clean"), "--datasets", REAL, *SMALL, "--tsmixup-count", "3"]) == 0
    assert prepare.main(["--out", str(root / "leaky"), "--datasets", REAL, "--include-eval", *SMALL, "--tsmixup-count", "3"]) == 0
    return root


def test_exclusion_cuts_every_series_before_its_test_span(built):
    corpus = load_corpus_dataset(built / "clean")
    manifest = json.loads((built / "clean" / "manifest.json").read_text())
    assert manifest["exclude_eval"] is True and manifest["seed"] == 0 and manifest["rows"] == len(corpus)
    counts = {s["name"]: s["series"] for s in manifest["sources"]}
    assert counts == {"m4_hourly": 12, "hospital": 12, "etth1": 0, "tourism_yearly": 12, "nn5_daily": 12,
                      "synthetic": 10, "kernelsynth": 3, "periodic": 4, "tsmixup": 3}
    rows = corpus.to_pandas()
    full = {s.item_id: s for s in load_series("m4_hourly", max_series=12)}
    m4 = rows[rows.dataset == "m4_hourly"]
    for _, row in m4.iterrows():
        source = full[row.source_item_id]
        start, _ = span_of("m4_hourly", len(source))
        assert (row.span_start, row.span_end) == (0, start) and len(row.target) == start
        np.testing.assert_array_equal(row.target, source.target[:start])
    # LSF sets are zero-shot (docs/ARCHITECTURE.md §6, held-out rule): held out whole, not just their test split
    assert "etth1" not in set(rows.dataset)
    etth1 = next(s for s in manifest["sources"] if s["name"] == "etth1")
    assert etth1["note"] == "lsf evaluation set: left out" and etth1["spans"] == []


def test_datasets_sharing_a_file_with_a_zero_shot_set_are_held_out():
    import dataclasses

    from data_prep.registry import held_out_reason

    assert held_out_reason("lsf_electricity") == "lsf evaluation set: left out"
    assert held_out_reason("electricity") == "zeroshot evaluation set: left out"
    assert held_out_reason("m4_hourly") is None and held_out_reason("car_parts") is None
    twin = dataclasses.replace(get_spec("m4_hourly"), files=get_spec("electricity").files)
    assert "with zero-shot set electricity: left out" in held_out_reason(twin)


def test_leak_check_passes_clean_and_catches_leaky(built, capsys):
    names = REAL
    assert leak_check.main([str(built / "clean"), "--datasets", names]) == 0
    assert "no leak" in capsys.readouterr().out
    assert leak_check.main([str(built / "leaky"), "--datasets", names]) == 1
    out = capsys.readouterr().out
    assert out.startswith("LEAK:") and "m4_hourly:" in out and "etth1:" in out
    report = leak_check.check_corpus(built / "leaky", names=names.split(","))
    leaked = {leak.eval_dataset for leak in report.leaks}
    assert {"m4_hourly", "etth1", "hospital", "nn5_daily"} <= leaked


def test_synthetic_part_is_reproducible(built, tmp_path):
    assert prepare.main(["--out", str(tmp_path / "again"), "--datasets", "tourism_yearly", "--include-eval", *SMALL]) == 0
    a = load_corpus_dataset(built / "clean").filter(lambda r: r["dataset"] == "kernelsynth")["target"]
    b = load_corpus_dataset(tmp_path / "again").filter(lambda r: r["dataset"] == "kernelsynth")["target"]
    assert a == b and len(a) == 3


def _tiny_data_dir(root):
    rng = np.random.default_rng(0)
    (root / "electricity").mkdir(parents=True)
    dates = pd.date_range("2016-07-01", periods=400, freq="h")
    frame = pd.DataFrame(rng.normal(size=(400, 3)).round(4), columns=["0", "1", "OT"])
    frame.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(root / "electricity" / "electricity.csv", index=False)
    t1 = rng.normal(size=40).round(3)
    t2 = np.concatenate([rng.normal(size=10).round(3), t1[-8:], rng.normal(size=30).round(3)])  # holds T1's test window
    (root / "monash_tsf").mkdir()
    (root / "monash_tsf" / "traffic_weekly_dataset.tsf").write_text(
        "@relation t\n@attribute series_name string\n@attribute start_timestamp date\n@frequency weekly\n@horizon 8\n"
        "@missing false\n@equallength false\n@data\n"
        f"T1:2015-01-04 00-00-00:{','.join(map(str, t1))}\nT2:2015-01-04 00-00-00:{','.join(map(str, t2))}\n")
    return t1, t2


def test_zero_shot_dropped_and_cross_series_copies_cut(tmp_path, capsys):
    data = tmp_path / "data"
    _tiny_data_dir(data)
    common = ["--data-dir", str(data), "--datasets", "electricity,traffic_weekly", "--synthetic-count", "2",
              "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]
    assert prepare.main(["--out", str(tmp_path / "clean"), *common]) == 0
    out = capsys.readouterr().out
    assert "zeroshot evaluation set: left out" in out and "decontaminated 1 series" in out
    rows = load_corpus_dataset(tmp_path / "clean").to_pandas()
    assert "electricity" not in set(rows.dataset)
    t2 = rows[rows.item_id == "T2"].iloc[0]
    assert t2.span_end == 10 and len(t2.target) == 10  # cut just before the copy of T1's test window
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert manifest["decontaminated"][0]["item_id"] == "T2" and "traffic_weekly/T1" in manifest["decontaminated"][0]["reason"]
    assert leak_check.main([str(tmp_path / "clean"), "--data-dir", str(data)]) == 0
    assert prepare.main(["--out", str(tmp_path / "leaky"), "--include-eval", *common]) == 0
    capsys.readouterr()
    assert leak_check.main([str(tmp_path / "leaky"), "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "electricity:" in out and "traffic_weekly:" in out


def test_own_history_and_low_information_windows_are_not_leaks(tmp_path):
    data = tmp_path / "data"
    t1, _ = _tiny_data_dir(data)
    spec = get_spec("traffic_weekly")
    start, _ = span_of(spec, len(t1))
    history = np.concatenate([t1[:start], t1[start:]])  # T1 whose pre-test part already repeats the test values
    history[:8] = t1[start:]
    zeros = np.zeros(30)
    corpus = [Series("T1", history[:start], "W", dataset="traffic_weekly"),
              Series("z", zeros, "W", dataset="synthetic")]
    write_corpus(corpus, tmp_path / "c")
    report = leak_check.check_corpus(tmp_path / "c", data, names=["traffic_weekly"])
    assert report.ok, report.summary()
    write_corpus([Series("copy", np.concatenate([[1.0], history[:8], [2.0]]), "W", dataset="synthetic")], tmp_path / "d")
    report = leak_check.check_corpus(tmp_path / "d", data, names=["traffic_weekly"])
    assert not report.ok and report.leaks[0].corpus_offset == 1 and report.leaks[0].eval_item_id == "T1"


def test_named_missing_dataset_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match=r"traffic_hourly: missing: put monash_tsf/traffic_hourly_dataset\.tsf under"):
        prepare.main(["--out", str(tmp_path / "c"), "--datasets", "traffic_hourly"])
