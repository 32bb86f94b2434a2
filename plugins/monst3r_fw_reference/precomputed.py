"""Bring-your-own predictions: ``precomputed`` pair predictor and flow estimator reading npz files.

Pairs file (``path`` of the pair predictor), H, W = the network resolution of the input frames:

* ``pairs``   (P, 2) int64, directed frame pairs (i, j);
* ``pts3d_i`` (P, H, W, 3) float32, view i's pointmap in camera i;
* ``pts3d_j`` (P, H, W, 3) float32, view j's pointmap in camera i;
* ``conf_i``, ``conf_j`` (P, H, W) float32 confidences (> 0; MonST3R's are >= 1).

Flow file (``path`` of the flow estimator):

* ``pairs`` (P, 2) int64, directed frame pairs (i, j);
* ``flow``  (P, H, W, 2) float32, pixels (dx, dy) from frame i to frame j.

Every pair the recipe's graph needs must be present (for flow: both directions). Use
:func:`write_pairs_npz` / :func:`write_flow_npz` (or :func:`save_pair_predictions` /
:func:`save_flow_field` for records) to write them.

Example:
    ``monst3r-fw run recipe.yaml video.mp4 --set stages.pair_predictor.type=precomputed
    --set stages.pair_predictor.path=pairs.npz``
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.scene_graph import pair_rows
from monst3r_framework.stages import (
    FlowEstimator, FlowField, FlowInputs, PairInputs, PairPredictions, PairPredictor, RunContext, StageConfig,
)

PAIR_KEYS: tuple[str, ...] = ("pairs", "pts3d_i", "pts3d_j", "conf_i", "conf_j")
FLOW_KEYS: tuple[str, ...] = ("pairs", "flow")


def check_pair_indices(pairs: np.ndarray, where: str, key: str = "pairs") -> np.ndarray:
    """(P, 2) frame indices as int64, refusing values that are not whole numbers.

    ``np.asarray(x, np.int64)`` would silently truncate 2.7 to 2 and pair the wrong frames; float
    arrays are accepted only when every value is integral (1.0, 2.0).

    Raises:
        InputError: naming the first offending value and how to save the indices.
    """
    pairs = np.asarray(pairs)
    if pairs.dtype.kind in "iu":
        return pairs.astype(np.int64, copy=False)
    if pairs.dtype.kind == "f":
        bad = ~np.isfinite(pairs) | (pairs != np.round(pairs))
        if not bad.any():
            return pairs.astype(np.int64)
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"{where}: '{key}' holds {pairs.dtype} frame indices that are not whole numbers "
                         f"(e.g. {float(pairs[first])!r} at {key}{list(first)}); frame indices must be integers: "
                         f"save them with {key}=np.asarray(..., np.int64)")
    raise InputError(f"{where}: '{key}' has dtype {pairs.dtype}; frame indices must be integers: save them with "
                     f"{key}=np.asarray(..., np.int64)")


def write_pairs_npz(path: str | Path, pairs: np.ndarray, pts3d_i: np.ndarray, pts3d_j: np.ndarray,
                    conf_i: np.ndarray, conf_j: np.ndarray, compressed: bool = False) -> Path:
    """Write a pairs file (layout in the module docstring); returns the path."""
    arrays = dict(pairs=check_pair_indices(pairs, str(path)), pts3d_i=np.asarray(pts3d_i, np.float32),
                  pts3d_j=np.asarray(pts3d_j, np.float32), conf_i=np.asarray(conf_i, np.float32),
                  conf_j=np.asarray(conf_j, np.float32))
    _check_pairs_arrays(arrays, str(path))
    path = Path(path)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_flow_npz(path: str | Path, pairs: np.ndarray, flow: np.ndarray, compressed: bool = False) -> Path:
    """Write a flow file (layout in the module docstring); returns the path."""
    arrays = dict(pairs=check_pair_indices(pairs, str(path)), flow=np.asarray(flow, np.float32))
    _check_flow_arrays(arrays, str(path))
    path = Path(path)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def save_pair_predictions(path: str | Path, predictions: PairPredictions, compressed: bool = False) -> Path:
    """Write a :class:`PairPredictions` record as a pairs file."""
    return write_pairs_npz(path, np.asarray(predictions.pairs), np.asarray(predictions.pts3d_i),
                           np.asarray(predictions.pts3d_j), np.asarray(predictions.conf_i),
                           np.asarray(predictions.conf_j), compressed)


def save_flow_field(path: str | Path, flow: FlowField, compressed: bool = False) -> Path:
    """Write a :class:`FlowField` as a flow file holding both directions of every stored pair."""
    pairs = np.asarray(flow.pairs, np.int64)
    return write_flow_npz(path, np.concatenate([pairs, pairs[:, ::-1]]),
                          np.concatenate([np.asarray(flow.flow_ij), np.asarray(flow.flow_ji)]), compressed)


def _check_pairs_arrays(arrays: dict, where: str, size_hw: Optional[tuple[int, int]] = None) -> None:
    missing = [k for k in PAIR_KEYS if k not in arrays]
    if missing:
        raise InputError(f"{where}: pairs file lacks keys {missing}; expected {list(PAIR_KEYS)} (see monst3r_fw_reference.precomputed)")
    pairs = arrays["pairs"]
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise InputError(f"{where}: 'pairs' has shape {pairs.shape}, expected (P, 2)")
    arrays["pairs"] = check_pair_indices(pairs, where)
    p = len(pairs)
    h, w = size_hw if size_hw is not None else tuple(arrays["pts3d_i"].shape[1:3])
    for key, shape in (("pts3d_i", (p, h, w, 3)), ("pts3d_j", (p, h, w, 3)), ("conf_i", (p, h, w)), ("conf_j", (p, h, w))):
        if tuple(arrays[key].shape) != shape:
            raise InputError(f"{where}: '{key}' has shape {tuple(arrays[key].shape)}, expected {shape} "
                             "(P pairs at the network resolution H x W of the input frames)")


def _check_flow_arrays(arrays: dict, where: str, size_hw: Optional[tuple[int, int]] = None) -> None:
    missing = [k for k in FLOW_KEYS if k not in arrays]
    if missing:
        raise InputError(f"{where}: flow file lacks keys {missing}; expected {list(FLOW_KEYS)} (see monst3r_fw_reference.precomputed)")
    pairs = arrays["pairs"]
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise InputError(f"{where}: 'pairs' has shape {pairs.shape}, expected (P, 2)")
    arrays["pairs"] = check_pair_indices(pairs, where)
    h, w = size_hw if size_hw is not None else tuple(arrays["flow"].shape[1:3])
    if tuple(arrays["flow"].shape) != (len(pairs), h, w, 2):
        raise InputError(f"{where}: 'flow' has shape {tuple(arrays['flow'].shape)}, expected {(len(pairs), h, w, 2)} "
                         "(pixels (dx, dy) at the network resolution H x W of the input frames)")


def _open_npz(path: Optional[str], kind: str) -> np.lib.npyio.NpzFile:
    if not path:
        raise InputError(f"stages.{kind}.path: not set; pass --set stages.{kind}.path=FILE.npz")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"stages.{kind}.path: file {p} not found; give an existing .npz file")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # zipfile / format errors
        raise InputError(f"stages.{kind}.path: cannot read {p} as npz ({exc}); write it with numpy.savez") from exc


def _rows_for(needed: np.ndarray, stored: np.ndarray, where: str, what: str) -> np.ndarray:
    """Row of each needed directed pair (i, j) in the file's pairs, stored as is (first row if twice)."""
    needed = np.asarray(needed, np.int64).reshape(-1, 2)
    rows, forward = pair_rows(stored, needed)
    bad = (rows < 0) | ~forward
    if bad.any():
        i, j = needed[int(np.argmax(bad))]
        raise StageError(f"{where}: {what} ({i}, {j}) needed by the pair graph is missing from the file; "
                         f"add it or change the recipe's pairs.scene_graph")
    return rows


class PrecomputedPairsConfig(StageConfig):
    type: Literal["precomputed"] = "precomputed"
    path: Optional[str] = Field(None, description="npz pairs file: pairs, pts3d_i, pts3d_j, conf_i, conf_j (see docs).")


class PrecomputedPairPredictor(PairPredictor):
    """Pair pointmaps read from an npz file instead of a network (any model, or synthetic data)."""

    name: ClassVar[str] = "precomputed"
    config_model = PrecomputedPairsConfig
    config: PrecomputedPairsConfig

    def run(self, inputs: PairInputs, ctx: RunContext) -> PairPredictions:
        where = f"stages.pair_predictor.path {self.config.path}"
        data = _open_npz(self.config.path, "pair_predictor")
        with data:
            arrays = {k: data[k] for k in data.files if k in PAIR_KEYS}
            _check_pairs_arrays(arrays, where, inputs.frames.size_hw)
            needed = np.asarray(inputs.pairs, np.int64).reshape(-1, 2)
            rows = _rows_for(needed, arrays["pairs"], where, "pair")
            return PairPredictions(
                pairs=needed, pts3d_i=arrays["pts3d_i"][rows].astype(np.float32),
                pts3d_j=arrays["pts3d_j"][rows].astype(np.float32),
                conf_i=arrays["conf_i"][rows].astype(np.float32), conf_j=arrays["conf_j"][rows].astype(np.float32),
            )


class PrecomputedFlowConfig(StageConfig):
    type: Literal["precomputed"] = "precomputed"
    path: Optional[str] = Field(None, description="npz flow file: pairs, flow (both directions of every edge).")


class PrecomputedFlowEstimator(FlowEstimator):
    """Optical flow read from an npz file instead of a flow network."""

    name: ClassVar[str] = "precomputed"
    config_model = PrecomputedFlowConfig
    config: PrecomputedFlowConfig

    def run(self, inputs: FlowInputs, ctx: RunContext) -> FlowField:
        where = f"stages.flow_estimator.path {self.config.path}"
        data = _open_npz(self.config.path, "flow_estimator")
        with data:
            arrays = {k: data[k] for k in data.files if k in FLOW_KEYS}
            _check_flow_arrays(arrays, where, inputs.frames.size_hw)
            needed = np.asarray(inputs.pairs, np.int64).reshape(-1, 2)
            fwd = _rows_for(needed, arrays["pairs"], where, "flow for pair")
            bwd = _rows_for(needed[:, ::-1], arrays["pairs"], where, "flow for pair")
            flow = arrays["flow"]
            return FlowField(pairs=needed, flow_ij=flow[fwd].astype(np.float32), flow_ji=flow[bwd].astype(np.float32))


STAGES = (PrecomputedPairPredictor, PrecomputedFlowEstimator)
