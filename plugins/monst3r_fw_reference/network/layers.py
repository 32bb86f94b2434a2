"""Transformer building blocks of the CroCo/DUSt3R/MonST3R network: 2-D RoPE, attention, ViT
encoder and cross-attending decoder blocks, patch embedding.

Parameter names follow the official state dict (``attn.qkv``, ``cross_attn.projq``, ``norm_y``, ...)
so checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# 2-D rotary position embedding
# --------------------------------------------------------------------------------------------


def rope_angle_table(dim: int, length: int, base: float = 100.0, dtype: torch.dtype = torch.float32,
                     device: Optional[torch.device] = None) -> tuple[Tensor, Tensor]:
    """cos/sin tables for 1-D RoPE over integer positions ``0..length-1``.

    The angles are built in float32 whatever ``dtype`` is (``inv_freq[k] = 1 / base**(2k/dim)``,
    ``angle = pos * inv_freq``), and only then cast to ``dtype`` before cos/sin. This is what the
    official code does, and a float64 run only matches the official float64 reference to 1e-9 if the
    float32 rounding of the angles is reproduced.

    Args:
        dim: channels rotated by this axis (even).
        length: number of positions.
        base: RoPE base (100 for MonST3R/DUSt3R).

    Returns:
        cos, sin: (length, dim) in ``dtype``; the angle vector is duplicated ``[a_0..a_{dim/2-1}] * 2``.
    """
    exponents = torch.arange(0, dim, 2, device=device).float() / dim
    inv_freq = 1.0 / (base ** exponents)                       # float32
    positions = torch.arange(length, device=device, dtype=torch.float32)
    angles = (positions[:, None] * inv_freq[None, :]).to(dtype)  # outer product in float32, then cast
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class RoPE2D(nn.Module):
    """2-D rotary embedding: the first half of each head's channels is rotated by the patch row,
    the second half by the patch column (halves split, ``rotate_half([u, v]) = [-v, u]``)."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def tables(self, head_dim: int, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """Gather cos/sin for given positions, ready to broadcast over heads.

        Args:
            head_dim: per-head channel count Dh (multiple of 4).
            positions: (B, N, 2) int64 (row, col).
            dtype: dtype of the tokens they will rotate.

        Returns:
            (cos_row, sin_row, cos_col, sin_col), each (B, 1, N, Dh/2).
        """
        half = head_dim // 2
        length = int(positions.max()) + 1
        key = (half, length, positions.device, dtype)
        if key not in self._cache:
            self._cache[key] = rope_angle_table(half, length, self.base, dtype, positions.device)
        cos, sin = self._cache[key]
        rows, cols = positions[..., 0], positions[..., 1]
        return (cos[rows][:, None], sin[rows][:, None], cos[cols][:, None], sin[cols][:, None])

    @staticmethod
    def apply(tokens: Tensor, tables: tuple[Tensor, ...]) -> Tensor:
        """Rotate (B, heads, N, Dh) tokens with tables from :meth:`tables`."""
        cos_r, sin_r, cos_c, sin_c = tables
        row_part, col_part = tokens.chunk(2, dim=-1)
        return torch.cat((_rotate(row_part, cos_r, sin_r), _rotate(col_part, cos_c, sin_c)), dim=-1)

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens (B, heads, N, Dh), positions (B, N, 2) int64 -> rotated tokens, same shape."""
        return self.apply(tokens, self.tables(tokens.shape[-1], positions, tokens.dtype))


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


# --------------------------------------------------------------------------------------------
# Attention and blocks
# --------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, ...]) -> Tensor:
        b, n, c = x.shape
        # (B, N, 3, heads, Dh) -> (3, B, heads, N, Dh): q, k, v are consecutive dim-sized chunks
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = RoPE2D.apply(q, rope), RoPE2D.apply(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate q/k/v projections; RoPE with each side's positions."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, context: Tensor, rope_q: tuple[Tensor, ...], rope_k: tuple[Tensor, ...]) -> Tensor:
        b, nq, c = query.shape
        nk = context.shape[1]
        h, dh = self.num_heads, c // self.num_heads
        q = self.projq(query).reshape(b, nq, h, dh).transpose(1, 2)
        k = self.projk(context).reshape(b, nk, h, dh).transpose(1, 2)
        v = self.projv(context).reshape(b, nk, h, dh).transpose(1, 2)
        q, k = RoPE2D.apply(q, rope_q), RoPE2D.apply(k, rope_k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: ``x += Attn(LN1 x); x += MLP(LN2 x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, rope: tuple[Tensor, ...]) -> Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """``x += SA(LN1 x); x += CA(LN2 x, LN_y y); x += MLP(LN3 x)``; y (the other view) is read only."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_mem: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS) if norm_mem else nn.Identity()

    def forward(self, x: Tensor, y: Tensor, rope_x: tuple[Tensor, ...], rope_y: tuple[Tensor, ...]) -> Tensor:
        x = x + self.attn(self.norm1(x), rope_x)
        y_normed = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_normed, rope_x, rope_y)
        return x + self.mlp(self.norm3(x))


# --------------------------------------------------------------------------------------------
# Patch embedding
# --------------------------------------------------------------------------------------------


def grid_positions(batch: int, rows: int, cols: int, device: torch.device) -> Tensor:
    """(batch, rows*cols, 2) int64 (row, col) positions, row-major over the patch grid."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    pos = torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(rows * cols, 2)
    return pos[None].expand(batch, -1, -1)


class PatchEmbed(nn.Module):
    """16x16 stride-16 convolution to tokens (row-major) plus integer (row, col) positions.

    With ``many_ar=True`` (the official ``ManyAR_PatchEmbed``, training layout) every image tensor
    is landscape and samples whose ``true_shape`` is portrait are stored transposed; they are
    transposed back before projection, so their tokens and positions follow the portrait grid.
    """

    def __init__(self, patch_size: int, embed_dim: int, many_ar: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.many_ar = many_ar
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def _check(self, img: Tensor) -> None:
        h, w = img.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}; resize or crop the frames")

    def _embed(self, img: Tensor) -> tuple[Tensor, Tensor]:
        x = self.proj(img)
        b, _, rows, cols = x.shape
        return x.flatten(2).transpose(1, 2), grid_positions(b, rows, cols, img.device)

    def forward(self, img: Tensor, true_shape: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """img (B, 3, H, W) -> tokens (B, N, C), positions (B, N, 2) int64."""
        self._check(img)
        if not self.many_ar:
            return self._embed(img)
        b, _, h, w = img.shape
        if w < h:
            raise ValueError(f"ManyAR patch embed expects landscape image tensors (W >= H), got {h}x{w}")
        if true_shape is None:
            return self._embed(img)
        shape = torch.as_tensor(true_shape, device=img.device)
        portrait = shape[:, 1] < shape[:, 0]
        if not bool(portrait.any()):
            return self._embed(img)
        n = (h // self.patch_size) * (w // self.patch_size)
        tokens = img.new_zeros((b, n, self.proj.out_channels), dtype=self.proj.weight.dtype)
        pos = torch.zeros((b, n, 2), dtype=torch.int64, device=img.device)
        land = ~portrait
        if bool(land.any()):
            tokens[land], pos[land] = self._embed(img[land])
        tokens[portrait], pos[portrait] = self._embed(img[portrait].transpose(-1, -2))
        return tokens, pos
