"""`moe-ts eval --list`: every registered dataset, its suites, whether its files are present and where they go."""
from __future__ import annotations

import os

from data_prep.paths import resolve_data_dir
from data_prep.registry import DatasetMissingError, all_specs, resolve_files


def dataset_listing(data_dir: str | os.PathLike[str] | None = None) -> str:
    """One line per registered dataset: name, suites, horizon(s), available / missing and the file location."""
    root = resolve_data_dir(data_dir)
    lines = [f"data directory: {root} (--data-dir or $MOE_TS_DATA_DIR to change it)",
             f"{'dataset':24s} {'suites':22s} {'horizon':>15s}  status     file(s)"]
    present = 0
    for spec in all_specs():
        try:
            resolve_files(spec, root)
            status = "available"
            present += 1
        except DatasetMissingError:
            status = "missing"
        horizons = "/".join(str(h) for h in spec.prediction_lengths)
        files = ", ".join(f"{root / f}" for f in spec.files)
        lines.append(f"{spec.name:24s} {','.join(spec.suites):22s} {horizons:>15s}  {status:9s}  {files}")
    lines.append(f"{present} of {len(all_specs())} datasets available; a missing one is evaluated once its file is there")
    return "\n".join(lines)
