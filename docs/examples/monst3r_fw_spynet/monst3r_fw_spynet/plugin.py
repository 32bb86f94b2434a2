"""Entry point of the plugin (``[project.entry-points.monst3r_fw] spynet = "monst3r_fw_spynet.plugin"``).

monst3r-fw calls this hook once when it builds its registry; return classes, load no weights here.
"""

from __future__ import annotations

from monst3r_framework.hookspecs import hookimpl
from monst3r_framework.stages import Stage

from .stage import STAGES


@hookimpl
def monst3r_fw_stage_classes() -> list[type[Stage]]:
    return list(STAGES)
