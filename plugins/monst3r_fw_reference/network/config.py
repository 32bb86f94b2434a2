"""Network configuration and a safe parser for the checkpoint's ``args.model`` string.

Official DUSt3R/MonST3R checkpoints describe their network as a Python constructor call, e.g.
``AsymmetricCroCo3DStereo(pos_embed='RoPE100', head_type='dpt', depth_mode=('exp', -inf, inf), ...)``,
which the official loader runs through ``eval``. Here the string is only *parsed* (``ast.parse``) and
every keyword value is read by a tiny literal evaluator that knows numbers, strings, tuples, lists,
``True/False/None`` and ``inf``. Nothing from the string is ever executed.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

from monst3r_framework.errors import InputError

#: Constructor names accepted in a model string (the class every DUSt3R-family checkpoint names).
MODEL_CLASS_NAMES = frozenset({"AsymmetricCroCo3DStereo"})

_NAMES = {"inf": math.inf, "True": True, "False": False, "None": None}



@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of ``AsymmetricCroCo3DStereo`` (defaults = the official constructor's).

    Attributes:
        enc_embed_dim, enc_depth, enc_num_heads: ViT encoder width, depth and heads.
        dec_embed_dim, dec_depth, dec_num_heads: decoder width, depth and heads (each of the two decoders).
        mlp_ratio: hidden size of every MLP relative to its width.
        patch_size: square patch side in pixels (images must be multiples of it).
        pos_embed: ``"RoPE<base>"`` (e.g. ``RoPE100``); absolute ``cosine`` embeddings are not supported.
        head_type: ``"dpt"`` (MonST3R, DUSt3R 512) or ``"linear"`` (DUSt3R 224).
        output_mode: only ``"pts3d"``.
        depth_mode: ``(mode, vmin, vmax)`` with mode in exp/square/linear and no bounds.
        conf_mode: ``(mode, vmin, vmax)`` with mode in exp/sigmoid, or None for no confidence channel.
        patch_embed_cls: ``PatchEmbedDust3R`` (inference) or ``ManyAR_PatchEmbed`` (training layout:
            landscape tensors, portrait images stored transposed).
        landscape_only: run the heads through the landscape wrapper (training layout).
        norm_im2_in_dec: apply ``norm_y`` to the other view's tokens in decoder cross-attention.
        img_size, freeze, mask_ratio: kept for provenance only; they do not change the forward pass.
    """

    enc_embed_dim: int = 768
    enc_depth: int = 12
    enc_num_heads: int = 12
    dec_embed_dim: int = 512
    dec_depth: int = 8
    dec_num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    pos_embed: str = "cosine"
    head_type: str = "linear"
    output_mode: str = "pts3d"
    depth_mode: tuple = ("exp", -math.inf, math.inf)
    conf_mode: Optional[tuple] = ("exp", 1, math.inf)
    patch_embed_cls: str = "PatchEmbedDust3R"
    landscape_only: bool = True
    norm_im2_in_dec: bool = True
    img_size: tuple = (224, 224)
    freeze: str = "none"
    mask_ratio: float = 0.9

    # ------------------------------------------------------------------ derived values
    @property
    def rope_base(self) -> float:
        return float(self.pos_embed[len("RoPE"):])

    @property
    def has_conf(self) -> bool:
        return bool(self.conf_mode)

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        """Indices into [encoder output, dec layer 1..L] read by the DPT head."""
        depth = self.dec_depth
        return (0, depth * 2 // 4, depth * 3 // 4, depth)

    def for_inference(self) -> "NetworkConfig":
        """The rewrite the official ``load_model`` applies: plain patch embed, no landscape wrapper."""
        cls = "PatchEmbedDust3R" if self.patch_embed_cls == "ManyAR_PatchEmbed" else self.patch_embed_cls
        return replace(self, patch_embed_cls=cls, landscape_only=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "NetworkConfig":
        """Raise :class:`InputError` for configurations this implementation cannot build."""
        where = "network config"
        if not str(self.pos_embed).startswith("RoPE"):
            raise InputError(
                f"{where}: pos_embed={self.pos_embed!r} is not supported; expected 'RoPE<base>' "
                "(e.g. 'RoPE100', as in every MonST3R/DUSt3R release)"
            )
        try:
            self.rope_base
        except ValueError as exc:
            raise InputError(f"{where}: cannot read the RoPE base from pos_embed={self.pos_embed!r}") from exc
        if self.head_type not in ("dpt", "linear"):
            raise InputError(f"{where}: head_type={self.head_type!r}; expected 'dpt' or 'linear'")
        if self.output_mode != "pts3d":
            raise InputError(f"{where}: output_mode={self.output_mode!r}; only 'pts3d' is supported")
        if self.patch_embed_cls not in ("PatchEmbedDust3R", "ManyAR_PatchEmbed"):
            raise InputError(
                f"{where}: patch_embed_cls={self.patch_embed_cls!r}; expected 'PatchEmbedDust3R' or 'ManyAR_PatchEmbed'"
            )
        if self.head_type == "dpt" and self.dec_depth <= 9:
            raise InputError(f"{where}: the DPT head needs dec_depth >= 10 (got {self.dec_depth})")
        for name, dim, heads in (("enc", self.enc_embed_dim, self.enc_num_heads),
                                 ("dec", self.dec_embed_dim, self.dec_num_heads)):
            if dim % heads or (dim // heads) % 4:
                raise InputError(
                    f"{where}: {name}_embed_dim={dim} / {name}_num_heads={heads} must give a head size "
                    "divisible by 4 (2-D RoPE)"
                )
        mode = self.depth_mode
        if len(mode) != 3 or mode[0] not in ("exp", "square", "linear") or mode[1] != -math.inf or mode[2] != math.inf:
            raise InputError(f"{where}: depth_mode={mode!r}; expected (exp|square|linear, -inf, inf)")
        if self.conf_mode and (len(self.conf_mode) != 3 or self.conf_mode[0] not in ("exp", "sigmoid")):
            raise InputError(f"{where}: conf_mode={self.conf_mode!r}; expected ('exp'|'sigmoid', vmin, vmax) or None")
        return self

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], *, where: str = "model config") -> "NetworkConfig":
        """Build from constructor keywords (from a model string or a JSON config)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InputError(
                f"{where}: unknown network argument(s) {unknown}; known: {sorted(known)}"
            )
        values = dict(kwargs)
        for key in ("depth_mode", "conf_mode", "img_size"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        if isinstance(values.get("img_size"), int):
            values["img_size"] = (values["img_size"], values["img_size"])
        return cls(**values).validate()


def _literal(node: ast.AST, where: str) -> Any:
    """Evaluate a constant expression node: numbers, strings, tuples, lists, +/- numbers, inf, bools."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: unary sign on a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(elt, where) for elt in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    raise InputError(
        f"{where}: unsupported expression {ast.dump(node)[:80]!r}; only literals (numbers, strings, "
        "tuples, lists, inf, True/False/None) are accepted"
    )


def parse_model_string(text: str, *, where: str = "checkpoint args.model") -> dict[str, Any]:
    """Parse ``AsymmetricCroCo3DStereo(key=value, ...)`` into a keyword dict without executing it.

    Args:
        text: the constructor string stored in ``ckpt['args'].model`` (whitespace runs allowed).
        where: prefix for error messages.

    Returns:
        dict of keyword arguments with Python values (tuples stay tuples, ``inf`` is ``math.inf``).

    Raises:
        InputError: not a single call of an accepted class with keyword-only literal arguments.
    """
    try:
        tree = ast.parse(" ".join(str(text).split()), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"{where}: cannot parse model string {text[:80]!r}: {exc.msg}") from exc
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise InputError(f"{where}: expected 'AsymmetricCroCo3DStereo(...)', got {text[:80]!r}")
    if call.func.id not in MODEL_CLASS_NAMES:
        raise InputError(
            f"{where}: model class {call.func.id!r} is not supported; expected one of {sorted(MODEL_CLASS_NAMES)}"
        )
    if call.args:
        raise InputError(f"{where}: positional arguments are not supported in {text[:80]!r}")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise InputError(f"{where}: '**' expansion is not supported in the model string")
        out[kw.arg] = _literal(kw.value, f"{where} ({kw.arg}=)")
    return out


def config_from_model_string(text: str, *, where: str = "checkpoint args.model") -> NetworkConfig:
    """Model string -> :class:`NetworkConfig` (as written; call ``for_inference()`` for load_model's rewrite)."""
    kwargs = parse_model_string(text, where=where)
    return NetworkConfig.from_kwargs(kwargs, where=where)


__all__ = [
    "NetworkConfig", "parse_model_string", "config_from_model_string", "MODEL_CLASS_NAMES",
]
