"""Accuracy and speed of the weight-free ``flow_triangulation`` pair predictor on a synthetic scene.

For each directed pair of a ``swinstride`` scene graph it reports the relative-pose error
(rotation, translation direction) against the ground truth, the scale-aligned depth Abs Rel of
``pts3d_i`` on static co-visible pixels, and the median confidence on static vs moving pixels,
with exact flow and with OpenCV DIS flow.

    python benchmarks/bench_flow_triangulation.py --frames 30 --size 144 256 --window 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from monst3r_framework.scene_graph import make_pairs
from monst3r_framework.stages import FlowInputs, PairInputs, RunContext
from monst3r_fw_eval.synth import make_scene
from monst3r_fw_reference.flow import OpenCVDISConfig, OpenCVDISFlow
from monst3r_fw_reference.triangulation import FlowTriangulation, FlowTriangulationConfig, _fb_error
from monst3r_fw_reference.two_view import relative_pose_from_flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", type=int, nargs=2, default=(144, 256), metavar=("H", "W"))
    ap.add_argument("--window", type=int, default=5, help="swinstride-K-noncyclic window")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    h, w = args.size
    scene = make_scene(n_frames=args.frames, size_hw=(h, w), seed=args.seed, n_objects=1)
    pairs = np.asarray(make_pairs(args.frames, f"swinstride-{args.window}-noncyclic", symmetrize=True), np.int64)
    edges = np.unique(np.sort(pairs, axis=1), axis=0)
    stage = FlowTriangulation(FlowTriangulationConfig())
    k = stage.intrinsics(h, w)
    t0 = time.perf_counter()
    dis = OpenCVDISFlow(OpenCVDISConfig()).run(FlowInputs(frames=scene.frameset(), pairs=edges), RunContext())
    t_dis = time.perf_counter() - t0
    print(f"scene {args.frames} frames {h}x{w}, {len(pairs)} directed pairs / {len(edges)} edges; DIS {t_dis:.1f} s")
    for label, flow in (("exact", scene.flow_field(edges)), ("opencv_dis", dis)):
        t0 = time.perf_counter()
        preds = stage.run(PairInputs(frames=scene.frameset(), pairs=pairs, flow=flow), RunContext())
        seconds = time.perf_counter() - t0
        rot, tdir, absrel, c_static, c_dyn = [], [], [], [], []
        for p, (i, j) in enumerate(pairs):
            gt = np.linalg.inv(scene.cam_to_world[j]) @ scene.cam_to_world[i]
            if i < j:  # pose once per edge
                f_ij = torch.from_numpy(np.asarray(flow.gather(np.array([(i, j)]))))
                f_ji = torch.from_numpy(np.asarray(flow.gather(np.array([(j, i)]))))
                geo = relative_pose_from_flow(f_ij[0].numpy(), _fb_error(f_ij, f_ji)[0].numpy(), k, seed=p)
                d_r = geo.cam_b_from_cam_a[:3, :3] @ gt[:3, :3].T
                rot.append(np.degrees(np.arccos(np.clip((np.trace(d_r) - 1) / 2, -1, 1))))
                t_gt = gt[:3, 3] / np.linalg.norm(gt[:3, 3])
                tdir.append(np.degrees(np.arccos(np.clip(t_gt @ geo.cam_b_from_cam_a[:3, 3], -1, 1))))
            static = ~scene.dynamic_mask[i] & scene.covisible(i, j)
            z, z_gt = preds.pts3d_i[p][..., 2][static], scene.depth[i][static]
            s = np.median(z_gt / z)
            absrel.append(np.mean(np.abs(s * z - z_gt) / z_gt))
            c_static.append(np.median(preds.conf_i[p][static]))
            if scene.dynamic_mask[i].any():
                c_dyn.append(np.median(preds.conf_i[p][scene.dynamic_mask[i]]))
        q = lambda a: f"median {np.median(a):.4f} mean {np.mean(a):.4f} max {np.max(a):.4f}"  # noqa: E731
        print(f"[{label}] flow_triangulation {seconds:.1f} s ({1000 * seconds / len(edges):.0f} ms/edge)")
        print(f"  rotation error deg      {q(rot)}")
        print(f"  translation dir err deg {q(tdir)}")
        print(f"  depth AbsRel (static)   {q(absrel)}")
        print(f"  conf median static {np.median(c_static):.2f}  moving {np.median(c_dyn):.2f}")


if __name__ == "__main__":
    main()
