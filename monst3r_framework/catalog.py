"""Recipes by name: the YAML files shipped inside the package, plus those plugins contribute.

``monst3r-fw run classical video.mp4`` and ``extends: paper`` look names up here; a path to an
existing file always wins over a name. Names are file stems (``paper``), with a folder prefix
below the top level (``ablations/no_flow_loss``). The files live in ``monst3r_framework/recipes/``
(in a source checkout the top-level ``recipes/`` folder is the same folder), so a wheel carries them.

Plugins add recipe folders through the ``monst3r_fw_recipe_dirs`` hook; a plugin recipe whose name
is already taken (by a built-in or an earlier plugin) is ignored with a note in ``recipe list``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import RecipeError

if TYPE_CHECKING:
    from .registry import Registry

#: Folder of the built-in recipes (inside the package, so wheels ship it).
BUILTIN_DIR = Path(__file__).resolve().parent / "recipes"
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe known by name."""

    name: str                # "paper", "ablations/no_flow_loss"
    path: Path
    origin: str              # "built-in" or "plugin <name>"
    shadowed_by: str = ""    # set on a plugin recipe hidden by an earlier one of the same name

    def header(self) -> tuple[str, str]:
        """(description, extends) read from the file; a broken file says so instead of failing the listing."""
        import yaml

        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            return f"(unreadable: {type(exc).__name__})", ""
        if not isinstance(data, dict):
            return "(not a recipe mapping)", ""
        description = " ".join(str(data.get("description") or "").split()) or self._leading_comment()
        extends = data.get("extends")
        if isinstance(extends, str):
            stem = extends
            for suffix in _SUFFIXES:
                stem = stem.removesuffix(suffix)
            extends = stem.removeprefix("../").removeprefix("./")
        return description, str(extends or "")


    def _leading_comment(self) -> str:
        """The comment block at the top of the file (the description of recipes without one)."""
        lines = []
        for line in self.path.read_text().splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        return " ".join(" ".join(lines).split())


def _scan(folder: Path, origin: str) -> list[RecipeEntry]:
    if not folder.is_dir():
        return []
    out = []
    # top-level recipes first, then each subfolder's
    for path in sorted(folder.rglob("*"), key=lambda p: (len(p.relative_to(folder).parts), p.as_posix())):
        if path.suffix in _SUFFIXES and path.is_file():
            name = path.relative_to(folder).with_suffix("").as_posix()
            out.append(RecipeEntry(name=name, path=path, origin=origin))
    return out


def plugin_recipe_dirs(registry: "Registry") -> list[tuple[str, Path]]:
    """(plugin name, folder) for every folder the registry's plugins return from ``monst3r_fw_recipe_dirs``."""
    out = []
    for impl in registry.pm.hook.monst3r_fw_recipe_dirs.get_hookimpls():
        for folder in impl.function() or ():
            out.append((impl.plugin_name, Path(folder)))
    return out


def recipe_catalog(registry: Optional["Registry"] = None, *, with_shadowed: bool = False) -> dict[str, RecipeEntry]:
    """Every recipe known by name: built-ins first, then each plugin's (``registry`` given).

    Args:
        registry: plugins whose ``monst3r_fw_recipe_dirs`` folders to add; None = built-ins only.
        with_shadowed: also return plugin recipes hidden by an earlier one, keyed ``name@plugin``.
    """
    catalog = {entry.name: entry for entry in _scan(BUILTIN_DIR, "built-in")}
    if registry is not None:
        for plugin, folder in plugin_recipe_dirs(registry):
            for entry in _scan(folder, f"plugin {plugin}"):
                if entry.name not in catalog:
                    catalog[entry.name] = entry
                elif with_shadowed:
                    catalog[f"{entry.name}@{plugin}"] = RecipeEntry(entry.name, entry.path, entry.origin,
                                                                    shadowed_by=catalog[entry.name].origin)
    return catalog


def _as_name(ref: str) -> str:
    name = ref.replace("\\", "/")
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def find_recipe(ref: Union[str, Path], registry: Optional["Registry"] = None, plugins: bool = True) -> Optional[Path]:
    """The file of recipe ``ref`` when it is a name in the catalog (``paper``, ``paper.yaml``), else None.

    Built-in names are looked up first; plugin recipes (``registry``'s, or the installed plugins'
    when None) only when ``plugins`` and the name is not built in.
    """
    name = _as_name(str(ref))
    entry = recipe_catalog().get(name)
    if entry is None and plugins:
        if registry is None:
            from .registry import build_registry

            registry = build_registry()
        entry = recipe_catalog(registry).get(name)
    return entry.path if entry is not None else None


def resolve_recipe(ref: Union[str, Path], registry: Optional["Registry"] = None) -> Path:
    """A recipe argument (an existing file, else a name) -> its file.

    Raises:
        RecipeError: neither a file nor a known name; lists the names.
    """
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    found = find_recipe(ref, registry)
    if found is not None:
        return found
    names = ", ".join(sorted(recipe_catalog())) or "none"
    raise RecipeError(f"{ref}: no such recipe file and no recipe of that name; built-in recipes: {names} "
                      "(`monst3r-fw recipe list` describes them)")
