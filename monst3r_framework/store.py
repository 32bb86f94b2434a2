"""The run store: a Zarr (v3) hierarchy holding every stage's outputs, keyed by content.

Layout (see docs/store.md)::

    store.zarr/                      attrs: schema=1
      frames/<key>/                  rgb (F,H,W,3) uint8 · frame_index (F,) · timestamps (F,)
      stages/<kind>/<key>/           the record's arrays, chunked one pair / frame at a time
        partial/                     scratch space of an unfinished stage (deleted on completion)
      runs/<run-id>/                 attrs: resolved recipe, versions, per-stage key/cached/seconds

Stage group attrs: kind, type, plugin, stage_version, config, upstream, key, seconds, meta and
``complete`` (written last: a group without ``complete: true`` is never read as a result).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, TypeVar, Union

import numpy as np

from .errors import StoreError
from .stages import Record, Stage, StageConfig

SCHEMA = 1
R = TypeVar("R", bound=Record)


def stage_key(cls: type[Stage], config: StageConfig, upstream: dict[str, str]) -> str:
    """Same kind, type, stage version, config and upstream keys -> same key."""
    payload = {
        "kind": cls.kind, "type": cls.name, "stage_version": cls.version,
        "config": config.model_dump(mode="json"), "upstream": dict(sorted(upstream.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def digest(payload: Any) -> str:
    """Short sha256 of JSON-able data or raw bytes."""
    blob = payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Plain-JSON copy of a value: numpy scalars/arrays, paths, tuples and pydantic models converted,
    non-finite floats -> None (store attrs, metrics.json and summary.json all use this)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _tupleify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupleify(v) for v in value)
    return value


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One pair / frame per chunk for image-like arrays; small arrays in one chunk."""
    if len(shape) >= 3 and shape[0] > 0:
        return (1,) + tuple(shape[1:])
    return tuple(max(1, s) for s in shape)


class RunStore:
    """A Zarr store on a local path (locked for one run at a time) or any URL zarr/fsspec accepts."""

    LOCK_NAME = ".monst3r_fw.lock"

    def __init__(self, location: Union[str, Path], *, lock: bool = True) -> None:
        import zarr

        self.location = str(location)
        self.is_local = "://" not in self.location
        self._lock_fd: Optional[int] = None
        self._object_lock: Any = None
        try:
            if self.is_local:
                path = Path(self.location)
                if path.exists() and not path.is_dir():
                    raise StoreError(f"store {path}: exists and is not a directory; choose another --store")
                path.mkdir(parents=True, exist_ok=True)
            self.root = zarr.open_group(self.location, mode="a", zarr_format=3)
        except StoreError:
            raise
        except PermissionError as exc:
            raise StoreError(f"store {self.location}: not writable ({exc.strerror}); choose another --out/--store") from None
        except Exception as exc:
            raise StoreError(f"store {self.location}: cannot open as a Zarr v3 group ({type(exc).__name__}: {exc})") from None
        found = self.root.attrs.get("schema")
        if found is None:
            self.root.attrs["schema"] = SCHEMA
        elif found != SCHEMA:
            raise StoreError(f"store {self.location}: schema {found}, this monst3r-fw writes schema {SCHEMA}; use a new --store")
        if lock and self.is_local:
            self._acquire_lock()
        elif lock:  # object storage: a create-if-absent lock object with heartbeat (locks.py)
            from .locks import LOCK_WAIT_S, ObjectLock

            self._object_lock = ObjectLock(f"{self.location.rstrip('/')}/{self.LOCK_NAME}").acquire(LOCK_WAIT_S.get())

    # -------------------------------------------------------------------------------- locking
    def _acquire_lock(self) -> None:
        import fcntl

        path = Path(self.location) / self.LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"store {self.location} is in use by another run (pid {holder}); wait for it to "
                             "finish or pass a different --store") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._object_lock is not None:
            self._object_lock.release()
            self._object_lock = None
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------------------------- groups
    def group_path(self, kind: str, key: str) -> str:
        return f"frames/{key}" if kind == "frames" else f"stages/{kind}/{key}"

    def get_group(self, path: str) -> Any:
        try:
            return self.root[path]
        except KeyError:
            return None

    def is_complete(self, kind: str, key: str) -> bool:
        group = self.get_group(self.group_path(kind, key))
        return bool(group is not None and group.attrs.get("complete") is True)

    def exists_incomplete(self, kind: str, key: str) -> bool:
        group = self.get_group(self.group_path(kind, key))
        return group is not None and group.attrs.get("complete") is not True

    def begin(self, kind: str, key: str, attrs: dict[str, Any]) -> Any:
        """Create (or reopen, for resuming) a stage group marked incomplete; returns its ``partial`` workspace."""
        path = self.group_path(kind, key)
        group = self.get_group(path)
        if group is None:
            group = self.root.require_group(path)
        group.attrs.update({**jsonable(attrs), "key": key, "complete": False})
        return group.require_group("partial")

    def commit(self, kind: str, key: str, record: Record, seconds: float) -> None:
        """Write a record's arrays and metadata, then mark the group complete (last)."""
        if self._object_lock is not None and self._object_lock.lost:  # another writer took the store over
            raise StoreError(f"store {self.location}: this run lost its lock (no heartbeat for too long); "
                             f"{kind} {key} is not marked complete; rerun to redo it")
        group = self.root[self.group_path(kind, key)]
        write_record(group, record)
        if "partial" in group:
            del group["partial"]
        group.attrs.update({"seconds": float(seconds)})
        group.attrs["complete"] = True

    def load(self, kind: str, key: str, cls: type[R]) -> R:
        group = self.get_group(self.group_path(kind, key))
        if group is None or group.attrs.get("complete") is not True:
            raise StoreError(f"store {self.location}: {kind} {key} is not complete")
        return read_record(group, cls)

    def stage_attrs(self, kind: str, key: str) -> dict[str, Any]:
        group = self.get_group(self.group_path(kind, key))
        return {} if group is None else dict(group.attrs)

    # -------------------------------------------------------------------------------- runs
    def write_run(self, run_id: str, attrs: dict[str, Any]) -> None:
        group = self.root.require_group(f"runs/{run_id}")
        group.attrs.update(jsonable(attrs))

    def runs(self) -> dict[str, dict[str, Any]]:
        group = self.get_group("runs")
        if group is None:
            return {}
        return {name: dict(sub.attrs) for name, sub in sorted(group.groups())}

    def iter_stage_groups(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(kind, key, attrs) for every frames / stage group."""
        frames = self.get_group("frames")
        if frames is not None:
            for key, sub in frames.groups():
                yield "frames", key, dict(sub.attrs)
        stages = self.get_group("stages")
        if stages is None:
            return
        for kind, kind_group in stages.groups():
            for key, sub in kind_group.groups():
                yield kind, key, dict(sub.attrs)

    def disk_bytes(self, kind: str, key: str) -> int:
        if not self.is_local:
            return -1
        path = Path(self.location) / self.group_path(kind, key)
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    def delete(self, kind: str, key: str) -> None:
        path = self.group_path(kind, key)
        if path in self.root:
            del self.root[path]


def write_record(group: Any, record: Record) -> None:
    """Write every array of ``record`` into ``group`` (named dimensions, one chunk per leading index)
    and its metadata fields into ``attrs['meta']``."""
    for name, spec in record.DIMS.items():
        value = getattr(record, name)
        if value is None:
            if name in group:
                del group[name]
            continue
        arr = np.asarray(value)
        dtype = record.DTYPES.get(name)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        dims = tuple(a if not a.isdigit() else f"{a}_{i}" for i, a in enumerate(spec.split()))
        zarr_arr = group.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=_chunks(arr.shape),
                                      dimension_names=dims, overwrite=True)
        if arr.size:
            zarr_arr[...] = arr
    group.attrs["meta"] = jsonable(record.meta())
    group.attrs["record"] = type(record).__name__


class LazyArray:
    """A read-only view of a stored Zarr array that behaves like a numpy array where stages need it:
    ``len``, ``shape``, ``dtype``, ``ndim``, slicing (returns numpy) and ``np.asarray`` (loads it).
    Only the chunks a slice touches are read, so windowed stages can stream."""

    __slots__ = ("_array",)

    def __init__(self, array: Any) -> None:
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, (list, np.ndarray)) for k in parts):
            first, rest = parts[0], parts[1:]
            if isinstance(first, (list, np.ndarray)) and not any(isinstance(k, (list, np.ndarray)) for k in rest):
                idx = np.asarray(first)
                if idx.dtype == bool:
                    idx = np.nonzero(idx)[0]
                rows = np.stack([np.asarray(self._array[int(i)]) for i in idx]) if len(idx) else \
                    np.zeros((0,) + self.shape[1:], self.dtype)
                return rows[(slice(None),) + rest] if rest else rows
            return np.asarray(self)[key]
        return np.asarray(self._array[key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self._array[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"


def read_record(group: Any, cls: type[R]) -> R:
    """Rebuild a record from a group: arrays are :class:`LazyArray` views (slice them or
    ``np.asarray`` them), metadata comes from attrs."""
    kwargs: dict[str, Any] = {}
    for name in cls.DIMS:
        kwargs[name] = LazyArray(group[name]) if name in group else None
    meta = group.attrs.get("meta", {}) or {}
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, value in meta.items():
        if name in fields and name not in cls.DIMS:
            kwargs[name] = _tupleify(value)
    return cls(**kwargs)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
