"""Ground-truth-free quality signals of a finished alignment and the run summary built from them.

Per frame (all without ground truth):

* ``align_residual``: confidence-weighted mean distance between the frame's global points and the
  pair pointmaps aligned onto them (every edge that sees the frame, as view i or j), divided by the
  frame's median depth, so it is scale-free (0.01 = 1 % of the depth);
* ``flow_residual_px``: median |ego-motion flow - estimated flow| in pixels over the frame's static
  pixels, for the edges leaving the frame (-1 when the run has no flow: stage outputs must be finite);
* ``conf``: mean of the frame's confidence map (max over the edges that see it, as ``im_conf``).

The summary (a JSON-able dict) says which loss terms were active, whether and why the flow term
was skipped, the final value of every term and the worst frames by alignment residual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import MonST3RGAConfig
from .losses import ego_flow, ego_motion_maps
from .optimize import LOSS_NAMES, AlignProblem, conf_to_weight, frame_conf
from .params import SceneParams, pixel_grid_flat, world_points_cf

QUALITY_NAMES: tuple[str, ...] = ("align_residual", "flow_residual_px", "conf")


@torch.no_grad()
def frame_quality(problem: AlignProblem, params: SceneParams, cfg: MonST3RGAConfig, chunk: int = 8) -> np.ndarray:
    """(F, 3) float32 per-frame signals in the order of :data:`QUALITY_NAMES` (local frame order)."""
    h, w = problem.size_hw
    n_f = problem.n_frames
    grid = pixel_grid_flat(h, w).t().contiguous()
    x_world = world_points_cf(params, grid)
    pw = params.pw_world_from_pair()
    mat = pw[:, :3, :3] * params.pw_adaptors_xyz()[:, None, :]
    trans = pw[:, :3, 3]
    w_i = conf_to_weight(problem.conf_i, cfg.conf_transform)
    w_j = conf_to_weight(problem.conf_j, cfg.conf_transform)
    num = torch.zeros(n_f, dtype=torch.float64)
    den = torch.zeros(n_f, dtype=torch.float64)
    for s in range(0, problem.n_edges, chunk):
        e = slice(s, s + chunk)
        for idx, pred, wgt in ((problem.ei[e], problem.pred_i[e], w_i[e]), (problem.ej[e], problem.pred_j[e], w_j[e])):
            dist = (x_world[idx] - torch.baddbmm(trans[e, :, None], mat[e], pred)).norm(dim=1)
            num.index_add_(0, idx, (dist * wgt).sum(1).double())
            den.index_add_(0, idx, wgt.sum(1).double())
    med_depth = params.depth().median(dim=1).values.double().clamp_min(1e-12)
    align = (num / den.clamp_min(1e-12) / med_depth).float()

    flow_res = torch.full((n_f,), float("nan"))
    if problem.flow_fwd is not None:
        c2w = params.world_from_cam()
        k = params.intrinsics()
        disp = 1.0 / (params.depth() + 1e-6)
        grid_h = torch.cat([grid, torch.ones(1, h * w)], dim=0)
        a, b = ego_motion_maps(c2w, k, problem.ei, problem.ej)
        per_edge = torch.full((problem.n_edges,), float("nan"))
        for s in range(0, problem.n_edges, chunk):
            e = slice(s, s + chunk)
            est = ego_flow(a[e], b[e], disp[problem.ei[e]], grid_h)
            err = (est - problem.flow_fwd[e]).norm(dim=1)
            static = problem.static[problem.ei[e]]
            per_edge[e] = torch.where(static, err, torch.nan).nanmedian(dim=1).values
        for f in range(n_f):
            vals = per_edge[problem.ei == f]
            vals = vals[torch.isfinite(vals)]
            if len(vals):
                flow_res[f] = vals.median()
    conf = frame_conf(problem).mean(dim=1)
    flow_res = torch.nan_to_num(flow_res, nan=-1.0)  # no flow / no static pixel: -1 (outputs must be finite)
    return torch.stack([align, flow_res, conf], dim=1).numpy().astype(np.float32)


def flow_term_report(history: np.ndarray, cfg: MonST3RGAConfig, use_flow: bool, flow_available: bool) -> dict[str, Any]:
    """What happened to the flow term, from the (I, T) loss history (``LOSS_NAMES`` columns)."""
    out: dict[str, Any] = {"weight": cfg.flow_loss_weight, "threshold": cfg.flow_loss_threshold}
    if cfg.flow_loss_weight <= 0:
        return {**out, "status": "off", "reason": "flow_loss_weight is 0"}
    if not use_flow:
        reason = "no flow estimator output" if not flow_available else "flow loss disabled"
        return {**out, "status": "off", "reason": reason}
    # windowed runs concatenate one history per window: look at each window's own flow start
    per_window = cfg.iterations if len(history) % cfg.iterations == 0 else len(history)
    start = int(np.ceil(per_window * cfg.flow_loss_start))
    hist = history.reshape(-1, per_window, history.shape[1])[:, start:]
    flow, raw = hist[..., LOSS_NAMES.index("flow")].ravel(), hist[..., LOSS_NAMES.index("flow_raw")].ravel()
    skipped = (flow == 0) & (raw > 0)
    out.update({"start_iteration": start, "value_at_start": float(raw[0]) if len(raw) else None,
                "skipped_iterations": int(skipped.sum()), "active_iterations": int((~skipped).sum())})
    if len(raw) and skipped.all():
        out.update(status="skipped", reason=(
            f"its value at the start iteration {start} ({raw[0]:.4g}) and after stayed above flow_loss_threshold "
            f"{cfg.flow_loss_threshold:g}: the initial cameras disagree with the flow; raise "
            f"stages.global_aligner.flow_loss_threshold (0 = never skip) or check the pose solver"))
    elif skipped.any():
        out.update(status="partly skipped", reason=(
            f"above flow_loss_threshold {cfg.flow_loss_threshold:g} in {int(skipped.sum())} of {len(raw)} iterations"))
    else:
        out.update(status="active", reason="")
    return out


def run_summary(history: np.ndarray, cfg: MonST3RGAConfig, quality: np.ndarray, *, use_flow: bool,
                flow_available: bool, n_worst: int = 3) -> dict[str, Any]:
    """JSON-able summary: active terms, flow term status, final term values, worst frames."""
    weights = {"align_i": 1.0, "align_j": 1.0, "flow": cfg.flow_loss_weight, "smoothness": cfg.smoothness_weight,
               "depth_prior": cfg.depth_prior_weight}
    final = {name: float(history[-1, k]) for k, name in enumerate(LOSS_NAMES)} if len(history) else {}
    flow = flow_term_report(history, cfg, use_flow, flow_available)
    active = [t for t, wt in weights.items() if wt > 0 and (t != "flow" or flow["status"] in ("active", "partly skipped"))]
    skipped = [t for t, wt in weights.items() if wt > 0 and t not in active]
    align = quality[:, 0]
    order = np.argsort(-np.nan_to_num(align, nan=-np.inf))[:n_worst]
    worst = [{"frame": int(f), **{name: (None if not np.isfinite(quality[f, c]) or quality[f, c] < 0 else float(quality[f, c]))
                                  for c, name in enumerate(QUALITY_NAMES)}} for f in order]
    med = float(np.nanmedian(align)) if np.isfinite(align).any() else float("nan")
    return {"terms_active": active, "terms_skipped": skipped, "flow_term": flow, "final": final,
            "worst_frames": worst, "median_align_residual": med}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines for the end of a run (the flow line only when something was skipped)."""
    lines = []
    flow = summary.get("flow_term", {})
    if flow.get("status") in ("skipped", "partly skipped"):
        lines.append(f"global_aligner: flow term {flow['status']}: {flow['reason']}")
    worst = summary.get("worst_frames", [])
    if worst:
        med = summary.get("median_align_residual")
        cells = ", ".join(f"{w['frame']} ({w['align_residual']:.3g})" for w in worst if w.get("align_residual") is not None)
        lines.append(f"global_aligner: terms {'+'.join(summary.get('terms_active', []))}"
                     + (f" (skipped: {', '.join(summary['terms_skipped'])})" if summary.get("terms_skipped") else "")
                     + f"; worst frames by alignment residual: {cells} (median {med:.3g})")
    return lines
