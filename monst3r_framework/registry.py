"""Plugin discovery: entry-point group ``monst3r_fw`` plus modules named in a recipe's ``plugins:``.

Nothing is discovered at import time; :func:`build_registry` makes a fresh ``PluginManager`` each call.
Environment:
    MONST3R_FW_TRACE_HOOKS=1            print every hook call.
    MONST3R_FW_DISABLE_PLUGINS=a,b      skip entry points by name.
    MONST3R_FW_PLUGINS=a,b              load only these entry points (the test suite sets ``reference``,
                                        so whatever else is installed never leaks into tests).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import typing
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterable, Union

import pluggy
from pydantic import Field

from .errors import PluginError
from .hookspecs import PROJECT, Hooks
from .stages import STAGE_BASES, STAGE_KINDS, Stage, StageConfig


@dataclass(frozen=True)
class StageEntry:
    """One registered implementation: the class and where it came from."""

    cls: type[Stage]
    plugin: str            # plugin name (entry-point name or module name)
    distribution: str      # "monst3r-fw 0.1.0", or "local module" for recipe plugins

    @property
    def kind(self) -> str:
        return self.cls.kind

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def module(self) -> str:
        return self.cls.__module__


class Registry:
    """All stage implementations known to one run, by (kind, type name)."""

    def __init__(self, pm: pluggy.PluginManager, entries: dict[tuple[str, str], StageEntry]) -> None:
        self.pm = pm
        self.entries = entries

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.entries if k == kind)

    def get(self, kind: str, name: str) -> StageEntry:
        try:
            return self.entries[(kind, name)]
        except KeyError:
            raise PluginError(f"no {kind} named {name!r}; installed: {', '.join(self.names(kind)) or 'none'}") from None

    def by_kind(self) -> dict[str, list[StageEntry]]:
        out: dict[str, list[StageEntry]] = {k: [] for k in STAGE_KINDS}
        for (kind, name), entry in sorted(self.entries.items()):
            out[kind].append(entry)
        return out

    def config_union(self, kind: str) -> Any:
        """A pydantic discriminated union (on ``type``) of the installed config models of ``kind``."""
        models = [self.entries[(kind, n)].cls.config_model for n in self.names(kind)]
        if not models:
            raise PluginError(f"no {kind} implementations are installed")
        if len(models) == 1:
            return models[0]
        return typing.Annotated[Union[tuple(models)], Field(discriminator="type")]  # type: ignore[misc]


def _dist_of(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def _validate_class(cls: Any, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise PluginError(f"plugin {plugin!r} returned {cls!r}, which is not a Stage subclass")
    kind = getattr(cls, "kind", None)
    if kind not in STAGE_KINDS or not issubclass(cls, STAGE_BASES[kind]):
        raise PluginError(f"plugin {plugin!r}: {cls.__qualname__} must subclass one of "
                          f"{', '.join(b.__name__ for b in STAGE_BASES.values())}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"plugin {plugin!r}: {cls.__qualname__} has no `name` (its recipe type)")
    model = getattr(cls, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, StageConfig)):
        raise PluginError(f"plugin {plugin!r}: {cls.__qualname__}.config_model must subclass StageConfig")
    type_field = model.model_fields.get("type")
    if type_field is None or type_field.default != name:
        raise PluginError(f"plugin {plugin!r}: {model.__qualname__} needs `type: Literal[{name!r}] = {name!r}`")


def build_registry(load_entrypoints: bool = True, plugins: Iterable[Union[str, ModuleType, object]] = ()) -> Registry:
    """Discover plugins and index their stage classes.

    Args:
        load_entrypoints: load the ``monst3r_fw`` entry-point group (installed plugin packages).
        plugins: extra plugin objects or dotted module names (a recipe's ``plugins:`` list).
    Raises:
        PluginError: an import failed, a class is malformed, or two plugins provide one (kind, type).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(Hooks)
    if os.environ.get("MONST3R_FW_TRACE_HOOKS") == "1":
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    origins: dict[str, str] = {}
    blocked = {n.strip() for n in os.environ.get("MONST3R_FW_DISABLE_PLUGINS", "").split(",") if n.strip()}
    only = {n.strip() for n in os.environ.get("MONST3R_FW_PLUGINS", "").split(",") if n.strip()}
    if load_entrypoints:
        for ep in md.entry_points(group=PROJECT):
            if ep.name in blocked or (only and ep.name not in only) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # report the plugin, not a traceback
                raise PluginError(f"plugin {ep.name!r} ({_dist_of(ep)}) failed to import {ep.value!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            pm.register(module, name=ep.name)
            origins[ep.name] = _dist_of(ep)
    for plugin in plugins:
        if isinstance(plugin, str):
            try:
                module = importlib.import_module(plugin)
            except ImportError as exc:
                raise PluginError(f"recipe plugin module {plugin!r} cannot be imported ({exc}); "
                                  "check the name and that it is on PYTHONPATH") from exc
            name = plugin
        else:
            module, name = plugin, getattr(plugin, "__name__", repr(plugin))
        if pm.is_registered(module):
            continue
        if pm.get_plugin(name) is not None:
            name = f"{name}#{len(origins)}"
        pm.register(module, name=name)
        origins[name] = "local module"
    pm.check_pending()

    entries: dict[tuple[str, str], StageEntry] = {}
    for impl in pm.hook.monst3r_fw_stage_classes.get_hookimpls():
        try:
            classes = impl.function()
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed to list its stages: "
                              f"{type(exc).__name__}: {exc}") from exc
        for cls in classes or ():
            _validate_class(cls, impl.plugin_name)
            key = (cls.kind, cls.name)
            entry = StageEntry(cls=cls, plugin=impl.plugin_name,
                               distribution=origins.get(impl.plugin_name, "local module"))
            if key in entries and entries[key].cls is not cls:
                other = entries[key]
                raise PluginError(
                    f"plugin {entry.plugin!r} ({entry.distribution}, {entry.module}) and plugin {other.plugin!r} "
                    f"({other.distribution}, {other.module}) both provide {cls.kind} {cls.name!r}; "
                    "uninstall one or block it with MONST3R_FW_DISABLE_PLUGINS")
            entries[key] = entry
    return Registry(pm, entries)
