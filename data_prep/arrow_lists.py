"""Arrow list columns as numpy, one batch at a time (the LOTSA and Chronos readers, and the corpus reader)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def is_list(kind: pa.DataType) -> bool:
    """A list, large list or fixed-size list type."""
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def is_numeric(kind: pa.DataType) -> bool:
    """A float or integer type."""
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def list_parts(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(child values, offsets [n + 1]) of a list-typed array: row i is child[offsets[i]:offsets[i + 1]]."""
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        return array.values, (np.arange(len(array) + 1, dtype=np.int64) + array.offset) * size
    return array.values, array.offsets.to_numpy().astype(np.int64)


def float_values(array: pa.Array) -> np.ndarray:
    """The numbers of a flat numeric array as float32, nulls as NaN."""
    if array.type != pa.float32():
        array = array.cast(pa.float32())
    if array.null_count:
        array = pc.fill_null(array, float("nan"))
    return array.to_numpy(zero_copy_only=False)
