"""The runner: resolves a recipe, then runs or reuses each stage through the store.

Order: frames -> flow_estimator -> pair_predictor -> pose_solver -> mask_builder -> global_aligner
-> exporters. A stage's cache key hashes its kind, type, version, config and the keys of exactly the
upstream outputs it reads, so changing one stage recomputes it and what depends on it, nothing else.
Outputs handed downstream are always read back from the store, so a run that reuses cached stages
computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import secrets
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from . import __version__
from .checks import check_record
from .errors import DiskFullError, InputError, Interrupted, Monst3rFWError, StageError, StoreError
from .recipe import ResolvedRecipe, load_recipe
from .registry import Registry
from .stages import (
    STAGE_BASES, STAGE_KINDS, ExportInputs, ExportResult, FrameSet, Reconstruction, RunContext, Stage,
    reconstruction_from_cameras,
)
from .store import RunStore, digest, stage_key

FRAMES_VERSION = "1"
#: Marks a folder an exporter wrote (and therefore owns): only marked folders are ever replaced.
EXPORT_MARKER = ".monst3r_fw_export.json"
#: Marks an exporter's staging folder, so a later run removes only staging folders it made.
STAGING_MARKER = ".monst3r_fw_staging"
#: flock'ed in --out for the whole run: one run per output folder at a time.
OUT_LOCK = ".monst3r_fw_out.lock"
#: Stage kinds run one after another, in this order (exporters last, separately).
PIPELINE_KINDS = tuple(k for k in STAGE_KINDS if k != "exporter")


@dataclass
class StageReport:
    """What happened to one stage in one run."""

    kind: str
    type: str
    key: str
    cached: bool
    seconds: float
    label: str = ""
    resumed: bool = False


@dataclass
class RunResult:
    run_id: str
    out_dir: Path
    store_location: str
    recipe: ResolvedRecipe
    frames: FrameSet
    reconstruction: Reconstruction
    reports: list[StageReport] = field(default_factory=list)
    #: one-line messages of the stages (``notices`` of their records), shown at the end of a run
    notices: list[str] = field(default_factory=list)
    #: bytes this run's results take in the store per kind (``frames`` included) and ``total``; {}
    #: on remote stores
    store_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def store_mib_per_frame(self) -> dict[str, float]:
        n = max(self.frames.n_frames, 1)
        return {kind: round(b / 2**20 / n, 4) for kind, b in self.store_bytes.items()}

    @property
    def computed(self) -> list[str]:
        return [r.label for r in self.reports if not r.cached]


def choose_device(setting: str) -> str:
    if setting != "auto":
        if setting.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise InputError(f"device {setting!r} requested but CUDA is not available; use --device cpu")
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def undirected_edges(pairs: np.ndarray) -> np.ndarray:
    """(P, 2) directed pairs -> (E, 2) unique (i < j) edges, self-pairs dropped (flow is per edge)."""
    pairs = np.asarray(pairs, np.int64)
    edges = np.sort(pairs, axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if len(edges) == 0:
        return np.zeros((0, 2), np.int64)
    return np.unique(edges, axis=0)


def _ensure_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder {out_dir} is not writable ({exc.strerror or exc}); choose another --out") from None


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def publish_export(out_dir: Path, folder_name: str, write: Callable[[Path], list[str]], marker: dict[str, Any]) -> Path:
    """Atomically (re)place ``out_dir/folder_name``: ``write(staging)`` fills a hidden staging folder
    and returns the files it wrote; the folder is marked (EXPORT_MARKER) and renamed into place.
    An interruption leaves the previous complete folder (or none) and no staging folder. The one
    place that makes export folders atomic; callers check ownership first (check_export_folders).
    """
    folder = out_dir / folder_name
    tmp = out_dir / f".{folder_name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / STAGING_MARKER).write_text("")
    try:
        files = write(tmp)
        (tmp / STAGING_MARKER).unlink()
        (tmp / EXPORT_MARKER).write_text(json.dumps({**marker, "files": files}, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        old = out_dir / f".{folder_name}.old-{os.getpid()}"
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


class Runner:
    """Runs one recipe on one input. Use :func:`run_pipeline` unless you need the pieces."""

    def __init__(self, recipe: ResolvedRecipe, registry: Registry, store: RunStore, out_dir: Path, *,
                 device: str = "cpu", progress_factory: Optional[Callable[[int, str], Any]] = None,
                 log: Callable[[str], None] = lambda msg: None, recompute: tuple[str, ...] = (),
                 input_path: Optional[Union[str, Path]] = None, stage_pool: Optional[dict[Any, Stage]] = None) -> None:
        from .fingerprint import Fingerprints

        self.recipe = recipe
        self.stage_pool = stage_pool
        #: stage kinds ("frames", "exporter" included) recomputed even when a complete result exists
        self.recompute = frozenset(recompute)
        self.input_path = input_path
        self.fingerprints = Fingerprints(Path(store.location) / ".monst3r_fw_fingerprints.json" if store.is_local else None)
        self.registry = registry
        self.store = store
        self.out_dir = out_dir
        self.device = device
        self.progress_factory = progress_factory
        self.log = log
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.keys: dict[str, str] = {}
        #: what stage inputs are built from: "frames", "pairs", "edges", each stage kind's record
        self.values: dict[str, Any] = {}
        self.reports: list[StageReport] = []

    # ------------------------------------------------------------------------------------ frames
    def load_frames(self, input_path: Union[str, Path]) -> FrameSet:
        from .video import load_frames, video_sha256

        cfg = self.recipe.input
        local = "://" not in str(input_path)
        # the input's sha256 (video_sha256's folder rules), re-hashed only when a file's size/mtime changed
        content = (self.fingerprints.of_path(input_path, hasher=video_sha256)["sha256"] if local
                   else video_sha256(input_path))
        key = digest({"input": content, "config": cfg.model_dump(mode="json"), "version": FRAMES_VERSION})
        self.keys["frames"] = key
        start = time.perf_counter()
        cached = self._reusable("frames", key, "frames")
        if not cached:
            self.log("frames: running")
            workspace = self.store.begin("frames", key, {"kind": "frames", "source": str(input_path),
                                                         "config": cfg.model_dump(mode="json")}, FrameSet)
            # decoded straight into the store workspace, one frame at a time (adopted at commit)
            frames = load_frames(input_path, long_edge=cfg.long_edge, num_frames=cfg.num_frames, stride=cfg.stride,
                                 fps=cfg.fps, start_frame=cfg.start_frame, square_ok=cfg.square_ok,
                                 allocate=lambda shape: workspace.array("rgb", shape, np.uint8))
            check_record(frames, "frames")
            self.store.commit("frames", key, frames, time.perf_counter() - start)
        frames = self.store.load("frames", key, FrameSet)
        self._report("frames", "loader", key, cached, time.perf_counter() - start, "frames")
        return frames

    # ------------------------------------------------------------------------------------ stages
    def _upstream(self, cls: type[Stage]) -> dict[str, str]:
        upstream = {name: self.keys.get(name, "disabled") for name in sorted(cls.upstream_names())}
        if self._compact_dtype(cls) is not None:  # float16 storage changes what downstream stages read
            upstream["storage.float_dtype"] = self.recipe.storage.float_dtype
        return upstream

    def _compact_dtype(self, cls: type[Stage]) -> Optional[str]:
        """The recipe's ``storage.float_dtype`` when it shrinks this stage's record (None: float32, the
        stage's own dtypes; keys then stay what they were before the storage section existed)."""
        base = STAGE_BASES.get(cls.kind)
        record = getattr(base, "output_record", None)
        dtype = self.recipe.storage.float_dtype
        return dtype if dtype != "float32" and record is not None and record.COMPACT else None

    def _planned_key(self, kind: str) -> Optional[str]:
        """The key ``kind`` gets from the keys known so far (None: disabled)."""
        config = self.recipe.stages.get(kind)
        if config is None:
            return None
        cls = self.registry.get(kind, config.type).cls  # type: ignore[attr-defined]
        return stage_key(cls, config, self._upstream(cls), self._files(config, f"{kind} ({cls.name})"))

    def _is_dropped(self, kind: str, key: str) -> bool:
        """A complete result whose arrays ``storage.drop_pair_predictions`` deleted (a damaged group is
        not: ``_reusable`` reports it)."""
        try:
            return self.store.is_complete(kind, key) and bool(self.store.stage_attrs(kind, key).get("dropped"))
        except Exception:
            return False

    def _dropped_enough(self, kind: str) -> bool:
        """Whether every later stage that reads ``kind`` is complete in the store, so its dropped arrays
        are not needed by this run (checked with the keys those stages will get)."""
        saved = dict(self.keys)
        try:
            for later in PIPELINE_KINDS[PIPELINE_KINDS.index(kind) + 1:]:
                key = self._planned_key(later)
                self.keys[later] = key or "disabled"
                if key is None:
                    continue
                cls = self.registry.get(later, self.recipe.stages[later].type).cls  # type: ignore[attr-defined]
                if kind in cls.upstream_names() and not self.store.is_complete(later, key):
                    return False
            return True
        finally:
            self.keys = saved

    def drop_pair_predictions(self) -> None:
        """``storage.drop_pair_predictions``: delete this run's pair pointmaps and confidences once every
        stage has consumed them (the group stays complete, with its pairs and ``dropped: true``)."""
        key = self.keys.get("pair_predictor")
        if key in (None, "disabled") or not self.store.is_complete("pair_predictor", key):
            return
        if self.store.stage_attrs("pair_predictor", key).get("dropped"):
            return
        freed = self.store.drop_arrays("pair_predictor", key, keep=("pairs",))
        self.log(f"pair_predictor: dropped the pair predictions {key} ({max(freed, 0) / 2**20:.1f} MiB freed; "
                 "storage.drop_pair_predictions)")

    def store_bytes(self) -> dict[str, int]:
        """Bytes this run's results take in a local store, per kind (frames included), and ``total``."""
        if not self.store.is_local:
            return {}
        out = {kind: self.store.disk_bytes(kind, key) for kind, key in self.keys.items()
               if kind in ("frames",) + PIPELINE_KINDS and key != "disabled" and self.store.exists(kind, key)}
        out["total"] = sum(out.values())
        return out

    def _reusable(self, kind: str, key: str, label: str) -> bool:
        """True when a complete, intact result exists; drops it first under --recompute; a damaged
        one is reported by name (never read as zeros)."""
        if kind in self.recompute and self.store.exists(kind, key):
            self.log(f"{label}: --recompute {kind}: dropping the stored result {key}")
            self.store.delete(kind, key)
            return False
        if not self.store.is_complete(kind, key):
            return False
        problems = self.store.verify(kind, key)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StoreError(f"{label}: the stored result {key} in {self.store.location} is damaged: {problems[0]}{more}; "
                             f"rerun with --recompute {kind} (or `monst3r-fw store rm {self.store.location} {kind}/{key}`)")
        return True

    def _inputs(self, cls: type[Stage], label: str, extra: Optional[dict[str, Any]] = None) -> Any:
        """Build ``cls.inputs_type`` from the sources its fields declare (see stages.upstream)."""
        import dataclasses

        values = {**self.values, **(extra or {})}
        kwargs: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls.inputs_type)}
        for name, source in cls.input_sources().items():
            value = values.get(source)
            f = fields[name]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if value is None:
                if required:
                    raise StageError(f"{label}: needs the output of {source}, which is disabled in the recipe; enable it")
                continue
            kwargs[name] = value
        return cls.inputs_type(**kwargs)

    def _files(self, config: Any, label: str) -> dict[str, Any]:
        """Content fingerprints of the files ``config`` points to (its InputFile fields)."""
        try:
            return self.fingerprints.of_config(config)
        except OSError as exc:
            raise InputError(f"{label}: cannot read {exc.filename} to fingerprint it ({exc.strerror}); check the path") from None

    def _disk_full(self, exc: OSError, kind: str, key: str, needed: int) -> DiskFullError:
        """Remove the stage's unfinished workspace (the space it took) and say what is needed."""
        where = exc.filename or self.store.location
        try:
            self.store.delete(kind, key)
        except Exception:  # the one-line report matters more than the cleanup
            pass
        free = shutil.disk_usage(self.store.location if self.store.is_local else self.out_dir).free
        need = f"about {needed / 2**30:.2f} GiB (uncompressed)" if needed else "more"
        return DiskFullError(f"disk full writing {where}: {kind} needs {need}, {free / 2**30:.2f} GiB free; free space or "
                             f"choose another --out/--store, then rerun (completed stages are kept)")

    def export_folders(self) -> list[tuple[Any, type[Stage], str, Path]]:
        """(config, class, folder name, folder) of every exporter, in recipe order."""
        out = []
        used: dict[str, int] = {}
        for config in self.recipe.exporters:
            cls = self.registry.get("exporter", config.type).cls  # type: ignore[attr-defined]
            used[cls.name] = used.get(cls.name, 0) + 1
            name = cls.name if used[cls.name] == 1 else f"{cls.name}_{used[cls.name]}"
            out.append((config, cls, name, self.out_dir / name))
        return out

    def check_export_folders(self) -> None:
        """Refuse, before any work, to replace a folder the project did not write or one that holds
        the input or the store."""
        protected = [(Path(p).expanduser().resolve(), what) for p, what in
                     ((self.input_path, "the input"), (self.store.location if self.store.is_local else None, "the store"))
                     if p is not None and "://" not in str(p)]
        for _, cls, name, folder in self.export_folders():
            resolved = folder.resolve()
            for path, what in protected:
                if path == resolved or resolved in path.parents:
                    raise InputError(f"{what} {path} is inside {folder}, which the {cls.name} exporter writes; "
                                     "choose another --out (nothing was changed)")
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise InputError(f"{folder} exists and is not a folder monst3r-fw wrote; move it away or choose "
                                 "another --out (nothing was changed)")
            if folder.is_dir() and not (folder / EXPORT_MARKER).is_file() and any(folder.iterdir()):
                raise InputError(f"{folder} holds files monst3r-fw did not write (no {EXPORT_MARKER}); move them "
                                 f"away or choose another --out (nothing was changed)")

    def _report(self, kind: str, type_name: str, key: str, cached: bool, seconds: float, label: str,
                resumed: bool = False) -> None:
        self.reports.append(StageReport(kind, type_name, key, cached, seconds, label, resumed))
        verb = "reusing" if cached else ("resumed" if resumed else "computed")
        self.log(f"{label}: {verb} {key} ({seconds:.2f} s)")
        try:
            self.registry.pm.hook.monst3r_fw_stage_committed(run_id=self.run_id, kind=kind, key=key, cached=cached)
        except Exception as exc:  # a listener must not break a run
            self.log(f"hook monst3r_fw_stage_committed failed: {exc}")

    def _instance(self, cls: type[Stage], config: Any) -> Stage:
        """A stage object; with a ``stage_pool`` (batch workers) one per (class, config, device) for the
        whole process, so weights loaded in ``setup`` are loaded once, not once per video."""
        if self.stage_pool is None:
            return cls(config)
        key = (cls, json.dumps(config.model_dump(mode="json"), sort_keys=True), self.device)
        stage = self.stage_pool.get(key)
        if stage is None:
            stage = self.stage_pool[key] = cls(config)
        return stage

    def _context(self, label: str, workspace: Any) -> RunContext:
        return RunContext(device=self.device, workspace=workspace, progress_factory=self.progress_factory,
                          log=self.log, seed=self.recipe.model.seed, stage_label=label)

    def run_stage(self, kind: str) -> Any:
        """Run (or reuse) the configured stage of ``kind``; returns its record read from the store
        (also kept in ``self.values[kind]``)."""
        config = self.recipe.stages.get(kind)
        if config is None:
            self.keys[kind] = "disabled"
            self.values[kind] = None
            return None
        entry = self.registry.get(kind, config.type)  # type: ignore[attr-defined]
        cls = entry.cls
        record_cls = STAGE_BASES[kind].output_record
        label = f"{kind} ({cls.name})"
        files = self._files(config, label)
        key = stage_key(cls, config, self._upstream(cls), files)
        self.keys[kind] = key
        start = time.perf_counter()
        if kind not in self.recompute and self._is_dropped(kind, key):
            if self._dropped_enough(kind):
                self._report(kind, cls.name, key, True, time.perf_counter() - start, label + " [dropped]")
                self.values[kind] = None  # nothing later reads it in this run; exporters get None
                return None
            self.log(f"{label}: recomputing the dropped result {key} (a stage that reads it must run)")
            self.store.delete(kind, key)
        if self._reusable(kind, key, label):
            record = self.store.load(kind, key, record_cls)
            self._report(kind, cls.name, key, True, time.perf_counter() - start, label)
            self.values[kind] = record
            return record
        resumed = self.store.exists_incomplete(kind, key)
        if resumed:
            self.log(f"{label}: redoing an unfinished result from an interrupted run ({key})")
        workspace = self.store.begin(kind, key, {
            "kind": kind, "type": cls.name, "plugin": entry.plugin, "distribution": entry.distribution,
            "stage_version": cls.version, "config": config.model_dump(mode="json"),
            "upstream": self._upstream(cls), "files": files, "run_id": self.run_id,
        }, record=record_cls, label=label)
        workspace.compact_dtype = self._compact_dtype(cls)
        self.log(f"{label}: running")
        stage = self._instance(cls, config)
        ctx = self._context(label, workspace)
        try:
            stage.setup(ctx)
            record = stage.run(self._inputs(cls, label), ctx)
        except Monst3rFWError:
            raise
        except (KeyboardInterrupt, MemoryError):
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full(exc, kind, key, workspace.planned_bytes) from None
            raise StageError(f"{label} failed: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)") from exc
        except Exception as exc:
            raise StageError(f"{label} failed: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)") from exc
        if not isinstance(record, record_cls):
            raise StageError(f"{label}: run() returned {type(record).__name__}, expected {record_cls.__name__}")
        dims = {"F": self.frames.n_frames, "H": self.frames.size_hw[0], "W": self.frames.size_hw[1]}
        check_record(record, label, dims)
        try:
            self.store.commit(kind, key, record, time.perf_counter() - start, label=label,
                              compact_dtype=self._compact_dtype(cls))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full(exc, kind, key, workspace.planned_bytes) from None
            raise
        out = self.store.load(kind, key, record_cls)
        self._report(kind, cls.name, key, False, time.perf_counter() - start, label, resumed)
        self.values[kind] = out
        return out

    def run_exporters(self, run_info: dict[str, Any]) -> list[Path]:
        """Run each exporter into a hidden staging folder and move it into place when complete: the
        one place that makes export folders atomic (an interrupted export leaves the previous
        complete folder, or none, plus a staging folder the next run removes). Only folders marked
        with EXPORT_MARKER are replaced (check_export_folders)."""
        written: list[Path] = []
        for stale in self.out_dir.glob(".*.partial-*"):
            if stale.is_dir() and (stale / STAGING_MARKER).exists():
                shutil.rmtree(stale, ignore_errors=True)
        self.check_export_folders()
        for config, cls, folder_name, folder in self.export_folders():
            key = stage_key(cls, config, self._upstream(cls), self._files(config, f"exporter ({folder_name})"))
            label = f"exporter ({folder_name})"
            start = time.perf_counter()
            marker = folder / EXPORT_MARKER
            if marker.exists() and "exporter" not in self.recompute:
                try:
                    done = json.loads(marker.read_text()).get("key") == key
                except (OSError, ValueError):
                    done = False
                if done:
                    self._report("exporter", cls.name, key, True, time.perf_counter() - start, label)
                    written.append(folder)
                    continue
            self.log(f"{label}: running")
            stage = self._instance(cls, config)
            ctx = self._context(label, None)
            info = dict(run_info)
            info["timings"] = {r.label: round(r.seconds, 4) for r in self.reports}
            info["stages"] = [dict(r.__dict__) for r in self.reports]  # cached / resumed flags for reports

            def write(tmp: Path) -> list[str]:
                stage.setup(ctx)
                result = stage.run(self._inputs(cls, label, {"out_dir": tmp, "run_info": info}), ctx)
                return list(result.files) if isinstance(result, ExportResult) else []

            try:
                publish_export(self.out_dir, folder_name, write, {"key": key, "type": cls.name, "run_id": self.run_id})
            except BaseException as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    free = shutil.disk_usage(self.out_dir).free
                    raise DiskFullError(f"disk full writing {exc.filename or folder} ({label}): {free / 2**30:.2f} GiB free; "
                                        "free space or choose another --out, then rerun") from None
                if isinstance(exc, (Monst3rFWError, KeyboardInterrupt, MemoryError)) or not isinstance(exc, Exception):
                    raise
                raise StageError(f"{label} failed: {type(exc).__name__}: {exc} (rerun with --verbose)") from exc
            written.append(folder)
            self._report("exporter", cls.name, key, False, time.perf_counter() - start, label)
        return written

    # ------------------------------------------------------------------------------------ whole run
    def run(self, input_path: Union[str, Path]) -> RunResult:
        from .scene_graph import make_pairs

        self.input_path = input_path
        self.check_export_folders()
        self.frames = frames = self.load_frames(input_path)
        if frames.n_frames < 2:
            raise InputError(f"{input_path}: only {frames.n_frames} frame after subsampling; MonST3R needs at least 2 "
                             "(lower --stride or raise --num-frames)")
        pairs_cfg = self.recipe.pairs
        pairs = np.asarray(make_pairs(frames.n_frames, pairs_cfg.scene_graph, symmetrize=pairs_cfg.symmetrize), np.int64)
        self.keys["pairs"] = digest(pairs.tobytes())
        self.values.update(frames=frames, pairs=pairs, edges=undirected_edges(pairs))
        for kind in PIPELINE_KINDS:
            self.run_stage(kind)
        recon = self.values["global_aligner"]
        if recon is None:
            recon = reconstruction_from_cameras(frames, self.values["pose_solver"], self.values["mask_builder"])
            self.values["global_aligner"] = recon
        masks = self.values["mask_builder"]
        # say what was skipped or looks wrong: one line per notice at the end of the run (CLI) and in
        # summary.json (run_info.notices), also when the records come from the cache
        notices = [n for rec in (masks, recon) if rec is not None for n in getattr(rec, "notices", ())]
        run_info = {"run_id": self.run_id, "config_hash": self.recipe.digest(), "recipe": self.recipe.to_dict(),
                    "keys": dict(self.keys), "notices": notices,
                    "n_frames": frames.n_frames, "size_hw": list(frames.size_hw), "source": frames.source}
        self.run_exporters(run_info)
        if self.recipe.storage.drop_pair_predictions:
            self.drop_pair_predictions()
        return RunResult(self.run_id, self.out_dir, self.store.location, self.recipe, frames, recon, self.reports,
                         notices, self.store_bytes())


def versions(registry: Registry) -> dict[str, str]:
    import importlib.metadata as md

    out = {"monst3r-fw": __version__, "python": platform.python_version()}
    for mod in ("torch", "numpy", "zarr", "opencv-python-headless"):
        try:
            out[mod] = md.version(mod)
        except md.PackageNotFoundError:
            pass
    for entry in registry.entries.values():
        out.setdefault(f"plugin:{entry.plugin}", entry.distribution)
    return out


class OutLock:
    """flock on ``OUT/.monst3r_fw_out.lock`` for a whole run: a second run on the same --out (with
    any store) is refused while the first is alive; the kernel drops it when a process dies."""

    def __init__(self, out: Path) -> None:
        import fcntl

        self.path = out / OUT_LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise InputError(f"output folder {out} is in use by another run (pid {holder}); wait for it to finish "
                             "or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _status_of(exc: BaseException) -> tuple[str, str]:
    """("interrupted" | "failed", reason) for an exception that ended a run."""
    if isinstance(exc, Interrupted):
        return "interrupted", f"stopped by {exc.signal_name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "stopped by Ctrl-C (SIGINT)"
    if isinstance(exc, Monst3rFWError):
        return "failed", str(exc)
    return "failed", f"{type(exc).__name__}: {exc}"


def _previous_run(status_path: Path) -> Optional[dict[str, Any]]:
    """The run.json left by a run that never finished (its process is gone: we hold the out lock)."""
    try:
        previous = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("status") != "running":
        return None
    return previous


def run_pipeline(recipe: Union[str, Path], input_path: Union[str, Path], out_dir: Union[str, Path], *,
                 overrides: Optional[list[str]] = None, store: Optional[str] = None,
                 registry: Optional[Registry] = None, device: Optional[str] = None,
                 progress_factory: Optional[Callable[[int, str], Any]] = None,
                 log: Callable[[str], None] = lambda msg: None, recompute: tuple[str, ...] = (),
                 stage_pool: Optional[dict[Any, Stage]] = None) -> RunResult:
    """Run ``recipe`` on ``input_path``, writing ``out_dir`` (and ``out_dir/store.zarr`` unless ``store``).

    ``out_dir/run.json`` says ``"status": "complete"`` only once every stage and exporter finished,
    ``failed`` or ``interrupted`` with a ``reason`` on every other exit a process can observe; a
    ``running`` left by a process that died (SIGKILL, segfault, power loss) is reported by the next
    run on that folder and kept in its run.json as ``previous``. One run per ``out_dir`` at a time.
    ``recompute``: stage kinds (or ``frames``, ``exporter``) to recompute even when stored.
    ``stage_pool``: a dict kept by the caller across runs (batch workers) to reuse stage objects and
    the weights they loaded.
    """
    resolved, registry = load_recipe(recipe, registry=registry, overrides=overrides)
    unknown = sorted(set(recompute) - set(STAGE_KINDS) - {"frames"})
    if unknown:
        raise InputError(f"--recompute {', '.join(unknown)}: not a stage kind; choose from frames, {', '.join(STAGE_KINDS)}")
    input_path = str(input_path)
    if "://" not in input_path and not Path(input_path).exists():
        raise InputError(f"input {input_path} does not exist; pass a video file (mp4, mov, avi, mkv, webm) or a folder of images")
    out = Path(out_dir)
    _ensure_out_dir(out)
    lock = OutLock(out)
    try:
        return _run_locked(resolved, registry, recipe, input_path, out, store, device, progress_factory, log, recompute,
                           stage_pool)
    finally:
        lock.release()


def _run_locked(resolved: ResolvedRecipe, registry: Registry, recipe: Union[str, Path], input_path: str, out: Path,
                store: Optional[str], device: Optional[str], progress_factory: Optional[Callable[[int, str], Any]],
                log: Callable[[str], None], recompute: tuple[str, ...],
                stage_pool: Optional[dict[Any, Stage]]) -> RunResult:
    dev = choose_device(device or resolved.model.device)
    store_location = store or str(out / "store.zarr")
    status_path = out / "run.json"
    previous = _previous_run(status_path)
    started = time.time()
    with RunStore(store_location) as run_store:
        if previous is not None:
            log(f"previous run {previous.get('run_id')} (pid {previous.get('pid', '?')}) on {out} ended without "
                "finishing (its process is gone: killed or crashed); resuming from its completed stages")
            if previous.get("store") == store_location and previous.get("run_id"):
                try:
                    run_store.write_run(str(previous["run_id"]), {"status": "abandoned",
                                                                  "reason": "process ended without finishing"})
                except Exception:  # reporting it matters more than recording it in the store
                    pass
        (out / "recipe.resolved.yaml").write_text(resolved.to_yaml())
        runner = Runner(resolved, registry, run_store, out, device=dev, progress_factory=progress_factory, log=log,
                        recompute=tuple(recompute), input_path=input_path, stage_pool=stage_pool)
        base: dict[str, Any] = {"run_id": runner.run_id, "pid": os.getpid(), "input": input_path, "store": store_location,
                                "recipe": str(recipe), "device": dev, "started": started}
        if previous is not None:
            base["previous"] = {"run_id": previous.get("run_id"), "pid": previous.get("pid"), "status": "abandoned",
                                "reason": "process ended without finishing (killed or crashed)"}
        _write_json_atomic(status_path, {**base, "status": "running"})
        run_store.write_run(runner.run_id, {**base, "recipe_resolved": resolved.to_dict(),
                                            "versions": versions(registry), "status": "running"})
        try:
            result = runner.run(input_path)
        except BaseException as exc:
            status, reason = _status_of(exc)
            failure = {**base, "status": status, "reason": reason, "error": f"{type(exc).__name__}: {exc}",
                       "finished": time.time(), "stages": [r.__dict__ for r in runner.reports]}
            try:
                _write_json_atomic(status_path, failure)
                run_store.write_run(runner.run_id, {"status": status, "reason": reason})
            except OSError:  # e.g. the disk is full: the original error is the one to report
                pass
            raise
        stages = [r.__dict__ for r in runner.reports]
        run_store.write_run(runner.run_id, {"status": "complete", "finished": time.time(), "stages": stages,
                                            "keys": runner.keys})
        _write_json_atomic(status_path, {**base, "status": "complete", "finished": time.time(),
                                         "seconds": time.time() - started, "stages": stages,
                                         "store_mib_per_frame": result.store_mib_per_frame})
    return result
