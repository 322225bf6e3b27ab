"""FPN pixel decoder with a plain transformer encoder on the coarsest map (official
``transformer_encoder_fpn.py: TransformerEncoderPixelDecoder``, from Mask2Former).

Data flow (C = ``conv_dim``, strides in brackets)::

    res5 [32] -> input_proj (1×1) -> transformer encoder (+ sine pos) -> transformer_encoder_features
              -> layer_4 (3×3 conv, GN, ReLU)                              -> y32
    res4 [16] -> adapter_3 (1×1 conv, GN) + nearest-up(y32) -> layer_3    -> y16
    res3 [8]  -> adapter_2 + nearest-up(y16)                -> layer_2    -> y8
    res2 [4]  -> adapter_1 + nearest-up(y8)                 -> layer_1    -> y4 -> mask_features (3×3 conv)

``multi_scale_features`` = [y32, y16, y8] (the three maps the SEEM decoder attends to, in that order).

Parameter names equal the official ones after removing ``sem_seg_head.pixel_decoder.``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PixelDecoderConfig
from ..layers import Conv2dNorm, PositionEmbeddingSine

__all__ = [
    "PixelDecoderOutput",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerEncoderOnly",
    "TransformerEncoderPixelDecoder",
]

_IN_FEATURES = ("res2", "res3", "res4", "res5")


class PixelDecoderOutput(NamedTuple):
    """Outputs of the pixel decoder (a NamedTuple, so it also unpacks like the official 3-tuple).

    Attributes:
        mask_features: ``[B, mask_dim, H/4, W/4]``; per-pixel embeddings that query embeddings are dotted
            with to give mask logits.
        transformer_encoder_features: ``[B, conv_dim, H/32, W/32]``; transformer encoder output on res5
            (before ``layer_4``).
        multi_scale_features: three ``[B, conv_dim, h, w]`` maps at strides 32, 16, 8, in that order.
    """

    mask_features: Tensor
    transformer_encoder_features: Tensor
    multi_scale_features: list[Tensor]


class TransformerEncoderLayer(nn.Module):
    """DETR encoder layer: self-attention (pos added to q and k only) + ReLU FFN, post- or pre-norm.

    ``forward(src [B, N, C], pos [B, N, C]) -> [B, N, C]`` (batch first; the official code is sequence-first,
    which changes nothing numerically).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _attn(self, x: Tensor, pos: Tensor) -> Tensor:
        qk = x + pos
        return self.self_attn(qk, qk, value=x, need_weights=False)[0]

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(F.relu(self.linear1(x)))

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        if self.normalize_before:
            src = src + self._attn(self.norm1(src), pos)
            return src + self._ffn(self.norm2(src))
        src = self.norm1(src + self._attn(src, pos))
        return self.norm2(src + self._ffn(src))


class TransformerEncoder(nn.Module):
    """A stack of ``TransformerEncoderLayer`` (``layers.{i}``) with a final ``norm`` only when pre-norm."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        pre_norm: bool,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, pre_norm) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model) if pre_norm else None

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class TransformerEncoderOnly(nn.Module):
    """Flattens a map, runs ``encoder`` and reshapes back (official ``TransformerEncoderOnly``).

    ``forward(src [B, C, h, w], pos [B, C, h, w]) -> [B, C, h, w]``. No padding mask (SEEM passes none).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        pre_norm: bool,
    ) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(num_layers, d_model, nhead, dim_feedforward, pre_norm)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        b, c, h, w = src.shape
        seq = src.flatten(2).transpose(1, 2)
        pos_seq = pos.flatten(2).transpose(1, 2)
        out = self.encoder(seq, pos_seq)
        return out.transpose(1, 2).reshape(b, c, h, w)


class TransformerEncoderPixelDecoder(nn.Module):
    """SEEM's pixel decoder (official ``transformer_encoder_fpn``); see the module docstring for the flow.

    Args:
        cfg: ``in_channels`` are the channels of res2..res5; GroupNorm uses ``cfg.num_groups`` groups.

    ``forward(features)``:
        features: the backbone dict with ``res2..res5`` (``[B, C_i, H/s, W/s]`` for s = 4, 8, 16, 32).

    Returns:
        ``PixelDecoderOutput(mask_features, transformer_encoder_features, multi_scale_features)``.
    """

    def __init__(self, cfg: PixelDecoderConfig) -> None:
        super().__init__()
        if len(cfg.in_channels) != 4:
            raise ValueError(f"PixelDecoderConfig.in_channels must list res2..res5, got {cfg.in_channels}")
        if cfg.conv_dim % 2 or cfg.conv_dim % cfg.num_groups or cfg.conv_dim % cfg.transformer_heads:
            raise ValueError(
                f"conv_dim {cfg.conv_dim} must be even and divisible by num_groups {cfg.num_groups} and "
                f"transformer_heads {cfg.transformer_heads}"
            )
        self.cfg = cfg
        c = cfg.conv_dim

        def gn() -> nn.GroupNorm:
            return nn.GroupNorm(cfg.num_groups, c)

        # Registration order follows the official module, so state_dict() lists keys in the same order.
        for i, in_ch in enumerate(cfg.in_channels[:3], start=1):
            self.add_module(f"adapter_{i}", Conv2dNorm(in_ch, c, kernel_size=1, bias=False, norm=gn()))
            self.add_module(
                f"layer_{i}",
                Conv2dNorm(c, c, kernel_size=3, padding=1, bias=False, norm=gn(), activation=nn.ReLU()),
            )
        self.mask_features = nn.Conv2d(c, cfg.mask_dim, kernel_size=3, padding=1)
        self.input_proj = nn.Conv2d(cfg.in_channels[3], c, kernel_size=1)
        self.transformer = TransformerEncoderOnly(
            c,
            cfg.transformer_heads,
            cfg.transformer_layers,
            cfg.transformer_ffn_dim,
            cfg.transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(c // 2, normalize=True)
        self.layer_4 = Conv2dNorm(c, c, kernel_size=3, padding=1, bias=False, norm=gn(), activation=nn.ReLU())

    def _check(self, features: dict[str, Tensor]) -> None:
        if not isinstance(features, dict):
            got = type(features).__name__
            raise TypeError(f"pixel decoder expects a dict of backbone features, got {got}")
        missing = [k for k in _IN_FEATURES if k not in features]
        if missing:
            raise ValueError(f"pixel decoder: backbone features {missing} missing (got {sorted(features)})")
        for name, ch in zip(_IN_FEATURES, self.cfg.in_channels, strict=True):
            f = features[name]
            if f.dim() != 4 or f.shape[1] != ch:
                raise ValueError(f"pixel decoder: {name} must be [B, {ch}, h, w], got {tuple(f.shape)}")

    def forward(self, features: dict[str, Tensor]) -> PixelDecoderOutput:
        self._check(features)
        res5 = features["res5"]
        enc = self.transformer(self.input_proj(res5), self.pe_layer(res5))
        y = self.layer_4(enc)
        multi_scale = [y]
        for i, name in ((3, "res4"), (2, "res3"), (1, "res2")):
            lateral = getattr(self, f"adapter_{i}")(features[name])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{i}")(y)
            if len(multi_scale) < 3:
                multi_scale.append(y)
        return PixelDecoderOutput(self.mask_features(y), enc, multi_scale)
