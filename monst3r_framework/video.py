"""Input reading and preprocessing: a video file or a folder of images -> :class:`FrameSet`.

The resize/crop rules follow the official MonST3R loader (``dust3r/utils/image.py``: ``crop_img``,
``_resize_pil_image``, ``load_images``) so the network sees the same pixels; ``docs/input.md`` writes
the rules down with their sources. On top of the official loader this module adds:

* an exact affine ``network_from_original`` (original pixel centre (x, y) -> network pixel), built
  with the same pixel-centre convention DUSt3R uses to rescale intrinsics;
* streaming decode (one full-resolution frame in memory at a time, sequential ``grab``/``retrieve``
  instead of seeking);
* ``stride`` and ``start_frame``, natural sort of image folders, and one-line
  :class:`~monst3r_framework.errors.InputError` messages for every bad input.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from .errors import InputError, InputWarning
from .stages import FrameSet

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Side length of the official square mode; every other ``long_edge`` uses the long-edge rule.
SQUARE_MODE = 224
#: Frame rate assumed for image folders when none is given: timestamps are then the frame index,
#: as in the official TUM trajectory export.
DEFAULT_FOLDER_FPS = 1.0

#: Environment variable raising (or, at 0, removing) the frame-size limit below.
MAX_PIXELS_ENV = "MONST3R_FW_MAX_IMAGE_PIXELS"
#: Largest frame (width x height) read without asking: Pillow's own decompression-bomb threshold
#: (2 x ``PIL.Image.MAX_IMAGE_PIXELS``), about a 16000 x 11000 image.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# Resize / crop plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResizePlan:
    """Where one original frame goes: resize to ``resized_wh`` then crop ``crop_box``.

    Attributes:
        original_wh: (width, height) of the original frame.
        resized_wh: (width, height) after the resize.
        crop_box: (left, top, right, bottom) in resized pixels; the network frame is
            ``resized[top:bottom, left:right]``.
        downscale: True -> PIL LANCZOS (long side shrinks), False -> PIL BICUBIC.
    """

    original_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    downscale: bool

    @property
    def network_hw(self) -> tuple[int, int]:
        left, top, right, bottom = self.crop_box
        return bottom - top, right - left

    def network_from_original(self) -> np.ndarray:
        """(3, 3) float64 affine mapping original pixel centres (x, y, 1) to network pixels.

        PIL resamples with pixel centres at half-integers of the continuous image, so original
        pixel centre ``x`` lands at ``(x + 0.5) * s - 0.5`` in the resized image (``s`` = resized /
        original size, per axis); the crop then subtracts its top-left corner. This is the map
        DUSt3R's ``camera_matrix_of_crop`` applies to ``cx, cy`` (OpenCV -> COLMAP +0.5, scale,
        back -0.5), so ``K_network = network_from_original @ K_original``.
        """
        sx = self.resized_wh[0] / self.original_wh[0]
        sy = self.resized_wh[1] / self.original_wh[1]
        left, top = self.crop_box[0], self.crop_box[1]
        return np.array([
            [sx, 0.0, 0.5 * sx - 0.5 - left],
            [0.0, sy, 0.5 * sy - 0.5 - top],
            [0.0, 0.0, 1.0],
        ], dtype=np.float64)

    def apply(self, image: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
        """Resize and crop one RGB PIL image; returns (H, W, 3) uint8 at network resolution."""
        from PIL import Image

        if image.size != self.original_wh:
            raise InputError(f"frame size {image.size[0]}x{image.size[1]} differs from the first frame's "
                             f"{self.original_wh[0]}x{self.original_wh[1]}; all frames must share one size")
        method = Image.Resampling.LANCZOS if self.downscale else Image.Resampling.BICUBIC
        resized = image.resize(self.resized_wh, method)
        return np.asarray(resized.crop(self.crop_box), dtype=np.uint8)


def _round_half_even(value: float) -> int:
    # The official loader uses Python's round(), i.e. ties go to the even integer.
    return int(round(value))


def plan_resize(width: int, height: int, long_edge: int = 512, square_ok: bool = False) -> ResizePlan:
    """Resize/crop plan of the official MonST3R loader for one frame size.

    Args:
        width, height: original frame size in pixels.
        long_edge: 224 selects the square mode, any other value the long-edge mode at that size.
        square_ok: in the long-edge mode, keep square frames square (else crop them to 4:3).
    Returns:
        The plan; ``plan.network_hw`` is the network resolution.
    Raises:
        InputError: when the frame is too small or too elongated to leave a non-empty crop.
    """
    if width < 1 or height < 1:
        raise InputError(f"frame size {width}x{height} is empty; the input must have pixels")
    if long_edge == SQUARE_MODE:
        # Resize the *short* side to 224: ask for a long side of round(224 * aspect).
        target_long = _round_half_even(SQUARE_MODE * max(width / height, height / width))
    else:
        target_long = long_edge
    longest = max(width, height)
    new_w = _round_half_even(width * target_long / longest)
    new_h = _round_half_even(height * target_long / longest)
    downscale = longest > target_long
    cx, cy = new_w // 2, new_h // 2
    if long_edge == SQUARE_MODE:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        half_w = ((2 * cx) // 16) * 8
        half_h = ((2 * cy) // 16) * 8
        if not square_ok and new_w == new_h:
            # Square frames become 4:3 landscape (half_w is a multiple of 8, so this is exact).
            half_h = (3 * half_w) // 4
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(
            f"frame size {width}x{height} leaves an empty {box[2] - box[0]}x{box[3] - box[1]} crop at "
            f"long_edge={long_edge}; use a larger long_edge or a less elongated input")
    return ResizePlan(original_wh=(width, height), resized_wh=(new_w, new_h), crop_box=box,
                      downscale=downscale)


# --------------------------------------------------------------------------------------------
# Frame selection
# --------------------------------------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort key putting ``frame_2`` before ``frame_10`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    # re.split with a capture group alternates text, digits, text, ... so types never mix per slot.
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def frame_interval(source_fps: Optional[float], fps: Optional[float], stride: int) -> int:
    """Step between kept frames, in source frames.

    ``fps`` first resamples to about that rate, keeping every ``max(1, round(source_fps / fps))``-th
    frame (the official demo's rule, Python half-to-even rounding); ``stride`` then keeps every
    ``stride``-th of those. So the step is ``max(1, round(source_fps / fps)) * stride``.
    """
    if fps is None:
        return stride
    if source_fps is None or not math.isfinite(source_fps) or source_fps <= 0:
        raise InputError("fps subsampling needs the source frame rate, which is unknown here; "
                         "use stride instead (or folder_fps for an image folder)")
    return max(1, _round_half_even(source_fps / fps)) * stride


def _is_selected(index: int, start: int, step: int) -> bool:
    return index >= start and (index - start) % step == 0


def _validate_options(long_edge: int, num_frames: Optional[int], stride: int, fps: Optional[float],
                      start_frame: int, folder_fps: Optional[float]) -> None:
    def bad(msg: str) -> InputError:
        return InputError(f"input options: {msg}")

    if not isinstance(long_edge, int) or isinstance(long_edge, bool) or long_edge < 16:
        raise bad(f"long_edge must be an integer >= 16 (512 or 224 as in MonST3R), got {long_edge!r}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise bad(f"stride must be an integer >= 1 (1 keeps every frame), got {stride!r}")
    if num_frames is not None and (not isinstance(num_frames, int) or isinstance(num_frames, bool)
                                   or num_frames < 2):
        raise bad(f"num_frames must be an integer >= 2 (MonST3R needs two frames) or None for all, "
                  f"got {num_frames!r}")
    if not isinstance(start_frame, int) or isinstance(start_frame, bool) or start_frame < 0:
        raise bad(f"start_frame must be an integer >= 0, got {start_frame!r}")
    for name, value in (("fps", fps), ("folder_fps", folder_fps)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value > 0):
            raise bad(f"{name} must be a positive number or None, got {value!r}")


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"input {path}: no such file or folder; pass a video "
                         f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of images")
    if path.is_file():
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            raise InputError(f"input {path}: a single image is not a video; MonST3R needs at least 2 "
                             "frames: pass a folder holding two or more images")
        if ext not in VIDEO_EXTENSIONS:
            raise InputError(f"input {path}: unsupported extension {path.suffix or '(none)'!r}; "
                             f"supported videos: {', '.join(VIDEO_EXTENSIONS)}; or pass a folder of images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        if path.stat().st_size == 0:
            raise InputError(f"input {path}: the file is empty (0 bytes); re-export or re-download the video")


def list_images(folder: Path) -> list[Path]:
    """Supported image files of ``folder`` (not recursive, hidden files skipped), naturally sorted.

    Raises:
        InputError: when the folder holds no supported image.
    """
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        if not files:
            what = "the folder is empty"
        else:
            found = sorted({p.suffix.lower() or "(no extension)" for p in files})
            what = f"no supported images (found {', '.join(found)})"
        raise InputError(f"input {folder}: {what}; put the frames there as "
                         f"{', '.join(IMAGE_EXTENSIONS)} files, or pass a video file")
    return sorted(images, key=lambda p: natural_key(p.name))


# --------------------------------------------------------------------------------------------
# Frame-size limit (decompression bombs)
# --------------------------------------------------------------------------------------------


def max_image_pixels() -> Optional[int]:
    """The largest frame, in pixels, read without refusing; None when the limit is switched off.

    ``$MONST3R_FW_MAX_IMAGE_PIXELS`` overrides :data:`DEFAULT_MAX_IMAGE_PIXELS`; ``0`` removes it.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not raw.isdigit():
        raise InputError(f"{MAX_PIXELS_ENV}={raw!r}: expected a whole number of pixels, e.g. "
                         f"{MAX_PIXELS_ENV}=400000000 (0 removes the limit)")
    return int(raw) or None


def check_frame_pixels(what: str, width: int, height: int) -> None:
    """Refuse a frame larger than :func:`max_image_pixels`, before anything is decoded.

    A tiny file can announce a huge image (a 60000 x 60000 PNG is a few kB on disk and 10 GB
    decoded), so the size from the header is checked first.
    """
    limit = max_image_pixels()
    if limit is None or width * height <= limit:
        return
    suggestion = 10 ** math.ceil(math.log10(width * height))
    raise InputError(
        f"{what}: a {width}x{height} frame ({width * height / 1e6:,.0f} megapixels) is over the "
        f"{limit / 1e6:,.0f}-megapixel limit that guards against decompression bombs; if the file is "
        f"genuine, raise the limit with {MAX_PIXELS_ENV}={suggestion} (0 removes it) or downscale the frames")


def _open_image(path: Path) -> "PIL.Image.Image":  # noqa: F821
    """``PIL.Image.open`` with Pillow's own bomb check replaced by :func:`check_frame_pixels`
    (Pillow's error names neither the file nor a way to proceed)."""
    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        size = path.stat().st_size if path.exists() else -1
        kind = "the file is empty (0 bytes)" if size == 0 else f"cannot be read as an image ({exc})"
        raise InputError(f"input image {path}: {kind}; replace or remove it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        check_frame_pixels(f"input image {path}", *img.size)
    except InputError:
        img.close()
        raise
    return img


# --------------------------------------------------------------------------------------------
# Pixel formats
# --------------------------------------------------------------------------------------------

_MAX_16 = 65535.0
_MAX_32 = float(2**31 - 1)


def _grey_to_rgb8(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _scale_to_u8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Linear map [0, full_scale] -> [0, 255], rounded (so 65535 -> 255 and 32768 -> 128)."""
    return np.rint(values.astype(np.float64) * (255.0 / full_scale)).clip(0, 255).astype(np.uint8)


def image_to_rgb8(img: "PIL.Image.Image", where: str) -> "PIL.Image.Image":  # noqa: F821
    """Any Pillow image -> 8-bit RGB, scaling high bit depths instead of clipping them.

    * 8-bit modes (``RGB``, ``L``, ``P``/``PA`` palettes, ``CMYK``, ``YCbCr``, ``1``, and the alpha
      modes ``RGBA``/``LA``) go through ``convert("RGB")`` exactly as the official loader does: alpha
      is dropped, the colour under it kept; 16-bit RGB/RGBA PNGs already arrive here scaled to 8 bits.
    * 16-bit greyscale (``I;16*``) is scaled by 255/65535 (``convert`` would clip every value above
      255, reading a normal 16-bit frame as all white).
    * 32-bit integers (``I``) are scaled by 255/65535 when every value fits 16 bits (how Pillow opens
      16-bit PNG/PGM), else by 255/(2^31 - 1); negative values are refused.
    * 32-bit float (``F``) must hold values in [0, 1] and is scaled by 255; anything else is refused
      (there is no way to tell its range).

    Raises:
        InputError: a colour mode that cannot be mapped to RGB, or float/negative values as above.
    """
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16"):
        grey = np.asarray(img).astype(np.uint16)
        return Image.fromarray(_grey_to_rgb8(_scale_to_u8(grey, _MAX_16)))
    if mode == "I":
        grey = np.asarray(img, dtype=np.int64)
        if grey.size and grey.min() < 0:
            raise InputError(f"{where}: 32-bit integer image with negative values (min {grey.min()}); "
                             "save the frames as 8- or 16-bit PNG")
        full = _MAX_16 if not grey.size or grey.max() <= _MAX_16 else _MAX_32
        return Image.fromarray(_grey_to_rgb8(_scale_to_u8(grey, full)))
    if mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        lo, hi = (float(np.min(grey)), float(np.max(grey))) if grey.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
            raise InputError(f"{where}: floating-point image with values in [{lo:g}, {hi:g}]; only [0, 1] can be "
                             "read unambiguously: save the frames as 8- or 16-bit PNG")
        return Image.fromarray(_grey_to_rgb8(_scale_to_u8(grey, 1.0)))
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"{where}: colour mode {mode} cannot be converted to RGB ({exc}); "
                         "save the frames as 8-bit RGB PNG or JPEG") from None


def _image_size_after_exif(path: Path) -> tuple[int, int]:
    with _open_image(path) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a damaged EXIF block: Pillow raises many types; treat as no rotation
            orientation = 1
    # Orientations 5-8 swap width and height (the official loader applies exif_transpose).
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _read_image(path: Path) -> "PIL.Image.Image":  # noqa: F821
    from PIL import ImageOps

    with _open_image(path) as img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"input image {path}: cannot be decoded ({exc}); replace or remove it") from None
        return image_to_rgb8(img, f"input image {path}")


# --------------------------------------------------------------------------------------------
# Videos through OpenCV
# --------------------------------------------------------------------------------------------


def _needs_alias(path: Path) -> bool:
    """OpenCV takes a UTF-8 C string: a name that is not UTF-8 crashes it, and FFmpeg reads ``%``
    (image-sequence patterns) and ``proto:`` prefixes in names as syntax."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "%" in text or ":" in text


@contextmanager
def _opencv_path(path: Path) -> Iterator[str]:
    """A path OpenCV can open for ``path``: itself, or a symlink with a plain name in a temporary
    folder when the real name is not safe to hand to OpenCV (see :func:`_needs_alias`)."""
    if not _needs_alias(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="monst3r-fw-video-") as tmp:
        alias = os.path.join(tmp, "input" + (path.suffix.lower() if path.suffix.isascii() else ""))
        try:
            os.symlink(os.fsencode(path.absolute()), os.fsencode(alias))
        except OSError as exc:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            raise InputError(f"input {shown}: OpenCV cannot open this file name (not UTF-8, or holding % or :) "
                             f"and no alias could be made ({exc.strerror or exc}); rename the file") from None
        yield alias


@contextmanager
def _open_video(path: Path) -> Iterator[Any]:
    import cv2

    with _opencv_path(path) as name:
        cap = cv2.VideoCapture(name)
        try:
            if not cap.isOpened():
                raise InputError(f"input {path}: cannot be opened as a video (corrupt or unsupported codec); "
                                 "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
            check_frame_pixels(f"input {path}", width, height)
            yield cap
        finally:
            cap.release()


def _bgr_to_rgb8(frame: np.ndarray) -> np.ndarray:
    """A decoded OpenCV frame (grey, BGR or BGRA; 8 or 16 bit) -> (H, W, 3) uint8 RGB (16 bit scaled)."""
    import cv2

    if frame.dtype == np.uint16:
        frame = _scale_to_u8(frame, _MAX_16)
    elif frame.dtype != np.uint8:
        raise InputError(f"video frames of type {frame.dtype} are not supported; re-encode to 8-bit, e.g. "
                         "`ffmpeg -i IN -pix_fmt yuv420p OUT.mp4`")
    if frame.ndim == 2 or frame.shape[-1] == 1:
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    if frame.shape[-1] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _video_meta(cap) -> tuple[Optional[float], int]:
    import cv2

    fps = float(cap.get(cv2.CAP_PROP_FPS))
    fps_ok = math.isfinite(fps) and fps > 0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return (fps if fps_ok else None), max(count, 0)


def _expected_count(total: int, start: int, step: int, num_frames: Optional[int]) -> int:
    n = max(0, -(-(total - start) // step)) if total > start else 0
    return n if num_frames is None else min(n, num_frames)


def _iter_video(path: Path, start: int, step: int, num_frames: Optional[int], seen: list[int]
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, (H, W, 3) uint8 RGB) for the selected frames, decoding sequentially.

    ``seen[0]`` is kept equal to the number of frames grabbed so far (the video's frame count
    once the generator is exhausted without hitting ``num_frames``).
    """
    import cv2

    with _open_video(path) as cap:
        kept = 0
        while num_frames is None or kept < num_frames:
            if not cap.grab():
                break
            index = seen[0]
            seen[0] += 1
            if not _is_selected(index, start, step):
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                raise InputError(f"input {path}: frame {index} cannot be decoded (corrupt video); "
                                 "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
            kept += 1
            yield index, _bgr_to_rgb8(frame)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def load_frames(
    path: str | Path,
    *,
    long_edge: int = 512,
    num_frames: Optional[int] = None,
    stride: int = 1,
    fps: Optional[float] = None,
    start_frame: int = 0,
    square_ok: bool = False,
    folder_fps: Optional[float] = None,
    progress: Optional[ProgressFn] = None,
    allocate: Optional[Callable[[tuple[int, ...]], Any]] = None,
) -> FrameSet:
    """Read a video file or an image folder and preprocess it as the official MonST3R loader does.

    Frames are selected as ``range(start_frame, n, step)[:num_frames]`` where ``step`` is
    ``max(1, round(source_fps / fps)) * stride`` when ``fps`` is given (the official demo's rule,
    then the stride) and ``stride`` otherwise. Each kept frame is resized and centre-cropped by :func:`plan_resize`.
    Only one full-resolution frame is held in memory at a time.

    Args:
        path: a video (.mp4 .mov .avi .mkv .webm) or a folder of images (.png .jpg .jpeg .bmp
            .tif .tiff .webp), sorted naturally (``frame_2`` before ``frame_10``).
        long_edge: 512-style long-edge mode at this size, or 224 for the square mode.
        num_frames: keep at most this many frames after subsampling; None keeps all.
        stride: keep every ``stride``-th frame (after the ``fps`` resampling, if any).
        fps: target frame rate for subsampling (videos, or folders with ``folder_fps``).
        start_frame: first frame index considered.
        square_ok: keep square frames square in the long-edge mode (else 4:3).
        folder_fps: frame rate of an image folder; default: timestamps are frame indices.
        progress: optional ``progress(done, total)`` called after each kept frame; ``total`` is
            an estimate for videos (from the container's frame count).
        allocate: optional ``allocate((F, H, W, 3))`` returning the uint8 array the frames are decoded
            into, one frame at a time (e.g. a store workspace array, so the decoded video is never held
            in memory); for videos F comes from the container's frame count and the array is then
            grown or cut with its ``resize(F)``. None: a numpy array.
    Returns:
        FrameSet with rgb (F, H, W, 3) uint8, frame_index (F,) int64 into the original sequence,
        timestamps (F,) float64 seconds, original_hw and network_from_original.
    Raises:
        InputError: missing/empty/unsupported/corrupt input, fewer than 2 frames, images of
            different sizes, or invalid options; the message names the problem and the fix.
    """
    _validate_options(long_edge, num_frames, stride, fps, start_frame, folder_fps)
    path = Path(path).expanduser()
    _check_path(path)
    if path.is_dir():
        return _load_folder(path, long_edge=long_edge, num_frames=num_frames, stride=stride, fps=fps,
                            start_frame=start_frame, square_ok=square_ok, folder_fps=folder_fps,
                            progress=progress, allocate=allocate)
    return _load_video(path, long_edge=long_edge, num_frames=num_frames, stride=stride, fps=fps,
                       start_frame=start_frame, square_ok=square_ok, progress=progress, allocate=allocate)


def _selection_text(start: int, step: int, num_frames: Optional[int]) -> str:
    return f"start_frame={start}, step={step}, num_frames={num_frames}"


def _too_few(path: Path, total: int, kept: int, start: int, step: int, num_frames: Optional[int]) -> InputError:
    if total < 2:
        return InputError(f"input {path}: has only {total} frame{'s' if total != 1 else ''}; MonST3R needs "
                          "at least 2: pass a longer video or a folder with two or more images")
    return InputError(f"input {path}: the selection ({_selection_text(start, step, num_frames)}) keeps "
                      f"{kept} of {total} frames; MonST3R needs at least 2: lower start_frame, stride or "
                      "raise fps")


def _load_folder(path: Path, *, long_edge: int, num_frames: Optional[int], stride: int,
                 fps: Optional[float], start_frame: int, square_ok: bool,
                 folder_fps: Optional[float], progress: Optional[ProgressFn],
                 allocate: Optional[Callable[[tuple[int, ...]], Any]] = None) -> FrameSet:
    images = list_images(path)
    total = len(images)
    # fps subsampling needs a source rate; without folder_fps the official loader ignores fps for
    # folders, and so do we.
    step = frame_interval(folder_fps, fps, stride) if (fps is None or folder_fps is not None) else stride
    indices = list(range(start_frame, total, step))
    if num_frames is not None:
        indices = indices[:num_frames]
    if len(indices) < 2:
        raise _too_few(path, total, len(indices), start_frame, step, num_frames)

    # Check every size from the headers before decoding anything: a mixed folder fails fast.
    first_wh = _image_size_after_exif(images[0])
    for p in images[1:]:
        wh = _image_size_after_exif(p)
        if wh != first_wh:
            raise InputError(
                f"input {path}: images have different sizes ({images[0].name} is {first_wh[0]}x{first_wh[1]}, "
                f"{p.name} is {wh[0]}x{wh[1]}); resize them to one size or split the folder")
    plan = plan_resize(first_wh[0], first_wh[1], long_edge, square_ok)
    h, w = plan.network_hw
    shape = (len(indices), h, w, 3)
    rgb = np.empty(shape, np.uint8) if allocate is None else allocate(shape)
    for k, i in enumerate(indices):
        rgb[k] = plan.apply(_read_image(images[i]))
        if progress is not None:
            progress(k + 1, len(indices))
    rate = folder_fps if folder_fps is not None else DEFAULT_FOLDER_FPS
    frame_index = np.asarray(indices, np.int64)
    return FrameSet(
        rgb=rgb, frame_index=frame_index, timestamps=frame_index.astype(np.float64) / rate,
        original_hw=(first_wh[1], first_wh[0]), network_from_original=_as_tuples(plan),
        source=str(path),
    )


def _load_video(path: Path, *, long_edge: int, num_frames: Optional[int], stride: int,
                fps: Optional[float], start_frame: int, square_ok: bool,
                progress: Optional[ProgressFn], allocate: Optional[Callable[[tuple[int, ...]], Any]] = None) -> FrameSet:
    from PIL import Image

    with _open_video(path) as cap:
        source_fps, count_hint = _video_meta(cap)
    step = frame_interval(source_fps, fps, stride)
    expected = _expected_count(count_hint, start_frame, step, num_frames)

    plan: Optional[ResizePlan] = None
    # Network-resolution frames go into one preallocated buffer sized from the container's frame
    # count (grown by doubling when that count was low), so there is no list + stack copy.
    rgb = np.empty((0, 0, 0, 3), np.uint8)
    indices: list[int] = []
    seen = [0]
    for index, frame in _iter_video(path, start_frame, step, num_frames, seen):
        if plan is None:
            plan = plan_resize(frame.shape[1], frame.shape[0], long_edge, square_ok)
            shape = (max(expected, 2), *plan.network_hw, 3)
            rgb = np.empty(shape, np.uint8) if allocate is None else allocate(shape)
        k = len(indices)
        if k == len(rgb):
            if allocate is None:
                rgb = np.concatenate([rgb, np.empty_like(rgb)])
            else:
                rgb.resize(2 * k)
        rgb[k] = plan.apply(Image.fromarray(frame))
        indices.append(index)
        if progress is not None:
            progress(k + 1, max(expected, k + 1))
    n_kept = len(indices)
    # The decoder stopped before the container's announced frame count (and not because
    # num_frames was reached): the file is truncated or damaged past that point.
    truncated = (num_frames is None or n_kept < num_frames) and count_hint > seen[0]
    if n_kept < 2:
        # Fewer than 2 kept frames means the whole video was scanned, so seen[0] is its length.
        if seen[0] == 0 or truncated:
            raise InputError(f"input {path}: only {seen[0]} of the {count_hint or '?'} frames the file announces "
                             "can be decoded (corrupt or truncated video); re-encode it, e.g. "
                             "`ffmpeg -i IN -c:v libx264 OUT.mp4`")
        raise _too_few(path, seen[0], n_kept, start_frame, step, num_frames)
    if truncated:
        warnings.warn(InputWarning(
            f"input {path}: only {seen[0]} of the {count_hint} frames the file announces could be decoded "
            f"(truncated or corrupt video); using the {n_kept} frames selected from those. Re-encode or re-download "
            "the video to use all of it"), stacklevel=2)
    assert plan is not None
    frame_index = np.asarray(indices, np.int64)
    rate = source_fps if source_fps is not None else DEFAULT_FOLDER_FPS
    if n_kept != len(rgb):
        if allocate is None:
            rgb = rgb[:n_kept].copy()
        else:
            rgb.resize(n_kept)
    return FrameSet(
        rgb=rgb, frame_index=frame_index, timestamps=frame_index.astype(np.float64) / rate,
        original_hw=(plan.original_wh[1], plan.original_wh[0]), network_from_original=_as_tuples(plan),
        source=str(path),
    )


def _as_tuples(plan: ResizePlan) -> tuple[tuple[float, float, float], ...]:
    return tuple(tuple(float(v) for v in row) for row in plan.network_from_original())


def video_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Content fingerprint of the input, used by the store to key runs on their input.

    A video file hashes its bytes; a folder hashes, for each supported image in natural order,
    its name, size and bytes (other files are ignored, as the loader ignores them).

    Returns:
        64 hex digits (sha256).
    Raises:
        InputError: when the path is missing, empty or unsupported (same checks as load_frames).
    """
    path = Path(path).expanduser()
    _check_path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        digest.update(b"monst3r-fw image folder v1\0")
        files: Sequence[Path] = list_images(path)
        for p in files:
            # os.fsencode: the name's bytes on disk (equal to UTF-8 for UTF-8 names), any name
            digest.update(os.fsencode(p.name) + b"\0" + str(p.stat().st_size).encode() + b"\0")
            _hash_file(digest, p, chunk_bytes)
    else:
        _hash_file(digest, path, chunk_bytes)
    return digest.hexdigest()


def _hash_file(digest: "hashlib._Hash", path: Path, chunk_bytes: int) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)


__all__ = [
    "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS", "ResizePlan", "plan_resize", "natural_key",
    "frame_interval", "list_images", "load_frames", "video_sha256", "write_test_video",
]


# --------------------------------------------------------------------------------------------
# Synthetic videos (tests, benchmarks, examples)
# --------------------------------------------------------------------------------------------

_FOURCC_BY_EXT = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP80"}


def _default_test_frame(index: int, n_frames: int, size_hw: tuple[int, int]) -> np.ndarray:
    """A horizontal gradient with a white square sliding left to right, (H, W, 3) uint8 RGB."""
    h, w = size_hw
    frame = np.empty((h, w, 3), np.uint8)
    frame[...] = np.linspace(30, 200, w, dtype=np.float64).astype(np.uint8)[None, :, None]
    frame[..., 2] = 90
    side = max(2, min(h, w) // 4)
    x0 = int(round((w - side) * index / max(1, n_frames - 1)))
    y0 = (h - side) // 2
    frame[y0:y0 + side, x0:x0 + side] = 255
    return frame


def write_test_video(
    path: str | Path,
    n_frames: int,
    size_hw: tuple[int, int],
    fps: float = 10,
    *,
    frame_fn: Optional[Callable[[int], np.ndarray]] = None,
    fourcc: Optional[str] = None,
) -> Path:
    """Write a small real video with OpenCV (mp4v for .mp4/.mov/.mkv, MJPG for .avi, VP80 for .webm).

    Args:
        path: output file; its extension picks the container.
        n_frames: number of frames (>= 1).
        size_hw: (height, width) in pixels.
        fps: frame rate stored in the container.
        frame_fn: optional ``frame_fn(index) -> (H, W, 3) uint8 RGB``; default a gradient with a
            sliding white square.
        fourcc: override the codec's four-character code.
    Returns:
        The path written.
    """
    import cv2

    path = Path(path)
    code = fourcc or _FOURCC_BY_EXT.get(path.suffix.lower())
    if code is None:
        raise InputError(f"write_test_video: unsupported extension {path.suffix!r}; "
                         f"use one of {', '.join(_FOURCC_BY_EXT)}")
    h, w = size_hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), float(fps), (int(w), int(h)))
    if not writer.isOpened():
        raise InputError(f"write_test_video: OpenCV cannot write {path} with codec {code}; "
                         "try another extension (.mp4 or .avi)")
    try:
        for i in range(n_frames):
            rgb = frame_fn(i) if frame_fn is not None else _default_test_frame(i, n_frames, (h, w))
            writer.write(cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
