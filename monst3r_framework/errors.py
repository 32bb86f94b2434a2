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
