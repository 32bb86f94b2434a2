"""The runner: resolves a recipe, then runs or reuses each stage through the store.

Order: frames -> flow_estimator -> pair_predictor -> pose_solver -> mask_builder -> global_aligner
-> exporters. A stage's cache key hashes its kind, type, version, config and the keys of exactly the
upstream outputs it reads, so changing one stage recomputes it and what depends on it, nothing else.
Outputs handed downstream are always read back from the store, so a run that reuses cached stages
computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

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
from .checks import check_finite, check_record
from .errors import InputError, Monst3rFWError, StageError
from .recipe import ResolvedRecipe, load_recipe
from .registry import Registry
from .stages import (
    AlignerInputs, CameraTrajectory, DynamicMasks, ExportInputs, ExportResult, FlowField, FlowInputs,
    FrameSet, MaskInputs, PairInputs, PairPredictions, PoseInputs, Reconstruction, RunContext, Stage,
    reconstruction_from_cameras,
)
from .store import RunStore, digest, stage_key

FRAMES_VERSION = "1"
EXPORT_MARKER = ".monst3r_fw_export.json"
RECORDS = {
    "flow_estimator": FlowField, "pair_predictor": PairPredictions, "pose_solver": CameraTrajectory,
    "mask_builder": DynamicMasks, "global_aligner": Reconstruction,
}
# Upstream outputs every implementation of a kind reads (``Stage.reads`` adds optional ones).
MANDATORY_READS: dict[str, frozenset[str]] = {
    "flow_estimator": frozenset({"frames", "pairs"}),
    "pair_predictor": frozenset({"frames", "pairs"}),
    "pose_solver": frozenset({"frames", "pair_predictor"}),
    "mask_builder": frozenset({"frames"}),
    "global_aligner": frozenset({"frames", "pair_predictor", "pose_solver"}),
    "exporter": frozenset({"frames", "pair_predictor", "pose_solver", "mask_builder", "global_aligner"}),
}


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


class Runner:
    """Runs one recipe on one input. Use :func:`run_pipeline` unless you need the pieces."""

    def __init__(self, recipe: ResolvedRecipe, registry: Registry, store: RunStore, out_dir: Path, *,
                 device: str = "cpu", progress_factory: Optional[Callable[[int, str], Any]] = None,
                 log: Callable[[str], None] = lambda msg: None,
                 stage_pool: Optional[dict[Any, Stage]] = None) -> None:
        self.recipe = recipe
        self.stage_pool = stage_pool
        self.registry = registry
        self.store = store
        self.out_dir = out_dir
        self.device = device
        self.progress_factory = progress_factory
        self.log = log
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.keys: dict[str, str] = {}
        self.reports: list[StageReport] = []

    # ------------------------------------------------------------------------------------ frames
    def load_frames(self, input_path: Union[str, Path]) -> FrameSet:
        from .video import load_frames, video_sha256

        cfg = self.recipe.input
        key = digest({"input": video_sha256(input_path), "config": cfg.model_dump(mode="json"),
                      "version": FRAMES_VERSION})
        self.keys["frames"] = key
        start = time.perf_counter()
        cached = self.store.is_complete("frames", key)
        if not cached:
            self.log("frames: running")
            self.store.begin("frames", key, {"kind": "frames", "source": str(input_path),
                                             "config": cfg.model_dump(mode="json")})
            frames = load_frames(input_path, long_edge=cfg.long_edge, num_frames=cfg.num_frames, stride=cfg.stride,
                                 fps=cfg.fps, start_frame=cfg.start_frame, square_ok=cfg.square_ok)
            check_record(frames, "frames")
            self.store.commit("frames", key, frames, time.perf_counter() - start)
        frames = self.store.load("frames", key, FrameSet)
        self._report("frames", "loader", key, cached, time.perf_counter() - start, "frames")
        return frames

    # ------------------------------------------------------------------------------------ stages
    def _upstream(self, cls: type[Stage], kind: str) -> dict[str, str]:
        reads = MANDATORY_READS[kind] | cls.reads
        return {name: self.keys.get(name, "disabled") for name in sorted(reads)}

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

    def run_stage(self, kind: str, make_inputs: Callable[[Stage], Any]) -> Any:
        """Run (or reuse) the configured stage of ``kind``; returns its record read from the store."""
        config = self.recipe.stages.get(kind)
        if config is None:
            self.keys[kind] = "disabled"
            return None
        entry = self.registry.get(kind, config.type)  # type: ignore[attr-defined]
        cls = entry.cls
        key = stage_key(cls, config, self._upstream(cls, kind))
        self.keys[kind] = key
        label = f"{kind} ({cls.name})"
        start = time.perf_counter()
        if self.store.is_complete(kind, key):
            record = self.store.load(kind, key, RECORDS[kind])
            self._report(kind, cls.name, key, True, time.perf_counter() - start, label)
            return record
        resumed = self.store.exists_incomplete(kind, key)
        if resumed:
            self.log(f"{label}: redoing an unfinished result from an interrupted run ({key})")
        workspace = self.store.begin(kind, key, {
            "kind": kind, "type": cls.name, "plugin": entry.plugin, "distribution": entry.distribution,
            "stage_version": cls.version, "config": config.model_dump(mode="json"),
            "upstream": self._upstream(cls, kind), "run_id": self.run_id,
        })
        self.log(f"{label}: running")
        stage = self._instance(cls, config)
        ctx = self._context(label, workspace)
        try:
            stage.setup(ctx)
            record = stage.run(make_inputs(stage), ctx)
        except Monst3rFWError:
            raise
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            raise StageError(f"{label} failed: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)") from exc
        if not isinstance(record, RECORDS[kind]):
            raise StageError(f"{label}: run() returned {type(record).__name__}, expected {RECORDS[kind].__name__}")
        dims = {"F": self.frames.n_frames, "H": self.frames.size_hw[0], "W": self.frames.size_hw[1]}
        check_record(record, label, dims)
        for name, arr in record.arrays().items():
            check_finite(f"{label}.{name}", arr)
        self.store.commit(kind, key, record, time.perf_counter() - start)
        out = self.store.load(kind, key, RECORDS[kind])
        self._report(kind, cls.name, key, False, time.perf_counter() - start, label, resumed)
        return out

    def run_exporters(self, inputs: ExportInputs) -> list[Path]:
        written: list[Path] = []
        used: dict[str, int] = {}
        for config in self.recipe.exporters:
            entry = self.registry.get("exporter", config.type)  # type: ignore[attr-defined]
            cls = entry.cls
            used[cls.name] = used.get(cls.name, 0) + 1
            folder_name = cls.name if used[cls.name] == 1 else f"{cls.name}_{used[cls.name]}"
            folder = self.out_dir / folder_name
            key = stage_key(cls, config, self._upstream(cls, "exporter"))
            label = f"exporter ({folder_name})"
            start = time.perf_counter()
            marker = folder / EXPORT_MARKER
            if marker.exists():
                try:
                    done = json.loads(marker.read_text()).get("key") == key
                except (OSError, ValueError):
                    done = False
                if done:
                    self._report("exporter", cls.name, key, True, time.perf_counter() - start, label)
                    written.append(folder)
                    continue
            tmp = self.out_dir / f".{folder_name}.partial-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.log(f"{label}: running")
            stage = self._instance(cls, config)
            ctx = self._context(label, None)
            info = dict(inputs.run_info)
            info["timings"] = {r.label: round(r.seconds, 4) for r in self.reports}
            info["stages"] = [dict(r.__dict__) for r in self.reports]  # cached / resumed flags for reports
            try:
                stage.setup(ctx)
                result = stage.run(ExportInputs(
                    frames=inputs.frames, reconstruction=inputs.reconstruction, out_dir=tmp, init=inputs.init,
                    masks=inputs.masks, predictions=inputs.predictions, run_info=info), ctx)
            except Monst3rFWError:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            except Exception as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise StageError(f"{label} failed: {type(exc).__name__}: {exc} (rerun with --verbose)") from exc
            files = list(result.files) if isinstance(result, ExportResult) else []
            (tmp / EXPORT_MARKER).write_text(json.dumps({"key": key, "type": cls.name, "files": files,
                                                         "run_id": self.run_id}, indent=2))
            if folder.exists():
                old = self.out_dir / f".{folder_name}.old-{os.getpid()}"
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
            written.append(folder)
            self._report("exporter", cls.name, key, False, time.perf_counter() - start, label)
        return written

    # ------------------------------------------------------------------------------------ whole run
    def run(self, input_path: Union[str, Path]) -> RunResult:
        from .scene_graph import make_pairs

        self.frames = frames = self.load_frames(input_path)
        if frames.n_frames < 2:
            raise InputError(f"{input_path}: only {frames.n_frames} frame after subsampling; MonST3R needs at least 2 "
                             "(lower --stride or raise --num-frames)")
        pairs_cfg = self.recipe.pairs
        pairs = np.asarray(make_pairs(frames.n_frames, pairs_cfg.scene_graph, symmetrize=pairs_cfg.symmetrize), np.int64)
        self.keys["pairs"] = digest(pairs.tobytes())
        edges = undirected_edges(pairs)

        flow = self.run_stage("flow_estimator", lambda s: FlowInputs(frames=frames, pairs=edges))
        pick = lambda s, kind, value: value if kind in s.reads else None  # noqa: E731
        preds = self.run_stage("pair_predictor", lambda s: PairInputs(
            frames=frames, pairs=pairs, flow=pick(s, "flow_estimator", flow)))
        init = self.run_stage("pose_solver", lambda s: PoseInputs(
            frames=frames, predictions=preds, flow=pick(s, "flow_estimator", flow)))
        masks = self.run_stage("mask_builder", lambda s: MaskInputs(
            frames=frames, predictions=pick(s, "pair_predictor", preds), cameras=pick(s, "pose_solver", init),
            flow=pick(s, "flow_estimator", flow)))
        recon = self.run_stage("global_aligner", lambda s: AlignerInputs(
            frames=frames, predictions=preds, init=init, flow=pick(s, "flow_estimator", flow),
            masks=pick(s, "mask_builder", masks)))
        if recon is None:
            recon = reconstruction_from_cameras(frames, init, masks)
        # say what was skipped or looks wrong: one line per notice at the end of the run (CLI) and in
        # summary.json (run_info.notices), also when the records come from the cache
        notices = [n for rec in (masks, recon) if rec is not None for n in getattr(rec, "notices", ())]
        run_info = {"run_id": self.run_id, "config_hash": self.recipe.digest(), "recipe": self.recipe.to_dict(),
                    "keys": dict(self.keys), "notices": notices,
                    "n_frames": frames.n_frames, "size_hw": list(frames.size_hw), "source": frames.source}
        self.run_exporters(ExportInputs(frames=frames, reconstruction=recon, out_dir=self.out_dir, init=init,
                                        masks=masks, predictions=preds, run_info=run_info))
        return RunResult(self.run_id, self.out_dir, self.store.location, self.recipe, frames, recon, self.reports,
                         notices)


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


def run_pipeline(recipe: Union[str, Path], input_path: Union[str, Path], out_dir: Union[str, Path], *,
                 overrides: Optional[list[str]] = None, store: Optional[str] = None,
                 registry: Optional[Registry] = None, device: Optional[str] = None,
                 progress_factory: Optional[Callable[[int, str], Any]] = None,
                 log: Callable[[str], None] = lambda msg: None,
                 stage_pool: Optional[dict[Any, Stage]] = None) -> RunResult:
    """Run ``recipe`` on ``input_path``, writing ``out_dir`` (and ``out_dir/store.zarr`` unless ``store``).

    ``out_dir/run.json`` says ``"status": "complete"`` only once every stage and exporter finished;
    the resolved recipe is written to ``out_dir/recipe.resolved.yaml``. ``stage_pool``: a dict kept
    by the caller across runs (batch workers) to reuse stage objects and the weights they loaded.
    """
    resolved, registry = load_recipe(recipe, registry=registry, overrides=overrides)
    input_path = str(input_path)
    if "://" not in input_path and not Path(input_path).exists():
        raise InputError(f"input {input_path} does not exist; pass a video file (mp4, mov, avi, mkv, webm) or a folder of images")
    out = Path(out_dir)
    _ensure_out_dir(out)
    dev = choose_device(device or resolved.model.device)
    store_location = store or str(out / "store.zarr")
    (out / "recipe.resolved.yaml").write_text(resolved.to_yaml())
    status_path = out / "run.json"
    started = time.time()
    with RunStore(store_location) as run_store:
        runner = Runner(resolved, registry, run_store, out, device=dev, progress_factory=progress_factory, log=log,
                        stage_pool=stage_pool)
        base = {"run_id": runner.run_id, "input": input_path, "store": store_location, "recipe": str(recipe),
                "device": dev, "started": started}
        _write_json_atomic(status_path, {**base, "status": "running"})
        run_store.write_run(runner.run_id, {**base, "recipe_resolved": resolved.to_dict(),
                                            "versions": versions(registry), "status": "running"})
        try:
            result = runner.run(input_path)
        except BaseException as exc:
            failure = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "stages": [r.__dict__ for r in runner.reports]}
            _write_json_atomic(status_path, failure)
            run_store.write_run(runner.run_id, {"status": "failed", "error": failure["error"]})
            raise
        stages = [r.__dict__ for r in runner.reports]
        run_store.write_run(runner.run_id, {"status": "complete", "finished": time.time(), "stages": stages,
                                            "keys": runner.keys})
        _write_json_atomic(status_path, {**base, "status": "complete", "finished": time.time(),
                                         "seconds": time.time() - started, "stages": stages})
    return result
