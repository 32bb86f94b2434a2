"""Screenshots of the viewer in headless Chromium (Debian package ``chromium``): the real-browser
test and the picture in docs/viewer.md are made with this.

``python -m monst3r_fw_viewer.screenshot RUN_DIR OUT.png`` serves the run on a free local port,
lets Chromium load and render it (software WebGL), writes the PNG and stops the server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Flags for a machine without network or GPU: nothing phones home, no sandbox (root in CI), software GL.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                  "--enable-unsafe-swiftshader", "--hide-scrollbars", "--mute-audio")


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _drawn_pixels(png: bytes) -> int:
    """Pixels of the 3D canvas area that differ from its background (median colour)."""
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w, _ = img.shape
    canvas = img[int(0.2 * h):int(0.9 * h), int(0.05 * w):int(0.7 * w)]
    background = np.median(canvas.reshape(-1, 3), axis=0)
    return int((np.abs(canvas - background).sum(axis=-1) > 40).sum())


def screenshot_url(url: str, out: Path, *, size_wh: tuple[int, int] = (1280, 800), settle_s: float = 6.0,
                   timeout_s: float = 90.0) -> Path:
    """Load ``url`` in headless Chromium (fresh profile) and save a PNG of the page once it is drawn.

    Chromium is driven over its DevTools protocol on a local port: captures are taken in real time
    (the page connects to the viewer's websocket and receives the scene, which virtual-time
    screenshots cut short) until two in a row agree and show something besides the background,
    or ``timeout_s`` passes (then the last capture is kept).

    Raises:
        RuntimeError: no Chromium on PATH, or it did not start (with its last stderr lines).
    """
    import base64
    import json
    import time
    import urllib.request

    from websockets.sync.client import connect

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH; install the Debian package `chromium`")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="monst3r-fw-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size_wh[0]},{size_wh[1]}",
               "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout_s
            while not port_file.is_file() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join((proc.stderr.read() if proc.stderr else "").strip().splitlines()[-5:])
                    raise RuntimeError(f"chromium did not start (exit {proc.poll()}): {tail}")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                pages = [t for t in json.loads(resp.read()) if t.get("type") == "page"]
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                ident = 0

                def capture() -> bytes:
                    nonlocal ident
                    ident += 1
                    ws.send(json.dumps({"id": ident, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
                    while True:
                        msg = json.loads(ws.recv(timeout=30))
                        if msg.get("id") == ident:
                            return base64.b64decode(msg["result"]["data"])

                # Software WebGL renders new objects fading in over many slow frames: wait until
                # three captures in a row agree (and something is drawn).
                time.sleep(settle_s)
                previous, same = capture(), 0
                while time.monotonic() < deadline and same < 2:
                    time.sleep(2.0)
                    current = capture()
                    same = same + 1 if current == previous and _drawn_pixels(current) > 0 else 0
                    previous = current
                out.write_bytes(previous)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


def screenshot_run(run_dir: Path, out: Path, **kwargs: object) -> Path:
    """Serve ``run_dir`` in the viewer on a free local port and screenshot it."""
    from .server import RunViewer

    viewer = RunViewer(Path(run_dir), host="127.0.0.1", port=0)
    try:
        viewer.wait_idle()
        return screenshot_url(viewer.url, out, **kwargs)  # type: ignore[arg-type]
    finally:
        viewer.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m monst3r_fw_viewer.screenshot RUN_DIR OUT.png")
    print(screenshot_run(Path(sys.argv[1]), Path(sys.argv[2])))
