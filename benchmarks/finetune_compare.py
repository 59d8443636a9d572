"""Finetuning methods compared on LSF datasets from one pretrained checkpoint (issue 9; docs/ARCHITECTURE.md §9).

    python benchmarks/finetune_compare.py --checkpoint runs/b/final --datasets etth1,etth2 \
        --steps 100 --batch-size 16 --max-windows 6 --out benchmarks/results/finetune_compare.json

For each dataset: zero-shot (the checkpoint itself), then head-only, full, plain LoRA and MSFT, all
with the same budget (steps, batch, learning rate, early stopping on the validation split), each
evaluated on the same (subsampled) test windows by `eval.runner` with Seasonal Naive beside it.
Plain models decode with `decode="median"`, as MSFT's scales do. Prints a table (MSE / MAE per horizon
and their mean, each mean also as a ratio to zero-shot measured in the same run; trainable and total
parameters; seconds per training step) and writes JSON.

The language-model rows (`--methods time-llm,time-dpd`, docs/ARCHITECTURE.md §10) need no checkpoint: Time-LLM
(text prompt) and Time-DPD (`--soft-prompt N` trainable prompt vectors) over the frozen `--llm`, one head per LSF
horizon, the same budget. `--random-llm` builds a small randomly initialised Qwen2 (`RANDOM_LLM`, a byte-level BPE
tokenizer trained on the prompts' words, seeded) into a temporary folder and uses it: no weights can be
downloaded here, so such rows show the method's cost and mechanics, not its accuracy. Without --checkpoint only
these rows run (no zero-shot row, no ratio to it).

    python benchmarks/finetune_compare.py --datasets etth1,etth2 --methods time-llm,time-dpd --random-llm \
        --steps 100 --batch-size 16 --max-windows 6 --out benchmarks/results/finetune_compare_timellm.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.protocols import TaskOptions  # noqa: E402
from eval.runner import MODEL, SNAIVE, EvalConfig, run_suite  # noqa: E402
from finetune.data import lsf_splits  # noqa: E402
from finetune.train import FinetuneConfig, finetune, prepare_model, prepare_time_llm, releasable  # noqa: E402
from moe_ts.model import MoiraiMoEModel  # noqa: E402
from moe_ts.msft.network import MSFTNetwork  # noqa: E402
from moe_ts.timellm.llm import import_transformers  # noqa: E402
from moe_ts.timellm.prompt import DESCRIPTIONS, soft_prompt_text  # noqa: E402

LLM_ROWS = {"time-llm": 0, "time-dpd": None}  # soft prompt vectors (None: --soft-prompt)
RANDOM_LLM = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=2048)


def build_random_llm(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised Qwen2 base model (`RANDOM_LLM`) and a byte-level BPE tokenizer (vocabulary 1000)
    trained on the prompts' words, written to `folder`."""
    transformers = import_transformers()
    from tokenizers import ByteLevelBPETokenizer

    texts = [soft_prompt_text(d, h, 512) for d in DESCRIPTIONS.values() for h in (96, 192, 336, 720)]
    texts += ["<|start_prompt|> min value max value median value the trend of input is upward downward top 5 lags "
              "are : [0, 24, 168] <|end_prompt|> " + " ".join(f"{v:.4f}" for v in np.linspace(-5, 5, 401))]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=1000, min_frequency=1, special_tokens=["<pad>", "<eos>"],
                            show_progress=False)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>",
                                                     eos_token="<eos>")
    torch.manual_seed(seed)
    model = transformers.Qwen2Model(transformers.Qwen2Config(vocab_size=len(tokenizer), **RANDOM_LLM))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def evaluate(model, dataset: str, data_dir: str | None, max_windows: int, num_samples: int) -> dict:
    kwargs = {} if isinstance(model, MSFTNetwork) else {"decode": "median"}
    cfg = EvalConfig(num_samples=num_samples, batch_size=64, seed=0, plot_series=0, model_kwargs=kwargs)
    result = run_suite("lsf", [dataset], model, data_dir, TaskOptions(max_windows=max_windows), cfg, log=None,
                       baselines=())
    out = {}
    for task in result.tasks:
        out[task.horizon] = {role: {m: task.metrics[role][m].value for m in ("MSE", "MAE")} for role in (MODEL, SNAIVE)}
    out["instances"] = result.tasks[0].num_instances
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Bar chart: mean MSE over the horizons per method and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        vals = [next(r["mse_mean"] for r in rows if r["dataset"] == d and r["method"] == m) for d in datasets]
        ax.bar(np.arange(len(datasets)) + k * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets)
    ax.set_ylabel("LSF MSE (mean of 4 horizons)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="pretrained folder (needed by every method but time-llm / time-dpd)")
    p.add_argument("--datasets", default="etth1,etth2")
    p.add_argument("--methods", default="head,full,lora,msft", help="also time-llm, time-dpd")
    p.add_argument("--llm", help="time-llm / time-dpd: the frozen LLM (Hub id or folder)")
    p.add_argument("--random-llm", action="store_true", help="time-llm / time-dpd: a small random Qwen2 (built in a temporary folder)")
    p.add_argument("--soft-prompt", type=int, default=16, help="time-dpd: trainable prompt vectors (default 16)")
    p.add_argument("--llm-layers", type=int, default=0, help="time-llm / time-dpd: LLM layers kept (0 = all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--max-windows", type=int, default=6, help="test windows per channel (evenly thinned)")
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot-only", action="store_true", help="redraw OUT's plot (OUT.png) from its JSON and exit")
    args = p.parse_args(argv)
    if args.plot_only:
        plot(json.loads(args.out.read_text())["rows"], args.out.with_suffix(".png"))
        return 0
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if args.checkpoint is None and any(m not in LLM_ROWS for m in methods):
        p.error("--checkpoint is needed by every method but time-llm / time-dpd")
    llm = args.llm
    if any(m in LLM_ROWS for m in methods) and llm is None:
        if not args.random_llm:
            p.error("time-llm / time-dpd rows need --llm NAME_OR_DIR or --random-llm")
        llm = str(build_random_llm(Path(tempfile.mkdtemp(prefix="random-qwen2-"))))  # seeded: the same every run
    base = MoiraiMoEModel.from_pretrained(args.checkpoint) if args.checkpoint else None
    rows = []
    for dataset in args.datasets.split(","):
        splits = lsf_splits(dataset, args.data_dir)
        t0 = time.time()
        if base is not None:
            zs = evaluate(base, dataset, args.data_dir, args.max_windows, args.num_samples)
            rows.append({"dataset": dataset, "method": "zero-shot", "trainable": 0, "s_per_step": 0.0, "steps": 0,
                         "best_val": None, "metrics": zs, "seconds": time.time() - t0,
                         "total": sum(p.numel() for p in base.parameters())})
            print(f"{dataset} zero-shot: {time.time() - t0:.0f} s", flush=True)
        for method in methods:
            t0 = time.time()
            if method in LLM_ROWS:
                soft = args.soft_prompt if LLM_ROWS[method] is None else LLM_ROWS[method]
                cfg = FinetuneConfig(method="time-llm", steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                     eval_every=args.eval_every, llm=llm, soft_prompt=soft, llm_layers=args.llm_layers)
                torch.manual_seed(0)
                model = prepare_time_llm(cfg, dataset)
            else:
                cfg = FinetuneConfig(method=method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                     eval_every=args.eval_every)
                model = prepare_model(base, cfg, args.checkpoint)
            res = finetune(model, splits, cfg, log=lambda _: None)
            metrics = evaluate(releasable(model), dataset, args.data_dir, args.max_windows, args.num_samples)
            rows.append({"dataset": dataset, "method": method, "trainable": res.trainable_params,
                         "total": res.total_params, "s_per_step": res.seconds_per_step, "steps": res.steps_run,
                         "best_step": res.best_step, "best_val": res.best_val, "zero_shot_val": res.zero_shot_val,
                         "metrics": metrics, "seconds": time.time() - t0})
            print(f"{dataset} {method}: {time.time() - t0:.0f} s (val {res.zero_shot_val:.3f} -> {res.best_val:.3f})",
                  flush=True)
    horizons = [h for h in rows[0]["metrics"] if isinstance(h, int)]
    print(f"\n| dataset | method | trainable | total | s/step | steps (best) | val loss | "
          + " | ".join(f"MSE {h}" for h in horizons) + " | MSE mean | × zero-shot | MAE mean | × zero-shot |")
    print("|" + "---|" * (11 + len(horizons)))
    for r in rows:
        zs = next((z for z in rows if z["dataset"] == r["dataset"] and z["method"] == "zero-shot"), None)
        mse = [r["metrics"][h][MODEL]["MSE"] for h in horizons]
        mae = [r["metrics"][h][MODEL]["MAE"] for h in horizons]
        r["mse_mean"], r["mae_mean"] = float(np.mean(mse)), float(np.mean(mae))
        if zs is not None:
            zs_mse = np.mean([zs["metrics"][h][MODEL]["MSE"] for h in horizons])
            zs_mae = np.mean([zs["metrics"][h][MODEL]["MAE"] for h in horizons])
            r["mse_vs_zero_shot"], r["mae_vs_zero_shot"] = r["mse_mean"] / zs_mse, r["mae_mean"] / zs_mae
        ratio = {k: ("–" if k not in r else f"{r[k]:.3f}") for k in ("mse_vs_zero_shot", "mae_vs_zero_shot")}
        val = "" if r["best_val"] is None else f"{r['zero_shot_val']:.3f}→{r['best_val']:.3f}"
        print(f"| {r['dataset']} | {r['method']} | {r['trainable']:,} | {r.get('total', 0):,} | {r['s_per_step']:.3f} | "
              f"{r['steps']} ({r.get('best_step', 0)}) | {val} | " + " | ".join(f"{m:.3f}" for m in mse)
              + f" | {r['mse_mean']:.3f} | {ratio['mse_vs_zero_shot']} | {r['mae_mean']:.3f} | "
                f"{ratio['mae_vs_zero_shot']} |")
    for dataset in args.datasets.split(","):
        sn = next(z for z in rows if z["dataset"] == dataset)["metrics"]
        print(f"{dataset} Seasonal Naive MSE mean {np.mean([sn[h][SNAIVE]['MSE'] for h in horizons]):.3f} "
              f"({sn['instances']} instances per horizon)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1,
                                   default=str) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
