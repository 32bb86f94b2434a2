"""Every shipped recipe validates, and the ablations differ from paper.yaml only where they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from monst3r_framework.errors import RecipeError
from monst3r_framework.recipe import load_recipe
from monst3r_framework.registry import build_registry

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
REGISTRY = build_registry(load_entrypoints=False, plugins=["monst3r_fw_reference.plugin", "monst3r_fw_viewer.plugin"])


def _resolved(path: Path, overrides: list[str] | None = None) -> dict:
    return load_recipe(path, registry=REGISTRY, overrides=overrides)[0].to_dict()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_recipe_validates(path):
    resolved = _resolved(path)
    assert resolved["stages"]["pair_predictor"]["type"]


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix]


PAPER = REPO / "recipes" / "paper.yaml"


@pytest.mark.parametrize("name, expected", [
    ("no_flow_loss", ["stages.global_aligner.flow_loss_weight"]),
    ("no_smoothness", ["stages.global_aligner.smoothness_weight"]),
    ("no_flow_no_smooth", ["stages.global_aligner.flow_loss_weight", "stages.global_aligner.smoothness_weight"]),
])
def test_ablation_changes_only_its_keys(name, expected):
    paper = _resolved(PAPER)
    ablation = _resolved(REPO / "recipes" / "ablations" / f"{name}.yaml")
    assert _diff(paper, ablation) == ["description"] + expected or _diff(paper, ablation) == expected
    for key in expected:
        assert ablation["stages"]["global_aligner"][key.rsplit(".", 1)[1]] == 0.0


def test_paper_defaults_match_the_official_demo():
    paper = _resolved(PAPER)
    ga = paper["stages"]["global_aligner"]
    assert (ga["iterations"], ga["lr"], ga["schedule"], ga["shared_focal"]) == (300, 0.01, "linear", True)
    assert (ga["flow_loss_weight"], ga["flow_loss_start"], ga["flow_loss_threshold"]) == (0.01, 0.1, 25)
    assert (ga["smoothness_weight"], ga["translation_weight"]) == (0.01, 1.0)
    assert paper["pairs"] == {"scene_graph": "swinstride-5-noncyclic", "symmetrize": True}
    assert paper["stages"]["pose_solver"]["iterations"] == 10
    assert paper["stages"]["mask_builder"]["threshold"] == 0.35
    assert paper["stages"]["flow_estimator"] == {**paper["stages"]["flow_estimator"], "type": "sea_raft", "iters": 20}
    assert [e["type"] for e in paper["stages"]["exporters"]] == ["monst3r_layout", "glb", "report"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_writes_a_report(path):
    exporters = _resolved(path)["stages"]["exporters"]
    assert "report" in [e["type"] for e in exporters]


def test_kitti_and_no_static_mask():
    kitti = _resolved(REPO / "recipes" / "kitti.yaml")["stages"]["global_aligner"]
    assert (kitti["flow_loss_weight"], kitti["translation_weight"]) == (0.0, 0.001)
    assert _resolved(REPO / "recipes" / "ablations" / "no_static_mask.yaml")["stages"]["mask_builder"] == {"enabled": False}


BAD = [
    ("stages.global_aligner.flow_los_weight=0", "Did you mean 'flow_loss_weight'"),
    ("stages.global_aligner.iterations=-3", "stages.global_aligner.iterations"),
    ("stages.flow_estimator.type=opencv_diss", "Did you mean 'opencv_dis'"),
    ("stages.mask_builder.threshold=2", "stages.mask_builder.threshold"),
    ("pairs.scene_graf=complete", "Did you mean 'scene_graph'"),
    ("stages.global_aligner.schedule=exponential", "stages.global_aligner.schedule"),
]


@pytest.mark.parametrize("override, needle", BAD)
def test_bad_overrides_raise(override, needle):
    with pytest.raises(RecipeError) as exc:
        load_recipe(PAPER, registry=REGISTRY, overrides=[override])
    assert needle in str(exc.value)
