"""One video of a batch: ``run_item`` runs the recipe on it into ``OUT/<id>/`` and returns its row.

The same function runs in the local backend (in this process) and inside Ray tasks. Everything a
worker process loads once is kept in :data:`_WORKER`: the plugin registry and a pool of stage
instances, so a model's weights are loaded by the first video that needs them and reused by every
later video this process runs (``Stage.setup`` is still called each time; stages keep what they
loaded, see docs/batch.md).

A failure of the video itself (unreadable input, bad override, a stage error) is returned as a
``failed`` row with one line of error; only KeyboardInterrupt and the loss of the process escape.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Monst3rFWError
from . import location as loc
from .manifest import BatchItem

# Per-process state: kept between the videos one worker process runs.
_WORKER: dict[str, Any] = {"registry": None, "stages": {}, "videos": 0}


@dataclass(frozen=True)
class BatchSettings:
    """What every video of one batch shares (plain data: it travels to Ray workers).

    recipe: recipe path or name. out: OUT (local folder or URL). overrides: batch-wide ``--set``
    values (per-video ones come after them). evaluator: ``"module:function"`` called as
    ``function(result, item, **evaluator_options) -> dict`` for videos with ground truth, or None.
    staging: local folder for a URL output's exports before upload (default: under $TMPDIR).
    """

    recipe: str
    out: str
    overrides: tuple[str, ...] = ()
    device: Optional[str] = None
    evaluator: Optional[str] = None
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    staging: Optional[str] = None


def _registry() -> Any:
    if _WORKER["registry"] is None:
        from ..registry import build_registry

        _WORKER["registry"] = build_registry()
    return _WORKER["registry"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, Monst3rFWError) else f"{type(exc).__name__}: {text}"


def _load_evaluator(spec: str) -> Callable[..., dict[str, Any]]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _staging_dir(settings: BatchSettings, item_out: str) -> Path:
    """Local folder a URL output's exports are written to before upload (kept between runs)."""
    root = Path(settings.staging) if settings.staging else Path(tempfile.gettempdir()) / "monst3r-fw-batch"
    return root / hashlib.sha256(item_out.encode()).hexdigest()[:16]


def _fetch_export_markers(item_out: str, staging: Path) -> None:
    """Copy the remote exports' completion markers into ``staging`` so the runner sees them: an
    export whose marker key matches is reused (the key is its config and upstream keys), one
    whose key changed is rewritten and uploaded."""
    from ..runner import EXPORT_MARKER

    fs, path = loc.filesystem(item_out)
    try:
        markers = fs.glob(f"{path.rstrip('/')}/*/{EXPORT_MARKER}")
    except FileNotFoundError:
        return
    for remote in markers:
        folder = staging / Path(remote).parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / EXPORT_MARKER).write_bytes(fs.cat_file(remote))


def _upload(staging: Path, item_out: str, reports: list[Any], extra_files: tuple[str, ...]) -> None:
    """Upload what this run wrote: re-made export folders and the run's JSON/YAML files."""
    fs, path = loc.filesystem(item_out)
    base = path.rstrip("/")
    fresh = {r.label.split("(", 1)[1].rstrip(")") for r in reports if r.kind == "exporter" and not r.cached}
    for name in sorted(fresh):
        folder = staging / name
        if folder.is_dir():
            if fs.exists(f"{base}/{name}"):
                fs.rm(f"{base}/{name}", recursive=True)
            fs.put(str(folder), f"{base}/{name}", recursive=True)
    for name in extra_files:
        local = staging / name
        if local.is_file():
            fs.put_file(str(local), f"{base}/{name}")


def run_item(item: BatchItem, settings: BatchSettings, on_stage: Optional[Callable[[str], None]] = None,
             attempt: int = 1) -> dict[str, Any]:
    """Run one video into ``OUT/<id>/`` and return its batch row (JSON-able).

    Row keys: id, input, status (``complete`` | ``failed``), error, frames, stages (per stage:
    kind, label, seconds, cached), computed (labels of stages computed this time), metrics,
    seconds, attempt, worker (host:pid), videos_in_worker (how many this process has run).
    """
    from ..runner import run_pipeline
    from ..store import jsonable

    started = time.time()
    item_out = loc.join(settings.out, item.id)
    remote = loc.is_url(item_out)
    row: dict[str, Any] = {"id": item.id, "input": item.input, "status": "failed", "error": None, "frames": None,
                           "stages": [], "computed": [], "metrics": {}, "attempt": attempt,
                           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    _WORKER["videos"] += 1
    row["videos_in_worker"] = _WORKER["videos"]

    def log(msg: str) -> None:
        if on_stage is not None and msg.endswith(": running"):
            on_stage(msg[: -len(": running")])

    from ..locks import HEARTBEAT_S, LOCK_WAIT_S, STALE_S

    # A retry follows the death of the previous attempt's process, whose object-store lock goes
    # stale instead of away: wait for that rather than refuse (a local flock dies with its process).
    wait_token = LOCK_WAIT_S.set(STALE_S + 2 * HEARTBEAT_S) if attempt > 1 else None
    try:
        if remote:
            out_dir = _staging_dir(settings, item_out)
            out_dir.mkdir(parents=True, exist_ok=True)
            _fetch_export_markers(item_out, out_dir)
            store = loc.join(item_out, "store.zarr")
        else:
            out_dir, store = Path(item_out), None
        result = run_pipeline(settings.recipe, item.input, out_dir, overrides=[*settings.overrides, *item.overrides],
                              store=store, registry=_registry(), device=settings.device, log=log,
                              stage_pool=_WORKER["stages"])
        row["frames"] = int(result.frames.n_frames)
        row["stages"] = [{"kind": r.kind, "label": r.label, "seconds": round(r.seconds, 4), "cached": r.cached}
                         for r in result.reports]
        row["computed"] = result.computed
        if item.gt and settings.evaluator:
            if on_stage is not None:
                on_stage("metrics")
            try:
                row["metrics"] = jsonable(_load_evaluator(settings.evaluator)(result, item, **settings.evaluator_options))
            except Exception as exc:  # metrics are a report on the run, not the run: keep it complete
                row["metrics_error"] = _one_line(exc)
            loc.write_json(str(out_dir / "metrics.json"), row["metrics"]) if row["metrics"] else None
        if remote:
            _upload(out_dir, item_out, result.reports, ("run.json", "recipe.resolved.yaml", "metrics.json"))
        row["status"] = "complete"
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row["error"] = _one_line(exc)
        if remote:
            staging = _staging_dir(settings, item_out)
            try:
                _upload(staging, item_out, [], ("run.json",))
            except Exception:  # the row in batch.json carries the error either way
                pass
    finally:
        if wait_token is not None:
            LOCK_WAIT_S.reset(wait_token)
    row["seconds"] = round(time.time() - started, 3)
    return row
