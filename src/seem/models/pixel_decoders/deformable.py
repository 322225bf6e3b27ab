"""MaskDINO deformable encoder ("pixel decoder") of Semantic-SAM, plain PyTorch.

Inputs: backbone ``res2..res5``. Steps (official ``MaskDINOEncoder.forward_features``):

1. ``input_proj.0/1/2``: 1x1 conv + GroupNorm on res3, res4, res5 → s8, s16, s32 (``conv_dim`` channels);
   ``input_proj.3``: 3x3 stride-2 conv + GroupNorm on res5 → s64.
2. Encoder level order is **s8, s16, s32, s64** (``level_embed[i]`` follows that order). Position: sine embedding
   (``normalize=True``) of each level plus ``level_embed``.
3. ``num_layers`` MSDA encoder layers (post-norm, ReLU FFN); every token attends to ``num_points`` points per
   level and head around its own pixel centre. Padding is **not** masked (the official padding mask is all False
   and the valid ratios are 1), so padded pixels take part.
4. One FPN step: ``layer_1(adapter_1(res2) + bilinear_upsample(s8))`` (``align_corners=False``; the official
   comment says nearest but the code is bilinear), then ``mask_features`` (1x1 conv) → stride-4 mask features.

Parameter names equal the official ones after removing ``model.sem_seg_head.pixel_decoder.``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.layers import Conv2dNorm, PositionEmbeddingSine
from seem.models.pixel_decoders.ms_deform_attn import MSDeformAttn
from seem.models.semantic_sam_config import DeformableEncoderConfig

__all__ = ["DeformableEncoder", "DeformableEncoderLayer", "DeformableEncoderOutput"]


@dataclass
class DeformableEncoderOutput:
    """Encoder outputs for one batch of padded images of size ``Hp x Wp``.

    Attributes:
        mask_features: ``[B, mask_dim, Hp/4, Wp/4]``.
        multi_scale: ``[s8, s16, s32, s64]`` maps, ``[B, conv_dim, Hp/s, Wp/s]`` (s64 side: ``ceil(Hp/32 / 2)``).
    """

    mask_features: Tensor
    multi_scale: list[Tensor]


class DeformableEncoderLayer(nn.Module):
    """Post-norm MSDA self-attention + ReLU FFN (official ``MSDeformAttnTransformerEncoderLayer``)."""

    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """``src``/``pos``: ``[B, S, C]``; ``reference_points``: ``[B, S, L, 2]``."""
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _EncoderLayers(nn.Module):
    """Holds ``layers`` so that keys read ``transformer.encoder.layers.{i}`` as in the official checkpoint."""

    def __init__(self, layers: list[DeformableEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class _Transformer(nn.Module):
    """Holds ``level_embed`` and ``encoder`` (official ``MSDeformAttnTransformerEncoderOnly`` key layout)."""

    def __init__(self, cfg: DeformableEncoderConfig, n_levels: int) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, cfg.conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder = _EncoderLayers(
            [
                DeformableEncoderLayer(cfg.conv_dim, cfg.ffn_dim, n_levels, cfg.num_heads, cfg.num_points)
                for _ in range(cfg.num_layers)
            ]
        )


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel-centre reference points ``[1, S, 2]`` (``(x, y)`` in ``[0, 1]``), levels concatenated (valid ratio 1)."""
    refs = []
    for h, w in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        refs.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    return torch.cat(refs, 0)[None]


class DeformableEncoder(nn.Module):
    """Semantic-SAM's multi-scale deformable encoder (see the module docstring)."""

    n_levels = 4

    def __init__(self, cfg: DeformableEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c2, c3, c4, c5 = cfg.in_channels
        d = cfg.conv_dim

        def proj(cin: int, k: int, stride: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, d, kernel_size=k, stride=stride, padding=k // 2)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            assert conv.bias is not None
            nn.init.constant_(conv.bias, 0)
            return nn.Sequential(conv, nn.GroupNorm(cfg.num_groups, d))

        # order fixed by the official checkpoint: res3, res4, res5 (1x1), then the stride-2 3x3 on res5
        self.input_proj = nn.ModuleList([proj(c3, 1, 1), proj(c4, 1, 1), proj(c5, 1, 1), proj(c5, 3, 2)])
        self.transformer = _Transformer(cfg, self.n_levels)
        self.pe_layer = PositionEmbeddingSine(d // 2, normalize=True)
        self.mask_features = nn.Conv2d(d, cfg.mask_dim, kernel_size=1)
        self.adapter_1 = Conv2dNorm(c2, d, kernel_size=1, bias=False, norm=nn.GroupNorm(cfg.num_groups, d))
        self.layer_1 = Conv2dNorm(
            d, d, kernel_size=3, padding=1, bias=False, norm=nn.GroupNorm(cfg.num_groups, d), activation=nn.ReLU()
        )
        for conv in (self.mask_features, self.adapter_1, self.layer_1):  # detectron2's c2_xavier_fill
            nn.init.kaiming_uniform_(conv.weight, a=1)
        assert self.mask_features.bias is not None
        nn.init.constant_(self.mask_features.bias, 0)

    def forward(self, features: dict[str, Tensor]) -> DeformableEncoderOutput:
        """``features``: ``{"res2".."res5"}`` NCHW → ``DeformableEncoderOutput`` (see its doc)."""
        missing = [k for k in ("res2", "res3", "res4", "res5") if k not in features]
        if missing:
            raise ValueError(f"DeformableEncoder needs backbone features {missing}")
        res3, res4, res5 = (features[k].float() for k in ("res3", "res4", "res5"))
        srcs = [self.input_proj[0](res3), self.input_proj[1](res4), self.input_proj[2](res5)]
        srcs.append(self.input_proj[3](res5))
        b = srcs[0].shape[0]
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat(
            [
                self.pe_layer(s).flatten(2).transpose(1, 2) + self.transformer.level_embed[lvl].view(1, 1, -1)
                for lvl, s in enumerate(srcs)
            ],
            1,
        )
        ref = encoder_reference_points(shapes, src_flat.device).to(src_flat.dtype)
        ref = ref[:, :, None].expand(b, -1, self.n_levels, -1)
        x = src_flat
        for layer in self.transformer.encoder.layers:
            x = layer(x, pos_flat, ref, shapes)
        maps = [
            part.transpose(1, 2).reshape(b, -1, h, w)
            for part, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes, strict=True)
        ]
        lateral = self.adapter_1(features["res2"].float())
        fpn = self.layer_1(
            lateral + F.interpolate(maps[0], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        )
        return DeformableEncoderOutput(mask_features=self.mask_features(fpn), multi_scale=maps)
