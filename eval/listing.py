"""`moe-ts eval --list`: every registered dataset, its suites, available / downloadable / manual, and its files."""
from __future__ import annotations

import os

from data_prep.download_datasets import human_size, status
from data_prep.paths import resolve_data_dir
from data_prep.registry import all_specs


def dataset_listing(data_dir: str | os.PathLike[str] | None = None) -> str:
    """One line per registered dataset: name, suites, horizon(s), status, size on disk and its files (where found,
    or the missing paths); `moe-ts data list` adds the sources, `moe-ts data download NAME` fetches."""
    root = resolve_data_dir(data_dir)
    lines = [f"data directory: {root} (--data-dir or $MOE_TS_DATA_DIR to change it; downloads: moe-ts data download)",
             f"{'dataset':24s} {'suites':22s} {'horizon':>15s}  status       {'size':>9s}  file(s)"]
    counts = {"available": 0, "downloadable": 0, "manual": 0}
    for spec in all_specs():
        st = status(spec, root)
        counts[st.state] += 1
        if st.state == "available":
            files = ", ".join(str(p) for p in st.paths)
        else:
            files = "missing: " + ", ".join(str(root / f) for f in st.missing)
        horizons = "/".join(str(h) for h in spec.prediction_lengths)
        size = human_size(st.size_bytes) if st.state == "available" else "-"
        lines.append(f"{spec.name:24s} {','.join(spec.suites):22s} {horizons:>15s}  {st.state:12s} {size:>9s}  {files}")
    lines.append(f"{counts['available']} of {len(all_specs())} datasets available, {counts['downloadable']} downloadable "
                 f"(moe-ts data download NAME), {counts['manual']} manual; a missing one is evaluated once its file is there")
    return "\n".join(lines)
