"""The 4D viewer: a viser server showing one run (or a folder of runs, with a run selector).

What is drawn (OpenCV world axes, so "up" is -y):

* ``/current/dynamic``: the current frame's dynamic points (per the run's masks);
* ``/background``: the static points of every ``temporal stride``-th frame, accumulated;
* ``/all_frames``: in "all frames" mode, every ``temporal stride``-th frame's points (static and dynamic);
* ``/cameras/f{i}``: one frustum per frame with a thumbnail, coloured by time (viridis), the current
  one drawn thicker; ``/trajectory``: the camera centres joined in time order.

Memory stays flat in the number of frames: points are read one frame chunk at a time from the
store and the accumulated clouds keep at most ``max_points`` points (an even share per frame);
only the thumbnails (at most 96 px a side) are kept for every frame.

``RunViewer`` can be driven from Python (tests set its GUI handles' values and read
:meth:`RunViewer.shown_counts`); ``serve`` is what ``monst3r-fw view`` calls.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from monst3r_framework.errors import InputError, StoreError

from .run_data import RunData, find_runs

DEFAULT_PORT = 8080
MODES = ("all", "static", "dynamic")
CONF_MODES = ("percentile", "absolute")


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, port: Optional[int]) -> int:
    """The port to serve on: ``port`` when given (one-line error when it is taken), else
    :data:`DEFAULT_PORT` or, when that is taken, a free one chosen by the OS."""
    if port is not None:
        if not port_free(host, port):
            raise InputError(f"port {port} on {host} is in use; pass another --port, or omit --port to get a free one")
        return port
    if port_free(host, DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def time_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 viridis colours from the first frame (purple) to the last (yellow)."""
    import cv2

    ramp = np.linspace(0, 255, max(n, 1)).round().astype(np.uint8).reshape(-1, 1)
    return cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS)[:, 0, ::-1].copy()[:n]


class RunViewer:
    """A viser server showing runs found at or below ``path``.

    Args:
        path: a run folder (holds run.json) or a folder holding several.
        host, port: where to serve (port 0: any free port).
        save_dir: where "record" and "snapshot" write (default: ``RUN_DIR/viewer``).
        max_points: cap of each accumulated cloud (background / all frames).
    """

    def __init__(self, path: Path, *, host: str = "127.0.0.1", port: int = 0, save_dir: Optional[Path] = None,
                 max_points: int = 600_000, verbose: bool = False) -> None:
        import viser

        self.runs = find_runs(Path(path))
        if not self.runs:
            RunData(Path(path))  # raises the one-line "not a run folder" error
            raise StoreError(f"{path}: no run folders found")
        self.root = Path(path)
        self.max_points = int(max_points)
        self._save_dir = save_dir
        self._lock = threading.RLock()
        self._loading = True
        self._stop = threading.Event()
        self._bg_thread: Optional[threading.Thread] = None
        self._bg_generation = 0
        self.first_frame_seconds: Optional[float] = None
        self.shown: dict[str, int] = {"dynamic": 0, "static": 0, "current_static": 0, "all_frames": 0, "frustums": 0}
        start = time.perf_counter()
        self.data = RunData(self.runs[0])
        self.server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self.server.scene.set_up_direction("-y")
        self._build_gui()
        self._load_run(self.data, start)
        self._player = threading.Thread(target=self._play_loop, daemon=True, name="viewer-player")
        self._player.start()

    # ------------------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        host = self.server.get_host()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.server.get_port()}"

    @property
    def save_dir(self) -> Path:
        return Path(self._save_dir) if self._save_dir is not None else self.data.run_dir / "viewer"

    # ------------------------------------------------------------------------------ GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.gui_label = gui.add_markdown("")
        names = [str(p.relative_to(self.root)) if p != self.root else p.name for p in self.runs]
        self.gui_run = gui.add_dropdown("run", names, initial_value=names[0], visible=len(names) > 1)
        with gui.add_folder("timeline"):
            self.gui_frame = gui.add_slider("frame", min=0, max=1, step=1, initial_value=0)
            self.gui_play = gui.add_checkbox("play", False)
            self.gui_fps = gui.add_slider("FPS", min=1, max=60, step=1, initial_value=10)
            self.gui_prev = gui.add_button("step back")
            self.gui_next = gui.add_button("step forward")
            self.gui_all = gui.add_checkbox("all frames", False, hint="Show every stride-th frame's points at once.")
        with gui.add_folder("points"):
            self.gui_mode = gui.add_dropdown("show", MODES, initial_value="all",
                                             hint="static: accumulated background; dynamic: current frame's moving points")
            self.gui_conf_mode = gui.add_dropdown("confidence as", CONF_MODES, initial_value="percentile")
            self.gui_conf = gui.add_number("confidence threshold", 0.0, min=0.0, step=0.01,
                                           hint="percentile (0-100) of the run's confidences, or an absolute value")
            self.gui_tstride = gui.add_slider("temporal stride", min=1, max=30, step=1, initial_value=1)
            self.gui_sstride = gui.add_slider("spatial stride", min=1, max=16, step=1, initial_value=2)
            self.gui_psize = gui.add_number("point size", 0.01, min=0.0, step=0.001)
        with gui.add_folder("cameras"):
            self.gui_frustums = gui.add_checkbox("frustums", True)
            self.gui_fsize = gui.add_number("frustum size", 0.05, min=0.0, step=0.005)
        with gui.add_folder("save"):
            self.gui_record = gui.add_button("record .viser", hint="Play every frame into a .viser scene file")
            self.gui_snapshot = gui.add_button("snapshot PNG", hint="Save the current view as a PNG")
            self.gui_saved = gui.add_markdown("")

        def quiet(fn: Callable[[Any], None]) -> Callable[[Any], None]:
            # Loading a run sets GUI values from Python, which fires these callbacks; skip them then.
            return lambda event: None if self._loading else fn(event)

        self.gui_frame.on_update(quiet(lambda _: self.show_frame()))
        self.gui_prev.on_click(quiet(lambda _: self.step(-1)))
        self.gui_next.on_click(quiet(lambda _: self.step(1)))
        for handle in (self.gui_mode, self.gui_conf_mode, self.gui_conf, self.gui_tstride, self.gui_sstride,
                       self.gui_all, self.gui_psize):
            handle.on_update(quiet(lambda _: self.refresh()))
        self.gui_frustums.on_update(quiet(lambda _: self._draw_cameras()))
        self.gui_fsize.on_update(quiet(lambda _: self._draw_cameras()))
        self.gui_run.on_update(quiet(lambda _: self._switch_run()))
        self.gui_record.on_click(quiet(lambda _: self.record()))
        self.gui_snapshot.on_click(quiet(lambda event: self.snapshot(event.client)))

    def _switch_run(self) -> None:
        names = list(self.gui_run.options)
        run_dir = self.runs[names.index(self.gui_run.value)]
        if run_dir == self.data.run_dir:
            return
        try:
            data = RunData(run_dir)
        except StoreError as exc:
            self.gui_label.content = f"**cannot open {run_dir.name}:** {exc}"
            return
        self._load_run(data, time.perf_counter())

    # ------------------------------------------------------------------------------ loading
    def _load_run(self, data: RunData, start: float) -> None:
        with self._lock:
            self._bg_generation += 1  # a running accumulation of the previous run stops
            self._loading = True
            try:
                self.data = data
                self.server.scene.reset()
                self.server.scene.set_up_direction("-y")
                self._cache: dict[int, dict[str, np.ndarray]] = {}
                self._cache_key: Any = None
                self._conf_sample_cache: Optional[np.ndarray] = None
                self.thumbs: Optional[np.ndarray] = None  # read by the background thread
                self._thumbs_drawn = False
                self.colours = time_colours(data.n_frames)
                scale = data.scene_scale()
                self.gui_psize.value = round(scale * 0.004, 5)
                self.gui_psize.step = max(scale * 0.0005, 1e-6)
                self.gui_fsize.value = round(scale * 0.03, 5)
                self.gui_fsize.step = max(scale * 0.005, 1e-6)
                self.gui_frame.max = max(data.n_frames - 1, 1)
                self.gui_frame.value = 0
                self.gui_label.content = f"**shown:** {data.label}"
                self._place_initial_camera(scale)
                self._draw_cameras(images=False)
                self.show_frame()
                self.first_frame_seconds = time.perf_counter() - start
            finally:
                self._loading = False
        self._start_accumulate()

    def _place_initial_camera(self, scale: float) -> None:
        """Browsers open behind and above the first posed camera, looking at the middle of the
        trajectory at the scene's median depth, so points and frustums are in view."""
        data = self.data
        posed = np.flatnonzero(data.has_pose)
        if not len(posed):
            return
        c2w = data.world_from_cam[posed[0]]
        forward, down = c2w[:3, 2], c2w[:3, 1]
        centres = data.world_from_cam[posed][:, :3, 3]
        target = centres.mean(axis=0) + forward * scale
        cam = self.server.initial_camera
        cam.position = tuple(centres.mean(axis=0) - forward * 0.3 * scale - down * 0.2 * scale)
        cam.look_at = tuple(target)
        cam.up = tuple(-down)

    # ------------------------------------------------------------------------------ thresholds
    def _conf_sample(self) -> np.ndarray:
        """Confidences of a few frames, read on first use (percentile thresholds only)."""
        if self._conf_sample_cache is None:
            self._conf_sample_cache = self.data.conf_sample()
        return self._conf_sample_cache

    def conf_threshold(self) -> float:
        """The absolute confidence threshold the GUI asks for."""
        value = float(self.gui_conf.value)
        if self.gui_conf_mode.value == "percentile":
            return float(np.percentile(self._conf_sample(), min(max(value, 0.0), 100.0))) if value > 0 else -np.inf
        return value

    def frame_selection(self, i: int) -> Optional[dict[str, np.ndarray]]:
        """Frame ``i``'s points at the GUI's spatial stride and confidence threshold."""
        fp = self.data.frame_points(i, int(self.gui_sstride.value))
        if fp is None:
            return None
        keep = fp["conf"] >= self.conf_threshold()
        return {k: v[keep] for k, v in fp.items()}

    # ------------------------------------------------------------------------------ drawing
    def _cloud(self, name: str, xyz: np.ndarray, rgb: np.ndarray, visible: bool) -> int:
        if len(xyz) == 0:
            xyz, rgb, visible = np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8), False
        self.server.scene.add_point_cloud(name, points=np.ascontiguousarray(xyz, np.float32),
                                          colors=np.ascontiguousarray(rgb, np.uint8),
                                          point_size=float(self.gui_psize.value), visible=visible,
                                          precision="float32")
        return int(len(xyz)) if visible else 0

    def show_frame(self) -> None:
        """Draw the current frame's dynamic points and highlight its camera."""
        with self._lock:
            i = int(self.gui_frame.value)
            sel = self.frame_selection(i)
            mode = self.gui_mode.value
            all_frames = bool(self.gui_all.value)
            if sel is None:
                sel = {"xyz": np.zeros((0, 3), np.float32), "rgb": np.zeros((0, 3), np.uint8),
                       "dynamic": np.zeros(0, bool)}
            dyn = sel["dynamic"]
            self.shown["dynamic"] = self._cloud("/current/dynamic", sel["xyz"][dyn], sel["rgb"][dyn],
                                                mode in ("all", "dynamic") and not all_frames)
            # The current frame's static points, so a frame outside the temporal stride is complete too.
            self.shown["current_static"] = self._cloud("/current/static", sel["xyz"][~dyn], sel["rgb"][~dyn],
                                                       mode in ("all", "static") and not all_frames)
            self._highlight(i)

    def _highlight(self, i: int) -> None:
        if not self.gui_frustums.value or not self.data.has_pose[i]:
            self.server.scene.remove_by_name("/current/camera")
            return
        self._frustum("/current/camera", i, thick=True)

    def _frustum(self, name: str, i: int, thick: bool = False, image: bool = True) -> None:
        from viser import transforms as vtf

        data = self.data
        h, w = data.size_hw
        k, c2w = data.intrinsics[i], data.world_from_cam[i]
        fov = 2 * np.arctan2(h / 2, k[1, 1])
        colour = (255, 40, 40) if thick else tuple(int(c) for c in self.colours[i])
        self.server.scene.add_camera_frustum(
            name, fov=float(fov), aspect=w / h, scale=float(self.gui_fsize.value) * (1.15 if thick else 1.0),
            thickness=3.0 if thick else 1.5, thickness_units="screen", color=colour, image=self.thumbs[i] if image and not thick and self.thumbs is not None else None,
            wxyz=vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, position=c2w[:3, 3])

    def _draw_cameras(self, images: bool = True) -> None:
        """Frustums (with thumbnails unless ``images`` is False: the first draw of a run leaves
        encoding them to the background thread) and the trajectory polyline."""
        with self._lock:
            self._thumbs_drawn = images and self.thumbs is not None
            data = self.data
            self.server.scene.remove_by_name("/cameras")
            self.server.scene.remove_by_name("/trajectory")
            n = 0
            if self.gui_frustums.value:
                for i in np.flatnonzero(data.has_pose):
                    self._frustum(f"/cameras/f{int(i):05d}", int(i), image=images)
                    n += 1
            self.shown["frustums"] = n
            centres = data.world_from_cam[data.has_pose][:, :3, 3]
            if len(centres) >= 2:
                seg = np.stack([centres[:-1], centres[1:]], axis=1).astype(np.float32)
                cols = self.colours[np.flatnonzero(data.has_pose)]
                seg_cols = np.stack([cols[:-1], cols[1:]], axis=1)
                self.server.scene.add_line_segments("/trajectory", seg, seg_cols,
                                                    thickness=2.0, thickness_units="screen")
            self._highlight(int(self.gui_frame.value))

    def refresh(self) -> None:
        """Redraw after a setting changed (thresholds, strides, mode)."""
        self.show_frame()
        self._start_accumulate()

    # ------------------------------------------------------------------------------ accumulation
    def _start_accumulate(self) -> None:
        with self._lock:
            self._bg_generation += 1
            generation = self._bg_generation
        thread = threading.Thread(target=self._accumulate, args=(generation,), daemon=True, name="viewer-accumulate")
        self._bg_thread = thread
        thread.start()

    def _accumulate(self, generation: int) -> None:
        """Build the static background and the all-frames cloud from every stride-th frame."""
        data = self.data
        if not self._thumbs_drawn:
            thumbs = data.thumbnails()
            with self._lock:
                if data is not self.data:
                    return
                self.thumbs = thumbs
                self._draw_cameras(images=True)
        tstride, sstride = int(self.gui_tstride.value), int(self.gui_sstride.value)
        frames = list(range(0, data.n_frames, tstride))
        share = max(1, self.max_points // max(len(frames), 1))
        key = (id(data), sstride, share)
        if self._cache_key != key:
            self._cache, self._cache_key = {}, key
        rng = np.random.default_rng(0)
        for i in frames:
            if generation != self._bg_generation or self._stop.is_set():
                return
            if i in self._cache:
                continue
            fp = data.frame_points(i, sstride)
            if fp is None:
                continue
            if len(fp["xyz"]) > share:  # an even share of the budget per frame keeps memory flat
                pick = np.sort(rng.choice(len(fp["xyz"]), share, replace=False))
                fp = {k: v[pick] for k, v in fp.items()}
            self._cache[i] = fp
        with self._lock:
            if generation != self._bg_generation:
                return
            thr = self.conf_threshold()
            parts = [self._cache[i] for i in frames if i in self._cache]
            cat = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0,) + ((3,) if k in ("xyz", "rgb") else ()))
                   for k in ("xyz", "rgb", "conf", "dynamic")}
            keep = cat["conf"] >= thr
            dyn = cat["dynamic"].astype(bool)
            mode, all_frames = self.gui_mode.value, bool(self.gui_all.value)
            static = keep & ~dyn
            self.shown["static"] = self._cloud("/background", cat["xyz"][static], cat["rgb"][static],
                                               mode in ("all", "static") and not all_frames)
            sel = keep & {"all": True, "static": ~dyn, "dynamic": dyn}[mode]
            self.shown["all_frames"] = self._cloud("/all_frames", cat["xyz"][sel], cat["rgb"][sel], all_frames)
            self._accumulated = generation

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until the accumulated clouds reflect the latest settings (tests, benchmarks)."""
        thread = self._bg_thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------------------ timeline
    def step(self, delta: int) -> None:
        n = self.data.n_frames
        self.gui_frame.value = (int(self.gui_frame.value) + delta) % n

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            if self.gui_play.value and not self.gui_all.value:
                self.step(1)
            self._stop.wait(1.0 / max(float(self.gui_fps.value), 1.0))

    # ------------------------------------------------------------------------------ saving
    def record(self, path: Optional[Path] = None) -> Path:
        """Play every frame once into a ``.viser`` scene file (at the GUI's FPS); returns its path."""
        serializer = self.server.get_scene_serializer()
        fps = max(float(self.gui_fps.value), 1.0)
        start = int(self.gui_frame.value)
        for i in range(self.data.n_frames):
            self.gui_frame.value = i
            self.show_frame()
            serializer.insert_sleep(1.0 / fps)
        self.gui_frame.value = start
        out = Path(path) if path is not None else self.save_dir / f"{self.data.run_dir.name}-{_stamp()}.viser"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(serializer.serialize())
        self.gui_saved.content = f"saved `{out}`"
        return out

    def snapshot(self, client: Any, path: Optional[Path] = None, size_hw: tuple[int, int] = (720, 1280)) -> Path:
        """Render the client's current view to a PNG; returns its path."""
        from PIL import Image

        image = client.get_render(height=size_hw[0], width=size_hw[1], transport_format="png")
        out = Path(path) if path is not None else self.save_dir / f"{self.data.run_dir.name}-{_stamp()}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)[..., :3]).save(out)
        self.gui_saved.content = f"saved `{out}`"
        return out

    # ------------------------------------------------------------------------------ lifetime
    def shown_counts(self) -> dict[str, int]:
        """Points and frustums currently visible, by cloud."""
        return dict(self.shown)

    def stop(self) -> None:
        """Stop the player and the accumulation (they check between frames), then the server."""
        self._stop.set()
        for thread in (self._bg_thread, self._player):
            if thread is not None and thread is not threading.current_thread():
                thread.join(30)
        self.server.stop()


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def serve(path: Path, *, host: str = "127.0.0.1", port: Optional[int] = None, save_dir: Optional[Path] = None,
          max_points: int = 600_000, echo: Callable[[str], None] = print) -> None:
    """Open the viewer, print its URL and serve until Ctrl-C."""
    chosen = pick_port(host, port)
    if port is None and chosen != DEFAULT_PORT:
        echo(f"port {DEFAULT_PORT} is in use; serving on {chosen}")
    viewer = RunViewer(path, host=host, port=chosen, save_dir=save_dir, max_points=max_points)
    echo(f"{viewer.data.label}")
    echo(f"viewer: {viewer.url}  (first frame in {viewer.first_frame_seconds:.2f} s; Ctrl-C stops)")
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        echo("viewer stopped")
    finally:
        viewer.stop()
