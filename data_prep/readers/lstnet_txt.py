"""LSTNet text matrices (exchange_rate.txt.gz, solar_AL.txt.gz, electricity.txt.gz, traffic.txt.gz): no header,
comma-separated, one row per time step, one column per series; optionally gzip-compressed."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from data_prep.readers._text import is_float
from data_prep.readers.errors import DataFormatError


def read_lstnet_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """The [time, series] float64 matrix; every row must have the same number of numeric cells."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[np.ndarray] = []
    width = None
    try:
        with opener(path, "rt") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                cells = line.split(",")
                if width is None:
                    width = len(cells)
                elif len(cells) != width:
                    raise DataFormatError(path, f"row has {len(cells)} columns, expected {width}", lineno)
                try:
                    rows.append(np.array(cells, dtype=np.float64))
                except ValueError:
                    bad = next(c for c in cells if not is_float(c))
                    raise DataFormatError(path, f"non-numeric value {bad!r}", lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        if isinstance(err, DataFormatError):
            raise
        raise DataFormatError(path, f"cannot read as text: {err}") from None
    if not rows:
        raise DataFormatError(path, "no data rows")
    return np.vstack(rows)

