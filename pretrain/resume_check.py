"""`--resume` compares the run's saved config.yaml with the requested config before anything is touched.

Keys that change how a run is logged, saved or paced (not what it computes) may differ; any other difference
(model shape, schedule, data mixture, seed, ...) would either crash DeepSpeed's loader or silently produce a
run that is neither the old one nor the new one, so it is refused with the differing keys named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from moe_ts.typed_config import load_file, to_dict
from pretrain.config import rename_old_keys
from pretrain.errors import CheckpointError

MAY_DIFFER = frozenset({
    "train.time_budget_s", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.num_threads", "train.peak_tflops", "train.wandb_project", "train.wandb_mode", "parallel.timeout_s",
    # A resumed optimizer keeps the checkpoint's AdamW implementation whatever this says (and the trainer says so).
    "train.fused_adamw",
})


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(data) if isinstance(data, tuple) else data}


def _with_defaults(defaults: Any, saved: Any) -> Any:
    """`saved` with the keys it lacks taken from `defaults`. Sections (non-empty default dicts) merge key by
    key; any other value in `saved`, a whole mapping such as `train.mixture_share` included, replaces its
    default."""
    if not (isinstance(defaults, dict) and defaults and isinstance(saved, dict)):
        return saved
    return {**defaults, **{k: _with_defaults(defaults.get(k), v) for k, v in saved.items()}}


def _flat_views(saved: dict[str, Any], requested: dict[str, Any],
                defaults: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(saved completed by defaults, requested), both flattened to dotted keys."""
    return _flatten(_with_defaults(defaults or {}, saved)), _flatten(requested)


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if k not in MAY_DIFFER and a.get(k, "<absent>") != b.get(k, "<absent>"))


def config_differences(saved: dict[str, Any], requested: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), except those in MAY_DIFFER. A key absent
    from `saved` counts as its value in `defaults` (a run saved before that key existed, e.g. parallel.ep_size)."""
    return _differing(*_flat_views(saved, requested, defaults))


def check_resume_config(run: Any, out: Path) -> None:
    """CheckpointError naming the keys when RUN/config.yaml differs from `run` in what it computes."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        return
    saved = load_file(path)
    rename_old_keys(saved, str(path))
    requested = to_dict(run)
    defaults = to_dict(type(run)())  # keys added since the run was saved count as their defaults
    a, b = _flat_views(saved, requested, defaults)
    diff = _differing(a, b)
    if diff:
        shown = "; ".join(f"{k}: saved {a.get(k, '<absent>')!r}, requested {b.get(k, '<absent>')!r}" for k in diff[:4])
        more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
        raise CheckpointError(f"{path}: --resume with a different config ({shown}{more}); resume with the saved "
                              f"config or start a new run with another --out")
