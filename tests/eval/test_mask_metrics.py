"""DAVIS J (IoU) and boundary F of dynamic masks, cross-checked against an independent computation
(set counting for J; Euclidean distance transforms instead of disk dilation for F), and the mapping
of network-resolution masks back to the original resolution."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from monst3r_fw_eval.masks import boundary_f, boundary_map, jaccard, mask_metrics, mask_to_original


def _blob(h, w, cy, cx, ry, rx):
    y, x = np.mgrid[0:h, 0:w]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _independent_f(pred, gt, bound_th=0.008):
    """F by distance transforms: a boundary pixel matches if the other boundary is within the radius."""
    from scipy import ndimage

    h, w = gt.shape
    r = math.ceil(bound_th * math.hypot(h, w))

    def bnd(m):  # boundary: differs from the east, south or south-east neighbour (zero padded)
        p = np.pad(m, ((0, 1), (0, 1)))
        b = (p[:-1, :-1] != p[:-1, 1:]) | (p[:-1, :-1] != p[1:, :-1]) | (p[:-1, :-1] != p[1:, 1:])
        b[-1, :] = m[-1, :] ^ np.pad(m[-1, 1:], (0, 1))
        b[:, -1] = m[:, -1] ^ np.pad(m[1:, -1], (0, 1))
        b[-1, -1] = False
        return b

    bp, bg = bnd(pred), bnd(gt)
    dist_to_gt = ndimage.distance_transform_edt(~bg)
    dist_to_pred = ndimage.distance_transform_edt(~bp)
    precision = (dist_to_gt[bp] <= r).mean()
    recall = (dist_to_pred[bg] <= r).mean()
    return 2 * precision * recall / (precision + recall)


def test_j_and_f_match_an_independent_computation():
    rng = np.random.default_rng(0)
    h, w = 120, 200
    for k in range(5):
        gt = _blob(h, w, 60, 100, 30, 40)
        pred = _blob(h, w, 60 + rng.integers(-10, 10), 100 + rng.integers(-15, 15), 28 + k, 45 - k)
        pred[rng.random((h, w)) < 0.002] = True  # specks: boundary precision drops
        inter = len(set(zip(*np.nonzero(pred))) & set(zip(*np.nonzero(gt))))
        union = len(set(zip(*np.nonzero(pred))) | set(zip(*np.nonzero(gt))))
        assert jaccard(pred, gt) == pytest.approx(inter / union, abs=1e-12)
        assert boundary_f(pred, gt)[0] == pytest.approx(_independent_f(pred, gt), abs=1e-9)
    # conventions: both empty -> 1; prediction empty -> F 0, J 0
    empty = np.zeros((h, w), bool)
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty)[0] == 1.0
    assert jaccard(empty, gt) == 0.0 and boundary_f(empty, gt)[0] == 0.0
    m = mask_metrics(np.stack([pred, empty]), np.stack([gt, gt]))
    assert m["J_mean"] == pytest.approx((jaccard(pred, gt) + 0.0) / 2)
    assert m["F_mean"] == pytest.approx((boundary_f(pred, gt)[0] + 0.0) / 2)


def test_boundary_map_is_one_pixel_wide_and_closed():
    m = np.zeros((10, 12), bool)
    m[3:7, 4:9] = True
    b = boundary_map(m)
    assert b.sum() > 0 and not b[4:6, 5:8].any()  # interior is not boundary


def test_mask_to_original_inverts_resize_and_crop():
    # original 100x180 -> scale 0.5 -> 50x90 -> crop 2 px left/right: network 50x86
    scale, crop = 0.5, 2.0
    net_from_orig = np.array([[scale, 0, -crop], [0, scale, 0], [0, 0, 1]])
    net = np.zeros((1, 50, 86), bool)
    net[0, 10:20, 30:40] = True
    orig = mask_to_original(net, net_from_orig, (100, 180))
    assert orig.shape == (1, 100, 180)
    ys, xs = np.nonzero(orig[0])
    # network pixels [30, 40) x [10, 20) map back to original x in [(30+2)/0.5, (40+2)/0.5) ~ [64, 84), y ~ [20, 40)
    assert abs(xs.min() - 63) <= 1 and abs(xs.max() - 83) <= 1
    assert abs(ys.min() - 19) <= 1 and abs(ys.max() - 39) <= 1
    assert orig[0].sum() == pytest.approx(400, rel=0.15)  # area scales by 1/scale^2


def test_cli_eval_davis_prints_iou_and_f_cross_checked(tmp_path, monkeypatch):
    """`monst3r-fw eval RUN --dataset davis --gt ROOT --seq NAME` on a run whose masks are cropped
    (224 mode: short edge to 224, centre crop): J and F at the original resolution match an
    independent resampling (cv2.warpAffine with the inverse map) and the independent metrics above."""
    import cv2
    import typer
    from typer.testing import CliRunner

    from monst3r_fw_eval import cli_eval
    from monst3r_framework.runner import run_pipeline

    here = Path(__file__).resolve().parents[1] / "core"
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.delenv("TOY_DELAY", raising=False)
    root = tmp_path / "davis"
    img_dir = root / "JPEGImages" / "480p" / "toy"
    ann_dir = root / "Annotations" / "480p" / "toy"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    oh, ow = 150, 260
    for k in range(4):
        rgb = np.full((oh, ow, 3), 40, np.uint8)
        gt = _blob(oh, ow, 75, 90 + 20 * k, 35, 45)
        rgb[gt] = 230
        cv2.imwrite(str(img_dir / f"{k:05d}.png"), rgb)
        shifted = gt.copy()
        shifted[:, :] = _blob(oh, ow, 75, 94 + 20 * k, 33, 45)  # the GT annotation is a little off
        cv2.imwrite(str(ann_dir / f"{k:05d}.png"), shifted.astype(np.uint8) * 255)
    result = run_pipeline(here / "toy.yaml", img_dir, tmp_path / "run")
    app = typer.Typer()
    cli_eval.register(app)
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--dataset", "davis", "--gt", str(root),
                                   "--seq", "toy"])
    assert res.exit_code == 0, res.output
    assert "IoU (J)" in res.output and " F " in res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["masks"]

    net = np.asarray(result.reconstruction.dynamic, np.uint8)
    assert net.shape[1:] == (224, 224)  # the 224 mode cropped the 260-wide frames
    m = np.asarray(result.frames.network_from_original, np.float64)[:2]
    want_j, want_f = [], []
    for k in range(4):
        # dst (original) pixel -> src (network) pixel through the recorded map: WARP_INVERSE_MAP
        orig = cv2.warpAffine(net[k], m, (ow, oh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        gt = cv2.imread(str(ann_dir / f"{k:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
        inter, union = np.logical_and(orig, gt).sum(), np.logical_or(orig, gt).sum()
        want_j.append(inter / union)
        want_f.append(_independent_f(orig, gt))
    assert 0.6 < np.mean(want_j) < 0.99  # a real, imperfect overlap
    # nearest-pixel ties at half-pixel positions may round differently in cv2: a few boundary pixels
    assert metrics["J_mean"] == pytest.approx(np.mean(want_j), abs=0.01)
    assert metrics["F_mean"] == pytest.approx(np.mean(want_f), abs=0.02)
    out = " ".join(res.output.split())
    assert f"IoU (J) {metrics['J_mean']:.4f} F {metrics['F_mean']:.4f}" in out

    # Without a global aligner the masks come from the mask builder: same masks, same scores.
    run_pipeline(here / "toy.yaml", img_dir, tmp_path / "run_noalign", overrides=["stages.global_aligner.enabled=false"])
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run_noalign"), "--dataset", "davis", "--gt", str(root),
                                   "--seq", "toy"])
    assert res.exit_code == 0, res.output
    no_align = json.loads((tmp_path / "run_noalign" / "metrics.json").read_text())["masks"]
    assert no_align["J_mean"] == pytest.approx(metrics["J_mean"]) and no_align["F_mean"] == pytest.approx(metrics["F_mean"])
