"""Safe loading of SEA-RAFT checkpoints in the official layout.

The released ``Tartan-C-T-TSKH-spring540x960-M.pth`` is a plain state dict (472 keys, 20 of them
aliases of the projection-shortcut BatchNorms), saved with or without a ``module.`` prefix. It is
read with ``torch.load(weights_only=True)`` only, so no pickled code ever runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import torch

from monst3r_framework.errors import InputError

from ..safe_load import load_weights_only
from .config import SeaRaftConfig
from .model import SeaRaft

#: File name of the checkpoint MonST3R uses.
SPRING_M_FILENAME = "Tartan-C-T-TSKH-spring540x960-M.pth"
#: Environment variable consulted when no checkpoint path is configured.
CHECKPOINT_ENV = "SEARAFT_CHECKPOINT"
WEIGHTS_HINT = (
    f"download {SPRING_M_FILENAME} from the SEA-RAFT release (linked in github.com/princeton-vl/SEA-RAFT's README; "
    "MonST3R's data/download_ckpt.sh puts it in third_party/RAFT/models/) and set the stage's checkpoint: "
    f"or the {CHECKPOINT_ENV} environment variable"
)
_PREFIX = "module."


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or does not match the SEA-RAFT layout."""


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a leading ``module.`` (state dicts saved from DataParallel/DDP wrappers).

    The official loader drops the first 7 characters of any key *containing* "module"; for SEA-RAFT
    checkpoints (no key contains "module" otherwise) both rules give the same keys.
    """
    return {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a plain state dict with ``torch.load(weights_only=True)`` and strip ``module.``.

    Raises:
        CheckpointError: the file is missing, cannot be loaded safely, or is not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"SEA-RAFT checkpoint not found: {path}; {WEIGHTS_HINT}")
    obj = load_weights_only(path, what="SEA-RAFT checkpoint", error=CheckpointError,
                            hint=f"expected a plain state dict such as {SPRING_M_FILENAME}; {WEIGHTS_HINT}")
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        found = type(obj).__name__ + (f" with keys {_names([str(k) for k in obj])}" if isinstance(obj, Mapping) else "")
        raise CheckpointError(
            f"SEA-RAFT checkpoint {path}: expected a plain state dict (name -> tensor), found {found}; "
            f"save model.state_dict() or use {SPRING_M_FILENAME}"
        )
    return strip_module_prefix(obj)


def check_state_dict(model: SeaRaft, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict key and shape check with a readable list of what is missing or unexpected.

    Raises:
        CheckpointError: names the missing keys, the unexpected keys and the shape mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (file vs model: {_names(wrong)})")
        raise CheckpointError(
            f"SEA-RAFT {source} does not match the network (dim={model.cfg.dim}, block_dims={model.cfg.block_dims}): "
            + "; ".join(parts) + f"; expected the official layout of {SPRING_M_FILENAME}"
        )


def load_searaft(
    path: str | os.PathLike,
    config: Optional[SeaRaftConfig] = None,
    device: str | torch.device = "cpu",
) -> SeaRaft:
    """Build SEA-RAFT and load a checkpoint in the official layout (strict).

    Args:
        path: ``.pth`` state dict (bare keys or ``module.``-prefixed). Its name does not matter
            (the official loader picks the model class from a capital "M" in the path; this one
            only builds SEA-RAFT).
        config: architecture; None infers it from the tensor shapes (spring-M for the released file).
        device: where to put the network.
    Returns:
        The network in eval mode with gradients disabled.
    """
    state = read_state_dict(path)
    cfg = config or SeaRaftConfig.from_state_dict(state)
    model = SeaRaft(cfg)
    check_state_dict(model, state, source=f"checkpoint {path}")
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def resolve_checkpoint(configured: Optional[str]) -> Path:
    """The configured path, else ``$SEARAFT_CHECKPOINT``; a clear error when neither is set."""
    value = configured or os.environ.get(CHECKPOINT_ENV)
    if not value:
        raise CheckpointError(f"sea_raft: no checkpoint configured; {WEIGHTS_HINT}")
    return Path(value).expanduser()
