"""Entry point of the reference plugins (group ``monst3r_fw``, name ``reference``).

Each module listed here exposes ``STAGES``: a tuple of the stage classes it provides.
"""

from __future__ import annotations

import importlib

from monst3r_framework.hookspecs import hookimpl
from monst3r_framework.stages import Stage

_STAGE_MODULES: tuple[str, ...] = (
    # one line per module; keep sorted
    "monst3r_fw_reference.aligner",
    "monst3r_fw_reference.export",
    "monst3r_fw_reference.flow",
    "monst3r_fw_reference.mask.flow_static",
    "monst3r_fw_reference.mask.sam2_refine",
    "monst3r_fw_reference.mask.user_masks",
    "monst3r_fw_reference.pair_predictor",
    "monst3r_fw_reference.pose",
    "monst3r_fw_reference.precomputed",
    "monst3r_fw_reference.searaft.stage",
    "monst3r_fw_reference.triangulation",
)


@hookimpl
def monst3r_fw_stage_classes() -> list[type[Stage]]:
    classes: list[type[Stage]] = []
    for module_name in _STAGE_MODULES:
        classes.extend(importlib.import_module(module_name).STAGES)
    return classes
