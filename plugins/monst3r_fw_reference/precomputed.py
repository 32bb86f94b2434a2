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
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.scene_graph import pair_rows
from monst3r_framework.fingerprint import InputFile
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


def _check_keys(files: list[str], keys: tuple[str, ...], where: str, what: str) -> None:
    missing = [k for k in keys if k not in files]
    if missing:
        raise InputError(f"{where}: {what} file lacks keys {missing}; expected {list(keys)} (see monst3r_fw_reference.precomputed)")


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


class _NpyRows:
    """Rows of an uncompressed npz member read on demand with pread (no whole-array load and no
    memory map, whose touched pages would count towards the process's memory)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        import os

        row = int(row)
        if not 0 <= row < self.shape[0]:
            raise IndexError(row)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = os.pread(fd, self.row_bytes, self.offset + row * self.row_bytes)
        finally:
            os.close(fd)
        return np.frombuffer(buf, self.dtype).reshape(self.shape[1:])


def _npz_arrays(data: np.lib.npyio.NpzFile, path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The npz members ``keys``: row readers when stored uncompressed (``numpy.savez``), so only the
    rows a run needs are read, one at a time; loaded when compressed (and for ``pairs``)."""
    import zipfile

    from numpy.lib import format as npf

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(Path(path).expanduser()) as zf:
        for key in keys:
            if key not in data.files:
                continue
            info = zf.getinfo(f"{key}.npy")
            mapped = None
            if info.compress_type == zipfile.ZIP_STORED and key != "pairs":
                with zf.open(info) as member:
                    version = npf.read_magic(member)
                    read_header = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
                    shape, fortran, dtype = read_header(member)
                    header_len = member.tell()
                if not fortran and not dtype.hasobject:
                    # data starts after the member's local header (30 bytes + name + extra) and the npy header
                    with open(Path(path).expanduser(), "rb") as fh:
                        fh.seek(info.header_offset + 26)
                        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
                    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
                    if len(shape) >= 2:
                        mapped = _NpyRows(Path(path).expanduser(), offset, shape, dtype)
            out[key] = mapped if mapped is not None else data[key]
    return out


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
    path: Annotated[Optional[str], InputFile()] = Field(None, description="npz pairs file: pairs, pts3d_i, pts3d_j, conf_i, conf_j (see docs).")


class PrecomputedPairPredictor(PairPredictor):
    """Pair pointmaps read from an npz file instead of a network (any model, or synthetic data)."""

    name: ClassVar[str] = "precomputed"
    config_model = PrecomputedPairsConfig
    config: PrecomputedPairsConfig

    def run(self, inputs: PairInputs, ctx: RunContext) -> PairPredictions:
        where = f"stages.pair_predictor.path {self.config.path}"
        data = _open_npz(self.config.path, "pair_predictor")
        with data:
            _check_keys(data.files, PAIR_KEYS, where, "pairs")
            arrays = _npz_arrays(data, str(self.config.path), PAIR_KEYS)
            _check_pairs_arrays(arrays, where, inputs.frames.size_hw)
            needed = np.asarray(inputs.pairs, np.int64).reshape(-1, 2)
            rows = _rows_for(needed, arrays["pairs"], where, "pair")
            out = {k: ctx.output(k, (len(needed),) + tuple(arrays[k].shape[1:]), np.float32) for k in PAIR_KEYS[1:]}
            block = 8  # pairs per write: Zarr writes the block's chunks concurrently
            with ctx.progress(len(needed), ctx.stage_label or "pair_predictor (precomputed)") as bar:
                for n in range(0, len(rows), block):
                    for k, arr in out.items():
                        arr[n:n + block] = np.stack([arrays[k][r] for r in rows[n:n + block].tolist()])
                    bar.advance(len(rows[n:n + block]))
            return PairPredictions(pairs=needed, **out)


class PrecomputedFlowConfig(StageConfig):
    type: Literal["precomputed"] = "precomputed"
    path: Annotated[Optional[str], InputFile()] = Field(None, description="npz flow file: pairs, flow (both directions of every edge).")


class PrecomputedFlowEstimator(FlowEstimator):
    """Optical flow read from an npz file instead of a flow network."""

    name: ClassVar[str] = "precomputed"
    config_model = PrecomputedFlowConfig
    config: PrecomputedFlowConfig

    def run(self, inputs: FlowInputs, ctx: RunContext) -> FlowField:
        where = f"stages.flow_estimator.path {self.config.path}"
        data = _open_npz(self.config.path, "flow_estimator")
        with data:
            _check_keys(data.files, FLOW_KEYS, where, "flow")
            arrays = _npz_arrays(data, str(self.config.path), FLOW_KEYS)
            _check_flow_arrays(arrays, where, inputs.frames.size_hw)
            needed = np.asarray(inputs.pairs, np.int64).reshape(-1, 2)
            fwd = _rows_for(needed, arrays["pairs"], where, "flow for pair")
            bwd = _rows_for(needed[:, ::-1], arrays["pairs"], where, "flow for pair")
            flow = arrays["flow"]
            shape = (len(needed),) + tuple(flow.shape[1:])
            flow_ij, flow_ji = ctx.output("flow_ij", shape, np.float32), ctx.output("flow_ji", shape, np.float32)
            for n, (a, b) in enumerate(zip(fwd.tolist(), bwd.tolist())):
                flow_ij[n] = flow[a]
                flow_ji[n] = flow[b]
            return FlowField(pairs=needed, flow_ij=flow_ij, flow_ji=flow_ji)


STAGES = (PrecomputedPairPredictor, PrecomputedFlowEstimator)
