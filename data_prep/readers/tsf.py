"""Monash `.tsf` reader: header (@relation, @attribute, @frequency, @horizon, @missing, @equallength), then
@data lines 'attr1:attr2:...:v1,v2,...' with '?' for missing values."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.frequency import canonical_freq
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series

_ATTR_TYPES = ("numeric", "string", "date")
_TSF_DATE_FORMAT = "%Y-%m-%d %H-%M-%S"


@dataclass
class TsfFile:
    """A parsed .tsf file: its series plus the header facts."""

    series: list[Series]
    frequency: str | None  # canonical pandas alias, None when the file has no @frequency
    horizon: int | None
    missing: bool | None
    equal_length: bool | None
    relation: str | None
    attributes: list[tuple[str, str]]  # (name, type) in file order
    metadata: dict[str, Any] = field(default_factory=dict)  # raw header values and comment lines


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # Monash files written on Windows use cp1252


def _parse_bool(value: str, path: Path, lineno: int, key: str) -> bool:
    low = value.strip().lower()
    if low not in ("true", "false"):
        raise DataFormatError(path, f"@{key} must be true or false, got {value!r}", lineno)
    return low == "true"


def _parse_values(text: str, path: Path, lineno: int) -> np.ndarray:
    tokens = text.split(",")
    clean = ["nan" if t.strip() == "?" else t for t in tokens]
    try:
        values = np.array(clean, dtype=np.float64)
    except ValueError:
        for i, tok in enumerate(tokens):
            if tok.strip() == "?":
                continue
            try:
                float(tok)
            except ValueError:
                raise DataFormatError(path, f"non-numeric value {tok.strip()!r} at position {i + 1} of the series", lineno) from None
        raise
    if np.isnan(values[[t.strip().lower() == "nan" for t in tokens]]).any():
        raise DataFormatError(path, "literal 'nan' in the series; .tsf marks missing values with '?'", lineno)
    return values


def read_tsf(
    path: str | os.PathLike[str], dataset: str = "", freq: str | None = None, max_series: int | None = None
) -> TsfFile:
    """Parse a Monash .tsf file. `freq` overrides/supplies the frequency (required when the file has no
    @frequency); `dataset` is stored on each Series; `max_series` stops after N series."""
    path = Path(path)
    text = _read_text(path)
    attributes: list[tuple[str, str]] = []
    meta: dict[str, Any] = {"comments": []}
    frequency = horizon = missing = equal_length = relation = None
    series: list[Series] = []
    in_data = False
    canon: str | None = None
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not in_data:
                meta["comments"].append(line[1:].strip())
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataFormatError(path, f"expected a '@' header line before @data, got {line[:40]!r}", lineno)
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            value = value.strip()
            if key == "data":
                if not attributes:
                    raise DataFormatError(path, "missing @attribute section before @data", lineno)
                in_data = True
                if freq is not None:
                    canon = canonical_freq(freq, str(path))
                elif frequency is not None:
                    canon = canonical_freq(frequency, str(path))
                else:
                    raise DataFormatError(path, "no @frequency line and no freq given", lineno)
                continue
            if key == "attribute":
                parts = value.split()
                if len(parts) != 2 or parts[1].lower() not in _ATTR_TYPES:
                    raise DataFormatError(path, f"@attribute needs 'NAME TYPE' with TYPE in {_ATTR_TYPES}, got {value!r}", lineno)
                attributes.append((parts[0], parts[1].lower()))
            elif key == "frequency":
                frequency = value
                try:
                    canonical_freq(value, f"{path}:{lineno}")
                except ValueError as err:
                    raise DataFormatError(path, str(err).split(" in ")[0], lineno) from None
            elif key == "horizon":
                try:
                    horizon = int(value)
                except ValueError:
                    raise DataFormatError(path, f"@horizon must be an integer, got {value!r}", lineno) from None
            elif key == "missing":
                missing = _parse_bool(value, path, lineno, key)
            elif key == "equallength":
                equal_length = _parse_bool(value, path, lineno, key)
            elif key == "relation":
                relation = value
            else:
                raise DataFormatError(path, f"unknown header line @{key}", lineno)
            meta[key] = value
            continue
        # @data line
        fields = line.split(":", len(attributes))
        if len(fields) != len(attributes) + 1:
            raise DataFormatError(
                path, f"expected {len(attributes)} attribute values and a series separated by ':', got {len(fields)} fields", lineno
            )
        attrs: dict[str, Any] = {}
        for (name, kind), value in zip(attributes, fields[:-1]):
            value = value.strip()
            if kind == "numeric":
                try:
                    attrs[name] = int(value) if value.lstrip("-").isdigit() else float(value)
                except ValueError:
                    raise DataFormatError(path, f"attribute {name!r} is numeric, got {value!r}", lineno) from None
            elif kind == "date":
                try:
                    attrs[name] = pd.Timestamp(pd.to_datetime(value, format=_TSF_DATE_FORMAT))
                except (ValueError, TypeError):
                    raise DataFormatError(path, f"attribute {name!r} is not a date 'YYYY-MM-DD HH-MM-SS': {value!r}", lineno) from None
            else:
                attrs[name] = value
        if not fields[-1].strip():
            raise DataFormatError(path, "empty series", lineno)
        values = _parse_values(fields[-1], path, lineno)
        if missing is False and np.isnan(values).any():
            raise DataFormatError(path, "'?' missing value in a file declared '@missing false'", lineno)
        item_id = str(attrs.pop("series_name", f"T{len(series) + 1}"))
        start = attrs.pop("start_timestamp", None)
        series.append(Series(item_id=item_id, target=values, freq=canon, start=start, dataset=dataset, attributes=attrs))
        if max_series is not None and len(series) >= max_series:
            break
    if not in_data:
        raise DataFormatError(path, "no @data section")
    if equal_length and max_series is None and len({len(s) for s in series}) > 1:
        raise DataFormatError(path, "series lengths differ in a file declared '@equallength true'")
    return TsfFile(
        series=series,
        frequency=canon,
        horizon=horizon,
        missing=missing,
        equal_length=equal_length,
        relation=relation,
        attributes=attributes,
        metadata=meta,
    )
