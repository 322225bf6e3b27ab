"""FocalNet backbone as used by SEEM (official ``focal_dw.py`` for Focal-T and ``focal.py`` for Focal-L).

Both flavours share the same skeleton:

* a stem ``patch_embed`` (conv + LayerNorm) to stride 4;
* four stages ``layers.{s}`` of focal-modulation blocks, each stage except the last followed by a
  ``downsample`` (3×3 stride-2 conv + LayerNorm) that doubles the channels;
* a LayerNorm ``norm{s}`` on every stage output; the normalised stage outputs are ``res2..res5``.

They differ in three places (``FocalNetConfig.flavour``):

======================  ===================================  ==========================================
                        ``"focal_dw"`` (Focal-T in SEEM)      ``"focal"`` (Focal-L in SEEM)
======================  ===================================  ==========================================
stem padding            3 (7×7, stride 4)                    2 (7×7, stride 4)
depthwise convs         ``dw1`` before the modulation and     none
                        ``dw2`` before the MLP, residual
post-LN placement       LN *after* the residual add          LN on the branch, *before* the add
======================  ===================================  ==========================================

Parameter names equal the official ones after removing the ``backbone.`` prefix of a SEEM checkpoint.
Drop-path and dropout are training-only and are omitted (the official inference runs in eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.config import FocalNetConfig
from seem.models.layers import GeluMlp

__all__ = ["FocalModulation", "FocalModulationBlock", "FocalNet", "FocalNetStage", "PatchEmbed"]

_FLAVOURS = ("focal", "focal_dw")


def _to_channels_first(x: Tensor) -> Tensor:
    """[B, H, W, C] -> [B, C, H, W] (contiguous)."""
    return x.permute(0, 3, 1, 2).contiguous()


def _to_channels_last(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H, W, C] (contiguous)."""
    return x.permute(0, 2, 3, 1).contiguous()


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm: the stem (stride 4) and the between-stage downsampling (stride 2).

    With ``use_conv_embed`` the stem is a 7×7 stride-4 conv with padding ``stem_padding`` (3 in
    ``focal_dw``, 2 in ``focal``) and a downsampling layer is a 3×3 stride-2 conv with padding 1; without it
    the conv is ``patch_size``×``patch_size`` with stride ``patch_size``.

    As in the official code, an input whose height or width is not a multiple of ``patch_size`` is first
    zero-padded at the bottom / right up to the next multiple (this never happens for inputs whose sides are
    multiples of 32).

    ``forward(x [B, C_in, H, W]) -> [B, C_out, ceil(H / patch_size), ceil(W / patch_size)]`` (channels first).
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        use_conv_embed: bool,
        is_stem: bool,
        stem_padding: int = 3,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        if use_conv_embed:
            kernel, stride, padding = (7, 4, stem_padding) if is_stem else (3, 2, 1)
        else:
            kernel, stride, padding = patch_size, patch_size, 0
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h = (-h) % self.patch_size
        pad_w = (-w) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        return _to_channels_first(self.norm(_to_channels_last(x)))


class FocalModulation(nn.Module):
    """Focal modulation (the token mixer of a FocalNet block).

    ``f`` projects each token to a query ``q`` (C), a context ``ctx`` (C) and ``focal_level + 1`` gates.
    The context goes through ``focal_level`` depthwise conv + GELU layers with kernels
    ``focal_window + 2k`` (k = 0..L-1); each level's output is gated and summed, plus a gated global
    context (GELU of the spatial mean of the last level). With ``scaling_modulator`` the sum is divided by
    ``L + 1``. The modulator ``h(ctx_all)`` (1×1 conv) multiplies ``q``; ``proj`` is the output Linear.

    ``forward(x [B, H, W, C]) -> [B, H, W, C]`` (channels last).
    """

    def __init__(
        self,
        dim: int,
        focal_level: int,
        focal_window: int,
        focal_factor: int = 2,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.focal_level = focal_level
        self.scaling_modulator = scaling_modulator
        self.use_postln_in_modulation = use_postln_in_modulation
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            kernel = focal_factor * k + focal_window
            conv = nn.Conv2d(dim, dim, kernel, groups=dim, padding=kernel // 2, bias=False)
            self.focal_layers.append(nn.Sequential(conv, nn.GELU()))
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        c = self.dim
        x = _to_channels_first(self.f(x))
        q, ctx, gates = torch.split(x, [c, c, self.focal_level + 1], dim=1)
        ctx_all: Tensor | None = None  # 0 + x == x exactly: starting from the first term changes no value
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            term = ctx * gates[:, level : level + 1]
            ctx_all = term if ctx_all is None else ctx_all + term
        assert ctx_all is not None
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.scaling_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        out = _to_channels_last(q * self.h(ctx_all))
        if self.use_postln_in_modulation:
            out = self.ln(out)
        return self.proj(out)


class FocalModulationBlock(nn.Module):
    """One FocalNet block; ``flavour`` selects the official ``focal_dw`` or ``focal`` variant.

    With ``use_postln`` (what SEEM uses), writing M = modulation, P = MLP, g1/g2 = layerscale:

    * ``focal_dw``: ``x += dw1(x)``; ``x = norm1(x + g1·M(x))``; ``x += dw2(x)``; ``x = norm2(x + g2·P(x))``.
    * ``focal``:    ``x = x + g1·norm1(M(x))``; ``x = x + g2·norm2(P(x))``.

    Without ``use_postln`` both use pre-norm: ``x = x + g1·M(norm1(x))``; ``x = x + g2·P(norm2(x))`` (with
    the ``dw`` convs still applied in ``focal_dw``). Without ``use_layerscale`` g1 = g2 = 1 and there are
    no ``gamma_*`` parameters.

    ``forward(x [B, H, W, C]) -> [B, H, W, C]`` (channels last).
    """

    gamma_1: Tensor | float
    gamma_2: Tensor | float

    def __init__(
        self,
        dim: int,
        flavour: str,
        focal_level: int,
        focal_window: int,
        mlp_ratio: float = 4.0,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
    ) -> None:
        super().__init__()
        if flavour not in _FLAVOURS:
            raise ValueError(f"FocalNet flavour must be one of {_FLAVOURS}, got {flavour!r}")
        self.flavour = flavour
        self.use_postln = use_postln
        # Parameters are registered in the official order so that state_dict() lists keys identically.
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        else:
            self.gamma_1 = 1.0
            self.gamma_2 = 1.0
        self.dw1: nn.Conv2d | None = None
        self.dw2: nn.Conv2d | None = None
        if flavour == "focal_dw":
            self.dw1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim,
            focal_level=focal_level,
            focal_window=focal_window,
            use_postln_in_modulation=use_postln_in_modulation,
            scaling_modulator=scaling_modulator,
        )
        if flavour == "focal_dw":
            self.dw2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMlp(dim, int(dim * mlp_ratio))

    @staticmethod
    def _dw_residual(x: Tensor, conv: nn.Conv2d) -> Tensor:
        """``x + conv(x)`` for a channels-last ``x``."""
        xc = _to_channels_first(x)
        return _to_channels_last(xc + conv(xc))

    def forward(self, x: Tensor) -> Tensor:
        if self.flavour == "focal_dw":
            assert self.dw1 is not None and self.dw2 is not None
            x = self._dw_residual(x, self.dw1)
            y = self.modulation(x if self.use_postln else self.norm1(x))
            x = x + self.gamma_1 * y
            if self.use_postln:
                x = self.norm1(x)
            x = self._dw_residual(x, self.dw2)
            if self.use_postln:
                return self.norm2(x + self.gamma_2 * self.mlp(x))
            return x + self.gamma_2 * self.mlp(self.norm2(x))
        # flavour == "focal"
        if self.use_postln:
            x = x + self.gamma_1 * self.norm1(self.modulation(x))
            return x + self.gamma_2 * self.norm2(self.mlp(x))
        x = x + self.gamma_1 * self.modulation(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class FocalNetStage(nn.Module):
    """One stage (official ``BasicLayer``): ``blocks`` then an optional ``downsample``.

    ``forward(x [B, H, W, C])`` returns ``(stage_out [B, H, W, C], next_in [B, C', H', W'] or None)``:
    the stage output before the output LayerNorm (channels last) and, when there is a ``downsample``, its
    result (channels first, 2C channels, ceil(H/2) × ceil(W/2)).
    """

    def __init__(self, dim: int, depth: int, cfg: FocalNetConfig, stage: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            FocalModulationBlock(
                dim,
                flavour=cfg.flavour,
                focal_level=cfg.focal_levels[stage],
                focal_window=cfg.focal_windows[stage],
                mlp_ratio=cfg.mlp_ratio,
                use_postln=cfg.use_postln,
                use_postln_in_modulation=cfg.use_postln_in_modulation,
                scaling_modulator=cfg.scaling_modulator,
                use_layerscale=cfg.use_layerscale,
                layerscale_value=cfg.layerscale_value,
            )
            for _ in range(depth)
        )
        self.downsample: PatchEmbed | None = None
        if downsample:
            self.downsample = PatchEmbed(2, dim, 2 * dim, use_conv_embed=cfg.use_conv_embed, is_stem=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        for blk in self.blocks:
            x = blk(x)
        nxt = self.downsample(_to_channels_first(x)) if self.downsample is not None else None
        return x, nxt


class FocalNet(nn.Module):
    """FocalNet backbone (official ``D2FocalNet``), both SEEM flavours.

    Args:
        cfg: architecture; ``cfg.flavour`` selects ``"focal_dw"`` (Focal-T) or ``"focal"`` (Focal-L).

    ``forward(images)``:
        images: normalised, padded images ``[B, 3, H, W]`` (float). SEEM pads H and W to multiples of 32;
            other sizes work too (each patch embedding zero-pads bottom/right to its stride, as officially).

    Returns:
        ``{"res2", "res3", "res4", "res5"}``: channels-first maps ``[B, C_i, h_i, w_i]`` at strides
        4 / 8 / 16 / 32 with ``C_i = embed_dim · 2^i``, each after its output LayerNorm ``norm{i}``.
    """

    out_features = ("res2", "res3", "res4", "res5")
    out_strides = (4, 8, 16, 32)

    def __init__(self, cfg: FocalNetConfig) -> None:
        super().__init__()
        if cfg.flavour not in _FLAVOURS:
            raise ValueError(f"FocalNetConfig.flavour must be one of {_FLAVOURS}, got {cfg.flavour!r}")
        n = len(cfg.depths)
        if n != 4:
            raise ValueError(f"FocalNetConfig.depths must have 4 stages, got {cfg.depths}")
        for name in ("focal_levels", "focal_windows"):
            if len(getattr(cfg, name)) != n:
                raise ValueError(f"FocalNetConfig.{name} must have {n} entries, got {getattr(cfg, name)}")
        self.cfg = cfg
        self.num_features = tuple(int(cfg.embed_dim * 2**i) for i in range(n))
        self.patch_embed = PatchEmbed(
            cfg.patch_size,
            3,
            cfg.embed_dim,
            use_conv_embed=cfg.use_conv_embed,
            is_stem=True,
            stem_padding=3 if cfg.flavour == "focal_dw" else 2,
        )
        self.layers = nn.ModuleList(
            FocalNetStage(dim, depth, cfg, stage=i, downsample=i < n - 1)
            for i, (dim, depth) in enumerate(zip(self.num_features, cfg.depths, strict=True))
        )
        for i in range(n):
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    @property
    def out_channels(self) -> dict[str, int]:
        """Channels of each output map."""
        return dict(zip(self.out_features, self.num_features, strict=True))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if not isinstance(images, Tensor):
            raise TypeError(f"FocalNet expects a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FocalNet expects images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"FocalNet expects normalised float images, got dtype {images.dtype} "
                "(use seem.models.preprocess.normalize_and_pad)"
            )
        x = _to_channels_last(self.patch_embed(images))
        outs: dict[str, Tensor] = {}
        for i, stage in enumerate(self.layers):
            stage_out, nxt = stage(x)
            norm: nn.LayerNorm = getattr(self, f"norm{i}")
            outs[self.out_features[i]] = _to_channels_first(norm(stage_out))
            if nxt is not None:
                x = _to_channels_last(nxt)
        return outs
