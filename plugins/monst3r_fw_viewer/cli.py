"""``monst3r-fw view`` and ``monst3r-fw report`` (entry-point group ``monst3r_fw_cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``view`` and ``report`` verbs to the ``monst3r-fw`` command."""

    @app.command()
    def view(
        run_dir: Annotated[Path, typer.Argument(help="A run's output folder (holds run.json), or a folder of runs.")],
        host: Annotated[str, typer.Option(help="Interface to bind; 127.0.0.1 keeps the viewer on this machine.")] = "127.0.0.1",
        port: Annotated[Optional[int], typer.Option(help="Port (default 8080, or a free one when 8080 is taken).")] = None,
        save_dir: Annotated[Optional[Path], typer.Option(help="Where 'record' and 'snapshot' write. Default: RUN_DIR/viewer.")] = None,
        max_points: Annotated[int, typer.Option(help="Cap of the accumulated point clouds.")] = 600_000,
    ) -> None:
        """Open a run in the 4D viewer (viser) and serve it until Ctrl-C."""
        from .server import serve

        serve(run_dir, host=host, port=port, save_dir=save_dir, max_points=max_points)

    @app.command()
    def report(
        run_dir: Annotated[Path, typer.Argument(help="A run's output folder (holds run.json).")],
        out: Annotated[Optional[Path], typer.Option(help="Output folder. Default: RUN_DIR/report.")] = None,
    ) -> None:
        """(Re)make a run's report: report.html with embedded figures, plus the PNGs."""
        from .report import report_from_run_dir

        path = report_from_run_dir(run_dir, out)
        print(f"report: {path}")
