"""Training metrics: RUN/metrics.jsonl (one line per logged step) and wandb (offline by default).

Expert load is summarised per step from the [L, E] routed-token counts: `expert_load_max` /
`expert_load_min` are the most / least loaded expert's share times E, averaged over layers (1.0 =
perfectly balanced), `expert_load_cv` the coefficient of variation, `dead_experts` the number of
(layer, expert) pairs that received no token, and `expert_load` the shares themselves.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def expert_load_stats(counts_le: torch.Tensor) -> dict[str, Any]:
    """Balance summary of routed-token counts [L, E]."""
    counts = counts_le.double()
    num_experts = counts.shape[1]
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = counts.mean(dim=1).clamp(min=1e-12)
    return {
        "expert_load_max": float((share.max(dim=1).values * num_experts).mean()),
        "expert_load_min": float((share.min(dim=1).values * num_experts).mean()),
        "expert_load_cv": float((counts.std(dim=1, correction=0) / mean).mean()),
        "dead_experts": int((counts_le == 0).sum()),
        "expert_load": [[round(float(x), 6) for x in row] for row in share],
    }


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends step records to RUN/metrics.jsonl and mirrors scalars to wandb (main rank only)."""

    def __init__(self, run_dir: Path, resume_step: int, enabled: bool, wandb_project: str, wandb_mode: str,
                 config: dict[str, Any]) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        if not enabled:
            return
        # One consistent curve: drop records past the checkpoint we resume from (logged before a crash).
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step] if self.path.exists() else []
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self._file = open(self.path, "a")
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode != "disabled":
            import wandb

            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), mode=mode, config=config,
                                     name=Path(run_dir).name)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must hold `step`; may hold `expert_load` shares [L][E])."""
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            import wandb

            scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
            shares = [x for row in record.get("expert_load", []) for x in row]
            if shares:
                scalars["expert_load_hist"] = wandb.Histogram(shares)
            self._wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
