"""Run the windowed long-video path on tiny synthetic videos in this process and print, per stage and
length, the peak of traced memory (tracemalloc: numpy arrays and Python objects) of its own work and of its
commit into the store, and the store bytes per frame.

    python tests/e2e/long_video_probe.py WORK_DIR N [N ...]     # prints one line: RESULT {json}

Used by tests/e2e/test_long_video.py. ``recipes/long_video.yaml`` runs with the pair predictions and
flow of the synthetic scene handed over as ``precomputed`` npz files (read row by row, memory-mapped),
so the run takes seconds and the pose solver, mask builder (pose_source solver), windowed aligner,
exporter and store are the real ones; 64x48 frames, the one-way ``swin-1-noncyclic`` graph (one pair
per frame: the fewest store round trips), 16-frame windows overlapping by 4, 4 iterations. A second exporter,
``whole_video_probe`` (defined here), loads the whole depth array on purpose: the mutation the test
must catch. Heavy modules are imported before tracing starts, so first-use imports do not count as the
first length's memory.
"""

from __future__ import annotations

import json
import re
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZE_HW = (48, 64)
SCENE_GRAPH = "swin-1-noncyclic"
WINDOW, OVERLAP = 16, 4
MUTANT = "whole_video_probe"
#: the long-video recipes' exporters that read per-pixel arrays plus the cheap per-frame ones (point budget small
#: enough to be reached at both lengths). glb without its cameras (one trimesh node per frame, ~27 KiB each);
#: colmap, nerfstudio and ply stream the same way (frame reads, point selection) but cost ~40 s more here;
#: not `report`: beside a synthetic scene's gt.npz it scores the whole depth (eval metrics).
EXPORTERS = ("{type: monst3r_layout}", "{type: glb, max_points: 2000, show_cameras: false}", "{type: depth_png16}",
             "{type: mask_png}", "{type: tum}")


def overrides(scene: Path) -> list[str]:
    return [
        f"input.long_edge={SIZE_HW[1]}", f"pairs.scene_graph={SCENE_GRAPH}",
        "stages.pair_predictor.type=precomputed", f"stages.pair_predictor.path={scene / 'pairs.npz'}",
        "stages.flow_estimator.type=precomputed", f"stages.flow_estimator.path={scene / 'flow.npz'}",
        "stages.pose_solver.num_workers=1", "stages.mask_builder.pose_source=solver",
        "stages.global_aligner.mode=windowed", f"stages.global_aligner.window_size={WINDOW}",
        f"stages.global_aligner.window_overlap={OVERLAP}", f"stages.global_aligner.window_hold={OVERLAP}",
        "stages.global_aligner.iterations=4",
        "stages.global_aligner.threads=1", "storage.drop_pair_predictions=false",
        "stages.exporters=[" + ", ".join(EXPORTERS) + f", {{type: {MUTANT}}}]",
    ]


def mutant_plugin() -> object:
    """A plugin with one deliberately non-streaming exporter: it loads the reconstruction's whole
    (F, H, W) depth array, 12 KiB per frame at 64x48 (the test checks that this is caught)."""
    from typing import ClassVar, Literal

    import numpy as np

    from monst3r_framework.hookspecs import hookimpl
    from monst3r_framework.stages import ExportInputs, Exporter, ExportResult, RunContext, StageConfig

    class WholeVideoConfig(StageConfig):
        type: Literal["whole_video_probe"] = "whole_video_probe"

    class WholeVideoProbe(Exporter):
        name: ClassVar[str] = MUTANT
        config_model = WholeVideoConfig

        def run(self, inputs: ExportInputs, ctx: RunContext) -> ExportResult:
            depth = np.asarray(inputs.reconstruction.depth)  # the whole video: what streaming stages never do
            (inputs.out_dir / "mean_depth.txt").write_text(f"{float(depth.mean()):.6f}\n")
            return ExportResult(files=("mean_depth.txt",))

    class Plugin:
        @hookimpl
        def monst3r_fw_stage_classes(self) -> list:
            return [WholeVideoProbe]

    return Plugin()


def make_inputs(n_frames: int, work: Path) -> Path:
    """Frames (PNG), pair predictions (ground truth + 1% noise) and exact flow of a synthetic scene."""
    import numpy as np

    from monst3r_framework.scene_graph import make_pairs
    from monst3r_fw_eval.synth import make_scene
    from monst3r_fw_reference.precomputed import save_flow_field, write_pairs_npz

    folder = work / f"scene_{n_frames}"
    if (folder / "flow.npz").is_file():
        return folder
    scene = make_scene(n_frames=n_frames, size_hw=SIZE_HW, seed=0, n_objects=1, supersample=1)
    scene.save(folder, video=False)
    pairs = np.asarray(make_pairs(n_frames, SCENE_GRAPH, symmetrize=True), np.int64)
    pred = scene.pair_predictions(pairs)
    rng = np.random.default_rng(0)
    noisy = [np.asarray(p) * (1 + 0.01 * rng.standard_normal(np.shape(p)[:-1] + (1,))).astype(np.float32)
             for p in (pred.pts3d_i, pred.pts3d_j)]
    write_pairs_npz(folder / "pairs.npz", pairs, noisy[0], noisy[1], pred.conf_i, pred.conf_j)
    edges = np.array(sorted({(min(i, j), max(i, j)) for i, j in pairs.tolist()}), np.int64)
    save_flow_field(folder / "flow.npz", scene.flow_field(edges))
    return folder


def probe(n_frames: int, work: Path, registry: object) -> dict:
    import numpy as np

    from monst3r_framework.runner import run_pipeline
    from monst3r_framework.store import RunStore

    scene = make_inputs(n_frames, work)
    peaks: dict[str, float] = {}     # the stage's own work: from its start to its commit
    commits: dict[str, float] = {}   # the store's commit (adopting outputs, per-chunk digests in attrs)
    start_bytes = [0]

    def log(msg: str) -> None:
        if msg.endswith(": running"):
            tracemalloc.reset_peak()
            start_bytes[0] = tracemalloc.get_traced_memory()[0]
        elif msg.startswith("exporter (") and ": computed " in msg:  # exporters do not commit to the store
            peaks[msg[:msg.index(")") + 1]] = (tracemalloc.get_traced_memory()[1] - start_bytes[0]) / 2**20

    def traced_commit(self, kind, key, record, seconds, label="", **kw):
        peaks[kind] = (tracemalloc.get_traced_memory()[1] - start_bytes[0]) / 2**20
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            return commit(self, kind, key, record, seconds, label, **kw)
        finally:
            commits[kind] = (tracemalloc.get_traced_memory()[1] - before) / 2**20

    commit = RunStore.commit
    RunStore.commit = traced_commit
    tracemalloc.start()
    try:
        result = run_pipeline(REPO / "recipes" / "long_video.yaml", scene / "frames", work / f"run_{n_frames}",
                              overrides=overrides(scene), log=log, registry=registry)
    finally:
        tracemalloc.stop()
        RunStore.commit = commit
    rec = result.reconstruction
    seconds = {(r.label if r.kind == "exporter" else r.kind): round(r.seconds, 2) for r in result.reports if not r.cached}
    return {"n_frames": result.frames.n_frames, "peak_mib": peaks, "commit_peak_mib": commits, "seconds": seconds,
            "store_mib_per_frame": result.store_mib_per_frame, "window_seams": list(rec.window_seams),
            "finite": bool(np.isfinite(np.asarray(rec.depth)).all())}


def _preload() -> None:
    """Import what the stages import lazily, before tracing (imports allocate once per process)."""
    import cv2  # noqa: F401
    import PIL.GifImagePlugin  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401
    import roma  # noqa: F401
    import trimesh  # noqa: F401
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401

    import monst3r_fw_reference.aligner.stage  # noqa: F401
    import monst3r_fw_reference.aligner.optimize  # noqa: F401
    import monst3r_fw_reference.export  # noqa: F401
    import monst3r_fw_reference.export.pointcloud  # noqa: F401
    import monst3r_fw_reference.mask.flow_static  # noqa: F401
    import monst3r_fw_reference.pose  # noqa: F401
    import monst3r_fw_reference.precomputed  # noqa: F401


if __name__ == "__main__":
    work = Path(sys.argv[1])
    lengths = [int(v) for v in sys.argv[2:]]
    _preload()
    from monst3r_framework.registry import build_registry

    registry = build_registry(load_entrypoints=True, plugins=[mutant_plugin()])
    for n in lengths:
        make_inputs(n, work)
    print("RESULT " + json.dumps({n: probe(n, work, registry) for n in lengths}), flush=True)
