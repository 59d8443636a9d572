"""`prepare --source gluonts:GLOB@FREQ`: files written by GluonTS' own ArrowWriter (IPC file and stream, lz4,
flattened 2-D arrays with their shape) ingested value by value, and bad files refused in one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_prep import prepare
from data_prep.corpus import load_corpus_dataset

gluonts_arrow = pytest.importorskip("gluonts.dataset.arrow")  # the test extra: the writer the fixtures come from

NO_SYNTHETIC = ["--synthetic-count", "0", "--kernelsynth-count", "0", "--periodic-count", "0", "--tsmixup-count", "0"]


def build(tmp_path, *sources):
    out = tmp_path / "corpus"
    args = [a for s in sources for a in ("--source", s)]
    assert prepare.main(["--out", str(out), "--no-registered", *args, *NO_SYNTHETIC]) == 0
    return {r["item_id"]: r for r in load_corpus_dataset(out).to_list()}


def test_univariate_multivariate_and_chronos_style_files(tmp_path):
    rng = np.random.default_rng(0)
    daily = [{"start": pd.Period("2021-02-01", "D"), "target": rng.normal(size=20 + i), "item_id": f"d{i}"}
             for i in range(3)]
    daily[1]["target"][[2, 7]] = np.nan
    gluonts_arrow.ArrowWriter(compression="lz4").write_to_file(daily, tmp_path / "daily.arrow")
    multi = [{"start": pd.Period("2021-03-01 05:00", "h"), "target": rng.normal(size=(2, 30)), "item_id": "m0",
              "past_feat_dynamic_real": rng.normal(size=(1, 30))}]
    (tmp_path / "h").mkdir()
    gluonts_arrow.ArrowWriter(stream=True).write_to_file(multi, tmp_path / "h" / "hourly.arrow")
    synth = [{"start": np.datetime64("2000-01-01 00:00", "s"), "target": rng.normal(size=40)} for _ in range(2)]
    gluonts_arrow.ArrowWriter(compression="lz4").write_to_file(synth, tmp_path / "h" / "kernelsynth-data.arrow")
    rows = build(tmp_path, f"gluonts:{tmp_path / 'daily.arrow'}@D", f"gluonts:{tmp_path / 'h' / '*.arrow'}@h")
    for i, src in enumerate(daily):
        row = rows[f"d{i}"]
        np.testing.assert_array_equal(np.asarray(row["target"], np.float32), src["target"].astype(np.float32))
        assert (row["dataset"], row["freq"], row["start"]) == ("daily", "D", pd.Timestamp("2021-02-01"))
        assert (row["group_id"], row["variate"], row["covariate"]) == ("", 0, False)
    for v in range(2):
        row = rows[f"m0/{v}"]
        np.testing.assert_array_equal(np.asarray(row["target"], np.float32), multi[0]["target"][v].astype(np.float32))
        assert (row["freq"], row["start"], row["group_id"], row["variate"]) == \
            ("h", pd.Timestamp("2021-03-01 05:00"), "m0", v)
    cov = rows["m0/covariate/0"]
    assert cov["covariate"] and cov["group_id"] == "m0"
    np.testing.assert_array_equal(np.asarray(cov["target"], np.float32),
                                  multi[0]["past_feat_dynamic_real"][0].astype(np.float32))
    for j, src in enumerate(synth):  # no item_id: named by file stem and row
        row = rows[f"kernelsynth-data/{j}"]
        np.testing.assert_array_equal(np.asarray(row["target"], np.float32), src["target"].astype(np.float32))
        assert (row["dataset"], row["start"]) == ("kernelsynth-data", pd.Timestamp("2000-01-01"))


def _write_table(path, table):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


@pytest.mark.parametrize("case", ["no freq", "ragged", "unknown column", "bad shape", "empty"])
def test_bad_files_are_one_line_and_nothing_is_kept(tmp_path, case):
    stamp = pa.array([pd.Timestamp("2020-01-01")], pa.timestamp("s"))
    if case == "ragged":
        table = pa.table({"start": stamp, "target": pa.array([[[1.0, 2.0], [3.0]]])})
    elif case == "unknown column":
        table = pa.table({"start": stamp, "target": pa.array([[1.0, 2.0]]), "weather": pa.array([1])})
    elif case == "bad shape":
        table = pa.table({"start": stamp, "target": pa.array([[1.0, 2.0, 3.0]]),
                          "target._np_shape": pa.array([[2, 2]])})
    elif case == "empty":
        table = pa.table({"start": stamp.slice(0, 0), "target": pa.array([], pa.list_(pa.float64()))})
    else:
        table = pa.table({"start": stamp, "target": pa.array([[1.0, 2.0]])})
    file = _write_table(tmp_path / "bad.arrow", table)
    spec = f"gluonts:{file}" + ("" if case == "no freq" else "@D")
    with pytest.raises(SystemExit) as err:
        prepare.main(["--out", str(tmp_path / "corpus"), "--no-registered", "--source", spec, *NO_SYNTHETIC])
    message = str(err.value)
    assert len(message.splitlines()) == 1 and str(file) in message
    assert {"no freq": "do not store the frequency", "ragged": "ragged variates", "unknown column": "unknown column",
            "bad shape": "does not fit", "empty": "no rows"}[case] in message
    assert not (tmp_path / "corpus").exists()
