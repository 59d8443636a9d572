"""One univariate series as it moves between readers, the corpus writer and the evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Series:
    """A univariate series. `target` is float32, NaN marks a missing value; `freq` is a pandas offset alias."""

    item_id: str
    target: np.ndarray
    freq: str
    start: pd.Timestamp | None = None
    dataset: str = ""
    group_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float32)
        if self.target.ndim != 1:
            raise ValueError(f"series {self.item_id!r}: target must be 1-D, got shape {self.target.shape}")

    def __len__(self) -> int:
        return len(self.target)
