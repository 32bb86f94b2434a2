"""Loading one optimisation problem (all frames or one window) from the stage inputs.

Only the rows a problem needs are read, so lazy Zarr inputs are streamed window by window.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from monst3r_framework.errors import StageError
from monst3r_framework.scene_graph import PairIndex
from monst3r_framework.stages import AlignerInputs, read_rows

from .optimize import AlignProblem


def take_rows(array, rows: Sequence[int]) -> np.ndarray:
    """Rows ``rows`` (sorted or not) of a numpy or Zarr array, read as contiguous slices."""
    return read_rows(array, rows)


def is_symmetric(pairs: np.ndarray) -> bool:
    """True when every directed edge (i, j) has its reverse (j, i)."""
    edges = {(int(i), int(j)) for i, j in pairs}
    return edges == {(j, i) for i, j in edges}


class FlowLookup:
    """Maps a directed frame pair (src, dst) to a row of a FlowField and the direction to read."""

    def __init__(self, flow_pairs: np.ndarray) -> None:
        self.flow_pairs = np.asarray(flow_pairs, dtype=np.int64).reshape(-1, 2)
        self.index = PairIndex(self.flow_pairs)  # sorted once, searched per window

    def rows(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, fwd = self.index.rows(np.stack([np.asarray(src), np.asarray(dst)], -1))
        if (rows < 0).any():
            n = int(np.argmax(rows < 0))
            raise StageError(
                f"global_aligner monst3r_ga: no flow for frame pair ({int(src[n])}, {int(dst[n])}) that the pair graph "
                "needs; expected a flow_estimator output covering every edge; fix: run the flow estimator on the same "
                "pair graph or set flow_loss_weight: 0"
            )
        return rows, fwd


def read_flow(flow, lookup: FlowLookup, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(len(src), H, W, 2) float32 flow from frame src to frame dst for each entry."""
    rows, fwd = lookup.rows(src, dst)
    h, w = flow.flow_ij.shape[1:3]
    out = np.empty((len(src), h, w, 2), np.float32)
    if fwd.any():
        out[fwd] = take_rows(flow.flow_ij, rows[fwd])
    if (~fwd).any():
        out[~fwd] = take_rows(flow.flow_ji, rows[~fwd])
    return out


def load_problem(
    inputs: AlignerInputs, frames: np.ndarray, edge_rows: np.ndarray, *, use_flow: bool,
    lookup: Optional[FlowLookup], symmetric: bool,
    world_from_cam: np.ndarray, intrinsics: np.ndarray, depth: np.ndarray,
    fixed_frames: Optional[np.ndarray] = None,
) -> AlignProblem:
    """Build the problem of frames ``frames`` (sorted global indices) from edges ``edge_rows``.

    ``world_from_cam`` (F, 4, 4), ``intrinsics`` (F, 3, 3), ``depth`` (F, H, W) are the initial
    values for exactly these frames; ``fixed_frames`` (F,) bool marks those held at them.
    """
    pred = inputs.predictions
    h, w = int(pred.pts3d_i.shape[1]), int(pred.pts3d_i.shape[2])
    n = h * w
    pairs = np.asarray(pred.pairs, dtype=np.int64)[edge_rows]
    local = {int(f): k for k, f in enumerate(frames.tolist())}
    ei = np.array([local[int(i)] for i in pairs[:, 0]], np.int64)
    ej = np.array([local[int(j)] for j in pairs[:, 1]], np.int64)

    def t(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(shape))

    def cf(x: np.ndarray, c: int) -> torch.Tensor:  # (P, H, W, C) -> channel-first (P, C, N)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).reshape(len(x), n, c).transpose(0, 2, 1)))

    p = len(edge_rows)
    flow_fwd = flow_bwd = None
    if use_flow:
        flow_fwd = cf(read_flow(inputs.flow, lookup, pairs[:, 0], pairs[:, 1]), 2)
        if not symmetric:
            flow_bwd = cf(read_flow(inputs.flow, lookup, pairs[:, 1], pairs[:, 0]), 2)
    if inputs.masks is not None:
        dynamic = torch.from_numpy(take_rows(inputs.masks.dynamic, frames).astype(bool).reshape(len(frames), n))
    else:
        dynamic = torch.zeros(len(frames), n, dtype=torch.bool)
    for name, arr in (("pts3d_i", pred.pts3d_i), ("pts3d_j", pred.pts3d_j)):
        if tuple(arr.shape[1:]) != (h, w, 3):
            raise StageError(f"global_aligner monst3r_ga: predictions {name} has shape {arr.shape}, expected (P, {h}, {w}, 3)")
    return AlignProblem(
        ei=torch.from_numpy(ei), ej=torch.from_numpy(ej),
        pred_i=cf(take_rows(pred.pts3d_i, edge_rows), 3),
        pred_j=cf(take_rows(pred.pts3d_j, edge_rows), 3),
        conf_i=t(take_rows(pred.conf_i, edge_rows), (p, n)),
        conf_j=t(take_rows(pred.conf_j, edge_rows), (p, n)),
        flow_fwd=flow_fwd, flow_bwd=flow_bwd, static=~dynamic, dynamic=dynamic,
        world_from_cam=torch.from_numpy(np.asarray(world_from_cam, np.float32)),
        intrinsics=torch.from_numpy(np.asarray(intrinsics, np.float32)),
        depth=t(depth, (len(frames), n)), size_hw=(h, w),
        fixed_frames=None if fixed_frames is None else torch.from_numpy(np.asarray(fixed_frames, bool)),
    )
