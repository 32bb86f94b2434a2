"""The viewer driven from Python on a free port: what is shown per frame, toggles, thresholds, HTTP."""

from __future__ import annotations

import socket
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("viser")

from monst3r_fw_viewer.server import RunViewer, pick_port  # noqa: E402


def _expected(scene, frame: int, stride: int, threshold: float, conf) -> tuple[int, int]:
    """(dynamic, static) points of one frame after stride and confidence threshold, from the scene's masks."""
    dyn = scene.dynamic_mask[frame, ::stride, ::stride]
    keep = np.asarray(conf[frame, ::stride, ::stride]) >= threshold
    return int((dyn & keep).sum()), int((~dyn & keep).sum())


def _settle(viewer: RunViewer) -> None:
    time.sleep(0.05)
    viewer.wait_idle()


@pytest.fixture
def viewer(synth_runs):
    v = RunViewer(synth_runs / "complete", port=0)
    yield v
    v.stop()


def test_frame_slider_and_toggles_follow_the_masks(viewer, synth_scene):
    conf = np.asarray(viewer.data.recon.conf)
    stride = int(viewer.gui_sstride.value)
    assert stride == 2
    _settle(viewer)
    for frame in (0, 3, 5):
        viewer.gui_frame.value = frame
        dyn, stat = _expected(synth_scene, frame, stride, -np.inf, conf)
        assert dyn > 0 and stat > 0
        counts = viewer.shown_counts()
        assert (counts["dynamic"], counts["current_static"]) == (dyn, stat)
    # the accumulated background holds every frame's static points (budget not reached here)
    assert viewer.shown_counts()["static"] == sum(_expected(synth_scene, f, stride, -np.inf, conf)[1] for f in range(6))
    viewer.gui_mode.value = "static"
    _settle(viewer)
    counts = viewer.shown_counts()
    assert counts["dynamic"] == 0 and counts["static"] > 0
    viewer.gui_mode.value = "dynamic"
    _settle(viewer)
    counts = viewer.shown_counts()
    assert counts["static"] == 0 and counts["current_static"] == 0
    assert counts["dynamic"] == _expected(synth_scene, 5, stride, -np.inf, conf)[0]


def test_confidence_threshold_absolute_and_percentile(viewer, synth_scene):
    conf = np.asarray(viewer.data.recon.conf)
    viewer.gui_frame.value = 2
    viewer.gui_conf_mode.value = "absolute"
    viewer.gui_conf.value = 3.0
    _settle(viewer)
    dyn, stat = _expected(synth_scene, 2, 2, 3.0, conf)
    counts = viewer.shown_counts()
    assert (counts["dynamic"], counts["current_static"]) == (dyn, stat)
    total = _expected(synth_scene, 2, 2, -np.inf, conf)
    assert 0.35 < (dyn + stat) / sum(total) < 0.65  # uniform confidence in [1, 5): half is >= 3
    viewer.gui_conf_mode.value = "percentile"
    viewer.gui_conf.value = 75.0
    _settle(viewer)
    thr = viewer.conf_threshold()
    assert 3.8 < thr < 4.2
    counts = viewer.shown_counts()
    assert (counts["dynamic"], counts["current_static"]) == _expected(synth_scene, 2, 2, thr, conf)
    viewer.gui_sstride.value = 1
    _settle(viewer)
    counts = viewer.shown_counts()
    assert (counts["dynamic"], counts["current_static"]) == _expected(synth_scene, 2, 1, thr, conf)


def test_frustums_trajectory_all_frames_and_http(viewer, synth_scene):
    assert viewer.shown_counts()["frustums"] == synth_scene.n_frames
    viewer.gui_frustums.value = False
    assert viewer.shown_counts()["frustums"] == 0
    viewer.gui_frustums.value = True
    assert viewer.shown_counts()["frustums"] == synth_scene.n_frames
    conf = np.asarray(viewer.data.recon.conf)
    viewer.gui_all.value = True
    viewer.gui_tstride.value = 2
    _settle(viewer)
    counts = viewer.shown_counts()
    assert counts["dynamic"] == counts["current_static"] == counts["static"] == 0
    assert counts["all_frames"] == sum(sum(_expected(synth_scene, f, 2, -np.inf, conf)) for f in (0, 2, 4))
    with urllib.request.urlopen(viewer.url, timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read().lower()


def test_step_play_and_record(viewer, tmp_path):
    viewer.step(1)
    assert viewer.gui_frame.value == 1
    viewer.step(-2)
    assert viewer.gui_frame.value == 5
    viewer.gui_fps.value = 50
    viewer.gui_play.value = True
    deadline = time.time() + 5
    while viewer.gui_frame.value == 5 and time.time() < deadline:
        time.sleep(0.02)
    viewer.gui_play.value = False
    assert viewer.gui_frame.value != 5
    path = viewer.record(tmp_path / "scene.viser")
    assert path.stat().st_size > 10_000  # frames, frustum thumbnails and points


def test_unfinished_run_shows_initial_poses_with_a_label(synth_runs, synth_scene):
    v = RunViewer(synth_runs, port=0)
    try:
        assert [p.name for p in v.runs] == ["complete", "partial"]
        assert v.gui_run.visible
        v.gui_run.value = "partial"
        assert v.data.shown == "pose_solver"
        assert "global aligner has not finished" in v.gui_label.content
        conf = np.asarray(v.data.cameras.conf)
        v.gui_frame.value = 4
        counts = v.shown_counts()
        assert (counts["dynamic"], counts["current_static"]) == _expected(synth_scene, 4, 2, -np.inf, conf)
        # depth back-projected with the initial poses lands on the true points
        fp = v.data.frame_points(4, 4)
        from monst3r_framework.geometry import depth_to_world_points

        k = np.asarray(synth_scene.K)[None]
        truth = depth_to_world_points(synth_scene.depth[4:5], k, synth_scene.cam_to_world[4:5])[0, ::4, ::4].reshape(-1, 3)
        np.testing.assert_allclose(fp["xyz"], truth, atol=1e-4)
    finally:
        v.stop()


def test_port_in_use_is_one_clear_error():
    from monst3r_framework.errors import InputError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} on 127.0.0.1 is in use; pass another --port"):
            pick_port("127.0.0.1", port)
        assert pick_port("127.0.0.1", None) != port


def test_pair_predictions_only_show_the_reference_views_pointmaps(tmp_path, synth_scene):
    from monst3r_framework.geometry import depth_to_world_points, inv_rigid, transform_points
    from monst3r_fw_viewer.run_data import RunData
    from monst3r_fw_viewer.testing import write_synthetic_run

    run = write_synthetic_run(tmp_path / "pairs", synth_scene, stages=("pair_predictor", "mask_builder"),
                              status="running", run_id="pairs-run")
    data = RunData(run)
    assert data.shown == "pair_predictor" and "pair pointmaps of reference frame 0; no poses yet" in data.label
    assert data.has_pose.tolist() == [True] + [False] * 5
    np.testing.assert_allclose(data.intrinsics[0, 0, 0], synth_scene.K[0, 0], rtol=1e-3)
    k = np.asarray(synth_scene.K)[None]
    world = depth_to_world_points(synth_scene.depth[3:4], k, synth_scene.cam_to_world[3:4])
    in_cam0 = transform_points(inv_rigid(synth_scene.cam_to_world[:1]), world)[0, ::2, ::2].reshape(-1, 3)
    np.testing.assert_allclose(data.frame_points(3, 2)["xyz"], in_cam0, atol=1e-4)
    v = RunViewer(run, port=0)
    try:
        assert v.shown_counts()["frustums"] == 1
        assert v.shown_counts()["dynamic"] == int(synth_scene.dynamic_mask[0, ::2, ::2].sum())
    finally:
        v.stop()
