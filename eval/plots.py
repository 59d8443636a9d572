"""Forecast plots (docs/ARCHITECTURE.md §6): per task, a few series with the context tail, the median, the 10-90% band and
the truth, saved as PNG with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eval.runner import PlotExample, SuiteResult, TaskResult  # noqa: E402


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_task(task: TaskResult, path: Path, model_name: str, tail_factor: int = 4) -> Path | None:
    """One PNG with a panel per kept example; None when the task kept no example."""
    examples: list[PlotExample] = task.examples
    if not examples:
        return None
    fig, axes = plt.subplots(len(examples), 1, figsize=(9, 2.6 * len(examples)), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        h = len(ex.truth)
        tail = ex.context[-max(tail_factor * h, 48):]
        x_ctx = np.arange(-len(tail), 0)
        x_fut = np.arange(h)
        ax.plot(x_ctx, tail, color="black", lw=1.0, label="context")
        ax.plot(x_fut, ex.truth, color="black", lw=1.0, ls="--", label="truth")
        ax.fill_between(x_fut, ex.quantiles[0], ex.quantiles[2], color="tab:blue", alpha=0.25, label="10-90%")
        ax.plot(x_fut, ex.quantiles[1], color="tab:blue", lw=1.3, label=f"{model_name} median")
        ax.axvline(-0.5, color="grey", lw=0.6)
        ax.set_title(f"{task.display_name} h={h}: {ex.item_id}", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_suite(suite: SuiteResult, out_dir: Path, model_name: str) -> list[Path]:
    """plots/<suite>/<dataset>_h<H>.png for every task of the suite."""
    paths = []
    for t in suite.tasks:
        p = plot_task(t, out_dir / "plots" / _safe(suite.suite) / f"{_safe(t.dataset)}_h{t.horizon}.png", model_name)
        if p is not None:
            paths.append(p)
    return paths
