"""How fast `monst3r-fw view` opens a run, and how its memory grows with the number of frames.

A synthetic run folder (written straight into the store, no pipeline: textured frames, a tilted
plane with a moving sphere as depth, a dolly camera path, the sphere as dynamic mask, uniform
confidence) is opened in a fresh Python process per size, so imports are counted:

* ``import`` - importing the viewer, viser and the store (paid once per `view` command);
* ``first frame`` - from ``RunViewer(...)`` to the first frame drawn (current frame's points,
  every frustum with its thumbnail, the trajectory): what a user waits for after the URL prints;
* ``all drawn`` - until the accumulated static background (every frame read once) is drawn too;
* ``RSS +MB`` - resident memory after everything is drawn, minus before opening the run.

Wall times on a loaded machine mostly measure the load; the CPU seconds of this process (all its
threads) in brackets are what an idle core would need.

    python benchmarks/bench_viewer.py                 # 60 frames at 512x288, plus 15/30/120 for memory
    python benchmarks/bench_viewer.py --frames 60 --sizes 512x288
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def synthetic_scene(n: int, h: int, w: int, seed: int = 0) -> SimpleNamespace:
    """Cheap stand-in for a SyntheticScene (same attributes): vectorised, ~1 s for 60 frames at 512x288."""
    rng = np.random.default_rng(seed)
    f = 0.8 * w
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 4.0 + 1.5 * xs / w + 0.5 * ys / h
    texture = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), np.uint8).repeat(8, 0).repeat(8, 1)[:h, :w]
    rgb = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    dyn = np.empty((n, h, w), bool)
    c2w = np.repeat(np.eye(4)[None], n, 0)
    for i in range(n):
        cx, cy = w * (0.3 + 0.4 * i / max(n - 1, 1)), h * 0.55
        r2 = (xs - cx) ** 2 + (ys - cy) ** 2
        sphere = r2 < (0.15 * h) ** 2
        dyn[i] = sphere
        depth[i] = np.where(sphere, 2.5 + r2 / (0.15 * h) ** 2 * 0.3, base)
        rgb[i] = np.roll(texture, -2 * i, axis=1)
        rgb[i][sphere] = (220, 60, 40)
        c2w[i, 0, 3] = 0.02 * i
    return SimpleNamespace(n_frames=n, size_hw=(h, w), rgb=rgb, depth=depth, dynamic_mask=dyn, K=k,
                           cam_to_world=c2w, timestamps=np.arange(n) / 10.0)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(run_dir: str) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    import cv2  # noqa: F401
    import viser  # noqa: F401
    from viser import transforms  # noqa: F401

    import monst3r_framework.stages  # noqa: F401
    import monst3r_framework.store  # noqa: F401
    from monst3r_fw_viewer.server import RunViewer

    t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
    rss0 = _rss_mb()
    start, c1 = time.perf_counter(), time.process_time()
    viewer = RunViewer(Path(run_dir), port=0)
    first = viewer.first_frame_seconds
    c_first = time.process_time() - c1
    opened = time.perf_counter() - start
    viewer.wait_idle(600)
    all_drawn = time.perf_counter() - start
    counts = viewer.shown_counts()
    rss1 = _rss_mb()
    viewer.stop()
    print(json.dumps({"import_s": t_import, "import_cpu_s": c_import, "first_frame_cpu_s": c_first, "first_frame_s": first, "constructor_s": opened, "all_drawn_s": all_drawn,
                      "rss_delta_mb": rss1 - rss0, "counts": counts}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[15, 30, 60, 120])
    parser.add_argument("--sizes", default="512x288", help="WxH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    from monst3r_fw_viewer.testing import write_synthetic_run

    w, h = (int(v) for v in args.sizes.split("x"))
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    print(f"{'frames':>6} {'size':>8} {'import s (CPU)':>15} {'first frame s (CPU)':>20} {'all drawn s':>12} "
          f"{'RSS +MB':>8} {'thumbs MB':>9} {'bg points':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            t = time.perf_counter()
            run = write_synthetic_run(Path(tmp) / f"run{n}", synthetic_scene(n, h, w))
            gen = time.perf_counter() - t
            out = subprocess.run([sys.executable, __file__, "--child", str(run)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:])
                sys.exit(1)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            stride = int(np.ceil(max(h, w) / 96))
            thumbs_mb = n * len(range(0, h, stride)) * len(range(0, w, stride)) * 3 / 1e6
            print(f"{n:>6} {w}x{h:>4} {r['import_s']:>8.2f} ({r['import_cpu_s']:.2f}) "
                  f"{r['first_frame_s']:>12.2f} ({r['first_frame_cpu_s']:.2f}) {r['all_drawn_s']:>12.2f} "
                  f"{r['rss_delta_mb']:>8.0f} {thumbs_mb:>9.2f} {r['counts']['static']:>9}   (store written in {gen:.1f} s)")


if __name__ == "__main__":
    main()
