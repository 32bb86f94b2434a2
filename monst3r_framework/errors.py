"""Error types. The CLI prints ``str(error)`` as one line and exits with code 2."""

from __future__ import annotations


class Monst3rFWError(Exception):
    """Base class: every error meant for the user (one clear line, no traceback)."""


class RecipeError(Monst3rFWError):
    """A recipe file or override is invalid (names the file, the key path, the valid choices)."""


class PluginError(Monst3rFWError):
    """Plugin discovery failed: duplicate providers, import errors, bad hook results."""


class StoreError(Monst3rFWError):
    """The run store cannot be opened, is locked by another run, or is inconsistent."""


class StageError(Monst3rFWError):
    """A stage failed on valid input (names the stage, and the pair or frame when known)."""


class InputError(Monst3rFWError):
    """The input video / image folder / checkpoint is missing, unreadable or unsuitable."""


class ShapeError(StageError):
    """An array crossing a stage boundary has the wrong shape or dtype."""


class InputWarning(UserWarning):
    """The input was usable but not all of it (e.g. a truncated video): the CLI prints one line."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal: Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143).

    A KeyboardInterrupt subclass so every cleanup path that handles Ctrl-C also handles SIGTERM."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = 130) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code


class DiskFullError(Monst3rFWError):
    """Writing failed because the disk (or quota) is full; names the path and the space needed."""
