"""M4 competition CSV reader: '<Freq>-train.csv' / '<Freq>-test.csv', a header "V1","V2",... then one row per
series: the id then its values, rows padded with empty cells."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.readers._text import is_float
from data_prep.readers.errors import DataFormatError


@dataclass
class M4Split:
    """Train arrays and test arrays by series id, in file order."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def read_m4_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Series id → float64 values of one M4 CSV (trailing empty cells dropped; an empty cell inside is an error)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or not header or header[0] != "V1":
            raise DataFormatError(path, 'expected an M4 header starting with "V1"', 1)
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            sid = row[0].strip()
            if not sid:
                raise DataFormatError(path, "empty series id", lineno)
            cells = row[1:]
            while cells and not cells[-1].strip():
                cells.pop()
            if not cells:
                raise DataFormatError(path, f"series {sid!r} has no values", lineno)
            try:
                values = np.array(cells, dtype=np.float64)
            except ValueError:
                pos = next(i for i, c in enumerate(cells) if not is_float(c))
                what = "empty cell" if not cells[pos].strip() else f"non-numeric value {cells[pos]!r}"
                raise DataFormatError(path, f"{what} at column {pos + 2} of series {sid!r}", lineno) from None
            if sid in out:
                raise DataFormatError(path, f"duplicate series id {sid!r}", lineno)
            out[sid] = values
    return out



def read_m4(train_path: str | os.PathLike[str], test_path: str | os.PathLike[str], test_length: int | None = None) -> M4Split:
    """Both files; checks that they hold the same ids and (if given) that every test part has `test_length` values."""
    train = read_m4_file(train_path)
    test = read_m4_file(test_path)
    if set(train) != set(test):
        missing = sorted(set(train) ^ set(test))[:3]
        raise DataFormatError(test_path, f"train and test ids differ (e.g. {missing})")
    if test_length is not None:
        for sid, values in test.items():
            if len(values) != test_length:
                raise DataFormatError(test_path, f"series {sid!r} has {len(values)} test values, expected {test_length}")
    return M4Split(train=train, test=test)
