"""Where the benchmark data lives: an explicit argument, else $MOE_TS_DATA_DIR, else the repo's data/ folder.

The first of these replaces the others; downloads live apart, in the cache (`data_prep.download.cache_dir()`),
which `data_prep.registry.find_file` searches after the data directory."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MOE_TS_DATA_DIR"
REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to read from: `data_dir` if given, else $MOE_TS_DATA_DIR if set, else `<repo>/data`."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return REPO_DATA_DIR
