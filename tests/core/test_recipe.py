"""Recipe loading: extends, overrides, validation errors, resolved output."""

from __future__ import annotations

from pathlib import Path

import pytest

from monst3r_framework.errors import PluginError, RecipeError
from monst3r_framework.recipe import apply_overrides, load_recipe, merge, parse_override
from monst3r_framework.registry import build_registry

HERE = Path(__file__).resolve().parent
TOY = HERE / "toy.yaml"


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import toy_plugin

    return build_registry(load_entrypoints=False, plugins=[toy_plugin])


def test_extends_changes_only_the_given_keys(tmp_path, registry):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {TOY}\nstages:\n  global_aligner: {{offset: 2.0}}\n")
    base, _ = load_recipe(TOY, registry=registry)
    derived, _ = load_recipe(child, registry=registry)
    a, b = base.to_dict(), derived.to_dict()
    assert b["stages"]["global_aligner"]["offset"] == 2.0
    b["stages"]["global_aligner"]["offset"] = a["stages"]["global_aligner"]["offset"]
    assert a == b


def test_extends_loop_is_an_error(tmp_path, registry):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends loop"):
        load_recipe(tmp_path / "a.yaml", registry=registry)


def test_overrides_parse_yaml_values_and_type_change_resets_node():
    assert parse_override("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    data = {"stages": {"pair_predictor": {"type": "monst3r", "checkpoint": "x.pth"}, "exporters": [{"type": "a"}]}}
    out = apply_overrides(data, ["stages.pair_predictor.type=precomputed", "stages.pair_predictor.path=p.npz",
                                 "stages.exporters.0.min_conf=2", "stages.exporters.1={type: b}"])
    assert out["stages"]["pair_predictor"] == {"type": "precomputed", "path": "p.npz"}
    assert out["stages"]["exporters"] == [{"type": "a", "min_conf": 2}, {"type": "b"}]
    assert data["stages"]["pair_predictor"]["type"] == "monst3r"  # input untouched


def test_merge_replaces_lists_and_changed_types():
    base = {"x": {"type": "a", "k": 1}, "l": [1, 2], "m": {"p": 1, "q": 2}}
    over = {"x": {"type": "b"}, "l": [3], "m": {"q": 5}}
    assert merge(base, over) == {"x": {"type": "b"}, "l": [3], "m": {"p": 1, "q": 5}}


@pytest.mark.parametrize("override, needles", [
    (["stages.pose_solver.type=nope"], ["stages.pose_solver", "unknown type 'nope'", "toy_pose"]),
    (["stages.global_aligner.offsett=1"], ["stages.global_aligner", "unknown key 'offsett'", "Did you mean 'offset'"]),
    (["stages.global_aligner.iterations=0"], ["stages.global_aligner.iterations", "greater than or equal to 1"]),
    (["stages.pair_predictor.enabled=false"], ["cannot be disabled"]),
    (["stages.pose_solvr={type: toy_pose}"], ["stages.pose_solvr", "Did you mean 'pose_solver'"]),
    (["inputt.stride=2"], ["unknown key 'inputt'", "Did you mean 'input'"]),
    (["input.strid=2"], ["input.strid", "Did you mean 'stride'"]),
    (["input.stride=0"], ["input.stride"]),
])
def test_bad_overrides_name_file_key_and_choices(registry, override, needles):
    with pytest.raises(RecipeError) as exc:
        load_recipe(TOY, registry=registry, overrides=override)
    message = str(exc.value)
    assert message.startswith(str(TOY)), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_invalid_yaml_names_line(tmp_path, registry):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  pose_solver: {type: toy_pose\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: line \d+"):
        load_recipe(bad, registry=registry)


def test_resolved_recipe_fills_defaults(registry):
    resolved, _ = load_recipe(TOY, registry=registry)
    d = resolved.to_dict()
    assert d["stages"]["pose_solver"] == {"type": "toy_pose", "step": 0.1}
    assert d["input"]["long_edge"] == 224 and d["input"]["stride"] == 1
    assert d["pairs"] == {"scene_graph": "swin-2-noncyclic", "symmetrize": True}
    again, _ = load_recipe(TOY, registry=registry)
    assert again.digest() == resolved.digest()


def test_duplicate_providers_name_both(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import types

    import toy_plugin
    from monst3r_framework.hookspecs import hookimpl

    class Other(toy_plugin.ToyPose):
        pass

    clone = types.ModuleType("acme_clone")
    clone.monst3r_fw_stage_classes = hookimpl(lambda: [Other])
    with pytest.raises(PluginError) as exc:
        build_registry(load_entrypoints=False, plugins=[toy_plugin, clone])
    assert "acme_clone" in str(exc.value) and "toy_plugin" in str(exc.value) and "pose_solver 'toy_pose'" in str(exc.value)


def test_reference_plugin_is_discovered_through_its_entry_point(installed_plugins):
    registry = build_registry(load_entrypoints=True)
    plugins = {e.plugin for e in registry.entries.values()}
    assert plugins == {"reference"} or "reference" in plugins
    assert all(e.distribution.startswith("monst3r-fw") for e in registry.entries.values() if e.plugin == "reference")


def test_disable_plugins_env_blocks_entry_points(monkeypatch, installed_plugins):
    monkeypatch.setenv("MONST3R_FW_DISABLE_PLUGINS", "reference")
    registry = build_registry(load_entrypoints=True)
    assert not any(e.plugin == "reference" for e in registry.entries.values())
