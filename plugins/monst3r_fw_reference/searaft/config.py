"""Architecture settings of SEA-RAFT (the values of the official JSON config that the model reads).

MonST3R uses the "spring-M" configuration (``congif_spring_M.json`` in its vendored SEA-RAFT):
``dim=128``, ``radius=4``, ``initial_dim=64``, ``block_dims=(64, 128, 256)``, ResNet-34 block
counts, two ConvNeXt refinement blocks. Keys of the JSON file that the network never reads
(learning rate, GPUs, image size, ...) are ignored here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Mapping

import torch

from monst3r_framework.errors import InputError

#: Block counts of the three encoder stages for each ``pretrain`` value.
BLOCK_COUNTS: dict[str, tuple[int, int, int]] = {"resnet34": (3, 4, 6), "resnet18": (2, 2, 2)}


@dataclass(frozen=True)
class SeaRaftConfig:
    """Hyper-parameters that shape the network (defaults = spring-M).

    Attributes:
        dim: D, width of the hidden state and of the context; features have 2D channels.
        radius: r, correlation lookup radius (window (2r+1)^2 per level).
        initial_dim: width of the encoders' 7x7 stem.
        block_dims: widths of the three encoder stages.
        pretrain: "resnet34" (3, 4, 6 blocks) or "resnet18" (2, 2, 2 blocks).
        num_blocks: number of ConvNeXt refinement blocks per update.
        iters: default number of update steps (the JSON's value, 4; MonST3R passes 20 explicitly).
            With 0 the feature encoder and update block are not built.
        corr_levels: number of correlation pyramid levels (the official constructor fixes 4).
        use_var, var_min, var_max: mixture-of-Laplace settings; only the uncertainty/NLL read them.
    """

    dim: int = 128
    radius: int = 4
    initial_dim: int = 64
    block_dims: tuple[int, int, int] = (64, 128, 256)
    pretrain: Literal["resnet34", "resnet18"] = "resnet34"
    num_blocks: int = 2
    iters: int = 4
    corr_levels: int = 4
    use_var: bool = True
    var_min: float = 0.0
    var_max: float = 10.0

    @property
    def block_counts(self) -> tuple[int, int, int]:
        return BLOCK_COUNTS[self.pretrain]

    @property
    def corr_channels(self) -> int:
        """Channels of one lookup: levels * (2r+1)^2 (324 for spring-M)."""
        return self.corr_levels * (2 * self.radius + 1) ** 2

    @classmethod
    def spring_m(cls) -> "SeaRaftConfig":
        """The configuration of ``Tartan-C-T-TSKH-spring540x960-M.pth``."""
        return cls()

    @classmethod
    def from_json(cls, path: str | Path) -> "SeaRaftConfig":
        """Read an official SEA-RAFT config file (e.g. ``congif_spring_M.json``)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"SEA-RAFT config {path}: cannot read JSON ({exc}); pass an official SEA-RAFT config file") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping, source: str = "config") -> "SeaRaftConfig":
        """Build from the official key names; unknown keys are ignored like the official model does."""
        required = ("dim", "radius", "initial_dim", "block_dims", "pretrain", "num_blocks", "iters")
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(f"SEA-RAFT config {source}: missing keys {missing}; expected the official config layout")
        pretrain = str(data["pretrain"])
        if pretrain not in BLOCK_COUNTS:
            raise InputError(f"SEA-RAFT config {source}: pretrain {pretrain!r} unsupported; use one of {sorted(BLOCK_COUNTS)}")
        return cls(
            dim=int(data["dim"]), radius=int(data["radius"]), initial_dim=int(data["initial_dim"]),
            block_dims=tuple(int(v) for v in data["block_dims"]),  # type: ignore[arg-type]
            pretrain=pretrain,  # type: ignore[arg-type]
            num_blocks=int(data["num_blocks"]), iters=int(data["iters"]),
            use_var=bool(data.get("use_var", True)), var_min=float(data.get("var_min", 0.0)),
            var_max=float(data.get("var_max", 10.0)),
        )

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "SeaRaftConfig":
        """Infer the architecture from tensor shapes of a (prefix-stripped) SEA-RAFT state dict.

        Falls back to spring-M when the keys needed are absent, so the strict key check that
        follows reports what is missing. ``use_var``/``var_*`` are not stored in checkpoints and
        keep their spring-M values.
        """
        try:
            dim = int(state["init_conv.weight"].shape[0]) // 2
            initial_dim = int(state["cnet.conv1.weight"].shape[0])
            block_dims = tuple(int(state[f"cnet.layer{i}.0.conv1.weight"].shape[0]) for i in (1, 2, 3))
            counts = tuple(
                1 + max(int(m.group(1)) for k in state if (m := re.match(rf"cnet\.layer{i}\.(\d+)\.", k)))
                for i in (1, 2, 3)
            )
        except (KeyError, ValueError, IndexError):
            return cls.spring_m()
        pretrain = next((name for name, c in BLOCK_COUNTS.items() if c == counts), "resnet34")
        has_update = "update_block.encoder.convc1.weight" in state
        radius, num_blocks = 4, 2
        if has_update:
            corr_channels = int(state["update_block.encoder.convc1.weight"].shape[1])
            k = round((corr_channels / 4) ** 0.5)
            radius = (k - 1) // 2 if 4 * k * k == corr_channels and k % 2 == 1 else 4
            blocks = [int(m.group(1)) for key in state if (m := re.match(r"update_block\.refine\.(\d+)\.", key))]
            num_blocks = 1 + max(blocks) if blocks else 2
        return replace(
            cls.spring_m(), dim=dim, initial_dim=initial_dim, block_dims=block_dims,  # type: ignore[arg-type]
            pretrain=pretrain, radius=radius, num_blocks=num_blocks,  # type: ignore[arg-type]
            iters=4 if has_update else 0,
        )
