"""Accuracy of the weight-free ``recipes/classical.yaml`` on a synthetic scene (prints figures).

Usage::

    python benchmarks/bench_classical.py N_FRAMES W H '{"name": ["--set style overrides", ...]}' [FPS] [SEED]

e.g. ``python benchmarks/bench_classical.py 60 256 144 '{"init": ["stages.global_aligner.enabled=false"], "full": []}'``.
The scene (``make_scene(seed=SEED, n_objects=1)``, SEED 0 by default) and the run store (shared
stages are cached) live under ``/tmp/cls_{N}_{W}_{FPS}`` (``..._s{SEED}`` for other seeds). For every
named variant it prints ATE (% of path length), RPE rotation (deg), depth AbsRel and delta < 1.25,
and the seconds of every stage that was not cached.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from monst3r_fw_eval.cli_demo import evaluate_against
from monst3r_framework.runner import run_pipeline
from monst3r_fw_eval.synth import make_scene


def main() -> None:
    n, w, h = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    variants = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"full": []}
    fps = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    root = Path(f"/tmp/cls_{n}_{w}_{sys.argv[5] if len(sys.argv) > 5 else '10'}" + (f"_s{seed}" if seed else ""))
    if not (root / "scene/gt.npz").exists():
        t = time.time()
        make_scene(n_frames=n, size_hw=(h, w), seed=seed, n_objects=1, fps=fps).save(root / "scene")
        print(f"synth {time.time() - t:.1f} s")
    recipe = Path(__file__).resolve().parents[1] / "recipes/classical.yaml"
    for name, extra in variants.items():
        r = run_pipeline(recipe, root / "scene/frames", root / name, store=str(root / "store.zarr"),
                         overrides=[f"input.long_edge={w}", "stages.exporters=[]",
                                    "stages.global_aligner.threads=1"] + list(extra))
        m = evaluate_against(r, root / "scene")
        print(name, {k: round(float(m[k]), 4) for k in ("ate_percent_of_path", "rpe_rot", "abs_rel", "delta_1.25")},
              {x.label.split(" ")[0]: round(x.seconds, 1) for x in r.reports if not x.cached}, flush=True)


if __name__ == "__main__":
    main()
