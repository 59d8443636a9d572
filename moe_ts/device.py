"""Where a model runs (docs/ARCHITECTURE.md §7): `--device` / `--dtype` of every command that runs a model, and
the `device=` / `dtype=` keywords of `MoiraiMoEModel.from_pretrained`.

`auto` takes the first CUDA device when torch sees one, else the CPU; `cuda` and `cuda:N` are refused in one line
where CUDA is absent or N is out of range, never a silent fallback to the CPU. `--dtype` casts the weights
(float32, the reference, by default); bfloat16 is refused on a CUDA device that lacks it. Argument helpers are
torch-free, so a command checks its flags before anything heavy loads.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "where the model runs: auto (the first CUDA device when present, else the CPU), cpu, cuda or cuda:N"
DTYPE_NAMES = ("float32", "bfloat16", "float64")
DTYPE_HELP = "the weights' dtype: float32 (default, the reference), bfloat16 or float64"
M = TypeVar("M")


class DeviceError(ValueError):
    """A device or dtype this machine cannot give (reported in one line)."""


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device` (default auto) and `--dtype` (default float32) on a command that runs a model."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP + " (default auto)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help=DTYPE_HELP)


def resolve_device(spec: "str | torch.device | None" = "auto") -> "torch.device":
    """`auto` (or None), `cpu`, `cuda`, `cuda:N` or a torch.device → the torch.device it means on this machine."""
    import torch

    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise DeviceError(f"device {spec!r}: must be auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA device"
        raise DeviceError(f"device {spec!r}: CUDA is not available here ({why}); use --device cpu or auto")
    n = int(index or 0)
    if n >= torch.cuda.device_count():
        raise DeviceError(f"device {spec!r}: there are {torch.cuda.device_count()} CUDA device(s) (cuda:0.."
                          f"cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", n)


def resolve_dtype(spec: "str | torch.dtype | None", device: "torch.device") -> "torch.dtype":
    """`float32` (or None), `bfloat16`, `float64` or a torch.dtype → the dtype, checked against `device`."""
    import torch

    if spec is None:
        return torch.float32
    if isinstance(spec, torch.dtype):
        name = str(spec).removeprefix("torch.")
    else:
        name = str(spec).strip().lower()
    if name not in DTYPE_NAMES:
        raise DeviceError(f"dtype {spec!r}: must be one of {', '.join(DTYPE_NAMES)}")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"dtype bfloat16: {torch.cuda.get_device_name(device)} does not support it; use float32")
    return getattr(torch, name)


def place_model(model: M, device: "str | torch.device | None" = "auto", dtype: "str | torch.dtype | None" = None) -> M:
    """`model` moved to `device` (resolved) and, when `dtype` is given, cast to it; returns the model. A model
    with its own `place(device, dtype)` (one holding frozen weights of another precision, e.g. Time-LLM's
    LLM) is placed by it."""
    target = resolve_device(device)
    if hasattr(model, "place"):
        return model.place(target, None if dtype is None else resolve_dtype(dtype, target))  # type: ignore[attr-defined]
    model.to(device=target)  # type: ignore[attr-defined]
    if dtype is not None:
        model.to(dtype=resolve_dtype(dtype, target))  # type: ignore[attr-defined]
    return model


def to_device(t: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """`t` (on the host) on `device`; to a GPU through pinned memory, asynchronously (stream-ordered)."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
