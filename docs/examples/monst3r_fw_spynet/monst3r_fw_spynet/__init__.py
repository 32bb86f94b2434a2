"""monst3r-fw plugin adding SPyNet optical flow (``type: spynet``); an example of an external plugin."""

from __future__ import annotations

__version__ = "0.1.0"
