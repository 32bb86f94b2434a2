"""Entry point of the ``monst3r_fw_cli`` group: adds this package's verbs to ``monst3r-fw``.

Import-light: every ``monst3r-fw`` call imports this module, so it holds stdlib, typer and rich only.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``synth``, ``eval``, ``eval-suite``, ``demo`` and ``ablate``, and make this package's
    :func:`~monst3r_fw_eval.batch.evaluate_item` the metrics of ``monst3r-fw batch`` rows with ``gt``
    (the core names no evaluator itself: without this package, batch rows carry no metrics)."""
    from monst3r_framework.batch import set_default_evaluator

    from . import cli_demo, cli_eval

    cli_eval.register(app)
    cli_demo.register(app)
    set_default_evaluator(cli_eval.EVALUATOR)
