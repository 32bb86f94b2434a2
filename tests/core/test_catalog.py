"""Recipes by name: built-ins, `extends: NAME`, plugin recipe folders, `recipe list`, clear errors."""

from __future__ import annotations

import types

import pytest
from typer.testing import CliRunner

from monst3r_framework.catalog import BUILTIN_DIR, recipe_catalog, resolve_recipe
from monst3r_framework.cli import app
from monst3r_framework.errors import RecipeError
from monst3r_framework.hookspecs import hookimpl
from monst3r_framework.recipe import load_recipe
from monst3r_framework.registry import build_registry

from tests.conftest import REPO_ROOT


def test_builtin_recipes_are_the_checkout_recipes_folder():
    # a checkout sees the top-level recipes/ folder; the package folder is the same files (in a wheel, a copy)
    assert sorted(p.name for p in BUILTIN_DIR.glob("*.yaml")) == sorted(p.name for p in (REPO_ROOT / "recipes").glob("*.yaml"))
    catalog = recipe_catalog()
    assert {"paper", "classical", "realtime", "ablations/no_flow_loss"} <= set(catalog)
    assert catalog["classical"].header()[1] == "paper"
    assert catalog["ablations/classical_no_flow_loss"].header()[1] == "classical"
    assert "MonST3R paper pipeline" in catalog["paper"].header()[0]


def test_name_and_path_resolve_to_the_same_recipe(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: no recipes/ beside it
    by_name, _ = load_recipe("classical", registry=registry)
    by_path, _ = load_recipe(REPO_ROOT / "recipes" / "classical.yaml", registry=registry)
    assert by_name.to_dict() == by_path.to_dict()
    assert resolve_recipe("paper.yaml") == BUILTIN_DIR / "paper.yaml"
    (tmp_path / "paper").write_text("schema: 1\n")  # an existing file wins over a name
    assert resolve_recipe("paper").resolve() == (tmp_path / "paper").resolve()


def test_user_recipe_extends_a_builtin_by_name(registry, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("schema: 1\nextends: paper\nstages:\n  global_aligner: {iterations: 7}\n")
    resolved, _ = load_recipe(user, registry=registry)
    paper, _ = load_recipe("paper", registry=registry)
    assert resolved.stages["global_aligner"].iterations == 7
    assert resolved.stages["pair_predictor"] == paper.stages["pair_predictor"]
    # a recipe copied out of the checkout keeps working: `extends: paper.yaml` falls back to the name ...
    user.write_text("schema: 1\nextends: paper.yaml\n")
    assert load_recipe(user, registry=registry)[0].stages == paper.stages
    # ... and a file beside the recipe still wins over the built-in of that name
    (tmp_path / "paper.yaml").write_text("schema: 1\nextends: classical\n")
    resolved, _ = load_recipe(user, registry=registry)
    assert resolved.stages["pair_predictor"].type == "flow_triangulation"


def test_unknown_name_is_one_clear_error(registry):
    with pytest.raises(RecipeError, match=r"no such recipe file and no recipe of that name; built-in recipes: .*classical"):
        resolve_recipe("papr")
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe("papr", registry=registry)


def _plugin_with_recipes(folder):
    module = types.ModuleType("acme_recipes")

    @hookimpl
    def monst3r_fw_recipe_dirs():
        return [str(folder)]

    module.monst3r_fw_recipe_dirs = monst3r_fw_recipe_dirs
    return module


def test_plugins_contribute_recipes_without_shadowing_builtins(tmp_path):
    (tmp_path / "lab_fast.yaml").write_text("schema: 1\nextends: classical\ndescription: the lab's fast setting\n")
    (tmp_path / "paper.yaml").write_text("schema: 1\ndescription: not the real paper recipe\n")
    reg = build_registry(load_entrypoints=False, plugins=["monst3r_fw_reference.plugin", "monst3r_fw_viewer.plugin", _plugin_with_recipes(tmp_path)])
    catalog = recipe_catalog(reg, with_shadowed=True)
    assert catalog["lab_fast"].origin == "plugin acme_recipes" and catalog["lab_fast"].header() == (
        "the lab's fast setting", "classical")
    assert catalog["paper"].origin == "built-in"
    assert catalog["paper@acme_recipes"].shadowed_by == "built-in"
    assert resolve_recipe("lab_fast", reg) == tmp_path / "lab_fast.yaml"
    resolved, _ = load_recipe("lab_fast", registry=reg)
    assert resolved.stages["pair_predictor"].type == "flow_triangulation"


def test_recipe_list_at_80_columns():
    res = CliRunner().invoke(app, ["recipe", "list"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if line.startswith("│ classical "))
    assert "│ paper " in row
    assert any(line.startswith("│ ablations/no_flow_loss ") for line in lines)
