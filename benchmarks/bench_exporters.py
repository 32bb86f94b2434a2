"""Wall time and output size of every reference exporter on a paper-sized run.

    python benchmarks/bench_exporters.py [--frames 60] [--size 288x512]

Builds a random reconstruction (random poses, depth in [1, 5], confidence in [1, 3], a dynamic
block covering ~6% of each frame; original video 2x the network size) and runs each exporter with
its default config into a temporary folder, printing seconds and megabytes per exporter.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from monst3r_framework.geometry import depth_to_world_points
from monst3r_framework.stages import CameraTrajectory, DynamicMasks, ExportInputs, FrameSet, Reconstruction, RunContext
from monst3r_fw_reference import export as ex


def build(n: int, h: int, w: int, out_dir: Path) -> ExportInputs:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q[np.linalg.det(q) < 0, :, 0] *= -1
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = q
    c2w[:, :3, 3] = rng.normal(size=(n, 3))
    k = np.tile(np.array([[0.9 * w, 0, (w - 1) / 2], [0, 0.9 * w, (h - 1) / 2], [0, 0, 1.0]]), (n, 1, 1))
    net_from_orig = ((0.5, 0.0, -0.25), (0.0, 0.5, -0.25), (0.0, 0.0, 1.0))
    depth = rng.uniform(1, 5, (n, h, w)).astype(np.float32)
    conf = rng.uniform(1, 3, (n, h, w)).astype(np.float32)
    dyn = np.zeros((n, h, w), bool)
    dyn[:, h // 3: h // 3 + h // 4, w // 3: w // 3 + w // 4] = True
    frames = FrameSet(rgb=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), frame_index=np.arange(n),
                      timestamps=np.arange(n) / 10.0, original_hw=(2 * h, 2 * w), network_from_original=net_from_orig)
    rec = Reconstruction(world_from_cam=c2w, intrinsics=k,
                         intrinsics_original=np.linalg.inv(np.asarray(net_from_orig))[None] @ k, depth=depth,
                         conf=conf, pts3d_world=depth_to_world_points(depth, k, c2w), dynamic=dyn)
    init = CameraTrajectory(world_from_cam=c2w, intrinsics=k, depth=depth, conf=conf)
    return ExportInputs(frames=frames, reconstruction=rec, out_dir=out_dir, init=init,
                        masks=DynamicMasks(dynamic=dyn), run_info={"config_hash": "bench"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="288x512", help="network HxW")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench_exporters_"))
    try:
        print(f"{args.frames} frames at {h}x{w} (original {2 * h}x{2 * w})")
        print(f"{'exporter':<16}{'seconds':>10}{'MB':>10}{'files':>8}")
        for cls in ex.STAGES:
            inputs = build(args.frames, h, w, root / cls.name)
            stage = cls(cls.config_model())
            t0 = time.perf_counter()
            result = stage.run(inputs, RunContext())
            dt = time.perf_counter() - t0
            mb = sum(p.stat().st_size for p in (root / cls.name).rglob("*") if p.is_file()) / 1e6
            print(f"{cls.name:<16}{dt:>10.2f}{mb:>10.1f}{len(result.files):>8}")
            shutil.rmtree(root / cls.name)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
