"""Pair-predictor commit cost: peak RSS and commit seconds of the ``precomputed`` pair predictor on
a generated pairs file (issue 12: "the largest array is read at most once after it is written").

    python benchmarks/bench_commit.py --frames 60 --size 512x288      # one measurement per process
    python benchmarks/bench_commit.py --frames 60 --tree /path/to/other/checkout   # same, other code

Writes a frames folder and an uncompressed pairs npz (smooth values, so Zarr's zstd behaves as on
real pointmaps) for the recipe's swinstride-5 symmetrized graph into --work (reused when present),
then in a fresh subprocess runs frames + pair_predictor through the Runner and prints: pairs,
stage seconds, commit seconds (from the end of ``run()`` until the record is back from the store:
finiteness check, write/adoption, digests), peak RSS of the process and the store size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, resource, sys, time
from pathlib import Path
import numpy as np
work, frames_dir, npz = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
from monst3r_framework import runner as R
from monst3r_framework.recipe import load_recipe
from monst3r_framework.store import RunStore
recipe, registry = load_recipe(Path(sys.argv[4]) / "recipes" / "classical.yaml", overrides=[
    "stages.pair_predictor.type=precomputed", f"stages.pair_predictor.path={npz}", "input.long_edge=512"])
marks = {}
orig_commit = RunStore.commit
def commit(self, kind, *a, **k):
    t = time.perf_counter(); orig_commit(self, kind, *a, **k); marks.setdefault(kind, 0.0); marks[kind] += time.perf_counter() - t
RunStore.commit = commit
if hasattr(R, "check_finite"):  # before the refactor the runner read every array for this check
    orig_check = R.check_finite
    def check(*a, **k):
        t = time.perf_counter(); orig_check(*a, **k); marks["check"] = marks.get("check", 0.0) + time.perf_counter() - t
    R.check_finite = check
store_path = work / "store.zarr"
import shutil; shutil.rmtree(store_path, ignore_errors=True)
with RunStore(store_path) as store:
    run = R.Runner(recipe, registry, store, work / "out")
    run.frames = frames = run.load_frames(frames_dir)
    from monst3r_framework.scene_graph import make_pairs
    pairs = np.asarray(make_pairs(frames.n_frames, recipe.pairs.scene_graph, symmetrize=recipe.pairs.symmetrize), np.int64)
    run.keys["pairs"] = R.digest(pairs.tobytes())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    import inspect
    if len(inspect.signature(run.run_stage).parameters) == 1:
        run.values.update(frames=frames, pairs=pairs, edges=R.undirected_edges(pairs))
        run.run_stage("pair_predictor")
    else:
        from monst3r_framework.stages import PairInputs
        run.run_stage("pair_predictor", lambda s: PairInputs(frames=frames, pairs=pairs))
    total = time.perf_counter() - t
size = sum(p.stat().st_size for p in store_path.rglob("*") if p.is_file())
print(json.dumps({"pairs": len(pairs), "stage_s": round(total, 2),
                  "commit_s": round(marks.get("pair_predictor", 0.0) + marks.get("check", 0.0), 2),
                  "rss_before_stage_mb": round(rss0 / 1024), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "store_mb": round(size / 2**20)}))
'''


def make_inputs(work: Path, n_frames: int, h: int, w: int) -> tuple[Path, Path]:
    import cv2
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from monst3r_framework.scene_graph import make_pairs

    frames = work / "frames"
    if not frames.exists():
        frames.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n_frames):
            img = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
            cv2.imwrite(str(frames / f"frame_{i:04d}.png"), img)
    npz = work / "pairs.npz"
    if not npz.exists():
        from numpy.lib import format as npf
        import zipfile

        pairs = np.asarray(make_pairs(n_frames, "swinstride-5-noncyclic", symmetrize=True), np.int64)
        p = len(pairs)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        # written member by member (np.savez would need the whole 2.6 GB in memory)
        with zipfile.ZipFile(npz, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("pairs.npy", "w", force_zip64=True) as fh:
                npf.write_array(fh, pairs)
            for name, tail in (("pts3d_i", (3,)), ("pts3d_j", (3,)), ("conf_i", ()), ("conf_j", ())):
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    npf.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (p, h, w) + tail})
                    for k in range(p):
                        z = 2.0 + 0.01 * k + 0.001 * xs
                        row = np.stack([xs * z / w, ys * z / w, z], -1) if tail else 1.0 + z
                        fh.write(np.ascontiguousarray(row, "<f4").tobytes())
    return frames, npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="512x288", help="WxH of the frames (long edge must be 512)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "monst3r_fw_bench_commit")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout whose code is measured (default: this one)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = args.work / f"{args.frames}x{w}x{h}"
    frames, npz = make_inputs(work, args.frames, h, w)
    tree = args.tree.resolve()
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'plugins'}"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(work), str(frames), str(npz), str(tree)], env=env, cwd=tree,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"tree": str(tree), "frames": args.frames, "size": args.size, **result}))


if __name__ == "__main__":
    main()
