"""A damaged store is detected on reuse, named by `store verify`, and recomputed on request to
outputs identical to a clean run (issue 13 part 4), for every stage kind. Toy stages, in process
(the CLI commands in a subprocess)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.errors import StoreError
from monst3r_framework.runner import run_pipeline
from monst3r_framework.store import RunStore
from monst3r_framework.video import write_test_video
from reliability_harness import TOY_DIR, TOY_RECIPE, run_cli

KINDS = ("frames", "flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(TOY_DIR))
    monkeypatch.delenv("TOY_DELAY", raising=False)
    monkeypatch.delenv("TOY_CALLS_FILE", raising=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    """(clip, out) of one clean toy run; tests copy it before damaging anything."""
    import sys

    sys.path.insert(0, str(TOY_DIR))
    root = tmp_path_factory.mktemp("clean")
    clip = write_test_video(root / "clip.mp4", 5, (48, 64), fps=10)
    run_pipeline(TOY_RECIPE, clip, root / "out")
    return clip, root / "out"


def _copy(clean: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(clean[1], out)
    return out


def _group(out: Path, kind: str) -> Path:
    keys = json.loads((out / "run.json").read_text())
    store = RunStore(out / "store.zarr", lock=False)
    key = store.runs()[keys["run_id"]]["keys"][kind]
    return out / "store.zarr" / store.group_path(kind, key)


def _largest_chunk(group: Path) -> Path:
    # chunk files: c.<i>.<j>... (store.CHUNK_KEYS), c/<i>/<j>/... in stores written before
    chunks = [p for p in group.rglob("*") if p.is_file() and p.name != "zarr.json"
              and (p.name.startswith("c.") or "/c/" in p.as_posix())]
    return max(chunks, key=lambda p: (p.stat().st_size, p.as_posix()))


def _stored(out: Path, kind: str) -> dict[str, np.ndarray]:
    from monst3r_framework.stages import STAGE_BASES, FrameSet

    cls = FrameSet if kind == "frames" else STAGE_BASES[kind].output_record
    group = _group(out, kind)
    store = RunStore(out / "store.zarr", lock=False)
    record = store.load(kind, group.name, cls)
    return {name: np.asarray(value) for name, value in record.arrays().items()}


def _one_error(result, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line (after the reuse log lines) holding every needle."""
    assert result.code == 2 and "Traceback" not in result.stderr, result.describe()
    errors = [line for line in result.stderr_lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr_lines[-1], result.describe()
    for needle in needles:
        assert needle in errors[0], result.describe()
    return errors[0]


def _exports(out: Path) -> dict[str, bytes]:
    return {name: (out / "toy_export" / name).read_bytes() for name in ("depth.npy", "poses.npy")}


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_chunk_detected_named_and_recomputed(toy, clean, tmp_path, kind, damage):
    clip, _ = clean
    out = _copy(clean, tmp_path)
    want = _exports(out)
    group = _group(out, kind)
    chunk = _largest_chunk(group)
    array, chunk_rel = chunk.relative_to(group).parts[0], "/".join(chunk.relative_to(group).parts[1:])
    if damage == "delete":
        chunk.unlink()
    else:  # same size, other bytes: only the digest can tell
        chunk.write_bytes(bytes(255 - b for b in chunk.read_bytes()))

    with pytest.raises(StoreError) as err:
        run_pipeline(TOY_RECIPE, clip, out)
    message = str(err.value)
    assert message.startswith(kind) and "damaged" in message and f"--recompute {kind}" in message
    assert f"array {array}: " in message and chunk_rel in message
    assert json.loads((out / "run.json").read_text())["status"] == "failed"

    verify = run_cli("store", "verify", out / "store.zarr")
    assert verify.code == 1, verify.describe()
    bad = [line for line in verify.stdout.splitlines() if "DAMAGED" in line]
    assert len(bad) == 1 and bad[0].startswith(f"{kind}/") and f"array {array}: " in bad[0], verify.stdout

    again = run_pipeline(TOY_RECIPE, clip, out, recompute=(kind,))
    assert [r.kind for r in again.reports if not r.cached][:1] == [kind]
    assert _exports(out) == want  # identical to the clean run
    assert _stored(out, kind) .keys() == _stored(clean[1], kind).keys()
    for name, value in _stored(clean[1], kind).items():
        np.testing.assert_array_equal(_stored(out, kind)[name], value, err_msg=name)
    assert run_cli("store", "verify", out / "store.zarr").code == 0


def test_garbage_group_metadata_and_deleted_array_folder_are_one_clear_line(toy, clean, tmp_path):
    clip, _ = clean
    out = _copy(clean, tmp_path)
    group = _group(out, "pose_solver")
    (group / "zarr.json").write_text("{ not json")
    result = run_cli("run", TOY_RECIPE, clip, "--out", out)
    _one_error(result, "pose_solver", "damaged", "--recompute pose_solver", "store rm")
    verify = run_cli("store", "verify", out / "store.zarr")
    assert verify.code == 1 and "pose_solver/" in verify.stdout and "unreadable" in verify.stdout
    assert run_cli("run", TOY_RECIPE, clip, "--out", out, "--recompute", "pose_solver").code == 0

    shutil.rmtree(_group(out, "mask_builder") / "dynamic")
    result = run_cli("run", TOY_RECIPE, clip, "--out", out)
    _one_error(result, "mask_builder", "dynamic", "missing", "--recompute mask_builder")
    rm = run_cli("store", "rm", out / "store.zarr", "mask_builder")
    assert rm.code == 0 and "removed mask_builder/" in rm.stdout
    assert run_cli("run", TOY_RECIPE, clip, "--out", out).code == 0


def test_unchanged_store_is_not_rehashed_on_reuse(toy, clean, tmp_path, monkeypatch):
    """The reuse check only stats files whose size and mtime are unchanged."""
    import monst3r_framework.store as store_mod

    clip, _ = clean
    out = tmp_path / "out"
    shutil.copytree(clean[1], out, copy_function=shutil.copy2)  # keeps mtimes
    calls = []
    real = store_mod._sha
    monkeypatch.setattr(store_mod, "_sha", lambda p: calls.append(p) or real(p))
    result = run_pipeline(TOY_RECIPE, clip, out)
    assert all(r.cached for r in result.reports)
    assert calls == []
