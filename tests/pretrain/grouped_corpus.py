"""A corpus of multivariate groups for the any-variate tests (issue 27): values that say their variate and time."""
from __future__ import annotations

import json

import numpy as np

COVARIATE_VALUE = -7.0


def write_grouped_corpus(path, groups=((5, 60), (3, 90), (2, 40)), univariate=4, ragged=False, blank=None):
    """Groups of (variates, length) whose values encode their variate and time: 1000·(v+1) + t; each group also
    has a covariate row (COVARIATE_VALUE, never a target); `univariate` single series (values in (-1, 1)); with
    `ragged`, one more group whose two variates differ in length (left out); `blank` (group, variate, t): that
    variate is missing before time t."""
    import datasets

    cols = {k: [] for k in ("item_id", "dataset", "target", "group_id", "variate", "covariate")}

    def add(item, dataset, values, group, variate, covariate=False):
        for key, value in zip(cols, (item, dataset, values.astype(np.float32).tolist(), group, variate, covariate)):
            cols[key].append(value)

    rng = np.random.default_rng(0)
    for g, (v, length) in enumerate(groups):
        for i in range(v):
            values = 1000.0 * (i + 1) + np.arange(length)
            values[rng.random(length) < 0.05] = np.nan
            if blank is not None and blank[:2] == (g, i):
                values[:blank[2]] = np.nan
            add(f"g{g}/{i}", "multi", values, f"g{g}", i)
        add(f"g{g}/cov", "multi", np.full(length, COVARIATE_VALUE), f"g{g}", 0, True)
    if ragged:
        add("r/0", "multi", 1000.0 + np.arange(50), "r", 0)
        add("r/1", "multi", 2000.0 + np.arange(60), "r", 1)
    for u in range(univariate):
        add(f"u{u}", "uni", rng.uniform(-0.9, 0.9, size=70), f"u{u}", 0)  # its own group_id: a group of one
    datasets.Dataset.from_dict(cols).save_to_disk(str(path))
    (path / "manifest.json").write_text(json.dumps({"complete": True}))
    return path
