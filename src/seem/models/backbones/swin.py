"""Swin Transformer backbone (the Mask2Former / Semantic-SAM ``D2SwinTransformer``), plain PyTorch.

``SwinTransformer(cfg)(x)`` takes a normalised, padded image ``[B, 3, H, W]`` and returns
``{"res2": [B, C, H/4, W/4], "res3": [B, 2C, H/8, W/8], "res4": [B, 4C, H/16, W/16], "res5": [B, 8C, H/32, W/32]}``
(``ceil`` division when a side is not a multiple), each after its output LayerNorm ``norm{i}``.

Parameter names equal the official ones after removing ``model.backbone.`` (``patch_embed.proj``,
``layers.{s}.blocks.{b}.attn.qkv``, ``layers.{s}.downsample.reduction``, ``norm0..3``, ...).
``relative_position_index`` is a constant recomputed here, registered as a **non-persistent** buffer; the
checkpoint converter checks the stored copy against it.

Official behaviour reproduced on purpose:

- Feature maps are zero-padded to multiples of the window size *after* ``norm1``, and the padded tokens take part
  in window attention (no padding mask): their keys/values equal the qkv bias.
- The shifted-window mask uses ``-100`` (not ``-inf``) and is built on the padded size.
- Blocks with an odd index in a stage are shifted by ``window_size // 2``, whatever the feature size (the official
  code never shrinks the window for small maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.layers import GeluMlp
from seem.models.semantic_sam_config import SwinConfig

__all__ = ["SwinTransformer"]


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def relative_position_index(window: int) -> Tensor:
    """``[window², window²]`` int64 index into the ``(2w-1)²`` relative position bias table (official layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def window_partition(x: Tensor, window: int) -> Tensor:
    """``[B, H, W, C]`` (H, W multiples of ``window``) → ``[B * nW, window², C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of ``window_partition``: ``[B * nW, window², C]`` → ``[B, H, W, C]``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative position bias (official parameter names)."""

    relative_position_index: Tensor

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``[B * nW, N, C]`` windows (N = window²); ``mask``: ``[nW, N, N]`` additive (0 / -100) or None."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B*nW, heads, N, d]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention + MLP, both residual."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, cfg: SwinConfig, drop_path: float) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, cfg.qkv_bias, cfg.qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMlp(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int, shift_mask: Tensor | None) -> Tensor:
        """``x``: ``[B, H*W, C]``; ``shift_mask``: the stage's ``[nW, N, N]`` mask (used only when shifted)."""
        b, _, c = x.shape
        ws = self.window
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # padded tokens (zeros) take part in attention, as official
        hp, wp = h + pad_b, w + pad_r
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(x, ws), mask=shift_mask if self.shift > 0 else None)
        x = window_reverse(windows, ws, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(b, h * w, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging: ``[B, H*W, C]`` → ``[B, ceil(H/2)*ceil(W/2), 2C]`` (odd sides zero-padded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Official SW-MSA mask ``[nW, window², window²]``: 0 inside a region, -100 across regions (on the padded size)."""
    hp = -(-h // window) * window
    wp = -(-w // window) * window
    img = torch.zeros((1, hp, wp, 1), device=device)
    cnt = 0
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for hs in slices:
        for ws in slices:
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, window).squeeze(-1)  # [nW, N]
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).to(dtype)


class SwinStage(nn.Module):
    """``depth`` blocks (odd ones shifted) and an optional patch merging (``downsample``)."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, cfg: SwinConfig, drop_paths: list[float], downsample: bool
    ) -> None:
        super().__init__()
        self.window = cfg.window_size
        self.shift = cfg.window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, cfg.window_size, 0 if i % 2 == 0 else self.shift, cfg, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, int, int]:
        """Returns ``(stage_out [B, H*W, C], next_in [B, H'*W', 2C], H', W')``."""
        mask = None
        if len(self.blocks) > 1:
            mask = shifted_window_mask(h, w, self.window, self.shift, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """``patch_size`` stride conv + LayerNorm; the input is zero-padded right/bottom to a multiple of the patch."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch
        h, w = x.shape[-2:]
        if w % p or h % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Swin backbone returning ``res2..res5`` (see the module docstring for shapes and names)."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        depth_total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(depth_total - 1, 1) for i in range(depth_total)]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads, strict=True)):
            start = sum(cfg.depths[:i])
            self.layers.append(
                SwinStage(cfg.embed_dim * 2**i, depth, heads, cfg, dpr[start : start + depth], i < len(cfg.depths) - 1)
            )
        self.out_channels = cfg.out_channels
        for i, c in enumerate(self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: normalised image ``[B, 3, H, W]`` → ``{"res2": ..., "res5": ...}`` (NCHW, float)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SwinTransformer expects [B, 3, H, W], got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outs: dict[str, Tensor] = {}
        for i, stage in enumerate(self.layers):
            out, x, nh, nw = stage(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs[f"res{i + 2}"] = out.view(-1, h, w, self.out_channels[i]).permute(0, 3, 1, 2).contiguous()
            h, w = nh, nw
        return outs
