"""Where `load_forecaster` lived before the io/ sub-package: model cards of student folders written then (and
published with them) say `from moe_ts.loading import load_forecaster`. Use `moe_ts.io.loading.load_model`."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def load_forecaster(folder: str | Path) -> Any:
    """`moe_ts.io.loading.load_model(folder)`, with a FutureWarning naming the new import."""
    warnings.warn("moe_ts.loading.load_forecaster is now moe_ts.io.loading.load_model", FutureWarning, stacklevel=2)
    from moe_ts.io.loading import load_model

    return load_model(folder)
