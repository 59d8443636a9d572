"""Resume without running anyone's code: DeepSpeed's checkpoint files are unpickled with `weights_only=True`.

DeepSpeed's TorchCheckpointEngine loads with `torch.load(..., weights_only=False)`, so a run folder received
from someone else could execute code on `--resume`. `restrict_deepspeed_loads` swaps the engine's `load` for one
that allows tensors, plain containers and exactly the DeepSpeed types its ZeRO-0/1/2 checkpoints hold
(found by loading them: the loss scaler, the ZeRO stage enum and the fp32 partition addresses). Anything
else is refused with a CheckpointError naming the file and the type.
"""
from __future__ import annotations

import importlib
import pickle
from typing import Any

import torch

from pretrain.errors import CheckpointError

ALLOWED_DEEPSPEED_TYPES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _allowed_types() -> list[Any]:
    types = []
    for name in ALLOWED_DEEPSPEED_TYPES:
        module, _, attr = name.rpartition(".")
        try:
            types.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # another DeepSpeed version: the type is simply not allowed
            continue
    return types


def safe_torch_load(path: str, map_location: Any = None) -> Any:
    """torch.load with weights_only=True and the allow-listed DeepSpeed types."""
    with torch.serialization.safe_globals(_allowed_types()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            first = next((line for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                         str(err).splitlines()[0])
            raise CheckpointError(f"{path}: refused to unpickle a type outside the allow-list of "
                                  f"pretrain/safe_load.py ({first.strip()})") from None


def restrict_deepspeed_loads(engine: Any) -> None:
    """Make `engine.load_checkpoint` read its files through `safe_torch_load`."""
    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if checkpoint_engine is None:
        raise CheckpointError("DeepSpeed engine has no checkpoint_engine to restrict; refusing to load unsafely")
    checkpoint_engine.load = safe_torch_load
