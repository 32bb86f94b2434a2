"""Input reading and preprocessing (monst3r_framework.video).

Expected sizes are worked out by hand from the official MonST3R rules (docs/input.md), not by
calling the code under test. Inputs are tiny (<= 12 frames, <= 720 px) to keep the suite fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monst3r_framework.errors import InputError
from monst3r_framework.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    load_frames,
    natural_key,
    plan_resize,
    video_sha256,
    write_test_video,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def flat_frame(size_hw: tuple[int, int]):
    """frame_fn giving frame i a flat grey level 10 + 20 i, so decoded frames reveal their index."""

    def fn(i: int) -> np.ndarray:
        return np.full((*size_hw, 3), 10 + 20 * i, np.uint8)

    return fn


def index_from_grey(rgb: np.ndarray) -> np.ndarray:
    """Recover the written frame index from flat_frame content, (F, H, W, 3) -> (F,) int."""
    return np.rint((rgb.reshape(len(rgb), -1).mean(axis=1) - 10) / 20).astype(int)


def write_png_folder(folder: Path, names: list[str], size_hw: tuple[int, int]) -> Path:
    """PNG frames whose grey level encodes their position in ``names`` (10 + 20 k)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.full((*size_hw, 3), 10 + 20 * k, np.uint8)).save(folder / name)
    return folder


def gaussian_blob(size_hw: tuple[int, int], x0: float, y0: float, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8 image of a Gaussian centred at pixel coordinates (x0, y0) (pixel centres
    at integers), on a black background."""
    h, w = size_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))
    return np.repeat((g * 250).round().astype(np.uint8)[..., None], 3, axis=2)


def blob_centroid(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (x, y) of a single blob on black, in network pixels."""
    v = img[..., 0].astype(np.float64)
    v = np.where(v > 3, v, 0.0)  # drop faint ringing far from the blob
    ys, xs = np.mgrid[0:v.shape[0], 0:v.shape[1]]
    return np.array([(xs * v).sum() / v.sum(), (ys * v).sum() / v.sum()])


def apply_affine(a, x: float, y: float) -> np.ndarray:
    return (np.asarray(a, np.float64) @ np.array([x, y, 1.0]))[:2]


def assert_input_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg


# --------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mov", ".mkv"])
def test_video_formats_decode_every_frame_in_order(tmp_path: Path, ext: str) -> None:
    path = write_test_video(tmp_path / f"clip{ext}", 6, (64, 96), fps=10, frame_fn=flat_frame((64, 96)))
    fs = load_frames(path)
    assert fs.rgb.shape == (6, 336, 512, 3) and fs.rgb.dtype == np.uint8
    np.testing.assert_array_equal(fs.frame_index, np.arange(6))
    np.testing.assert_array_equal(index_from_grey(fs.rgb), np.arange(6))
    np.testing.assert_allclose(fs.timestamps, np.arange(6) / 10.0)
    assert fs.original_hw == (64, 96)
    assert fs.source == str(path)


def test_video_colour_channels_are_rgb(tmp_path: Path) -> None:
    # A pure red video must come out red (OpenCV decodes BGR).
    red = lambda i: np.broadcast_to(np.array([220, 0, 0], np.uint8), (64, 96, 3)).copy()  # noqa: E731
    fs = load_frames(write_test_video(tmp_path / "red.avi", 3, (64, 96), frame_fn=red))
    mean = fs.rgb.reshape(-1, 3).mean(axis=0)
    assert mean[0] > 180 and mean[1] < 40 and mean[2] < 40


def test_png_folder_natural_sort(tmp_path: Path) -> None:
    # Written in natural order, so grey level k marks the k-th frame; plain sorting would put
    # frame_10 and frame_11 before frame_2.
    names = [f"frame_{i}.png" for i in range(12)]
    folder = write_png_folder(tmp_path / "imgs", names, (64, 96))
    (folder / "notes.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are skipped
    fs = load_frames(folder)
    np.testing.assert_array_equal(index_from_grey(fs.rgb), np.arange(12))
    np.testing.assert_array_equal(fs.frame_index, np.arange(12))
    np.testing.assert_allclose(fs.timestamps, np.arange(12, dtype=float))  # default: index as seconds
    assert sorted(names, key=natural_key)[:3] == ["frame_0.png", "frame_1.png", "frame_2.png"]


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".tif", ".webp"])
def test_other_image_formats(tmp_path: Path, ext: str) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((48, 64, 3), 10 + 20 * k, np.uint8)).save(folder / f"{k:05d}{ext.upper()}")
    fs = load_frames(folder, long_edge=64)
    assert fs.rgb.shape == (3, 48, 64, 3)
    np.testing.assert_array_equal(index_from_grey(fs.rgb), np.arange(3))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 96 wide x 64 high, EXIF orientation 6 (rotate 90 deg): displayed 64 wide x 96 high.
    folder = tmp_path / "exif"
    folder.mkdir()
    for k in range(2):
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.full((64, 96, 3), 100, np.uint8)).save(folder / f"{k}.jpg", exif=exif)
    fs = load_frames(folder)
    assert fs.original_hw == (96, 64)
    assert fs.rgb.shape == (2, 512, 336, 3)


# --------------------------------------------------------------------------------------------
# subsampling
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip12(tmp_path_factory) -> Path:
    """12 frames at 10 fps, 48x64, grey level encodes the frame index."""
    path = tmp_path_factory.mktemp("clip") / "clip12.mp4"
    return write_test_video(path, 12, (48, 64), fps=10, frame_fn=flat_frame((48, 64)))


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, list(range(12))),
        ({"stride": 3}, [0, 3, 6, 9]),
        ({"stride": 5, "start_frame": 1}, [1, 6, 11]),
        ({"num_frames": 4}, [0, 1, 2, 3]),
        ({"stride": 2, "num_frames": 3, "start_frame": 3}, [3, 5, 7]),
        # fps: step = max(1, round(video_fps / fps)) with Python (half-to-even) rounding
        ({"fps": 5}, [0, 2, 4, 6, 8, 10]),
        ({"fps": 4}, [0, 2, 4, 6, 8, 10]),  # round(2.5) = 2
        ({"fps": 3}, [0, 3, 6, 9]),  # round(3.33) = 3
        ({"fps": 10 / 3.5}, [0, 4, 8]),  # round(3.5) = 4
        ({"fps": 30}, list(range(12))),  # faster than the video: every frame
        ({"fps": 5, "num_frames": 2}, [0, 2]),
        ({"fps": 5, "stride": 2}, [0, 4, 8]),  # fps resampling first, then the stride
        ({"fps": 5, "stride": 2, "start_frame": 1}, [1, 5, 9]),
    ],
)
def test_video_subsampling(clip12: Path, kwargs: dict, expected: list[int]) -> None:
    fs = load_frames(clip12, long_edge=64, **kwargs)
    np.testing.assert_array_equal(fs.frame_index, expected)
    np.testing.assert_array_equal(index_from_grey(fs.rgb), expected)
    np.testing.assert_allclose(fs.timestamps, np.asarray(expected) / 10.0)


def test_folder_subsampling_and_folder_fps(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "f", [f"{i:03d}.png" for i in range(10)], (32, 48))
    fs = load_frames(folder, long_edge=48, stride=4)
    np.testing.assert_array_equal(fs.frame_index, [0, 4, 8])
    np.testing.assert_array_equal(index_from_grey(fs.rgb), [0, 4, 8])
    # With the folder's frame rate known, fps subsamples like a video and timestamps are seconds.
    fs = load_frames(folder, long_edge=48, fps=8, folder_fps=24, num_frames=3)
    np.testing.assert_array_equal(fs.frame_index, [0, 3, 6])
    np.testing.assert_allclose(fs.timestamps, [0, 3 / 24, 6 / 24])
    # Without it, fps is ignored for folders, as in the official loader.
    fs = load_frames(folder, long_edge=48, fps=8)
    np.testing.assert_array_equal(fs.frame_index, np.arange(10))


@pytest.mark.parametrize("expected_count", [None, 1, 40])  # the container's count, too low (grown), too high (cut)
def test_frames_decoded_into_a_store_workspace(clip12: Path, tmp_path: Path, monkeypatch, expected_count) -> None:
    """``allocate``: frames go into the given (store workspace) array one by one, with the numpy path's values."""
    from monst3r_framework import video
    from monst3r_framework.stages import FrameSet
    from monst3r_framework.store import OutputArray, RunStore

    if expected_count is not None:
        monkeypatch.setattr(video, "_expected_count", lambda *a, **kw: expected_count)
    ws = RunStore(tmp_path / "store.zarr", lock=False).begin("frames", "k", {}, FrameSet)
    shapes = []

    def allocate(shape):
        shapes.append(shape)
        return ws.array("rgb", shape, np.uint8)

    fs = load_frames(clip12, long_edge=64, stride=2, allocate=allocate)
    ref = load_frames(clip12, long_edge=64, stride=2)
    assert isinstance(fs.rgb, OutputArray) and len(shapes) == 1 and fs.rgb.shape == ref.rgb.shape
    np.testing.assert_array_equal(fs.rgb[:], ref.rgb)
    np.testing.assert_array_equal(fs.frame_index, [0, 2, 4, 6, 8, 10])
    folder = write_png_folder(tmp_path / "f", [f"{i:03d}.png" for i in range(5)], (32, 48))
    fs = load_frames(folder, long_edge=48, allocate=lambda shape: ws.array("rgb_folder", shape, np.uint8))
    np.testing.assert_array_equal(fs.rgb[:], load_frames(folder, long_edge=48).rgb)


def test_recipe_input_config_fields_are_load_frames_arguments(clip12: Path) -> None:
    # The recipe's `input:` node is forwarded to load_frames; the two must not drift apart.
    recipe = pytest.importorskip("monst3r_framework.recipe")
    cfg = recipe.InputConfig(long_edge=64, stride=4)
    fs = load_frames(clip12, **cfg.model_dump())
    np.testing.assert_array_equal(fs.frame_index, [0, 4, 8])


def test_progress_reports_each_frame(clip12: Path) -> None:
    calls: list[tuple[int, int]] = []
    load_frames(clip12, long_edge=64, stride=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# --------------------------------------------------------------------------------------------
# resize / crop rules (values worked out by hand from the official crop_img)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wh, long_edge, square_ok, resized_wh, box",
    [
        # 512 mode: long side -> 512 (round half to even), crop each side to a multiple of 16.
        ((1920, 1080), 512, False, (512, 288), (0, 0, 512, 288)),
        ((854, 480), 512, False, (512, 288), (0, 0, 512, 288)),  # DAVIS 480p: 287.78 -> 288
        ((640, 480), 512, False, (512, 384), (0, 0, 512, 384)),
        ((480, 640), 512, False, (384, 512), (0, 0, 384, 512)),  # portrait
        ((1080, 1920), 512, False, (288, 512), (0, 0, 288, 512)),
        ((96, 64), 512, False, (512, 341), (0, 2, 512, 338)),  # 341.33 -> 341, crop to 336
        ((64, 96), 512, False, (341, 512), (2, 0, 338, 512)),
        ((1024, 577), 512, False, (512, 288), (0, 0, 512, 288)),  # 288.5 -> 288 (half to even)
        ((1024, 579), 512, False, (512, 290), (0, 1, 512, 289)),  # 289.5 -> 290
        # square inputs become 4:3 unless square_ok
        ((500, 500), 512, False, (512, 512), (0, 64, 512, 448)),
        ((100, 100), 512, False, (512, 512), (0, 64, 512, 448)),
        ((500, 500), 512, True, (512, 512), (0, 0, 512, 512)),
        # 224 mode: short side -> 224 via long side round(224 * aspect), centre square crop.
        ((640, 480), 224, False, (299, 224), (37, 0, 261, 224)),
        ((480, 640), 224, False, (224, 299), (0, 37, 224, 261)),
        ((300, 300), 224, False, (224, 224), (0, 0, 224, 224)),
        ((96, 64), 224, False, (336, 224), (56, 0, 280, 224)),
        ((1920, 1080), 224, False, (398, 224), (87, 0, 311, 224)),
    ],
)
def test_plan_matches_official_rules(wh, long_edge, square_ok, resized_wh, box) -> None:
    plan = plan_resize(*wh, long_edge=long_edge, square_ok=square_ok)
    assert plan.resized_wh == resized_wh
    assert plan.crop_box == box
    assert plan.downscale == (max(wh) > max(resized_wh))
    h, w = plan.network_hw
    if long_edge == 512:
        assert h % 16 == 0 and w % 16 == 0


@pytest.mark.parametrize(
    "size_hw, long_edge, square_ok, out_hw",
    [
        ((48, 64), 512, False, (384, 512)),  # landscape 4:3
        ((64, 48), 512, False, (512, 384)),  # portrait
        ((64, 64), 512, False, (384, 512)),  # square -> 4:3
        ((64, 64), 512, True, (512, 512)),
        ((48, 64), 224, False, (224, 224)),
        ((64, 48), 224, False, (224, 224)),
        ((64, 64), 224, False, (224, 224)),
    ],
)
def test_output_shapes_from_a_folder(tmp_path: Path, size_hw, long_edge, square_ok, out_hw) -> None:
    folder = write_png_folder(tmp_path / "f", ["a1.png", "a2.png"], size_hw)
    fs = load_frames(folder, long_edge=long_edge, square_ok=square_ok)
    assert fs.rgb.shape == (2, *out_hw, 3)
    assert fs.size_hw == out_hw


def test_interpolation_lanczos_down_bicubic_up() -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8))
    plan = plan_resize(700, 300)
    out = plan.apply(big)
    lanczos = np.asarray(big.resize(plan.resized_wh, Image.Resampling.LANCZOS).crop(plan.crop_box))
    bicubic = np.asarray(big.resize(plan.resized_wh, Image.Resampling.BICUBIC).crop(plan.crop_box))
    np.testing.assert_array_equal(out, lanczos)
    assert not np.array_equal(out, bicubic)
    small = Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8))
    plan = plan_resize(100, 60)
    np.testing.assert_array_equal(
        plan.apply(small), np.asarray(small.resize(plan.resized_wh, Image.Resampling.BICUBIC).crop(plan.crop_box)))


# --------------------------------------------------------------------------------------------
# mapping back to original pixels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_hw, long_edge, x0, y0",
    [
        ((480, 720), 512, 431.3, 207.6),  # downscale s = 0.711 (LANCZOS)
        ((120, 200), 512, 123.3, 47.6),  # upscale s = 2.56 (BICUBIC), crop top
        ((200, 200), 512, 61.2, 140.7),  # square -> 4:3 crop
        ((300, 400), 224, 150.4, 171.9),  # 224 mode, crop left
        ((400, 300), 224, 170.2, 250.3),  # 224 mode portrait, crop top
    ],
)
def test_network_from_original_locates_a_feature(tmp_path: Path, size_hw, long_edge, x0, y0) -> None:
    folder = tmp_path / "blob"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(gaussian_blob(size_hw, x0, y0, sigma=6.0)).save(folder / f"{k}.png")
    fs = load_frames(folder, long_edge=long_edge)
    expected = apply_affine(fs.network_from_original, x0, y0)
    found = blob_centroid(fs.rgb[0])
    # A half-pixel-convention mistake would be off by 0.5 * |s - 1| = 0.14 .. 0.78 px here.
    np.testing.assert_allclose(found, expected, atol=0.04)
    # The inverse maps the network feature back to the original pixel.
    back = apply_affine(fs.original_from_network(), *found)
    np.testing.assert_allclose(back, [x0, y0], atol=0.08)


def test_network_from_original_is_scale_then_crop() -> None:
    # 1920x1080 -> 512x288 (s = 4/15 on both axes), no crop: x' = (x + 0.5) s - 0.5.
    a = plan_resize(1920, 1080).network_from_original()
    s = 512 / 1920
    np.testing.assert_allclose(a, [[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
    # The original image's outer edges (-0.5 and W - 0.5) map onto the resized image's edges.
    np.testing.assert_allclose(apply_affine(a, -0.5, -0.5), [-0.5, -0.5])
    np.testing.assert_allclose(apply_affine(a, 1919.5, 1079.5), [511.5, 287.5])
    # 640x480 in 224 mode: s = 299/640 in x, 224/480 in y, then 37 px cropped on the left.
    a = plan_resize(640, 480, long_edge=224).network_from_original()
    sx, sy = 299 / 640, 224 / 480
    np.testing.assert_allclose(a, [[sx, 0, 0.5 * sx - 0.5 - 37], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    # Intrinsics: K_network = A @ K_original gives the scaled principal point of the crop.
    k_orig = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    k_net = a @ k_orig
    np.testing.assert_allclose(k_net[0, 0], 500 * sx)
    np.testing.assert_allclose(k_net[:2, 2], [(319.5 + 0.5) * sx - 0.5 - 37, (239.5 + 0.5) * sy - 0.5])


def test_frame_set_affine_is_nested_tuples(clip12: Path) -> None:
    fs = load_frames(clip12, long_edge=64, num_frames=2)
    assert isinstance(fs.network_from_original, tuple)
    assert all(isinstance(row, tuple) and len(row) == 3 for row in fs.network_from_original)


# --------------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------------


def test_video_sha256_file_and_folder(tmp_path: Path) -> None:
    import hashlib

    path = write_test_video(tmp_path / "a.mp4", 3, (32, 48))
    assert video_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    folder = write_png_folder(tmp_path / "f", ["1.png", "2.png"], (16, 16))
    first = video_sha256(folder)
    (folder / "readme.txt").write_text("not an image")
    assert video_sha256(folder) == first  # only the images count
    os.utime(folder / "1.png", (1, 1))
    assert video_sha256(folder) == first  # content, not mtimes
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(folder / "2.png")
    assert video_sha256(folder) != first
    assert_input_error("no such file", video_sha256, tmp_path / "nope.mp4")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    msg = assert_input_error("no such file or folder", load_frames, tmp_path / "missing.mp4")
    assert ".mp4" in msg and "folder of images" in msg


def test_zero_byte_video(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_input_error(r"empty \(0 bytes\)", load_frames, tmp_path / "empty.mp4")


def test_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    msg = assert_input_error("corrupt", load_frames, path)
    assert "re-encode" in msg


def test_truncated_video(tmp_path: Path) -> None:
    good = write_test_video(tmp_path / "good.mp4", 8, (48, 64))
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # mp4v puts its index (moov) at the end
    assert_input_error("corrupt", load_frames, cut)


def test_one_frame_video(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "one.mp4", 1, (48, 64))
    assert_input_error("only 1 frame; MonST3R needs at least 2", load_frames, path)


def test_one_image_folder(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "one", ["only.png"], (32, 32))
    assert_input_error("only 1 frame; MonST3R needs at least 2", load_frames, folder)


def test_single_image_file(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "one", ["only.png"], (32, 32))
    assert_input_error("single image", load_frames, folder / "only.png")


@pytest.mark.parametrize("name", ["clip.gif", "clip.txt", "clip"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"x" * 100)
    msg = assert_input_error("unsupported extension", load_frames, tmp_path / name)
    for ext in VIDEO_EXTENSIONS:
        assert ext in msg


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    msg = assert_input_error("the folder is empty", load_frames, tmp_path / "empty")
    assert all(ext in msg for ext in IMAGE_EXTENSIONS)


def test_folder_without_images(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.json").write_text("{}")
    assert_input_error(r"no supported images \(found \.json, \.txt\)", load_frames, folder)


def test_images_of_different_sizes(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "mixed", ["0.png", "1.png"], (32, 48))
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(folder / "2.png")
    msg = assert_input_error("different sizes", load_frames, folder)
    assert "0.png is 48x32" in msg and "2.png is 48x40" in msg


def test_corrupt_image_in_folder(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "bad", ["0.png", "1.png"], (32, 48))
    (folder / "2.png").write_bytes(b"not a png at all")
    assert_input_error("2.png: cannot be read", load_frames, folder)
    (folder / "2.png").write_bytes(b"")
    assert_input_error(r"2.png: the file is empty \(0 bytes\)", load_frames, folder)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"stride": 1.5}, "stride must be an integer >= 1"),
        ({"num_frames": 1}, "num_frames must be an integer >= 2"),
        ({"num_frames": 0}, "num_frames must be an integer >= 2"),
        ({"start_frame": -1}, "start_frame must be an integer >= 0"),
        ({"fps": 0}, "fps must be a positive number"),
        ({"fps": float("nan")}, "fps must be a positive number"),
        ({"long_edge": 8}, "long_edge must be an integer >= 16"),
    ],
)
def test_option_nonsense(clip12: Path, kwargs: dict, match: str) -> None:
    assert_input_error(match, load_frames, clip12, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stride": 20}, r"keeps 1 of 12 frames"),
        ({"start_frame": 11}, r"keeps 1 of 12 frames"),
        ({"start_frame": 50}, r"keeps 0 of 12 frames"),
        ({"fps": 0.5}, r"keeps 1 of 12 frames"),
    ],
)
def test_selection_too_sparse(clip12: Path, kwargs: dict, match: str) -> None:
    assert_input_error(match, load_frames, clip12, long_edge=64, **kwargs)
