"""A real browser (headless Chromium) draws the viewer: points and frustums on screen, not a blank page."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("viser")

from monst3r_fw_viewer.screenshot import find_chromium, screenshot_run  # noqa: E402


@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium not installed (Debian package `chromium`; "
                    ".ci/run installs it)")
def test_headless_chromium_draws_points_and_frustums(synth_runs, tmp_path):
    from PIL import Image

    png = screenshot_run(synth_runs / "complete", tmp_path / "viewer.png")
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = img.shape
    # the 3D canvas left of the GUI panel, below the notification area
    canvas = img[int(0.2 * h):int(0.9 * h), int(0.05 * w):int(0.7 * w)]
    background = np.median(canvas.reshape(-1, 3), axis=0)
    drawn = np.abs(canvas - background).sum(axis=-1) > 40
    assert drawn.sum() > 2000, f"only {drawn.sum()} drawn pixels: blank page?"
    colours = {tuple(c) for c in (canvas[drawn] // 32)}
    assert len(colours) >= 8, f"drawn pixels in only {len(colours)} colours"
