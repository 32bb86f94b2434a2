"""Loss terms of the MonST3R global alignment, batched over all edges.

Two implementations of the two per-edge terms (alignment and flow), with the same value and
gradient:

* ``autograd``: plain torch ops over all edges at once (the official batched formulation);
* ``fused``: a custom autograd function that computes the value and its gradient in one pass over
  chunks of edges and keeps only per-frame / per-edge gradients. It never materialises the
  (P, H*W, 3) intermediates of the whole graph or their autograd graph, which cuts time and
  peak memory several-fold on CPU.

Shapes: F frames, P directed edges, N = H*W pixels per frame. Points and poses are float32.
"""

from __future__ import annotations

import contextlib
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, ContextManager, Iterator, Optional, Sequence

import torch

from ..threads import torch_threads


def _single_threaded_ops() -> ContextManager[None]:
    """Run torch ops on one intra-op thread each (restored afterwards)."""
    return torch_threads(1)


#: worker threads of the fused kernels when set (kernel_workers); None: torch.get_num_threads()
_WORKERS: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("monst3r_ga_kernel_workers", default=None)


def worker_count() -> int:
    """Worker threads the fused kernels split their edges over."""
    n = _WORKERS.get()
    return max(1, n if n is not None else torch.get_num_threads())


@contextlib.contextmanager
def kernel_workers(n: int) -> Iterator[None]:
    """Fused kernels use ``n`` workers whatever torch's intra-op thread count is, so a caller can run
    its own ops single-threaded (no OpenMP barriers between small ops) and still split the kernels."""
    token = _WORKERS.set(n)
    try:
        yield
    finally:
        _WORKERS.reset(token)


def _edge_ranges(n_edges: int, chunk: int, workers: int) -> list[tuple[int, int]]:
    """Split [0, n_edges) into at most ``workers`` contiguous ranges, each a whole number of chunks."""
    n_chunks = -(-n_edges // chunk)
    workers = max(1, min(workers, n_chunks))
    bounds = [round(k * n_chunks / workers) * chunk for k in range(workers + 1)]
    return [(lo, min(hi, n_edges)) for lo, hi in zip(bounds[:-1], bounds[1:]) if lo < hi]


def _map_edge_ranges(n_edges: int, chunk: int, work: Callable[[int, int], Sequence[torch.Tensor]],
                     device: torch.device) -> list[Sequence[torch.Tensor]]:
    """Run ``work(lo, hi)`` over edge ranges; on CPU with several threads, one range per thread.

    Small per-chunk ops scale poorly with intra-op threads (each op is a parallel region with its
    own barrier, and the (3, N) @ (N, 3) reductions run on one core). Giving each thread its own
    range of chunks, with single-threaded ops, keeps every core busy. Results come back in range
    order, so sums over them are deterministic for a given thread count.
    """
    threads = worker_count()
    ranges = _edge_ranges(n_edges, chunk, threads if device.type == "cpu" else 1)
    if len(ranges) == 1:
        return [work(*ranges[0])]
    def run(r: tuple[int, int]) -> Sequence[torch.Tensor]:
        with torch.no_grad():  # grad mode is per thread; the forward of a Function runs without it
            return work(*r)

    with _single_threaded_ops(), ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(run, ranges))


# ------------------------------------------------------------------------------------------
# alignment: sum_e sum_px w * || X_world[idx[e], :, px] - (M_e @ pred[e, :, px] + T_e) ||
# Arrays are channel-first ((.., 3, N)): every per-coordinate op runs on contiguous rows, and the
# 3x3 maps are (3, 3) @ (3, N) products, ~3x faster on CPU than (N, 3) @ (3, 3).
# ------------------------------------------------------------------------------------------


def align_sum_autograd(
    x_world: torch.Tensor, idx: torch.Tensor, mat: torch.Tensor, trans: torch.Tensor,
    pred: torch.Tensor, weight: torch.Tensor,
) -> torch.Tensor:
    """Confidence-weighted point distance summed over edges and pixels.

    Args:
        x_world: (F, 3, N) each frame's global points.
        idx: (P,) int64 frame of each edge's view.
        mat: (P, 3, 3) edge linear map (scaled rotation times the adaptor diagonal).
        trans: (P, 3) edge translation.
        pred: (P, 3, N) the edge's pointmap of that view, in the edge's (view i) camera frame.
        weight: (P, N) per-pixel weight (transformed confidence).
    Returns:
        scalar tensor.
    """
    aligned = torch.baddbmm(trans[:, :, None], mat, pred)
    return ((x_world[idx] - aligned).norm(dim=1) * weight).sum()


class _AlignSumFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_world, mat, trans, idx, pred, weight, chunk):  # type: ignore[override]
        need_x = ctx.needs_input_grad[0]
        grad_m = torch.empty_like(mat)
        grad_t = torch.empty_like(trans)

        def work(lo: int, hi: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
            grad_x = torch.zeros_like(x_world) if need_x else None
            total = x_world.new_zeros(())
            for s in range(lo, hi, chunk):
                e = slice(s, min(s + chunk, hi))
                ids = idx[e]
                d = x_world.index_select(0, ids)
                d.sub_(torch.baddbmm(trans[e, :, None], mat[e], pred[e]))
                n = d[:, 0] * d[:, 0]
                n.addcmul_(d[:, 1], d[:, 1]).addcmul_(d[:, 2], d[:, 2]).sqrt_()
                total += torch.dot(n.flatten(), weight[e].flatten())
                # gradient of w * ||d|| with respect to d; d == 0 gives 0 (as torch's norm backward)
                d.mul_((weight[e] / n.clamp_min_(1e-30)).unsqueeze(1))
                if need_x:
                    grad_x.index_add_(0, ids, d)
                torch.bmm(d, pred[e].transpose(1, 2), out=grad_m[e])
                torch.sum(d, dim=2, out=grad_t[e])
            return total, grad_x

        parts = _map_edge_ranges(pred.shape[0], chunk, work, x_world.device)
        total = parts[0][0]
        grad_x = parts[0][1]
        for t_k, g_k in parts[1:]:
            total = total + t_k
            if need_x:
                grad_x += g_k
        grad_m.neg_()
        grad_t.neg_()
        ctx.save_for_backward(*(g for g in (grad_x, grad_m, grad_t) if g is not None))
        ctx.has_x = need_x
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        gx = saved.pop(0) * grad_out if ctx.has_x else None
        gm, gt = saved
        return gx, gm * grad_out, gt * grad_out, None, None, None, None


def align_sum_fused(
    x_world: torch.Tensor, idx: torch.Tensor, mat: torch.Tensor, trans: torch.Tensor,
    pred: torch.Tensor, weight: torch.Tensor, chunk: int = 4,
) -> torch.Tensor:
    """Same value and gradient as :func:`align_sum_autograd`, computed chunk by chunk of edges."""
    return _AlignSumFused.apply(x_world, mat, trans, idx, pred, weight, int(chunk))


# ------------------------------------------------------------------------------------------
# flow: smooth-L1 between ego-motion flow and the estimated flow on static pixels
# ------------------------------------------------------------------------------------------


def ego_motion_maps(
    world_from_cam: torch.Tensor, intrinsics: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-edge maps of the ego-motion warp (official ``DepthBasedWarping``).

    A pixel (u, v) of frame ``src`` with disparity ``disp`` lands at
    ``p = A [u, v, 1] + disp * b`` (homogeneous, in frame ``dst``), with
    ``A = K_dst R_dst^T R_src K_src^-1`` and ``b = K_dst R_dst^T (t_src - t_dst)``.

    Args:
        world_from_cam: (F, 4, 4) camera-to-world.
        intrinsics: (F, 3, 3).
        src, dst: (P,) int64 frame indices.
    Returns:
        A (P, 3, 3), b (P, 3).
    """
    rot, t = world_from_cam[:, :3, :3], world_from_cam[:, :3, 3]
    k_inv = torch.linalg.inv(intrinsics)
    kd_rdt = intrinsics[dst] @ rot[dst].transpose(1, 2)
    a = kd_rdt @ rot[src] @ k_inv[src]
    b = (kd_rdt @ (t[src] - t[dst]).unsqueeze(-1)).squeeze(-1)
    return a, b


def ego_flow(a: torch.Tensor, b: torch.Tensor, disp: torch.Tensor, grid_h: torch.Tensor) -> torch.Tensor:
    """(P, 2, N) ego-motion flow from (P, 3, 3) A, (P, 3) b, (P, N) source disparity and (3, N) [u; v; 1]."""
    p = torch.matmul(a, grid_h) + b.unsqueeze(-1) * disp.unsqueeze(1)
    return p[:, :2] / (p[:, 2:] + 1e-6) - grid_h[:2]


def _smooth_l1(err: torch.Tensor) -> torch.Tensor:
    a = err.abs()
    return torch.where(a < 1.0, 0.5 * err * err, a - 0.5)


def masked_smooth_l1_sums(
    est: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor, pixel_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``smooth_L1_loss_fn`` (beta 1) as (sum, count); the loss is sum / count.

    Args:
        est, obs: flows with a channel axis of size 2 (e.g. (B, 2, H, W) or (P, 2, N)).
        mask: same shape with a channel axis of size 1, bool or 0/1: pixels taking part.
        pixel_threshold: elements with loss >= this are dropped; with 0 nothing is dropped and the
            count is the number of masked pixels, not elements (the official quirk).
    """
    m = mask.to(est.dtype)
    loss = _smooth_l1(est * m - obs * m)
    if pixel_threshold > 0:
        keep = (loss < pixel_threshold).to(est.dtype) * m
        return (loss * keep).sum(), keep.sum()
    return (loss * m).sum(), m.sum()


def flow_sums_autograd(
    disp: torch.Tensor, src: torch.Tensor, a: torch.Tensor, b: torch.Tensor, grid_h: torch.Tensor,
    flow_obs: torch.Tensor, static: torch.Tensor, pixel_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked, thresholded smooth-L1 flow loss as (sum, count); the loss is sum / count.

    Args:
        disp: (F, N) disparity 1 / (depth + 1e-6) of every frame.
        src: (P,) source frame of each edge.
        a, b: ego-motion maps of each edge (see :func:`ego_motion_maps`).
        grid_h: (3, N) homogeneous pixel grid [u; v; 1].
        flow_obs: (P, 2, N) estimated flow from src to dst, pixels (dx; dy).
        static: (F, N) bool, True where a pixel takes part (not dynamic).
        pixel_threshold: see :func:`masked_smooth_l1_sums`.
    """
    est = ego_flow(a, b, disp[src], grid_h)
    return masked_smooth_l1_sums(est, flow_obs, static[src].unsqueeze(1), pixel_threshold)


class _FlowSumsFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, disp, a, b, src, grid_h, flow_obs, static, pixel_threshold, chunk):  # type: ignore[override]
        need_d = ctx.needs_input_grad[0]
        grad_a = torch.empty_like(a)
        grad_b = torch.empty_like(b)
        uv = grid_h[:2]
        # a transposed *view* of the (3, N) grid: (c, 3, N) @ (N, 3) then runs as one well-shaped GEMM
        # (a contiguous (N, 3) copy is ~4x slower on CPU)
        grid_t = grid_h.t()
        static_f = static.to(disp.dtype)

        def work(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
            grad_d = torch.zeros_like(disp) if need_d else None
            total = disp.new_zeros(())
            count = disp.new_zeros(())
            for s in range(lo, hi, chunk):
                e = slice(s, min(s + chunk, hi))
                ids = src[e]
                d_sel = disp.index_select(0, ids)
                p = torch.matmul(a[e], grid_h)
                p.addcmul_(b[e].unsqueeze(-1), d_sel.unsqueeze(1))
                z = p[:, 2:].add_(1e-6)
                q = p[:, :2].div_(z)
                err = q - uv
                err.sub_(flow_obs[e])
                # smooth-L1 (beta 1) with c = min(|e|, 1): loss = c (|e| - c / 2), d loss / d e = clamp(e, -1, 1)
                aerr = err.abs()
                c = aerr.clamp(max=1.0)
                loss = aerr.sub_(c, alpha=0.5).mul_(c)
                m = static_f.index_select(0, ids).unsqueeze(1)  # masked-out pixels contribute nothing
                if pixel_threshold > 0 and float(loss.max()) >= pixel_threshold:
                    keepf = (loss < pixel_threshold).to(loss.dtype).mul_(m)
                    count += keepf.sum()
                    total += torch.dot(loss.flatten(), keepf.flatten())
                else:  # nothing over the threshold (the usual case): the mask alone, one pass less
                    keepf = m
                    count += m.sum() if pixel_threshold <= 0 else 2.0 * m.sum()
                    total += torch.dot(loss.sum(dim=1).flatten(), m.flatten())
                # gp = d loss / d p: xy rows clamp(e, -1, 1) * keep / z, z row -(gx qx + gy qy)
                gp = torch.empty_like(p)
                ge = torch.clamp(err, -1.0, 1.0, out=gp[:, :2]).mul_(keepf).div_(z)
                gz = torch.mul(ge[:, 0], q[:, 0], out=gp[:, 2])
                gz.addcmul_(ge[:, 1], q[:, 1]).neg_()
                torch.matmul(gp, grid_t, out=grad_a[e])
                torch.sum(gp * d_sel.unsqueeze(1), dim=2, out=grad_b[e])
                if need_d:
                    grad_d.index_add_(0, ids, torch.bmm(b[e].unsqueeze(1), gp).squeeze(1))
            return total, count, grad_d

        parts = _map_edge_ranges(a.shape[0], chunk, work, disp.device)
        total, count, grad_d = parts[0]
        for t_k, c_k, g_k in parts[1:]:
            total = total + t_k
            count = count + c_k
            if need_d:
                grad_d += g_k
        ctx.save_for_backward(*(g for g in (grad_d, grad_a, grad_b) if g is not None))
        ctx.has_d = need_d
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx, grad_total, grad_count):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        gd = saved.pop(0) * grad_total if ctx.has_d else None
        ga, gb = saved
        return gd, ga * grad_total, gb * grad_total, None, None, None, None, None, None


def flow_sums_fused(
    disp: torch.Tensor, src: torch.Tensor, a: torch.Tensor, b: torch.Tensor, grid_h: torch.Tensor,
    flow_obs: torch.Tensor, static: torch.Tensor, pixel_threshold: float, chunk: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as :func:`flow_sums_autograd`, computed chunk by chunk of edges."""
    return _FlowSumsFused.apply(disp, a, b, src, grid_h, flow_obs, static, float(pixel_threshold), int(chunk))


# ------------------------------------------------------------------------------------------
# per-frame terms
# ------------------------------------------------------------------------------------------


def temporal_smoothness(world_from_cam: torch.Tensor, translation_weight: float) -> torch.Tensor:
    """sum_k ||R_rel - I||_F + translation_weight * ||t_rel||, rel = inv(P_k) @ P_{k+1}."""
    if world_from_cam.shape[0] < 2:
        return world_from_cam.new_zeros(())
    rel = torch.linalg.inv(world_from_cam[:-1]) @ world_from_cam[1:]
    eye = torch.eye(3, dtype=rel.dtype, device=rel.device)
    rot = (rel[:, :3, :3] - eye).norm(dim=(1, 2))
    return (rot + translation_weight * rel[:, :3, 3].norm(dim=1)).sum()


def velocity_smoothness(world_from_cam: torch.Tensor, translation_weight: float) -> torch.Tensor:
    """Constant-velocity prior: sum_k ||R_k+1 - R_k||_F + translation_weight ||t_k+1 - t_k|| over the
    relative motions rel_k = inv(P_k) @ P_{k+1} (zero for uniform motion, unlike :func:`temporal_smoothness`)."""
    if world_from_cam.shape[0] < 3:
        return world_from_cam.new_zeros(())
    rot, t = world_from_cam[:, :3, :3], world_from_cam[:, :3, 3]
    r_rel = rot[:-1].transpose(1, 2) @ rot[1:]
    t_rel = (rot[:-1].transpose(1, 2) @ (t[1:] - t[:-1]).unsqueeze(-1)).squeeze(-1)
    return ((r_rel[1:] - r_rel[:-1]).norm(dim=(1, 2)) + translation_weight * (t_rel[1:] - t_rel[:-1]).norm(dim=1)).sum()


def depth_prior(depth: torch.Tensor, init_depth: torch.Tensor, dynamic: Optional[torch.Tensor]) -> torch.Tensor:
    """Scale-invariant log-depth prior towards the initial depth (official ``depth_regularization_si_weighted``).

    Args:
        depth, init_depth: (F, N) z-depth.
        dynamic: (F, N) bool or None; dynamic pixels get weight 2, static 1 (official weighting).
    """
    log_p = depth.clamp_min(1e-6).log()
    log_i = init_depth.clamp_min(1e-6).log()
    shift = (log_i - log_p).mean(dim=1, keepdim=True)
    w = 1.0 if dynamic is None else dynamic.to(depth.dtype) + 1.0
    return ((w * (log_p - log_i + shift) ** 2).mean(dim=1)).mean()
