"""A 200-frame tiny synthetic video through the windowed long-video path: no stage's peak memory
grows with the length of the video (issue 18).

One subprocess (tests/e2e/long_video_probe.py; heavy modules imported before tracing) runs both
lengths and measures, per stage, the peak of traced memory (tracemalloc: numpy arrays and Python
objects) from the stage's start to its commit, the peak of the commit itself (the store's
accounting: adopting the outputs and recording a digest per chunk file, which grows with the number
of chunks, about 1 KiB each) and the store bytes per frame of every result. A stage that
materialises a whole-video per-pixel array shows up as growth: at 48x32 one float32 (F, H, W) array
is 6 KiB per frame, 0.9 MiB more at 200 than at 50 frames, above the tolerated slack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROBE = HERE / "long_video_probe.py"
SHORT, LONG = 50, 200
#: kinds measured: the slack absorbs the (F,)-sized bookkeeping (poses, pair lists, per-frame stats)
KINDS = ("flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner", "exporter")
SLACK_MIB = 0.4


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[int, dict]:
    work = tmp_path_factory.mktemp("long_video")
    proc = subprocess.run([sys.executable, str(PROBE), str(work), str(SHORT), str(LONG)], capture_output=True,
                          text=True, timeout=1200)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return {int(n): r for n, r in json.loads(line[0][len("RESULT "):]).items()}


def test_no_stage_peak_memory_grows_with_length(probes):
    short, long = probes[SHORT], probes[LONG]
    assert short["n_frames"] == SHORT and long["n_frames"] == LONG and long["finite"]
    assert len(long["window_seams"]) >= 10  # windowed: 20-frame windows every 12 frames
    grown = {}
    for kind in KINDS:
        a, b = short["peak_mib"][kind], long["peak_mib"][kind]
        print(f"{kind:16s} peak traced {a:7.2f} MiB at {SHORT} frames, {b:7.2f} MiB at {LONG} ({b / max(a, 1e-9):.2f}x); "
              f"commit {short['commit_peak_mib'].get(kind, 0):.2f} -> {long['commit_peak_mib'].get(kind, 0):.2f} MiB")
        if b > 1.25 * a + SLACK_MIB:
            grown[kind] = (round(a, 2), round(b, 2))
    assert not grown, f"peak memory grows with the number of frames (MiB at {SHORT} vs {LONG}): {grown}"


def test_store_per_frame_is_flat_and_compact(probes):
    short, long = probes[SHORT]["store_mib_per_frame"], probes[LONG]["store_mib_per_frame"]
    for kind in ("frames", *KINDS[:-1]):
        assert long[kind] <= 1.1 * short[kind] + 0.002, (kind, short[kind], long[kind])
    # float16 pair pointmaps + confidences: (2*3 + 2) values * 2 bytes per pixel per directed pair
    h, w, pairs_per_frame = 32, 48, 4 * (LONG - 1.5) / LONG  # swin-2 noncyclic, symmetrized
    assert long["pair_predictor"] <= 1.05 * pairs_per_frame * h * w * 8 * 2 / 2**20
