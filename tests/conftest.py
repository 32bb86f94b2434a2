from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = (REPO_ROOT / ".." / "shared").resolve()

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Only the reference and viewer plugins' entry points are read (build_registry, run_pipeline, the CLI): packages
# installed beside monst3r-fw (the SPyNet example, a lab's plugin) never change what tests see.
# A test that wants every installed plugin takes the `installed_plugins` fixture.
os.environ.setdefault("MONST3R_FW_PLUGINS", "reference,viewer")  # viewer: the report exporter every recipe uses


def shared_path(*parts: str) -> Path:
    """Path under ../shared, skipping the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (clone the project beside ../shared)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def registry():
    """The reference stages only, without reading any installed entry point."""
    from monst3r_framework.registry import build_registry

    return build_registry(load_entrypoints=False, plugins=["monst3r_fw_reference.plugin", "monst3r_fw_viewer.plugin"])


@pytest.fixture
def installed_plugins(monkeypatch):
    """Read every installed ``monst3r_fw`` entry point in this test (lifts the suite's reference-only filter)."""
    monkeypatch.delenv("MONST3R_FW_PLUGINS", raising=False)


def pytest_collection_modifyitems(config, items):
    """End-to-end runs (tests/e2e) are `slow`: still run by default, `-m "not slow"` skips them."""
    e2e = REPO_ROOT / "tests" / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
