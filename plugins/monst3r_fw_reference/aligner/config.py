"""Recipe configuration of the ``monst3r_ga`` global aligner."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from monst3r_framework.stages import StageConfig


class MonST3RGAConfig(StageConfig):
    """MonST3R global alignment (official defaults of the video demo unless stated)."""

    type: Literal["monst3r_ga"] = "monst3r_ga"
    mode: Literal["auto", "batched", "windowed"] = Field(
        "auto", description="batched: all frames at once; windowed: overlapping windows stitched by Sim(3); "
        "auto: batched when the memory estimate fits max_memory_gb.")
    iterations: int = Field(300, ge=1, le=100000, description="Optimisation steps (official 300).")
    lr: float = Field(0.01, gt=0, le=1.0, description="Initial Adam learning rate.")
    lr_min: float = Field(1e-3, ge=0, le=1.0, description="Final learning rate of the schedule.")
    schedule: Literal["linear", "cosine"] = Field("linear", description="Learning-rate schedule from lr to lr_min.")
    shared_focal: Union[bool, Literal["auto"]] = Field(
        True, description="One focal length for all frames (demo default). auto: one focal unless the initial "
        "focals (the pose solver's) differ by more than 1% between frames, e.g. because flow_triangulation's "
        "focal_per_frame found a zoom; then one per frame.")
    optimize_pp: bool = Field(False, description="Optimise principal points ((W/2, H/2) + 10 p); else fixed at the centre.")
    fix_poses: bool = Field(False, description="Keep the initial camera poses (known poses); disables scale normalisation.")
    fix_intrinsics: bool = Field(False, description="Keep the initial focal lengths and principal points (known intrinsics).")
    fix_depth: bool = Field(False, description="Keep the initial depth maps (known depth).")
    optimize_adaptors: bool = Field(False, description="Optimise the per-edge xy/z scale adaptors (official: off).")
    conf_transform: Literal["log", "sqrt", "m1", "none"] = Field(
        "log", description="Per-pixel weight from the pair confidence (log: log(conf), official).")
    base_scale: float = Field(0.5, gt=0, description="Geometric mean of the normalised edge scales.")
    focal_break: float = Field(20.0, gt=0, description="focal = exp(p / focal_break).")
    pw_break: float = Field(20.0, gt=0, description="adaptor = exp(a / pw_break).")
    flow_loss_weight: float = Field(0.01, ge=0, description="Weight of the ego-motion flow loss; 0 disables it.")
    flow_loss_start: float = Field(0.1, ge=0, le=1, description="Fraction of the iterations before the flow loss starts.")
    flow_loss_threshold: float = Field(
        25.0, ge=0, description="Skip the flow term for an iteration when its value exceeds this (0: never skip).")
    pixel_threshold: float = Field(50.0, ge=0, description="Per-element smooth-L1 flow loss above this is dropped (pxl_thre).")
    smoothness_weight: float = Field(0.01, ge=0, description="Weight of the temporal pose smoothness; 0 disables it.")
    translation_weight: float = Field(1.0, ge=0, description="Translation weight inside the smoothness term.")
    depth_prior_weight: float = Field(0.0, ge=0, description="Weight of the scale-invariant prior towards the initial depth.")
    implementation: Literal["fused", "autograd"] = Field(
        "fused", description="fused: chunked value+gradient kernels (fast, low memory); autograd: plain batched ops.")
    chunk_edges: int = Field(4, ge=1, le=100000, description="Edges per chunk in the fused kernels.")
    window_size: int = Field(40, ge=3, description="Frames per window in windowed mode.")
    window_overlap: int = Field(16, ge=1, description="Frames shared by consecutive windows.")
    window_stitch: Literal["keep", "blend"] = Field(
        "keep", description="keep: overlap frames keep the earlier window's solution (a step can appear at the seam); "
        "blend: cross-fade the two solutions over the overlap (rotations geodesically), so windows meet without a step.")
    window_fit_memory: bool = Field(
        False, description="Windowed: use the largest window (up to window_size) whose batched memory estimate, with "
        "the video's pairs per frame, fits max_memory_gb (at least window_overlap + 2 frames); the run summary's "
        "window_seams gives the size used. Off: always window_size.")
    window_hold: int = Field(
        0, ge=0, description="Frames at the start of each later window's overlap held at the earlier window's "
        "solution (poses, depth and, with shared_focal, the focal) while the rest of the window is solved against "
        "them; pairs wholly inside the held frames are left out and no Sim(3) is fitted after the solve. The rest of "
        "the overlap is re-solved and stitched by window_stitch. window_overlap - window_hold frames are solved twice "
        "instead of window_overlap (= window_overlap: each frame and pair once). Cover the pair graph's reach with "
        "the held frames (swinstride-5: 9 frames). Solver adam only. 0: hold nothing (each window solved whole).")
    seam_check: float = Field(
        3.0, ge=0, description="Say so at the end of the run when the camera step into a window seam exceeds this "
        "many median steps (0: off).")
    max_memory_gb: float = Field(6.0, gt=0, description="auto mode: use windows when the batched estimate exceeds this.")
    translation_gradient: Literal["smooth", "official"] = Field(
        "smooth", description="Camera translations are parametrised as sign(p) (exp|p| - 1); 'official' lets "
        "autograd give that 0 gradient at exactly p = 0, so the origin frame of the initialisation can never "
        "move (a spike in the trajectory); 'smooth' uses the true derivative there (same values).")
    threads: int = Field(0, ge=0, le=1024, description="torch CPU threads during the optimisation (0: leave as is).")
    smoothness_mode: Literal["motion", "velocity"] = Field(
        "motion", description="motion: official ||R_rel - I|| + w ||t_rel|| (penalises motion itself); velocity: the same "
        "norms of the change of consecutive relative motions (a constant-velocity prior).")
    zoom_check: float = Field(
        0.01, ge=0, description="After the solve, fit rotation-only and rotation + zoom models to the static flow of "
        "every adjacent frame pair; when the zoom model changes the scale by more than this fraction per frame and "
        "fits much better, the run summary (`zoom`) lists the pairs and, with shared_focal, a notice says so (a shared "
        "focal turns a zoom into camera motion along the optical axis). Reporting only: the solution is unchanged. "
        "0: off.")
    solver: Literal["adam", "gauss_newton"] = Field(
        "adam", description="adam: the official first-order loop (iterations, lr, schedule); gauss_newton: "
        "Levenberg-Marquardt on the IRLS model with the depths Schur-eliminated (gn_* options), same objective.")
    gn_iterations: int = Field(40, ge=1, le=10000, description="gauss_newton: step cap (the flow term starts at "
                               "flow_loss_start of it).")
    gn_tolerance: float = Field(1e-4, ge=0, description="gauss_newton: stop when an iteration lowers the objective by "
                                "less than this fraction.")
    gn_damping: float = Field(1e-4, gt=0, description="gauss_newton: initial Levenberg-Marquardt lambda (times diag H).")
    gn_warmup: int = Field(
        0, ge=0, le=100000, description="gauss_newton: Adam steps (constant lr, alignment and smoothness terms, no "
        "flow) before the first Levenberg-Marquardt step, to leave a poor initialisation where the IRLS model is "
        "far from the objective. 0: none.")
    gn_max_depth_ratio: float = Field(
        100.0, ge=0, description="gauss_newton: keep every depth within [median / r, median * r] of its frame (a box "
        "constraint applied to each trial point; the objective is unchanged inside). A pixel that only the flow term "
        "constrains (confidence 1, i.e. alignment weight 0) and whose flow fits rotation alone better than any parallax "
        "has its optimum at infinite depth, which LM reaches (DAVIS car-shadow: 6.7e12 x the median) and Adam's "
        "bounded steps do not. 100: the bound of flow_triangulation's max_depth_ratio. 0: no bound.")
    gn_free_depth: Literal["solve", "hold"] = Field(
        "solve", description="gauss_newton: 'hold' keeps the depth of every pixel whose summed alignment weight "
        "(conf_transform of its confidence over all the pair views it appears in) is below gn_free_weight where it "
        "starts: nothing but the flow term constrains such a pixel, and a flow that rotation explains as well as "
        "parallax sends it to the depth bound (classical demo 6 frames 96x64: see docs/global-aligner.md). "
        "'solve': every depth is a variable (the official objective's optimum).")
    gn_free_weight: float = Field(
        0.05, ge=0, description="gauss_newton with gn_free_depth hold: alignment weight under which a depth is held.")
    gn_hessian_pixels: int = Field(1024, ge=0, description="gauss_newton: pixels per frame (a regular subset) on which "
                                   "the reduced camera system is accumulated; 0: all. Gradient and depth steps use all.")
    gn_coarse_stride: int = Field(
        1, ge=1, le=16, description="gauss_newton: first solve on every s-th pixel row and column (the same "
        "objective over that subset, same pixel coordinates), then continue at full resolution from its cameras, "
        "edge transforms and the depth change interpolated from the subset; most iterations then cost 1/s^2. "
        "1: off (every iteration at full resolution).")
    gn_coarse_tolerance: Optional[float] = Field(
        None, ge=0, description="gauss_newton with gn_coarse_stride > 1: gn_tolerance of the coarse stage (None: "
        "gn_tolerance); gn_tolerance then stops the full-resolution stage.")
    gn_coarse_depth: Literal["interpolate", "ray_median", "ray_mean"] = Field(
        "ray_mean", description="gauss_newton with gn_coarse_stride > 1: full-resolution depths the fine stage starts "
        "from (docs/global-aligner.md compares them). interpolate: the initial depth moved by the coarse stage's change, interpolated bilinearly; ray_median: "
        "per pixel the better (by the terms its depth enters) of that and the weighted median, along its ray, of its "
        "alignment terms' closest depths; ray_mean: the weighted mean of those depths.")
    gn_norm_curvature: float = Field(
        0.5, ge=0, lt=1, description="gauss_newton: curvature model of the L1 point distance w ||r||: weight "
        "w / ||r|| (I - c r r^T / ||r||^2). 0: plain IRLS (over-estimates the curvature along r, linear convergence); "
        "towards 1: the norm's own Gauss-Newton Hessian. Same objective and gradient either way.")

    @model_validator(mode="after")
    def _solver_options(self) -> "MonST3RGAConfig":
        if self.window_hold > self.window_overlap:
            raise ValueError(f"window_hold {self.window_hold} exceeds window_overlap {self.window_overlap}; only overlap "
                             "frames can be held: lower window_hold or raise window_overlap")
        if self.solver == "gauss_newton" and self.window_hold > 0:
            raise ValueError("window_hold holds frames fixed inside a window, which solver gauss_newton does not "
                             "support; use solver: adam or window_hold: 0")
        if self.solver == "gauss_newton" and (self.optimize_pp or self.optimize_adaptors):
            raise ValueError("solver gauss_newton does not optimise principal points or adaptors; set optimize_pp: false "
                             "and optimize_adaptors: false, or use solver: adam")
        return self
