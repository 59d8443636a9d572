"""Shared launch helpers for the Triton kernels: interpreter check, block sizes, power-of-two padding.

On CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment
*before* triton is imported and costs about 5 ms per program instance, so CPU launches use few,
large blocks; on a GPU the blocks are sized for occupancy and vectorised row loads.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

import triton


def interpreted(t: Tensor) -> bool:
    """True when a kernel on this tensor runs in Triton's CPU interpreter (raises if it cannot run at all)."""
    if t.device.type == "cuda":
        return False
    if t.device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                "kernels: Triton kernels on CPU tensors need TRITON_INTERPRET=1 set before triton is imported "
                "(tests/conftest.py and .ci/run set it); on a GPU move the tensors to CUDA"
            )
        return True
    raise RuntimeError(f"kernels: Triton kernels support CUDA or CPU (interpreter) tensors, got device {t.device}")


def pow2(n: int, lo: int = 1) -> int:
    """Smallest power of two >= max(n, lo)."""
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


def row_block(n_rows: int, width: int, interp: bool, gpu_rows: int) -> int:
    """Rows per program: on the interpreter as many as keep a tile near 2^18 elements; on GPU `gpu_rows`."""
    if interp:
        return min(pow2(n_rows), max(16, pow2((1 << 18) // max(width, 1)) // 2))
    return gpu_rows


def col_block(width: int, interp: bool, gpu_max: int = 256) -> int:
    """Columns per program (D tile): the whole (padded) width on the interpreter, at most `gpu_max` on GPU."""
    return pow2(width, 16) if interp else min(pow2(width, 16), gpu_max)


def check_2d(name: str, t: Tensor) -> None:
    """Kernels take row-major 2-D tensors with unit column stride."""
    if t.dim() != 2:
        raise ValueError(f"kernels: {name} must be 2-D, got shape {tuple(t.shape)}")
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"kernels: {name} must have unit column stride, got strides {t.stride()}")


FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


_POISON = {"on": False}


class poison_outputs:
    """Test hook: while active, every buffer the kernels allocate starts as NaN (floats) or the
    dtype's minimum (integers), so an element a kernel forgets to write cannot pass for a result."""

    def __enter__(self) -> "poison_outputs":
        self._was = _POISON["on"]
        _POISON["on"] = True
        return self

    def __exit__(self, *exc) -> None:
        _POISON["on"] = self._was


def alloc(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An output buffer for a kernel: torch.empty, or poisoned inside `poison_outputs()`."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _POISON["on"]:
        out.fill_(float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min)
    return out
