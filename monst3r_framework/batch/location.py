"""Where a batch writes: a local folder or any fsspec URL (``s3://``, ``gs://``, ``memory://`` ...).

``file://`` URLs are turned into plain paths so local outputs always get the local (flock) lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError


def normalise(location: str) -> str:
    """``file:///a/b`` -> ``/a/b``; other URLs and paths unchanged (trailing ``/`` dropped)."""
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return text.rstrip("/") if len(text) > 1 else text


def is_url(location: str) -> bool:
    return "://" in location


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base).joinpath(*parts))


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; one clear line when its backend is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        hint = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(protocol, exc.name or "?")
        raise InputError(f"{url}: fsspec has no driver for {protocol}:// installed; pip install {hint}") from None


def read_json(location: str) -> Optional[dict[str, Any]]:
    """A JSON object at a path or URL, or None when it does not exist or cannot be parsed."""
    try:
        if is_url(location):
            fs, path = filesystem(location)
            if not fs.exists(path):
                return None
            text = fs.cat_file(path).decode()
        else:
            p = Path(location)
            if not p.is_file():
                return None
            text = p.read_text()
        value = json.loads(text)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(location: str, payload: Any) -> None:
    """Write JSON atomically on a local disk (temp file + rename); object stores replace whole objects."""
    text = json.dumps(payload, indent=1, allow_nan=False)
    if is_url(location):
        fs, path = filesystem(location)
        fs.pipe_file(path, text.encode())
        return
    import os

    p = Path(location)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, p)


def ensure_writable(out: str) -> None:
    """Create OUT (local) or check its bucket answers (URL); one line naming the fix otherwise."""
    if is_url(out):
        fs, path = filesystem(out)
        try:
            fs.makedirs(path, exist_ok=True)
            probe = f"{path.rstrip('/')}/.monst3r_fw_write_test"
            fs.pipe_file(probe, b"ok")
            fs.rm_file(probe)
        except Exception as exc:  # the drivers raise their own types (botocore, gcsfs, ...)
            raise InputError(f"--out {out}: cannot write there ({type(exc).__name__}: {exc}); check the URL, the "
                             "bucket and the credentials") from None
        return
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose another --out") from None
