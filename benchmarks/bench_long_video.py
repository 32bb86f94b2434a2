"""Long videos end to end: peak RSS and wall time per stage, store size per frame, ATE (prints figures).

Usage::

    python benchmarks/bench_long_video.py [--recipe classical|paper|long_video|long_video_classical]
        [--inputs network|synthetic_pairs] [--frames 100 250 500 1000] [--size 256x144]
        [--set KEY=VALUE ...] [--root /tmp/bench_long] [--seed 0] [--tag NAME]

For each length N a synthetic scene (``make_scene(n_frames=N, seed=SEED, n_objects=1)``) is rendered
once under ``ROOT/scene_N_WxH`` and the recipe runs on its frames **in a fresh subprocess** with a
fresh store, so every figure belongs to that one run:

* peak RSS of every stage: the kernel's high-water mark (``VmHWM``) read when the stage reports and
  then reset (``/proc/self/clear_refs``), so each stage's figure is its own peak, including what the
  runner does to commit its record (Linux only);
* wall seconds of every stage (the runner's report) and its CPU seconds (user + system of the process,
  from the stage's start to its report, so worker threads count; a loaded machine stretches wall, not CPU);
* bytes of every store group on disk, per frame;
* ATE (% of the path length) against the synthetic ground truth, and the camera steps: the largest
  step over the median step, overall and at the aligner's window seams (when it ran windowed).

``--inputs synthetic_pairs`` hands the recipe the scene's ground-truth pair pointmaps (1% depth
noise, confidence 2) and exact flow as ``precomputed`` npz files instead of running a pair predictor
and a flow estimator: pose solver, masks, aligner, store and exporters are the recipe's, and a
1000-frame run fits in minutes on 2 cores (the classical pair predictor takes seconds per frame).

``--recipe paper`` (and ``long_video``) runs with the tiny fixture checkpoint
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


def recipe_overrides(recipe: str, width: int, inputs: str = "network", scene: Path | None = None) -> list[str]:
    """Overrides shared by every run of ``recipe`` (no exporters: they are timed separately)."""
    common = [f"input.long_edge={width}", "stages.global_aligner.threads=1"]
    if inputs == "synthetic_pairs":
        return common + [
            "stages.pair_predictor.type=precomputed", f"stages.pair_predictor.path={scene / 'pairs.npz'}",
            "stages.flow_estimator.type=precomputed", f"stages.flow_estimator.path={scene / 'flow.npz'}",
        ]
    if recipe in ("classical", "long_video_classical"):
        return common
    if recipe in ("paper", "long_video"):
        return common + [
            f"stages.pair_predictor.checkpoint={TINY_CKPT}", "stages.flow_estimator.type=opencv_dis",
            # random tiny weights give pointmaps with negative depths: a known focal keeps PnP defined
            f"stages.pose_solver.focal={0.5 * width / 0.5773502691896258:.3f}",
            "stages.mask_builder.pose_source=solver",
        ]
    raise SystemExit(f"unknown --recipe {recipe!r}; use classical, paper, long_video or long_video_classical")


def step_ratios(c2w: Any, seams: list[int]) -> dict[str, float]:
    """Camera-centre steps: max / median overall and at the given seam frames (step seam-1 -> seam)."""
    import numpy as np

    centres = np.asarray(c2w, np.float64)[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    med = float(np.median(steps)) if len(steps) else 0.0
    out = {"median_step": med, "max_step_ratio": float(steps.max() / med) if med > 0 else float("nan")}
    # the largest step within one frame of each seam (as monst3r_ga's seam_check)
    seam_steps = [steps[max(s - 2, 0):min(s + 1, len(steps))].max() for s in seams if 0 < s <= len(steps)]
    out["seam_max_ratio"] = float(max(seam_steps) / med) if seam_steps and med > 0 else float("nan")
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one pipeline in this (fresh) process; returns per-stage peaks, timings, store sizes and metrics."""
    import resource

    from monst3r_framework.runner import run_pipeline
    from monst3r_fw_eval.evaluate import evaluate_reconstruction

    base = _hwm_kib()
    peaks: dict[str, float] = {}
    cpu: dict[str, float] = {}
    mark = [time.process_time()]  # CPU seconds of this process at the last stage boundary

    def log(msg: str) -> None:
        if msg.endswith(": running"):
            mark[0] = time.process_time()
        m = re.match(r"^(.*?): (computed|reusing|resumed) ", msg)
        if m:
            peaks[m.group(1)] = _hwm_kib() / 1024.0
            _reset_hwm()
            cpu[m.group(1)] = time.process_time() - mark[0]
            mark[0] = time.process_time()

    _reset_hwm()
    start = time.perf_counter()
    result = run_pipeline(REPO / "recipes" / f"{spec['recipe']}.yaml", spec["frames"], spec["out"],
                          overrides=spec["overrides"], log=log)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    store = Path(spec["out"]) / "store.zarr"
    sizes: dict[str, int] = {}
    for path in sorted(store.glob("frames/*")) + sorted(store.glob("stages/*/*")):
        name = "frames" if path.parent.name == "frames" else path.parent.name
        sizes[name] = sizes.get(name, 0) + sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    seams = [int(s) for s in result.reconstruction.window_seams]
    metrics = evaluate_reconstruction(result.reconstruction, result.frames, Path(spec["scene"]))
    steps = step_ratios(result.reconstruction.world_from_cam, seams)
    return {
        "n_frames": result.frames.n_frames, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
        "import_rss_mb": base / 1024.0, "run_store_mib_per_frame": result.store_mib_per_frame,
        "seams": seams,
        "stages": [{"label": r.label, "seconds": r.seconds, "cpu_s": cpu.get(r.label), "cached": r.cached,
                    "peak_rss_mb": peaks.get(r.label)} for r in result.reports],
        "store_bytes": sizes, "ate_percent_of_path": metrics.get("ate_percent_of_path"),
        "abs_rel": metrics.get("abs_rel"), "rpe_rot": metrics.get("rpe_rot"), **steps,
    }


def ensure_scene(root: Path, n: int, w: int, h: int, seed: int, pairs_graph: str | None = None) -> Path:
    """Render the scene once; with ``pairs_graph`` also its pair pointmaps (ground truth, 1% depth
    noise) and exact flow for that scene graph as precomputed npz files."""
    import numpy as np

    from monst3r_fw_eval.synth import load_scene, make_scene

    scene = root / (f"scene_{n}_{w}x{h}" + (f"_s{seed}" if seed else ""))
    if not (scene / "gt.npz").exists():
        t = time.perf_counter()
        make_scene(n_frames=n, size_hw=(h, w), seed=seed, n_objects=1, supersample=1).save(scene, video=False)
        print(f"rendered {n} frames at {w}x{h} in {time.perf_counter() - t:.0f} s", flush=True)
    if pairs_graph and not (scene / "flow.npz").exists():
        from monst3r_framework.scene_graph import make_pairs
        from monst3r_fw_reference.precomputed import save_flow_field, write_pairs_npz

        synth = load_scene(scene)
        pairs = np.asarray(make_pairs(n, pairs_graph, symmetrize=True), np.int64)
        pred = synth.pair_predictions(pairs)
        rng = np.random.default_rng(seed)
        noisy = [np.asarray(p) * (1 + 0.01 * rng.standard_normal(np.shape(p)[:-1] + (1,))).astype(np.float32)
                 for p in (pred.pts3d_i, pred.pts3d_j)]
        write_pairs_npz(scene / "pairs.npz", pairs, noisy[0], noisy[1], pred.conf_i, pred.conf_j)
        del pred, noisy
        edges = np.array(sorted({(min(i, j), max(i, j)) for i, j in pairs.tolist()}), np.int64)
        save_flow_field(scene / "flow.npz", synth.flow_field(edges))
    return scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="classical", choices=["classical", "paper", "long_video", "long_video_classical"])
    ap.add_argument("--inputs", default="network", choices=["network", "synthetic_pairs"],
                    help="synthetic_pairs: ground-truth pair pointmaps (1%% noise) and flow instead of the recipe's "
                         "pair predictor and flow estimator")
    ap.add_argument("--scene-graph", default="swinstride-5-noncyclic", help="pairs.scene_graph (also of the "
                    "synthetic pairs)")
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
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1/5 min); recipe {args.recipe}; inputs "
          f"{args.inputs}; {w}x{h}; scene graph {args.scene_graph}; overrides {args.sets}", flush=True)
    for n in args.frames:
        scene = ensure_scene(root, n, w, h, args.seed, args.scene_graph if args.inputs == "synthetic_pairs" else None)
        out = root / f"run_{args.recipe}_{args.inputs}_{n}_{w}x{h}{args.tag}"
        shutil.rmtree(out, ignore_errors=True)
        spec = {"recipe": args.recipe, "frames": str(scene / "frames"), "scene": str(scene), "out": str(out),
                "overrides": recipe_overrides(args.recipe, w, args.inputs, scene) + ["stages.exporters=[]",
                                                                                     f"pairs.scene_graph={args.scene_graph}"]
                + args.sets}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"N={n}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            continue
        res = json.loads(line[0][7:])
        res["load_after"] = os.getloadavg()[0]
        rows.append(res)
        store_total = sum(res["store_bytes"].values())
        print(f"\nN={n}: wall {res['wall_s']:.1f} s, CPU {res['cpu_s']:.1f} s, ATE {res['ate_percent_of_path']:.2f}% of path, "
              f"max step/median {res['max_step_ratio']:.2f}, seam max/median {res['seam_max_ratio']:.2f}, "
              f"store {store_total / n / 2**20:.2f} MiB/frame, load {res['load_after']:.2f}", flush=True)
        print(f"  {'stage':38s} {'wall s':>8s} {'s/frame':>8s} {'CPU s':>8s} {'CPU/frame':>9s} {'peak MiB':>9s}")
        for st in res["stages"]:
            peak = "-" if st["peak_rss_mb"] is None else f"{st['peak_rss_mb']:.0f}"
            c = st.get("cpu_s")
            cpu_s = "-" if c is None else f"{c:8.1f} {c / n:9.3f}"
            print(f"  {st['label']:38s} {st['seconds']:8.1f} {st['seconds'] / n:8.3f} {cpu_s:>18s} {peak:>9s}")
        for name, size in res["store_bytes"].items():
            print(f"  store {name:32s} {size / n / 2**20:8.3f} MiB/frame")
        print(f"  store of this run (after storage.drop_pair_predictions if set): "
              f"{res['run_store_mib_per_frame'].get('total', float('nan')):.3f} MiB/frame; seams {res['seams']}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        ratio = lambda key: max(s["peak_rss_mb"] or 0 for s in b["stages"]) / max(s["peak_rss_mb"] or 1 for s in a["stages"])  # noqa: E731
        print(f"\n{b['n_frames']} vs {a['n_frames']} frames ({b['n_frames'] / a['n_frames']:.1f}x): peak RSS "
              f"{ratio('peak'):.2f}x, wall {b['wall_s'] / a['wall_s']:.2f}x, store/frame "
              f"{sum(b['store_bytes'].values()) / b['n_frames'] / (sum(a['store_bytes'].values()) / a['n_frames']):.2f}x")
    (root / f"results_{args.recipe}_{args.inputs}{args.tag}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
