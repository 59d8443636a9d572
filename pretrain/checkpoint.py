"""Atomic checkpoints and the final Hugging Face folder (docs/ARCHITECTURE.md §4).

Layout of a run directory:
    RUN/checkpoints/step-N/ds/...              DeepSpeed engine state (weights, optimizer, LR schedule)
    RUN/checkpoints/step-N/trainer_rankR.json  step, planned steps, finished?, corpus fingerprint, sampler
                                               state, python/numpy/torch RNG states of rank R, world and
                                               expert-parallel sizes (plain JSON: reading it runs no code,
                                               unlike a pickle; DeepSpeed's own files are read with
                                               weights_only=True, pretrain/safe_load.py)
    RUN/checkpoints/step-N/experts_epG_ofS.safetensors  with parallel.ep_size = S > 1: the experts held by
                                               expert-parallel rank G (written by the first rank of its
                                               expert-data-parallel group; pretrain/expert_parallel.py)
    RUN/checkpoints/latest                     name of the newest complete checkpoint ("step-N")
    RUN/final/                                 model.save_pretrained output (what from_pretrained loads)

A checkpoint is written into `tmp-step-N` and renamed to `step-N` only when every rank has finished,
so a `step-N` directory is complete by construction; leftovers of a crash (`tmp-*`, `trash-*`) are
never loaded and are removed by the next run. DeepSpeed stores no absolute paths (its own `latest`
file holds the tag), so the renamed directory loads as is. RUN/final carries `training.json`
(`moe_ts.io.provenance`): how far the run got and whether it finished.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moe_ts.io.output_dir import fsync_dir
from moe_ts.io.provenance import TRAINING_FILE
from pretrain.engine import DistInfo, barrier
from pretrain.errors import CheckpointError
from pretrain.expert_parallel import expert_parallel_group
from pretrain.expert_shards import load_expert_shard, save_expert_shard
from pretrain.safe_load import restrict_deepspeed_loads

DS_TAG = "ds"
_STEP_RE = re.compile(r"^step-(\d+)$")


def trainer_state_name(rank: int) -> str:
    """File name of rank `rank`'s trainer state inside a checkpoint."""
    return f"trainer_rank{rank}.json"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, dir), oldest first; tmp-/trash- leftovers are not listed."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_RE.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete `tmp-*` / `trash-*` directories a crashed run left behind; returns their names."""
    root = checkpoint_root(run_dir)
    removed = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and (child.name.startswith("tmp-") or child.name.startswith("trash-")):
                shutil.rmtree(child)
                removed.append(child.name)
    return removed


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so readers see the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _remove_dir(path: Path) -> None:
    """Rename out of the way first, so a crash mid-delete leaves only a `trash-*` leftover."""
    trash = path.with_name("trash-" + path.name)
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def rng_state() -> dict[str, Any]:
    """Python, numpy (global) and torch RNG states of this process, as plain JSON data."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}}
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "numpy": np_state,
                             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(engine: Any, run_dir: Path, step: int, sampler_state: dict[str, Any], dist: DistInfo,
                    keep: int, progress: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` atomically on every rank, point `latest` at it, prune to `keep` (collective)."""
    root = checkpoint_root(run_dir)
    tmp, final = root / f"tmp-step-{step}", root / f"step-{step}"
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    barrier()
    engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"step": step})
    save_expert_shard(engine.module, tmp)
    trainer_state = {**(progress or {}), "step": step, "world_size": dist.world_size,
                     "ep_size": _ep_size(engine.module), "sampler": sampler_state, "rng": rng_state()}
    with open(tmp / trainer_state_name(dist.rank), "w") as f:
        json.dump(trainer_state, f)
        f.flush()
        os.fsync(f.fileno())
    barrier()
    if dist.is_main:
        if final.exists():  # the same step saved again (e.g. a resumed run stopped at once)
            _remove_dir(final)
        os.replace(tmp, final)
        fsync_dir(root)
        write_atomic(root / "latest", final.name.encode())
        for _, old in list_checkpoints(run_dir)[:-keep]:
            _remove_dir(old)
    barrier()
    return final


def _ep_size(model: nn.Module) -> int:
    group = expert_parallel_group(model)
    return 1 if group is None else torch.distributed.get_world_size(group)


def check_checkpoint_layout(ckpt: Path, world_size: int, ep_size: int) -> None:
    """CheckpointError (one line, both values) when `ckpt` was saved by a job of another world size or ep_size.

    Reads rank 0's trainer state, which every job has, so every rank reaches the same verdict before any
    collective (a mismatch must fail the job, not hang it)."""
    state_file = ckpt / trainer_state_name(0)
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: no {state_file.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_file}: not valid JSON ({err})") from None
    saved_world, saved_ep = state.get("world_size"), state.get("ep_size", 1)
    if saved_world != world_size or saved_ep != ep_size:
        raise CheckpointError(f"{ckpt}: saved with world size {saved_world} and parallel.ep_size {saved_ep}, "
                              f"resumed with world size {world_size} and parallel.ep_size {ep_size}; resume with "
                              f"the saved sizes")


def load_checkpoint(engine: Any, ckpt: Path, dist: DistInfo) -> dict[str, Any]:
    """Restore engine state and this rank's RNG states from `ckpt`; returns the trainer state (step, sampler)."""
    state_file = ckpt / trainer_state_name(dist.rank)
    if not state_file.is_file():
        if (ckpt / f"trainer_rank{dist.rank}.pt").is_file():
            raise CheckpointError(f"{ckpt}: trainer state is an older pickle file (trainer_rank{dist.rank}.pt), "
                                  f"which is not loaded because unpickling can run code; start a new run")
        raise CheckpointError(f"{ckpt}: no {state_file.name} (saved by a job of another world size?)")
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_file}: not valid JSON ({err})") from None
    if state["world_size"] != dist.world_size:
        raise CheckpointError(f"{ckpt}: saved with world size {state['world_size']}, resumed with "
                              f"{dist.world_size}; the sampler streams would differ")
    restrict_deepspeed_loads(engine)
    load_path, _ = engine.load_checkpoint(str(ckpt), tag=DS_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise CheckpointError(f"{ckpt}: DeepSpeed found no engine state under tag '{DS_TAG}'")
    _restore_expert_shard(engine, ckpt)
    set_rng_state(state["rng"])
    return state


def _restore_expert_shard(engine: Any, ckpt: Path) -> None:
    """Sharded experts: DeepSpeed's model file holds rank 0's shard only, and its loader copies that into every
    rank's module (ZeRO restores each rank's own fp32 master copy, but the next forward uses the module's
    weights). So each rank copies in its own shard, and the fp32 copies are refreshed from it (without this,
    a resumed run's losses leave the uninterrupted run's from the first step after the checkpoint)."""
    path = load_expert_shard(engine.module, ckpt)
    if path is not None and hasattr(engine.optimizer, "refresh_fp32_params"):
        engine.optimizer.refresh_fp32_params()


def save_final(model: nn.Module, run_dir: Path, training: dict[str, Any] | None = None) -> Path:
    """`model.save_pretrained` into RUN/final with `training` as its training.json and in its model card,
    replacing an older one atomically (main rank only)."""
    from moe_ts.io.provenance import CONVERSION_FILE, card_fields, record_files

    final = Path(run_dir) / "final"
    tmp = Path(run_dir) / "tmp-final"
    if tmp.exists():
        shutil.rmtree(tmp)
    records = {} if training is None else {TRAINING_FILE: training}
    if training and training.get("conversion"):  # `--init CONVERTED`: the source's record travels on
        records[CONVERSION_FILE] = training["conversion"]
    model.save_pretrained(str(tmp), model_card_kwargs=card_fields(records), extra_files=record_files(records))
    if final.exists():
        _remove_dir(final)
    os.replace(tmp, final)
    return final
