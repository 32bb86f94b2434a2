"""Time the synthetic scene generator: 60 frames at 512x288 (the issue's target: well under 60 s).

Usage: python benchmarks/bench_synth.py [--frames 60] [--size 512x288] [--objects 1] [--out DIR]
Prints wall and CPU seconds for rendering and for saving (PNG frames + mp4 + gt.npz).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from monst3r_fw_eval.synth import make_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="512x288")
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    for k in args.objects:
        t0, c0 = time.perf_counter(), time.process_time()
        scene = make_scene(n_frames=args.frames, size_hw=(h, w), seed=args.seed, n_objects=k)
        t1, c1 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            scene.save(args.out or tmp)
        t2, c2 = time.perf_counter(), time.process_time()
        frac = scene.dynamic_mask.mean(axis=(1, 2))
        flow = np.linalg.norm(scene.flow(0, 1), axis=-1)
        print(f"objects={k} frames={args.frames} size={w}x{h}: render {t1 - t0:.2f} s wall / {c1 - c0:.2f} s CPU; "
              f"save {t2 - t1:.2f} s wall / {c2 - c1:.2f} s CPU; total {t2 - t0:.2f} s wall; "
              f"dynamic fraction {frac.min():.3f}-{frac.max():.3f}; flow(0,1) mean {flow.mean():.2f} px, "
              f"max {flow.max():.2f} px")


if __name__ == "__main__":
    main()
