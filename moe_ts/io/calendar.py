"""Timestamp columns read right or refused, and the regular calendar a series' timestamps lie on.

Used by moe_ts/io/dataframe.py (tables of series) and the readers of data_prep. What a column can hold:
- datetimes (a datetime64 column, time zones included);
- date strings: ISO, or day/month/year vs month/day/year with `/`, `.` or `-`. The order is read from the data
  when a field above 12 shows it; when every row reads both ways (and the two calendars differ) the column
  is refused with the flags that decide (`--dayfirst` / `--no-dayfirst` / `--date-format`), never guessed;
- strings whose UTC offset changes (a DST switch): sub-daily data are kept in absolute time (shown in the last
  row's offset), daily and coarser ones on their wall-clock dates;
- integers (a step counter: 0, 1, 2, ... or 0, 10, 20, ...): an integer calendar whose "frequency" is the step.

Calendars are pandas frequency aliases (h, D, W-WED, MS, ...) plus "nMS+kD", n months on day k+1 of the month
(monthly data stamped on the 15th is "MS+14D"; pandas has no alias for it).
"""
from __future__ import annotations

import re
import warnings
from typing import Callable

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

MAX_MISSING_FACTOR = 100  # a calendar more than 100x longer than the rows is a wrong frequency, not gaps
_DAY_MONTH = re.compile(r"^(\d{1,2})([/.\-])(\d{1,2})\2(?:\d{4}|\d{2})(?:$|[ T])")
_MONTH_DAY_OFFSET = re.compile(r"^(\d*)MS\+(\d+)D$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DATE_LIKE_DIGITS = (4, 6, 8)  # 2019, 201901, 20190131 are dates, not step counters
DATES_HINT = ("pass --dayfirst (day/month/year), --no-dayfirst (month/day/year) or --date-format (e.g. '%d/%m/%Y'); "
              "in Python dayfirst= / date_format=")


class TimeSeriesFrameError(ValueError):
    """A table of time series is malformed: missing column, bad value, or irregular timestamps."""


def row_label(position: int) -> str:
    return f"row {position + 1}"


def is_integer_calendar(stamps: object) -> bool:
    return not isinstance(stamps, pd.DatetimeIndex) and pd.api.types.is_integer_dtype(getattr(stamps, "dtype", None))


# ---------------------------------------------------------------- parsing


def parse_timestamps(column: pd.Series, where: str, label: Callable[[int], str] = row_label,
                     date_format: str | None = None, dayfirst: bool | None = None) -> pd.DatetimeIndex | pd.Index:
    """Timestamps of a column (see the module docstring); TimeSeriesFrameError naming the first bad row."""
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.DatetimeIndex(column)
        if stamps.hasnans:
            raise TimeSeriesFrameError(f"{where}: {label(int(np.flatnonzero(stamps.isna())[0]))}: empty timestamp")
        return stamps
    if pd.api.types.is_integer_dtype(column) and date_format is None:
        return pd.Index(column.to_numpy(np.int64))
    text = column.astype("string").str.strip()
    empty = np.flatnonzero(text.isna().to_numpy() | (text == "").fillna(True).to_numpy())
    if len(empty):
        raise TimeSeriesFrameError(f"{where}: {label(int(empty[0]))}: empty timestamp")
    if date_format is not None:
        return _parse_with_format(text, date_format, where, label)
    if text.str.fullmatch(_INTEGER.pattern).all() and not text.str.lstrip("+-").str.len().isin(_DATE_LIKE_DIGITS).all():
        return pd.Index(text.astype(np.int64).to_numpy())
    first = _day_first(text, where, label, dayfirst)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas < 3 on mixed offsets: object dtype, handled below
        try:
            parsed = pd.to_datetime(text, format="mixed", dayfirst=first)
        except (ValueError, TypeError, OverflowError) as err:
            if "time zone" not in str(err) and "Tz-aware" not in str(err):
                _raise_first_unparseable(text, first, where, label, err)
            parsed = text.map(lambda v: pd.to_datetime(v, dayfirst=first))
    if parsed.dtype == object:  # several UTC offsets (a DST switch) or offsets on some rows only
        return _changing_offsets(text, parsed, where, label)
    return pd.DatetimeIndex(parsed)


def _parse_with_format(text: pd.Series, date_format: str, where: str, label: Callable[[int], str]) -> pd.DatetimeIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(text, format=date_format, errors="coerce")
        except ValueError:  # mixed UTC offsets, where pandas refuses them
            parsed = text.map(lambda v: pd.to_datetime(v, format=date_format, errors="coerce"))
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise TimeSeriesFrameError(f"{where}: {label(int(bad[0]))}: timestamp {text.iloc[int(bad[0])]!r} does not "
                                   f"match the date format {date_format!r}")
    if parsed.dtype == object:
        return _changing_offsets(text, parsed, where, label)
    return pd.DatetimeIndex(parsed)


def _raise_first_unparseable(text: pd.Series, dayfirst: bool, where: str, label: Callable[[int], str],
                             err: Exception) -> None:
    for i, value in enumerate(text):
        try:
            pd.to_datetime(value, dayfirst=dayfirst)
        except (ValueError, TypeError, OverflowError):
            raise TimeSeriesFrameError(f"{where}: {label(i)}: unparseable timestamp {value!r}") from None
    raise TimeSeriesFrameError(f"{where}: unparseable timestamps ({str(err).splitlines()[0]})") from None


def _day_first(text: pd.Series, where: str, label: Callable[[int], str], dayfirst: bool | None) -> bool:
    """Whether d/m/y-or-m/d/y dates are day-first: as the caller says (checked), else as the data show;
    TimeSeriesFrameError when the rows read both ways into different dates."""
    fields = text.str.extract(_DAY_MONTH.pattern)
    rows = np.flatnonzero(fields[0].notna().to_numpy())
    if not len(rows):
        return bool(dayfirst)
    a = fields[0].iloc[rows].astype(int).to_numpy()
    b = fields[2].iloc[rows].astype(int).to_numpy()
    if dayfirst is not None:  # the month field must be a month
        month = b if dayfirst else a
        over = np.flatnonzero(month > 12)
        if len(over):
            order = "day/month/year" if dayfirst else "month/day/year"
            raise TimeSeriesFrameError(f"{where}: {label(int(rows[over[0]]))}: {text.iloc[rows[over[0]]]!r} has no "
                                       f"month {month[over[0]]} ({order} asked for); {DATES_HINT}")
        return dayfirst
    if a.max() > 12 and b.max() > 12:
        i = int(rows[np.flatnonzero((a > 12) if b.max() <= 12 else (b > 12))[0]])
        raise TimeSeriesFrameError(f"{where}: {label(i)}: {text.iloc[i]!r}: both day-first and month-first rows in "
                                   f"one column (e.g. {text.iloc[int(rows[np.argmax(a)])]!r} and "
                                   f"{text.iloc[int(rows[np.argmax(b)])]!r}); {DATES_HINT}")
    if a.max() > 12:
        return True
    if b.max() > 12:
        return False
    if np.any(a != b):
        i = int(rows[np.flatnonzero(a != b)[0]])
        raise TimeSeriesFrameError(f"{where}: ambiguous dates: every row reads both day-first and month-first (no "
                                   f"field above 12; {label(i)}: {text.iloc[i]!r}); {DATES_HINT}")
    return False


def _changing_offsets(text: pd.Series, parsed: pd.Series, where: str, label: Callable[[int], str]) -> pd.DatetimeIndex:
    """Timestamps whose UTC offset changes: absolute time in the last row's offset for sub-daily data, the
    wall-clock times for data stamped at one time of day (daily and coarser)."""
    aware = np.array([getattr(v, "tzinfo", None) is not None for v in parsed])
    if not aware.all():
        i = int(np.flatnonzero(~aware)[0])
        raise TimeSeriesFrameError(f"{where}: {label(i)}: timestamp {text.iloc[i]!r} has no UTC offset while "
                                   f"{text.iloc[int(np.flatnonzero(aware)[0])]!r} has one")
    wall = pd.DatetimeIndex([v.replace(tzinfo=None) for v in parsed])
    if len(set(wall.time)) == 1:
        return wall
    utc = pd.DatetimeIndex([pd.Timestamp(v).tz_convert("UTC") for v in parsed])
    return utc.tz_convert(parsed.iloc[-1].tzinfo)


# ---------------------------------------------------------------- calendars


def calendar_offset(freq: str, where: str) -> pd.DateOffset:
    """The offset of a frequency alias (pandas', or "nMS+kD"); TimeSeriesFrameError for an unknown one."""
    match = _MONTH_DAY_OFFSET.match(freq)
    if match:
        months, days = int(match[1] or 1), int(match[2])
        if days > 27 or months < 1:
            raise TimeSeriesFrameError(f"{where}: frequency {freq!r}: nMS+kD needs n >= 1 and k <= 27 "
                                       f"(month-end data is 'ME')")
        return pd.DateOffset(months=months, day=days + 1)
    try:
        return to_offset(freq)
    except ValueError as err:
        raise TimeSeriesFrameError(f"{where}: unknown frequency {freq!r} ({err})") from None


def _on_offset(offset: pd.DateOffset, stamp: pd.Timestamp) -> bool:
    day = getattr(offset, "kwds", {}).get("day")
    return stamp.day == day if day is not None else bool(offset.is_on_offset(stamp))


def _freq_alias(freq: object) -> str | None:
    if freq is None:
        return None
    return freq if isinstance(freq, str) else getattr(freq, "freqstr", str(freq))


def _month_day(stamps: pd.DatetimeIndex) -> str | None:
    """"nMS+kD" when every timestamp is on one day (1..28) and time of the month, n months apart, else None."""
    if len(set(stamps.day)) != 1 or len(set(stamps.time)) != 1 or stamps[0].day > 28:
        return None
    months = np.asarray(stamps.year * 12 + stamps.month)
    step = int(np.gcd.reduce(np.diff(months)))
    if step < 1:
        return None
    n = "" if step == 1 else str(step)
    return f"{n}MS" if stamps[0].day == 1 else f"{n}MS+{stamps[0].day - 1}D"


def infer_frequency(stamps: pd.DatetimeIndex | pd.Index, where: str) -> str:
    """The frequency of strictly increasing timestamps that may have gaps: pandas' inference on the whole
    column, else on its head or tail (gaps elsewhere are then checked by `regular_positions`), else a
    day-of-month calendar ("MS+14D"). An integer calendar's step is its smallest common divisor."""
    if len(stamps) < 3:
        raise TimeSeriesFrameError(f"{where}: fewer than 3 timestamps, cannot infer the frequency; pass it (--freq / freq=)")
    if is_integer_calendar(stamps):
        return str(int(np.gcd.reduce(np.diff(np.asarray(stamps)))))
    n = len(stamps)
    for size in (n, 1000, 100, 10, 3):
        for part in (stamps[:size], stamps[-size:]):
            if len(part) >= 3:
                alias = _freq_alias(pd.infer_freq(part))
                if alias:
                    return alias
    alias = _month_day(stamps)
    if alias:
        return alias
    raise TimeSeriesFrameError(f"{where}: timestamps are not regularly spaced anywhere (e.g. {stamps[0]}, {stamps[1]}, "
                               f"{stamps[2]}); cannot infer the frequency; pass it (--freq / freq=)")


def check_increasing(stamps: pd.DatetimeIndex | pd.Index, where: str, label: Callable[[int], str] = row_label) -> None:
    """TimeSeriesFrameError naming the first row whose timestamp repeats or goes back."""
    back = np.flatnonzero(np.asarray(stamps[1:] <= stamps[:-1]))
    if len(back):
        i = int(back[0]) + 1
        what = "repeats the previous timestamp" if stamps[i] == stamps[i - 1] else \
            f"is earlier than the previous one ({stamps[i - 1]}); timestamps must increase (sort the data)"
        raise TimeSeriesFrameError(f"{where}: {label(i)}: timestamp {stamps[i]} {what}")


def _data_look_like(stamps: pd.DatetimeIndex) -> str:
    try:
        return f"the data look like {infer_frequency(stamps, '')!r}"
    except TimeSeriesFrameError:
        return "no frequency inferred from the data"


def regular_positions(stamps: pd.DatetimeIndex | pd.Index, freq: str, where: str,
                      label: Callable[[int], str] = row_label) -> np.ndarray:
    """Position of each timestamp on the calendar start, start+freq, ...; TimeSeriesFrameError naming the first
    row that repeats, goes back, or falls between calendar steps, or a `freq` finer than the data's spacing."""
    check_increasing(stamps, where, label)
    if is_integer_calendar(stamps):
        return _integer_positions(np.asarray(stamps, dtype=np.int64), freq, where, label)
    offset = calendar_offset(freq, where)
    if not _on_offset(offset, stamps[0]):
        raise TimeSeriesFrameError(f"{where}: the first timestamp {stamps[0]} ({stamps[0].day_name()}) is not on the "
                                   f"{freq!r} calendar ({_data_look_like(stamps)}); pass the right --freq / freq=")
    if len(stamps) > 1:
        widest_step = np.diff(pd.date_range(stamps[0], periods=14, freq=offset)).max()
        closest = np.diff(stamps).min()
        if closest > widest_step:
            raise TimeSeriesFrameError(f"{where}: frequency {freq!r} is finer than the data's spacing (timestamps at "
                                       f"least {pd.Timedelta(closest)} apart; {_data_look_like(stamps)}); pass the "
                                       f"right --freq / freq=")
    if isinstance(offset, pd.offsets.Tick):
        steps = (stamps[-1] - stamps[0]) / pd.Timedelta(offset)
        if steps > MAX_MISSING_FACTOR * len(stamps) + 1000:
            raise TimeSeriesFrameError(f"{where}: {freq!r} is far finer than the timestamps ({stamps[0]} .. {stamps[-1]}, "
                                       f"{len(stamps)} rows); pass the right --freq / freq=")
    grid = pd.date_range(stamps[0], stamps[-1], freq=offset)
    positions = grid.get_indexer(stamps) if len(grid) else np.full(len(stamps), -1)
    off = np.flatnonzero(positions < 0)
    if len(off):
        i = int(off[0])
        raise TimeSeriesFrameError(f"{where}: {label(i)}: timestamp {stamps[i]} is not on the {freq!r} calendar that "
                                   f"starts at {stamps[0]} (irregular spacing; pass --freq / freq= if {freq!r} is wrong)")
    return positions


def _integer_positions(stamps: np.ndarray, freq: str, where: str, label: Callable[[int], str]) -> np.ndarray:
    try:
        step = int(freq)
    except ValueError:
        step = 0
    if step < 1:
        raise TimeSeriesFrameError(f"{where}: the time index is integers; its frequency is a positive integer step, "
                                   f"not {freq!r}")
    offsets = stamps - stamps[0]
    off = np.flatnonzero(offsets % step)
    if len(off):
        raise TimeSeriesFrameError(f"{where}: {label(int(off[0]))}: time index {stamps[off[0]]} is not on the step-"
                                   f"{step} calendar that starts at {stamps[0]}")
    if len(stamps) > 1 and np.diff(stamps).min() > step:
        raise TimeSeriesFrameError(f"{where}: frequency {freq!r} is finer than the data's spacing (time index at least "
                                   f"{np.diff(stamps).min()} apart); pass the right --freq / freq=")
    if offsets[-1] // step > MAX_MISSING_FACTOR * len(stamps) + 1000:
        raise TimeSeriesFrameError(f"{where}: step {step} is far finer than the time index ({stamps[0]} .. "
                                   f"{stamps[-1]}, {len(stamps)} rows); pass the right --freq / freq=")
    return offsets // step


def future_stamps(start: pd.Timestamp | int, length: int, freq: str, horizon: int) -> pd.DatetimeIndex | list[int]:
    """The `horizon` timestamps after the last of `length` steps from `start` on the `freq` calendar."""
    if isinstance(start, (int, np.integer)):
        step = int(freq)
        last = int(start) + (length - 1) * step
        return [last + step * (h + 1) for h in range(horizon)]
    offset = calendar_offset(freq, "calendar")
    last = start + (length - 1) * offset
    return pd.date_range(last, periods=horizon + 1, freq=offset)[1:]
