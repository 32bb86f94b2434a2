"""Stage interfaces: the typed records that cross stage boundaries and one base class per stage kind.

Conventions (stated once, used everywhere):

* Cameras are OpenCV: x right, y down, z forward. Poses are **camera-to-world** 4x4 float64 matrices
  named ``world_from_cam``; a point ``X_cam`` maps to ``world_from_cam @ [X_cam, 1]``.
* Pixel coordinates are ``(x, y)`` = (column, row); integer coordinates are pixel centres.
* Depth is the z coordinate in the camera frame (not the ray length).
* Intrinsics are 3x3 pixel matrices at **network resolution** (the size of ``FrameSet.rgb``);
  ``FrameSet.network_from_original`` maps original pixel coordinates to network ones, so
  ``K_original = inv(network_from_original) @ K_network``.
* Pair predictions follow DUSt3R: for a directed pair (i, j), both pointmaps are expressed in the
  camera frame of view i, each at its own time.

Every array field is listed in the record's ``DIMS`` with named axes; the runner checks them with
:func:`monst3r_framework.checks.check_record` at every stage boundary, and the store writes them with
those dimension names. Arrays may be numpy arrays or lazy Zarr arrays: both slice the same way, so a
stage that only needs a window of frames can slice without loading everything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Iterator, Literal, Optional, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

ArrayLike = Any  # numpy.ndarray or zarr.Array; both support shape, dtype, ndim and slicing.


def read_rows(array: ArrayLike, rows: Any) -> np.ndarray:
    """Rows ``rows`` of a numpy or stored array (any order, repeats allowed) as one numpy array.

    A stored array is read one slice per run of consecutive rows, so a chunk of neighbouring pairs
    or frames costs one store round trip, not one per row.

    Args:
        array: (N, ...) numpy, ``LazyArray``, ``OutputArray`` or Zarr array.
        rows: (Q,) int row indices (negative counts from the end).
    Returns:
        (Q, ...) numpy array in the array's read dtype.
    """
    idx = np.asarray(rows, np.int64).reshape(-1)
    if isinstance(array, np.ndarray):
        return array[idx]
    n = len(array)
    idx = np.where(idx < 0, idx + n, idx)
    if len(idx) == 0:
        return np.zeros((0,) + tuple(array.shape[1:]), np.dtype(array.dtype))
    uniq, inverse = np.unique(idx, return_inverse=True)
    breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
    parts = [np.asarray(array[int(run[0]):int(run[-1]) + 1]) for run in np.split(uniq, breaks)]
    return np.concatenate(parts, axis=0)[inverse.reshape(-1)]


StageKind = Literal[
    "flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner", "exporter"
]
#: Execution order of the stage kinds; exporters run last, in recipe order.
STAGE_KINDS: tuple[StageKind, ...] = (
    "flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner", "exporter"
)
#: Kinds a recipe may switch off with ``enabled: false``.
OPTIONAL_KINDS: frozenset[str] = frozenset({"flow_estimator", "mask_builder", "global_aligner", "exporter"})


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


class Record:
    """Mixin for the frozen dataclasses that cross stage boundaries.

    ``DIMS`` maps every array field to its axis spec (e.g. ``"P H W 3"``); fields not in ``DIMS``
    are small metadata stored as JSON attributes. Optional array fields may be ``None``.
    """

    DIMS: ClassVar[dict[str, str]] = {}
    #: dtype each array is stored with (cast on write); absent -> keep the array's dtype.
    DTYPES: ClassVar[dict[str, str]] = {}
    #: float arrays the store may keep in half precision (recipe ``storage.float_dtype``, docs/store.md
    #: "Store size"); reading them back from the store always gives float32.
    COMPACT: ClassVar[tuple[str, ...]] = ()

    def arrays(self) -> dict[str, ArrayLike]:
        return {k: getattr(self, k) for k in self.DIMS if getattr(self, k) is not None}

    def meta(self) -> dict[str, Any]:
        out = {}
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            if name not in self.DIMS:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameSet(Record):
    """The input video after preprocessing to network resolution.

    rgb: (F, H, W, 3) uint8, RGB, network resolution (H, W multiples of 16).
    frame_index: (F,) int64, index of each frame in the original video / sorted image folder.
    timestamps: (F,) float64, seconds from the start of the video (frame_index / fps for folders).
    original_hw: (height, width) of the original frames.
    network_from_original: 3x3 affine (nested lists) mapping original pixel (x, y, 1) to network pixels.
    source: the input path or URL, for provenance.
    """

    DIMS: ClassVar[dict[str, str]] = {"rgb": "F H W 3", "frame_index": "F", "timestamps": "F"}
    rgb: ArrayLike
    frame_index: ArrayLike
    timestamps: ArrayLike
    original_hw: tuple[int, int]
    network_from_original: tuple[tuple[float, float, float], ...]
    source: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    def original_from_network(self) -> np.ndarray:
        """(3, 3) float64 affine mapping network pixels back to original pixels."""
        return np.linalg.inv(np.asarray(self.network_from_original, dtype=np.float64))


@dataclass(frozen=True, kw_only=True, slots=True)
class PairPredictions(Record):
    """Pointmaps for each directed pair (i, j), both in the camera frame of view i.

    pairs: (P, 2) int64, frame indices (i, j) into the FrameSet.
    pts3d_i: (P, H, W, 3) float32, view i's pointmap in camera i (at time i).
    pts3d_j: (P, H, W, 3) float32, view j's pointmap in camera i (at time j).
    conf_i, conf_j: (P, H, W) float32, confidences (>= 1 for MonST3R/DUSt3R; > 0 in general).

    The four per-pixel arrays are ``COMPACT``: stored in float16 unless the recipe sets
    ``storage.float_dtype: float32``; read back as float32.
    """

    DIMS: ClassVar[dict[str, str]] = {
        "pairs": "P 2", "pts3d_i": "P H W 3", "pts3d_j": "P H W 3", "conf_i": "P H W", "conf_j": "P H W",
    }
    COMPACT: ClassVar[tuple[str, ...]] = ("pts3d_i", "pts3d_j", "conf_i", "conf_j")
    pairs: ArrayLike
    pts3d_i: ArrayLike
    pts3d_j: ArrayLike
    conf_i: ArrayLike
    conf_j: ArrayLike


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowField(Record):
    """Optical flow for each pair edge, in both directions.

    pairs: (P, 2) int64, frame indices (i, j).
    flow_ij: (P, H, W, 2) float32, displacement in pixels (dx, dy) taking pixel (x, y) of frame i to frame j.
    flow_ji: (P, H, W, 2) float32, the same from frame j to frame i.
    uncertainty_ij, uncertainty_ji: optional (P, H, W) float32, per-pixel uncertainty (larger = less
        reliable; e.g. SEA-RAFT's predicted scale), a ground-truth-free quality signal.

    Flow and uncertainty are ``COMPACT`` (float16 in the store unless ``storage.float_dtype: float32``).
    """

    DIMS: ClassVar[dict[str, str]] = {
        "pairs": "P 2", "flow_ij": "P H W 2", "flow_ji": "P H W 2",
        "uncertainty_ij": "P H W", "uncertainty_ji": "P H W",
    }
    COMPACT: ClassVar[tuple[str, ...]] = ("flow_ij", "flow_ji", "uncertainty_ij", "uncertainty_ji")
    pairs: ArrayLike
    flow_ij: ArrayLike
    flow_ji: ArrayLike
    uncertainty_ij: Optional[ArrayLike] = None
    uncertainty_ji: Optional[ArrayLike] = None

    def gather(self, pairs: np.ndarray, field_name: str = "flow") -> np.ndarray:
        """Flow (or uncertainty) for arbitrary directed pairs, taken from whichever direction is stored.

        One-off lookups; a stage that gathers repeatedly builds one :meth:`reader` (this reads and
        sorts the stored pair list on every call).

        Args:
            pairs: (Q, 2) int directed pairs (i, j); each must be stored as (i, j) or (j, i).
            field_name: "flow" -> (Q, H, W, 2) float32, "uncertainty" -> (Q, H, W) float32.
        Raises:
            KeyError: naming the first pair that is not stored in either direction.
        """
        return self.reader().gather(pairs, field_name)

    def reader(self) -> "FlowReader":
        """A :class:`FlowReader` over this field (the stored pair list read and indexed once)."""
        return FlowReader(self)


class FlowReader:
    """Gathers rows of a :class:`FlowField` for directed pairs, many times over.

    The stored pair list is read and indexed once; each :meth:`gather` reads its rows as one store
    slice per run of consecutive rows in each direction (:func:`read_rows`).
    """

    __slots__ = ("field", "index")

    def __init__(self, flow: FlowField) -> None:
        from .scene_graph import PairIndex

        self.field = flow
        self.index = PairIndex(np.asarray(flow.pairs, np.int64))

    def has(self, pairs: np.ndarray) -> np.ndarray:
        """(Q,) bool: which directed pairs (Q, 2) have flow in either direction."""
        return self.index.rows(pairs)[0] >= 0

    def gather(self, pairs: np.ndarray, field_name: str = "flow") -> np.ndarray:
        """As :meth:`FlowField.gather`: (Q, H, W, 2) flow or (Q, H, W) uncertainty, float32."""
        f = self.field
        fwd = f.flow_ij if field_name == "flow" else f.uncertainty_ij
        bwd = f.flow_ji if field_name == "flow" else f.uncertainty_ji
        if fwd is None or bwd is None:
            raise KeyError(f"flow field has no {field_name} arrays")
        query = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        rows, forward = self.index.rows(query)
        if (rows < 0).any():
            i, j = query[int(np.argmax(rows < 0))]
            raise KeyError(f"pair ({int(i)}, {int(j)}) has no flow in either direction")
        out = np.empty((len(query),) + tuple(fwd.shape[1:]), np.float32)
        if forward.any():
            out[forward] = read_rows(fwd, rows[forward])
        if (~forward).any():
            out[~forward] = read_rows(bwd, rows[~forward])
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class CameraTrajectory(Record):
    """Per-frame cameras and depth, e.g. the pose solver's initialisation.

    world_from_cam: (F, 4, 4) float64, camera-to-world, OpenCV axes.
    intrinsics: (F, 3, 3) float64, pixel intrinsics at network resolution.
    depth: (F, H, W) float32, z-depth in each frame's camera, same scale as the translations.
    conf: (F, H, W) float32, per-pixel confidence of that depth (MonST3R's ``init_conf``).
    """

    DIMS: ClassVar[dict[str, str]] = {
        "world_from_cam": "F 4 4", "intrinsics": "F 3 3", "depth": "F H W", "conf": "F H W",
    }
    DTYPES: ClassVar[dict[str, str]] = {"world_from_cam": "float64", "intrinsics": "float64"}
    world_from_cam: ArrayLike
    intrinsics: ArrayLike
    depth: ArrayLike
    conf: ArrayLike


@dataclass(frozen=True, kw_only=True, slots=True)
class DynamicMasks(Record):
    """Per-frame static/dynamic segmentation.

    dynamic: (F, H, W) bool, True where the pixel belongs to an independently moving object.
    error: optional (F, H, W) float32 in [0, 1], the per-pixel evidence the mask was thresholded
        from (e.g. normalised flow residual), a ground-truth-free quality signal.
    source: "flow", "user", "sam2", ... (how the mask was made; exporters dilate user masks more).
    confidence: optional (F,) float32 in [0, 1], a ground-truth-free per-frame confidence in the mask.
    notices: one-line warnings the runner shows at the end of the run (e.g. masks empty on some frames).
    """

    DIMS: ClassVar[dict[str, str]] = {"dynamic": "F H W", "error": "F H W", "confidence": "F"}
    dynamic: ArrayLike
    error: Optional[ArrayLike] = None
    source: str = "flow"
    confidence: Optional[ArrayLike] = None
    notices: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Reconstruction(Record):
    """The final 4D reconstruction (global aligner output, or the initialisation when it is off).

    world_from_cam: (F, 4, 4) float64, camera-to-world.
    intrinsics: (F, 3, 3) float64, network resolution.
    intrinsics_original: (F, 3, 3) float64, the same cameras at the original resolution.
    depth: (F, H, W) float32, z-depth.
    conf: (F, H, W) float32, per-pixel confidence.
    pts3d_world: (F, H, W, 3) float32, each frame's pointmap in the world frame, at its own time.
    dynamic: (F, H, W) bool, the dynamic mask used (all False when none).
    loss_history: optional (I, T) float32, per-iteration value of each loss term (``loss_names``).
    frame_quality: optional (F, Q) float32, ground-truth-free per-frame quality signals
        (``quality_names``, e.g. alignment residual, flow residual on static pixels, confidence).
    run_summary: optional JSON-able dict the aligner writes about its run (terms active or skipped
        and why, final term values, worst frames); see docs/global-aligner.md.
    notices: one-line messages the runner shows at the end of the run (skipped terms, worst frames).
    window_seams: frames where a later window of a windowed aligner takes over (the step from frame
        s - 1 to s crosses a seam); empty when solved in one piece.
    """

    DIMS: ClassVar[dict[str, str]] = {
        "world_from_cam": "F 4 4", "intrinsics": "F 3 3", "intrinsics_original": "F 3 3",
        "depth": "F H W", "conf": "F H W", "pts3d_world": "F H W 3", "dynamic": "F H W",
        "loss_history": "I T", "frame_quality": "F Q",
    }
    DTYPES: ClassVar[dict[str, str]] = {
        "world_from_cam": "float64", "intrinsics": "float64", "intrinsics_original": "float64",
    }
    world_from_cam: ArrayLike
    intrinsics: ArrayLike
    intrinsics_original: ArrayLike
    depth: ArrayLike
    conf: ArrayLike
    pts3d_world: ArrayLike
    dynamic: ArrayLike
    loss_history: Optional[ArrayLike] = None
    loss_names: tuple[str, ...] = ()
    frame_quality: Optional[ArrayLike] = None
    quality_names: tuple[str, ...] = ()
    run_summary: Optional[dict[str, Any]] = None
    notices: tuple[str, ...] = ()
    window_seams: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportResult(Record):
    """Files an exporter wrote, relative to its output folder."""

    files: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Stage inputs (what the runner hands to ``Stage.run``)
# --------------------------------------------------------------------------------------------


def upstream(source: str, *, optional: bool = False, nullable: bool = False) -> Any:
    """Declare a stage-input field and where the runner takes it from.

    ``source`` is an upstream stage kind or a run value: ``frames`` (the FrameSet), ``pairs`` (the
    recipe's directed pairs), ``edges`` (the same graph as unique i < j edges), ``out_dir`` and
    ``run_info`` (exporters). Stage kinds and ``frames``/``pairs``/``edges`` enter the stage's cache
    key (``edges`` under the name ``pairs``).

    * default: always handed over; the source must be enabled.
    * ``optional=True``: handed over (and keyed) only when the stage class lists ``source`` in
      ``reads``; ``None`` otherwise or when that stage is disabled.
    * ``nullable=True``: always handed over and keyed; ``None`` when that stage is disabled.
    """
    meta = {"source": source, "optional": optional}
    if optional or nullable:
        return field(default=None, metadata=meta)
    return field(metadata=meta)


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowInputs:
    """frames: the video; pairs: (E, 2) int64 unique undirected edges (i < j, no self-pairs) of the
    recipe's scene graph. Estimators compute flow in both directions of each edge (flow_ij, flow_ji)."""

    frames: FrameSet = upstream("frames")
    pairs: np.ndarray = upstream("edges")


@dataclass(frozen=True, kw_only=True, slots=True)
class PairInputs:
    """frames; pairs (P, 2) int64 directed (i, j), both directions when the graph is symmetrized;
    flow only for predictors that list ``flow_estimator`` in ``reads``."""

    frames: FrameSet = upstream("frames")
    pairs: np.ndarray = upstream("pairs")
    flow: Optional[FlowField] = upstream("flow_estimator", optional=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class PoseInputs:
    """frames; the pair predictions; flow only for solvers that list ``flow_estimator`` in ``reads``."""

    frames: FrameSet = upstream("frames")
    predictions: PairPredictions = upstream("pair_predictor")
    flow: Optional[FlowField] = upstream("flow_estimator", optional=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskInputs:
    """frames; predictions, cameras (the pose solver's) and flow as the builder's ``reads`` names."""

    frames: FrameSet = upstream("frames")
    predictions: Optional[PairPredictions] = upstream("pair_predictor", optional=True)
    cameras: Optional[CameraTrajectory] = upstream("pose_solver", optional=True)
    flow: Optional[FlowField] = upstream("flow_estimator", optional=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class AlignerInputs:
    """frames, predictions, the initial cameras; flow and masks as the aligner's ``reads`` names."""

    frames: FrameSet = upstream("frames")
    predictions: PairPredictions = upstream("pair_predictor")
    init: CameraTrajectory = upstream("pose_solver")
    flow: Optional[FlowField] = upstream("flow_estimator", optional=True)
    masks: Optional[DynamicMasks] = upstream("mask_builder", optional=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportInputs:
    """Everything an exporter may write. ``out_dir`` is the exporter's own (empty, staging) folder;
    the runner moves it into place once ``run`` returns. ``reconstruction`` is the aligner's, or
    the pose solver's cameras when the aligner is disabled."""

    frames: FrameSet = upstream("frames")
    reconstruction: Reconstruction = upstream("global_aligner")
    out_dir: Path = upstream("out_dir")
    init: Optional[CameraTrajectory] = upstream("pose_solver", nullable=True)
    masks: Optional[DynamicMasks] = upstream("mask_builder", nullable=True)
    predictions: Optional[PairPredictions] = upstream("pair_predictor", nullable=True)
    run_info: dict[str, Any] = field(default_factory=dict, metadata={"source": "run_info", "optional": False})


#: Run values a stage input may name besides stage kinds; those in KEYED_SOURCES enter cache keys.
RUN_SOURCES: frozenset[str] = frozenset({"frames", "pairs", "edges", "out_dir", "run_info"})
KEYED_SOURCES: dict[str, str] = {"frames": "frames", "pairs": "pairs", "edges": "pairs"}


# --------------------------------------------------------------------------------------------
# Configs, context, base classes
# --------------------------------------------------------------------------------------------


class StageConfig(BaseModel):
    """Base of every stage's config. Subclasses add ``type: Literal["name"] = "name"`` and fields
    with defaults, descriptions and bounds. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Progress:
    def __init__(self, update: Callable[[int], None]) -> None:
        self._update = update

    def advance(self, n: int = 1) -> None:
        self._update(n)


@dataclass(kw_only=True)
class RunContext:
    """What a stage may use besides its inputs.

    device: torch device string chosen for the run ("cpu", "cuda", "cuda:1").
    workspace: the stage's scratch space in the store (a ``monst3r_framework.store.Workspace``), kept
        across interrupted runs so a stage can resume (e.g. per pair, with a ``done`` output).
        ``None`` when a stage runs outside the runner. Create outputs with :meth:`output`.
    progress_factory: callable(total, description) -> context manager yielding a progress handle.
    log: callable(str) for one-line messages.
    seed: the recipe's random seed.
    """

    device: str = "cpu"
    workspace: Any = None
    progress_factory: Optional[Callable[[int, str], Any]] = None
    log: Callable[[str], None] = lambda msg: None
    seed: int = 0
    stage_label: str = ""

    def output(self, name: str, shape: tuple[int, ...], dtype: Any, chunks: Optional[tuple[int, ...]] = None,
               fill_value: Any = 0) -> Any:
        """An output array to fill and return in the record (docs/store.md, "How a stage writes outputs").

        In the runner: a chunked Zarr array in this stage's workspace (default chunks: one pair /
        frame), adopted by the commit without being read back or rewritten; float values are checked
        finite as they are written. An array of that name, shape, dtype and chunks left by an
        interrupted run is returned with its content (track what is valid with your own ``done``
        output). Outside the runner (no workspace): a numpy array of zeros.

        Args:
            name: the record field it becomes (its named axes and stored dtype come from the record),
                or any other name for scratch arrays such as ``done``.
            shape, dtype: as numpy.
        """
        if self.workspace is None:
            return np.full(shape, fill_value, dtype)
        return self.workspace.array(name, shape, dtype, chunks=chunks, fill_value=fill_value)

    @contextmanager
    def progress(self, total: int, description: str = "") -> Iterator[_Progress]:
        """``with ctx.progress(n, "decoding pairs") as p: ... p.advance()``."""
        if self.progress_factory is None:
            yield _Progress(lambda n: None)
            return
        with self.progress_factory(total, description or self.stage_label) as handle:
            yield handle


In = TypeVar("In")
Out = TypeVar("Out")


class Stage(ABC, Generic[In, Out]):
    """One implementation of one stage kind.

    Class attributes:
        kind: the stage kind it implements.
        name: the recipe's ``type:`` value (snake_case, names the method).
        version: bump when outputs change for the same config (invalidates cached results).
        config_model: the pydantic config class (a ``StageConfig`` subclass with a ``type`` Literal).
        reads: optional upstream kinds whose outputs this stage reads; only those are handed to
            ``run`` and only their keys enter this stage's cache key.
        requires: the subset of ``reads`` that must be enabled in the recipe.
        inputs_type: the ``*Inputs`` dataclass ``run`` receives; its fields declare (with
            :func:`upstream`) where the runner takes each input from, once for the whole kind.
        output_record: the record class ``run`` returns.
    """

    kind: ClassVar[StageKind]
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    config_model: ClassVar[type[StageConfig]]
    reads: ClassVar[frozenset[str]] = frozenset()
    #: upstream kinds that must be enabled for this stage to run (checked when the recipe resolves).
    requires: ClassVar[frozenset[str]] = frozenset()
    inputs_type: ClassVar[type]
    output_record: ClassVar[type[Record]]

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    def setup(self, ctx: RunContext) -> None:
        """Load weights and import heavy libraries here, never at module import."""

    @abstractmethod
    def run(self, inputs: In, ctx: RunContext) -> Out:
        """Compute the stage's output record from its inputs."""

    @classmethod
    def input_sources(cls) -> dict[str, str]:
        """Input field -> source for the fields the runner hands to this class (optional fields only
        when ``reads`` names their source)."""
        out = {}
        for f in dataclasses.fields(cls.inputs_type):
            source = f.metadata.get("source")
            if source is None:
                raise TypeError(f"{cls.inputs_type.__name__}.{f.name}: declare its source with upstream()")
            if f.metadata.get("optional") and source not in cls.reads:
                continue
            out[f.name] = source
        return out

    @classmethod
    def upstream_names(cls) -> frozenset[str]:
        """Names whose keys enter this class's cache key: the stage kinds and keyed run values it
        reads (``edges`` counts as ``pairs``), plus everything in ``reads``."""
        names = {KEYED_SOURCES.get(src, src) for src in cls.input_sources().values()
                 if src in KEYED_SOURCES or src in STAGE_KINDS}
        return frozenset(names | set(cls.reads))


class FlowEstimator(Stage[FlowInputs, FlowField]):
    """Reads frames/rgb and the pair graph; writes flow_ij, flow_ji (+ optional uncertainties).

    Subclasses usually only implement :meth:`estimate` (a batch of image pairs -> flow); the
    default :meth:`run` batches every edge in both directions and reports progress.
    """

    kind: ClassVar[StageKind] = "flow_estimator"
    inputs_type = FlowInputs
    output_record = FlowField
    #: pairs per call to :meth:`estimate`; subclasses may read it from their config instead.
    batch_size: ClassVar[int] = 8

    def estimate(self, img1: np.ndarray, img2: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Flow for a batch of image pairs.

        Args:
            img1, img2: (B, H, W, 3) uint8 RGB.
        Returns:
            flow (B, H, W, 2) float32 from img1 to img2 in pixels (dx, dy), and optional
            uncertainty (B, H, W) float32 or None.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement estimate() or run()")

    def run(self, inputs: FlowInputs, ctx: RunContext) -> FlowField:
        pairs = np.asarray(inputs.pairs, dtype=np.int64).reshape(-1, 2)
        rgb = inputs.frames.rgb
        # Both directions in one list of (src, dst) so batches stay full; row r < p is flow_ij[r],
        # row r >= p is flow_ji[r - p].
        directed = np.concatenate([pairs, pairs[:, ::-1]], axis=0)
        p = len(pairs)
        h, w = inputs.frames.size_hw
        flows = (ctx.output("flow_ij", (p, h, w, 2), np.float32), ctx.output("flow_ji", (p, h, w, 2), np.float32))
        unc: Optional[tuple[Any, Any]] = None
        bs = max(1, int(getattr(self.config, "batch_size", self.batch_size)))
        with ctx.progress(len(directed), f"flow ({self.name})") as bar:
            for start in range(0, len(directed), bs):
                chunk = directed[start:start + bs]
                img1 = np.stack([np.asarray(rgb[int(i)]) for i in chunk[:, 0]])
                img2 = np.stack([np.asarray(rgb[int(j)]) for j in chunk[:, 1]])
                flow, u = self.estimate(img1, img2, ctx)
                if u is not None and unc is None:
                    unc = (ctx.output("uncertainty_ij", (p, h, w), np.float32),
                           ctx.output("uncertainty_ji", (p, h, w), np.float32))
                for k in range(len(chunk)):
                    row = start + k
                    flows[row >= p][row % p] = flow[k]
                    if u is not None and unc is not None:
                        unc[row >= p][row % p] = u[k]
                bar.advance(len(chunk))
        return FlowField(
            pairs=pairs, flow_ij=flows[0], flow_ji=flows[1],
            uncertainty_ij=None if unc is None else unc[0], uncertainty_ji=None if unc is None else unc[1],
        )


class PairPredictor(Stage[PairInputs, PairPredictions]):
    """Reads frames/rgb (and flow if ``reads`` has it); writes pts3d_i, pts3d_j, conf_i, conf_j per pair."""

    kind: ClassVar[StageKind] = "pair_predictor"
    inputs_type = PairInputs
    output_record = PairPredictions


class PoseSolver(Stage[PoseInputs, CameraTrajectory]):
    """Reads the pair predictions; writes initial world_from_cam, intrinsics, depth and conf per frame."""

    kind: ClassVar[StageKind] = "pose_solver"
    inputs_type = PoseInputs
    output_record = CameraTrajectory


class MaskBuilder(Stage[MaskInputs, DynamicMasks]):
    """Reads what its ``reads`` names (e.g. predictions, cameras, flow); writes per-frame dynamic masks."""

    kind: ClassVar[StageKind] = "mask_builder"
    inputs_type = MaskInputs
    output_record = DynamicMasks
    reads: ClassVar[frozenset[str]] = frozenset({"pair_predictor", "pose_solver", "flow_estimator"})


class GlobalAligner(Stage[AlignerInputs, Reconstruction]):
    """Reads predictions, the initial cameras, flow and masks; writes the final Reconstruction."""

    kind: ClassVar[StageKind] = "global_aligner"
    inputs_type = AlignerInputs
    output_record = Reconstruction
    reads: ClassVar[frozenset[str]] = frozenset({"flow_estimator", "mask_builder"})


class Exporter(Stage[ExportInputs, ExportResult]):
    """Reads the reconstruction (and optionally init, masks, predictions); writes files to ``out_dir``."""

    kind: ClassVar[StageKind] = "exporter"
    inputs_type = ExportInputs
    output_record = ExportResult


STAGE_BASES: dict[str, type[Stage]] = {
    "flow_estimator": FlowEstimator,
    "pair_predictor": PairPredictor,
    "pose_solver": PoseSolver,
    "mask_builder": MaskBuilder,
    "global_aligner": GlobalAligner,
    "exporter": Exporter,
}


def reconstruction_from_cameras(
    frames: FrameSet, cameras: CameraTrajectory, masks: Optional[DynamicMasks] = None
) -> Reconstruction:
    """Build a Reconstruction straight from a CameraTrajectory (used when the aligner is disabled)."""
    from .geometry import depth_to_world_points

    c2w = np.asarray(cameras.world_from_cam, np.float64)
    k = np.asarray(cameras.intrinsics, np.float64)
    depth = np.asarray(cameras.depth, np.float32)
    k_orig = frames.original_from_network()[None] @ k
    dyn = np.zeros(depth.shape, bool) if masks is None else np.asarray(masks.dynamic, bool)
    return Reconstruction(
        world_from_cam=c2w, intrinsics=k, intrinsics_original=k_orig, depth=depth,
        conf=np.asarray(cameras.conf, np.float32),
        pts3d_world=depth_to_world_points(depth, k, c2w), dynamic=dyn,
    )
