"""Finetune a pretrained model on one dataset and evaluate it on the test split (docs/ARCHITECTURE.md §9).

    moe-ts finetune --checkpoint DIR --method msft|full|head|lora --dataset NAME|--csv FILE --out OUT
        [--data-dir DIR] [--steps N] [--batch-size B] [--lr LR] [--window W] [--eval-every N] [--patience N]
        [--num-scales K] [--lora-rank R] [--lora-alpha A] [--freeze-gates] [--train-experts] [--seed S]
        [--no-eval] [--eval-max-windows N] [--eval-stride N] [--num-samples S] [--overwrite] [--resume]
    moe-ts finetune --method time-llm --llm NAME_OR_DIR [--soft-prompt N] [--llm-layers K] [--context-length L]
        [--horizons 96,192,336,720] [--d-model D] [--d-ff F] [--prototypes S] --dataset NAME|--csv FILE --out OUT ...

NAME is a registered LSF dataset (ETTh1, ETTh2, ...): the model trains on its training split, stops
early on its validation split, and is evaluated on its test split by `moe-ts eval` (OUT/eval:
results.csv, results.md; plain models decode with their median, as MSFT does). FILE is a user's LSF CSV (a `date` column, one column per variate), split
0.7 / 0.1 / 0.2 and evaluated by the same LSF protocol (`eval.protocols.lsf_tasks`) at the horizons
96/192/336/720 that fit its test split. OUT is a Hugging Face folder: `MSFTModel` for msft (config.json holds
{"model", "msft"}), a plain `MoiraiMoEModel` for full, head and lora (LoRA merged into Q/K/V);
OUT/finetune.json records the run (method, trainable and total parameters, time per step, validation history).
`time-llm` needs no --checkpoint: it reprograms patches into the frozen language model --llm (a Hub id, fetched
or found in the cache as `transformers` does, or a local folder; docs/ARCHITECTURE.md §10): Time-LLM's text prompt,
or with --soft-prompt N Time-DPD's N trainable prompt vectors; OUT holds only the trainable weights and the LLM's
name and revision (`moe-ts eval` / `forecast` load the LLM again).
An interrupted run (Ctrl-C, a kill) keeps its state at its last validation step beside OUT; the same command
with --resume continues from it and ends as an uninterrupted run would (moe_ts/io/kept_state.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from finetune.data import Splits, csv_splits, lsf_splits
from finetune.train import METHODS, FinetuneConfig, finetune, prepare_model, prepare_time_llm, releasable
from moe_ts.device import DEVICE_HELP, place_model, resolve_device
from moe_ts.io.kept_state import KeptState
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import FINETUNE_FILE, card_fields, derived_records, record_files
from moe_ts.timellm.llm import default_llm_dtype
from moe_ts.timellm.model import TimeLLMModel

REPORT_FILE = FINETUNE_FILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-ts finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="pretrained Hugging Face folder (every method but time-llm)")
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset", help="registered LSF dataset (etth1, etth2, ettm1, ...)")
    data.add_argument("--csv", type=Path, help="a user's LSF CSV: a date column and one column per variate")
    p.add_argument("--out", required=True, type=Path, help="output folder (the finetuned model)")
    p.add_argument("--data-dir", help="data folder (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    d = FinetuneConfig()
    for name, typ in (("steps", int), ("batch_size", int), ("lr", float), ("window", int), ("eval_every", int),
                      ("patience", int), ("num_scales", int), ("lora_rank", int), ("lora_alpha", float),
                      ("seed", int), ("weight_decay", float)):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, default=getattr(d, name),
                       help=f"default {getattr(d, name)}")
    tl = p.add_argument_group("time-llm")
    tl.add_argument("--llm", help="time-llm: the frozen language model, a Hub id or a local transformers folder")
    tl.add_argument("--soft-prompt", type=int, default=d.soft_prompt,
                    help="time-llm: 0 = Time-LLM's text prompt; N = Time-DPD's N trainable prompt vectors")
    tl.add_argument("--llm-layers", type=int, default=d.llm_layers, help="time-llm: keep the first K layers (0 = all)")
    tl.add_argument("--context-length", type=int, default=d.context_length,
                    help=f"time-llm: default {d.context_length}; its training windows are this + the longest "
                         "horizon (--window does not apply)")
    tl.add_argument("--horizons", default=",".join(map(str, d.horizons)),
                    help="time-llm: one direct head per horizon, comma-separated (default %(default)s)")
    tl.add_argument("--d-model", type=int, default=d.d_model, help=f"time-llm: patch embedding width ({d.d_model})")
    tl.add_argument("--d-ff", type=int, default=d.d_ff, help=f"time-llm: LLM features kept per patch ({d.d_ff})")
    tl.add_argument("--prototypes", type=int, default=d.num_prototypes,
                    help=f"time-llm: text prototypes ({d.num_prototypes})")
    p.add_argument("--freeze-gates", action="store_true", help="msft: keep the MoE gates frozen")
    p.add_argument("--train-experts", action="store_true", help="msft: train the experts too")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default auto; the weights train in float32; "
                   "time-llm's frozen LLM is bfloat16 where CUDA supports it)")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--eval-max-windows", type=int, default=None, help="test windows per channel (evenly thinned)")
    p.add_argument("--eval-stride", type=int, default=1, help="test window stride (1 = the published protocol)")
    p.add_argument("--num-samples", type=int, default=100, help="forecast samples in the evaluation")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from its last validation step")
    return p


def _progress(args: argparse.Namespace) -> KeptState:
    """The kept loop state of this command (continued with --resume, else started afresh)."""
    from moe_ts.io.provenance import weights_fingerprint

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
                if k not in ("out", "overwrite", "resume", "no_eval")}
    if args.checkpoint is not None:
        settings["weights_sha256"] = weights_fingerprint(args.checkpoint)
    return KeptState(args.out, "finetune", settings, args.resume)


def _horizons(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--horizons {text!r}: expected comma-separated integers, e.g. 96,192,336,720") from None
    if not values or min(values) < 1:
        raise ValueError(f"--horizons {text!r}: expected positive integers")
    return values


def evaluate_csv(model: torch.nn.Module, splits: Splits, args: argparse.Namespace) -> str:
    """The LSF protocol on a user's CSV (the registered sets go through `moe-ts eval`); writes OUT/eval."""
    from data_prep.frequency import seasonality
    from data_prep.registry import LSF_CONTEXT, LSF_HORIZONS
    from eval.protocols import lsf_tasks
    from eval.report import write_reports
    from eval.runner import EvalConfig, run_task_suite
    from moe_ts.msft.network import MSFTNetwork
    from moe_ts.io.output_dir import mark

    train_end, test_start, length = splits.borders
    longest = max(model.config.horizons if isinstance(model, TimeLLMModel) else LSF_HORIZONS)  # its trained heads
    horizons = tuple(h for h in LSF_HORIZONS if h <= length - test_start and h <= longest)
    if not horizons:
        raise ValueError(f"{args.csv}: the test split has {length - test_start} points, shorter than the shortest "
                         f"LSF horizon {min(LSF_HORIZONS)}")
    tasks = lsf_tasks(splits.name, args.csv.name, splits.series, horizons, train_end, (test_start, length),
                      seasonality(splits.series[0].freq), LSF_CONTEXT, args.eval_stride, None, args.eval_max_windows)
    kwargs = {} if isinstance(model, MSFTNetwork) else {"decode": "median"}
    cfg = EvalConfig(num_samples=args.num_samples, plot_series=0, model_kwargs=kwargs)
    result = run_task_suite("lsf", tasks, model, cfg, baselines=())
    out = args.out / "eval"
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "eval")
    return write_reports([result], out, args.out.name, [f"- finetuned on {args.csv} ({splits.name}), test split "
                                                        f"[{test_start}, {length})"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = FinetuneConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         window=args.window, eval_every=args.eval_every, patience=args.patience,
                         num_scales=args.num_scales, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         train_gates=not args.freeze_gates, train_experts=args.train_experts, seed=args.seed,
                         weight_decay=args.weight_decay, llm=args.llm, llm_layers=args.llm_layers,
                         soft_prompt=args.soft_prompt, context_length=args.context_length,
                         horizons=_horizons(args.horizons), d_model=args.d_model, d_ff=args.d_ff,
                         num_prototypes=args.prototypes)
    time_llm = cfg.method == "time-llm"
    if time_llm == (args.checkpoint is not None):
        raise ValueError("--checkpoint is required by every method but time-llm" if not time_llm
                         else "--checkpoint does not apply to --method time-llm (its model is --llm)")
    if time_llm and not args.no_eval:  # a direct forecaster's heads must reach the evaluation's horizons
        from data_prep.registry import LSF_HORIZONS

        needed = max(LSF_HORIZONS) if args.dataset else min(LSF_HORIZONS)
        if max(cfg.horizons) < needed:
            what = (f"{args.dataset} forecasts {', '.join(map(str, LSF_HORIZONS))} points" if args.dataset
                    else f"{args.csv} forecasts at least {needed} points")
            raise ValueError(f"--horizons {args.horizons}: the test-split evaluation of {what}; train a head that "
                             "long or pass --no-eval")
    if args.checkpoint is not None and args.out.resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"--out {args.out}: is the --checkpoint folder; the pretrained model would be replaced")
    inputs = {"--checkpoint": args.checkpoint, "--csv": args.csv, "--llm": args.llm if time_llm else None}
    check_output_dir(args.out, args.overwrite, kind="finetuned", inputs=inputs)
    torch.set_num_threads(args.threads)
    from moe_ts.model import MoiraiMoEModel

    device = resolve_device(args.device)  # a device this machine lacks: one line before anything loads
    if time_llm:  # the prompt describes the dataset: its splits first
        splits = lsf_splits(args.dataset, args.data_dir) if args.dataset else csv_splits(args.csv)
        model = place_model(prepare_time_llm(cfg, splits.name, default_llm_dtype(device)), device)  # bf16 on CUDA
    else:
        base = MoiraiMoEModel.from_pretrained(args.checkpoint)
        model = place_model(prepare_model(base, cfg, args.checkpoint), device)  # with the method's new modules
        splits = lsf_splits(args.dataset, args.data_dir) if args.dataset else csv_splits(args.csv)
    progress = _progress(args)
    t0 = time.time()
    try:
        result = finetune(model, splits, cfg, progress=progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(progress.interrupted_note()) from None
    report = {"checkpoint": str(args.checkpoint or model.config.llm), "dataset": splits.name,
              "borders": list(splits.borders), "config": asdict(cfg), "result": asdict(result),
              "seconds": round(time.time() - t0, 2)}
    if time_llm:  # the frozen LLM is the source: its name and the revision the weights were trained on
        report["llm"] = {"name": model.config.llm, "revision": model.config.llm_revision,
                         "layers": model.config.llm_layers, "dtype": str(model.llm.dtype).removeprefix("torch.")}
        records = {REPORT_FILE: report}
    else:
        records = derived_records(args.checkpoint, {REPORT_FILE: report})  # a converted source's credit travels on
    releasable(model).save_pretrained(args.out, overwrite=args.overwrite, folder_kind="finetuned", inputs=inputs,
                                      extra_files=record_files(records), remedy="pass --overwrite to replace it",
                                      model_card_kwargs={"model_name": args.out.name, **card_fields(records)})
    progress.remove()
    print(f"finetune {cfg.method}: best validation loss {result.best_val:.4f} at step {result.best_step} "
          f"(zero-shot {result.zero_shot_val:.4f}); {result.steps_run} steps, {result.seconds_per_step * 1000:.0f} "
          f"ms/step; {result.trainable_params:,} of {result.total_params:,} parameters trained; wrote {args.out}")
    try:
        return _evaluate(args, model, splits)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the finetuned model is written to {args.out}; its test-split evaluation is not, "
                                f"run `moe-ts eval --checkpoint {args.out}` for it") from None


def _evaluate(args: argparse.Namespace, model: torch.nn.Module, splits: Splits) -> int:
    """The test-split evaluation into OUT/eval (none with --no-eval)."""
    if not args.no_eval and args.csv is not None:
        print(evaluate_csv(releasable(model), splits, args))
    elif not args.no_eval:
        from eval.run import main as eval_main

        eval_args = ["--checkpoint", str(args.out), "--suite", "lsf", "--datasets", splits.name,
                     "--out", str(args.out / "eval"), "--plot-series", "0", "--baselines", "snaive",
                     "--num-samples", str(args.num_samples), "--lsf-stride", str(args.eval_stride), "--decode", "median",
                     "--device", args.device]
        if getattr(getattr(model, "llm", None), "dtype", None) == torch.bfloat16:  # keep a bf16 LLM in bf16
            eval_args += ["--dtype", "bfloat16"]
        if args.data_dir:
            eval_args += ["--data-dir", args.data_dir]
        if args.eval_max_windows:
            eval_args += ["--max-windows", str(args.eval_max_windows)]
        return eval_main(eval_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
