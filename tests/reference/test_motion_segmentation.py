"""Flow-residual masks when the camera follows a subject that fills much of the view: the camera
motion must come from the static part (image border), not from the dominant motion."""

from __future__ import annotations

import numpy as np
import pytest

from monst3r_fw_reference.motion_segmentation import (
    camera_flow_homography, colour_prune, mask_confidence, mask_notices, remove_small_components, temporal_average,
    temporal_fill,
)

H, W = 72, 128


def _following_camera_flow(subject_fraction: float):
    """Background pans 6 px right per frame; a centred subject (kept still by the camera) has zero flow."""
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 6.0
    ys, xs = np.mgrid[0:H, 0:W]
    half_w = int(W * np.sqrt(subject_fraction) / 2)
    half_h = int(H * np.sqrt(subject_fraction) / 2)
    subject = (np.abs(ys - H / 2) < half_h) & (np.abs(xs - W / 2) < half_w)
    flow[subject] = 0.0
    valid = np.ones((H, W), bool)
    valid[:, -6:] = False  # background flow leaves the image on the right
    return flow, subject, valid


@pytest.mark.parametrize("fraction", [0.55, 0.7])
def test_border_model_picks_the_background_when_the_subject_dominates(fraction):
    flow, subject, valid = _following_camera_flow(fraction)
    assert (subject & valid).sum() > (~subject & valid).sum()  # the subject is the dominant motion
    dominant = camera_flow_homography(flow, valid, ransac_px=1.0, points=3000, seed=0, background="dominant")
    border = camera_flow_homography(flow, valid, ransac_px=1.0, points=3000, seed=0, background="border")
    res_dom = np.linalg.norm(flow - dominant, axis=-1)
    res_bor = np.linalg.norm(flow - border, axis=-1)
    # dominant model = the subject's (zero) motion: the background gets the large residual
    assert np.median(res_dom[subject]) < 0.5 and np.median(res_dom[~subject]) > 5.0
    # border model = the camera's motion: the subject gets the residual
    assert np.median(res_bor[~subject]) < 0.5 and np.median(res_bor[subject]) > 5.0


def test_border_model_equals_dominant_when_background_dominates():
    flow, subject, valid = _following_camera_flow(0.1)
    a = camera_flow_homography(flow, valid, ransac_px=1.0, points=3000, seed=0, background="dominant")
    b = camera_flow_homography(flow, valid, ransac_px=1.0, points=3000, seed=0, background="border")
    assert np.allclose(a, b) and np.allclose(a[..., 0], 6.0, atol=1e-3)


def test_temporal_average_warps_neighbours_with_the_flow():
    err = np.zeros((3, H, W), np.float32)
    err[0, 10:20, 10:20] = 1.0
    err[1, 10:20, 14:24] = 1.0  # the object moved 4 px right between frames 0 and 1
    shift = np.zeros((H, W, 2), np.float32)
    shift[..., 0] = 4.0

    def flow_to(t, u):
        return shift * (u - t)

    out = temporal_average(err, flow_to, 1)
    # frame 0 sees frame 1's blob warped back onto its own: full agreement inside the blob
    assert out[0, 12:18, 12:18].min() == pytest.approx(1.0)
    assert out[0, 30:, 30:].max() == 0.0


def test_small_components_and_notices():
    m = np.zeros((4, H, W), bool)
    m[0, 5:25, 5:25] = True      # 400 px = 4.3 % of the frame
    m[0, 50, 100] = True         # a speck
    m[2] = True                  # whole frame
    cleaned = remove_small_components(m, 0.003)
    assert cleaned[0, 5:25, 5:25].all() and not cleaned[0, 50, 100]
    notices = mask_notices(cleaned)
    assert len(notices) == 1
    assert "empty on 2 of 4 frames (e.g. 1, 3)" in notices[0] and "over half the frame on 1 of 4 frames (e.g. 2)" in notices[0]
    assert mask_notices(cleaned[:1]) == ()
    conf = mask_confidence(np.where(cleaned, 0.9, 0.1).astype(np.float32), 0.5, np.ones((4, H, W)), cleaned)
    assert conf[0] > 0.9 and conf[1] == 0.0 and conf[2] == 0.0


def test_colour_prune_drops_a_halo_coloured_like_the_ground_and_keeps_the_subject():
    """A red subject on textured grey-green ground; the flow mask also covers a band of ground under
    it (flow halo / wake: the ground's colours). Pruning keeps the subject and drops the band, except
    where the band lies inside the mask's eroded core (certain foreground by design)."""
    import cv2

    rng = np.random.default_rng(0)
    rgb = np.empty((2, H, W, 3), np.uint8)
    rgb[:] = np.clip(np.array([90, 120, 90]) + rng.normal(0, 12, (2, H, W, 3)), 0, 255).astype(np.uint8)
    subject = np.zeros((2, H, W), bool)
    subject[:, 20:45, 40:80] = True
    band = np.zeros((2, H, W), bool)
    band[:, 45:55, 36:84] = True
    rgb[subject] = np.clip(np.array([200, 40, 40]) + rng.normal(0, 12, (int(subject.sum()), 3)), 0, 255)
    mask = subject | band
    mask[1] = False  # an empty mask stays empty
    out = colour_prune(rgb, mask, ring_px=13, core_px=3)
    assert not np.any(out & ~mask)  # pruning only
    assert (out[0] & subject[0]).sum() >= 0.97 * subject[0].sum()
    core = cv2.erode(mask[0].astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    free_band = band[0] & ~core
    assert free_band.sum() > 200
    assert (out[0] & free_band).sum() <= 0.3 * free_band.sum()  # next to the anchored core the cut keeps a few
    assert not out[1].any()


def test_colour_prune_anchors_only_the_strongest_motion_with_a_core_quantile():
    """A wide wake (thicker than the core erosion) attached to the subject: with every eroded-mask
    pixel anchored its middle stays; anchored by the residual score (the wake moves less), it goes."""
    rng = np.random.default_rng(1)
    rgb = np.clip(np.array([60, 90, 140]) + rng.normal(0, 10, (1, H, W, 3)), 0, 255).astype(np.uint8)
    subject = np.zeros((1, H, W), bool)
    subject[:, 12:42, 42:86] = True
    wake = np.zeros((1, H, W), bool)
    wake[:, 42:58, 35:95] = True
    rgb[subject] = np.clip(np.array([235, 235, 230]) + rng.normal(0, 8, (int(subject.sum()), 3)), 0, 255)
    score = np.where(subject, 0.9, np.where(wake, 0.6, 0.1)).astype(np.float32)
    mask = subject | wake
    plain = colour_prune(rgb, mask, ring_px=13, core_px=3)
    ranked = colour_prune(rgb, mask, ring_px=13, core_px=3, score=score, core_quantile=0.5)
    assert (plain & wake).sum() > 0.3 * wake.sum()  # the anchored middle of the wake stays
    assert (ranked & wake).sum() < 0.1 * wake.sum()
    assert (ranked & subject).sum() >= 0.97 * subject.sum()


def _moving_square(n: int, step: int = 4):
    """(n, H, W) bool: a 12x12 square moving ``step`` px right per frame, and the flow t -> u."""
    truth = np.zeros((n, H, W), bool)
    for t in range(n):
        truth[t, 30:42, 10 + step * t:22 + step * t] = True

    def flow_to(t, u):  # the square's motion everywhere (the background score is what matters, not its flow)
        f = np.zeros((H, W, 2), np.float32)
        f[..., 0] = step * (u - t)
        return f

    return truth, flow_to


def test_temporal_fill_carries_the_mask_into_frames_whose_evidence_weakened():
    n = 6
    truth, flow_to = _moving_square(n)
    score = np.full((n, H, W), 0.1, np.float32)
    score[truth] = 0.8
    score[2][truth[2]] = score[3][truth[3]] = 0.4       # the subject slows / is occluded: under 0.5
    score[5][truth[5]] = 0.15                           # it stops: no evidence to carry into
    score[:, 5:15, 90:110] = 0.4                        # a weak distractor far from the subject
    masks = score > 0.5
    assert not masks[2].any() and not masks[3].any()
    temporal_fill(masks, lambda t: score[t], flow_to, 0.3, reach_px=2)
    for t in (2, 3):  # filled exactly with the subject (its weak pixels near the carried mask)
        assert (masks[t] == truth[t]).all()
    assert not masks[:, 5:15, 90:110].any()             # the distractor is not near any carried mask
    assert not masks[5].any()                           # the subject stopped: nothing above the low score
    assert (masks[[0, 1, 4]] == truth[[0, 1, 4]]).all()  # frames that agree with their neighbours unchanged


def test_temporal_fill_leaves_frames_alone_that_keep_most_of_the_carried_mask():
    n = 4
    truth, flow_to = _moving_square(n)
    score = np.where(truth, 0.8, 0.1).astype(np.float32)
    score[:, 20:50, 5:60] = np.maximum(score[:, 20:50, 5:60], 0.4)  # a weak halo around the subject
    masks = score > 0.5
    before = masks.copy()
    temporal_fill(masks, lambda t: score[t], flow_to, 0.3, reach_px=2)
    assert (masks == before).all()                      # the halo does not grow the masks
    masks[2] = False                                    # a frame without a mask ...
    temporal_fill(masks, lambda t: score[t], flow_to, 0.3, reach_px=2)
    # ... gets the carried square plus only the halo within reach of it
    assert masks[2][truth[2]].all() and masks[2].sum() <= (truth[2].sum() ** 0.5 + 4) ** 2


def test_colour_prune_does_not_depend_on_opencvs_global_rng_state():
    """GrabCut initialises its colour models from OpenCV's process-wide RNG: a frame's pruned mask must
    be the same whatever ran before it in the process (the store caches it by config and inputs only)."""
    import cv2

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (4, H, W, 3), dtype=np.uint8)  # colours overlap: the GMM start decides
    mask = np.zeros((4, H, W), bool)
    mask[:, 15:55, 30:90] = True
    results = []
    for state in (0, 123456):
        cv2.setRNGSeed(state)
        cv2.randu(np.empty((1000,), np.float32), 0, 1)  # other work drawing from the same RNG
        results.append(colour_prune(rgb, mask, ring_px=9, core_px=2))
    assert results[0].sum() < mask.sum()  # the cut did prune something
    np.testing.assert_array_equal(results[0], results[1])
