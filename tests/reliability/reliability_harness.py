"""Shared helpers for the bad-situation suite: run the real CLI in a subprocess and check the promise.

The promise every bad situation must keep (issue 13, ``docs/reliability.md``):

* exactly one line on stderr starting ``error:``, the last one, naming the problem and the fix
  (progress and stage log lines of the work done before the failure may precede it);
* a non-zero exit status (2 for user errors, 130 / 143 for Ctrl-C / SIGTERM);
* no traceback anywhere in the output;
* nothing of the user's lost: every file under the input and ``--out`` that existed before the
  command is still there, byte for byte.

Usage (see ``test_inputs.py``)::

    before = snapshot(video, out)
    result = run_cli("run", TOY_RECIPE, video, "--out", out)
    result.assert_user_error("16-bit", "MONST3R_FW_MAX_IMAGE_PIXELS")
    assert_unchanged(before)

Commands run ``monst3r-fw`` from the current interpreter's environment with ``tests/core`` on
``PYTHONPATH`` so the test-only ``toy`` stages (``tests/core/toy.yaml``) are importable.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_DIR = REPO_ROOT / "tests" / "core"
#: Tiny deterministic recipe (every stage kind, no weights); its stages live in tests/core/toy_plugin.py.
TOY_RECIPE = TOY_DIR / "toy.yaml"

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def _cli_prefix() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m monst3r_framework.cli``."""
    script = Path(sys.executable).with_name("monst3r-fw")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "monst3r_framework.cli"]


def cli_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for a CLI subprocess: the toy plugin importable, no colour, one thread per library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TOY_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    env["COLUMNS"] = "200"
    for name in ("MONST3R_CHECKPOINT", "SEARAFT_CHECKPOINT", "DUST3R_CHECKPOINT", "TOY_DELAY", "TOY_CALLS_FILE"):
        env.pop(name, None)
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    """Exit status and output of one CLI subprocess."""

    argv: list[Union[str, bytes]]
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return f"argv={self.argv!r}\nexit={self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def assert_clean_failure(self, *needles: str, code: Optional[int] = 2, prefix: str = "error:") -> str:
        """Exactly one stderr line (starting ``prefix``) containing every needle, exit ``code``
        (any non-zero when None), no traceback. Returns the line."""
        text = self.describe()
        assert self.code != 0, f"expected a failure, the command succeeded\n{text}"
        if code is not None:
            assert self.code == code, f"expected exit {code}\n{text}"
        for stream in (self.stdout, self.stderr):
            assert "Traceback" not in stream, f"traceback in the output\n{text}"
            assert "internal error" not in stream, f"an internal error, not a user error\n{text}"
        lines = self.stderr_lines
        assert lines, f"expected one line on stderr, got none\n{text}"
        # Progress and per-stage log lines of the work done before the failure may precede it;
        # the error itself is exactly one line, the last one.
        line = lines[-1]
        if prefix:
            assert line.startswith(prefix), f"the last line should start with {prefix!r}\n{text}"
            n = sum(1 for other in lines if other.startswith(prefix))
            assert n == 1, f"expected exactly one line on stderr starting {prefix!r}, got {n}\n{text}"
        else:
            assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}\n{text}"
        for needle in needles:
            assert needle in line, f"{needle!r} missing from the message\n{text}"
        return line

    def assert_user_error(self, *needles: str) -> str:
        """A user error: one ``error:`` line with every needle, exit 2, no traceback."""
        return self.assert_clean_failure(*needles, code=2)

    def assert_ok(self) -> None:
        assert self.code == 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()


def _arg(value: PathArg) -> Union[str, bytes]:
    if isinstance(value, (str, bytes)):
        return value
    return os.fspath(value)


def run_cli(*args: PathArg, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None,
            timeout: float = 120, stdin: Optional[str] = None) -> CliResult:
    """Run ``monst3r-fw ARGS`` in a subprocess and wait for it (``bytes`` arguments pass through
    untouched, so non-UTF-8 paths reach the program exactly as a shell would hand them over)."""
    argv = _cli_prefix() + [_arg(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, env=cli_env(env), cwd=cwd, timeout=timeout,
                          input=stdin.encode() if stdin is not None else None)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise AssertionError(f"the CLI died from {name} (exit {proc.returncode})\n"
                             + proc.stderr.decode("utf-8", "replace")[-4000:])
    return CliResult(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                     proc.stderr.decode("utf-8", "replace"))


def start_cli(*args: PathArg, env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None
              ) -> subprocess.Popen:
    """Start ``monst3r-fw ARGS`` without waiting (for signal tests); its own process group, pipes
    for stdout/stderr. Finish with :func:`finish_cli`."""
    argv = _cli_prefix() + [_arg(a) for a in args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(env), cwd=cwd,
                            start_new_session=True)


def finish_cli(proc: subprocess.Popen, timeout: float = 120) -> CliResult:
    """Wait for a process from :func:`start_cli` and collect its result (a death by signal is
    reported as the negative signal number in ``code``)."""
    out, err = proc.communicate(timeout=timeout)
    return CliResult(list(proc.args), proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


# ------------------------------------------------------------------------------- user data snapshot

Snapshot = dict[bytes, tuple[int, str]]


def _walk_files(root: Path) -> list[bytes]:
    root_b = os.fsencode(root)
    if os.path.isfile(root_b):
        return [root_b]
    found = []
    for dirpath, _dirs, files in os.walk(root_b):
        found.extend(os.path.join(dirpath, f) for f in files)
    return found


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(*roots: PathArg) -> Snapshot:
    """Size and sha256 of every file under ``roots`` (files or folders; missing roots are skipped).
    Paths are kept as bytes so names that are not UTF-8 are covered too."""
    out: Snapshot = {}
    for root in roots:
        path = Path(os.fsdecode(root))
        if not os.path.lexists(os.fsencode(path)):
            continue
        for f in _walk_files(path):
            out[f] = (os.path.getsize(f), _digest(f))
    return out


def assert_unchanged(before: Snapshot) -> None:
    """Every file recorded by :func:`snapshot` still exists with the same bytes (new files are allowed)."""
    lost = [os.fsdecode(p) for p in before if not os.path.isfile(p)]
    changed = [os.fsdecode(p) for p, (size, sha) in before.items()
               if os.path.isfile(p) and (os.path.getsize(p) != size or _digest(p) != sha)]
    assert not lost and not changed, f"user files lost: {lost[:10]}; changed: {changed[:10]}"


def bad_situation(*args: PathArg, needles: Sequence[str], keep: Sequence[PathArg] = (), code: Optional[int] = 2,
                  env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> str:
    """The whole promise in one call: run the CLI, expect one clean error line holding every
    needle and exit ``code``, and check that every file under ``keep`` is unchanged. Returns the line."""
    before = snapshot(*keep)
    result = run_cli(*args, env=env, cwd=cwd)
    line = result.assert_clean_failure(*needles, code=code)
    assert_unchanged(before)
    return line


__all__ = [
    "REPO_ROOT", "TOY_DIR", "TOY_RECIPE", "CliResult", "cli_env", "run_cli", "start_cli", "finish_cli",
    "snapshot", "assert_unchanged", "bad_situation",
]
