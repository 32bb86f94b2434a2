"""YAML recipes: load, ``extends:``, ``--set`` overrides, and validation against installed stages.

A recipe::

    schema: 1
    extends: paper                  # optional; a recipe name (monst3r-fw recipe list) or a path relative to this file
    plugins: [my_lab.flow_plugin]   # optional; modules to load as plugins
    input: {long_edge: 512, num_frames: null, stride: 1, fps: null}
    pairs: {scene_graph: swinstride-5-noncyclic, symmetrize: true}
    device: auto
    seed: 0
    stages:
      flow_estimator: {type: opencv_dis}
      pair_predictor: {type: monst3r, checkpoint: null}
      pose_solver:    {type: pnp_mst}
      mask_builder:   {type: flow_static, enabled: true}
      global_aligner: {type: monst3r_ga}
      exporters:
        - {type: monst3r_layout}

Merging (``extends`` and overrides): mappings merge key by key, lists are replaced whole, and a
stage node whose ``type`` changes is replaced whole (the old type's keys would not fit the new one).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import RecipeError
from .registry import Registry
from .stages import OPTIONAL_KINDS, STAGE_KINDS, StageConfig

SINGLE_KINDS: tuple[str, ...] = tuple(k for k in STAGE_KINDS if k != "exporter")
#: The recipe schema versions this code reads.
SUPPORTED_SCHEMAS: tuple[int, ...] = (1,)
#: ``device:`` / ``--device`` values: auto, cpu, cuda, cuda:N, mps.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(value: Any, where: str) -> str:
    """``value`` if it names a device (auto | cpu | cuda | cuda:N | mps), else a RecipeError naming ``where``."""
    if isinstance(value, str) and DEVICE_PATTERN.fullmatch(value.strip()):
        return value.strip()
    close = difflib.get_close_matches(str(value), ["auto", "cpu", "cuda", "cuda:0", "mps"], n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"{where}: unknown device {value!r}; use auto, cpu, cuda, cuda:N (N = GPU index) or mps.{hint}")


class InputConfig(BaseModel):
    """How the input video or image folder is read and preprocessed (see docs/input.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    long_edge: Literal[224, 512] | int = Field(512, ge=16, description="Network resolution mode: 512 (long edge resized to 512, crop to multiples of 16) or 224 (short edge to 224, centre crop 224x224), as the official loader.")
    num_frames: Optional[int] = Field(None, ge=2, description="Keep at most this many frames (after stride/fps subsampling); null = all.")
    stride: int = Field(1, ge=1, description="Keep every stride-th frame.")
    fps: Optional[float] = Field(None, gt=0, description="Resample a video to this frame rate before stride; null = native.")
    start_frame: int = Field(0, ge=0, description="First frame to read.")
    square_ok: bool = Field(False, description="512 mode: keep square crops square (official default crops square images to 4:3).")


class PairsConfig(BaseModel):
    """Which frame pairs the pair predictor sees (MonST3R scene-graph strings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scene_graph: str = Field("swinstride-5-noncyclic", description="complete | swin-K | swin2stride-K | swinstride-K | logwin-K (each optionally -noncyclic) | oneref-K.")
    symmetrize: bool = Field(True, description="Add (j, i) for every (i, j) (ignored by oneref).")


class StorageConfig(BaseModel):
    """How stage outputs are kept in the run store (docs/store.md, "Store size")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    float_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype the store keeps the bulky per-pixel arrays a record marks COMPACT in (pair "
        "pointmaps and confidences, flow and its uncertainty); stages compute in float32 and read float32 back "
        "(float32: the store holds exactly what was computed).")
    drop_pair_predictions: bool = Field(
        False, description="After a complete run, delete the pair pointmaps and confidences (most of the store); a "
        "later run recomputes them only when a stage that reads them must run again.")


class RecipeModel(BaseModel):
    """Top-level recipe keys (stage nodes are validated against the installed stage configs)."""

    model_config = ConfigDict(extra="forbid")
    schema_: int = Field(1, alias="schema", description="Recipe schema version.")
    extends: Optional[str] = Field(None, description="Base recipe whose keys this one changes: a path relative to this file, or a recipe name (`monst3r-fw recipe list`).")
    plugins: list[str] = Field(default_factory=list, description="Python modules to load as plugins for this recipe.")
    description: str = Field("", description="Free text shown by `recipe show`.")
    input: InputConfig = Field(default_factory=InputConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N.")
    seed: int = Field(0, description="Random seed handed to every stage.")
    stages: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ResolvedRecipe:
    """A validated recipe: one config per enabled stage kind (None = disabled) and the exporters."""

    source: str
    model: RecipeModel
    stages: dict[str, Optional[StageConfig]]
    exporters: list[StageConfig]
    plugins: list[str] = field(default_factory=list)

    @property
    def input(self) -> InputConfig:
        return self.model.input

    @property
    def pairs(self) -> PairsConfig:
        return self.model.pairs

    @property
    def storage(self) -> StorageConfig:
        return self.model.storage

    def to_dict(self) -> dict[str, Any]:
        """Fully resolved recipe as plain JSON-able data (what `recipe show` prints and runs store)."""
        stages: dict[str, Any] = {}
        for kind in SINGLE_KINDS:
            cfg = self.stages.get(kind)
            stages[kind] = {"enabled": False} if cfg is None else cfg.model_dump(mode="json")
        stages["exporters"] = [c.model_dump(mode="json") for c in self.exporters]
        return {
            "schema": self.model.schema_,
            "description": self.model.description,
            "plugins": list(self.plugins),
            "input": self.model.input.model_dump(mode="json"),
            "pairs": self.model.pairs.model_dump(mode="json"),
            "storage": self.model.storage.model_dump(mode="json"),
            "device": self.model.device,
            "seed": self.model.seed,
            "stages": stages,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Raw loading, extends, overrides
# ------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (plain YAML keeps the
    last one silently, so a recipe could say ``iterations: 300`` and run with another value).
    Keys brought in by a ``<<:`` merge may still be overridden, as YAML intends."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping below reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first written on line {first + 1}); keep only one",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def safe_load_strict(text: str) -> Any:
    """``yaml.safe_load`` refusing duplicate keys (see :class:`_StrictLoader`)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found; check the path, or pass a recipe name "
                          "(`monst3r-fw recipe list`: paper, classical, ...)")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.yaml"))[:3]
        example = f" such as {path / inside[0]}" if inside else ", e.g. recipes/paper.yaml"
        raise RecipeError(f"{path}: is a folder, not a recipe file; pass one recipe YAML file{example}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start}); a recipe is a YAML text file, "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        data = safe_load_strict(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}:{where}: invalid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys (schema, input, pairs, stages, ...), "
                          f"got {type(data).__name__}")
    return data


def merge(base: Any, overlay: Any) -> Any:
    """Deep-merge ``overlay`` onto ``base`` (mappings merge, everything else replaces; a changed
    ``type`` replaces the whole node)."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        if "type" in overlay and "type" in base and overlay["type"] != base["type"]:
            return copy.deepcopy(overlay)
        out = copy.deepcopy(base)
        for key, value in overlay.items():
            out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(overlay)


def load_raw(path: Union[str, Path], _seen: Optional[list[Path]] = None) -> dict[str, Any]:
    """Load a recipe file and everything it extends, merged, without validation."""
    path = Path(path).resolve()
    seen = list(_seen or [])
    if path in seen:
        chain = " -> ".join(str(p) for p in seen + [path])
        raise RecipeError(f"{path}: extends loop ({chain})")
    data = _read_yaml(path)
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data
    if not isinstance(base_ref, str):
        raise RecipeError(f"{path}: extends: expected a file path or a recipe name, got {base_ref!r}")
    base_path = path.parent / base_ref
    if not base_path.is_file():  # not a file beside this one: a recipe name (paper, classical, ...)
        from .catalog import find_recipe

        base_path = find_recipe(base_ref) or base_path
    base = load_raw(base_path, seen + [path])
    return merge(base, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"stages.global_aligner.flow_loss_weight=0"`` -> (["stages", "global_aligner", "flow_loss_weight"], 0)."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. stages.global_aligner.flow_loss_weight=0")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"--set {text!r}: empty key path")
    try:
        value = safe_load_strict(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError as exc:
        raise RecipeError(f"--set {text!r}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides in order. Setting a node's ``type`` to a new value resets that node."""
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"--set {text}: {where}: list index out of range (has {len(node)} items)")
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise RecipeError(f"--set {text}: {where} is not a mapping")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) > len(node):
                raise RecipeError(f"--set {text}: index {last} out of range (list has {len(node)} items)")
            if int(last) == len(node):
                node.append(value)
            else:
                node[int(last)] = value
        elif isinstance(node, dict):
            if last == "type" and node.get("type") not in (None, value):
                enabled = node.get("enabled")
                node.clear()
                if enabled is not None:
                    node["enabled"] = enabled
            node[last] = value
        else:
            raise RecipeError(f"--set {text}: {'.'.join(parts[:-1])} is not a mapping")
    return data


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _format_validation(source: str, prefix: str, exc: ValidationError, valid_keys: list[str]) -> RecipeError:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not (isinstance(p, str) and p.endswith("Config"))]
    key_path = ".".join([prefix] + loc) if prefix else ".".join(loc)
    if err.get("type") == "extra_forbidden":
        bad = loc[-1] if loc else "?"
        msg = f"{source}: {key_path}: unknown key {bad!r}; valid keys: {', '.join(sorted(valid_keys))}.{_suggest(bad, valid_keys)}"
    else:
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        msg = f"{source}: {key_path}: {err.get('msg')}{shown}"
    more = len(exc.errors()) - 1
    return RecipeError(msg + (f" (+{more} more problems)" if more > 0 else ""))


def _validate_stage(source: str, where: str, kind: str, node: Any, registry: Registry) -> Optional[StageConfig]:
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise RecipeError(f"{source}: {where}: expected a mapping with `type:`, got {node!r}")
    node = dict(node)
    enabled = node.pop("enabled", True)
    if enabled is False:
        if kind not in OPTIONAL_KINDS:
            raise RecipeError(f"{source}: {where}: the {kind} cannot be disabled (only "
                              f"{', '.join(sorted(OPTIONAL_KINDS))} are optional)")
        return None
    names = registry.names(kind)
    type_name = node.get("type")
    if type_name is None:
        raise RecipeError(f"{source}: {where}: missing `type:`; installed {kind} types: {', '.join(names) or 'none'}")
    if type_name not in names:
        raise RecipeError(f"{source}: {where}: unknown type {type_name!r}; installed {kind} types: "
                          f"{', '.join(names) or 'none'}.{_suggest(str(type_name), names)}")
    model = registry.get(kind, type_name).cls.config_model
    try:
        return model.model_validate(node)
    except ValidationError as exc:
        raise _format_validation(source, where, exc, list(model.model_fields) + ["enabled"]) from None


def resolve(data: dict[str, Any], registry: Registry, source: str = "<recipe>") -> ResolvedRecipe:
    """Validate merged recipe data against the schema and the installed stage configs."""
    schema = data.get("schema", SUPPORTED_SCHEMAS[-1])
    if type(schema) is int and schema not in SUPPORTED_SCHEMAS:
        newer = schema > max(SUPPORTED_SCHEMAS)
        raise RecipeError(
            f"{source}: schema: version {schema} is not supported (this monst3r-fw reads schema "
            f"{', '.join(map(str, SUPPORTED_SCHEMAS))}); "
            + ("upgrade monst3r-fw to run it, or rewrite it for schema 1" if newer else "set schema: 1"))
    if "device" in data:
        check_device(data["device"], f"{source}: device")
    try:
        model = RecipeModel.model_validate(data)
    except ValidationError as exc:
        top = [("schema" if k == "schema_" else k) for k in RecipeModel.model_fields]
        err = exc.errors()[0]
        loc = err.get("loc", ())
        sub: Any = RecipeModel
        valid = top
        if len(loc) >= 2 and loc[0] in ("input", "pairs", "storage"):
            valid = list({"input": InputConfig, "pairs": PairsConfig, "storage": StorageConfig}[loc[0]].model_fields)
        raise _format_validation(source, "", exc, valid) from None
    stages_raw = model.stages
    known = list(SINGLE_KINDS) + ["exporters"]
    for key in stages_raw:
        if key not in known:
            raise RecipeError(f"{source}: stages.{key}: unknown stage kind; valid: {', '.join(known)}.{_suggest(key, known)}")
    stages: dict[str, Optional[StageConfig]] = {}
    for kind in SINGLE_KINDS:
        if kind not in stages_raw:
            if kind in OPTIONAL_KINDS:
                stages[kind] = None
                continue
            raise RecipeError(f"{source}: stages.{kind}: required stage missing; installed types: "
                              f"{', '.join(registry.names(kind)) or 'none'}")
        stages[kind] = _validate_stage(source, f"stages.{kind}", kind, stages_raw[kind], registry)
    exporters_raw = stages_raw.get("exporters") or []
    if not isinstance(exporters_raw, list):
        raise RecipeError(f"{source}: stages.exporters: expected a list of {{type: ...}} nodes")
    exporters = []
    for idx, node in enumerate(exporters_raw):
        cfg = _validate_stage(source, f"stages.exporters.{idx}", "exporter", node, registry)
        if cfg is not None:
            exporters.append(cfg)
    resolved = ResolvedRecipe(source=source, model=model, stages=stages, exporters=exporters, plugins=list(model.plugins))
    _check_dependencies(resolved, registry)
    return resolved


def _check_dependencies(recipe: ResolvedRecipe, registry: Registry) -> None:
    for kind, cfg in recipe.stages.items():
        if cfg is None:
            continue
        cls = registry.get(kind, cfg.type).cls  # type: ignore[attr-defined]
        needs = getattr(cls, "requires", frozenset())
        for need in needs:
            if recipe.stages.get(need) is None:
                raise RecipeError(f"{recipe.source}: stages.{kind}: type {cfg.type!r} needs the {need} stage, "  # type: ignore[attr-defined]
                                  f"which is disabled or missing; enable stages.{need}")


def load_recipe(path: Union[str, Path], registry: Optional[Registry] = None, overrides: Optional[list[str]] = None,
                load_entrypoints: bool = True) -> tuple[ResolvedRecipe, Registry]:
    """Load, merge, override and validate a recipe. Builds the registry (with the recipe's plugins)
    when none is given. Returns the resolved recipe and the registry used."""
    from .catalog import find_recipe
    from .registry import build_registry

    if not Path(path).expanduser().is_file():  # a recipe name: paper, classical, ...
        path = find_recipe(path, registry, plugins=load_entrypoints or registry is not None) or path
    data = load_raw(path)
    data = apply_overrides(data, list(overrides or []))
    if registry is None:
        plugins = data.get("plugins") or []
        if not isinstance(plugins, list):
            raise RecipeError(f"{path}: plugins: expected a list of module names")
        registry = build_registry(load_entrypoints=load_entrypoints, plugins=plugins)
    elif data.get("plugins"):
        from .registry import build_registry as _br  # registry given: extend it with the recipe's modules

        extra = _br(load_entrypoints=False, plugins=data["plugins"])
        for key, entry in extra.entries.items():
            registry.entries.setdefault(key, entry)
    return resolve(data, registry, source=str(path)), registry


def recipe_json_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema for editors: the top level plus one discriminated union per stage kind."""
    schema = RecipeModel.model_json_schema(by_alias=True)
    stage_props: dict[str, Any] = {}
    for kind in SINGLE_KINDS:
        if registry.names(kind):
            stage_props[kind] = TypeAdapter(registry.config_union(kind)).json_schema()
    if registry.names("exporter"):
        stage_props["exporters"] = {"type": "array", "items": TypeAdapter(registry.config_union("exporter")).json_schema()}
    schema["properties"]["stages"] = {"type": "object", "properties": stage_props, "additionalProperties": False}
    return schema


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if getattr(annotation, "__args__", None) is None else None
    return text or str(annotation).replace("typing.", "").replace("NoneType", "None")


def _field_rows(model: type[BaseModel], skip: tuple[str, ...] = ("type",)) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        key = info.alias or name
        default = info.default if info.default_factory is None else info.default_factory()
        desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        bounds = []
        for meta in info.metadata:
            for op in ("gt", "ge", "lt", "le"):
                if getattr(meta, op, None) is not None:
                    bounds.append(f"{op} {getattr(meta, op)}")
        extra = f" ({', '.join(bounds)})" if bounds else ""
        shown = f"see `{key}`" if isinstance(default, BaseModel) else f"`{json.dumps(default, default=str)}`"
        rows.append(f"| `{key}` | `{_type_name(info.annotation)}` | {shown} | {desc}{extra} |")
    return rows


def recipe_reference_markdown(registry: Registry) -> str:
    """Markdown reference of every recipe key, generated from the pydantic models (docs/recipe-reference.md)."""
    lines = ["# Recipe reference", "",
             "Generated by `monst3r-fw recipe reference` from the installed stage config models; CI checks it is current.",
             "Every key can be overridden from the command line with `--set KEY.PATH=VALUE`.", ""]
    header = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += ["## Top level", ""] + header + _field_rows(RecipeModel, skip=("stages",)) + [""]
    lines += ["## `input`", ""] + header + _field_rows(InputConfig) + [""]
    lines += ["## `pairs`", ""] + header + _field_rows(PairsConfig) + [""]
    lines += ["## `storage`", ""] + header + _field_rows(StorageConfig) + [""]
    for kind, entries in registry.by_kind().items():
        node = "stages.exporters[]" if kind == "exporter" else f"stages.{kind}"
        lines += [f"## `{node}`", ""]
        if kind in OPTIONAL_KINDS:
            lines += ["Optional: `enabled: false` switches it off.", ""]
        for entry in entries:
            doc = (entry.cls.__doc__ or "").strip().splitlines()
            lines += [f"### `type: {entry.name}`", "", f"{doc[0] if doc else ''} (plugin `{entry.plugin}`, `{entry.module}`)", ""]
            rows = _field_rows(entry.cls.config_model)
            lines += (header + rows) if rows else ["No options."]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
