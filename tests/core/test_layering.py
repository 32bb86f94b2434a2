"""Layering, read from the source: core <- plugins <- evaluation / benchmarks.

* ``monst3r_framework`` (the core) imports no plugin package, no ``monst3r_fw_eval``, no benchmarks;
* plugin packages import the core, never ``monst3r_fw_eval`` (evaluation) nor benchmarks;
* the viewer (``monst3r_fw_viewer``: the 4D viewer and the report) is a tool over finished runs, on
  the evaluation's layer: it may use evaluation (ground-truth metrics in the report), and no stage
  plugin and not the evaluation imports it;
* nothing shipped imports ``tests``.

Every ``import`` and ``from ... import`` is read with ``ast``, including those inside functions
(a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "monst3r_framework"
PLUGINS = REPO_ROOT / "plugins"
EVAL = "monst3r_fw_eval"
VIEWER = "monst3r_fw_viewer"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports resolved."""
    package = ".".join(path.relative_to(PLUGINS if PLUGINS in path.parents else REPO_ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for line, name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    return bad


def _plugin_packages() -> list[str]:
    return sorted(p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file())


def test_core_imports_no_plugin_and_no_evaluation():
    forbidden = tuple(_plugin_packages()) + ("benchmarks", "tests")
    assert EVAL in forbidden and "monst3r_fw_reference" in forbidden
    assert _violations(sorted(CORE.rglob("*.py")), forbidden) == []


def named_modules(path: Path, packages: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a file, docstrings aside, that names a module of
    ``packages`` ("pkg", "pkg.mod", "pkg.mod:function"): importlib.import_module, entry-point
    specs and "module:function" settings are dependencies too, only later ones."""
    import re

    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, packages)) + r")(?=$|[.:])")
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and pattern.search(node.value)]


def test_core_names_no_plugin_module_in_strings():
    """The core does not reach a plugin by name either (``"monst3r_fw_eval.batch:evaluate_item"``
    as a default): a plugin registers what the core should call (``set_default_evaluator``)."""
    packages = tuple(_plugin_packages())
    bad = [f"{path.relative_to(REPO_ROOT)}:{line} names {text!r}" for path in sorted(CORE.rglob("*.py"))
           for line, text in named_modules(path, packages)]
    assert bad == []


def test_the_string_checker_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may say monst3r_fw_eval.batch:evaluate_item."""\n'
                      'DEFAULT = ["monst3r_fw_eval.batch:evaluate_item"]\n'
                      'OTHER = "monst3r_fw_evaluation_notes"\n'
                      'def f():\n    """or monst3r_fw_eval."""\n    return importlib.import_module("monst3r_fw_reference")\n')
    assert named_modules(sample, ("monst3r_fw_eval", "monst3r_fw_reference")) == [
        (2, "monst3r_fw_eval.batch:evaluate_item"), (6, "monst3r_fw_reference")]


@pytest.mark.parametrize("package", [p for p in _plugin_packages() if p not in (EVAL, VIEWER)])
def test_plugins_import_neither_evaluation_nor_benchmarks(package):
    files = sorted((PLUGINS / package).rglob("*.py"))
    assert files
    assert _violations(files, (EVAL, VIEWER, "benchmarks", "tests")) == []


def test_viewer_imports_no_benchmarks_and_evaluation_not_the_viewer():
    assert _violations(sorted((PLUGINS / VIEWER).rglob("*.py")), ("benchmarks", "tests")) == []
    assert _violations(sorted((PLUGINS / EVAL).rglob("*.py")), (VIEWER,)) == []


def test_evaluation_imports_no_benchmarks_or_tests():
    assert _violations(sorted((PLUGINS / EVAL).rglob("*.py")), ("benchmarks", "tests")) == []


def test_the_checker_sees_lazy_and_relative_imports():
    """The test can fail: a lazy import inside a function and a relative import are both found."""
    pkg = PLUGINS / "monst3r_fw_reference"
    sample = pkg / "mask" / "flow_static.py"
    names = [n for _, n in imported_modules(sample)]
    assert "monst3r_fw_reference.geometry" in names      # from ..geometry import ...
    assert "monst3r_framework.errors" in names
    lazy = [n for _, n in imported_modules(pkg / "rotation_averaging.py")]
    assert "scipy.sparse" in lazy                        # imported inside average_rotations
    assert _violations([sample], ("monst3r_fw_reference",)) != []
