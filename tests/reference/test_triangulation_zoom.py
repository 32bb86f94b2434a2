"""flow_triangulation focal_per_frame: a camera that zooms while it moves, with exact analytic flow.

The scene is a ground plane under the camera and a wall behind it (depth varies, so the zoom is not
motion along the optical axis towards one plane); every frame has its own focal. With one focal for all
frames the zoom is triangulated as motion and the depths come out wrong; with ``focal_per_frame: zoom``
each frame's focal is recovered from the chained adjacent zoom factors and every pixel triangulates to its
true depth (up to the edge's scale)."""

from __future__ import annotations

import numpy as np
import pytest

from monst3r_framework.stages import FlowField, FrameSet, PairInputs, RunContext
from monst3r_fw_reference.triangulation import FlowTriangulation, FlowTriangulationConfig, intrinsics_from_config

H, W = 64, 96
N = 8
F0 = float(intrinsics_from_config(H, W, None, 60.0)[0, 0])  # the stage's fov prior: 83.1 px
# frames 3-5 zoom out by 5 % per frame; the median frame keeps the prior focal
ZOOM = np.array([1.0, 1.0, 1.0, 0.95, 0.95, 0.95, 1.0, 1.0])
FOCALS = np.cumprod(ZOOM) / np.median(np.cumprod(ZOOM)) * F0
CENTRES = np.stack([0.03 * np.arange(N), np.zeros(N), 0.01 * np.arange(N)], 1)  # sideways and a little forward
GROUND_Y, WALL_Z = 1.5, 12.0
PP = np.array([(W - 1) / 2.0, (H - 1) / 2.0])


def _depth(t: int) -> np.ndarray:
    """(H, W) z-depth of frame t: nearest of the ground plane y = GROUND_Y and the wall z = WALL_Z."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    dy = (ys - PP[1]) / FOCALS[t]
    wall = WALL_Z - CENTRES[t, 2]
    with np.errstate(divide="ignore"):
        ground = np.where(dy > 1e-9, (GROUND_Y - CENTRES[t, 1]) / np.maximum(dy, 1e-9), np.inf)
    return np.minimum(ground, wall)


def _flow(i: int, j: int) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    z = _depth(i)
    world = np.stack([(xs - PP[0]) / FOCALS[i] * z, (ys - PP[1]) / FOCALS[i] * z, z], -1) + CENTRES[i]
    cam_j = world - CENTRES[j]  # no rotation
    u = FOCALS[j] * cam_j[..., 0] / cam_j[..., 2] + PP[0]
    v = FOCALS[j] * cam_j[..., 1] / cam_j[..., 2] + PP[1]
    return np.stack([u - xs, v - ys], -1).astype(np.float32)


EDGES = np.array([(i, i + d) for i in range(N) for d in (1, 2, 3) if i + d < N], np.int64)
PAIRS = np.concatenate([EDGES, EDGES[:, ::-1]])


@pytest.fixture(scope="module")
def inputs() -> PairInputs:
    flow = FlowField(pairs=EDGES, flow_ij=np.stack([_flow(i, j) for i, j in EDGES]),
                     flow_ji=np.stack([_flow(j, i) for i, j in EDGES]))
    frames = FrameSet(rgb=np.zeros((N, H, W, 3), np.uint8), frame_index=np.arange(N, dtype=np.int64),
                      timestamps=np.arange(N, dtype=np.float64), original_hw=(H, W),
                      network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), source="zoom test")
    return PairInputs(frames=frames, pairs=PAIRS, flow=flow)


def _depth_errors(pred) -> np.ndarray:
    """Per pair: median |depth / truth / (median ratio) - 1| of frame i's confident pixels."""
    out = []
    for p, (i, j) in enumerate(np.asarray(pred.pairs)):
        z = np.asarray(pred.pts3d_i[p])[..., 2]
        ok = np.asarray(pred.conf_i[p]) > 2.0
        ratio = z[ok] / _depth(int(i))[ok]
        out.append(float(np.median(np.abs(ratio / np.median(ratio) - 1.0))))
    return np.array(out)


def test_per_frame_focal_is_recovered_from_the_zoom(inputs):
    stage = FlowTriangulation(FlowTriangulationConfig(focal_per_frame="zoom"))
    focals = stage.frame_focals(inputs.flow, N, stage.intrinsics(H, W), RunContext())
    np.testing.assert_allclose(focals / FOCALS, 1.0, atol=0.01)
    off = FlowTriangulation(FlowTriangulationConfig()).frame_focals(inputs.flow, N, stage.intrinsics(H, W), RunContext())
    assert np.all(off == F0)


def test_triangulation_with_per_view_intrinsics_reproduces_the_depth(inputs):
    ctx = RunContext()
    zoom = FlowTriangulation(FlowTriangulationConfig(focal_per_frame="zoom", rotation_averaging=True)).run(inputs, ctx)
    one = FlowTriangulation(FlowTriangulationConfig(rotation_averaging=True)).run(inputs, ctx)
    err_zoom, err_one = _depth_errors(zoom), _depth_errors(one)
    zoomed = np.array([abs(np.log(FOCALS[i] / FOCALS[j])) > 0.01 for i, j in PAIRS])
    assert err_zoom.max() < 0.01, err_zoom
    # one focal: the zoom is triangulated as motion along the axis (relative depth errors up to ~5 %)
    assert err_one[zoomed].max() > 0.04 and err_one[zoomed].mean() > 3 * err_zoom[zoomed].mean(), (err_one, err_zoom)
    # every frame's pointmap lies on its own rays: x / z = (u - cx) / f_frame
    xs = np.arange(W) - PP[0]
    for p, (i, _) in enumerate(PAIRS):
        pts = np.asarray(zoom.pts3d_i[p])
        np.testing.assert_allclose(pts[..., 0] / pts[..., 2], np.broadcast_to(xs / FOCALS[i], (H, W)), atol=1e-2 / F0 * 50)


def test_without_a_zoom_the_output_is_the_single_focal_one():
    synth = pytest.importorskip("monst3r_fw_eval.synth")
    scene = synth.make_scene(n_frames=6, size_hw=(48, 64), seed=0, n_objects=1, supersample=1)
    edges = np.array([(i, i + d) for i in range(6) for d in (1, 2) if i + d < 6], np.int64)
    inp = PairInputs(frames=scene.frameset(), pairs=edges, flow=scene.flow_field(edges))
    a = FlowTriangulation(FlowTriangulationConfig(focal_per_frame="zoom")).run(inp, RunContext())
    b = FlowTriangulation(FlowTriangulationConfig()).run(inp, RunContext())
    for name in ("pts3d_i", "pts3d_j", "conf_i", "conf_j"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
