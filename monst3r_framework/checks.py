"""Shape and value checks at stage boundaries."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import ShapeError, StageError
from .stages import ArrayLike, Record


def check_shape(name: str, array: ArrayLike, spec: str, dims: dict[str, int]) -> None:
    """Check ``array`` against a named-axis spec such as ``"P H W 3"``, binding names on first use.

    Raises:
        ShapeError: naming the array, the axis, the expected size and the shape found.
    """
    axes = spec.split()
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != len(axes):
        raise ShapeError(f"{name}: expected {len(axes)} axes ({spec}), got shape {shape}")
    for axis, size in zip(axes, shape):
        expected = int(axis) if axis.isdigit() else dims.setdefault(axis, size)
        if size != expected:
            raise ShapeError(f"{name}: axis {axis} should be {expected} ({spec}, {dims}), got shape {shape}")


def check_record(record: Record, where: str, dims: Optional[dict[str, int]] = None) -> dict[str, int]:
    """Check every array of a record against its ``DIMS``; returns the bound axis sizes."""
    dims = {} if dims is None else dims
    for field_name, spec in record.DIMS.items():
        value = getattr(record, field_name)
        if value is None:
            continue
        check_shape(f"{where}.{field_name}", value, spec, dims)
    return dims


def check_finite(name: str, array: ArrayLike) -> None:
    """Raise StageError when a float array holds NaN or inf (names the first bad index)."""
    arr = np.asarray(array)
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise StageError(f"{name}: {int(bad.sum())} non-finite values (first at index {first}); "
                         "check the stage's inputs and config")
