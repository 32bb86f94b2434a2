"""Fixtures for the bad-situation suite: tiny inputs shared per session, the toy recipe, a CLI runner.

Helpers live in ``reliability_harness.py`` (importable from every test module in this folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reliability_harness import TOY_RECIPE, run_cli

#: Frame size of every tiny input here (H, W); the toy recipe reads it at long_edge 224.
SIZE_HW = (48, 64)
N_FRAMES = 4


@pytest.fixture(scope="session")
def toy_recipe() -> Path:
    """tests/core/toy.yaml: every stage kind, deterministic, no weights."""
    return TOY_RECIPE


@pytest.fixture(scope="session")
def tiny_video_master(tmp_path_factory) -> Path:
    from monst3r_framework.video import write_test_video

    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", N_FRAMES, SIZE_HW, fps=10)


@pytest.fixture
def tiny_video(tiny_video_master: Path, tmp_path: Path) -> Path:
    """A private copy of a 4-frame 48x64 mp4 (tests may damage or rename it)."""
    dst = tmp_path / "input" / "clip.mp4"
    dst.parent.mkdir()
    shutil.copyfile(tiny_video_master, dst)
    return dst


def gradient_frames(n: int = N_FRAMES, size_hw: tuple[int, int] = SIZE_HW) -> np.ndarray:
    """(n, H, W, 3) float64 in [0, 1]: a different smooth pattern per frame (no flat frames)."""
    h, w = size_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.empty((n, h, w, 3))
    for i in range(n):
        frames[i, ..., 0] = (xs + 3 * i) / (w + 3 * n)
        frames[i, ..., 1] = ys / h
        frames[i, ..., 2] = 0.25 + 0.5 * ((xs + ys + i) % 7) / 7
    return frames


@pytest.fixture
def cli():
    """``cli(*args, env=None)`` -> :class:`reliability_harness.CliResult` (a real subprocess)."""
    return run_cli
