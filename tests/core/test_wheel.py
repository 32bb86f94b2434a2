"""The wheel ships the built-in recipes, every package and the entry points (a non-editable install works)."""

from __future__ import annotations

import configparser
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _setuptools_major() -> int:
    """Installed setuptools major version (0 when absent); 77+ understands this pyproject's licence field."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "monst3r-fw"
    # a copy of the checkout (build artefacts stay out of the repository); symlinks kept as links
    shutil.copytree(REPO_ROOT, src, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                                  "tests", "benchmarks", "docs"))
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _setuptools_major() >= 77 else []  # else pip fetches the build backend
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation, "-q", "-w", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (whl,) = out.glob("monst3r_fw-*.whl")
    return whl


def test_wheel_contains_every_builtin_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(REPO_ROOT / "recipes").as_posix() for p in (REPO_ROOT / "recipes").rglob("*.yaml"))
    assert len(shipped) >= 5 and "paper.yaml" in shipped and "classical.yaml" in shipped
    missing = [r for r in shipped if f"monst3r_framework/recipes/{r}" not in names]
    assert missing == []


def test_wheel_contains_the_packages_and_entry_points(wheel):
    zf = zipfile.ZipFile(wheel)
    names = set(zf.namelist())
    for module in ("monst3r_framework/catalog.py", "monst3r_framework/cli.py", "monst3r_fw_reference/plugin.py",
                   "monst3r_fw_reference/mask/flow_static.py", "monst3r_fw_eval/cli.py", "monst3r_fw_eval/synth.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    (ep_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    eps = configparser.ConfigParser()
    eps.read_string(zf.read(ep_name).decode())
    assert eps["console_scripts"]["monst3r-fw"] == "monst3r_framework.cli:main"
    assert eps["monst3r_fw"]["reference"] == "monst3r_fw_reference.plugin"
    assert eps["monst3r_fw_cli"]["eval"] == "monst3r_fw_eval.cli:register"
