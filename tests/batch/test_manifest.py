"""Manifests: folder, glob, JSONL, CSV; per-row overrides; one clear line for bad rows."""

from __future__ import annotations

import json

import pytest
from batch_testing import OVERRIDES, RECIPE

from monst3r_framework.batch import BatchSettings, read_manifest, run_batch
from monst3r_framework.errors import InputError


def test_folder_and_glob(videos):
    items = read_manifest(videos)
    assert [it.id for it in items] == ["corrupt", "scene0", "scene1", "scene2"]
    scene = items[1]
    assert scene.input == str(videos / "scene0" / "frames") and scene.gt == str(videos / "scene0")
    assert items[0].gt is None and items[0].input.endswith("corrupt.mp4")
    assert [it.id for it in read_manifest(str(videos / "scene*"))] == ["scene0", "scene1", "scene2"]


def test_jsonl_and_csv_rows(videos, tmp_path):
    (tmp_path / "m.jsonl").write_text("\n".join([
        json.dumps({"id": "a", "input": str(videos / "scene0" / "frames"), "gt": str(videos / "scene0"),
                    "set": ["input.num_frames=4"]}),
        "# comments and blank lines are skipped", "",
        json.dumps({"input": "rel/clip.mp4"}),
    ]))
    a, b = read_manifest(tmp_path / "m.jsonl")
    assert (a.id, a.overrides, a.dataset) == ("a", ("input.num_frames=4",), "synthetic")
    assert b.id == "clip" and b.input == str(tmp_path / "rel" / "clip.mp4") and b.gt is None
    (tmp_path / "m.csv").write_text("id,input,gt,set\nx,v.mp4,,input.stride=2;input.num_frames=3\n")
    (x,) = read_manifest(tmp_path / "m.csv")
    assert x.overrides == ("input.stride=2", "input.num_frames=3") and x.input == str(tmp_path / "v.mp4")


@pytest.mark.parametrize("lines, message", [
    ([{"id": "a", "input": "x.mp4"}, {"id": "a", "input": "y.mp4"}], "id 'a' is used by both"),
    ([{"id": "a", "input": "x.mp4", "sett": []}], "unknown column(s) sett"),
    ([{"id": "a b", "input": "x.mp4"}], "not a folder-safe name"),
    ([{"id": "a"}], "no 'input'"),
    ([{"input": "x.mp4", "set": ["oops"]}], "key=value"),
])
def test_bad_manifest_rows(tmp_path, lines, message):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in lines))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "nothing")
    with pytest.raises(InputError, match="no videos"):
        read_manifest(tmp_path)


def test_bad_override_fails_that_video_only(videos, tmp_path):
    """Rows failing before any computation: a bad per-row override and a missing file; the batch
    records both errors and goes on."""
    (tmp_path / "m.jsonl").write_text("\n".join([
        json.dumps({"id": "bad_set", "input": str(videos / "scene0" / "frames"), "set": ["stages.pose_solver.type=nope"]}),
        json.dumps({"id": "missing", "input": str(tmp_path / "gone.mp4")}),
    ]))
    report = run_batch(read_manifest(tmp_path / "m.jsonl"),
                       BatchSettings(recipe=RECIPE, out=str(tmp_path / "out"), overrides=tuple(OVERRIDES)),
                       show_progress=False)
    rows = {r["id"]: r for r in report.rows}
    assert rows["bad_set"]["status"] == "failed" and "nope" in rows["bad_set"]["error"]
    assert rows["missing"]["status"] == "failed" and "does not exist" in rows["missing"]["error"]
    assert report.exit_code == 3
    saved = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert saved["counts"]["failed"] == 2 and saved["status"] == "partial"
