"""Tests see the reference stages only, unless a test asks for every installed plugin."""

from __future__ import annotations

import os

from monst3r_framework.registry import build_registry

from tests.conftest import REPO_ROOT


def _install_toy(tmp_path, monkeypatch) -> None:
    """What `pip install` of a package with a `monst3r_fw` entry point `acme_toy` would write."""
    dist = tmp_path / "acme_toy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-toy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[monst3r_fw]\nacme_toy = toy_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(REPO_ROOT / "tests" / "core"))


def test_suite_reads_only_the_reference_entry_point(tmp_path, monkeypatch):
    _install_toy(tmp_path, monkeypatch)
    # reference + viewer (the report exporter every shipped recipe uses), never the toy package
    assert os.environ["MONST3R_FW_PLUGINS"] == "reference,viewer"
    plugins = {e.plugin for e in build_registry().entries.values()}
    assert plugins == {"reference", "viewer"}


def test_registry_fixture_reads_no_entry_point(registry, tmp_path, monkeypatch):
    _install_toy(tmp_path, monkeypatch)
    assert {e.plugin for e in registry.entries.values()} == {"monst3r_fw_reference.plugin", "monst3r_fw_viewer.plugin"}
    assert registry.get("pose_solver", "pnp_mst").cls.__module__ == "monst3r_fw_reference.pose"


def test_installed_plugins_fixture_sees_other_packages(installed_plugins, tmp_path, monkeypatch):
    _install_toy(tmp_path, monkeypatch)
    entries = build_registry().entries
    assert entries[("pose_solver", "toy_pose")].distribution == "acme-toy 1.0"
    assert entries[("pose_solver", "pnp_mst")].plugin == "reference"
