"""Input that is what it claims (issue 13 part 3): bit depths, colour modes, bombs, truncation, odd paths.

Stage-level checks call ``load_frames`` directly on tiny images whose network size equals their
own size (64 x 48 at ``long_edge=64`` is neither resized nor cropped), so every pixel can be
compared exactly; CLI checks run the real command in a subprocess (``reliability_harness``).
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monst3r_framework.errors import InputError, InputWarning
from monst3r_framework.video import (
    DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, load_frames, write_test_video,
)
from reliability_harness import assert_unchanged, bad_situation, run_cli, snapshot

H, W = 48, 64
#: long_edge at which a 64 x 48 frame passes through untouched (no resize, no crop).
IDENTITY_EDGE = 64


def _ramp16(i: int) -> np.ndarray:
    """(H, W) uint16 spanning most of the 16-bit range, different per frame."""
    return (np.linspace(300, 65000, W)[None, :] + np.linspace(0, 200, H)[:, None] + 10 * i).astype(np.uint16)


def _expected_u8(values: np.ndarray, full_scale: float) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255.0 / full_scale).astype(np.uint8)


def _folder(tmp_path: Path, name: str, images: list[Image.Image], ext: str = ".png", **save) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, img in enumerate(images):
        img.save(folder / f"frame_{i:02d}{ext}", **save)
    return folder


def _load(folder: Path) -> np.ndarray:
    frames = load_frames(folder, long_edge=IDENTITY_EDGE)
    assert frames.size_hw == (H, W)
    return np.asarray(frames.rgb)


# ------------------------------------------------------------------------------- bit depth


def test_16bit_grey_png_folder_is_scaled_not_white(tmp_path):
    """Issue: a folder of 16-bit PNG frames was read as all-white frames and the run exited 0."""
    ramps = [_ramp16(i) for i in range(3)]
    folder = _folder(tmp_path, "grey16", [Image.fromarray(r) for r in ramps])
    assert Image.open(next(folder.iterdir())).mode.startswith("I;16")  # really 16-bit on disk
    rgb = _load(folder)
    for k, ramp in enumerate(ramps):
        expected = _expected_u8(ramp, 65535)
        for c in range(3):
            np.testing.assert_array_equal(rgb[k, ..., c], expected)
    assert rgb.min() < 10 and 200 < rgb.max() < 255  # a ramp, not white


def test_16bit_rgb_png_and_tiff_keep_their_colours(tmp_path):
    import cv2

    values = np.array([20000, 40000, 60000], np.uint16)  # R, G, B
    for ext in (".png", ".tif"):
        folder = tmp_path / f"rgb16{ext[1:]}"
        folder.mkdir()
        for i in range(2):
            img = np.empty((H, W, 3), np.uint16)
            img[...] = values
            img[0, 0] = (65535, 0, 32768)
            assert cv2.imwrite(str(folder / f"f{i}{ext}"), img[..., ::-1])  # OpenCV writes BGR
        rgb = _load(folder)
        # Pillow keeps the high byte of each 16-bit sample (v // 256): scaled, never clipped.
        np.testing.assert_array_equal(rgb[:, 1, 1], np.tile(values // 256, (2, 1)), err_msg=ext)
        np.testing.assert_array_equal(rgb[0, 0, 0], [255, 0, 128], err_msg=ext)


def test_32bit_integer_image_holding_16bit_values_is_scaled(tmp_path):
    ramps = [_ramp16(i).astype(np.int32) for i in range(2)]
    folder = _folder(tmp_path, "int32", [Image.fromarray(r, mode="I") for r in ramps], ext=".tif")
    assert Image.open(next(folder.iterdir())).mode == "I"
    rgb = _load(folder)
    np.testing.assert_array_equal(rgb[1, ..., 0], _expected_u8(ramps[1], 65535))


def test_float_image_in_unit_range_is_scaled_and_other_ranges_refused(tmp_path):
    ramp = np.linspace(0, 1, W, dtype=np.float32)[None, :].repeat(H, 0)
    folder = _folder(tmp_path, "float", [Image.fromarray(ramp, mode="F")] * 2, ext=".tif")
    rgb = _load(folder)
    np.testing.assert_array_equal(rgb[0, ..., 1], _expected_u8(ramp, 1.0))
    bad = _folder(tmp_path, "float_hdr", [Image.fromarray(ramp * 40, mode="F")] * 2, ext=".tif")
    with pytest.raises(InputError, match=r"values in \[0, 40\]; only \[0, 1\].*8- or 16-bit PNG"):
        _load(bad)


# ------------------------------------------------------------------------------- colour modes


def _colour_pattern() -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    return np.stack([xs * 4 % 256, ys * 5 % 256, (xs + ys) * 3 % 256], -1).astype(np.uint8)


def test_palette_images_with_and_without_transparency(tmp_path):
    rgb_in = _colour_pattern()
    pal = Image.fromarray(rgb_in).quantize(colors=64)
    expected = np.asarray(pal.convert("RGB"))
    with_tr = pal.copy()
    with_tr.info["transparency"] = 0
    for name, img in (("palette", pal), ("palette_transparent", with_tr)):
        folder = _folder(tmp_path, name, [img, img])
        assert Image.open(next(folder.iterdir())).mode == "P"
        np.testing.assert_array_equal(_load(folder)[0], expected, err_msg=name)


def test_cmyk_jpeg_is_converted_as_pillow_does(tmp_path):
    cmyk = Image.fromarray(_colour_pattern()).convert("CMYK")
    folder = _folder(tmp_path, "cmyk", [cmyk, cmyk], ext=".jpg", quality=95)
    with Image.open(next(folder.iterdir())) as img:
        assert img.mode == "CMYK"
        expected = np.asarray(img.convert("RGB"))
    got = _load(folder)[0]
    np.testing.assert_array_equal(got, expected)
    # and it is the picture, not its inverse (CMYK JPEGs are often stored inverted)
    assert np.abs(got.astype(int) - _colour_pattern().astype(int)).mean() < 12


def test_alpha_and_grey_modes(tmp_path):
    colour = _colour_pattern()
    alpha = (np.arange(W)[None, :].repeat(H, 0) * 4).astype(np.uint8)
    grey = colour[..., 0]
    cases = {
        # alpha is dropped and the colour under it kept, as the official loader's convert("RGB")
        "RGBA": (Image.fromarray(np.dstack([colour, alpha]), mode="RGBA"), colour),
        "LA": (Image.fromarray(np.dstack([grey, alpha]), mode="LA"), np.dstack([grey] * 3)),
        "L": (Image.fromarray(grey, mode="L"), np.dstack([grey] * 3)),
        "1": (Image.fromarray(grey > 127), np.dstack([np.where(grey > 127, 255, 0).astype(np.uint8)] * 3)),
    }
    for mode, (img, expected) in cases.items():
        folder = _folder(tmp_path, f"mode_{mode}", [img, img])
        assert Image.open(next(folder.iterdir())).mode == mode
        np.testing.assert_array_equal(_load(folder)[1], expected, err_msg=mode)


# ------------------------------------------------------------------------------- decompression bombs


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR announcing width x height, with a tiny IDAT: a few hundred bytes."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_png_is_refused_with_limit_and_how_to_raise_it(tmp_path, toy_recipe):
    """Issue: a 60000 x 60000 PNG gave an internal DecompressionBombError."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    for i in range(2):
        _png_header_only(folder / f"f{i}.png", 60000, 60000)
    out = tmp_path / "out"
    line = bad_situation("run", toy_recipe, folder, "--out", out, keep=[folder],
                         needles=["f0.png", "60000x60000", "3,600 megapixels", "179-megapixel limit",
                                  f"{MAX_PIXELS_ENV}=10000000000", "downscale"])
    assert "DecompressionBomb" not in line


def test_pixel_limit_env_var(tmp_path, monkeypatch):
    folder = _folder(tmp_path, "small", [Image.fromarray(_colour_pattern())] * 2)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(H * W - 1))
    with pytest.raises(InputError, match=rf"64x48 frame .* over the 0-megapixel limit.*{MAX_PIXELS_ENV}=10000"):
        _load(folder)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(H * W))
    assert _load(folder).shape == (2, H, W, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")  # no limit
    assert _load(folder).shape == (2, H, W, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_PIXELS_ENV}='lots': expected a whole number"):
        _load(folder)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert DEFAULT_MAX_IMAGE_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # Pillow's own refusal threshold


def test_pixel_limit_applies_to_videos(tiny_video, monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(InputError, match=r"clip.mp4: a 64x48 frame"):
        load_frames(tiny_video)


def test_pillow_limit_is_left_as_it_was(tmp_path):
    folder = _folder(tmp_path, "any", [Image.fromarray(_colour_pattern())] * 2)
    before = Image.MAX_IMAGE_PIXELS
    _load(folder)
    assert Image.MAX_IMAGE_PIXELS == before


# ------------------------------------------------------------------------------- truncated videos


def _truncated_avi(tmp_path: Path, n_frames: int = 10) -> tuple[Path, int]:
    """An MJPG AVI cut inside its last frames: the container still announces ``n_frames``."""
    full = write_test_video(tmp_path / "full.avi", n_frames, (H, W), fps=10)
    data = full.read_bytes()
    cut = tmp_path / "input" / "cut.avi"
    cut.parent.mkdir(exist_ok=True)
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return cut, n_frames


def test_truncated_video_warns_with_frames_decoded(tmp_path):
    cut, announced = _truncated_avi(tmp_path)
    with pytest.warns(InputWarning) as record:
        frames = load_frames(cut, long_edge=IDENTITY_EDGE)
    assert len(record) == 1
    n = frames.n_frames
    assert 2 <= n < announced
    assert f"only {n} of the {announced} frames the file announces could be decoded" in str(record[0].message)
    # the decoded frames are the first n, in order
    np.testing.assert_array_equal(frames.frame_index, np.arange(n))


def test_truncated_video_warning_is_one_line_in_the_cli(tmp_path, toy_recipe):
    cut, announced = _truncated_avi(tmp_path)
    before = snapshot(cut)
    result = run_cli("run", toy_recipe, cut, "--out", tmp_path / "out")
    result.assert_ok()
    warned = [line for line in result.stderr_lines if line.startswith("warning:")]
    assert len(warned) == 1, result.describe()
    assert "cut.avi: only" in warned[0] and f"of the {announced} frames the file announces" in warned[0]
    assert "InputWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert_unchanged(before)


def test_complete_video_does_not_warn(tiny_video):
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        assert load_frames(tiny_video, long_edge=IDENTITY_EDGE).n_frames == 4
        # stopping early on purpose (num_frames) is not truncation either
        assert load_frames(tiny_video, long_edge=IDENTITY_EDGE, num_frames=2).n_frames == 2


# ------------------------------------------------------------------------------- paths OpenCV cannot take


def test_video_name_with_percent_and_colon_is_read(tiny_video):
    """FFmpeg reads % as an image-sequence pattern and `x:` as a protocol; such names go through an alias."""
    odd = tiny_video.with_name("take%d: 50%.mp4")
    shutil.copyfile(tiny_video, odd)
    a = load_frames(odd, long_edge=IDENTITY_EDGE)
    b = load_frames(tiny_video, long_edge=IDENTITY_EDGE)
    np.testing.assert_array_equal(np.asarray(a.rgb), np.asarray(b.rgb))
    assert a.source == str(odd)


def test_non_utf8_input_and_out_paths_never_segfault(tmp_path, tiny_video, toy_recipe):
    """Issue: non-UTF-8 video or --out paths segfaulted inside OpenCV. Now both work end to end,
    including exporters that write PNGs through OpenCV."""
    base = os.fsencode(tmp_path)
    video = os.path.join(base, b"caf\xe9 clip.mp4")
    shutil.copyfile(os.fsencode(tiny_video), video)
    out = os.path.join(base, b"out-\xff\xfe")
    before = snapshot(os.fsdecode(video))
    result = run_cli("run", os.fsencode(toy_recipe), video, b"--out", out, b"--set",
                     b"stages.exporters=[{type: toy_export}, {type: mask_png}, {type: depth_png16}]")
    result.assert_ok()
    assert_unchanged(before)
    written = {os.fsdecode(f) for f in os.listdir(os.path.join(out, b"mask_png"))}
    assert any(name.endswith(".png") for name in written), written
    depth_dir = os.path.join(out, b"depth_png16")
    pngs = sorted(f for f in os.listdir(depth_dir) if f.endswith(b".png"))
    assert len(pngs) == 4
    import cv2

    with open(os.path.join(depth_dir, pngs[0]), "rb") as fh:
        depth = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.max() > 0


def test_image_folder_with_non_utf8_names(tmp_path):
    """Frames named in Latin-1 (an old archive): read in natural order, fingerprinted, no crash."""
    from monst3r_framework.video import video_sha256

    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(folder)
    for i in (2, 10, 1):
        Image.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(os.path.join(folder, b"fr\xe9_%d.png" % i))
    frames = load_frames(os.fsdecode(folder), long_edge=IDENTITY_EDGE)
    np.testing.assert_array_equal(np.asarray(frames.rgb)[:, 0, 0, 0], [20, 40, 200])
    first = video_sha256(os.fsdecode(folder))
    with open(os.path.join(folder, b"fr\xe9_2.png"), "r+b") as fh:
        fh.seek(-20, os.SEEK_END)
        fh.write(b"\0")
    assert video_sha256(os.fsdecode(folder)) != first
