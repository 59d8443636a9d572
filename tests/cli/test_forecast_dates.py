"""`moe-ts forecast` reads dates and frequencies right or refuses them in one line (issue 25, deliverable 2):
day/month order never guessed, --freq checked against the data, anchored calendars, DST offset changes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from moe_ts.model import MoiraiMoEModel


def run(ckpt, tmp_path, frame, *extra, horizon=3):
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out.csv"
    code = main(["forecast", "--checkpoint", str(ckpt), "--input", str(path), "--horizon", str(horizon),
                 "--num-samples", "4", "--out", str(out), "--overwrite", *extra])
    return code, (pd.read_csv(out) if code == 0 else None)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def wide(stamps: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"date": stamps, "a": np.sin(np.arange(len(stamps)) / 3.0)})


MONTHS = pd.date_range("2019-01-01", periods=30, freq="MS")  # the 1st of each month: every field <= 12


def test_ambiguous_day_month_dates_are_refused_and_the_flags_decide(tiny_checkpoint, tmp_path, capsys):
    frame = wide(list(MONTHS.strftime("%d/%m/%Y")))
    code, _ = run(tiny_checkpoint, tmp_path, frame)
    err = one_line_error(capsys)
    assert code != 0 and "ambiguous" in err and "--dayfirst" in err and "--date-format" in err and "in.csv" in err
    expected = ["2021-07-01", "2021-08-01", "2021-09-01"]  # monthly, continuing June 2021
    for flags in (["--dayfirst"], ["--date-format", "%d/%m/%Y"]):
        code, out = run(tiny_checkpoint, tmp_path, frame, *flags)
        assert code == 0 and list(out["timestamp"]) == expected
    # month-first data given month-first: the same calendar
    code, out = run(tiny_checkpoint, tmp_path, wide(list(MONTHS.strftime("%m/%d/%Y"))), "--no-dayfirst")
    assert code == 0 and list(out["timestamp"]) == expected


def test_dates_that_only_read_day_first_are_read_day_first(tiny_checkpoint, tmp_path, capsys):
    days = pd.date_range("2019-01-01", periods=40, freq="D")
    code, out = run(tiny_checkpoint, tmp_path, wide(list(days.strftime("%d/%m/%Y"))))
    assert code == 0 and list(out["timestamp"]) == ["2019-02-10", "2019-02-11", "2019-02-12"]
    code, _ = run(tiny_checkpoint, tmp_path, wide(list(days.strftime("%d/%m/%Y"))), "--no-dayfirst")
    err = one_line_error(capsys)
    assert code != 0 and "line 14" in err and "'13/01/2019'" in err and "month 13" in err  # row 13 = 13 January


def test_a_freq_finer_than_the_data_is_an_error_naming_both(tiny_checkpoint, tmp_path, capsys):
    days = pd.date_range("2019-01-01", periods=40, freq="D")
    code, _ = run(tiny_checkpoint, tmp_path, wide(list(days.strftime("%Y-%m-%d"))), "--freq", "h")
    err = one_line_error(capsys)
    assert code != 0 and "'h' is finer than the data" in err and "'D'" in err
    hours = pd.date_range("2019-01-01", periods=40, freq="h")
    code, _ = run(tiny_checkpoint, tmp_path, wide(list(hours.strftime("%Y-%m-%d %H:%M"))), "--freq", "min")
    err = one_line_error(capsys)
    assert code != 0 and "'min' is finer than the data" in err and "'h'" in err
    code, out = run(tiny_checkpoint, tmp_path, wide(list(hours.strftime("%Y-%m-%d %H:%M"))), "--freq", "h")
    assert code == 0 and out["timestamp"][0] == "2019-01-02 16:00:00"


def test_monthly_data_on_the_15th_is_forecast_on_the_15th(tiny_checkpoint, tmp_path, capsys):
    stamps = pd.date_range("2019-01-01", periods=30, freq="MS") + pd.Timedelta(days=14)
    frame = wide(list(stamps.strftime("%Y-%m-%d")))
    expected = ["2021-07-15", "2021-08-15", "2021-09-15"]
    code, out = run(tiny_checkpoint, tmp_path, frame)
    assert code == 0 and list(out["timestamp"]) == expected
    code, out = run(tiny_checkpoint, tmp_path, frame.drop(index=[3, 17]), "--freq", "MS+14D")  # with gaps
    assert code == 0 and list(out["timestamp"]) == expected
    code, _ = run(tiny_checkpoint, tmp_path, frame, "--freq", "MS")
    err = one_line_error(capsys)
    assert code != 0 and "not on the 'MS' calendar" in err and "'MS+14D'" in err


def test_week_ending_calendars_continue_and_a_wrong_anchor_names_the_right_one(tiny_checkpoint, tmp_path, capsys):
    weeks = pd.date_range("2024-01-03", periods=30, freq="W-WED")
    frame = wide(list(weeks.strftime("%Y-%m-%d")))
    code, out = run(tiny_checkpoint, tmp_path, frame)
    assert code == 0 and list(out["timestamp"]) == ["2024-07-31", "2024-08-07", "2024-08-14"]
    code, _ = run(tiny_checkpoint, tmp_path, frame, "--freq", "W-SUN")
    err = one_line_error(capsys)
    assert code != 0 and "'W-SUN'" in err and "'W-WED'" in err and "Wednesday" in err


def test_utc_offsets_changing_at_a_dst_switch_are_read_as_predict_df_reads_the_zone(tiny_checkpoint, tmp_path):
    hours = pd.date_range("2024-03-30 12:00", periods=40, freq="h", tz="Europe/Berlin")  # crosses 31 March 02:00
    text = [t.isoformat(sep=" ") for t in hours]
    assert {t[-6:] for t in text} == {"+01:00", "+02:00"}
    code, out = run(tiny_checkpoint, tmp_path, wide(text))
    assert code == 0
    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    reference = model.predict_df(pd.DataFrame({"item_id": "a", "timestamp": hours, "target": np.arange(40.0)}),
                                 prediction_length=3, num_samples=4)
    assert [pd.Timestamp(t) for t in out["timestamp"]] == list(reference["timestamp"])
    # daily data stamped at local midnight: the dates continue (not 23:00 of the day before)
    days = pd.date_range("2024-03-20", periods=20, freq="D", tz="Europe/Berlin")
    code, out = run(tiny_checkpoint, tmp_path, wide([t.isoformat(sep=" ") for t in days]))
    assert code == 0 and list(out["timestamp"]) == ["2024-04-09", "2024-04-10", "2024-04-11"]


def test_each_item_of_a_long_file_keeps_its_own_frequency(tiny_checkpoint, tmp_path):
    a = pd.DataFrame({"item_id": "A", "timestamp": pd.date_range("2024-01-01", periods=30, freq="D"), "target": 1.0})
    b = pd.DataFrame({"item_id": "B", "timestamp": pd.date_range("2024-01-01", periods=30, freq="h"), "target": 2.0})
    code, out = run(tiny_checkpoint, tmp_path, pd.concat([a, b]))
    assert code == 0
    assert list(map(pd.Timestamp, out["timestamp"])) == list(map(pd.Timestamp, [
        "2024-01-31", "2024-02-01", "2024-02-02", "2024-01-02 06:00", "2024-01-02 07:00", "2024-01-02 08:00"]))


@pytest.mark.parametrize("stamps, expected", [
    (list(range(50)), [50, 51, 52]),
    (list(range(100, 600, 10)), [600, 610, 620]),
])
def test_an_integer_time_index_continues_in_its_own_steps(tiny_checkpoint, tmp_path, stamps, expected):
    frame = pd.DataFrame({"item_id": "x", "timestamp": stamps, "target": np.arange(len(stamps), dtype=float)})
    code, out = run(tiny_checkpoint, tmp_path, frame)
    assert code == 0 and list(out["timestamp"]) == expected
    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    assert list(model.predict_df(frame, prediction_length=3, num_samples=4)["timestamp"]) == expected
