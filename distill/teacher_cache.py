"""The teacher's forecasts and hidden features for distillation, computed once and cached on disk
(docs/ARCHITECTURE.md §8).

Forecast: the mean or median of the teacher's `num_samples` sample paths (`TeacherSettings.point`), decoded
with `decode` (see `moe_ts.forecasting`). Feature: the final (normed) hidden state of the last context patch
[N, D], the state the teacher's head forecasts from.

Cache: one .npz per (teacher, data, settings), named by the SHA-256 of the teacher's config and weights
(tensor by tensor), the contexts' bytes, the horizon and the settings. Epochs (and later runs with the same
inputs) reuse it; a changed teacher, data set or setting has another key, so a stale file is never read.
Files are written atomically.

Shape legend: N windows, L context length, H horizon, D teacher width.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from moe_ts.typed_config import to_dict
from moe_ts.forecasting import prepare_decoder
from moe_ts.model import MoiraiMoEModel

CACHE_VERSION = 1  # bump when what is cached changes meaning


@dataclass
class TeacherSettings:
    """How the teacher's forecast is made."""

    num_samples: int = 20
    point: Literal["mean", "median"] = "mean"
    decode: Literal["median", "mean", "sample"] = "median"
    seed: int = 0
    batch_size: int = 256


def teacher_fingerprint(teacher: MoiraiMoEModel) -> str:
    """SHA-256 of the teacher's config and every weight (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps(to_dict(teacher.config), sort_keys=True).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_key(teacher: MoiraiMoEModel, contexts_nl: np.ndarray, horizon: int, settings: TeacherSettings) -> str:
    """The cache file's key: teacher, data, horizon and settings."""
    data = hashlib.sha256(np.ascontiguousarray(contexts_nl, dtype=np.float32).tobytes())
    data.update(str(contexts_nl.shape).encode())
    parts = {"version": CACHE_VERSION, "teacher": teacher_fingerprint(teacher), "data": data.hexdigest(),
             "horizon": horizon, "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def teacher_features(teacher: MoiraiMoEModel, contexts: list[np.ndarray]) -> np.ndarray:
    """[B, D] final hidden state of each context's last patch."""
    decoder, _, _ = prepare_decoder(teacher, contexts, use_cache=False)
    return decoder.prefill().float().cpu().numpy()


def compute_teacher_outputs(teacher: MoiraiMoEModel, contexts_nl: np.ndarray, horizon: int,
                            settings: TeacherSettings, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(forecast [N, H], feature [N, D]) of the teacher on every context, batch by batch."""
    from tqdm import tqdm

    context_length = contexts_nl.shape[1]
    teacher.eval()
    preds, feats = [], []
    starts = range(0, len(contexts_nl), settings.batch_size)
    for b, start in enumerate(tqdm(starts, desc="teacher forecasts", unit="batch", disable=None if progress else True)):
        chunk = list(contexts_nl[start:start + settings.batch_size])
        out = teacher.forecast(chunk, horizon, num_samples=settings.num_samples, seed=settings.seed + b,
                               batch_size=settings.batch_size, context_length=context_length, decode=settings.decode)
        preds.append(out.mean if settings.point == "mean" else out.median)
        feats.append(teacher_features(teacher, chunk))
    return np.concatenate(preds).astype(np.float32), np.concatenate(feats).astype(np.float32)


def cached_teacher_outputs(teacher: MoiraiMoEModel, contexts_nl: np.ndarray, horizon: int, settings: TeacherSettings,
                           cache_dir: str | Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(forecast [N, H], feature [N, D], whether the cache had them): computed once, then read from disk."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"teacher-{cache_key(teacher, contexts_nl, horizon, settings)[:32]}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["forecast"], cached["feature"], True
    pred, feat = compute_teacher_outputs(teacher, contexts_nl, horizon, settings, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=cache_dir)
    os.close(fd)
    try:
        np.savez(tmp, forecast=pred, feature=feat)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return pred, feat, False
