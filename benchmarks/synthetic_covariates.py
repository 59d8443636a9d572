"""Does a model read a related variate? Held-out synthetic groups (data_prep/synthetic_multivariate.py, default seed
1; a corpus built with `moe-ts prepare --multivariate-count N` uses --seed 0), the last `--horizon` points of each:

- lagged: target = the first variate trailing variate 0 by at least H steps, variate 0 a past-only covariate (its
  observed past determines the target's whole horizon, up to noise);
- driven: target = variate 1 (a load-like series), variate 0 (temperature-like) a known covariate (horizon given).

Each target forecast alone and with the covariate, both at the context a covariate run gets (the covariate takes
room in the window). Metric: MAE of the median / MAE of the last value (naive), averaged over groups.

    python benchmarks/synthetic_covariates.py RUN_A/final RUN_B/final --out results.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def evaluate(path: str, groups: int, seed: int, horizon: int, samples: int) -> dict:
    from data_prep.synthetic_multivariate import generate_multivariate_groups
    from moe_ts.covariates import check_covariates
    from moe_ts.group_decoding import group_context_length
    from moe_ts.io.loading import load_model

    model = load_model(path)
    drawn = generate_multivariate_groups(groups, seed=seed)
    out: dict = {}
    for kind in ("lagged", "driven"):
        rel: dict[str, list[float]] = {"alone": [], "with covariate": []}
        context = 0
        for group in drawn:
            if group[0].attributes["kind"] != kind:
                continue
            if kind == "lagged":
                trailing = [k for k in range(1, len(group)) if group[k].attributes["lag"] >= horizon]
                if not trailing:
                    continue
                k = trailing[0]
            else:
                k = 1
            y, x = group[k].target, group[0].target
            n = len(y) - horizon
            past, known = ({"x0": x[:n]}, {}) if kind == "lagged" else ({}, {"x0": x[:n + horizon]})
            context = group_context_length(model, 1, check_covariates(past, known, n, horizon),
                                           -(-horizon // model.config.patch_size))
            naive = float(np.abs(y[n:] - y[n - 1]).mean())
            extra = {"past_covariates": {"x0": [x[:n]]}} if kind == "lagged" else \
                {"known_covariates": {"x0": [x[:n + horizon]]}}
            for name, kwargs in (("alone", {}), ("with covariate", extra)):
                s = model.forecast([y[:n]], horizon, num_samples=samples, seed=0, context_length=context,
                                   **kwargs).samples[0]
                rel[name].append(float(np.abs(np.median(s, 0) - y[n:]).mean()) / naive)
        out[kind] = {name: {"mae_over_naive": round(float(np.mean(v)), 4), "groups": len(v)} for name, v in rel.items()}
        out[kind]["context"] = int(context)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="MoE model folders")
    parser.add_argument("--groups", type=int, default=80, help="groups drawn (a quarter of each kind)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (not the corpus' seed)")
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    result = {path: evaluate(path, args.groups, args.seed, args.horizon, args.samples) for path in args.checkpoints}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
