"""Batch manifests: which videos a ``monst3r-fw batch`` runs, under which ids, with which ground truth.

A manifest is one of

* a folder: every video file (mp4, mov, avi, mkv, webm) and every folder of images in it is one
  video; a synthetic scene folder (``gt.npz`` beside ``frames/``, see docs/synthetic.md) is one video
  whose ground truth is the scene;
* a glob (``"data/*.mp4"``, quoted so the shell leaves it alone): each match as above;
* a ``.jsonl`` file, one JSON object per line, or a ``.csv`` file with a header row:
  ``id`` (optional: the input's name), ``input`` (required; relative paths are relative to the
  manifest), ``gt`` (optional ground truth), ``dataset`` (optional reader of ``gt``, default
  ``synthetic``), ``set`` (optional recipe overrides: a JSON list, or ``;``-separated in CSV).
"""

from __future__ import annotations

import csv
import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ROW_KEYS = {"id", "input", "gt", "dataset", "set"}


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch.

    id: folder name of its run under OUT (letters, digits, ``.``, ``_``, ``-``).
    input: video file, image folder or URL, as the runner accepts it.
    gt: ground truth (a synthetic scene folder, or a dataset root / sequence read by ``dataset``).
    dataset: ground-truth reader name (``synthetic``, ``sintel``, ``bonn``, ...).
    seq: sequence name under ``gt`` for dataset readers that need one.
    overrides: recipe overrides for this video only, applied after the batch-wide ones.
    """

    id: str
    input: str
    gt: Optional[str] = None
    dataset: str = "synthetic"
    seq: Optional[str] = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "input": self.input, "gt": self.gt, "dataset": self.dataset, "seq": self.seq,
                "set": list(self.overrides)}


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def _safe_id(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned or "video"


def _item_from_path(path: Path) -> Optional[BatchItem]:
    """A manifest entry found on disk, or None when it is not a video / frame folder / scene."""
    path = path.absolute()  # Ray workers may run elsewhere than this folder
    if path.name.startswith("."):
        return None
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return BatchItem(id=_safe_id(path.stem), input=str(path))
        return None
    if path.is_dir():
        if (path / "gt.npz").is_file():
            frames = path / "frames"
            source = frames if frames.is_dir() else path / "video.mp4"
            return BatchItem(id=_safe_id(path.name), input=str(source), gt=str(path))
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file()):
            return BatchItem(id=_safe_id(path.name), input=str(path))
    return None


def _overrides(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise InputError(f"{where}: 'set' is not a JSON list of key=value strings: {text!r}") from None
        else:
            value = [part.strip() for part in text.split(";") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise InputError(f"{where}: 'set' must be a list of key=value strings, e.g. [\"input.num_frames=20\"]; "
                         f"got {value!r}")
    return tuple(value)


def _item_from_row(row: dict[str, Any], base: Path, where: str) -> BatchItem:
    unknown = sorted(set(row) - _ROW_KEYS - {"seq"})
    if unknown:
        raise InputError(f"{where}: unknown column(s) {', '.join(unknown)}; a row has id, input, gt, dataset, set")
    source = row.get("input")
    if not source or not isinstance(source, str):
        raise InputError(f"{where}: no 'input' (a video file or image folder)")

    def resolve(value: str) -> str:
        if "://" in value or Path(value).is_absolute():
            return value
        return str(base / value)

    given = row.get("id")
    item_id = str(given) if given not in (None, "") else _safe_id(Path(source.rstrip("/")).stem)
    if not _ID_OK.match(item_id):
        raise InputError(f"{where}: id {item_id!r} is not a folder-safe name (letters, digits, '.', '_', '-')")
    gt = row.get("gt") or None
    return BatchItem(id=item_id, input=resolve(source), gt=resolve(str(gt)) if gt else None,
                     dataset=str(row.get("dataset") or "synthetic"), seq=(str(row["seq"]) if row.get("seq") else None),
                     overrides=_overrides(row.get("set"), where))


def _read_rows(path: Path) -> list[BatchItem]:
    base = path.parent.absolute()
    items: list[BatchItem] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "input" not in reader.fieldnames:
                raise InputError(f"{path}: the CSV header must name an 'input' column (id,input,gt,set)")
            for n, row in enumerate(reader, start=2):
                clean = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
                items.append(_item_from_row(clean, base, f"{path}:{n}"))
        return items
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{n}: not a JSON object ({exc.msg}); one {{\"id\", \"input\"}} object per line") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        items.append(_item_from_row(row, base, f"{path}:{n}"))
    return items


def read_manifest(spec: str | Path) -> list[BatchItem]:
    """The videos named by a folder, a glob, or a JSONL/CSV manifest (see the module docstring).

    Raises:
        InputError: nothing matches, a row is malformed, or two videos share an id.
    """
    text = str(spec)
    path = Path(text)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".csv"):
        items = _read_rows(path)
    elif path.is_dir():
        items = [it for p in sorted(path.iterdir(), key=lambda p: _natural(p.name)) if (it := _item_from_path(p))]
        if not items:
            raise InputError(f"manifest {path}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or image folders inside")
    elif any(ch in text for ch in "*?["):
        matches = sorted(glob.glob(text), key=_natural)
        items = [it for m in matches if (it := _item_from_path(Path(m)))]
        if not items:
            raise InputError(f"manifest {text!r}: the glob matches no videos or image folders")
    elif path.is_file():
        raise InputError(f"manifest {path}: expected a .jsonl or .csv file, a folder, or a glob")
    else:
        raise InputError(f"manifest {text}: not found; pass a folder of videos, a quoted glob, or a .jsonl/.csv file")
    seen: dict[str, BatchItem] = {}
    for item in items:
        if item.id in seen:
            raise InputError(f"manifest {text}: id {item.id!r} is used by both {seen[item.id].input} and {item.input}; "
                             "give the rows distinct ids")
        seen[item.id] = item
    if not items:
        raise InputError(f"manifest {text}: no rows")
    return items
