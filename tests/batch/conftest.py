"""Fixtures of the batch tests: tiny synthetic videos, a Ray session, an S3 server on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """3 synthetic scenes with ground truth (scene0..2) and a corrupt 'video' (corrupt.mp4)."""
    from monst3r_fw_eval.synth import make_scene

    root = tmp_path_factory.mktemp("videos")
    for seed in range(3):
        make_scene(n_frames=5, size_hw=(48, 64), seed=seed, n_objects=1, supersample=1).save(
            root / f"scene{seed}", video=False)
    (root / "corrupt.mp4").write_bytes(b"this is not an mp4 file" * 64)
    return root


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the session: 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray", reason="Ray not installed: pip install -e '.[dev]' (or monst3r-fw[ray])")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode, its own process) on 127.0.0.1 with a bucket
    ``batch``; s3fs and Zarr reach it through AWS_ENDPOINT_URL."""
    pytest.importorskip("s3fs", reason="s3fs not installed: pip install -e '.[dev]'")
    pytest.importorskip("moto.server", reason="moto[server] not installed: pip install -e '.[dev]'")
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                             "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start on 127.0.0.1:{port}")
                time.sleep(0.2)
        import fsspec
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        fs.mkdir("batch")
        yield fs
    finally:
        server.terminate()
        server.wait(timeout=10)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
