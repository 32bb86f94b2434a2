"""The harness itself can fail: a change to a user file, a second stderr line, exit 0 are all caught."""

from __future__ import annotations

import os

import pytest

from reliability_harness import CliResult, assert_unchanged, bad_situation, snapshot


def test_snapshot_catches_a_changed_a_lost_and_a_non_utf8_file(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"\0\1")
    weird = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    with open(weird, "wb") as fh:
        fh.write(b"latin-1 name")
    before = snapshot(tmp_path)
    assert len(before) == 3
    (tmp_path / "new.txt").write_text("new files are fine")
    assert_unchanged(before)
    with open(weird, "wb") as fh:
        fh.write(b"changed")
    with pytest.raises(AssertionError, match="changed"):
        assert_unchanged(before)
    os.unlink(weird)
    with pytest.raises(AssertionError, match="lost"):
        assert_unchanged(before)


@pytest.mark.parametrize("result, problem", [
    (CliResult(["x"], 0, "", ""), "succeeded"),
    (CliResult(["x"], 1, "", "error: bad input; fix it\n"), "expected exit 2"),
    (CliResult(["x"], 2, "", "error: bad input; fix it\nmore\n"), "last line should start"),
    (CliResult(["x"], 2, "", "error: one; fix it\nerror: two; fix it\n"), "exactly one line"),
    (CliResult(["x"], 2, "", "Traceback (most recent call last):\n"), "traceback"),
    (CliResult(["x"], 2, "", "internal error: KeyError: 'x'\n"), "internal error"),
    (CliResult(["x"], 2, "", "error: something\n"), "missing from the message"),
])
def test_clean_failure_check_rejects(result, problem):
    with pytest.raises(AssertionError, match=problem):
        result.assert_user_error("fix")


def test_bad_situation_end_to_end_missing_input(tmp_path, toy_recipe):
    """A real subprocess: missing input -> one line, exit 2, the existing --out content untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    line = bad_situation("run", toy_recipe, tmp_path / "nope.mp4", "--out", out,
                         needles=["nope.mp4", "does not exist"], keep=[out])
    assert line.startswith("error: input")
