"""Image backbones.

``FocalNet`` covers both official SEEM flavours (``focal_dw`` Focal-T, ``focal`` Focal-L); ``MobileNetV2`` is the
small backbone of the project's default model. ``build_backbone`` picks one from its config's ``kind``.
"""

from torch import nn

from seem.models.config import BackboneConfig, FocalNetConfig, MobileNetV2Config

from .focalnet import FocalNet
from .mobilenet import MobileNetV2

__all__ = ["FocalNet", "MobileNetV2", "build_backbone"]


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The backbone module of ``cfg`` (``FocalNetConfig`` → ``FocalNet``, ``MobileNetV2Config`` → ``MobileNetV2``).

    Every backbone maps normalised images ``[B, 3, H, W]`` to ``{"res2".."res5": [B, C_i, H/s, W/s]}`` with
    strides 4, 8, 16, 32 and the channels ``cfg.out_channels``.
    """
    if isinstance(cfg, FocalNetConfig):
        return FocalNet(cfg)
    if isinstance(cfg, MobileNetV2Config):
        return MobileNetV2(cfg)
    raise TypeError(f"unknown backbone config {type(cfg).__name__}")
