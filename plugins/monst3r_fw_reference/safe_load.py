"""``torch.load(weights_only=True)`` with one clear message for every way a file can fail it.

Both reference checkpoint readers (MonST3R/DUSt3R in ``network/checkpoint.py``, SEA-RAFT in
``searaft/checkpoint.py``) go through :func:`load_weights_only`, so a refused pickle, a damaged
download and a file that is no checkpoint at all are told apart the same way. Nothing here ever
falls back to a full unpickle: every failure raises.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Iterable

from monst3r_framework.errors import InputError

ZIP_MAGIC = b"PK\x03\x04"
#: First byte of a pickle of protocol >= 2 (the PROTO opcode); torch's legacy format starts so.
PICKLE_PROTO = 0x80

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_header(path: Path) -> str:
    """What the first bytes of ``path`` say it is: "empty", "zip", "pickle" or "other"."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "empty"
    if head == ZIP_MAGIC:
        return "zip"
    if head[0] == PICKLE_PROTO:
        return "pickle"
    return "other"


def load_weights_only(path: Path, *, allowed: Iterable[type] = (), what: str = "checkpoint",
                      hint: str = "re-download it", error: type[InputError] = InputError) -> Any:
    """Load ``path`` with ``torch.load(weights_only=True, map_location="cpu")``.

    Args:
        path: the checkpoint file.
        allowed: extra classes the unpickler may build (e.g. ``argparse.Namespace``).
        what: how the message names the file ("checkpoint", "SEA-RAFT checkpoint").
        hint: what to do about a damaged or wrong file (where to get the right one).
        error: the :class:`InputError` subclass to raise.
    Raises:
        ``error``: one line saying which of these it is: empty file; not a checkpoint at all (neither
        a zip archive nor a pickle); a pickle that would build an object outside the allowed types
        (named when torch names it), refused because unpickling it could run code; a damaged or
        truncated archive.
    """
    import torch

    try:
        kind = describe_header(path)
    except OSError as exc:
        raise error(f"{what} {path}: cannot be opened ({exc.strerror or exc})") from None
    if kind == "empty":
        raise error(f"{what} {path}: the file is empty (0 bytes), an interrupted download?; {hint}")
    if kind == "other":
        raise error(f"{what} {path}: not a torch checkpoint (neither a zip archive as torch.save writes, nor a "
                    f"pickle): the wrong file or a damaged download; {hint}")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        allowed_names = " and ".join(["tensors"] + [f"{c.__module__}.{c.__qualname__}" for c in allowed])
        if found:
            content = f"the pickled global {found.group(1)}"
        else:
            detail = re.search(r"WeightsUnpickler error: \s*(.+)", str(exc))
            content = "pickle instructions outside plain data" + (f" ({detail.group(1).strip()})" if detail else "")
        raise error(
            f"{what} {path}: refusing to load it: it contains {content}, and only {allowed_names} are allowed "
            "(torch.load(weights_only=True); unpickling anything else can run arbitrary code). If the file is damaged, re-download it; if it is "
            "genuine and you trust it, convert it to safetensors in a separate, trusted environment"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes the unpickler raise anything
        # (IndexError on an empty stack, KeyError on a missing memo, zipfile.BadZipFile, ...);
        # every one of them means the same to the user, and nothing is loaded.
        raise error(f"{what} {path}: the {'zip archive' if kind == 'zip' else 'pickle'} is damaged or truncated "
                    f"({_first_line(exc)}); {hint}") from None
