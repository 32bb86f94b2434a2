"""A tiny synthetic video through the windowed long-video path at 40 and 200 frames: no stage's peak
memory grows with the length of the video (issue 18).

One subprocess (tests/e2e/long_video_probe.py; heavy modules imported before tracing) runs both
lengths and measures, per stage, the peak of traced memory (tracemalloc: numpy arrays and Python
objects) from the stage's start to its commit, the peak of the commit itself (the store's
accounting: adopting the outputs and recording a digest per chunk file, which grows with the number
of chunks, about 1 KiB each) and the store bytes per frame of every result.

A stage that materialises a whole-video per-pixel array shows up as growth: at 64x48 one float32
(F, H, W) array is 12 KiB per frame, so growth is judged per added frame against half of that
(what stays is (F,)-sized bookkeeping: poses, pair lists, per-frame statistics). Each exporter of the
probe (tests/e2e/long_video_probe.py: EXPORTERS) is measured on its own. The probe's last exporter,
``whole_video_probe``, loads the whole depth array on purpose; the test checks that it is caught, so
the check is known to be able to fail.

The frame loader is checked the same way: it decodes frame by frame into the store workspace (before,
it held the whole (F, H, W, 3) uint8 video: +9 KiB per frame at 64x48, 108 KiB at 256x144). The
aligner's windows hold their first overlap frames (``window_hold``, as long_video_classical does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROBE = HERE / "long_video_probe.py"
SHORT, LONG = 40, 200  # both above the 32-frame blocks the pose solver and aligner write
H, W = 48, 64
#: stage kinds measured (besides every exporter, "exporter (NAME)"; "exporter (whole_video_probe)" is the mutant)
KINDS = ("flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner")
MUTANT = "exporter (whole_video_probe)"
FRAME_MAP_BYTES = H * W * 4  # one float32 (H, W) map
#: tolerated growth per added frame: half a frame map (whole-video float32 arrays grow by one; the per-frame
#: bookkeeping of the stages and exporters measured 0-4 KiB)
PER_FRAME_SLACK = FRAME_MAP_BYTES / 2
SLACK_MIB = 0.1  # plus a constant (allocator and cache noise)


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[int, dict]:
    work = tmp_path_factory.mktemp("long_video")
    proc = subprocess.run([sys.executable, str(PROBE), str(work), str(SHORT), str(LONG)], capture_output=True,
                          text=True, timeout=600)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return {int(n): r for n, r in json.loads(line[0][len("RESULT "):]).items()}


def grows(a_mib: float, b_mib: float) -> bool:
    return (b_mib - a_mib) * 2**20 > (LONG - SHORT) * PER_FRAME_SLACK + SLACK_MIB * 2**20


def test_no_stage_peak_memory_grows_with_length(probes):
    short, long = probes[SHORT], probes[LONG]
    assert short["n_frames"] == SHORT and long["n_frames"] == LONG and long["finite"]
    assert len(long["window_seams"]) >= 15  # windowed: 16-frame windows every 12 frames
    exporters = sorted(k for k in long["peak_mib"] if k.startswith("exporter (") and k != MUTANT)
    assert len(exporters) == 5, exporters
    grown = {}
    for kind in KINDS + tuple(exporters):
        a, b = short["peak_mib"][kind], long["peak_mib"][kind]
        print(f"{kind:28s} peak traced {a:7.2f} MiB at {SHORT} frames, {b:7.2f} MiB at {LONG} "
              f"({(b - a) * 2**20 / (LONG - SHORT) / 1024:+.2f} KiB per added frame); "
              f"commit {short['commit_peak_mib'].get(kind, 0):.2f} -> {long['commit_peak_mib'].get(kind, 0):.2f} MiB; "
              f"{short['seconds'].get(kind, 0):.1f} -> {long['seconds'].get(kind, 0):.1f} s")
        if grows(a, b):
            grown[kind] = (round(a, 2), round(b, 2))
    assert not grown, f"peak memory grows with the number of frames (MiB at {SHORT} vs {LONG}): {grown}"
    a, b = short["peak_mib"]["frames"], long["peak_mib"]["frames"]
    print(f"frames peak traced {a:.2f} -> {b:.2f} MiB ({(b - a) * 2**20 / (LONG - SHORT) / 1024:+.2f} KiB per added frame)")
    assert not grows(a, b), ("frames", a, b)  # the decoded video (9 KiB per frame) is not held


def test_the_check_catches_a_whole_video_array(probes):
    """The mutant exporter holds the (F, H, W) float32 depth: the same check must flag it."""
    a, b = probes[SHORT]["peak_mib"][MUTANT], probes[LONG]["peak_mib"][MUTANT]
    assert (b - a) * 2**20 >= 0.9 * (LONG - SHORT) * FRAME_MAP_BYTES, (a, b)
    assert grows(a, b)


def test_store_per_frame_is_flat_and_compact(probes):
    short, long = probes[SHORT]["store_mib_per_frame"], probes[LONG]["store_mib_per_frame"]
    for kind in ("frames", *KINDS):
        assert long[kind] <= 1.1 * short[kind] + 0.002, (kind, short[kind], long[kind])
    # float16 pair pointmaps + confidences: (2*3 + 2) values * 2 bytes per pixel per pair
    pairs_per_frame = (LONG - 1) / LONG  # swin-1-noncyclic: one-way
    assert long["pair_predictor"] <= 1.05 * pairs_per_frame * H * W * 8 * 2 / 2**20
