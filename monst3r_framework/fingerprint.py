"""Content fingerprints of the files a stage reads by path (checkpoints, precomputed arrays, known
poses, user masks, the input), so a cache key changes when a file's *content* changes.

A config field says it is such a path by its annotation::

    checkpoint: Annotated[Optional[str], InputFile(env="MONST3R_CHECKPOINT")] = Field(None, ...)

When the field is empty, ``env`` names the environment variable that selects the file (it counts
as the file it selects). The runner fingerprints every such field with :class:`Fingerprints`:
sha256 of the bytes (of every file under a folder, with their relative paths), cached per absolute
path with its size and mtime, so an unchanged file is never re-hashed; a different size or mtime
re-hashes it once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel


@dataclass(frozen=True)
class InputFile:
    """Annotation marker: this config field is a path the stage reads (a file or a folder).

    env: environment variable read when the field is empty (e.g. ``MONST3R_CHECKPOINT``).
    """

    env: Optional[str] = None


def input_file_fields(config: BaseModel) -> dict[str, InputFile]:
    """{field name: marker} for every field of ``config`` annotated with :class:`InputFile`."""
    out = {}
    for name, info in type(config).model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, InputFile):
                out[name] = meta
    return out


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)


class Fingerprints:
    """sha256 fingerprints with a size+mtime cache kept in ``cache_path`` (JSON; None: in memory)."""

    def __init__(self, cache_path: Optional[Path] = None) -> None:
        self.cache_path = cache_path
        self.cache: dict[str, dict[str, Any]] = {}
        #: paths hashed in full by this object (tests use it to check the fast path)
        self.hashed: list[str] = []
        if cache_path is not None and cache_path.exists():
            try:
                self.cache = json.loads(cache_path.read_text())
            except (OSError, ValueError):
                self.cache = {}

    def _save(self) -> None:
        if self.cache_path is None:
            return
        tmp = self.cache_path.with_name(f"{self.cache_path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.cache))
            os.replace(tmp, self.cache_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only store still works, only slower

    def of_path(self, path: str | Path, hasher: Optional[Callable[[Path], str]] = None) -> dict[str, Any]:
        """{"path", "sha256", "size", "mtime_ns"} of a file, or of a folder (every file below it).

        ``hasher`` replaces the default content hash (e.g. the input's, which reads only images)."""
        p = Path(path).expanduser().resolve()
        if not p.exists():
            return {"path": str(p), "sha256": "missing"}
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        stats = [(f, f.stat()) for f in files]
        size = sum(st.st_size for _, st in stats)
        mtime = max((st.st_mtime_ns for _, st in stats), default=0)
        stamp = [len(files), size, mtime, [(str(f.relative_to(p)) if p.is_dir() else "", st.st_size, st.st_mtime_ns)
                                           for f, st in stats]]
        stamp_digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:32]
        cache_key = str(p) if hasher is None else f"{p}#{getattr(hasher, '__name__', 'custom')}"
        cached = self.cache.get(cache_key)
        if cached is not None and cached.get("stamp") == stamp_digest:
            sha = cached["sha256"]
        elif hasher is not None:
            sha = hasher(p)
            self.hashed.append(str(p))
            self.cache[cache_key] = {"stamp": stamp_digest, "sha256": sha}
            self._save()
        else:
            digest = hashlib.sha256()
            for f, _ in stats:
                if p.is_dir():
                    digest.update(f.relative_to(p).as_posix().encode() + b"\0")
                _hash_file(f, digest)
            sha = digest.hexdigest()
            self.hashed.append(str(p))
            self.cache[str(p)] = {"stamp": stamp_digest, "sha256": sha}
            self._save()
        return {"path": str(p), "sha256": sha, "size": size, "mtime_ns": mtime}

    def of_config(self, config: BaseModel) -> dict[str, dict[str, Any]]:
        """Fingerprints of the files ``config`` points to (fields marked :class:`InputFile`);
        a field that is empty and whose ``env`` variable is unset is left out."""
        out = {}
        for name, marker in input_file_fields(config).items():
            value = getattr(config, name)
            source = name
            if not value and marker.env:
                value = os.environ.get(marker.env)
                source = f"${marker.env}"
            if not value:
                continue
            if "://" in str(value):
                out[name] = {"path": str(value), "sha256": "url", "from": source}
                continue
            out[name] = {**self.of_path(value), "from": source}
        return out
