"""Zero-shot evaluation CLI (docs/ARCHITECTURE.md §6; README.md "Using it").

    moe-ts eval --checkpoint DIR --suite monash|lsf|zeroshot|all --out DIR
        [--datasets a,b] [--data-dir DIR] [--num-samples 100] [--batch-size 64] [--seed 0]
        [--max-series N] [--max-windows N] [--lsf-stride N] [--lsf-split test|val] [--context-length N]
        [--lsf-mode per-channel|multivariate]
        [--baselines snaive,naive,autoets,autotheta,autoarima] [--n-jobs N] [--decode median|mean|sample|uni2ts]
        [--patches-per-step K] [--feedback-noise 0..1] [--head next|horizon]
    moe-ts eval --checkpoint DIR --suite probes --out DIR [--probe-series 8] [--periodic-series N]
    moe-ts eval --checkpoint DIR --suite periodic --out DIR [--periodic-series 8] [--datasets etth1,...]
    moe-ts eval --checkpoint DIR --tsf FILE.tsf --out DIR [--horizon N]
    moe-ts eval --list [--data-dir DIR]      # every registered dataset: available / missing, where its file goes

`--checkpoint naive` or `seasonal_naive` evaluates a baseline by name (a sanity run). Writes
results.csv, aggregate.csv, results.md and plots/<suite>/<dataset>_h<H>.png under --out, and prints
the markdown, and checkpoint.json (the SHA-256 of the evaluated weights, which `moe-ts export` checks). --out is
replaced whole when the evaluation is done (an older evaluation, or anything with --overwrite).
An interrupted suite evaluation (Ctrl-C, a kill) keeps its finished datasets beside --out (eval/resume.py);
rerun the same command with --resume to skip them.
Datasets of a suite whose files are absent are reported as "missing: put FILE under DIR"; a dataset named in
--datasets that is missing is an error. Any subsampling (--max-series, --max-windows, --lsf-stride > 1) is
written beside every number it affects.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from eval.baselines import Naive, SeasonalNaive
from eval.plots import plot_suite
from eval.protocols import LSF_MODES, LSF_SPLITS, TaskOptions, tsf_task
from eval.report import write_reports
from eval.resume import EvalProgress, eval_settings
from eval.runner import Forecaster, EvalConfig, SuiteResult, parse_baselines, run_suite, run_task_suite
from moe_ts.decode_options import DECODE_MODES, HEADS, DecodeOptions, DecodeOptionsError
from moe_ts.device import add_device_arguments
from moe_ts.io.output_dir import check_output_dir, make_staging_dir, swap_in

SUITE_CHOICES = ("monash", "zeroshot", "lsf", "monash_extra", "probes", "periodic", "all")
ALL_SUITES = ("monash", "zeroshot", "lsf")
BASELINE_NAMES = ("naive", "seasonal_naive")  # --checkpoint values that name a baseline, not a folder


def load_forecaster(checkpoint: str) -> tuple[Forecaster, str, dict[str, Any]]:
    """(forecaster, display name, extra forecast kwargs) for a baseline name or a checkpoint folder."""
    if checkpoint == "naive":
        return Naive(), "naive", {}
    if checkpoint == "seasonal_naive":
        return SeasonalNaive(), "seasonal_naive", {}
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: not a folder (nor 'naive' / 'seasonal_naive')")
    from moe_ts.io.loading import load_model as load_folder

    model = load_folder(path)  # a MoE model, a distilled MLP student or an MSFT model (config.json's model_type)
    # Monash / GIFT-Eval series can be shorter than one patch: the model left-pads them with missing values.
    return model, path.resolve().name, {"allow_short_context": True}


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-ts eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model folder (from_pretrained), or 'naive' / 'seasonal_naive' (required)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--suite", choices=SUITE_CHOICES, help="registered suite ('all' = monash, zeroshot, lsf)")
    what.add_argument("--tsf", type=Path, help="evaluate one Monash-format .tsf file (last window, its own @horizon)")
    what.add_argument("--list", action="store_true", help="list every registered dataset with available / missing "
                                                          "and where its file goes, then exit")
    p.add_argument("--out", type=Path, help="output folder (required): new, empty, or written by moe-ts")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    p.add_argument("--resume", action="store_true",
                   help="skip the datasets an interrupted run of the same command finished (eval/resume.py)")
    p.add_argument("--datasets", help="comma-separated registry names (default: the whole suite)")
    p.add_argument("--data-dir", help="data folder (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    p.add_argument("--horizon", type=_positive, help="--tsf only: horizon when the file has no @horizon (overrides it)")
    p.add_argument("--seasonality", type=_positive, help="--tsf only: season length (default: Monash's for the frequency)")
    p.add_argument("--num-samples", type=_positive, default=100, help="sample paths per forecast (default 100)")
    p.add_argument("--batch-size", type=_positive, default=64, help="series per model forward pass (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--context-length", type=_positive, help="override every dataset's registered context length")
    p.add_argument("--max-series", type=_positive, help="keep the first N series (channels for LSF) of each dataset")
    p.add_argument("--max-windows", type=_positive, help="keep at most N windows per series (LSF: evenly thinned)")
    p.add_argument("--lsf-stride", type=_positive, default=1, help="LSF window stride (1 = the published protocol)")
    p.add_argument("--lsf-split", choices=LSF_SPLITS, default="test",
                   help="LSF windows from the test split (the published protocol) or the validation split, to choose "
                        "a decoding or checkpoint without looking at the test split")
    p.add_argument("--lsf-mode", choices=LSF_MODES, default="per-channel",
                   help="LSF: each channel forecast on its own (per-channel, the published protocol) or all channels "
                        "of a window as one any-variate group (multivariate; the model's forecast_group, its default "
                        "context fitting every channel into max_seq_len); scored per channel either way")
    p.add_argument("--chunk-size", type=_positive, default=1024, help="instances per forecast() call")
    p.add_argument("--plot-series", type=int, default=3, help="series plotted per dataset (0: no plots)")
    p.add_argument("--decode", choices=DECODE_MODES,
                   help="what the model feeds back while decoding (default: forecast()'s; see moe_ts/forecasting.py)")
    p.add_argument("--patches-per-step", type=_positive,
                   help="patches each decoding step emits, 1..the model's predict_patches (default: all)")
    p.add_argument("--feedback-noise", type=float,
                   help="--decode sample: share of each draw's deviation from its component's center that a sample "
                        "path feeds back, 0..1 (1 = plain ancestral sampling; default: forecast()'s)")
    p.add_argument("--head", choices=HEADS,
                   help="which head decodes: next (the next-patch head, default) or horizon (the long-horizon head of "
                        "a model with model.horizon_patches > 0: that many patches per step)")
    p.add_argument("--baselines", default="snaive,naive",
                   help="comma-separated baselines run beside the model: snaive, naive, autoets, autotheta, autoarima "
                        "(statsforecast; minutes on big sets). Seasonal Naive always runs: every ratio is relative to it")
    p.add_argument("--n-jobs", type=_positive, default=1, help="processes for the statsforecast baselines")
    p.add_argument("--probe-series", type=_positive, default=8, help="--suite probes: series per probe")
    p.add_argument("--periodic-series", type=_positive,
                   help="series per set of the periodic validation suite (eval/periodic_suite.py): --suite periodic "
                        "(default 8), or with --suite probes to report it beside the probes")
    add_device_arguments(p)
    return p


def _suite_datasets(suite: str, requested: list[str] | None) -> list[str]:
    from data_prep.registry import get_spec, list_suite

    names = list_suite(suite)
    if requested is None:
        return names
    wanted = [get_spec(n).name for n in requested]
    return [n for n in wanted if n in names]


def _plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(suite, datasets) pairs to run; every requested dataset must belong to one of the suites."""
    from data_prep.registry import get_spec

    suites = ALL_SUITES if args.suite == "all" else (args.suite,)
    requested = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    if requested:
        for name in requested:
            spec = get_spec(name)
            if not any(s in spec.suites for s in suites):
                raise ValueError(f"--datasets {name}: belongs to suite(s) {', '.join(spec.suites)}, not {args.suite}")
    plan = [(s, _suite_datasets(s, requested)) for s in suites]
    return [(s, ds) for s, ds in plan if ds]


def _fail(message: str, code: int) -> NoReturn:
    """One line on stderr and exit `code` (no usage block, no traceback)."""
    print(f"moe-ts eval: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _predicted_patches(model: object) -> int | None:
    """The MoE model's predict_patches; None for a baseline, student or MSFT model (no autoregressive head)."""
    return getattr(getattr(model, "config", None), "predict_patches", None)


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding flags given, as `forecast()` keywords, checked by `DecodeOptions` before anything loads."""
    given = {key: value for key, value in (("decode", args.decode), ("patches_per_step", args.patches_per_step),
                                           ("feedback_noise", args.feedback_noise), ("head", args.head))
             if value is not None}
    if "decode" in given and args.checkpoint in BASELINE_NAMES:
        raise ValueError("--decode applies to a model checkpoint, not a baseline")
    try:
        DecodeOptions(**given)
    except DecodeOptionsError as err:
        raise ValueError(err.flag_message) from None
    return given


def _check_decoding_fits(given: dict[str, Any], model: object) -> None:
    """The decoding flags against the loaded model: only a MoE model decodes, within its predict_patches."""
    predicted = _predicted_patches(model)
    if predicted is None and "patches_per_step" in given:
        raise ValueError("--patches-per-step applies to a MoE model checkpoint (it decodes patch by patch)")
    if predicted is None and "feedback_noise" in given:
        raise ValueError("--feedback-noise applies to a MoE model checkpoint (it samples autoregressively)")
    if predicted is None and "head" in given:
        raise ValueError("--head applies to a MoE model checkpoint (it decodes with one of its heads)")
    if predicted is not None:
        try:
            DecodeOptions(**given).patches_for(predicted, getattr(model.config, "horizon_patches", 0))
        except DecodeOptionsError as err:
            raise ValueError(err.flag_message) from None


@dataclass
class _Setup:
    """What a run evaluates: the forecaster and its extra keywords, the baselines, and the tasks or suites."""

    model: Forecaster
    model_name: str
    model_kwargs: dict[str, Any]
    baselines: list[str]
    task: Any = None  # --tsf: the one task
    plan: list[tuple[str, list[str]]] = field(default_factory=list)  # --suite: (suite, datasets) pairs


def _check_required(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, value in (("--checkpoint", args.checkpoint), ("--suite or --tsf", args.suite or args.tsf),
                        ("--out", args.out)):
        if not value:
            parser.error(f"{flag} is required (or --list)")


def _set_up(args: argparse.Namespace) -> _Setup:
    """Check the flags, load the forecaster and find the tasks; ValueError / KeyError / FileNotFoundError if off."""
    baselines = parse_baselines(args.baselines)
    check_output_dir(args.out, args.overwrite, kind="eval", inputs={"--checkpoint": args.checkpoint, "--tsf": args.tsf})
    if args.lsf_split != "test" and args.suite not in ("lsf", "all"):
        raise ValueError(f"--lsf-split applies to --suite lsf or all, not {args.suite or '--tsf'}")
    if args.lsf_mode != "per-channel" and args.suite != "lsf":
        raise ValueError(f"--lsf-mode {args.lsf_mode} applies to --suite lsf, not {args.suite or '--tsf'}")
    decoding = _decode_kwargs(args)
    from moe_ts.device import place_model, resolve_device, resolve_dtype

    device = resolve_device(args.device)  # a device this machine lacks: one line before anything loads
    dtype = resolve_dtype(args.dtype, device)
    model, model_name, model_kwargs = load_forecaster(args.checkpoint)
    if hasattr(model, "parameters"):  # a model, not a baseline
        place_model(model, device, dtype)
    _check_decoding_fits(decoding, model)
    setup = _Setup(model, model_name, {**model_kwargs, **decoding}, baselines)
    if args.tsf is not None:
        if args.datasets or args.data_dir:
            raise ValueError("--datasets and --data-dir apply to --suite only")
        setup.task = tsf_task(args.tsf, args.horizon, args.context_length or 1000, args.seasonality,
                              max_series=args.max_series, max_windows=args.max_windows)
    elif args.suite == "periodic":
        from eval.periodic_suite import PERIODIC_NAMES

        unknown = [d for d in (args.datasets or "").split(",") if d.strip() and d.strip() not in PERIODIC_NAMES]
        if unknown:
            raise ValueError(f"--datasets {unknown[0]}: not in the periodic suite ({', '.join(PERIODIC_NAMES)})")
    elif args.suite == "probes":
        if args.datasets or (args.data_dir and not args.periodic_series):
            raise ValueError("--datasets and --data-dir do not apply to --suite probes (synthetic series)")
        from eval.probes import min_context_length

        if args.context_length is not None and args.context_length < min_context_length():
            raise ValueError(f"--context-length {args.context_length}: the probes need at least "
                             f"{min_context_length()} (two periods of the longest, 168)")
    else:
        if args.horizon or args.seasonality:
            raise ValueError("--horizon and --seasonality apply to --tsf only (registered sets use their protocol)")
        setup.plan = _plan(args)
    return setup


def _run_suites(args: argparse.Namespace, setup: _Setup, progress: EvalProgress | None = None) -> list[SuiteResult]:
    """Evaluate the model and the baselines on the --tsf task, the probes or the planned suites (skipping the
    datasets `progress` kept, recording each one finished)."""
    cfg = EvalConfig(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                     chunk_size=args.chunk_size, plot_series=args.plot_series, model_kwargs=setup.model_kwargs)
    options = TaskOptions(context_length=args.context_length, lsf_stride=args.lsf_stride,
                          lsf_split=args.lsf_split, max_series=args.max_series, max_windows=args.max_windows,
                          lsf_mode=args.lsf_mode)
    results: list[SuiteResult] = []
    if setup.task is not None:
        results.append(run_task_suite("tsf", [setup.task], setup.model, cfg, baselines=setup.baselines,
                                      n_jobs=args.n_jobs))
    if args.suite == "probes":
        from eval.probes import run_probes

        results.append(run_probes(setup.model, cfg, args.probe_series, args.context_length, setup.baselines,
                                  args.n_jobs))
    if args.suite == "periodic" or (args.suite == "probes" and args.periodic_series):
        from eval.periodic_suite import PERIODIC_NAMES, run_periodic

        names = tuple(d.strip() for d in args.datasets.split(",") if d.strip()) if args.datasets else PERIODIC_NAMES
        context = args.context_length if args.suite == "periodic" else None  # the probes' context is theirs
        results.append(run_periodic(setup.model, cfg, args.periodic_series or 8, context_length=context,
                                    baselines=setup.baselines, n_jobs=args.n_jobs, data_dir=args.data_dir, names=names))
    for suite, datasets in setup.plan:
        results.append(run_suite(suite, datasets, setup.model, args.data_dir, options, cfg,
                                 baselines=setup.baselines, n_jobs=args.n_jobs, progress=progress))
    return results


def _write_outputs(args: argparse.Namespace, argv: list[str] | None, setup: _Setup, results: list[SuiteResult],
                   t0: float) -> str:
    """Write provenance, plots and reports into a staging folder swapped in as --out (marked `eval`, replacing
    the old one whole: moe_ts/io/output_dir.py); the markdown to print."""
    staging = make_staging_dir(args.out)
    try:
        text = _write_into(staging, args, argv, setup, results, t0)
        swap_in(staging, args.out, "eval")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return text


def _decoding_text(args: argparse.Namespace, model: object) -> str:
    """How the numbers were decoded, for results.md (and the model card `moe-ts export` writes)."""
    if args.checkpoint in BASELINE_NAMES:
        return "none (a baseline)"
    if _predicted_patches(model) is None:
        return f"{type(model).__name__}'s own forecast (no autoregressive decoding options)"
    parts = [f"decode {args.decode or 'sample (the default)'}"]
    if args.patches_per_step:
        parts.append(f"patches per step {args.patches_per_step}")
    if args.feedback_noise is not None:
        parts.append(f"feedback noise {args.feedback_noise}")
    if args.head:
        parts.append(f"head {args.head}")
    return ", ".join(parts)


def _write_into(out: Path, args: argparse.Namespace, argv: list[str] | None, setup: _Setup,
                results: list[SuiteResult], t0: float) -> str:
    from moe_ts.io.provenance import write_eval_source

    write_eval_source(out, args.checkpoint if Path(args.checkpoint).is_dir() else None,  # None: a baseline
                      decoding=_decoding_text(args, setup.model))
    if args.plot_series > 0:
        for r in results:
            plot_suite(r, out, setup.model_name)
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    header = [
        f"- command: `moe-ts eval {argv_text}`",
        f"- checkpoint: `{args.checkpoint}`; samples {args.num_samples}, seed {args.seed}, batch {args.batch_size}",
        f"- decoding: {_decoding_text(args, setup.model)}",
        f"- protocol options: context length {args.context_length or ('1000' if args.tsf else 'per dataset')}, "
        f"LSF stride {args.lsf_stride}, LSF split {args.lsf_split}, LSF mode {args.lsf_mode}, "
        f"max series {args.max_series or 'all'}, max windows {args.max_windows or 'all'}",
        f"- written {datetime.datetime.now().isoformat(timespec='seconds')}, {time.perf_counter() - t0:.1f} s",
        "- point metrics use the median (MSE the mean); CRPS = mean weighted quantile loss over 0.1..0.9; "
        "rel. = model / Seasonal Naive; all metrics of all roles are in results.csv",
        f"- baselines: {', '.join(setup.baselines)} (statsforecast ones: eval/classical.py)",
    ]
    text = write_reports(results, out, setup.model_name, header)
    if args.suite == "probes":
        from eval.probes import write_probe_table

        text += "\n" + write_probe_table(next(r for r in results if r.suite == "probes"), out, setup.model_name)
    if any(r.suite == "periodic" for r in results):
        from eval.periodic_suite import write_periodic_table

        text += "\n" + write_periodic_table(next(r for r in results if r.suite == "periodic"), out, setup.model_name)
    return text


def _progress(args: argparse.Namespace, setup: _Setup) -> EvalProgress | None:
    """The finished-datasets record of a suite evaluation (kept from an interrupted run with --resume)."""
    if not setup.plan:
        return None
    from moe_ts.io.provenance import weights_fingerprint

    sha = weights_fingerprint(args.checkpoint) if Path(args.checkpoint).is_dir() else None
    try:
        progress = EvalProgress(args.out, eval_settings(args, sha), args.resume)
    except ValueError as err:
        _fail(str(err), 2)
    if progress.resumed:
        print(f"resuming: {progress.resumed} dataset(s) finished by the interrupted run are kept", file=sys.stderr)
    return progress


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        from eval.listing import dataset_listing

        print(dataset_listing(args.data_dir))
        return 0
    _check_required(parser, args)
    t0 = time.perf_counter()
    try:
        setup = _set_up(args)
    except (ValueError, KeyError, FileNotFoundError) as err:  # one line, no usage block
        _fail(str(err.args[0] if isinstance(err, KeyError) and err.args else err), 2)
    progress = _progress(args, setup)
    try:
        results = _run_suites(args, setup, progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(progress.interrupted_note() if progress else "--out untouched") from None
    missing = [f"{m.dataset} ({m.message})" for r in results for m in r.missing]
    if not any(r.tasks for r in results):
        if progress is not None:
            progress.remove()
        _fail(f"nothing evaluated, every dataset is missing: {'; '.join(missing)}; see `moe-ts eval --list`", 1)
    print(_write_outputs(args, argv, setup, results, t0))
    if progress is not None:
        progress.remove()
    if args.datasets and missing:  # asked for by name: the results are written, but the run is not complete
        _fail(f"requested dataset(s) missing: {'; '.join(missing)}; see `moe-ts eval --list`", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
