"""Keep freed CPU memory in the process instead of handing it back to the kernel (glibc malloc).

A training step of the small config allocates and frees tensors of 1-32 MB many times (the experts' stacked
weight gradients are 32 x 384 x 512 floats = 25 MB per projection and layer). glibc serves such sizes with
`mmap` or trims them off the heap top once freed, so every step touches fresh pages: a page fault per 4 kB, about
14% of a forward + backward on the 2-core CPU (BENCHMARKS.md, "The CPU allocator, bf16 autocast and fused
AdamW"). Raising the two thresholds
keeps those blocks in the heap for reuse: the same effect as the jemalloc / tcmalloc that PyTorch's CPU
performance guide preloads, without a preload. The price: the process does not give back up to
`TRIM_THRESHOLD_BYTES` of freed memory until it exits.

The training commands (`moe-ts pretrain`, `finetune`, `distill`, and `pretrain.train` under torchrun) call
`tune_cpu_allocator()` once at start and print what it did in their set-up line (`state()`); evaluation and
forecasting gain little (their blocks are small) and keep glibc's defaults. Python API users may call it
themselves. `MOE_TS_CPU_ALLOCATOR=default` leaves malloc untouched, as do the user's own `MALLOC_*` settings, glibc
malloc tunables or a preloaded allocator.
"""
from __future__ import annotations

import ctypes
import os

from moe_ts.typed_config import ConfigError

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit systems: blocks up to that size come
# from the heap. 16 MiB left the small config's 25 MB gradients on mmap (no gain in the A/B of BENCHMARKS.md).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Freed memory at the heap top is kept up to this size; 64 MiB still trimmed between steps (no gain).
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
OPT_OUT = "MOE_TS_CPU_ALLOCATOR"  # "tuned" (or unset): tune; "default": leave glibc's defaults
_STATE = "left as is (tune_cpu_allocator() not called)"


def _decide() -> str:
    choice = os.environ.get(OPT_OUT, "tuned").strip().lower()
    if choice not in ("tuned", "default"):
        raise ConfigError(f"{OPT_OUT}={os.environ[OPT_OUT]!r}: expected 'tuned' or 'default'")
    if choice == "default":
        return f"left as is ({OPT_OUT}=default)"
    own = [name for name in USER_SETTINGS if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        own.append("GLIBC_TUNABLES glibc.malloc.*")
    if own:
        return f"left as is (the user's {', '.join(own)})"
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "left as is (an allocator is preloaded)"
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on (no ldconfig lookup)
    except OSError:
        return "left as is (no C library found)"
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or getattr(libc, "gnu_get_libc_version", None) is None:  # musl, macOS, Windows
        return "left as is (not glibc)"
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return "left as is (mallopt refused the thresholds)"
    return "tuned"


def tune_cpu_allocator() -> str:
    """Raise glibc's mmap and trim thresholds once for this process; returns what was done, in a few words
    ("tuned", or why not: opted out, the user's own settings, a preloaded allocator, not glibc). An
    unrecognised MOE_TS_CPU_ALLOCATOR value is a ConfigError naming it."""
    global _STATE
    _STATE = _decide()
    return _STATE


def state() -> str:
    """What the last `tune_cpu_allocator()` did in this process, for a run's set-up line."""
    return _STATE
