"""``AsymmetricCroCo3DStereo`` as MonST3R/DUSt3R use it, split into reusable pieces.

``forward(view1, view2)`` answers the same call as the official model. The pieces
(:meth:`Monst3rNetwork.encode`, :meth:`~Monst3rNetwork.decode`, :meth:`~Monst3rNetwork.heads`,
:meth:`~Monst3rNetwork.decode_and_head`) let a caller encode each frame once and reuse its tokens
for every pair, which the official forward cannot do.

Differences from the official forward, on purpose:

* The "symmetrised batch" shortcut (reading ``view['instance']`` to halve the encoder work) is not
  taken; ``instance`` is accepted and ignored. Per-frame caching gives the same saving without
  trusting ids, and never hits the official ``IndexError`` for odd batches.
* The heads run with autocast off on tokens cast to the heads' own parameter dtype (the official
  code casts to float32), so ``model.double()`` runs end to end in float64.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .config import NetworkConfig
from .heads import make_head
from .layers import LN_EPS, DecoderBlock, EncoderBlock, PatchEmbed, RoPE2D


def _no_autocast(device_type: str):
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


class Monst3rNetwork(nn.Module):
    """Siamese ViT encoder, two cross-attending decoders, two pointmap heads.

    Attributes:
        config: the :class:`NetworkConfig` it was built from.
        encoder_images: number of images pushed through the encoder so far (a counter for tests
            and benchmarks; reset it freely).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.patch_size, c.enc_embed_dim, many_ar=c.patch_embed_cls == "ManyAR_PatchEmbed")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))  # in checkpoints, unused at inference
        self.rope = RoPE2D(c.rope_base)
        self.enc_blocks = nn.ModuleList(
            [EncoderBlock(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio) for _ in range(c.enc_depth)]
        )
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=LN_EPS)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            [DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_im2_in_dec) for _ in range(c.dec_depth)]
        )
        self.dec_blocks2 = nn.ModuleList(
            [DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_im2_in_dec) for _ in range(c.dec_depth)]
        )
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=LN_EPS)
        self.downstream_head1 = make_head(c)
        self.downstream_head2 = make_head(c)
        self.encoder_images = 0

    # ------------------------------------------------------------------ encoder
    def encode(self, img: Tensor, true_shape: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Encode a batch of images.

        Args:
            img: (B, 3, H, W) float in [-1, 1]; H, W multiples of the patch size.
            true_shape: optional (B, 2) int (height, width); only read by the ManyAR patch embed.

        Returns:
            tokens (B, N, enc_embed_dim) after ``enc_norm``, positions (B, N, 2) int64 (row, col).
        """
        x, pos = self.patch_embed(img, true_shape)
        rope = self.rope.tables(self.config.enc_embed_dim // self.config.enc_num_heads, pos, x.dtype)
        for blk in self.enc_blocks:
            x = blk(x, rope)
        self.encoder_images += int(img.shape[0])
        return self.enc_norm(x), pos

    # ------------------------------------------------------------------ decoder
    def decode(self, feat1: Tensor, pos1: Tensor, feat2: Tensor, pos2: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Run both decoders, updating the two views simultaneously.

        Args:
            feat1, feat2: (B, N1|N2, enc_embed_dim) encoder tokens of view 1 and view 2.
            pos1, pos2: (B, N1|N2, 2) int64 positions.

        Returns:
            Two lists of ``dec_depth + 1`` tensors: ``[encoder tokens, layer 1, ..., layer L]`` with
            ``dec_norm`` applied to the last entry (the head inputs).
        """
        dh = self.config.dec_embed_dim // self.config.dec_num_heads
        f1, f2 = self.decoder_embed(feat1), self.decoder_embed(feat2)
        rope1 = self.rope.tables(dh, pos1, f1.dtype)
        rope2 = self.rope.tables(dh, pos2, f2.dtype)
        out1, out2 = [feat1], [feat2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2, rope1, rope2), blk2(f2, f1, rope2, rope1)
            out1.append(f1)
            out2.append(f2)
        out1[-1] = self.dec_norm(out1[-1])
        out2[-1] = self.dec_norm(out2[-1])
        return out1, out2

    # ------------------------------------------------------------------ heads
    def head_raw(self, head: int, tokens: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """Raw (B, 4, H, W) output of head 1 or 2 before post-processing (no landscape wrapper)."""
        module = self.downstream_head1 if head == 1 else self.downstream_head2
        return module.raw(tokens, image_size)

    def head_encoder_skip(self, head: int, enc_tokens: Tensor, image_size: tuple[int, int]) -> Optional[Tensor]:
        """Per-frame part of head 1 or 2 (see ``DPTAdapter.encoder_skip``); None for the linear head.

        Args:
            enc_tokens: (B, N, enc_embed_dim) from :meth:`encode`.
            image_size: (H, W) of the images (inference layout).
        """
        module = self.downstream_head1 if head == 1 else self.downstream_head2
        dtype = next(module.parameters()).dtype
        with _no_autocast(enc_tokens.device.type):
            return module.encoder_skip(enc_tokens.to(dtype), image_size)

    def _run_head(self, head: int, tokens: Sequence[Tensor], true_shape: Tensor,
                  encoder_skip: Optional[Tensor] = None) -> dict[str, Tensor]:
        module = self.downstream_head1 if head == 1 else self.downstream_head2
        shape = torch.as_tensor(true_shape).detach().to("cpu", torch.int64)
        if not self.config.landscape_only:
            if not bool((shape == shape[0:1]).all()):
                raise ValueError(
                    f"all true_shape entries of a batch must be identical on the inference path, got {shape.tolist()}"
                )
            return module(tokens, (int(shape[0, 0]), int(shape[0, 1])), encoder_skip)
        if encoder_skip is not None:
            raise ValueError("precomputed head features are only supported on the inference path (landscape_only=False)")
        # Training layout: tensors are landscape; portrait samples run in their own orientation and
        # come back transposed into the landscape layout.
        h, w = int(shape.min()), int(shape.max())
        portrait = shape[:, 1] < shape[:, 0]
        if not bool(portrait.any()):
            return module(tokens, (h, w))
        if bool(portrait.all()):
            return {k: v.transpose(1, 2) for k, v in module(tokens, (w, h)).items()}
        dev_portrait = portrait.to(tokens[0].device)
        land_out = module([t[~dev_portrait] for t in tokens], (h, w))
        port_out = module([t[dev_portrait] for t in tokens], (w, h))
        out = {}
        for key, land in land_out.items():
            full = land.new_empty((len(shape),) + tuple(land.shape[1:]))
            full[~dev_portrait] = land
            full[dev_portrait] = port_out[key].transpose(1, 2)
            out[key] = full
        return out

    def heads(self, dec1: Sequence[Tensor], dec2: Sequence[Tensor], shape1: Tensor, shape2: Tensor,
              skip1: Optional[Tensor] = None, skip2: Optional[Tensor] = None
              ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Decoder outputs -> (pred1, pred2) with ``pts3d``/``conf`` and ``pts3d_in_other_view``/``conf``.

        ``skip1`` / ``skip2``: optional per-frame head features from :meth:`head_encoder_skip`
        (head 1 on view 1's tokens, head 2 on view 2's), so they need not be recomputed per pair.
        """
        dtype = next(self.downstream_head1.parameters()).dtype
        with _no_autocast(dec1[-1].device.type):
            pred1 = self._run_head(1, [t.to(dtype) for t in dec1], shape1, skip1)
            pred2 = self._run_head(2, [t.to(dtype) for t in dec2], shape2, skip2)
        pred2["pts3d_in_other_view"] = pred2.pop("pts3d")
        return pred1, pred2

    def decode_and_head(self, feat1: Tensor, pos1: Tensor, shape1: Tensor, feat2: Tensor, pos2: Tensor,
                        shape2: Tensor, skip1: Optional[Tensor] = None, skip2: Optional[Tensor] = None
                        ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Cached-token entry point: encoder tokens of both views -> (pred1, pred2).

        Args:
            feat1, feat2: (B, N, enc_embed_dim) tokens from :meth:`encode`.
            pos1, pos2: (B, N, 2) int64 positions from :meth:`encode`.
            shape1, shape2: (B, 2) int (height, width) of each view.
            skip1, skip2: optional cached per-frame head features (:meth:`head_encoder_skip`).

        Returns:
            pred1 with ``pts3d`` (B, H, W, 3) in camera 1 and ``conf`` (B, H, W); pred2 with
            ``pts3d_in_other_view`` (B, H, W, 3) in camera 1 and ``conf`` (B, H, W).
        """
        dec1, dec2 = self.decode(feat1, pos1, feat2, pos2)
        return self.heads(dec1, dec2, shape1, shape2, skip1, skip2)

    # ------------------------------------------------------------------ official call
    @staticmethod
    def _true_shape(view: Mapping[str, Any], img: Tensor) -> Tensor:
        shape = view.get("true_shape")
        if shape is None:
            return torch.tensor(img.shape[-2:])[None].repeat(img.shape[0], 1)
        return torch.as_tensor(shape)

    def encode_pair(self, img1: Tensor, img2: Tensor, shape1: Tensor, shape2: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encode both views; one batched call when the image sizes agree (as the official code)."""
        if img1.shape[-2:] == img2.shape[-2:]:
            tokens, pos = self.encode(torch.cat((img1, img2)), torch.cat((shape1, shape2)))
            feat1, feat2 = tokens.chunk(2)
            pos1, pos2 = pos.chunk(2)
            return feat1, feat2, pos1, pos2
        feat1, pos1 = self.encode(img1, shape1)
        feat2, pos2 = self.encode(img2, shape2)
        return feat1, feat2, pos1, pos2

    def forward(self, view1: Mapping[str, Any], view2: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Official-style call.

        Args:
            view1, view2: dicts with ``img`` (B, 3, H, W) in [-1, 1], ``true_shape`` (B, 2) int
                (height, width) and ``instance`` (list of B str, ignored).

        Returns:
            pred1 (``pts3d`` (B, H, W, 3) view 1 in camera 1, ``conf`` (B, H, W)) and pred2
            (``pts3d_in_other_view`` (B, H, W, 3) view 2 in camera 1, ``conf`` (B, H, W)).
        """
        img1, img2 = view1["img"], view2["img"]
        shape1, shape2 = self._true_shape(view1, img1), self._true_shape(view2, img2)
        feat1, feat2, pos1, pos2 = self.encode_pair(img1, img2, shape1, shape2)
        return self.decode_and_head(feat1, pos1, shape1, feat2, pos2, shape2)


#: Familiar name for users of the official code.
AsymmetricCroCo3DStereo = Monst3rNetwork
