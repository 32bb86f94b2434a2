"""Contracts every installed stage class and the docs must keep."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError

from monst3r_framework import hookspecs
from monst3r_framework.recipe import recipe_reference_markdown
from monst3r_framework.registry import build_registry
from monst3r_framework.stages import STAGE_KINDS

REPO = Path(__file__).resolve().parents[2]
# the reference entry point only (tests/conftest.py sets MONST3R_FW_PLUGINS=reference): the docs
# describe exactly these, whatever else is installed
REGISTRY = build_registry(load_entrypoints=True)
CLASSES = [e.cls for e in REGISTRY.entries.values()]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.kind}:{c.name}")
def test_config_contract(cls):
    config = cls.config_model.model_validate({"type": cls.name})
    assert cls.config_model.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValidationError):
        cls.config_model.model_validate({"type": cls.name, "no_such_option": 1})
    for name, info in cls.config_model.model_fields.items():
        if name != "type":
            assert info.description, f"{cls.__name__}.{name} needs Field(description=...)"
    assert set(cls.reads) <= set(STAGE_KINDS) and set(cls.requires) <= set(cls.reads)


def test_every_hookspec_is_documented_with_its_signature():
    doc = (REPO / "docs" / "hooks.md").read_text()
    for name, fn in inspect.getmembers(hookspecs.Hooks, inspect.isfunction):
        if name.startswith("monst3r_fw_"):
            sig = str(inspect.signature(fn)).replace("'", "")
            assert f"{name}{sig}" in doc, f"docs/hooks.md must show `{name}{sig}`"


def test_recipe_reference_is_current():
    current = (REPO / "docs" / "recipe-reference.md").read_text()
    assert current == recipe_reference_markdown(REGISTRY), \
        "docs/recipe-reference.md is stale: run `monst3r-fw recipe reference --write docs/recipe-reference.md`"
