"""Robust rotation averaging over a graph of relative rotations (classical recipe, ``flow_triangulation``).

Initialised by chaining relative rotations along a spanning tree of the temporally closest edges,
then refined by iteratively reweighted least squares on the rotation manifold (Cauchy weights);
rotation logs and exps are batched through roma.
"""

from __future__ import annotations

import math

import numpy as np

from monst3r_framework.scene_graph import pair_rows

__all__ = ["average_rotations"]


def average_rotations(edges: np.ndarray, rel_rot: np.ndarray, n_frames: int, *, scale_deg: float = 0.5,
                      iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Robust rotation averaging: camera rotations most consistent with the edges' relative rotations.

    Initialisation by chaining the edges of a spanning tree of the smallest frame gaps (one anchor
    frame per connected component), then iteratively
    reweighted least squares on the rotation manifold: each step solves
    ``d_b - d_a = -R_a^T log(R_ab^T R_b R_a^T)`` for increments ``R <- R exp(d)``, Cauchy weights of
    scale ``scale_deg`` on the edge residual angles, so an edge whose rotation is wrong by degrees
    (a rotation / translation ambiguity of a noisy two-view fit) hardly moves the others.

    Args:
        edges: (E, 2) int frame indices (a, b), a != b.
        rel_rot: (E, 3, 3) float64 rotation of cam_b_from_cam_a for each edge.
        n_frames: F; frames in no edge get the identity.
    Returns:
        cam_from_world rotations (F, 3, 3) float64 and each edge's residual angle (E,) in degrees.
    """
    import roma
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    e = len(edges)
    rots = np.tile(np.eye(3), (n_frames, 1, 1))
    if e == 0:
        return rots, np.zeros(0)
    # Initialisation: chain the relative rotations along a spanning tree of the temporally closest
    # edges (the smallest frame gaps: least parallax, so least exposed to the planar two-fold
    # ambiguity whose spurious rotation grows with the baseline), one anchor per component.
    gap = np.abs(edges[:, 1] - edges[:, 0]).astype(np.float64)
    graph = coo_matrix((gap + 1e-3 * np.arange(e) / e, (edges[:, 0], edges[:, 1])), shape=(n_frames, n_frames))
    _, label = connected_components(graph, directed=False)
    anchors = [int(np.flatnonzero(label == c)[0]) for c in np.unique(label)]
    tree = minimum_spanning_tree(graph).tocoo()
    tree_sym = coo_matrix((np.ones(2 * len(tree.row)), (np.r_[tree.row, tree.col], np.r_[tree.col, tree.row])),
                          shape=(n_frames, n_frames)).tocsr()
    for root in anchors:
        order, parent = breadth_first_order(tree_sym, root, directed=False)
        children = order[1:]
        rows, forward = pair_rows(edges, np.stack([parent[children], children], -1))
        for f, m, fwd in zip(children.tolist(), rows.tolist(), forward.tolist()):  # parents come first in BFS order
            p_ = int(parent[f])
            # (p, f) stored: R_f = R_pf R_p; (f, p) stored: R_p = R_fp R_f
            rots[f] = (rel_rot[m] if fwd else rel_rot[m].T) @ rots[p_]
    # IRLS on the manifold: unknown increments d (F, 3), anchors fixed.
    free = np.setdiff1d(np.arange(n_frames), anchors)
    col = -np.ones(n_frames, np.int64)
    col[free] = np.arange(len(free))
    scale = math.radians(scale_deg)

    def residuals() -> np.ndarray:
        err = np.transpose(rel_rot, (0, 2, 1)) @ rots[edges[:, 1]] @ np.transpose(rots[edges[:, 0]], (0, 2, 1))
        return roma.rotmat_to_rotvec(torch.from_numpy(np.ascontiguousarray(err))).numpy()

    res = residuals()
    for _ in range(iterations):
        if len(free) == 0:
            break
        wgt = 1.0 / (1.0 + (np.linalg.norm(res, axis=1) / scale) ** 2)
        inc = np.zeros((e, n_frames))
        inc[np.arange(e), edges[:, 1]] = 1.0
        inc[np.arange(e), edges[:, 0]] -= 1.0
        lhs = (inc[:, free] * wgt[:, None]).T @ inc[:, free]
        target = -np.einsum("eji,ej->ei", rots[edges[:, 0]], res)  # -R_a^T r per edge, (E, 3)
        d = np.zeros((n_frames, 3))
        d[free] = np.linalg.solve(lhs + 1e-12 * np.eye(len(free)), (inc[:, free] * wgt[:, None]).T @ target)
        rots = rots @ roma.rotvec_to_rotmat(torch.from_numpy(d)).numpy()
        res = residuals()
        if np.abs(d).max() < 1e-10:
            break
    return rots, np.degrees(np.linalg.norm(res, axis=1))
