"""pluggy hook specifications (project name ``monst3r_fw``). See docs/hooks.md."""

from __future__ import annotations

import pluggy

from .stages import Stage, StageKind

PROJECT = "monst3r_fw"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Hooks:
    @hookspec
    def monst3r_fw_stage_classes(self) -> list[type[Stage]]:
        """Return the stage classes this plugin provides. Called once, when the registry is
        built; return classes, not instances, and load no weights here."""

    @hookspec
    def monst3r_fw_stage_committed(self, run_id: str, kind: StageKind, key: str, cached: bool) -> None:
        """Called after a stage's outputs are complete in the store (computed or reused)."""

    @hookspec
    def monst3r_fw_recipe_dirs(self) -> list[str]:
        """Return folders of recipe YAML files this plugin ships, usable by name (file stem) in
        ``monst3r-fw run NAME`` and ``extends: NAME``. Built-in names win over plugin names."""
