"""Importing the viewer plugin (as every `monst3r-fw` call does through its entry points) pulls no
viser, torch, OpenCV or matplotlib."""

from __future__ import annotations

import subprocess
import sys


def test_viewer_plugin_modules_are_import_light():
    code = ("import sys; import monst3r_fw_viewer.cli, monst3r_fw_viewer.plugin, monst3r_fw_viewer.report, "
            "monst3r_fw_viewer.server, monst3r_fw_viewer.run_data; "
            "print(sorted(m for m in ('viser', 'torch', 'cv2', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
