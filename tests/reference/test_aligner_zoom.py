"""monst3r_ga zoom check: the static flow of adjacent frames fitted by rotation only and by rotation + zoom.

Flows are analytic (pixel maps of known homographies), so the fitted zoom factor is known exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from monst3r_framework.stages import FlowField, RunContext
from monst3r_fw_reference.aligner import MonST3RGAConfig, MonST3RGlobalAligner
from monst3r_fw_reference.aligner.zoom import adjacent_zoom, zoom_report

H, W, FOCAL = 72, 128, 110.0


def homography_flow(h: int, w: int, focal: float, rotvec, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward (H, W, 2) flow of ``x' ~ K diag(zoom, zoom, 1) R K^-1 x`` (principal point W/2, H/2)."""
    from scipy.spatial.transform import Rotation

    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    hom = k @ np.diag([zoom, zoom, 1.0]) @ Rotation.from_rotvec(rotvec).as_matrix() @ np.linalg.inv(k)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs, ys, np.ones_like(xs)], -1)

    def flow(m):
        q = pts @ m.T
        return (q[..., :2] / q[..., 2:] - pts[..., :2]).astype(np.float32)

    return flow(hom), flow(np.linalg.inv(hom))


def parallax_flow(h: int, w: int, focal: float, tx: float) -> tuple[np.ndarray, np.ndarray]:
    """Sideways camera translation over a ground plane and a far wall: flow = f tx / Z with Z from 2 (bottom)
    to 20 (top), no zoom."""
    z = np.geomspace(20.0, 2.0, h)[:, None] * np.ones((1, w))
    fx = (-focal * tx / z).astype(np.float32)
    fwd = np.stack([fx, np.zeros_like(fx)], -1)
    return fwd, -fwd


def flow_field(per_pair: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]) -> FlowField:
    pairs = sorted(per_pair)
    return FlowField(pairs=np.array(pairs, np.int64), flow_ij=np.stack([per_pair[p][0] for p in pairs]),
                     flow_ji=np.stack([per_pair[p][1] for p in pairs]))


def test_zoom_is_measured_and_only_the_zoomed_pair_flagged():
    pan = homography_flow(H, W, FOCAL, [0.0, 0.01, 0.002])
    per_pair = {(0, 1): pan, (1, 2): parallax_flow(H, W, FOCAL, 0.2), (2, 3): homography_flow(H, W, FOCAL, [0.0, 0.01, 0.0], 0.95),
                (3, 4): pan, (0, 2): pan}
    fits = adjacent_zoom(flow_field(per_pair), None, 5, np.full(5, FOCAL), np.tile([W / 2, H / 2], (5, 1)))
    assert fits.shape == (4, 3)
    np.testing.assert_allclose(fits[2, 0], 0.95, atol=1e-3)
    np.testing.assert_allclose(fits[[0, 1, 3], 0], 1.0, atol=5e-3)
    assert fits[2, 2] < 0.05 < 1.0 < fits[2, 1]  # rotation + zoom exact, rotation alone several px off
    c2w = np.tile(np.eye(4), (5, 1, 1))
    c2w[:, 0, 3] = [0, 1, 2, 12, 13]  # a 10x step where the zoom is
    entry, line = zoom_report(fits, c2w, 0.01)
    assert [p["frames"] for p in entry["flagged_pairs"]] == [[2, 3]]
    assert entry["flagged_pairs"][0]["step_over_median"] == pytest.approx(10.0)
    assert line is not None and "frames 2-3" in line and "5.0% per frame" in line and "10.0x the median step" in line
    # the parallax pair (rotation alone fits badly, but a zoom does not help) is not flagged
    assert fits[1, 1] > 0.5 and not np.isclose(fits[1, 0], 0.95, atol=0.01)
    assert zoom_report(fits, c2w, 0.06) == ({"threshold": 0.06, "flagged_pairs": [], "max_scale_change": 0.05}, None)


def test_missing_adjacent_pair_and_masked_pixels():
    zoomed = homography_flow(H, W, FOCAL, [0.0, 0.0, 0.0], 1.04)
    fits = adjacent_zoom(flow_field({(0, 1): zoomed, (2, 0): zoomed}), None, 3, np.full(3, FOCAL),
                         np.tile([W / 2, H / 2], (3, 1)))
    assert np.isfinite(fits[0]).all() and np.isnan(fits[1]).all()  # no (1, 2) flow
    # a dynamic mask covering nearly the whole frame leaves too few pixels: no fit
    masks = type("M", (), {"dynamic": np.ones((3, H, W), bool)})()
    fits = adjacent_zoom(flow_field({(0, 1): zoomed}), masks, 2, np.full(2, FOCAL), np.tile([W / 2, H / 2], (2, 1)))
    assert np.isnan(fits).all()


@pytest.fixture(scope="module")
def case():
    synth = pytest.importorskip("monst3r_fw_eval.synth")
    from monst3r_fw_reference.aligner.testing import make_case, swinstride_pairs

    scene = synth.make_scene(n_frames=8, size_hw=(48, 64), seed=0, n_objects=1, supersample=1)
    return make_case(scene, swinstride_pairs(8, window=2), depth_noise=0.01, edge_scale_range=1.5,
                     init_rot_deg=0.5, init_trans_frac=0.1, seed=1)


def _run(inputs, **cfg):
    torch.manual_seed(0)
    return MonST3RGlobalAligner(MonST3RGAConfig(iterations=20, threads=1, **cfg)).run(inputs, RunContext())


def test_aligner_summary_reports_a_zoom_only_where_the_flow_has_one(case):
    rec = _run(case.inputs, flow_loss_weight=0.01)
    assert rec.run_summary["zoom"]["flagged_pairs"] == []  # the synthetic camera does not zoom
    assert not any("zoom" in line for line in rec.notices)
    assert "zoom" not in _run(case.inputs, flow_loss_weight=0.01, zoom_check=0).run_summary
    # replace the flow of frames 4 -> 5 by a 6 % zoom at the run's focal
    flow = case.inputs.flow
    pairs = np.asarray(flow.pairs)
    row = int(np.flatnonzero((pairs[:, 0] == 4) & (pairs[:, 1] == 5))[0])
    focal = float(np.asarray(rec.intrinsics)[4, 0, 0])
    fwd, bwd = homography_flow(48, 64, focal, [0.0, 0.0, 0.0], 0.94)
    fij, fji = np.array(flow.flow_ij), np.array(flow.flow_ji)
    fij[row], fji[row] = fwd, bwd
    zoomed = dataclasses.replace(case.inputs, flow=dataclasses.replace(flow, flow_ij=fij, flow_ji=fji))
    rec = _run(zoomed, flow_loss_weight=0.01)
    assert [p["frames"] for p in rec.run_summary["zoom"]["flagged_pairs"]] == [[4, 5]]
    assert sum("scales like a zoom between frames 4-5" in line for line in rec.notices) == 1
    # per-frame focal can model a zoom: reported in the summary, no notice
    rec = _run(zoomed, flow_loss_weight=0.01, shared_focal=False)
    assert rec.run_summary["zoom"]["flagged_pairs"] and not any("zoom" in line for line in rec.notices)


def test_shared_focal_auto_follows_the_initial_focals(case):
    """shared_focal: auto is one focal while the initial focals agree to 1 %, one per frame otherwise."""
    logs = []
    torch.manual_seed(0)
    rec = MonST3RGlobalAligner(MonST3RGAConfig(iterations=5, threads=1, shared_focal="auto")).run(
        case.inputs, RunContext(log=logs.append))
    assert np.ptp(np.asarray(rec.intrinsics)[:, 0, 0]) == 0.0 and not any("shared_focal auto" in m for m in logs)
    assert rec.run_summary["focal"] == "shared"
    k = np.array(case.inputs.init.intrinsics)
    k[:, 0, 0] = k[:, 1, 1] = k[0, 0, 0] * np.linspace(1.0, 0.9, len(k))  # a 10 % zoom over the clip
    zoomed = dataclasses.replace(case.inputs, init=dataclasses.replace(case.inputs.init, intrinsics=k))
    stage = MonST3RGlobalAligner(MonST3RGAConfig(iterations=5, threads=1, shared_focal="auto"))
    rec = stage.run(zoomed, RunContext(log=logs.append))
    f = np.asarray(rec.intrinsics)[:, 0, 0]
    assert f[-1] < 0.95 * f[0] and any("shared_focal auto -> one focal per frame" in m for m in logs)
    assert rec.run_summary["focal"] == "per_frame"
    assert stage.config.shared_focal == "auto"  # the stage's config is left as it was
