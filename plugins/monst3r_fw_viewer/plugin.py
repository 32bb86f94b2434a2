"""Entry point of the viewer plugin (group ``monst3r_fw``, name ``viewer``): the ``report`` exporter."""

from __future__ import annotations

from monst3r_framework.hookspecs import hookimpl
from monst3r_framework.stages import Stage


@hookimpl
def monst3r_fw_stage_classes() -> list[type[Stage]]:
    from .report import ReportExporter

    return [ReportExporter]
