"""Every bad input gives one clear line on stderr, exit code 2, and no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.cli import main
from monst3r_framework.video import write_test_video

HERE = Path(__file__).resolve().parent
TOY = HERE / "toy.yaml"


@pytest.fixture(autouse=True)
def _toy_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv("TOY_DELAY", raising=False)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return int(exc.value.code), err


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    text = " ".join(err.split())
    assert text.startswith("error:"), err
    for needle in needles:
        assert needle in text, (needle, text)


def test_missing_input(tmp_path, capsys):
    code, err = _run(["run", str(TOY), str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "does not exist")


def test_zero_byte_video(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    code, err = _run(["run", str(TOY), str(empty), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "empty")


def test_corrupt_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    code, err = _run(["run", str(TOY), str(bad), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "bad.mp4")


def test_one_frame_video(tmp_path, capsys):
    one = write_test_video(tmp_path / "one.mp4", 1, (64, 96))
    code, err = _run(["run", str(TOY), str(one), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "2")
    assert not (tmp_path / "o" / "toy_export").exists()


def test_unsupported_extension(tmp_path, capsys):
    txt = tmp_path / "clip.txt"
    txt.write_text("hello")
    code, err = _run(["run", str(TOY), str(txt), "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, ".mp4")


def test_unwritable_output_folder(tmp_path, capsys):
    clip = write_test_video(tmp_path / "clip.mp4", 4, (64, 96))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _run(["run", str(TOY), str(clip), "--out", str(blocker / "sub")], capsys)
    _assert_one_line(code, err, "not writable", "--out")


def test_unknown_plugin_type(tmp_path, capsys):
    clip = write_test_video(tmp_path / "clip.mp4", 4, (64, 96))
    code, err = _run(["run", str(TOY), str(clip), "--out", str(tmp_path / "o"),
                      "--set", "stages.pose_solver.type=toy_poze"], capsys)
    _assert_one_line(code, err, "unknown type 'toy_poze'", "toy_pose", "Did you mean 'toy_pose'")


def test_key_typo(tmp_path, capsys):
    code, err = _run(["recipe", "check", str(TOY), "--set", "stages.global_aligner.ofset=1"], capsys)
    _assert_one_line(code, err, "stages.global_aligner", "ofset", "Did you mean 'offset'", str(TOY))


def test_bad_override_syntax(capsys):
    code, err = _run(["recipe", "check", str(TOY), "--set", "stages.global_aligner.offset"], capsys)
    _assert_one_line(code, err, "KEY.PATH=VALUE")


def test_missing_recipe(tmp_path, capsys):
    code, err = _run(["recipe", "check", str(tmp_path / "nope.yaml")], capsys)
    _assert_one_line(code, err, "recipe file not found")
