"""Pieces of the flow-residual motion mask that keep working when the camera follows the subject.

Why each piece exists (measured on DAVIS clips at 256x144 with DIS flow, see docs/masks.md):

* **Trustworthy pairs.** DIS flow fails as the displacement grows: the forward-backward consistent
  fraction of the pixels falls from 0.85-0.97 at a frame gap of 1 to 0.11-0.51 at a gap of 9 on
  clips where the camera pans after the subject. Residuals of far pairs are mostly flow error, so
  pairs are limited to a gap and weighted by their consistent fraction.
* **Camera motion fitted to the static part.** A RANSAC homography takes the *dominant* motion;
  when the camera follows a subject that fills much of the view, the subject (nearly still in the
  image) can win and the background is flagged. :func:`camera_flow_homography` with
  ``background="border"`` fits a second model to what the first leaves out and keeps the one that
  explains more of the image border, where the static scene is (a followed subject sits inside).
* **Evidence where the subject is.** Non-rigid, fast subjects are exactly where the flow is
  forward-backward inconsistent; leaving those pixels out leaves frames with no evidence on the
  subject (empty masks). The residual is counted at every pixel whose flow stays in the image.
* **No evidence from flat regions.** Where the image is flat (over-exposed sky, plain asphalt) DIS
  flow is filled in by its regulariser: arbitrary and forward-backward inconsistent. Counting it
  as evidence flagged the white sky in DAVIS dance-twirl and the road beside scooter-black;
  :func:`textured_pixels` tells where inconsistent flow may still count.
* **Temporal and spatial coherence.** :func:`temporal_average` averages each frame's residual map
  with its neighbours' maps warped by the flow; :func:`remove_small_components` drops specks;
  :func:`temporal_fill` carries masks into frames where the subject's evidence weakened.
* **Colour boundaries.** Flow residuals bleed past the subject: DIS smooths flow across object
  edges (a halo), and what moves *with* the subject without being it (a car's shadow, a swan's
  wake, the road a scooter rides over) has a residual too. On the six DAVIS clips over half the
  false positives were there (8-11 % of the frame against 6-10 % of true subject).
  :func:`colour_prune` keeps only the part of each mask that OpenCV's GrabCut, started from the
  mask, assigns to the foreground colour model: regions coloured like their surroundings go.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import numpy as np

__all__ = ["camera_flow_homography", "temporal_average", "temporal_average_frame", "warp_mask", "temporal_fill",
           "remove_small_components", "textured_pixels",
           "colour_prune", "mask_confidence", "mask_frame_stats", "mask_confidence_from_stats", "mask_notices",
           "mask_notices_from_area"]


def _pixel_grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys], -1)


def _fit(p1: np.ndarray, p2: np.ndarray, ransac_px: float, points: int, rng: np.random.Generator) -> Optional[np.ndarray]:
    import cv2

    if len(p1) < 8:
        return None
    idx = rng.choice(len(p1), min(points, len(p1)), replace=False)
    hom, _ = cv2.findHomography(p1[idx], p2[idx], cv2.RANSAC, ransac_px)
    return hom


def _warp_flow(hom: np.ndarray, grid: np.ndarray) -> np.ndarray:
    import cv2

    h, w = grid.shape[:2]
    return (cv2.perspectiveTransform(grid.reshape(-1, 1, 2), hom).reshape(h, w, 2) - grid).astype(np.float32)


def camera_flow_homography(
    f_12: np.ndarray, valid: np.ndarray, *, ransac_px: float, points: int, seed: int,
    background: Literal["dominant", "border"] = "dominant", border_px: int = 8, min_second: float = 0.1,
) -> np.ndarray:
    """Camera-induced flow (H, W, 2) float32 of image 1 -> 2 as a homography fitted to the static part.

    Args:
        f_12: (H, W, 2) float32 flow in pixels.
        valid: (H, W) bool correspondences usable for fitting (consistent, inside image 2).
        background: 'dominant': the RANSAC model with the most support; 'border': also fit a second
            model to the valid pixels the first leaves out (when they are at least ``min_second`` of
            the valid pixels) and keep the model that explains more valid pixels within
            ``border_px`` of the image border.
    Returns:
        ``H(x) - x`` per pixel; zeros if fewer than 8 valid pixels or RANSAC fails.
    """
    h, w = f_12.shape[:2]
    grid = _pixel_grid(h, w)
    rng = np.random.default_rng(seed)
    p1 = grid[valid]
    hom = _fit(p1, p1 + f_12[valid], ransac_px, points, rng)
    if hom is None:
        return np.zeros((h, w, 2), np.float32)
    ego = _warp_flow(hom, grid)
    if background == "dominant":
        return ego
    res1 = np.linalg.norm(f_12 - ego, axis=-1)
    rest = valid & (res1 > 2 * ransac_px)
    if rest.sum() < max(8, min_second * valid.sum()):
        return ego
    q1 = grid[rest]
    hom2 = _fit(q1, q1 + f_12[rest], ransac_px, points, rng)
    if hom2 is None:
        return ego
    ego2 = _warp_flow(hom2, grid)
    res2 = np.linalg.norm(f_12 - ego2, axis=-1)
    border = np.ones((h, w), bool)
    border[border_px:h - border_px, border_px:w - border_px] = False
    support1 = int((valid & border & (res1 < ransac_px)).sum())
    support2 = int((valid & border & (res2 < ransac_px)).sum())
    return ego2 if support2 > support1 else ego


def temporal_average(err: np.ndarray, flow_to: Callable[[int, int], Optional[np.ndarray]], radius: int) -> np.ndarray:
    """Average each frame's (F, H, W) map with its neighbours' within ``radius`` frames, each warped
    into the frame by the flow ``flow_to(t, u)`` ((H, W, 2) t -> u, or None when absent)."""
    if radius <= 0:
        return err
    n, h, w = err.shape
    grid = _pixel_grid(h, w)
    return np.stack([temporal_average_frame(lambda u: err[u], t, n, flow_to, radius, grid) for t in range(n)])


def temporal_average_frame(err_of: Callable[[int], np.ndarray], t: int, n: int,
                           flow_to: Callable[[int, int], Optional[np.ndarray]], radius: int,
                           grid: Optional[np.ndarray] = None) -> np.ndarray:
    """Frame ``t`` of :func:`temporal_average` ((H, W) float32), reading the maps of frames
    ``t - radius .. t + radius`` through ``err_of(u)`` (so a streaming caller holds only those)."""
    import cv2

    acc = np.asarray(err_of(t)).astype(np.float32)
    if grid is None:
        grid = _pixel_grid(*acc.shape)
    cnt = np.float32(1.0)
    for u in range(max(0, t - radius), min(n, t + radius + 1)):
        f = None if u == t else flow_to(t, u)
        if f is None:
            continue
        m = grid + f
        acc += cv2.remap(np.asarray(err_of(u)).astype(np.float32), m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
        cnt += np.float32(1.0)
    return acc / cnt


def warp_mask(mask: np.ndarray, f_tu: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of frame u pulled into frame t along the flow ``f_tu`` (H, W, 2) t -> u
    (nearest neighbour; pixels whose flow leaves frame u get False)."""
    import cv2

    m = _pixel_grid(*mask.shape) + f_tu
    return cv2.remap(mask.astype(np.uint8), m[..., 0], m[..., 1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0


def temporal_fill(masks, score_of: Callable[[int], np.ndarray], flow_to: Callable[[int, int], Optional[np.ndarray]],
                  low: float, *, min_kept: float = 0.5, reach_px: int = 2) -> None:
    """Carry masks along the flow into frames where the motion evidence weakened (hysteresis in time).

    A subject that slows down, shrinks or is partly occluded keeps a residual above its
    surroundings but drops under the mask threshold, so its frames come out empty or cut down
    (DAVIS libby: 14 of 40 frames empty while the dog's median score stayed above the 99th
    percentile of the rest of the frame). A forward then a backward pass over the frames pulls
    the neighbour's mask (frame t-1, then t+1) into frame t along the flow; where frame t's own
    mask holds less than ``min_kept`` of that pulled mask, the pixels within ``reach_px`` of the
    pulled mask whose score exceeds ``low`` join frame t's mask. Frames whose own evidence agrees
    with their neighbours are left as they are, and nothing is added where the score is under
    ``low`` (a subject that stops leaves the mask).

    Args:
        masks: (F, H, W) bool masks thresholded from the scores, updated in place (a numpy or Zarr
            array: two frames are held at a time); each frame only gains pixels.
        score_of: frame index -> (H, W) float motion score the masks were thresholded from.
        flow_to: (t, u) -> (H, W, 2) float32 flow t -> u, or None when that pair has no flow.
        low: score above which a pixel near the carried mask joins it (below the mask threshold).
    """
    import cv2

    n = len(masks)
    reach = np.ones((2 * reach_px + 1,) * 2, np.uint8)
    for order, step in ((range(1, n), -1), (range(n - 2, -1, -1), 1)):
        prev = None
        for t in order:
            u = t + step
            src = np.asarray(masks[u], bool) if prev is None else prev
            own = np.asarray(masks[t], bool)
            prev = own
            f = flow_to(t, u) if src.any() else None
            if f is None:
                continue
            carried = warp_mask(src, f)
            if not carried.any() or (own & carried).sum() >= min_kept * carried.sum():
                continue
            near = cv2.dilate(carried.astype(np.uint8), reach) > 0
            prev = own | (near & (np.asarray(score_of(t)) > low))
            masks[t] = prev


def textured_pixels(rgb: np.ndarray, floor: float, window: int = 7) -> np.ndarray:
    """(H, W) bool: pixels whose local gradient energy (Sobel, summed over a ``window`` square) reaches
    ``floor`` times the frame's median. Optical flow in flat regions (over-exposed sky, a blank wall)
    is set by the regulariser, not by the image, so its residual says nothing about motion."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    energy = cv2.boxFilter(gx * gx + gy * gy, -1, (window, window))
    return energy >= floor * float(np.median(energy))


def remove_small_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_fraction`` of the frame from (F, H, W) bool masks."""
    import cv2

    if min_fraction <= 0:
        return mask
    n, h, w = mask.shape
    out = np.empty_like(mask, dtype=bool)
    for k, m in enumerate(mask.astype(np.uint8)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_fraction * h * w
        keep[0] = False
        out[k] = keep[labels]
    return out


def colour_prune(rgb: np.ndarray, mask: np.ndarray, *, ring_px: int, core_px: int, iterations: int = 3,
                 min_pixels: int = 20, score: Optional[np.ndarray] = None, core_quantile: float = 0.0) -> np.ndarray:
    """Remove from each mask the pixels GrabCut's colour models give to the background.

    Per frame, GrabCut (``cv2.grabCut``, GMM colour models plus a contrast-sensitive graph cut)
    starts from the mask: the mask eroded by ``core_px`` is certain foreground (without such
    anchors the cut can drop a whole subject coloured like its surroundings), the rest of the mask
    probable foreground, a ring of ``ring_px`` around it probable background, everything farther
    certain background. The result is the mask AND GrabCut's foreground: pruning only, so a
    subject the flow missed is never invented from colour. With ``score`` and ``core_quantile``,
    only core pixels whose score reaches that quantile of the frame's masked scores are anchored:
    a wide shadow or wake attached to the subject moves less than the subject itself, so its
    middle is no longer certain foreground.

    Args:
        rgb: (F, H, W, 3) uint8 frames.
        mask: (F, H, W) bool dynamic masks.
        min_pixels: masks with fewer pixels are returned unchanged.
        score: optional (F, H, W) float motion score the mask was thresholded from.
        core_quantile: in [0, 1); 0 = every eroded-mask pixel is anchored.
    Returns:
        (F, H, W) bool, a subset of ``mask``.
    """
    import cv2

    out = mask.copy()
    ring = np.ones((2 * ring_px + 1,) * 2, np.uint8)
    core = np.ones((2 * core_px + 1,) * 2, np.uint8)
    for k in range(len(mask)):
        m = mask[k].astype(np.uint8)
        if int(m.sum()) < min_pixels or int(m.sum()) == m.size:
            continue
        labels = np.full(m.shape, cv2.GC_BGD, np.uint8)
        labels[cv2.dilate(m, ring) > 0] = cv2.GC_PR_BGD
        labels[m > 0] = cv2.GC_PR_FGD
        anchor = cv2.erode(m, core) > 0 if core_px > 0 else mask[k].copy()
        if score is not None and core_quantile > 0:
            anchor &= score[k] >= np.quantile(score[k][mask[k]], core_quantile)
        if core_px > 0 or core_quantile > 0:
            labels[anchor] = cv2.GC_FGD
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        # GrabCut seeds its GMMs from OpenCV's process-wide RNG: seed it per frame so that a frame's result
        # does not depend on what ran before it in the process (masks varied by up to 0.007 IoU otherwise).
        cv2.setRNGSeed(k)
        try:
            cv2.grabCut(np.ascontiguousarray(rgb[k][..., ::-1]), labels, None, bgd, fgd, iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # e.g. a colour model without samples: keep the mask as it is
            continue
        out[k] = mask[k] & ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
    return out


def mask_confidence(err: np.ndarray, threshold: float, evidence: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(F,) float32 in [0, 1]: how much to trust each frame's mask, without ground truth.

    The product of: how decided the pixels are (1 - the fraction whose score lies within 0.15 of the
    threshold), how much trustworthy evidence the frame had (its summed pair weight, relative to the
    best-covered frame) and plausibility (0 for an empty mask or one covering over half the frame,
    ramping to 1 between 0.1 % and 0.5 % and between 40 % and 50 % coverage).
    """
    n = len(err)
    return mask_confidence_from_stats(*(mask_frame_stats(err[k], threshold, evidence[k], mask[k]) for k in range(n))) \
        if n else np.zeros(0, np.float32)


def mask_frame_stats(err: np.ndarray, threshold: float, evidence: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """One frame's (decided, mean evidence, area) for :func:`mask_confidence_from_stats`."""
    decided = 1.0 - float((np.abs(np.ravel(err) - threshold) < 0.15).mean())
    return decided, float(np.ravel(evidence).mean()), float(np.ravel(mask).mean())


def mask_confidence_from_stats(*stats: tuple[float, float, float]) -> np.ndarray:
    """:func:`mask_confidence` from each frame's :func:`mask_frame_stats` (streaming callers)."""
    decided, ev, area = (np.array(v, np.float64) for v in zip(*stats))
    coverage = ev / max(float(ev.max()), 1e-12)
    plaus = np.clip((area - 0.001) / 0.004, 0, 1) * np.clip((0.5 - area) / 0.1, 0, 1)
    return (decided * coverage * plaus).astype(np.float32)


def mask_notices(mask: np.ndarray, name: str = "mask_builder") -> tuple[str, ...]:
    """One line when some frames' masks are empty or cover most of the frame (else nothing)."""
    n = len(mask)
    return mask_notices_from_area(mask.reshape(n, -1).mean(1), name)


def mask_notices_from_area(area: np.ndarray, name: str = "mask_builder") -> tuple[str, ...]:
    """:func:`mask_notices` from each frame's mask area fraction (F,)."""
    area = np.asarray(area, np.float64)
    n = len(area)
    empty = np.flatnonzero(area < 0.001)
    large = np.flatnonzero(area > 0.5)
    parts = []
    if len(empty):
        parts.append(f"empty on {len(empty)} of {n} frames (e.g. {', '.join(map(str, empty[:5].tolist()))})")
    if len(large):
        parts.append(f"covering over half the frame on {len(large)} of {n} frames "
                     f"(e.g. {', '.join(map(str, large[:5].tolist()))})")
    if not parts:
        return ()
    return (f"{name}: dynamic mask {' and '.join(parts)}; per-frame mask confidence is in the report "
            "(summary.json mask_confidence); moving objects there are not masked out of the static scene",)
