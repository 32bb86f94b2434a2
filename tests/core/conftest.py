"""Fixtures shared by the toy-stage tests (tests/core/toy.yaml, toy_plugin.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monst3r_framework.video import write_test_video

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy_env(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TOY_CALLS_FILE", str(calls))
    monkeypatch.delenv("TOY_DELAY", raising=False)
    return calls


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_test_video(tmp_path / "clip.mp4", 6, (64, 96), fps=10)
