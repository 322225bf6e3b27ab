"""Small building blocks shared by several model parts.

Everything here is plain PyTorch and device-agnostic. Parameter names follow the official SEEM /
Semantic-SAM modules so that official checkpoints map onto ours by prefix only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine position embedding.

    Args:
        num_pos_feats: features per axis; the output has ``2 * num_pos_feats`` channels (y first, then x).
        temperature: frequency base.
        normalize: if True, cumulative coordinates are divided by the last one and multiplied by ``scale``.
        scale: see ``normalize`` (default 2π).

    ``forward(x)`` takes any ``[B, C, H, W]`` tensor (only its shape, device and dtype are used) and returns
    ``[B, 2 * num_pos_feats, H, W]``.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000.0,
        normalize: bool = False,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        ones = torch.ones((b, h, w), device=x.device, dtype=torch.float32)
        y_embed = ones.cumsum(1)
        x_embed = ones.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (not after the last).

    Parameters are ``layers.{i}.weight/bias`` as in the official code. Works on any ``[..., input_dim]``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class GeluMlp(nn.Module):
    """``fc1 → GELU → fc2`` on ``[..., C]`` (the transformer block MLP of FocalNet and Swin; keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm and activation (detectron2's ``Conv2d`` wrapper).

    The norm is a child named ``norm`` so the keys are ``weight``, ``bias``, ``norm.weight``, ``norm.bias``
    exactly as in official checkpoints.
    """

    def __init__(
        self,
        *args: object,
        norm: nn.Module | None = None,
        activation: nn.Module | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
