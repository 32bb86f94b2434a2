"""Scene graphs: which directed frame pairs (i, j) the pair predictor runs on.

The graph strings are those of DUSt3R/MonST3R's ``make_pairs``:

=============================  =====================================================================
``complete``                   every unordered pair
``swin-K``                     partners i+1 .. i+K
``swinstride-K``               partners i+1, i+3, ..., i+2K-1 (MonST3R's default, ``-noncyclic``)
``swin2stride-K``              partners i+1, i+4, ..., i+3K-2
``logwin-K``                   partners i +- 1, 2, 4, ..., 2^(K-1)
``oneref-K``                   (K, j) for every j, *including* the self-pair (K, K); never symmetrised
=============================  =====================================================================

The windowed graphs (``swin*``, ``logwin``) wrap around the end of the video (loop closure) unless
the string ends with ``-noncyclic``. With ``symmetrize`` every unordered edge is returned in both
directions: first all (i, j), then the same list swapped. With exactly 2 frames pairs are always
symmetrised, as in the official code.

Deliberate differences from the official ``make_pairs`` (the multiset of pairs is otherwise equal):

* **Window-prefix quirk.** The official code switches symmetrisation off for any string starting
  with ``swin-1``. That is meant for a window of 1 but also matches windows 10 to 19
  (``swin-12`` comes out one-directional). Here only a window of exactly 1 (``swin-1``,
  ``swin-1-noncyclic``) is left unsymmetrised; windows 10-19 are symmetrised like any other.
* **Order.** The official swin/logwin order is CPython's iteration order of a ``set`` of tuples;
  here the unordered edges are sorted by (i, j), so the output is deterministic.
* **Cyclic self-pairs.** With wrap-around and a window reaching a whole loop (e.g. ``swin2stride-5``
  on 10 frames: partner i+10), the official code adds (i, i). Those degenerate edges are dropped here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import RecipeError

VALID_FORMS = (
    "complete",
    "swin-K[-noncyclic]",
    "swinstride-K[-noncyclic]",
    "swin2stride-K[-noncyclic]",
    "logwin-K[-noncyclic]",
    "oneref-K",
    "oneref-mid",
)

_WINDOWED = re.compile(r"^(swin|swinstride|swin2stride|logwin)-(\d+)(-noncyclic)?$")
_ONEREF = re.compile(r"^oneref-(\d+|mid)$")
_STRIDE = {"swin": 1, "swinstride": 2, "swin2stride": 3}


@dataclass(frozen=True)
class SceneGraphSpec:
    """A parsed graph string. kind: complete/swin/swinstride/swin2stride/logwin/oneref;
    size: window size K or reference frame (-1 = middle frame); cyclic: wrap around."""

    kind: str
    size: int = 0
    cyclic: bool = True


def _error(scene_graph: str, why: str) -> RecipeError:
    return RecipeError(
        f"scene graph {scene_graph!r}: {why}; valid forms: {', '.join(VALID_FORMS)} "
        "(K a positive integer, e.g. 'swinstride-5-noncyclic')"
    )


def parse_scene_graph(scene_graph: str) -> SceneGraphSpec:
    """Validate a graph string (independent of the frame count).

    Raises:
        RecipeError: unknown form or a zero window, listing the valid forms.
    """
    text = str(scene_graph).strip()
    if text == "complete":
        return SceneGraphSpec("complete")
    m = _WINDOWED.match(text)
    if m:
        kind, size, noncyclic = m.group(1), int(m.group(2)), m.group(3)
        if size < 1:
            raise _error(scene_graph, "the window size must be >= 1")
        return SceneGraphSpec(kind, size, cyclic=noncyclic is None)
    m = _ONEREF.match(text)
    if m:
        ref = -1 if m.group(1) == "mid" else int(m.group(1))
        return SceneGraphSpec("oneref", ref, cyclic=False)
    raise _error(scene_graph, "unknown form")


def _unordered_edges(spec: SceneGraphSpec, n: int) -> set[tuple[int, int]]:
    if spec.kind == "logwin":
        offsets = [2 ** k for k in range(spec.size)]
        offsets = offsets + [-o for o in offsets]
    else:
        stride = _STRIDE[spec.kind]
        offsets = list(range(1, stride * spec.size + 1, stride))
    idx = np.arange(n)[:, None]
    partners = idx + np.asarray(offsets)[None, :]
    if spec.cyclic:
        partners = partners % n
    i = np.broadcast_to(idx, partners.shape)
    valid = (partners >= 0) & (partners < n) & (partners != i)
    lo = np.minimum(i, partners)[valid]
    hi = np.maximum(i, partners)[valid]
    return set(zip(lo.tolist(), hi.tolist()))


def make_pairs(n_frames: int, scene_graph: str, symmetrize: bool = True) -> np.ndarray:
    """Directed frame pairs for a scene graph.

    Args:
        n_frames: number of frames F (>= 1).
        scene_graph: a graph string (see the module docstring / ``VALID_FORMS``).
        symmetrize: also return every edge reversed (ignored for ``oneref``, forced for F == 2).

    Returns:
        (P, 2) int64 array of (i, j) frame indices: view i is the reference camera of the pair.

    Raises:
        RecipeError: unknown graph string, or a ``oneref`` reference outside 0..F-1.
    """
    spec = parse_scene_graph(scene_graph)
    n = int(n_frames)
    if n < 1:
        raise RecipeError(f"scene graph {scene_graph!r}: needs at least 1 frame, got {n}")
    if spec.kind == "complete":
        pairs = [(i, j) for i in range(n) for j in range(i)]
    elif spec.kind == "oneref":
        ref = n // 2 if spec.size < 0 else spec.size
        if ref >= n:
            raise RecipeError(
                f"scene graph {scene_graph!r}: reference frame {ref} is outside 0..{n - 1}; pick a smaller K or 'oneref-mid'"
            )
        pairs = [(ref, j) for j in range(n)]
    else:
        pairs = sorted(_unordered_edges(spec, n))
    one_way = spec.kind == "oneref" or (spec.kind == "swin" and spec.size == 1)
    if (symmetrize and not one_way) or n == 2:
        pairs = pairs + [(j, i) for i, j in pairs]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


class PairIndex:
    """A pair list sorted once, to look up many query pairs in it (see :func:`pair_rows`).

    Build one per stage (or per record) and call :meth:`rows` as often as needed: each call costs
    a binary search per query pair, not a sort of the stored list.
    """

    __slots__ = ("_base", "_order", "_ordered", "n_pairs")

    def __init__(self, stored: np.ndarray) -> None:
        stored = np.asarray(stored, np.int64).reshape(-1, 2)
        self.n_pairs = len(stored)
        self._base = int(stored.max()) + 1 if len(stored) else 1
        codes = stored[:, 0] * self._base + stored[:, 1]
        self._order = np.argsort(codes, kind="stable")
        self._ordered = codes[self._order]

    def _find(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.n_pairs == 0:
            return np.full(len(a), -1, np.int64)
        inside = (a >= 0) & (a < self._base) & (b >= 0) & (b < self._base)  # else stored nowhere
        keys = np.where(inside, a * self._base + b, -1)
        pos = np.minimum(np.searchsorted(self._ordered, keys, side="left"), self.n_pairs - 1)
        return np.where(inside & (self._ordered[pos] == keys), self._order[pos], -1)

    def rows(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, forward)`` of :func:`pair_rows` for (Q, 2) directed query pairs."""
        query = np.asarray(query, np.int64).reshape(-1, 2)
        fwd = self._find(query[:, 0], query[:, 1])
        bwd = self._find(query[:, 1], query[:, 0])
        return np.where(fwd >= 0, fwd, bwd).astype(np.int64), fwd >= 0


def pair_rows(stored: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each directed query pair is in a pair list, read as stored or reversed.

    The one lookup behind every "which row holds the flow / prediction of (i, j)" question: a
    record stores each pair once (flow: unique edges, read backwards through ``flow_ji``). Many
    lookups in one list: build a :class:`PairIndex` once.

    Args:
        stored: (P, 2) int frame pairs, e.g. ``FlowField.pairs``.
        query: (Q, 2) int directed pairs (i, j).
    Returns:
        rows (Q,) int64, the row holding (i, j), else the row holding (j, i), else -1 (the first
        such row when a pair is stored twice); forward (Q,) bool, True where the row holds (i, j)
        as is.
    """
    return PairIndex(stored).rows(query)
