"""Synthetic dynamic scenes with exact ground truth (depth, cameras, flow, pointmaps, dynamic masks).

A box room whose six walls carry smooth multi-scale procedural textures is ray-cast from a camera
that both rotates and translates along a smooth path, while one to three textured spheres or boxes
move and spin independently inside it. Every surface's colour is a function of its *object-local*
3-D position, so a surface point has the same colour in every frame (no lighting changes), and the
ground truth follows from the geometry alone:

* ``depth[i]`` is the z-depth (OpenCV camera, z forward) of the ray through each pixel centre of
  frame ``i``;
* ``flow(i, j)`` takes each pixel's hit point of frame ``i`` into its object's local frame, moves it
  with that object to time ``j`` (static room: identity) and projects it in camera ``j``;
* ``points_in_cam(i, j)`` is frame ``j``'s own hit points (at time ``j``) in camera ``i``.

Everything that :func:`load_scene` needs to recompute these for any pair is stored in ``gt.npz``
(layout: ``docs/synthetic.md``). Conventions follow :mod:`monst3r_framework.stages`: OpenCV
cameras, camera-to-world poses, integer pixel coordinates at pixel centres.

Example:
    >>> scene = make_scene(n_frames=8, size_hw=(64, 96), seed=0, n_objects=1)
    >>> scene.flow(0, 3).shape
    (64, 96, 2)
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from monst3r_framework.geometry import inv_rigid as _inv_rigid

from monst3r_framework.errors import InputError

__all__ = ["SyntheticScene", "make_scene", "load_scene", "GT_FORMAT_VERSION"]

#: Bumped whenever the gt.npz layout or the meaning of a key changes.
GT_FORMAT_VERSION = 1

# Room: axis-aligned box in world coordinates (metres; world y points down like the camera's).
_ROOM_LO = np.array([-3.5, -2.0, -2.5])
_ROOM_HI = np.array([3.5, 2.0, 6.0])
# Texture: finest wavelength is this many pixels at this distance (metres), so the texture is as
# detailed as the resolution can show without aliasing (smaller images get a coarser texture).
_TEXTURE_MIN_WAVELENGTH_PX = 4.0
_TEXTURE_REFERENCE_DISTANCE = 3.0
_TEXTURE_OCTAVES = 5
_WAVES_PER_OCTAVE = 8


# --------------------------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------------------------


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], np.float64)
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _rigid(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = trans
    return out




def _apply(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply one (4, 4) transform to (..., 3) points."""
    return pts @ t[:3, :3].T + t[:3, 3]


def _intrinsics(size_hw: tuple[int, int], fov_deg: float) -> np.ndarray:
    h, w = size_hw
    f = (w / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    # Integer pixel coordinates are pixel centres, so the image centre is at ((w-1)/2, (h-1)/2).
    return np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1]], np.float64)


# --------------------------------------------------------------------------------------------
# Scene description (everything random is drawn once from the seed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Texture:
    """Sum-of-sinusoids texture of object-local 3-D position.

    wavevectors: (K, 3) radians per metre; phases: (K,); mix: (K, 3) per-channel weights;
    base: (3,) mean colour in [0, 1]; contrast: scalar.
    """

    wavevectors: np.ndarray
    phases: np.ndarray
    mix: np.ndarray
    base: np.ndarray
    contrast: float

    def colour(self, local: np.ndarray, shade: Optional[np.ndarray] = None) -> np.ndarray:
        """(M, 3) local points -> (M, 3) float32 colours in [0, 1]."""
        # float32 throughout: phases stay below ~2e3 rad, so the error is ~1e-4 rad, and float32
        # sin is an order of magnitude faster than float64 in numpy.
        waves = local.astype(np.float32) @ self.wavevectors.T.astype(np.float32)
        waves += self.phases.astype(np.float32)
        np.sin(waves, out=waves)
        v = np.tanh(waves @ self.mix.astype(np.float32))
        col = self.base.astype(np.float32) + np.float32(self.contrast) * v
        if shade is not None:
            col *= shade[:, None].astype(np.float32)
        return np.clip(col, 0.0, 1.0, out=col)


def _make_texture(rng: np.random.Generator, min_wavelength: float, base: np.ndarray) -> _Texture:
    k_total = _TEXTURE_OCTAVES * _WAVES_PER_OCTAVE
    dirs = rng.normal(size=(k_total, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    octave = np.repeat(np.arange(_TEXTURE_OCTAVES), _WAVES_PER_OCTAVE)
    wavelength = min_wavelength * 2.0 ** (octave + rng.uniform(0.0, 1.0, k_total))
    wavevectors = dirs * (2 * np.pi / wavelength)[:, None]
    # Coarse octaves weigh more (a 1/f^0.5 spectrum): rich at every scale, little energy near Nyquist.
    amp = (wavelength / wavelength.max()) ** 0.5
    mix = rng.normal(size=(k_total, 3)) * amp[:, None]
    # Channels share part of their pattern so the texture has luminance (not only hue) contrast.
    shared = rng.normal(size=(k_total, 1)) * amp[:, None]
    mix = 0.6 * mix + 0.8 * shared
    mix /= np.sqrt((mix**2).sum(axis=0, keepdims=True)) / 1.6
    return _Texture(wavevectors=wavevectors, phases=rng.uniform(0, 2 * np.pi, k_total), mix=mix,
                    base=base, contrast=0.38)


@dataclass(frozen=True)
class _ObjectSpec:
    """A moving textured object. kind: 'sphere' (size = radius) or 'box' (size = half edge)."""

    kind: str
    size: float
    centre: np.ndarray       # (3,) mean world position
    amplitude: np.ndarray    # (3,) metres
    period: np.ndarray       # (3,) seconds
    phase: np.ndarray        # (3,) radians
    spin_axis: np.ndarray    # (3,) unit
    spin_rate: float         # radians per second
    rot0: np.ndarray         # (3, 3) initial orientation

    def world_from_object(self, t: float) -> np.ndarray:
        pos = self.centre + self.amplitude * np.sin(2 * np.pi * t / self.period + self.phase)
        rot = _axis_angle(self.spin_axis, self.spin_rate * t) @ self.rot0
        return _rigid(rot, pos)


@dataclass(frozen=True)
class _CameraPath:
    amplitude: np.ndarray    # (3,) metres
    period: np.ndarray       # (3,) seconds
    phase: np.ndarray        # (3,)
    ang_amplitude: np.ndarray  # (3,) radians: yaw, pitch, roll
    ang_period: np.ndarray
    ang_phase: np.ndarray

    def world_from_cam(self, t: float) -> np.ndarray:
        pos = self.amplitude * np.sin(2 * np.pi * t / self.period + self.phase)
        yaw, pitch, roll = self.ang_amplitude * np.sin(2 * np.pi * t / self.ang_period + self.ang_phase)
        return _rigid(_rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll), pos)


def _draw_objects(rng: np.random.Generator, n_objects: int, fov_deg: float, aspect_wh: float,
                  motion_scale: float) -> list[_ObjectSpec]:
    objs = []
    if n_objects == 0:
        return objs
    # Projected area of a sphere of radius r at distance d, as a fraction of the image:
    # pi (f r / d)^2 / (W H) = pi (r/d)^2 * aspect / (4 tan^2(fov/2)). Aim at ~13% in total.
    tan2 = math.tan(math.radians(fov_deg) / 2.0) ** 2
    per_object = 0.13 / n_objects
    xs = np.linspace(-0.9, 0.9, n_objects) if n_objects > 1 else np.zeros(1)
    for m in range(n_objects):
        depth = rng.uniform(2.6, 3.4)
        r = depth * math.sqrt(per_object * 4 * tan2 / (math.pi * aspect_wh)) * rng.uniform(0.9, 1.1)
        kind = "sphere" if (m + int(rng.integers(2))) % 2 == 0 else "box"
        size = r if kind == "sphere" else r * 0.82
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        q = rng.normal(size=3)
        objs.append(_ObjectSpec(
            kind=kind, size=float(size),
            centre=np.array([xs[m] + rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.4), depth]),
            amplitude=np.array([0.35, 0.15, 0.3]) * motion_scale * rng.uniform(0.6, 1.0, 3),
            period=rng.uniform(3.5, 6.0, 3), phase=rng.uniform(0, 2 * np.pi, 3),
            spin_axis=axis, spin_rate=math.radians(rng.uniform(30, 60)) * motion_scale * rng.choice([-1, 1]),
            rot0=_axis_angle(q / np.linalg.norm(q), rng.uniform(0, np.pi)),
        ))
    return objs


# --------------------------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------------------------


def _hit_room(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit point of rays leaving the convex room from inside.

    Returns ray parameter s (M,) and wall index (M,) in 0..5 (axis * 2 + (1 if hi wall)).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        wall = np.where(dirs > 0, _ROOM_HI, _ROOM_LO)
        s_axis = (wall - origin) / dirs
    s_axis = np.where(np.isfinite(s_axis) & (s_axis > 0), s_axis, np.inf)
    axis = np.argmin(s_axis, axis=1)
    s = np.take_along_axis(s_axis, axis[:, None], axis=1)[:, 0]
    wall_id = axis * 2 + (np.take_along_axis(dirs, axis[:, None], axis=1)[:, 0] > 0)
    return s, wall_id


def _hit_object(spec: _ObjectSpec, obj_from_world: np.ndarray, origin: np.ndarray,
                dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest positive hit of rays with one object (camera assumed outside it).

    Returns s (M,) (inf where missed) and the hit point's local shading normal (M, 3).
    """
    o = _apply(obj_from_world, origin[None])[0]
    d = dirs @ obj_from_world[:3, :3].T
    if spec.kind == "sphere":
        b = d @ o
        a = (d * d).sum(axis=1)
        c = o @ o - spec.size**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            s = (-b - np.sqrt(disc)) / a
        s = np.where((disc > 0) & (s > 0), s, np.inf)
        return s, o + np.where(np.isfinite(s), s, 0.0)[:, None] * d
    h = spec.size
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-h - o) / d
        t2 = (h - o) / d
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    # Slab test; a NaN (ray exactly on a slab plane and parallel to it) compares False: a miss.
    tmin = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
    tmax = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
    s = np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)
    p = o + np.where(np.isfinite(s), s, 0.0)[:, None] * d
    # Box face normal: the axis where the local point touches the surface.
    face = np.argmax(np.abs(p), axis=1)
    normal = np.zeros_like(p)
    np.put_along_axis(normal, face[:, None], np.sign(np.take_along_axis(p, face[:, None], axis=1)), axis=1)
    return s, normal * h


class _Renderer:
    """Holds the random scene description and renders / traces individual frames."""

    def __init__(self, n_frames: int, size_hw: tuple[int, int], seed: int, n_objects: int,
                 fov_deg: float, fps: float, motion_scale: float) -> None:
        self.size_hw = size_hw
        self.fps = fps
        rng = np.random.default_rng(seed)
        h, w = size_hw
        self.K = _intrinsics(size_hw, fov_deg)
        pixel_m = _TEXTURE_REFERENCE_DISTANCE / self.K[0, 0]
        min_wl = _TEXTURE_MIN_WAVELENGTH_PX * pixel_m
        wall_bases = rng.uniform(0.3, 0.7, size=(6, 3))
        self.wall_textures = [_make_texture(rng, min_wl, wall_bases[k]) for k in range(6)]
        self.path = _CameraPath(
            amplitude=np.array([0.6, 0.15, 0.4]) * motion_scale, period=rng.uniform(7, 11, 3),
            phase=rng.uniform(0, 2 * np.pi, 3),
            ang_amplitude=np.radians([10.0, 5.0, 3.0]) * motion_scale, ang_period=rng.uniform(7, 11, 3),
            ang_phase=rng.uniform(0, 2 * np.pi, 3),
        )
        self.objects = _draw_objects(rng, n_objects, fov_deg, w / h, motion_scale)
        self.object_textures = [
            _make_texture(rng, min_wl * 0.7, rng.uniform(0.35, 0.65, 3)) for _ in self.objects
        ]
        self.light = np.array([0.4, -0.7, -0.6]) / np.linalg.norm([0.4, -0.7, -0.6])
        self.timestamps = np.arange(n_frames, dtype=np.float64) / fps
        self.world_from_cam = np.stack([self.path.world_from_cam(t) for t in self.timestamps])
        self.world_from_object = np.stack(
            [[o.world_from_object(t) for o in self.objects] for t in self.timestamps]
        ).reshape(n_frames, len(self.objects), 4, 4)

    def trace(self, i: int, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cast rays of frame i through pixel coordinates pix (M, 2) (x, y).

        Returns:
            depth (M,) float64 z-depth; object id (M,) uint8 (0 room, k = object k); surface id (M,)
            int64 (walls 0..5, object k -> 5 + k); local (M, 3) float64 hit point in its surface's
            own frame (room: world); shade (M,) float32 baked shading factor.
        """
        c2w = self.world_from_cam[i]
        cam_dirs = np.stack([(pix[:, 0] - self.K[0, 2]) / self.K[0, 0],
                             (pix[:, 1] - self.K[1, 2]) / self.K[1, 1], np.ones(len(pix))], axis=1)
        # Rays with z = 1 in the camera: the ray parameter is the z-depth.
        dirs = cam_dirs @ c2w[:3, :3].T
        origin = c2w[:3, 3]
        s, surf = _hit_room(origin, dirs)
        obj = np.zeros(len(pix), np.uint8)
        normals = np.zeros((len(pix), 3))
        for m, spec in enumerate(self.objects):
            o_from_w = _inv_rigid(self.world_from_object[i, m])
            # Cull: only rays passing within the bounding sphere can hit (objects cover ~5-25%).
            centre = self.world_from_object[i, m, :3, 3] - origin
            radius = spec.size * (1.0 if spec.kind == "sphere" else math.sqrt(3.0)) * 1.01
            along = dirs @ centre
            dist2 = centre @ centre - along**2 / (dirs * dirs).sum(axis=1)
            cand = np.flatnonzero((dist2 <= radius**2) & (along > 0))
            if len(cand) == 0:
                continue
            s_m, n_m = _hit_object(spec, o_from_w, origin, dirs[cand])
            closer = s_m < s[cand]
            hit = cand[closer]
            s[hit] = s_m[closer]
            obj[hit] = m + 1
            normals[hit] = n_m[closer]
        local = origin + s[:, None] * dirs
        shade = np.ones(len(pix), np.float32)
        for m in range(len(self.objects)):
            sel = np.flatnonzero(obj == m + 1)
            if len(sel):
                local[sel] = _apply(_inv_rigid(self.world_from_object[i, m]), local[sel])
                n = normals[sel] / np.linalg.norm(normals[sel], axis=1, keepdims=True)
                # Shading baked in object coordinates: constant for a surface point over time.
                shade[sel] = 0.8 + 0.2 * (n @ self.light)
        surf = np.where(obj > 0, 5 + obj.astype(np.int64), surf)
        return s, obj, surf, local, shade

    def colour(self, surf: np.ndarray, local: np.ndarray, shade: np.ndarray) -> np.ndarray:
        """(M,) surface ids, (M, 3) local points, (M,) shading -> (M, 3) float32 colours in [0, 1]."""
        out = np.empty((len(surf), 3), np.float32)
        for k, tex in enumerate(self.wall_textures + self.object_textures):
            sel = np.flatnonzero(surf == k)
            if len(sel):
                out[sel] = tex.colour(local[sel], shade=None if k < 6 else shade[sel])
        return out

    def render(self, i: int, supersample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame i: rgb (H, W, 3) uint8, depth (H, W) float64, object id (H, W) uint8.

        Anti-aliasing: colours average ``supersample``^2 sub-pixel samples. Where a pixel and its
        four neighbours see the same surface, a sample's local point is extrapolated to first order
        from the centre grid (planes and smooth objects are smooth at 1/4 px); elsewhere (silhouettes,
        wall edges, image border) the sub-pixel rays are cast exactly.
        """
        h, w = self.size_hw
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        s, obj, surf, local, shade = self.trace(i, centres)
        if supersample == 1:
            col = self.colour(surf, local, shade)
        else:
            sg = surf.reshape(h, w)
            smooth = np.zeros((h, w), bool)
            c = sg[1:-1, 1:-1]
            smooth[1:-1, 1:-1] = ((sg[:-2, 1:-1] == c) & (sg[2:, 1:-1] == c) & (sg[1:-1, :-2] == c)
                                  & (sg[1:-1, 2:] == c))
            smooth = smooth.ravel()
            lg = local.reshape(h, w, 3)
            d_dx = np.zeros_like(lg)
            d_dy = np.zeros_like(lg)
            d_dx[:, 1:-1] = (lg[:, 2:] - lg[:, :-2]) / 2.0
            d_dy[1:-1] = (lg[2:] - lg[:-2]) / 2.0
            d_dx = d_dx.reshape(-1, 3)
            d_dy = d_dy.reshape(-1, 3)
            edge = np.flatnonzero(~smooth)
            offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
            col = np.zeros((h * w, 3), np.float32)
            for dy in offsets:
                for dx in offsets:
                    sub_local = local + dx * d_dx + dy * d_dy
                    sub_surf = surf.copy()
                    sub_shade = shade.copy()
                    if len(edge):
                        _, _, e_surf, e_local, e_shade = self.trace(i, centres[edge] + np.array([dx, dy]))
                        sub_local[edge], sub_surf[edge], sub_shade[edge] = e_local, e_surf, e_shade
                    col += self.colour(sub_surf, sub_local, sub_shade)
            col /= supersample**2
        rgb = np.rint(col.reshape(h, w, 3) * 255.0).astype(np.uint8)
        return rgb, s.reshape(h, w), obj.reshape(h, w)


# --------------------------------------------------------------------------------------------
# Public scene object
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticScene:
    """A rendered synthetic video with exact ground truth.

    Attributes:
        rgb: (N, H, W, 3) uint8 RGB frames.
        depth: (N, H, W) float32 z-depth of the ray through each pixel centre (OpenCV camera).
        dynamic_mask: (N, H, W) bool, True on the moving objects.
        object_id: (N, H, W) uint8, 0 for the static room, k for moving object k (1-based).
        K: (3, 3) float64 pixel intrinsics, the same for every frame.
        cam_to_world: (N, 4, 4) float64 OpenCV camera-to-world (``world_from_cam``).
        world_from_object: (N, M, 4, 4) float64 pose of each moving object at each frame.
        timestamps: (N,) float64 seconds.
        objects: per object a dict with ``kind`` ('sphere'/'box') and ``size`` (radius/half edge, m).
        seed: the seed the scene was drawn from.
        fps: frames per second of ``video.mp4`` and of the timestamps.
    """

    rgb: np.ndarray
    depth: np.ndarray
    dynamic_mask: np.ndarray
    object_id: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray
    world_from_object: np.ndarray
    timestamps: np.ndarray
    objects: list[dict] = field(default_factory=list)
    seed: int = 0
    fps: float = 10.0

    # ---- basic properties -------------------------------------------------------------------

    @property
    def n_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    @property
    def world_from_cam(self) -> np.ndarray:
        """Alias of ``cam_to_world`` in the project's naming."""
        return self.cam_to_world

    def _check_frame(self, *idx: int) -> None:
        for i in idx:
            if not 0 <= int(i) < self.n_frames:
                raise InputError(
                    f"synthetic scene: frame index {i} out of range; the scene has {self.n_frames} "
                    f"frames (0..{self.n_frames - 1}); pass an index in that range"
                )

    # ---- geometry ----------------------------------------------------------------------------

    def _cam_points(self, i: int) -> np.ndarray:
        """(H, W, 3) float64 frame i's hit points in camera i."""
        h, w = self.size_hw
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        z = self.depth[i].astype(np.float64)
        k = self.K
        return np.stack([(xs - k[0, 2]) / k[0, 0] * z, (ys - k[1, 2]) / k[1, 1] * z, z], axis=-1)

    def world_points(self, i: int) -> np.ndarray:
        """(H, W, 3) float64 frame i's hit points in the world frame at time i."""
        self._check_frame(i)
        return _apply(self.cam_to_world[i], self._cam_points(i))

    def scene_flow_world(self, i: int, j: int) -> np.ndarray:
        """(H, W, 3) float64 where frame i's surface points are at time j, in world coordinates."""
        self._check_frame(i, j)
        pts = self.world_points(i)
        ids = self.object_id[i]
        for m in range(self.world_from_object.shape[1]):
            sel = ids == m + 1
            if sel.any():
                # Carry the point rigidly with its object from time i to time j.
                moved = self.world_from_object[j, m] @ _inv_rigid(self.world_from_object[i, m])
                pts[sel] = _apply(moved, pts[sel])
        return pts

    def flow(self, i: int, j: int) -> np.ndarray:
        """Exact optical flow from frame i to frame j.

        Returns:
            (H, W, 2) float32 displacement (dx, dy) in pixels of every pixel of frame i, including
            pixels that are occluded or leave the image in frame j (see :meth:`covisible`).
        """
        self._check_frame(i, j)
        pts_j = _apply(_inv_rigid(self.cam_to_world[j]), self.scene_flow_world(i, j))
        uv = pts_j[..., :2] / pts_j[..., 2:3] * np.diag(self.K)[:2] + self.K[:2, 2]
        h, w = self.size_hw
        ys, xs = np.mgrid[0:h, 0:w]
        return (uv - np.stack([xs, ys], axis=-1)).astype(np.float32)

    def covisible(self, i: int, j: int, rel_tol: float = 0.01) -> np.ndarray:
        """(H, W) bool: pixel of frame i lands inside frame j and is not occluded there.

        Visibility compares the point's depth in camera j with frame j's GT depth (nearest pixel).
        """
        self._check_frame(i, j)
        pts_j = _apply(_inv_rigid(self.cam_to_world[j]), self.scene_flow_world(i, j))
        z = pts_j[..., 2]
        uv = pts_j[..., :2] / z[..., None] * np.diag(self.K)[:2] + self.K[:2, 2]
        h, w = self.size_hw
        inside = (z > 0) & (uv[..., 0] > -0.5) & (uv[..., 0] < w - 0.5) & (uv[..., 1] > -0.5) & (uv[..., 1] < h - 0.5)
        xi = np.clip(np.rint(uv[..., 0]), 0, w - 1).astype(np.int64)
        yi = np.clip(np.rint(uv[..., 1]), 0, h - 1).astype(np.int64)
        return inside & (np.abs(self.depth[j][yi, xi] - z) <= rel_tol * z)

    def points_in_cam(self, i: int, j: int) -> np.ndarray:
        """(H, W, 3) float32: frame j's surface points at time j, in camera i (DUSt3R's pts3d of view j)."""
        self._check_frame(i, j)
        cam_i_from_cam_j = _inv_rigid(self.cam_to_world[i]) @ self.cam_to_world[j]
        return _apply(cam_i_from_cam_j, self._cam_points(j)).astype(np.float32)

    # ---- records -----------------------------------------------------------------------------

    def frameset(self):  # -> FrameSet (imported lazily to keep this module light)
        """The video as a :class:`~monst3r_framework.stages.FrameSet` at the scene's resolution."""
        from monst3r_framework.stages import FrameSet

        h, w = self.size_hw
        return FrameSet(
            rgb=self.rgb, frame_index=np.arange(self.n_frames, dtype=np.int64),
            timestamps=self.timestamps.astype(np.float64), original_hw=(h, w),
            network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
            source=f"synthetic:seed={self.seed}",
        )

    def _pairs(self, pairs: Iterable[Sequence[int]]) -> np.ndarray:
        arr = np.asarray(list(pairs) if not isinstance(pairs, np.ndarray) else pairs, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"synthetic scene: pairs must have shape (P, 2), got {arr.shape}; pass [(i, j), ...]")
        self._check_frame(*arr.ravel().tolist())
        return arr

    def pair_predictions(self, pairs: Iterable[Sequence[int]], conf: float = 2.0):
        """Ground-truth :class:`~monst3r_framework.stages.PairPredictions` (conf constant ``conf``)."""
        from monst3r_framework.stages import PairPredictions

        arr = self._pairs(pairs)
        pts_i = np.stack([self.points_in_cam(i, i) for i, _ in arr]) if len(arr) else np.zeros((0, *self.size_hw, 3), np.float32)
        pts_j = np.stack([self.points_in_cam(i, j) for i, j in arr]) if len(arr) else np.zeros((0, *self.size_hw, 3), np.float32)
        c = np.full((len(arr), *self.size_hw), conf, np.float32)
        return PairPredictions(pairs=arr, pts3d_i=pts_i, pts3d_j=pts_j, conf_i=c, conf_j=c.copy())

    def flow_field(self, pairs: Iterable[Sequence[int]]):
        """Exact :class:`~monst3r_framework.stages.FlowField` for the pairs, in both directions."""
        from monst3r_framework.stages import FlowField

        arr = self._pairs(pairs)
        empty = np.zeros((0, *self.size_hw, 2), np.float32)
        fij = np.stack([self.flow(i, j) for i, j in arr]) if len(arr) else empty
        fji = np.stack([self.flow(j, i) for i, j in arr]) if len(arr) else empty
        return FlowField(pairs=arr, flow_ij=fij, flow_ji=fji)

    # ---- persistence -------------------------------------------------------------------------

    def gt_arrays(self) -> dict[str, np.ndarray]:
        """The arrays written to ``gt.npz`` (see docs/synthetic.md)."""
        return {
            "format_version": np.int64(GT_FORMAT_VERSION),
            "depth": self.depth.astype(np.float32),
            "dynamic_mask": self.dynamic_mask.astype(bool),
            "object_id": self.object_id.astype(np.uint8),
            "K": self.K.astype(np.float64),
            "cam_to_world": self.cam_to_world.astype(np.float64),
            "world_from_object": self.world_from_object.astype(np.float64),
            "timestamps": self.timestamps.astype(np.float64),
            "fps": np.float64(self.fps),
            "seed": np.int64(self.seed),
            "objects_json": np.array(json.dumps(self.objects)),
        }

    def save(self, out_dir: str | Path, video: bool = True) -> Path:
        """Write ``OUT/frames/frame_0000.png...``, ``OUT/video.mp4`` and ``OUT/gt.npz``; returns OUT."""
        import cv2

        out = Path(out_dir)
        (out / "frames").mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(self.rgb):
            cv2.imwrite(str(out / "frames" / f"frame_{i:04d}.png"), img[..., ::-1])
        if video:
            h, w = self.size_hw
            writer = cv2.VideoWriter(str(out / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (w, h))
            if not writer.isOpened():
                raise InputError(f"synthetic scene: OpenCV cannot write {out / 'video.mp4'} (mp4v codec); "
                                 "check the OpenCV build or pass video=False")
            for img in self.rgb:
                writer.write(np.ascontiguousarray(img[..., ::-1]))
            writer.release()
        np.savez_compressed(out / "gt.npz", **self.gt_arrays())
        return out


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """The renderer's matrix products are tall and thin (M x 3 @ 3 x K): threaded BLAS only adds
    overhead there (3-4x slower on a busy 2-core machine), so pin BLAS to one thread if we can."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it rendering is just slower on busy machines
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def make_scene(n_frames: int = 30, size_hw: tuple[int, int] = (288, 512), seed: int = 0, n_objects: int = 1,
               *, fov_deg: float = 60.0, fps: float = 10.0, supersample: int = 2,
               motion_scale: float = 1.0) -> SyntheticScene:
    """Render a synthetic dynamic scene.

    Args:
        n_frames: number of frames N (>= 1).
        size_hw: (H, W) image size in pixels.
        seed: seed of everything random (textures, camera path, objects).
        n_objects: 0 (fully static scene) to 3 independently moving objects.
        fov_deg: horizontal field of view in degrees.
        fps: frame rate; motion is defined in seconds, so a higher fps means smaller steps.
        supersample: s -> colours average an s x s grid of rays per pixel (anti-aliasing); the GT
            (depth, ids) always comes from the ray through the pixel centre.
        motion_scale: multiplies camera and object motion amplitudes.

    Returns:
        the scene, with rgb, depth, masks and poses filled in.
    """
    h, w = (int(v) for v in size_hw)
    if n_frames < 1 or h < 2 or w < 2:
        raise InputError(f"make_scene: need n_frames >= 1 and size_hw >= (2, 2), got n_frames={n_frames}, "
                         f"size_hw={size_hw}; pass e.g. n_frames=30, size_hw=(288, 512)")
    if not 0 <= n_objects <= 3:
        raise InputError(f"make_scene: n_objects must be 0..3, got {n_objects}; pass 0 for a static scene")
    if not 10.0 <= fov_deg <= 150.0 or supersample < 1 or fps <= 0:
        raise InputError(f"make_scene: fov_deg must be in [10, 150], supersample >= 1, fps > 0; got "
                         f"fov_deg={fov_deg}, supersample={supersample}, fps={fps}")
    r = _Renderer(n_frames, (h, w), seed, n_objects, fov_deg, fps, motion_scale)
    rgb = np.empty((n_frames, h, w, 3), np.uint8)
    depth = np.empty((n_frames, h, w), np.float32)
    ids = np.empty((n_frames, h, w), np.uint8)
    with _single_threaded_blas():
        for i in range(n_frames):
            rgb[i], depth[i], ids[i] = r.render(i, supersample)
    objects = [{"kind": o.kind, "size": o.size} for o in r.objects]
    return SyntheticScene(rgb=rgb, depth=depth, dynamic_mask=ids > 0, object_id=ids, K=r.K,
                          cam_to_world=r.world_from_cam, world_from_object=r.world_from_object,
                          timestamps=r.timestamps, objects=objects, seed=seed, fps=fps)


def load_scene(path: str | Path) -> SyntheticScene:
    """Read a scene written by :meth:`SyntheticScene.save` (frames from the lossless PNGs)."""
    import cv2

    root = Path(path)
    gt_path = root / "gt.npz" if root.is_dir() else root
    root = gt_path.parent
    if not gt_path.is_file():
        raise InputError(f"load_scene: no gt.npz in {root}; expected the layout written by "
                         "`monst3r-fw synth OUT` (OUT/gt.npz, OUT/frames/)")
    with np.load(gt_path, allow_pickle=False) as z:
        gt = {k: z[k] for k in z.files}
    missing = {"depth", "K", "cam_to_world"} - set(gt)
    if missing:
        raise InputError(f"load_scene: {gt_path} lacks {sorted(missing)}; regenerate it with `monst3r-fw synth`")
    n, h, w = gt["depth"].shape
    frame_files = sorted((root / "frames").glob("frame_*.png"))
    if len(frame_files) != n:
        raise InputError(f"load_scene: {root / 'frames'} has {len(frame_files)} frame_*.png files, gt.npz has "
                         f"{n} frames; regenerate the scene")
    rgb = np.stack([cv2.imread(str(f), cv2.IMREAD_COLOR)[..., ::-1] for f in frame_files])
    obj_id = gt.get("object_id", gt.get("dynamic_mask", np.zeros((n, h, w), bool)).astype(np.uint8))
    wfo = gt.get("world_from_object", np.zeros((n, 0, 4, 4)))
    return SyntheticScene(
        rgb=np.ascontiguousarray(rgb), depth=gt["depth"].astype(np.float32),
        dynamic_mask=gt.get("dynamic_mask", obj_id > 0).astype(bool), object_id=obj_id.astype(np.uint8),
        K=gt["K"].astype(np.float64), cam_to_world=gt["cam_to_world"].astype(np.float64),
        world_from_object=wfo.astype(np.float64),
        timestamps=gt.get("timestamps", np.arange(n) / float(gt.get("fps", 10.0))).astype(np.float64),
        objects=json.loads(str(gt["objects_json"])) if "objects_json" in gt else [],
        seed=int(gt.get("seed", 0)), fps=float(gt.get("fps", 10.0)),
    )
