"""Covariates on a public task (issue 27): ETTh1's oil temperature (OT) with the six load columns as past-only
covariates and the hour of day as known covariates, model with vs without covariates vs AutoARIMA with
exogenous regressors.

    python benchmarks/covariates.py --checkpoint RUN/final --windows 20 --samples 50 --out benchmarks/results/covariates.json

Windows: every `--stride`-th forecast start of ETTh1's LSF test split (thinned evenly to `--windows`), horizon
`--horizon` (default 24: a day ahead); OT and the loads normalised with the LSF training split's statistics (as
`moe-ts eval --suite lsf`). Variants:
- model, target only (its default context, what fits max_seq_len), and with the context a covariate run gets
  (the covariates take room in the window, so the target's context shrinks: this row separates the two effects);
- model + past loads (past_covariates; their future is never given), + hour (known_covariates: sin / cos of the
  hour of day, known for the horizon), + both;
- AutoARIMA (season 24) on the target alone, and with the hour's sin / cos as exogenous regressors (X, X_future:
  ARIMA cannot use past-only covariates without their future);
- Seasonal Naive (24).
MAE of the median and MSE of the mean, averaged over windows (normalised scale), and each as a ratio to Seasonal
Naive. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

LOADS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL")


def load_etth1(path: Path) -> tuple[pd.DataFrame, int, tuple[int, int]]:
    """ETTh1 with OT and the loads normalised by the LSF training split; the test span."""
    from data_prep import registry

    frame = pd.read_csv(path, parse_dates=["date"])
    spec = registry.get_spec("etth1")
    train_end = registry.lsf_train_end(spec, len(frame))
    for col in (*LOADS, "OT"):
        frame[col] = registry.lsf_normalise(frame[col].to_numpy(), train_end, f"ETTh1 {col}")
    hour = frame["date"].dt.hour.to_numpy()
    frame["hour_sin"], frame["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    return frame, train_end, registry.test_span(spec, len(frame))


def window_starts(span: tuple[int, int], horizon: int, stride: int, windows: int) -> np.ndarray:
    starts = np.arange(span[0], span[1] - horizon + 1, stride)
    if len(starts) > windows:
        starts = starts[np.unique(np.linspace(0, len(starts) - 1, windows).round().astype(int))]
    return starts


def model_variants(model, frame: pd.DataFrame, start: int, horizon: int, samples: int, seed: int,
                   context: int) -> dict[str, np.ndarray]:
    """Each model variant's samples [S, H] for the window starting at `start`."""
    from moe_ts.covariates import check_covariates
    from moe_ts.group_decoding import group_context_length

    target = frame["OT"].to_numpy(np.float32)[:start]
    past = {c: frame[c].to_numpy(np.float32)[:start] for c in LOADS}
    known = {c: frame[c].to_numpy(np.float32)[:start + horizon] for c in ("hour_sin", "hour_cos")}
    horizon_patches = -(-horizon // model.config.patch_size)
    both = check_covariates(past, known, start, horizon)
    covariate_context = group_context_length(model, 1, both, horizon_patches)
    per_past, per_known = {c: [v] for c, v in past.items()}, {c: [v] for c, v in known.items()}  # one series
    runs = {
        "model, target only": dict(context_length=context or None),
        "model, target only, covariate-run context": dict(context_length=covariate_context),
        "model + past loads": dict(past_covariates=per_past, context_length=covariate_context),
        "model + hour (known)": dict(known_covariates=per_known, context_length=covariate_context),
        "model + loads + hour": dict(past_covariates=per_past, known_covariates=per_known,
                                     context_length=covariate_context),
    }
    return {name: model.forecast([target], horizon, num_samples=samples, seed=seed, **extra).samples[0]
            for name, extra in runs.items()}


def arima_variants(frame: pd.DataFrame, start: int, horizon: int, context: int) -> dict[str, np.ndarray]:
    """AutoARIMA's point forecasts [1, H] without and with the hour as exogenous regressors."""
    from statsforecast.models import AutoARIMA

    lo = max(0, start - context)
    y = frame["OT"].to_numpy()[lo:start]
    x = frame[["hour_sin", "hour_cos"]].to_numpy()
    out = {"AutoARIMA": AutoARIMA(season_length=24).forecast(y=y, h=horizon)["mean"][None]}
    try:
        fc = AutoARIMA(season_length=24).forecast(y=y, h=horizon, X=x[lo:start], X_future=x[start:start + horizon])
        out["AutoARIMA + hour (exog)"] = fc["mean"][None]
    except Exception as err:  # noqa: BLE001 - a failed exogenous fit is reported, not fatal
        print(f"AutoARIMA with exog failed at {start}: {err}")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a MoE model folder")
    parser.add_argument("--data", type=Path, default=Path("data/ett/ETTh1.csv"))
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--stride", type=int, default=24)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--context", type=int, default=0, help="target-only context (0: the model's default)")
    parser.add_argument("--arima-context", type=int, default=512, help="points AutoARIMA is fitted on")
    parser.add_argument("--no-arima", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/covariates.json")
    args = parser.parse_args(argv)
    from moe_ts.io.loading import load_model

    model = load_model(args.checkpoint)
    frame, _, span = load_etth1(args.data)
    starts = window_starts(span, args.horizon, args.stride, args.windows)
    errors: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, float] = {}
    truth_all = frame["OT"].to_numpy()
    for w, start in enumerate(starts):
        truth = truth_all[start:start + args.horizon]
        t0 = time.perf_counter()
        found = model_variants(model, frame, int(start), args.horizon, args.samples, args.seed + w, args.context)
        seconds["model (all variants)"] = seconds.get("model (all variants)", 0.0) + time.perf_counter() - t0
        if not args.no_arima:
            t0 = time.perf_counter()
            found.update(arima_variants(frame, int(start), args.horizon, args.arima_context))
            seconds["AutoARIMA (both)"] = seconds.get("AutoARIMA (both)", 0.0) + time.perf_counter() - t0
        found["Seasonal Naive"] = truth_all[start - 24:start][np.arange(args.horizon) % 24][None]
        for name, samples in found.items():
            median, mean = np.median(samples, axis=0), samples.mean(axis=0)
            errors.setdefault(name, []).append((float(np.abs(median - truth).mean()),
                                                float(((mean - truth) ** 2).mean())))
    snaive = np.mean(errors["Seasonal Naive"], axis=0)
    rows = []
    for name, errs in errors.items():
        mae, mse = np.mean(errs, axis=0)
        rows.append({"variant": name, "windows": len(errs), "MAE": mae, "MSE": mse, "MAE_rel": mae / snaive[0],
                     "MSE_rel": mse / snaive[1]})
    result = {"benchmark": "covariates", "checkpoint": args.checkpoint, "dataset": "ETTh1 OT", "horizon": args.horizon,
              "windows": len(starts), "samples": args.samples, "seconds": seconds,
              "variate_bias": bool(getattr(model.config, "variate_bias", False)),
              "machine": platform.processor() or platform.machine(), "rows": rows}
    print(f"covariates: ETTh1 OT, horizon {args.horizon}, {len(starts)} windows, {args.samples} samples, "
          f"{args.checkpoint} (variate_bias {result['variate_bias']})")
    print(f"{'variant':<44} {'MAE':>7} {'MSE':>7} {'MAE/SN':>7} {'MSE/SN':>7}")
    for row in rows:
        print(f"{row['variant']:<44} {row['MAE']:>7.4f} {row['MSE']:>7.4f} {row['MAE_rel']:>7.3f} {row['MSE_rel']:>7.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
