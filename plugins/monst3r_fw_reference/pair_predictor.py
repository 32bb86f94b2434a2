"""Pair-predictor stages ``monst3r`` and ``dust3r``: pointmaps for every directed pair (i, j).

The official pipeline re-encodes both images of every directed pair, although the encoder is frozen
and each frame's tokens do not depend on its partner. Here every frame is encoded once; its tokens
are reused by all of its pairs, and only the decoders and heads run per pair (batched). With the
default MonST3R graph (``swinstride-5-noncyclic``, about 10 pairs per frame) that removes ~95% of
the encoder work. The DPT heads also have a part that reads only the encoder tokens (hook 0 up to
``refinenet1.resConfUnit1``, about a fifth of each head's work); it is computed once per frame and
role as well, when it fits in a quarter of the free memory. ``cache_encoder: false`` keeps the
official per-pair path, for comparison.

Resume: when the runner hands over a workspace (a Zarr group), results are written there per
pair with a ``done`` flag, and an interrupted run skips the pairs already done.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.fingerprint import InputFile
from monst3r_framework.stages import PairInputs, PairPredictions, PairPredictor, RunContext, StageConfig

from .network.env import CHECKPOINT_ENV, DUST3R_CHECKPOINT_ENV

if TYPE_CHECKING:
    import torch

    from .network.model import Monst3rNetwork

_AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names
_OUTPUTS = ("pts3d_i", "pts3d_j", "conf_i", "conf_j")


class Monst3rPairConfig(StageConfig):
    type: Literal["monst3r"] = "monst3r"
    checkpoint: Annotated[Optional[str], InputFile(env=CHECKPOINT_ENV)] = Field(
        None, description="Network weights (.pth, .safetensors or a folder); None -> $MONST3R_CHECKPOINT.")
    batch_size: int = Field(
        0, ge=0, le=4096, description="Directed pairs decoded per batch; 0 = chosen from the free memory.")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Encoder/decoder compute dtype via autocast (CUDA only; heads always run in fp32).")
    storage_dtype: Literal["float32", "float16"] = Field(
        "float32", description="dtype of the stored pointmaps and confidences.")
    cache_encoder: bool = Field(
        True, description="Encode each frame once and reuse its tokens for all its pairs (False: re-encode per pair).")


class Dust3rPairConfig(Monst3rPairConfig):
    type: Literal["dust3r"] = "dust3r"  # type: ignore[assignment]
    checkpoint: Annotated[Optional[str], InputFile(env=DUST3R_CHECKPOINT_ENV)] = Field(
        None, description="DUSt3R weights (224 linear or 512 DPT); None -> $DUST3R_CHECKPOINT.")


def images_to_network(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 in [-1, 1] on ``device`` (DUSt3R's ImgNorm)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def _available_bytes(device: torch.device) -> int:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_batch_size(model: Monst3rNetwork, height: int, width: int, device: torch.device) -> int:
    """Pairs per batch that fit in about half of the free memory (CPU: at most 4, speed is flat beyond)."""
    cfg = model.config
    tokens = (height // cfg.patch_size) * (width // cfg.patch_size)
    # DPT activations peak at ~3 KB per pixel (one head at a time, fp32); decoder keeps L+1 token maps
    # per view; the two outputs are 8 floats per pixel.
    head = height * width * (3072 if cfg.head_type == "dpt" else 512)
    decoder = 2 * (cfg.dec_depth + 1) * tokens * max(cfg.dec_embed_dim, cfg.enc_embed_dim) * 4 * 3
    per_pair = head + decoder + height * width * 8 * 4
    fit = int(0.5 * _available_bytes(device) // max(per_pair, 1))
    cap = 64 if device.type == "cuda" else 4
    return max(1, min(cap, fit))


class MonST3RPairPredictor(PairPredictor):
    """MonST3R pointmaps for every directed pair, encoder tokens cached per frame.

    Output: :class:`PairPredictions` with pts3d_i (P, H, W, 3) = view i in camera i, pts3d_j
    (P, H, W, 3) = view j in camera i, conf_i / conf_j (P, H, W) >= 1.

    Attributes:
        encoder_passes: images pushed through the encoder by the last :meth:`run` (== number of
            distinct frames in the pairs when ``cache_encoder`` is on; 2 x pairs otherwise).
    """

    name: ClassVar[str] = "monst3r"
    config_model = Monst3rPairConfig
    config: Monst3rPairConfig
    env_var: ClassVar[str] = CHECKPOINT_ENV

    def __init__(self, config: StageConfig, model: Optional[Monst3rNetwork] = None) -> None:
        import torch

        super().__init__(config)
        self.model = model
        self.encoder_passes = 0
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ setup
    def setup(self, ctx: RunContext) -> None:
        import torch

        self.device = torch.device(ctx.device)
        if self.model is None:
            from .network import load_model

            self.model = load_model(self.config.checkpoint, self.device, env_var=self.env_var)
        else:
            self.model = self.model.to(self.device).eval()
        if self.config.dtype != "fp32" and self.device.type != "cuda":
            ctx.log(f"{self.name}: dtype {self.config.dtype} ignored on {self.device.type} (autocast only on CUDA); using fp32")

    def _autocast(self):
        import torch

        if self.device.type == "cuda" and self.config.dtype in _AUTOCAST:
            return torch.autocast("cuda", dtype=getattr(torch, _AUTOCAST[self.config.dtype]))
        return nullcontext()

    # ------------------------------------------------------------------ output buffers
    def _buffers(self, ctx: RunContext, pairs: np.ndarray, h: int, w: int) -> tuple[dict[str, Any], Any, np.ndarray]:
        """Output arrays (``ctx.output``: Zarr in the workspace under the runner, else numpy), the
        (P,) done-flag output and the flags left by an interrupted run (valid only for the same pairs)."""
        p = len(pairs)
        dtype = np.dtype(self.config.storage_dtype)
        shapes = {"pts3d_i": (p, h, w, 3), "pts3d_j": (p, h, w, 3), "conf_i": (p, h, w), "conf_j": (p, h, w)}
        outputs = {k: ctx.output(k, s, dtype) for k, s in shapes.items()}
        stored_pairs = ctx.output("pairs", pairs.shape, np.int64)
        flags = ctx.output("done", (p,), bool, chunks=(max(1, p),))
        done = np.asarray(flags[:], bool)
        if not np.array_equal(np.asarray(stored_pairs[:]), pairs):  # another graph: nothing is reusable
            stored_pairs[:] = pairs
            done[:] = False
            flags[:] = done
        if done.any():
            ctx.log(f"{self.name}: resuming, {int(done.sum())}/{p} pairs already done")
        return outputs, flags, done

    # ------------------------------------------------------------------ run
    def run(self, inputs: PairInputs, ctx: RunContext) -> PairPredictions:
        import torch

        if self.model is None:
            self.setup(ctx)
        model = self.model
        frames = inputs.frames
        pairs = np.asarray(inputs.pairs, dtype=np.int64).reshape(-1, 2)
        n, (h, w) = frames.n_frames, frames.size_hw
        label = ctx.stage_label or f"pair_predictor ({self.name})"
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
            bad = pairs[(pairs < 0).any(1) | (pairs >= n).any(1)][0].tolist()
            raise StageError(f"{label}: pair {tuple(bad)} refers to a frame outside 0..{n - 1}; rebuild the scene graph")
        ps = model.config.patch_size
        if h % ps or w % ps:
            raise StageError(f"{label}: frames are {h}x{w}, not multiples of {ps}; set input sizes to multiples of {ps}")

        outputs, flags, done = self._buffers(ctx, pairs, h, w)
        todo = np.flatnonzero(~done)
        bs = self.config.batch_size or auto_batch_size(model, h, w, self.device)
        start_count = model.encoder_images
        storage = np.dtype(self.config.storage_dtype)
        shape = torch.tensor([[h, w]], dtype=torch.int64)

        with torch.no_grad(), ctx.progress(len(pairs), label) as bar:
            bar.advance(len(pairs) - len(todo))
            cache = (self._encode_frames(frames.rgb, np.unique(pairs[todo]), bs, shape)
                     if self.config.cache_encoder and len(todo) else None)
            for s in range(0, len(todo), bs):
                idx = todo[s:s + bs]
                i, j = pairs[idx, 0], pairs[idx, 1]
                bshape = shape.expand(len(idx), 2)
                with self._autocast():
                    skip1 = skip2 = None
                    if cache is not None:
                        ti = torch.as_tensor(cache.row[i], device=self.device)
                        tj = torch.as_tensor(cache.row[j], device=self.device)
                        pos_b = cache.pos.expand(len(idx), -1, -1)
                        dec1, dec2 = model.decode(cache.tokens[ti], pos_b, cache.tokens[tj], pos_b)
                        if cache.skip1 is not None:
                            skip1, skip2 = cache.skip1[ti], cache.skip2[tj]
                    else:
                        img_i = images_to_network(_take(frames.rgb, i), self.device)
                        img_j = images_to_network(_take(frames.rgb, j), self.device)
                        feat1, feat2, pos1, pos2 = model.encode_pair(img_i, img_j, bshape, bshape)
                        dec1, dec2 = model.decode(feat1, pos1, feat2, pos2)
                pred1, pred2 = model.heads(dec1, dec2, bshape, bshape, skip1, skip2)
                result = {
                    "pts3d_i": pred1["pts3d"], "pts3d_j": pred2["pts3d_in_other_view"],
                    "conf_i": pred1["conf"], "conf_j": pred2["conf"],
                }
                for key, value in result.items():
                    arr = value.float().cpu().numpy().astype(storage, copy=False)
                    if isinstance(outputs[key], np.ndarray):
                        outputs[key][idx] = arr
                    else:  # workspace output: one whole chunk per pair
                        for row_k, p in enumerate(idx.tolist()):
                            outputs[key][p] = arr[row_k]
                done[idx] = True
                flags[:] = done  # after the outputs: a pair is marked done only once it is stored
                bar.advance(len(idx))
        self.encoder_passes = model.encoder_images - start_count
        return PairPredictions(pairs=pairs, **outputs)

    def _encode_frames(self, rgb: Any, needed: np.ndarray, bs: int, shape: torch.Tensor) -> "_FrameCache":
        """Encode each needed frame once; also precompute the per-frame part of both DPT heads
        when it fits in a quarter of the free memory (it is ~20% of the head's work)."""
        import torch

        model = self.model
        row = np.full(int(needed.max()) + 1, -1, np.int64)
        row[needed] = np.arange(len(needed))
        h, w = int(shape[0, 0]), int(shape[0, 1])
        skip_bytes = 2 * len(needed) * 256 * (4 * h // model.config.patch_size) * (4 * w // model.config.patch_size) * 4
        use_skip = model.config.head_type == "dpt" and skip_bytes < 0.25 * _available_bytes(self.device)
        tokens, skip1, skip2 = [], [], []
        pos = None
        ebs = max(1, 2 * bs)
        for s in range(0, len(needed), ebs):
            ids = needed[s:s + ebs]
            img = images_to_network(_take(rgb, ids), self.device)
            with self._autocast():
                tok, p = model.encode(img, shape.expand(len(ids), 2))
            tokens.append(tok)
            pos = p[:1]
            if use_skip:
                skip1.append(model.head_encoder_skip(1, tok, (h, w)))
                skip2.append(model.head_encoder_skip(2, tok, (h, w)))
        return _FrameCache(
            tokens=torch.cat(tokens), pos=pos, row=row,
            skip1=torch.cat(skip1) if use_skip else None, skip2=torch.cat(skip2) if use_skip else None,
        )


@dataclass
class _FrameCache:
    """Per-frame encoder results. tokens (F', N, C); pos (1, N, 2) int64; row: (F,) frame -> row of
    tokens (-1 = not encoded); skip1/skip2: (F', 256, 4N_h, 4N_w) head-1/head-2 features or None."""

    tokens: torch.Tensor
    pos: torch.Tensor
    row: np.ndarray
    skip1: Optional[torch.Tensor] = None
    skip2: Optional[torch.Tensor] = None


def _take(rgb: Any, idx: np.ndarray) -> np.ndarray:
    """Frames ``idx`` of a (F, H, W, 3) numpy or Zarr array, as a numpy batch."""
    if isinstance(rgb, np.ndarray):
        return rgb[idx]
    return np.stack([np.asarray(rgb[int(k)]) for k in idx])


class Dust3rPairPredictor(MonST3RPairPredictor):
    """DUSt3R checkpoints (224 linear or 512 DPT head) as a pair predictor; same outputs as ``monst3r``."""

    name: ClassVar[str] = "dust3r"
    config_model = Dust3rPairConfig
    config: Dust3rPairConfig  # type: ignore[assignment]
    env_var: ClassVar[str] = DUST3R_CHECKPOINT_ENV


STAGES = (MonST3RPairPredictor, Dust3rPairPredictor)

__all__ = ["Dust3rPairConfig", "Dust3rPairPredictor", "MonST3RPairPredictor", "Monst3rPairConfig", "STAGES",
           "auto_batch_size", "images_to_network"]
