"""A minimal reader for Torch7 ``.t7`` files (binary, little-endian), enough for SPyNet's weights.

Torch7 serialises Lua values with a type tag: nil, number (float64), string, table, boolean and
"torch objects" (tensors, storages and ``nn`` modules, whose fields are a table). Tables and torch
objects carry an index so shared references are written once. Tensors become numpy arrays, other
torch objects become :class:`T7Object` (class name + fields), tables become dicts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

_NIL, _NUMBER, _STRING, _TABLE, _TORCH, _BOOLEAN = 0, 1, 2, 3, 4, 5

# Storage element type by the prefix of the class name ("torch.FloatTensor", "torch.CudaStorage", ...).
_DTYPES = {
    "Double": np.float64, "Float": np.float32, "Cuda": np.float32, "CudaDouble": np.float64,
    "Long": np.int64, "Int": np.int32, "Short": np.int16, "Char": np.int8, "Byte": np.uint8,
}


@dataclass
class T7Object:
    """A torch object other than a tensor, e.g. ``nn.SpatialConvolution``: its class and fields."""

    torch_class: str
    fields: dict[Any, Any] = field(default_factory=dict)


class T7FormatError(ValueError):
    """The file is not a Torch7 binary file this reader understands."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.memo: dict[int, Any] = {}

    def _unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise T7FormatError(f"unexpected end of file at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self._unpack("<i")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("latin-1")

    def read(self) -> Any:
        tag = self._unpack("<i")
        if tag == _NIL:
            return None
        if tag == _NUMBER:
            return self._unpack("<d")
        if tag == _STRING:
            return self.string()
        if tag == _BOOLEAN:
            return self._unpack("<i") == 1
        if tag == _TABLE:
            index = self._unpack("<i")
            if index in self.memo:
                return self.memo[index]
            table: dict[Any, Any] = {}
            self.memo[index] = table
            for _ in range(self._unpack("<i")):
                key = self.read()
                table[key] = self.read()
            return table
        if tag == _TORCH:
            index = self._unpack("<i")
            if index in self.memo:
                return self.memo[index]
            version = self.string()
            cls = self.string() if version.startswith("V ") else version
            if cls.endswith("Storage"):
                obj = self._storage(cls)
            elif cls.endswith("Tensor"):
                obj = self._tensor(cls)
            else:
                obj = T7Object(cls)
                self.memo[index] = obj  # before the fields: they may refer back to it
                fields = self.read()
                obj.fields = fields if isinstance(fields, dict) else {"value": fields}
            self.memo[index] = obj
            return obj
        raise T7FormatError(f"unsupported Torch7 type tag {tag} at byte {self.pos - 4} (functions are not supported)")

    def _dtype(self, cls: str) -> np.dtype:
        name = cls.split(".")[-1].replace("Storage", "").replace("Tensor", "")
        if name not in _DTYPES:
            raise T7FormatError(f"unsupported Torch7 class {cls}")
        return np.dtype(_DTYPES[name]).newbyteorder("<")

    def _storage(self, cls: str) -> np.ndarray:
        n = self._unpack("<q")
        dtype = self._dtype(cls)
        end = self.pos + n * dtype.itemsize
        if end > len(self.data):
            raise T7FormatError(f"{cls} of {n} elements runs past the end of the file")
        arr = np.frombuffer(self.data, dtype=dtype, count=n, offset=self.pos)
        self.pos = end
        return arr

    def _tensor(self, cls: str) -> np.ndarray:
        ndim = self._unpack("<i")
        size = [self._unpack("<q") for _ in range(ndim)]
        stride = [self._unpack("<q") for _ in range(ndim)]
        offset = self._unpack("<q") - 1  # Lua is 1-based
        storage = self.read()
        if storage is None or ndim == 0:
            return np.zeros([0], self._dtype(cls))
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
        return np.array(view)  # own, contiguous copy


def load_t7(path: Union[str, Path]) -> Any:
    """Read one Torch7 binary file; tensors come back as numpy arrays, modules as :class:`T7Object`."""
    return _Reader(Path(path).read_bytes()).read()
