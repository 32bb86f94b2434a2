"""Pure-PyTorch SEA-RAFT (spring-M), the optical-flow network MonST3R uses.

Public API: :class:`SeaRaft` (the network), :class:`SeaRaftOutput`, :class:`SeaRaftConfig`,
:func:`load_searaft` (safe, strict checkpoint loading), :func:`read_state_dict`. The ``sea_raft``
stage lives in :mod:`.stage`. Attributes are imported lazily so that registering the stage does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CHECKPOINT_ENV": "checkpoint", "SPRING_M_FILENAME": "checkpoint", "CheckpointError": "checkpoint",
    "load_searaft": "checkpoint", "read_state_dict": "checkpoint",
    "SeaRaftConfig": "config", "SeaRaft": "model", "SeaRaftOutput": "model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
