"""Stores on object storage for real: a moto S3 server on 127.0.0.1, s3fs, Zarr."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from batch_testing import OVERRIDES, RECIPE

from monst3r_framework.batch import BatchSettings, read_manifest, run_batch
from monst3r_fw_eval.cli_eval import EVALUATOR
from monst3r_framework.errors import StoreError
from monst3r_framework.store import RunStore


def test_batch_on_s3_then_reuse_then_second_writer_refused(videos, tmp_path, s3_server):
    fs = s3_server
    items = [it for it in read_manifest(videos) if it.id == "scene0"]
    settings = BatchSettings(recipe=RECIPE, out="s3://batch/out", overrides=tuple(OVERRIDES),
                             evaluator=EVALUATOR, staging=str(tmp_path / "machine1"))
    first = run_batch(items, settings, show_progress=False)
    assert [r["status"] for r in first.rows] == ["complete"], first.rows
    for row in first.rows:
        assert row["metrics"]["ate_percent_of_path"] < 40
        assert not any(s["cached"] for s in row["stages"])
        base = f"batch/out/{row['id']}"
        assert fs.exists(f"{base}/store.zarr/zarr.json") and fs.exists(f"{base}/run.json")
        assert fs.exists(f"{base}/tum/.monst3r_fw_export.json") and fs.exists(f"{base}/metrics.json")
        assert not fs.exists(f"{base}/store.zarr/.monst3r_fw.lock")  # released
    assert fs.exists("batch/out/batch.json")

    # A second batch, as from another machine (empty local staging): every stage and export reused.
    second = run_batch(items, dataclasses.replace(settings, staging=str(tmp_path / "machine2")), show_progress=False)
    for before, row in zip(first.rows, second.rows):
        assert row["status"] == "complete" and row["computed"] == [], row["computed"]
        assert row["metrics"]["ate"] == pytest.approx(before["metrics"]["ate"], rel=1e-12)

    # Two writers on one store: the second is refused, naming the first; a batch video is failed.
    url = "s3://batch/out/scene0/store.zarr"
    with RunStore(url) as holder:
        assert holder._object_lock is not None and fs.exists("batch/out/scene0/store.zarr/.monst3r_fw.lock")
        with pytest.raises(StoreError, match="in use by another writer"):
            RunStore(url)
        blocked = run_batch(items[:1], settings, show_progress=False)
        assert blocked.rows[0]["status"] == "failed" and "in use by another writer" in blocked.rows[0]["error"]
    RunStore(url).close()  # free again once the holder closed


def test_lock_race_stale_takeover_and_heartbeat(s3_server):
    from monst3r_framework.locks import ObjectLock

    url = "s3://batch/locks/race.lock"
    winners: list[ObjectLock] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(4)

    def contend() -> None:
        lock = ObjectLock(url, stale_s=30)
        barrier.wait()
        try:
            winners.append(lock.acquire())
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(errors) == 3
    winners[0].release()
    assert not s3_server.exists("batch/locks/race.lock")

    # A live owner keeps its lock fresh: a waiter with the same staleness is still refused.
    live = ObjectLock(url, stale_s=2, heartbeat_s=0.3).acquire()
    with pytest.raises(StoreError, match="in use"):
        ObjectLock(url, stale_s=2).acquire(wait_s=3.5, poll_s=0.3)
    assert live._beats >= 5 and not live.lost

    # Its process dies (no more heartbeats, no release): after stale_s one waiter takes over ...
    live._stop.set()
    live._thread.join()
    start = time.monotonic()
    heir = ObjectLock(url, stale_s=2).acquire(wait_s=10, poll_s=0.2)
    assert 1.0 < time.monotonic() - start < 8
    # ... and the old owner, were it only paused, finds out at its next heartbeat.
    assert live._replace(live._etag, live.token) is False
    heir.release()
