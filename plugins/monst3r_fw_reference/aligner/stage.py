"""The ``monst3r_ga`` global aligner stage: batched or windowed MonST3R global optimisation."""

from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np

from monst3r_framework.errors import StageError
from monst3r_framework.stages import AlignerInputs, GlobalAligner, Reconstruction, RunContext

from ..threads import torch_threads
from .config import MonST3RGAConfig


def estimate_batched_bytes(n_frames: int, n_edges: int, size_hw: tuple[int, int], *, use_flow: bool,
                           symmetric: bool, implementation: str, chunk: int) -> int:
    """Rough peak memory (bytes) of one batched optimisation, for choosing batched vs windowed."""
    n = size_hw[0] * size_hw[1]
    per_edge = 4 * (3 + 3 + 1 + 1 + 1 + 1)  # two pointmaps, confidences and their weights
    if use_flow:
        per_edge += 4 * 2 * (1 if symmetric else 2)
    per_frame = 4 * 40  # parameters, Adam state, world points and their autograd graph
    if implementation == "autograd":
        work = n_edges * n * 4 * 3 * 12
    else:
        work = min(chunk, n_edges) * n * 4 * 3 * 10
    return int(n_edges * n * per_edge + n_frames * n * per_frame + work)


def _sim3_from_points(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted Umeyama (R (3,3), t (3,), s ()) with dst ~= s R src + t."""
    import roma

    r, t, s = roma.rigid_points_registration(src.double(), dst.double(), weights=weight.double(), compute_scaling=True)
    return r, t, s


def _apply_sim3(c2w: np.ndarray, depth: np.ndarray, r: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Map cameras (F, 4, 4) and depths (F, H, W) through x -> s R x + t."""
    rn, tn, sn = r.numpy(), t.numpy(), float(s)
    out = np.array(c2w, np.float64, copy=True)
    out[:, :3, :3] = rn @ out[:, :3, :3]
    out[:, :3, 3] = sn * out[:, :3, 3] @ rn.T + tn
    return out, np.asarray(depth) * sn


def _world_points(c2w: np.ndarray, k: np.ndarray, depth: np.ndarray, step: int) -> torch.Tensor:
    """(F, M, 3) float64 world points of every ``step``-th pixel."""
    import torch

    from .params import cam_points, pixel_grid_flat

    f, h, w = depth.shape
    grid = pixel_grid_flat(h, w).double()
    sel = torch.arange(0, h * w, step)
    d = torch.from_numpy(np.asarray(depth, np.float64).reshape(f, -1))[:, sel]
    kt = torch.from_numpy(np.asarray(k, np.float64))
    pts = cam_points(d, grid[sel], 0.5 * (kt[:, 0, 0] + kt[:, 1, 1])[:, None], kt[:, :2, 2])
    c = torch.from_numpy(np.asarray(c2w, np.float64))
    return pts @ c[:, :3, :3].transpose(1, 2) + c[:, None, :3, 3]


def _camera_anchor_points(c2w: np.ndarray, depth: np.ndarray) -> torch.Tensor:
    """(2F, 3) float64: camera centres and the points one median depth along each optical axis."""
    import torch

    c = np.asarray(c2w, np.float64)
    med = np.median(np.asarray(depth, np.float64).reshape(len(c), -1), axis=1)
    ahead = c[:, :3, 3] + med[:, None] * c[:, :3, 2]
    return torch.from_numpy(np.concatenate([c[:, :3, 3], ahead], axis=0))


def _results(params: SceneParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    h, w = params.size_hw
    with torch.no_grad():
        c2w = params.world_from_cam().double().numpy()
        k = params.intrinsics().double().numpy()
        depth = params.depth().reshape(-1, h, w).numpy().astype(np.float32)
    return c2w, k, depth


class MonST3RGlobalAligner(GlobalAligner):
    """MonST3R global alignment: per-frame depth, poses and focal from all pair pointmaps, with the
    ego-motion flow loss on static pixels and temporal pose smoothness; batched or windowed."""

    name: ClassVar[str] = "monst3r_ga"
    version: ClassVar[str] = "1"
    config_model = MonST3RGAConfig
    config: MonST3RGAConfig

    def choose_mode(self, n_frames: int, n_edges: int, size_hw: tuple[int, int], use_flow: bool, symmetric: bool) -> str:
        """'batched' or 'windowed' for this input (``mode: auto`` uses the memory estimate)."""
        cfg = self.config
        if cfg.mode != "auto":
            return cfg.mode
        need = estimate_batched_bytes(n_frames, n_edges, size_hw, use_flow=use_flow, symmetric=symmetric,
                                      implementation=cfg.implementation, chunk=cfg.chunk_edges)
        fits = need <= cfg.max_memory_gb * 2**30
        return "batched" if fits or n_frames <= self.fitted_window_size(n_frames, n_edges, size_hw, use_flow, symmetric) \
            else "windowed"

    def fitted_window_size(self, n_frames: int, n_edges: int, size_hw: tuple[int, int], use_flow: bool,
                           symmetric: bool) -> int:
        """Frames per window: ``window_size``, or with ``window_fit_memory`` the largest size up to it whose
        batched estimate (the video's pairs per frame) fits ``max_memory_gb``, at least ``window_overlap + 2``."""
        cfg = self.config
        if not cfg.window_fit_memory:
            return cfg.window_size
        budget, per_frame = cfg.max_memory_gb * 2**30, n_edges / max(n_frames, 1)
        for size in range(cfg.window_size, cfg.window_overlap + 2, -1):
            if estimate_batched_bytes(size, round(per_frame * size), size_hw, use_flow=use_flow, symmetric=symmetric,
                                      implementation=cfg.implementation, chunk=cfg.chunk_edges) <= budget:
                return size
        return cfg.window_overlap + 2

    def run(self, inputs: AlignerInputs, ctx: RunContext) -> Reconstruction:
        from .data import FlowLookup, is_symmetric
        from .optimize import LOSS_NAMES
        from .quality import QUALITY_NAMES, run_summary, summary_lines

        if self.config.shared_focal == "auto":
            # resolved once from the initial focals; everything below sees a bool
            focals = np.asarray(inputs.init.intrinsics, np.float64)[:, 0, 0]
            shared = bool(focals.max() <= 1.01 * focals.min())
            if not shared:
                ctx.log(f"monst3r_ga: shared_focal auto -> one focal per frame (initial focals "
                        f"{focals.min():.1f}-{focals.max():.1f} px)")
            original = self.config
            self.config = original.model_copy(update={"shared_focal": shared})
            try:
                return self.run(inputs, ctx)
            finally:
                self.config = original
        cfg = self.config
        if cfg.window_overlap >= cfg.window_size:
            raise StageError(
                f"global_aligner monst3r_ga: window_overlap {cfg.window_overlap} must be smaller than window_size "
                f"{cfg.window_size}; lower window_overlap"
            )
        frames = inputs.frames
        n_frames = frames.n_frames
        pairs = np.asarray(inputs.predictions.pairs, dtype=np.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
            raise StageError(f"global_aligner monst3r_ga: predictions.pairs has shape {pairs.shape}, expected (P, 2) with P > 0")
        if pairs.min() < 0 or pairs.max() >= n_frames:
            raise StageError(f"global_aligner monst3r_ga: pair indices span [{pairs.min()}, {pairs.max()}], expected [0, {n_frames - 1}]")
        size_hw = (int(inputs.predictions.pts3d_i.shape[1]), int(inputs.predictions.pts3d_i.shape[2]))
        if tuple(inputs.init.depth.shape) != (n_frames,) + size_hw:
            raise StageError(
                f"global_aligner monst3r_ga: init depth has shape {tuple(inputs.init.depth.shape)}, expected "
                f"{(n_frames,) + size_hw}; the pose solver must run at the network resolution"
            )
        use_flow = cfg.flow_loss_weight > 0 and inputs.flow is not None
        if cfg.flow_loss_weight > 0 and inputs.flow is None:
            ctx.log("monst3r_ga: no flow estimator output; flow loss disabled")
        symmetric = is_symmetric(pairs)
        lookup = FlowLookup(np.asarray(inputs.flow.pairs)) if use_flow else None
        mode = self.choose_mode(n_frames, len(pairs), size_hw, use_flow, symmetric)
        size = self.fitted_window_size(n_frames, len(pairs), size_hw, use_flow, symmetric)
        init_c2w = np.asarray(inputs.init.world_from_cam, np.float64)
        init_k = np.asarray(inputs.init.intrinsics, np.float64)
        h, w = size_hw
        # per-frame outputs go straight into the store workspace (numpy outside the runner), so a
        # windowed run holds one window of per-pixel arrays, not the whole video
        out = _Outputs(ctx, n_frames, size_hw, len(QUALITY_NAMES))
        seams: tuple[int, ...] = ()
        with torch_threads(cfg.threads):
            if mode == "batched" or n_frames <= size:
                c2w, k, depth, conf, history, quality = self._batched(
                    inputs, np.arange(n_frames), np.arange(len(pairs)), use_flow, lookup, symmetric,
                    init_c2w, init_k, np.asarray(inputs.init.depth, np.float32), ctx)
                out.write(slice(0, n_frames), c2w, k, depth, conf, quality)
            else:
                history, seams = self._windowed(inputs, pairs, use_flow, lookup, init_c2w, init_k, out, ctx, size)
        c2w, k, quality = out.c2w, out.k, out.quality
        summary = run_summary(history, cfg, quality, use_flow=use_flow, flow_available=inputs.flow is not None)
        # settings that change the solution without a term of their own: say which were in force
        summary["focal"] = "shared" if cfg.shared_focal else "per_frame"
        if cfg.solver == "gauss_newton":
            summary["gn_free_depth"] = cfg.gn_free_depth
        notices = list(summary_lines(summary))
        if cfg.zoom_check > 0 and inputs.flow is not None and n_frames > 1:
            from .zoom import adjacent_zoom, zoom_report

            fits = adjacent_zoom(inputs.flow, inputs.masks, n_frames, k[:, 0, 0], k[:, :2, 2])
            summary["zoom"], line = zoom_report(fits, c2w, cfg.zoom_check)
            if line and cfg.shared_focal:
                notices.append(line)
        if seams:
            ratios = seam_step_ratios(c2w, seams)
            worst = int(np.argmax(ratios))
            summary["window_seams"] = {"frames": list(seams), "step_ratios": [round(float(r), 3) for r in ratios],
                                       "stitch": cfg.window_stitch,
                                       "window_size": size, "held": cfg.window_hold}
            ctx.log(f"monst3r_ga: {len(seams)} window seams, largest step {ratios[worst]:.2f}x the median step "
                    f"(frame {seams[worst]})")
            if cfg.seam_check > 0 and ratios[worst] > cfg.seam_check:
                jumps = [s for s, r in zip(seams, ratios) if r > cfg.seam_check]
                notices.append(f"global_aligner monst3r_ga: the camera jumps at window seams {jumps} (step up to "
                               f"{ratios[worst]:.1f}x the median step, seam_check {cfg.seam_check:g}); set "
                               "window_stitch: blend or raise window_overlap")
        pts = ctx.output("pts3d_world", (n_frames, h, w, 3), np.float32)
        dynamic = ctx.output("dynamic", (n_frames, h, w), bool)
        for s0 in range(0, n_frames, _FRAMES_PER_BLOCK):  # float64 world points of a block of frames at a time
            sl = slice(s0, min(n_frames, s0 + _FRAMES_PER_BLOCK))
            pts[sl] = _world_points(c2w[sl], k[sl], np.asarray(out.depth[sl], np.float32), 1).reshape(-1, h, w, 3).numpy()
            if inputs.masks is not None:
                dynamic[sl] = np.asarray(inputs.masks.dynamic[sl], bool)
        return Reconstruction(
            world_from_cam=c2w, intrinsics=k, intrinsics_original=frames.original_from_network()[None] @ k,
            depth=out.depth, conf=out.conf, pts3d_world=pts, dynamic=dynamic,
            loss_history=history, loss_names=LOSS_NAMES,
            frame_quality=quality, quality_names=QUALITY_NAMES, run_summary=summary,
            notices=tuple(notices), window_seams=seams,
        )

    # ------------------------------------------------------------------------------------------
    def _batched(self, inputs, frame_ids, edge_rows, use_flow, lookup, symmetric, c2w0, k0, d0, ctx,
                 fixed_frames=None):
        from .data import load_problem
        from .optimize import frame_conf, optimise, solver_steps
        from .quality import frame_quality

        cfg = self.config
        problem = load_problem(
            inputs, frame_ids, edge_rows, use_flow=use_flow, lookup=lookup, symmetric=symmetric,
            world_from_cam=c2w0, intrinsics=k0, depth=d0, fixed_frames=fixed_frames)
        iterations = solver_steps(cfg)
        with ctx.progress(iterations, f"global alignment ({len(frame_ids)} frames)") as bar:
            params, history = optimise(problem, cfg, log=ctx.log, progress=bar.advance)
        c2w, k, depth = _results(params)
        h, w = problem.size_hw
        conf = frame_conf(problem).reshape(-1, h, w).numpy()
        return c2w, k, depth, conf, history, frame_quality(problem, params, cfg)

    def window_starts(self, n_frames: int) -> list[int]:
        """First frame of each window (the last one ends at the last frame)."""
        return [start for start, _ in self.window_bounds(n_frames)]

    def window_bounds(self, n_frames: int, size: Optional[int] = None) -> list[tuple[int, int]]:
        """(start, end) of each window. Windows start every ``window_size - window_overlap`` frames;
        the last one ends at the last frame: with ``window_hold`` it is the next window cut short
        (it still shares exactly ``window_overlap`` frames with the one before), without it a whole
        window placed to end there (sharing more frames)."""
        size = self.config.window_size if size is None else size
        stride = size - self.config.window_overlap
        if self.config.window_hold > 0:
            return [(s, min(s + size, n_frames)) for s in range(0, max(n_frames - self.config.window_overlap, 1), stride)]
        starts = list(range(0, n_frames - size + 1, stride))
        if starts[-1] + size < n_frames:
            starts.append(n_frames - size)
        return [(s, s + size) for s in starts]

    def _windowed(self, inputs, pairs, use_flow, lookup, init_c2w, init_k, out, ctx, size):
        """Solve overlapping windows in order and stitch each onto the frames already solved by Sim(3).

        Initial depths are read one window at a time and results go straight into ``out``, so memory
        depends on the window, not the video. With ``window_hold`` the first frames of each later window
        stay at their solved values (see the config). Returns the loss history (windows concatenated) and the
        seams (for each window after the first, the first frame only it solved).
        """
        import torch

        from .data import is_symmetric

        cfg = self.config
        n_frames = len(init_c2w)
        histories, seams = [], []
        prev_end = 0
        for widx, (start, end) in enumerate(self.window_bounds(n_frames, size)):
            ids = np.arange(start, end)
            n_ov = prev_end - start if widx > 0 else 0
            hold = min(cfg.window_hold, n_ov)  # frames [start, start + hold) keep the solved values
            inside = (pairs[:, 0] >= start) & (pairs[:, 0] < end) & (pairs[:, 1] >= start) & (pairs[:, 1] < end)
            if hold:
                # pairs wholly inside the held frames were solved with an earlier window: leave them out
                inside &= (pairs[:, 0] >= start + hold) | (pairs[:, 1] >= start + hold)
            rows = np.flatnonzero(inside)
            if len(rows) == 0:
                raise StageError(f"global_aligner monst3r_ga: window [{start}, {end}) has no pair inside it; increase window_size")
            c2w0, k0 = init_c2w[ids].copy(), init_k[ids].copy()
            d0 = np.asarray(inputs.init.depth[start:end], np.float32)
            if widx > 0:
                solved_c2w, solved_k = out.c2w[start:prev_end], out.k[start:prev_end]
                solved_depth = np.asarray(out.depth[start:prev_end], np.float32)
                # bring the initial cameras of this window into the solved frame: Sim(3) on the overlap
                # cameras (centres and a point one median depth ahead of each), so the new frames start
                # consistent with the solved overlap frames
                r, t, sc = _sim3_from_points(_camera_anchor_points(c2w0[:n_ov], d0[:n_ov]),
                                             _camera_anchor_points(solved_c2w, solved_depth),
                                             torch.ones(2 * n_ov, dtype=torch.float64))
                c2w0, d0 = _apply_sim3(c2w0, d0, r, t, sc)
                c2w0[:n_ov], d0[:n_ov], k0[:n_ov] = solved_c2w, solved_depth, solved_k
                if cfg.shared_focal:
                    k0[n_ov:, 0, 0] = k0[n_ov:, 1, 1] = solved_k[:, 0, 0].mean()
            sym = is_symmetric(pairs[rows])
            fixed = np.arange(end - start) < hold if hold else None
            c2w, k, depth, conf, hist, quality = self._batched(inputs, ids, rows, use_flow, lookup, sym, c2w0, k0, d0, ctx,
                                                               fixed_frames=fixed)
            histories.append(hist)
            if widx > 0:
                if not hold:
                    # stitch: Sim(3) taking this window's overlap cameras onto the solved ones (with held
                    # frames the window was solved in the solved world frame: nothing to map)
                    r, t, sc = _sim3_from_points(_camera_anchor_points(c2w[:n_ov], depth[:n_ov]),
                                                 _camera_anchor_points(solved_c2w, solved_depth),
                                                 torch.ones(2 * n_ov, dtype=torch.float64))
                    c2w, depth = _apply_sim3(c2w, depth, r, t, sc)
                if cfg.window_stitch == "blend" and n_ov > hold:
                    # cross-fade over the re-solved overlap (this window's weight rising from ~0 to ~1):
                    # the two solutions meet without a step at either end of it
                    m = n_ov - hold
                    wgt = np.arange(1, m + 1, dtype=np.float64) / (m + 1)
                    old = (solved_c2w[hold:], solved_k[hold:], solved_depth[hold:],
                           np.asarray(out.conf[start + hold:prev_end], np.float32))
                    blended = blend_frames(old, (c2w[hold:n_ov], k[hold:n_ov], depth[hold:n_ov], conf[hold:n_ov]), wgt)
                    out.write(slice(start + hold, prev_end), *blended, out.quality[start + hold:prev_end])
                seams.append(prev_end)
            new = slice(n_ov, end - start)
            # alignment residual is relative to depth: unchanged by the Sim(3)
            out.write(slice(start + n_ov, end), c2w[new], k[new], depth[new], conf[new], quality[new])
            ctx.log(f"monst3r_ga: window {widx} frames [{start}, {end}) with {len(rows)} edges done")
            prev_end = end
        return np.concatenate(histories, axis=0), tuple(seams)


#: frames per block when world points are computed (float64 temporaries of this many frames)
_FRAMES_PER_BLOCK = 32


def blend_frames(old: tuple, new: tuple, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame interpolation of two solutions of the same frames, already in one world frame.

    Args:
        old, new: (world_from_cam (F, 4, 4), intrinsics (F, 3, 3), depth (F, H, W), conf (F, H, W)).
        weight: (F,) weight of ``new`` in [0, 1].
    Returns:
        the blended tuple: rotations by geodesic interpolation (roma), everything else linearly.
    """
    import roma
    import torch

    a = np.asarray(weight, np.float64)
    r0 = torch.from_numpy(np.asarray(old[0][:, :3, :3], np.float64))
    r1 = torch.from_numpy(np.asarray(new[0][:, :3, :3], np.float64))
    rel = roma.rotmat_to_rotvec(r0.transpose(1, 2) @ r1)
    c2w = np.array(old[0], np.float64, copy=True)
    c2w[:, :3, :3] = (r0 @ roma.rotvec_to_rotmat(rel * torch.from_numpy(a)[:, None])).numpy()

    def lerp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        wa = a.reshape((-1,) + (1,) * (np.ndim(x) - 1))
        return (1 - wa) * np.asarray(x, np.float64) + wa * np.asarray(y, np.float64)

    c2w[:, :3, 3] = lerp(old[0][:, :3, 3], new[0][:, :3, 3])
    return c2w, lerp(old[1], new[1]), lerp(old[2], new[2]).astype(np.float32), lerp(old[3], new[3]).astype(np.float32)


def seam_step_ratios(world_from_cam: np.ndarray, seams: tuple[int, ...]) -> np.ndarray:
    """(S,) the largest camera-centre step within one frame of each seam (s-2 -> s-1, s-1 -> s, s -> s+1)
    over the median step of the whole trajectory."""
    centres = np.asarray(world_from_cam, np.float64)[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    med = float(np.median(steps)) if len(steps) else 0.0
    if med <= 0 or not seams:
        return np.zeros(len(seams))
    return np.array([steps[max(s - 2, 0):min(s + 1, len(steps))].max() / med for s in seams])


class _Outputs:
    """The aligner's per-frame results, written window by window: cameras and quality in memory
    (small), depth and confidence in ``ctx.output`` arrays (the store workspace under the runner)."""

    def __init__(self, ctx: RunContext, n_frames: int, size_hw: tuple[int, int], n_quality: int) -> None:
        h, w = size_hw
        self.c2w = np.zeros((n_frames, 4, 4))
        self.k = np.zeros((n_frames, 3, 3))
        self.quality = np.zeros((n_frames, n_quality), np.float32)
        self.depth = ctx.output("depth", (n_frames, h, w), np.float32)
        self.conf = ctx.output("conf", (n_frames, h, w), np.float32)

    def write(self, frames: slice, c2w: np.ndarray, k: np.ndarray, depth: np.ndarray, conf: np.ndarray,
              quality: np.ndarray) -> None:
        self.c2w[frames], self.k[frames], self.quality[frames] = c2w, k, quality
        self.depth[frames], self.conf[frames] = depth, conf


STAGES = (MonST3RGlobalAligner,)
