"""R `.rda` reader built on the `rdata` parser (no R needed). Works on the raw object tree, so R classes rdata
cannot convert (e.g. `mts` matrices) still read: numeric vectors keep their attributes (dim, dimnames, tsp,
names, class)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.readers.errors import DataFormatError


@dataclass
class RValue:
    """An R object: `value` is an ndarray (numeric/logical/int, NA → NaN), a list[str] (character), a list of
    RValue (generic vector) or None (NULL); `attrs` holds its attributes by name."""

    value: Any
    attrs: dict[str, "RValue"] = field(default_factory=dict)

    def attr_strings(self, name: str) -> list[str] | None:
        a = self.attrs.get(name)
        return None if a is None else list(a.value)

    @property
    def names(self) -> list[str] | None:
        return self.attr_strings("names")

    @property
    def r_class(self) -> list[str]:
        return self.attr_strings("class") or []


def _tag_name(tag: Any) -> str | None:
    if tag is None:
        return None
    obj = tag
    if obj.info.type.name == "REF":
        obj = obj.referenced_object
    if obj.info.type.name == "SYM":
        obj = obj.value
    value = getattr(obj, "value", None)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def _pairlist(obj: Any) -> list[tuple[str | None, Any]]:
    """Walk a pairlist (LIST nodes chained through cdr) → [(tag, car)]."""
    out = []
    while obj is not None and obj.info.type.name == "LIST":
        car, cdr = obj.value
        out.append((_tag_name(obj.tag), car))
        obj = cdr
    return out


def _convert(obj: Any) -> RValue:
    kind = obj.info.type.name
    if kind == "REF":
        obj = obj.referenced_object
        kind = obj.info.type.name
    attrs = {}
    if obj.attributes is not None:
        attrs = {name: _convert(val) for name, val in _pairlist(obj.attributes) if name is not None}
    if kind in ("REAL", "INT", "LGL"):
        raw = obj.value
        data = np.ma.getdata(raw).astype(np.float64)
        mask = np.ma.getmaskarray(raw)
        if kind != "REAL" and mask.any():
            data[mask] = np.nan
        data[np.isnan(data)] = np.nan  # R's NA_real_ is a signalling NaN payload; make it a quiet NaN
        return RValue(data, attrs)
    if kind == "STR":
        return RValue([None if c.value is None else c.value.decode("utf-8", "replace") for c in obj.value], attrs)
    if kind == "VEC":
        return RValue([_convert(v) for v in obj.value], attrs)
    if kind == "NILVALUE":
        return RValue(None, attrs)
    if kind == "LIST":
        return RValue([_convert(v) for _, v in _pairlist(obj)], attrs)
    return RValue(obj.value, attrs)


def read_rda(path: str | os.PathLike[str]) -> dict[str, RValue]:
    """The named objects stored in an .rda / .RData file."""
    import rdata

    path = Path(path)
    try:
        with warnings.catch_warnings():  # rdata warns about file types and R classes it cannot construct
            warnings.simplefilter("ignore", UserWarning)
            parsed = rdata.parser.parse_file(path)
    except Exception as err:  # rdata raises assorted types for a corrupt or foreign file
        raise DataFormatError(path, f"not a readable R data file: {type(err).__name__}: {err}") from None
    return {name: _convert(val) for name, val in _pairlist(parsed.object) if name is not None}


def _get(objects: dict[str, RValue], name: str, path: Path) -> RValue:
    if name not in objects:
        raise DataFormatError(path, f"no R object {name!r} (objects: {', '.join(objects)})")
    return objects[name]


def tsp_start(tsp: np.ndarray) -> tuple[int, int]:
    """(year, period index 0-based) of an R ts start = tsp[0] with frequency tsp[2]."""
    freq = tsp[2]
    whole = np.floor(tsp[0] + 1e-9)
    return int(whole), int(round((tsp[0] - whole) * freq))


@dataclass
class RMatrix:
    """A numeric R matrix read column-wise: `values` is [n_columns, n_rows] (a row per R column)."""

    values: np.ndarray
    column_names: list[str]
    tsp: np.ndarray | None


def read_rda_matrix(path: str | os.PathLike[str], name: str) -> RMatrix:
    """An R matrix / `mts` object: columns are series. Returns them as rows of `values`, with names and tsp."""
    path = Path(path)
    obj = _get(read_rda(path), name, path)
    if not isinstance(obj.value, np.ndarray) or "dim" not in obj.attrs:
        raise DataFormatError(path, f"R object {name!r} is not a numeric matrix")
    dims = obj.attrs["dim"].value.astype(int)
    if len(dims) != 2 or dims[0] * dims[1] != obj.value.size:
        raise DataFormatError(path, f"R object {name!r} has dim {list(dims)} inconsistent with {obj.value.size} values")
    values = obj.value.reshape(dims[1], dims[0])  # R is column-major: each row here is one R column
    names = [str(i + 1) for i in range(dims[1])]
    dimnames = obj.attrs.get("dimnames")
    if dimnames is not None and len(dimnames.value) == 2 and dimnames.value[1].value is not None:
        names = list(dimnames.value[1].value)
    tsp = obj.attrs["tsp"].value if "tsp" in obj.attrs else None
    return RMatrix(values=values, column_names=names, tsp=tsp)


def read_rda_list_of_ts(path: str | os.PathLike[str], name: str) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """An R list of `ts` vectors (e.g. tscompdata's nn5) → [(name, values, tsp)]."""
    path = Path(path)
    obj = _get(read_rda(path), name, path)
    if not isinstance(obj.value, list):
        raise DataFormatError(path, f"R object {name!r} is not a list")
    names = obj.names or [str(i + 1) for i in range(len(obj.value))]
    out = []
    for nm, element in zip(names, obj.value):
        if not isinstance(element.value, np.ndarray):
            raise DataFormatError(path, f"element {nm!r} of {name!r} is not numeric")
        tsp = element.attrs["tsp"].value if "tsp" in element.attrs else None
        out.append((nm, element.value, tsp))
    return out


def read_rda_data_frame(path: str | os.PathLike[str], name: str) -> dict[str, RValue]:
    """An R data.frame → column name → RValue (values plus attributes such as class 'Date' or factor levels)."""
    path = Path(path)
    obj = _get(read_rda(path), name, path)
    if "data.frame" not in obj.r_class or not isinstance(obj.value, list):
        raise DataFormatError(path, f"R object {name!r} is not a data.frame")
    names = obj.names
    if names is None or len(names) != len(obj.value):
        raise DataFormatError(path, f"data.frame {name!r} has no column names")
    return dict(zip(names, obj.value))
