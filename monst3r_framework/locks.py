"""A single-writer lock for stores on object storage (``s3://`` ..., through fsspec).

A local store is locked with ``flock`` (``RunStore``); object stores have no ``flock``, so the
lock is an object, ``<store>/.monst3r_fw.lock``, that is **created only if absent**:

* S3 (s3fs): ``PutObject`` with ``If-None-Match: *`` (S3 conditional writes; MinIO and moto
  implement them too). Of two writers racing, exactly one create succeeds.
* other fsspec filesystems: ``open(path, "xb")``, exclusive where the driver implements it.

The object holds JSON ``{owner, host, pid, token, created, heartbeat, beats}``. While the lock is
held a daemon thread rewrites it every ``heartbeat_s`` seconds, on S3 with ``If-Match: <ETag of
our last write>`` so a writer whose lock was taken over notices (``lost``) instead of stomping on
the new owner. A lock whose heartbeat is older than ``stale_s`` (its owner died: killed, node lost)
is taken over by the next writer with the same ``If-Match`` on the stale ETag, so of several
writers waiting on a dead owner exactly one wins. Staleness compares the owner's heartbeat time and
the object's LastModified (server clock) with this machine's clock: machines sharing a store need
clocks within a few seconds of each other (NTP), which ``stale_s`` (default 60 s) dwarfs.
"""

from __future__ import annotations

import contextvars
import json
import os
import secrets
import socket
import threading
import time
from typing import Any, Optional

from .errors import StoreError

STALE_S = float(os.environ.get("MONST3R_FW_LOCK_STALE_S", "60"))
HEARTBEAT_S = float(os.environ.get("MONST3R_FW_LOCK_HEARTBEAT_S", "10"))
# How long RunStore waits for a held object lock (0: refuse at once). A batch retry of a video whose
# worker died waits one staleness period, since the dead attempt's lock goes stale rather than away.
LOCK_WAIT_S: contextvars.ContextVar[float] = contextvars.ContextVar("monst3r_fw_lock_wait_s", default=0.0)


class ObjectLock:
    """Create-if-absent lock object with owner and heartbeat, stale after ``stale_s`` seconds.

    ``acquire(wait_s=0)`` raises :class:`StoreError` when another live writer holds the lock (after
    waiting up to ``wait_s`` seconds for it); ``release()`` deletes the object if it is still ours.
    """

    def __init__(self, url: str, *, stale_s: Optional[float] = None, heartbeat_s: Optional[float] = None,
                 owner: str = "") -> None:
        import fsspec

        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.is_s3 = any(p in ("s3", "s3a") for p in protocols)
        self.stale_s = STALE_S if stale_s is None else float(stale_s)
        self.heartbeat_s = min(HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s), self.stale_s / 3)
        self.token = secrets.token_hex(8)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.held = False
        self.lost = False
        self._etag: Optional[str] = None
        self._beats = 0
        self._created = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------------------ content
    def _payload(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "created": self._created, "heartbeat": time.time(), "beats": self._beats}).encode()

    def _read(self) -> tuple[Optional[dict[str, Any]], Optional[str], float]:
        """(content or None, ETag, age in seconds of the last sign of life); (None, None, 0) if absent."""
        try:
            info = self.fs.info(self.path)
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None, 0.0
        try:
            content = json.loads(raw.decode())
        except ValueError:
            content = {}
        modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
        stamps = [float(content.get("heartbeat") or 0)]
        if hasattr(modified, "timestamp"):
            stamps.append(modified.timestamp())
        elif isinstance(modified, (int, float)):
            stamps.append(float(modified))
        return content, info.get("ETag"), time.time() - max(stamps)

    # ------------------------------------------------------------------------------ primitives
    def _create(self) -> bool:
        """Create the lock object if absent; True if this call created it."""
        data = self._payload()
        try:
            if self.is_s3:
                out = self.fs.pipe_file(self.path, data, mode="create")
                self._etag = (out or {}).get("ETag")
            else:
                with self.fs.open(self.path, "xb") as fh:
                    fh.write(data)
        except FileExistsError:
            return False
        return True

    def _replace(self, etag: Optional[str], token: Optional[str]) -> bool:
        """Rewrite the lock object only if it is still the one we saw: on S3 its ETag is still
        ``etag`` (atomic); elsewhere its token is still ``token`` (checked, then written)."""
        data = self._payload()
        if self.is_s3:
            try:
                out = self.fs.pipe_file(self.path, data, IfMatch=etag) if etag else \
                    self.fs.pipe_file(self.path, data, mode="create")
            except (FileExistsError, FileNotFoundError):
                return False
            except OSError as exc:
                if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
                    return False
                raise
            self._etag = (out or {}).get("ETag")
            return True
        content, _, _ = self._read()  # no conditional overwrite on this filesystem: check, then write
        if content is None or content.get("token") != token:
            return False
        self.fs.pipe_file(self.path, data)
        return True

    # ------------------------------------------------------------------------------ public
    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> "ObjectLock":
        deadline = time.monotonic() + max(0.0, wait_s)
        self._created = time.time()
        while True:
            if self._create():
                break
            content, etag, age = self._read()
            if content is None:
                continue  # released between our create and read: try again
            if age > self.stale_s and self._replace(etag, content.get("token")):
                break  # took over a dead owner's lock
            if time.monotonic() >= deadline:
                who = content.get("owner", "unknown")
                raise StoreError(f"store {self.url.rsplit('/', 1)[0]} is in use by another writer ({who}, last heartbeat "
                                 f"{age:.0f} s ago); wait for it to finish or use another --out/--store (a lock "
                                 f"without heartbeat for {self.stale_s:.0f} s is taken over)")
            time.sleep(poll_s)
        self.held, self.lost = True, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="monst3r-fw-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._mutex:
                if not self.held:
                    return
                self._beats += 1
                try:
                    ok = self._replace(self._etag, self.token)
                except Exception:  # a network blip: try again at the next beat, staleness allows several
                    continue
                if not ok:
                    self.lost = True
                    return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._mutex:
            if not self.held:
                return
            self.held = False
            try:
                content, _, _ = self._read()
                if content is not None and content.get("token") == self.token:
                    self.fs.rm_file(self.path)
            except Exception:  # left behind, it goes stale after stale_s; nothing else to do
                pass

    def __enter__(self) -> "ObjectLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
