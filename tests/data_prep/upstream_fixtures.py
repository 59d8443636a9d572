"""Small inputs in the upstream corpus layouts of ../shared/DATA_SOURCES.md, written into a test's folder.

LOTSA / GIFT-Eval: `datasets.Dataset.from_generator(gen, features=Features(...)).save_to_disk(folder)`, one
folder per dataset (features are per dataset). Chronos: a Parquet file `<config>/train-00000-of-00001.parquet`
with `id`, one `timestamp` list<timestamp[ms]>, numeric list columns and a static column. Frames: the long and
wide tables `moe-ts forecast` reads. Each builder returns what it wrote, for the tests to compare against.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MISSING_START = pd.Timestamp("1970-01-01")


def _save(folder: Path, rows: list[dict[str, Any]], features: dict[str, Any], num_shards: int = 1) -> Path:
    import tempfile

    import datasets

    def gen(rows):
        yield from rows

    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.Dataset.from_generator(gen, features=datasets.Features(features), gen_kwargs={"rows": rows},
                                             cache_dir=cache)
        ds.save_to_disk(str(folder), num_shards=num_shards)
    return folder


def _univariate_features(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import datasets

    return {"item_id": datasets.Value("string"), "start": datasets.Value("timestamp[s]"),
            "freq": datasets.Value("string"), "target": datasets.Sequence(datasets.Value("float32")), **(extra or {})}


def _multivariate_features(dims: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import datasets

    return {**_univariate_features(),
            "target": datasets.Sequence(datasets.Sequence(datasets.Value("float32")), length=dims), **(extra or {})}


def lotsa_hourly_nan(root: Path) -> tuple[Path, list[dict]]:
    """Univariate hourly ("H") rows of 30-60 values, every fifth value NaN."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        target = rng.normal(10 * i, 1 + i, 30 + 10 * i).astype(np.float32)
        target[::5] = np.nan
        rows.append({"item_id": f"h{i}", "start": pd.Timestamp("2021-03-01 05:00") + pd.Timedelta(hours=i),
                     "freq": "H", "target": target})
    return _save(root / "hourly_nan", rows, _univariate_features()), rows


def lotsa_daily_missing_start(root: Path) -> tuple[Path, list[dict]]:
    """Daily rows, the second with the missing start 1970-01-01; written as two shards."""
    rng = np.random.default_rng(2)
    rows = [{"item_id": f"d{i}", "start": MISSING_START if i == 1 else pd.Timestamp("2019-01-01") + pd.Timedelta(days=i),
             "freq": "D", "target": rng.normal(0, 1, 25 + i).astype(np.float32)} for i in range(3)]
    return _save(root / "daily_missing_start", rows, _univariate_features(), num_shards=2), rows


def lotsa_weekly_3var(root: Path) -> tuple[Path, list[dict]]:
    """3-variate weekly ("W-SUN") rows, variate-major [3][T]."""
    rng = np.random.default_rng(3)
    rows = [{"item_id": f"w{i}", "start": pd.Timestamp("2020-01-05") + pd.Timedelta(weeks=i), "freq": "W-SUN",
             "target": rng.normal(i, 1, (3, 20 + i)).astype(np.float32)} for i in range(2)]
    return _save(root / "weekly_3var", rows, _multivariate_features(3)), rows


def lotsa_covariates(root: Path) -> tuple[Path, list[dict]]:
    """Univariate 15-minutely ("15T") rows with two past_feat_dynamic_real covariates of the same length."""
    import datasets

    rng = np.random.default_rng(4)
    rows = [{"item_id": f"c{i}", "start": pd.Timestamp("2022-06-01"), "freq": "15T",
             "target": rng.normal(0, 1, 40).astype(np.float32),
             "past_feat_dynamic_real": rng.normal(5, 2, (2, 40)).astype(np.float32)} for i in range(2)]
    extra = {"past_feat_dynamic_real": datasets.Sequence(datasets.Sequence(datasets.Value("float32")), length=2)}
    return _save(root / "covariates", rows, _univariate_features(extra)), rows


def lotsa_tree(root: Path) -> tuple[Path, dict[str, list[dict]]]:
    """A LOTSA-like root holding every LOTSA fixture above, one folder per dataset."""
    tree = root / "lotsa"
    tree.mkdir(parents=True, exist_ok=True)
    made = {}
    for build in (lotsa_hourly_nan, lotsa_daily_missing_start, lotsa_weekly_3var, lotsa_covariates):
        folder, rows = build(tree)
        made[folder.name] = rows
    return tree, made


def chronos_two_targets(root: Path, config: str = "chronos_pair") -> tuple[Path, list[dict]]:
    """A Chronos Parquet: id, timestamp (list<timestamp[ms]>, daily), two numeric targets, a static column."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(3):
        n = 15 + 5 * i
        a = rng.normal(0, 1, n)
        a[3] = np.nan
        rows.append({"id": f"s{i}", "timestamp": list(pd.date_range("2018-02-01", periods=n, freq="D") + pd.Timedelta(hours=i)),
                     "price": a, "volume": rng.integers(0, 100, n).astype(np.float32), "category": f"cat{i % 2}"})
    return write_chronos(root / config / "train-00000-of-00001.parquet", rows), rows


def write_chronos(path: Path, rows: list[dict], value_types: dict[str, pa.DataType] | None = None) -> Path:
    """Rows as a Chronos-layout Parquet file (timestamp as list<timestamp[ms]>, price float64, volume float32)."""
    kinds = {"price": pa.float64(), "volume": pa.float32(), **(value_types or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [pa.field("id", pa.string()), pa.field("timestamp", pa.list_(pa.timestamp("ms")))]
    names = [k for k in rows[0] if k not in ("id", "timestamp", "category")] if rows else list(kinds)
    fields += [pa.field(k, pa.list_(kinds.get(k, pa.float64()))) for k in names]
    fields.append(pa.field("category", pa.string()))
    schema = pa.schema(fields)
    table = pa.Table.from_pylist([{**r, **{k: list(map(_plain, r[k])) for k in names}} for r in rows], schema=schema)
    pq.write_table(table, path)
    return path


def _plain(v: Any) -> Any:
    return None if isinstance(v, float) and np.isnan(v) else (float(v) if isinstance(v, (np.floating, float)) else v)


def long_frame(root: Path, suffix: str = "csv") -> tuple[Path, pd.DataFrame]:
    """A long table: item_id, timestamp (hourly, one step absent in item b), value columns load and temp."""
    stamps = pd.date_range("2023-01-01", periods=12, freq="h")
    frame = pd.concat([
        pd.DataFrame({"item_id": "a", "timestamp": stamps, "load": np.arange(12.0), "temp": np.arange(12.0) / 4}),
        pd.DataFrame({"item_id": "b", "timestamp": stamps.delete(5), "load": np.arange(11.0) * 2, "temp": np.ones(11)}),
    ], ignore_index=True)
    return _write_frame(root / f"long_frame.{suffix}", frame), frame


def wide_frame(root: Path, suffix: str = "parquet") -> tuple[Path, pd.DataFrame]:
    """A wide table: a date column (monthly, month start) and two series columns, one value missing."""
    frame = pd.DataFrame({"date": pd.date_range("2015-01-01", periods=14, freq="MS"),
                          "north": np.linspace(0, 13, 14), "south": np.r_[np.arange(7.0), np.nan, np.arange(6.0)]})
    return _write_frame(root / f"wide_frame.{suffix}", frame), frame


def _write_frame(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


# --- bad input -----------------------------------------------------------------------------------------------


def bad_unknown_column(root: Path) -> Path:
    """A LOTSA folder with a column the layout does not have (`feat_mystery`)."""
    import datasets

    rows = [{"item_id": "x", "start": pd.Timestamp("2020-01-01"), "freq": "D", "target": np.ones(30, np.float32),
             "feat_mystery": 1.0}]
    return _save(root / "unknown_column", rows, _univariate_features({"feat_mystery": datasets.Value("float32")}))


def bad_ragged_variates(root: Path) -> Path:
    """A 2-variate LOTSA row whose variates differ in length (30 and 29)."""
    rows = [{"item_id": "ok", "start": pd.Timestamp("2020-01-01"), "freq": "D", "target": [np.ones(30), np.ones(30)]},
            {"item_id": "ragged", "start": pd.Timestamp("2020-01-01"), "freq": "D",
             "target": [np.ones(30), np.ones(29)]}]
    return _save(root / "ragged", rows, _multivariate_features(2))


def bad_frequency(root: Path) -> Path:
    """A LOTSA row whose freq is no pandas alias ("every-blue-moon")."""
    rows = [{"item_id": "m", "start": pd.Timestamp("2020-01-01"), "freq": "every-blue-moon",
             "target": np.ones(30, np.float32)}]
    return _save(root / "bad_freq", rows, _univariate_features())


def bad_empty_shard(root: Path) -> Path:
    """A LOTSA folder of two shards whose second holds no row (an Arrow stream with the schema and no batch)."""
    rows = [{"item_id": f"e{i}", "start": pd.Timestamp("2020-01-01"), "freq": "D", "target": np.ones(30, np.float32)}
            for i in range(2)]
    folder = _save(root / "empty_shard", rows, _univariate_features(), num_shards=2)
    shard = folder / "data-00001-of-00002.arrow"
    with pa.memory_map(str(shard)) as source:
        schema = pa.ipc.open_stream(source).schema
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    return folder


def bad_non_monotone(root: Path) -> Path:
    """A Chronos Parquet whose second row's timestamps go back at position 7."""
    stamps = list(pd.date_range("2020-01-01", periods=20, freq="D"))
    back = stamps[:6] + [stamps[3]] + stamps[7:]
    rows = [{"id": "fine", "timestamp": stamps, "price": np.ones(20), "volume": np.ones(20), "category": "a"},
            {"id": "backwards", "timestamp": back, "price": np.ones(20), "volume": np.ones(20), "category": "a"}]
    return write_chronos(root / "non_monotone" / "train-00000-of-00001.parquet", rows)


def bad_chronos_empty(root: Path) -> Path:
    """A Chronos Parquet with the right columns and no row."""
    return write_chronos(root / "empty_chronos" / "train-00000-of-00001.parquet", [])


BAD_INPUTS: dict[str, tuple[str, Callable[[Path], Path]]] = {  # name -> (source kind, builder)
    "unknown column": ("lotsa", bad_unknown_column),
    "ragged variates": ("lotsa", bad_ragged_variates),
    "frequency": ("lotsa", bad_frequency),
    "empty shard": ("lotsa", bad_empty_shard),
    "non-monotone": ("chronos", bad_non_monotone),
    "empty chronos shard": ("chronos", bad_chronos_empty),
}
