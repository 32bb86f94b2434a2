"""Long videos end to end: peak RSS and wall time per stage, store size per frame, ATE (prints figures).

Usage::

    python benchmarks/bench_long_video.py [--recipe classical|paper] [--frames 100 250 500 1000]
        [--size 256x144] [--set KEY=VALUE ...] [--root /tmp/bench_long] [--seed 0]

For each length N a synthetic scene (``make_scene(n_frames=N, seed=SEED, n_objects=1)``) is rendered
once under ``ROOT/scene_N_WxH`` and the recipe runs on its frames **in a fresh subprocess** with a
fresh store, so every figure belongs to that one run:

* peak RSS of every stage: the kernel's high-water mark (``VmHWM``) read when the stage reports and
  then reset (``/proc/self/clear_refs``), so each stage's figure is its own peak, including what the
  runner does to commit its record (Linux only);
* wall seconds of every stage (the runner's report);
* bytes of every store group on disk, per frame;
* ATE (% of the path length) against the synthetic ground truth, and the camera steps: the largest
  step over the median step, overall and at the aligner's window seams (when it ran windowed).

``--recipe paper`` runs ``recipes/paper.yaml`` with the tiny fixture checkpoint
(``../shared/fixtures/monst3r_parity/tiny_checkpoint.pth``) and DIS flow: its numbers are
meaningless, but it exercises the same data path as the real network (as in tests/e2e).
Results also go to ``ROOT/results_<recipe>.json``. Run heavy sizes with ``nice -n 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_CKPT = (REPO / ".." / "shared" / "fixtures" / "monst3r_parity" / "tiny_checkpoint.pth").resolve()


def _hwm_kib() -> int:
    """Peak resident set size of this process since the last reset, KiB (VmHWM)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1))


def _reset_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not resettable here: every later stage then reports the running peak


def recipe_overrides(recipe: str, width: int) -> list[str]:
    """Overrides shared by every run of ``recipe`` (no exporters: they are timed separately)."""
    common = [f"input.long_edge={width}", "stages.global_aligner.threads=1"]
    if recipe == "classical":
        return common
    if recipe == "paper":
        return common + [
            f"stages.pair_predictor.checkpoint={TINY_CKPT}", "stages.flow_estimator.type=opencv_dis",
            # random tiny weights give pointmaps with negative depths: a known focal keeps PnP defined
            f"stages.pose_solver.focal={0.5 * width / 0.5773502691896258:.3f}",
            "stages.mask_builder.pose_source=solver",
        ]
    raise SystemExit(f"unknown --recipe {recipe!r}; use classical or paper")


def step_ratios(c2w: Any, seams: list[int]) -> dict[str, float]:
    """Camera-centre steps: max / median overall and at the given seam frames (step seam-1 -> seam)."""
    import numpy as np

    centres = np.asarray(c2w, np.float64)[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    med = float(np.median(steps)) if len(steps) else 0.0
    out = {"median_step": med, "max_step_ratio": float(steps.max() / med) if med > 0 else float("nan")}
    seam_steps = [steps[s - 1] for s in seams if 0 < s <= len(steps)]
    out["seam_max_ratio"] = float(max(seam_steps) / med) if seam_steps and med > 0 else float("nan")
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one pipeline in this (fresh) process; returns per-stage peaks, timings, store sizes and metrics."""
    from monst3r_framework.cli_tools import evaluate_against
    from monst3r_framework.runner import run_pipeline

    base = _hwm_kib()
    peaks: dict[str, float] = {}

    def log(msg: str) -> None:
        m = re.match(r"^(.*?): (computed|reusing|resumed) ", msg)
        if m:
            peaks[m.group(1)] = _hwm_kib() / 1024.0
            _reset_hwm()

    _reset_hwm()
    start = time.perf_counter()
    result = run_pipeline(REPO / "recipes" / f"{spec['recipe']}.yaml", spec["frames"], spec["out"],
                          overrides=spec["overrides"], log=log)
    wall = time.perf_counter() - start
    store = Path(spec["out"]) / "store.zarr"
    sizes: dict[str, int] = {}
    for path in sorted(store.glob("frames/*")) + sorted(store.glob("stages/*/*")):
        name = "frames" if path.parent.name == "frames" else path.parent.name
        sizes[name] = sizes.get(name, 0) + sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    seams: list[int] = []
    info = result.reconstruction.meta() if hasattr(result.reconstruction, "meta") else {}
    for s in info.get("window_seams", ()) or ():
        seams.append(int(s))
    metrics = evaluate_against(result, Path(spec["scene"]))
    steps = step_ratios(result.reconstruction.world_from_cam, seams)
    return {
        "n_frames": result.frames.n_frames, "wall_s": wall, "import_rss_mb": base / 1024.0,
        "stages": [{"label": r.label, "seconds": r.seconds, "cached": r.cached,
                    "peak_rss_mb": peaks.get(r.label)} for r in result.reports],
        "store_bytes": sizes, "ate_percent_of_path": metrics.get("ate_percent_of_path"),
        "abs_rel": metrics.get("abs_rel"), "rpe_rot": metrics.get("rpe_rot"), **steps,
    }


def ensure_scene(root: Path, n: int, w: int, h: int, seed: int) -> Path:
    from monst3r_framework.synth import make_scene

    scene = root / (f"scene_{n}_{w}x{h}" + (f"_s{seed}" if seed else ""))
    if not (scene / "gt.npz").exists():
        t = time.perf_counter()
        make_scene(n_frames=n, size_hw=(h, w), seed=seed, n_objects=1).save(scene, video=False)
        print(f"rendered {n} frames at {w}x{h} in {time.perf_counter() - t:.0f} s", flush=True)
    return scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="classical", choices=["classical", "paper"])
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 250, 500, 1000])
    ap.add_argument("--size", default="256x144", help="WxH of the synthetic video")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra recipe override KEY=VALUE")
    ap.add_argument("--root", default="/tmp/bench_long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the run folders / results file (compare variants)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    w, h = (int(v) for v in args.size.lower().split("x"))
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1/5 min); recipe {args.recipe}; "
          f"{w}x{h}; overrides {args.sets}", flush=True)
    for n in args.frames:
        scene = ensure_scene(root, n, w, h, args.seed)
        out = root / f"run_{args.recipe}_{n}_{w}x{h}{args.tag}"
        shutil.rmtree(out, ignore_errors=True)
        spec = {"recipe": args.recipe, "frames": str(scene / "frames"), "scene": str(scene), "out": str(out),
                "overrides": recipe_overrides(args.recipe, w) + ["stages.exporters=[]"] + args.sets}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"N={n}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            continue
        res = json.loads(line[0][7:])
        res["load_after"] = os.getloadavg()[0]
        rows.append(res)
        store_total = sum(res["store_bytes"].values())
        print(f"\nN={n}: wall {res['wall_s']:.1f} s, ATE {res['ate_percent_of_path']:.2f}% of path, "
              f"max step/median {res['max_step_ratio']:.2f}, seam max/median {res['seam_max_ratio']:.2f}, "
              f"store {store_total / n / 2**20:.2f} MiB/frame, load {res['load_after']:.2f}", flush=True)
        print(f"  {'stage':38s} {'s':>8s} {'s/frame':>8s} {'peak MiB':>9s}")
        for st in res["stages"]:
            peak = "-" if st["peak_rss_mb"] is None else f"{st['peak_rss_mb']:.0f}"
            print(f"  {st['label']:38s} {st['seconds']:8.1f} {st['seconds'] / n:8.3f} {peak:>9s}")
        for name, size in res["store_bytes"].items():
            print(f"  store {name:32s} {size / n / 2**20:8.3f} MiB/frame")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        ratio = lambda key: max(s["peak_rss_mb"] or 0 for s in b["stages"]) / max(s["peak_rss_mb"] or 1 for s in a["stages"])  # noqa: E731
        print(f"\n{b['n_frames']} vs {a['n_frames']} frames ({b['n_frames'] / a['n_frames']:.1f}x): peak RSS "
              f"{ratio('peak'):.2f}x, wall {b['wall_s'] / a['wall_s']:.2f}x, store/frame "
              f"{sum(b['store_bytes'].values()) / b['n_frames'] / (sum(a['store_bytes'].values()) / a['n_frames']):.2f}x")
    (root / f"results_{args.recipe}{args.tag}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
