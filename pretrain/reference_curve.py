"""Reference loss curve of the debug config (docs/ARCHITECTURE.md §4): a silent-regression check for pretraining.

    python -m pretrain.reference_curve           # run configs/debug.yaml, compare (exit 1 on a mismatch)
    python -m pretrain.reference_curve --write   # run it and (re)write tests/data/reference_loss_debug.json

Both print the curve. The run is `pretrain.train.train` on a corpus built here, deterministically: the 20
first M4 Hourly series of the vendored data/ cut before their test span, plus 20 seeded
`data_prep.synthetic` series. tests/pretrain/test_reference_loss.py runs the same comparison.

Tolerance: the same machine and library versions reproduce the curve bit for bit, but another x86 CPU
takes other SIMD / BLAS code paths (AVX2 vs AVX-512 kernels, MKL's dispatch), which round differently,
and training amplifies that: under forced code paths (ATEN_CPU_CAPABILITY=avx2 / default,
MKL_CBWR=COMPATIBLE) the loss moved by at most 1.2e-5 (relative) up to step 6 and 1.2e-4 at steps 7-8;
then a token's top-2 expert choice flips (steps 9-10) and the curves drift apart by 1e-3 to 4e-2 per
step. So steps 1-8 are compared one by one and tightly (`rel_tolerance`), where every real change
tried moved the loss by 1.5e-3 to 9e-2 (config: lr +10 %, warmup 5->6, betas, weight decay 0.1->0.2,
grad clip, stats_ratio, RoPE base, init_std, min_scale, aux / z coefficients; code: RoPE over all head
dims, floor instead of ceil for the statistics patches, attention across packed samples), while a
mathematically neutral change (RoPE positions shifted by a constant, softmax_renorm weighting) passes.
Later steps are compared only as block means with a coarse tolerance: it catches a broken run
(NaN, divergence, lr x3 or /3) but not subtle changes, whose effect there is as large as the rounding
drift. Residual risk: a CPU whose rounding flips a routing decision before step 9 would fail; the
reference then needs a closer look, not a wider tolerance.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEBUG_CONFIG = REPO / "configs" / "debug.yaml"
REFERENCE = REPO / "tests" / "data" / "reference_loss_debug.json"
WRITE_COMMAND = "python -m pretrain.reference_curve --write"
COMPARED = ("loss", "nll", "aux")
M4_SERIES = 20
SYNTHETIC_SERIES = 20
CORPUS_SEED = 0


def corpus_entries() -> list:
    """The debug corpus: M4 Hourly series cut before their test span, plus seeded synthetic series."""
    from data_prep.corpus import cut_series
    from data_prep.synthetic import generate_synthetic
    from data_prep.registry import load_series, test_span

    entries: list = [cut_series(s, 0, test_span("m4_hourly", len(s))[0])
                     for s in load_series("m4_hourly", max_series=M4_SERIES)]
    entries += generate_synthetic(SYNTHETIC_SERIES, seed=CORPUS_SEED, min_length=64, max_length=512)
    return entries


def build_corpus(path: Path) -> dict[str, Any]:
    """Write the debug corpus to `path`; returns its summary (see `corpus_summary`)."""
    from data_prep.corpus import write_corpus

    entries = corpus_entries()
    write_corpus(entries, path, fingerprint="moe-ts-debug-reference-corpus")
    return corpus_summary(entries)


def corpus_summary(entries: list) -> dict[str, Any]:
    """Per-dataset series count, total length and float64 sum / sum of squares of the observed values.

    Stored beside the curve so that a mismatch caused by changed data (a loader or generator change) is
    told apart from one caused by the model or the training loop.
    """
    out: dict[str, dict[str, float]] = {}
    for e in entries:
        s = getattr(e, "series", e)
        v = np.asarray(s.target, dtype=np.float32).astype(np.float64)
        v = v[~np.isnan(v)]
        d = out.setdefault(s.dataset, {"series": 0, "length": 0, "sum": 0.0, "sumsq": 0.0})
        d["series"] += 1
        d["length"] += len(s.target)
        d["sum"] += float(v.sum())
        d["sumsq"] += float((v * v).sum())
    return dict(sorted(out.items()))


def run_curve(config: Path, workdir: Path, *, quiet: bool = True) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Pretrain `config` on the debug corpus in `workdir`; returns ([{step, loss, nll, aux}], corpus summary).

    `quiet` captures the run's log (shown only if it fails); torch's thread count, which the config's
    num_threads changes, is restored afterwards.
    """
    import torch

    from data_prep.corpus import open_corpus
    from pretrain.config import load_pretrain_config
    from pretrain.metrics import read_metrics
    from pretrain.train import train

    run = load_pretrain_config(config)
    if run.train.log_every != 1:
        raise ValueError(f"{config}: train.log_every must be 1 for a reference curve, got {run.train.log_every}")
    if run.train.steps < BLOCKS[-1][1]:
        raise ValueError(f"{config}: train.steps must be >= {BLOCKS[-1][1]} for a reference curve, "
                         f"got {run.train.steps}")
    summary = build_corpus(workdir / "corpus")
    threads = torch.get_num_threads()
    log = io.StringIO()
    try:
        with (contextlib.redirect_stdout(log) if quiet else contextlib.nullcontext()), \
                (contextlib.redirect_stderr(log) if quiet else contextlib.nullcontext()):
            train(run, open_corpus(workdir / "corpus"), workdir / "run")
    except BaseException:
        sys.stderr.write(log.getvalue())  # the run's own log explains the failure
        raise
    finally:
        torch.set_num_threads(threads)
    records = read_metrics(workdir / "run" / "metrics.jsonl")
    return [{"step": r["step"], **{k: r[k] for k in COMPARED}} for r in records], summary


# Steps 1..TIGHT_STEPS are compared one by one; later steps as means over BLOCKS (coarse: breakage only).
TIGHT_STEPS = 8
BLOCKS = ((9, 16), (17, 24), (25, 30))
BLOCK_REL = 8e-2  # loss and nll: relative difference of a block mean
BLOCK_AUX = 5e-2  # aux: absolute difference of a block mean


def rel_tolerance(step: int) -> float:
    """Allowed relative difference of loss and nll at `step` (1-based) for step <= TIGHT_STEPS: 1e-3 up to
    step 6, 2e-3 at steps 7-8 (rounding drift measured here: at most 1.2e-5 and 1.2e-4)."""
    if step > TIGHT_STEPS:
        raise ValueError(f"step {step} is compared as a block mean, not one by one")
    return 1e-3 if step <= 6 else 2e-3


def aux_tolerance(step: int) -> float:
    """Absolute tolerance of the load-balancing loss (which stays near 1, its minimum): 0.1 x rel_tolerance."""
    return 0.1 * rel_tolerance(step)


def tolerance_text() -> str:
    """The comparison rule in words (stored in the reference JSON)."""
    blocks = ", ".join(f"{a}-{b}" for a, b in BLOCKS)
    return (f"steps 1-{TIGHT_STEPS} one by one: loss, nll rel 1e-3 (steps 1-6) / 2e-3 (7-{TIGHT_STEPS}), aux abs "
            f"0.1 x that; means over steps {blocks}: loss, nll rel {BLOCK_REL:g}, aux abs {BLOCK_AUX:g}")


def _mismatch(key: str, what: str, a: float, b: float, rel: float | None, abs_: float | None) -> str | None:
    limit = rel * abs(a) if rel is not None else abs_
    if math.isfinite(b) and abs(b - a) <= limit:
        return None
    allowed = f"rel {rel:.0e}" if rel is not None else f"abs {abs_:.0e}"
    return f"{what} {key}: reference {a:.6f}, now {b:.6f} (diff {b - a:+.2e}, allowed {allowed})"


def compare_curves(reference: dict[str, Any], curve: list[dict[str, float]], summary: dict[str, Any],
                   run_config: dict[str, Any] | None = None) -> list[str]:
    """Mismatches between a saved reference and a fresh curve, one line each (empty: they agree).

    `summary` is the fresh corpus summary and `run_config` (optional) the run config as a dict: when
    they differ from those stored in the reference, that is said first, as the likely cause.
    """
    problems = []
    ref_config, run_config = with_defaults(reference.get("run_config")), with_defaults(run_config)
    if run_config is not None and ref_config not in (None, run_config):
        changed = sorted(_changed_keys(ref_config, run_config))
        problems.append(f"the run config differs from the one the reference was written with: {', '.join(changed)}")
    ref_summary = reference.get("corpus")
    if ref_summary is not None and not _summaries_match(ref_summary, summary):
        problems.append(f"the debug corpus itself changed (data loader or synthetic generator): reference "
                        f"{json.dumps(ref_summary)}, now {json.dumps(summary)}")
    ref = reference["curve"]
    if [r["step"] for r in ref] != [r["step"] for r in curve]:
        problems.append(f"logged steps differ: reference {[r['step'] for r in ref]}, now {[r['step'] for r in curve]}")
        return problems
    for r, c in zip(ref[:TIGHT_STEPS], curve[:TIGHT_STEPS]):
        step = r["step"]
        for key in COMPARED:
            rel, abs_ = (None, aux_tolerance(step)) if key == "aux" else (rel_tolerance(step), None)
            problem = _mismatch(key, f"step {step}", r[key], c[key], rel, abs_)
            if problem:
                problems.append(problem)
    for a, b in BLOCKS:
        for key in COMPARED:
            mean_ref = float(np.mean([r[key] for r in ref if a <= r["step"] <= b]))
            mean_now = float(np.mean([r[key] for r in curve if a <= r["step"] <= b]))
            rel, abs_ = (None, BLOCK_AUX) if key == "aux" else (BLOCK_REL, None)
            problem = _mismatch(key, f"mean of steps {a}-{b}", mean_ref, mean_now, rel, abs_)
            if problem:
                problems.append(problem)
    return problems


def _changed_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in _changed_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} -> {b!r})"]


def _summaries_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if sorted(a) != sorted(b):
        return False
    for name in a:
        x, y = a[name], b[name]
        if x["series"] != y["series"] or x["length"] != y["length"]:
            return False
        for key in ("sum", "sumsq"):
            if not math.isclose(x[key], y[key], rel_tol=1e-6, abs_tol=1e-6):
                return False
    return True


def with_defaults(run_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored run config with the keys added to the run config since it was written (e.g. train.self_feed,
    parallel.ep_size) set to their defaults, which compute what the code computed before they existed."""
    if run_config is None:
        return None
    from moe_ts.typed_config import to_dict
    from pretrain.config import PretrainConfig, rename_old_keys

    run_config = json.loads(json.dumps(run_config))
    rename_old_keys(run_config, "reference run_config")

    def fill(stored: Any, defaults: Any) -> Any:
        if not (isinstance(stored, dict) and isinstance(defaults, dict)):
            return stored
        return {**defaults, **{k: fill(v, defaults.get(k)) for k, v in stored.items()}}

    return fill(run_config, json.loads(json.dumps(to_dict(PretrainConfig()))))


def config_dict(config: Path) -> dict[str, Any]:
    """The run config read from `config`, as plain JSON data (what the reference stores)."""
    from moe_ts.typed_config import to_dict
    from pretrain.config import load_pretrain_config

    return json.loads(json.dumps(to_dict(load_pretrain_config(config))))


def reference_record(config: Path, curve: list[dict[str, float]], summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON written by --write: the curve plus what produced it."""
    import platform

    import deepspeed
    import torch

    return {
        "command": WRITE_COMMAND,
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "run_config": config_dict(config),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "deepspeed": deepspeed.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}",
        "tolerance": tolerance_text(),
        "corpus": summary,
        "curve": curve,
    }


def format_curve(curve: list[dict[str, float]], reference: list[dict[str, float]] | None = None) -> str:
    """A table of the curve (and the reference's values beside it when given)."""
    lines = ["step      loss       nll       aux" + ("   ref loss    ref nll    ref aux" if reference else "")]
    for i, c in enumerate(curve):
        line = f"{c['step']:4d} {c['loss']:9.5f} {c['nll']:9.5f} {c['aux']:9.5f}"
        if reference and i < len(reference):
            r = reference[i]
            line += f"  {r['loss']:9.5f}  {r['nll']:9.5f}  {r['aux']:9.5f}"
        lines.append(line)
    return "\n".join(lines)


def load_reference(path: Path) -> dict[str, Any]:
    """The saved reference; a missing file is an error that says how to create it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference loss curve; create it with `{WRITE_COMMAND}`")
    return json.loads(path.read_text())


def failure_message(problems: list[str], reference: dict[str, Any], path: Path = REFERENCE) -> str:
    """What a mismatch report says: the problems, the versions involved, and how to regenerate the reference."""
    import torch

    lines = [f"{len(problems)} mismatch(es) with the reference loss curve {path}:", *problems]
    if reference.get("torch") != torch.__version__:
        lines.append(f"note: the reference was written with torch {reference.get('torch')}, this is torch "
                     f"{torch.__version__}; another torch version may legitimately change the curve")
    lines.append(f"if the change in behaviour is intended, regenerate the reference with `{WRITE_COMMAND}` "
                 f"and commit {path.name} with the change (say why in the commit message)")
    return "\n".join(lines)


def dump_reference(record: dict[str, Any]) -> str:
    """The reference JSON text: indented, one curve step per line (readable diffs)."""
    head = json.dumps({k: v for k, v in record.items() if k != "curve"}, indent=1)
    steps = ",\n".join("  " + json.dumps(r) for r in record["curve"])
    return head[:-2] + ',\n "curve": [\n' + steps + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the debug config; --write saves the curve, otherwise compare (exit 1 on mismatch, 2 on bad input)."""
    from moe_ts.typed_config import ConfigError

    p = argparse.ArgumentParser(prog="python -m pretrain.reference_curve", description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="write the reference JSON instead of comparing")
    p.add_argument("--config", type=Path, default=DEBUG_CONFIG, help="run YAML (default configs/debug.yaml)")
    p.add_argument("--reference", type=Path, default=REFERENCE, help="reference JSON to compare with or write")
    args = p.parse_args(argv)
    try:
        reference = None if args.write else load_reference(args.reference)
        with tempfile.TemporaryDirectory(prefix="moe-ts-reference-") as tmp:
            curve, summary = run_curve(args.config, Path(tmp))
        run_config = config_dict(args.config)
    except (FileNotFoundError, ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_curve(curve, None if reference is None else reference["curve"]))
    if args.write:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_text(dump_reference(reference_record(args.config, curve, summary)))
        print(f"wrote {args.reference}")
        return 0
    problems = compare_curves(reference, curve, summary, run_config)
    if problems:
        print(failure_message(problems, reference, args.reference), file=sys.stderr)
        return 1
    print(f"matches {args.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
