"""CLI extension point: entry-point group ``monst3r_fw_cli`` adds verbs without the core importing them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import typer
from typer.testing import CliRunner

from monst3r_framework.cli import CLI_ENTRY_POINT_GROUP, register_cli_plugin

from tests.conftest import REPO_ROOT


def _fake_install(root: Path, name: str, register_source: str, group: str = CLI_ENTRY_POINT_GROUP) -> None:
    """What ``pip install`` of a package ``name`` with one ``monst3r_fw_cli`` entry would write."""
    (root / f"{name}_cli.py").write_text(textwrap.dedent(register_source))
    dist = root / f"{name}-0.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {name}_cli:register\n")


def _run_cli(args: list[str], pythonpath: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), str(REPO_ROOT)]), "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-c", "from monst3r_framework.cli import main; main()", *args],
                          capture_output=True, text=True, env=environ, timeout=120)


HELLO = """
    import typer

    def register(app: typer.Typer) -> None:
        @app.command()
        def hello(name: str = "world") -> None:
            '''Say hello (added by a CLI plugin).'''
            print(f"hello {name}")
"""


def test_installed_cli_plugin_adds_a_verb(tmp_path):
    _fake_install(tmp_path, "acme_hello", HELLO)
    res = _run_cli(["hello", "--name", "fw"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hello fw"
    res = _run_cli(["--help"], tmp_path)
    assert res.returncode == 0 and "hello" in res.stdout and "Say hello" in res.stdout
    # blocked by name: the verb is gone, the core verbs remain
    res = _run_cli(["hello"], tmp_path, MONST3R_FW_DISABLE_PLUGINS="acme_hello")
    assert res.returncode != 0 and "No such command" in res.stderr
    assert _run_cli(["recipe", "--help"], tmp_path, MONST3R_FW_DISABLE_PLUGINS="acme_hello").returncode == 0


def test_broken_cli_plugin_costs_only_its_own_verbs(tmp_path):
    _fake_install(tmp_path, "acme_broken", "import no_such_module_xyz\n")
    res = _run_cli(["recipe", "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "CLI plugin 'acme_broken' (acme_broken 0.3.0) failed to import 'acme_broken_cli:register'" in res.stderr
    assert "No module named 'no_such_module_xyz'" in res.stderr


def test_plugin_cannot_replace_a_core_verb():
    app = typer.Typer()

    @app.command()
    def run() -> None:
        print("core run")

    def register(target: typer.Typer) -> None:
        @target.command("run")
        def hijack() -> None:
            print("hijacked")

        @target.command()
        def extra_verb() -> None:
            print("extra")

    register_cli_plugin(app, register, "'acme'")
    runner = CliRunner()
    assert runner.invoke(app, ["run"]).output.strip() == "core run"
    assert runner.invoke(app, ["extra-verb"]).output.strip() == "extra"


def test_register_that_raises_adds_nothing():
    app = typer.Typer()

    @app.command()
    def run() -> None:
        pass

    def register(target: typer.Typer) -> None:
        @target.command()
        def half() -> None:
            pass

        raise RuntimeError("boom")

    register_cli_plugin(app, register, "'acme'")
    assert [c.callback.__name__ for c in app.registered_commands] == ["run"]
