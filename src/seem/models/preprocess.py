"""Image preprocessing shared by SEEM and Semantic-SAM: normalise, then zero-pad to a size multiple.

This reproduces the official model-side preprocessing: ``(x - pixel_mean) / pixel_std`` on the 0..255 RGB
image, then detectron2 ``ImageList.from_tensors(size_divisibility)``, which zero-pads at the bottom and
right *after* normalisation (so padded pixels are 0 in normalised space, not the mean colour).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["normalize_and_pad", "padded_size"]


def padded_size(height: int, width: int, size_divisibility: int = 32) -> tuple[int, int]:
    """``(Hp, Wp)``: sides rounded up to multiples of ``size_divisibility`` (<= 1: unchanged)."""
    if size_divisibility <= 1:
        return height, width
    d = size_divisibility
    return -(-height // d) * d, -(-width // d) * d


def _as_stat(values: Sequence[float] | Tensor, name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if t.numel() != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t.view(1, 3, 1, 1)


def normalize_and_pad(
    image: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    size_divisibility: int = 32,
) -> Tensor:
    """Normalise RGB uint8 image(s) and zero-pad them bottom/right to a multiple of ``size_divisibility``.

    Args:
        image: ``uint8`` RGB, ``[3, H, W]`` or ``[B, 3, H, W]`` (channels first, values 0..255).
        mean, std: per-channel RGB statistics, 0..255 scale (e.g. ``config.PIXEL_MEAN`` / ``PIXEL_STD``).
        size_divisibility: pad H and W up to multiples of this (32 for SEEM-Focal; <= 1 disables padding).

    Returns:
        ``float32`` ``[B, 3, Hp, Wp]`` on the image's device: ``(image - mean) / std`` in the top-left
        ``H × W`` window and exactly 0 in the padding.

    Raises:
        TypeError: ``image`` is not a tensor or not ``uint8``.
        ValueError: wrong number of dimensions or channels, an empty image, or bad ``mean`` / ``std``.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dtype != torch.uint8:
        raise TypeError(f"image must be uint8 RGB with values 0..255, got dtype {image.dtype}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be [3, H, W] or [B, 3, H, W], got shape {tuple(image.shape)}")
    if image.shape[1] != 3:
        shape = tuple(image.shape)
        raise ValueError(f"image must have 3 (RGB) channels first ([B, 3, H, W]), got shape {shape}")
    b, _, h, w = image.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"image must be non-empty, got shape {tuple(image.shape)}")
    if not isinstance(size_divisibility, int) or isinstance(size_divisibility, bool):
        raise TypeError(f"size_divisibility must be an int, got {type(size_divisibility).__name__}")
    mean_t = _as_stat(mean, "mean", image.device)
    std_t = _as_stat(std, "std", image.device)
    if (std_t <= 0).any():
        raise ValueError(f"std must be positive, got {std_t.flatten().tolist()}")
    x = (image.to(torch.float32) - mean_t) / std_t
    hp, wp = padded_size(h, w, size_divisibility)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h), value=0.0)
    return x
