"""Import-light plugins and CLI: building the registry and the CLI app imports no torch, OpenCV or SciPy.

Each check runs in a fresh interpreter (this test process has imported everything already) and
reads ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "cv2", "scipy", "roma", "trimesh", "zarr")


def _loaded_after(code: str) -> dict:
    probe = (f"import sys, json\n{code}\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def test_registering_the_reference_plugin_imports_no_heavy_library():
    loaded = _loaded_after(
        "from monst3r_framework.registry import build_registry\n"
        "r = build_registry(load_entrypoints=False, plugins=['monst3r_fw_reference.plugin'])\n"
        "assert len(r.entries) >= 20, sorted(r.entries)")
    assert "monst3r_fw_reference" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_installed_plugins_and_recipe_validation_import_no_heavy_library():
    """What `monst3r-fw plugins` and `recipe check` do: every installed entry point, a recipe resolved."""
    loaded = _loaded_after(
        "from monst3r_framework.recipe import load_recipe\n"
        f"load_recipe({str(REPO_ROOT / 'recipes' / 'classical.yaml')!r})\n"
        "load_recipe('paper')")
    assert sorted(loaded & set(HEAVY)) == []


def test_cli_app_with_its_plugin_verbs_imports_no_numpy():
    """`monst3r-fw --help` builds the app: the core CLI plus every `monst3r_fw_cli` entry point."""
    loaded = _loaded_after(
        "from monst3r_framework.cli import app\n"
        "names = [c.name or c.callback.__name__ for c in app.registered_commands]\n"
        "assert 'demo' in names and 'eval' in names, names")
    assert sorted(loaded & {*HEAVY, "numpy", "pydantic", "yaml"}) == []


def test_the_probe_sees_heavy_imports():
    """The checks above can fail: importing a torch-backed stage module is noticed."""
    loaded = _loaded_after("import monst3r_fw_reference.aligner.optimize")
    assert "torch" in loaded
