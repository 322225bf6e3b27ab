"""Click refiner: a small convolutional net that corrects a coarse mask where the user clicked.

SEEM's decoder reads clicks as queries pooled from stride-4 features; a small decoder often ignores a corrective
click (the mask stays the same click after click). The refiner (in the spirit of RITM / FocalClick's refinement
stage) sees the clicks as maps at image resolution next to the image and the decoder's mask, and returns corrected
logits at that resolution. It knows nothing of the decoder, so it is trained on its own from masks and simulated
errors (``seem.train.refiner``) and can sit behind any model of the family (``ClickRefinerConfig.enabled``).

Inputs, all on the model's padded input canvas ``[H, W]`` (``ImageGeometry.padded_size``):

- ``image [B, 3, H, W]``: normalised with the model's pixel mean / std (the tensor ``normalize_and_pad`` gives);
- ``coarse [B, 1, H, W]``: mask logits (the decoder's stride-4 logits upsampled bilinearly);
- ``clicks [B, 2, H, W]``: positive / negative click disks (``click_maps``), 1 inside a disk, else 0;
- ``prev [B, 1, H, W]`` (only with ``ClickRefinerConfig.prev_mask``): the previous round's mask logits (the memory
  prompt the decoder got, upsampled bilinearly), or None in the first round (read as an empty mask). The decoder
  reads that mask at stride 4 only and may undo earlier corrections; with it the refiner can keep them.
- ``feats [B, D, H / 8, W / 8]`` (only with ``ClickRefinerConfig.feature_dim = D``): the model's own per-pixel
  features (``ImageFeatures.mask_features``, stride 4, average-pooled to stride 8), cached per image. The net alone
  sees colour in a window of about 150 px and corrects the mask near a click; with the features it can tell which
  parts belong together (a click on one petal of a flower adds the others). They enter at stride 8, projected, with
  three similarity maps (``prototype_maps``: each position's cosine similarity to the mean feature under the
  positive clicks, under the negative clicks and under the coarse mask). With ``ClickRefinerConfig.similarity_dim
  = S`` the maps read a learned embedding of the features instead (``SimilarityHead``: a few dilated convolutions,
  distilled from a promptable model's image embedding by ``seem.train.similarity``), computed once per image by
  ``ClickRefiner.image_features`` and given after the features: ``feats [B, D + S, H / 8, W / 8]``.

With ``ClickRefinerConfig.context_blocks`` a stride-16 stage reads the stride-8 map and adds what it sees in a
wider window (~500 px) back to it.

Output: logits ``[B, 1, H, W]`` = ``clamp(coarse, ±coarse_clamp)`` + a learned correction (predicted at stride 2,
upsampled bilinearly).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ClickRefinerConfig:
    """Architecture of the click refiner; ``enabled=False`` (official checkpoints): the model has none."""

    enabled: bool = False
    widths: tuple[int, int, int] = (16, 24, 48)
    """Channels at strides 2, 4 and 8 of the canvas."""
    blocks: tuple[int, int] = (2, 4)
    """Inverted-residual blocks at stride 4 and stride 8 (their dilations cycle 1, 2, 4, 8)."""
    expand: int = 2
    click_radius: int = 5
    """Radius (canvas pixels) of a click's disk in the click maps."""
    coarse_clamp: float = 8.0
    """The coarse logits are clamped to ±this before the correction is added."""
    min_region: float = 0.02
    """After refinement, islands of the mask that hold no positive click and holes inside it that hold no negative
    click, smaller than this fraction of the mask's area, are removed / filled (``clean_regions``): the net works
    pixel by pixel and leaves speckles on textured objects. 0 turns it off."""
    prev_mask: bool = False
    """Read the previous round's mask as a 7th input channel (``ClickRefiner.with_prev_mask`` adds it to a
    refiner trained without it, as a zero-weight channel)."""
    correct_previous: bool = False
    """From the second round on, correct the previous round's mask (the memory prompt, upsampled) and read the
    decoder's new mask in the previous-mask channel: the two swap places (needs ``prev_mask``). A small decoder's
    mask hardly improves with corrective clicks; the previous round's refined mask is a natural start."""
    feature_dim: int = 0
    """Channels ``D`` of the model's stride-4 mask features the refiner reads (pooled to stride 8; see the module
    docstring); 0: none. ``ClickRefiner.with_features`` adds them to a refiner trained without, with zero weights."""
    similarity_dim: int = 0
    """Channels ``S`` of a learned similarity embedding of the features (``SimilarityHead``; needs
    ``feature_dim``): the three similarity maps read it instead of the features. 0: none. It is computed once per
    image (``ClickRefiner.image_features``), not per click; ``seem.train.similarity`` distils it from a teacher's
    image embedding."""
    similarity_width: int = 192
    """Hidden channels of the ``SimilarityHead``."""
    context_blocks: int = 0
    """Inverted-residual blocks of a stride-16 context stage (dilations 1, 2, 4, 8 cycling; 0: none). It reads the
    stride-8 map, sees a window about four times wider (~500 px) and adds its output, projected and upsampled, back
    to the stride-8 map before the stride-8 blocks. ``ClickRefiner.with_context`` adds it to a refiner trained
    without, with a zero output projection."""
    reach: float = 0.0
    """Inference only. The refiner's correction counts in full within this many canvas pixels of a click and ×
    ``far_weight`` farther from every click (``damp_far_correction``); 0: in full everywhere. The net sees colour in
    a window of about 150 px: from one click it trims the parts of a large object that look unlike the clicked part
    (a person's legs from a click on the shirt), where the decoder's mask is more often right."""
    far_weight: float = 1.0
    """The weight of the correction beyond ``reach`` of every click (1: in full, 0: the decoder's mask)."""
    half_above: int = 0
    """Inference only. While a prompt has at most ``half_clicks`` clicks and the window the refiner reads holds more
    than this many canvas pixels, the net reads that window at half resolution (2×2 averages, click disks of the same
    radius) and its correction is upsampled back onto the decoder's mask: about half the cost of a click's net on
    a large object, and twice the context per pixel, which helps the first clicks (later clicks correct fine
    boundaries and need the full resolution). 0: always at canvas resolution."""
    half_clicks: int = 3
    """The most clicks (positive and negative) of a prompt whose refiner window may be read at half resolution
    (``half_above``)."""
    onnxruntime: bool = True
    """Inference only. On a CPU, run the net with onnxruntime (``seem.models.refiner_runtime``: about 1.3× (large
    windows) to 2× (small ones) as fast as PyTorch here, the same logits up to float rounding); False, or onnxruntime
    missing: PyTorch."""

    def __post_init__(self) -> None:
        if self.reach < 0:
            raise ValueError(f"refiner.reach must be >= 0 (canvas pixels), got {self.reach}")
        if not 0.0 <= self.far_weight <= 1.0:
            raise ValueError(f"refiner.far_weight must be in [0, 1], got {self.far_weight}")
        if self.correct_previous and not self.prev_mask:
            raise ValueError("refiner.correct_previous needs refiner.prev_mask (the decoder's mask takes that channel)")
        if self.similarity_dim < 0 or self.similarity_width <= 0:
            raise ValueError(
                f"refiner.similarity_dim must be >= 0 and refiner.similarity_width > 0, got {self.similarity_dim} and "
                f"{self.similarity_width}"
            )
        if self.similarity_dim and not self.feature_dim:
            raise ValueError(
                "refiner.similarity_dim needs refiner.feature_dim (the embedding is made from the features)"
            )
        if self.context_blocks < 0:
            raise ValueError(f"refiner.context_blocks must be >= 0, got {self.context_blocks}")
        if self.half_above < 0 or self.half_clicks < 0:
            raise ValueError(
                f"refiner.half_above (canvas pixels) and refiner.half_clicks must be >= 0, got {self.half_above} and "
                f"{self.half_clicks}"
            )


MODEL_RUN_SETTINGS = ("reach", "far_weight", "half_above", "half_clicks", "onnxruntime")
"""``ClickRefinerConfig`` fields that say how a model runs its refiner, not what the net is: ``SEEMModel.set_refiner``
keeps the model's values when it puts another refiner in."""


def click_maps(coords: Tensor, labels: Tensor, size: tuple[int, int], radius: int) -> Tensor:
    """Disk maps of clicks: ``coords [N, 2]`` (x, y) canvas pixels, ``labels [N]`` (1 positive, 0 negative;
    others ignored) → float ``[2, H, W]`` (channel 0 positive, 1 negative; 1 within ``radius`` of a click)."""
    h, w = size
    out = torch.zeros(2, h, w, device=coords.device)
    if coords.numel() == 0:
        return out
    ys = torch.arange(h, device=coords.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=coords.device, dtype=torch.float32)[None, :]
    for (x, y), lab in zip(coords.float().tolist(), labels.tolist(), strict=True):
        if lab not in (0, 1):
            continue
        y0, y1 = max(0, int(y) - radius - 1), min(h, int(y) + radius + 2)
        x0, x1 = max(0, int(x) - radius - 1), min(w, int(x) + radius + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        d2 = (ys[y0:y1] - y) ** 2 + (xs[:, x0:x1] - x) ** 2
        ch = 0 if lab == 1 else 1
        out[ch, y0:y1, x0:x1] = torch.maximum(out[ch, y0:y1, x0:x1], (d2 <= radius * radius).float())
    return out


def clean_regions(logits: Tensor, coords: Tensor, labels: Tensor, min_frac: float) -> Tensor:
    """``logits [H, W]`` with small regions flipped: 8-connected islands of ``logits > 0`` smaller than ``min_frac`` ×
    the mask area that hold no positive click (``coords [N, 2]`` (x, y) pixels, ``labels [N]``) become background,
    4-connected holes (background regions not touching the border) smaller than that which hold no negative click
    become foreground. Flipping negates the logits, so their magnitudes are kept.

    Only the mask's bounding box grown by one pixel is read (every island and every hole lies in it: a background
    region touching the box's edge is connected to the background outside, or touches the image's border)."""
    import cv2
    import numpy as np

    fg_all = (logits > 0).cpu().numpy()
    rows, cols = np.flatnonzero(fg_all.any(1)), np.flatnonzero(fg_all.any(0))
    if min_frac <= 0 or rows.size == 0:
        return logits
    h, w = fg_all.shape
    y0, y1 = max(0, int(rows[0]) - 1), min(h, int(rows[-1]) + 2)
    x0, x1 = max(0, int(cols[0]) - 1), min(w, int(cols[-1]) + 2)
    fg = np.ascontiguousarray(fg_all[y0:y1, x0:x1]).view(np.uint8)  # (bool and uint8 share their bytes)
    limit = min_frac * cv2.countNonZero(fg)
    xy = coords.long().cpu().numpy().reshape(-1, 2) - np.array([x0, y0])
    lab = labels.cpu().numpy()
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < x1 - x0) & (xy[:, 1] >= 0) & (xy[:, 1] < y1 - y0)
    pos, neg = xy[(lab == 1) & inside], xy[(lab == 0) & inside]
    n, labelled = cv2.connectedComponentsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
    islands = np.asarray(labelled, dtype=np.int32)  # (no copy: typed for numpy)
    kept = fg
    if n > 2:  # one island is the whole mask: never below the limit; else count pixels (cheaper than cv2's stats)
        drop = np.bincount(islands.ravel(), minlength=n) < limit
        drop[0] = False  # the background
        drop[islands[pos[:, 1], pos[:, 0]]] = False
        if drop.any():  # most masks: nothing to drop, no pass over pixels
            kept = fg & ~np.take(drop, islands).view(np.uint8)
    n, labelled = cv2.connectedComponentsWithAlgorithm(1 - kept, 4, cv2.CV_32S, cv2.CCL_DEFAULT)
    holes = np.asarray(labelled, dtype=np.int32)
    fill = np.ones(n, dtype=bool)
    fill[0] = False  # the mask itself
    fill[np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])] = False  # touching the box's edge
    if fill.any():  # most masks: the background is one region around them, nothing to count
        fill &= np.bincount(holes.ravel(), minlength=n) < limit
        fill[holes[neg[:, 1], neg[:, 0]]] = False
    new = kept | np.take(fill, holes).view(np.uint8) if fill.any() else kept  # (np.take: a third of fancy indexing)
    if new is fg:
        return logits
    flip = torch.from_numpy(new != fg).to(logits.device)
    out = logits.clone()
    out[y0:y1, x0:x1] = torch.where(flip, -logits[y0:y1, x0:x1], logits[y0:y1, x0:x1])
    return out


def damp_far_correction(base: Tensor, refined: Tensor, clicks_xy: Tensor, reach: float, far_weight: float) -> Tensor:
    """``base + w · (refined − base)`` for logits ``base``, ``refined [..., H, W]``: ``w = 1`` within ``reach``
    pixels of any of the clicks ``clicks_xy [N, 2]`` (x, y in the same pixel frame as the maps), ``far_weight``
    farther from all of them."""
    h, w = refined.shape[-2:]
    xy = clicks_xy.reshape(-1, 2).to(device=refined.device, dtype=torch.float32)
    dy2 = (torch.arange(h, device=refined.device, dtype=torch.float32)[None, :] - xy[:, 1:]) ** 2  # [N, H]
    dx2 = (torch.arange(w, device=refined.device, dtype=torch.float32)[None, :] - xy[:, :1]) ** 2  # [N, W]
    near = torch.zeros(h, w, dtype=torch.bool, device=refined.device)
    for i, (x, y) in enumerate(xy.tolist()):  # each click marks only the box around its disk
        y0, y1 = max(0, math.floor(y - reach)), min(h, math.ceil(y + reach) + 1)
        x0, x1 = max(0, math.floor(x - reach)), min(w, math.ceil(x + reach) + 1)
        if y0 < y1 and x0 < x1:
            near[y0:y1, x0:x1] |= dy2[i, y0:y1, None] + dx2[i, None, x0:x1] <= reach * reach
    weight = torch.where(near, 1.0, far_weight).to(refined.dtype)
    return base + weight * (refined - base)


def stride8_features(mask_features: Tensor) -> Tensor:
    """The features a refiner with ``feature_dim`` reads: stride-4 ``mask_features [B, D, h, w]`` (or a window of
    them starting on even cells) average-pooled 2×2 → ``[B, D, ceil(h / 2), ceil(w / 2)]`` float32, channels-last
    (the same values as in NCHW, twice as fast on CPU). Used at inference and to make training features alike."""
    return F.avg_pool2d(mask_features.float().contiguous(memory_format=torch.channels_last), 2, ceil_mode=True)


def prototype_maps(feats: Tensor, clicks: Tensor, coarse_prob: Tensor) -> Tensor:
    """Similarity maps at the features' resolution: ``feats [B, D, h, w]``, ``clicks [B, 2, H, W]`` (positive /
    negative disks), ``coarse_prob [B, 1, H, W]`` in [0, 1] → ``[B, 3, h, w]``: the cosine similarity of each
    position's feature to the mean feature under the positive clicks, the negative clicks and the coarse mask (the
    clicks and the mask area-resampled to ``h × w`` as weights); 0 where a weight map is empty."""
    f = F.normalize(feats.float(), dim=1)
    size = f.shape[-2:]  # pooled apart and joined small: a full-resolution concatenation costs more than the rest
    w = torch.cat([_area(m.float(), size) for m in (clicks, coarse_prob)], 1)
    proto = torch.einsum("bkhw,bdhw->bkd", w, f) / w.sum((2, 3))[..., None].clamp_min(1e-6)
    return torch.einsum("bkd,bdhw->bkhw", F.normalize(proto, dim=-1), f)


def _area(x: Tensor, size: torch.Size) -> Tensor:
    """``x [B, C, H, W]`` area-resampled to ``size``: a plain average pooling when the sizes divide (the refiner's
    windows: ``H = 8 h``), which exports to ONNX with dynamic sizes (``mode="area"`` does not); the same values."""
    (h, w), (sh, sw) = (int(v) for v in x.shape[-2:]), (int(v) for v in size)  # (a traced export keeps the ratio)
    if h % sh == 0 and w % sw == 0:
        return F.avg_pool2d(x, (h // sh, w // sw))
    return F.interpolate(x, size=size, mode="area")


class SimilarityHead(nn.Module):
    """Stride-8 model features → an embedding whose cosine similarities say which positions belong together:
    ``[B, D, h, w] → [B, S, h, w]`` (3×3 convolutions of dilation 1, 2 and 4 with ReLUs, then a 1×1; a window of
    15 × 15 cells, 120 canvas pixels, around each position). Trained apart (``seem.train.similarity``) to reproduce a
    promptable model's image embedding; frozen while the refiner trains."""

    def __init__(self, dim: int, width: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1),
        )

    def forward(self, feats: Tensor) -> Tensor:
        """``feats [B, D, h, w]`` → ``[B, S, h, w]`` (unnormalised; only directions matter)."""
        return self.net(feats)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _fuse(cin: int, cout: int) -> nn.Sequential:
    """1×1 conv (mixes the concatenated inputs) → depthwise 3×3, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _InvertedResidual(nn.Module):
    """MobileNetV2 block at a fixed width: 1×1 expand → dilated 3×3 depthwise → 1×1 project, plus the input."""

    def __init__(self, dim: int, expand: int, dilation: int) -> None:
        super().__init__()
        hid = dim * expand
        self.body = nn.Sequential(
            nn.Conv2d(dim, hid, 1, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, hid, 3, 1, dilation, dilation=dilation, groups=hid, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ClickRefiner(nn.Module):
    """A U-shaped net over (image, coarse mask, click maps) → corrected mask logits (see the module docstring)."""

    IN_CHANNELS = 6  # RGB + coarse probability + positive / negative clicks (+ previous mask: ``prev_mask``)

    def __init__(self, cfg: ClickRefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c2, c4, c8 = cfg.widths
        n4, n8 = cfg.blocks
        dil = (1, 2, 4, 8)
        self.down2 = _conv_bn(self.IN_CHANNELS + int(cfg.prev_mask), c2, 2)
        self.down4 = _conv_bn(c2, c4, 2)
        self.blocks4 = nn.Sequential(*[_InvertedResidual(c4, cfg.expand, dil[i % 4]) for i in range(n4)])
        self.down8 = _conv_bn(c4, c8, 2)
        self.blocks8 = nn.Sequential(*[_InvertedResidual(c8, cfg.expand, dil[i % 4]) for i in range(n8)])
        self.feat_in: nn.Conv2d | None = None
        if cfg.feature_dim:
            self.feat_in = nn.Conv2d(cfg.feature_dim + 3, c8, 1)
            nn.init.zeros_(self.feat_in.weight)
            nn.init.zeros_(_need_bias(self.feat_in))
        self.similarity: SimilarityHead | None = None
        if cfg.similarity_dim:
            self.similarity = SimilarityHead(cfg.feature_dim, cfg.similarity_width, cfg.similarity_dim)
        self.context: nn.Sequential | None = None
        if cfg.context_blocks:
            ctx = [_InvertedResidual(c8, cfg.expand, dil[i % 4]) for i in range(cfg.context_blocks)]
            out = nn.Conv2d(c8, c8, 1)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(_need_bias(out))
            self.context = nn.Sequential(_conv_bn(c8, c8, 2), *ctx, out)
        self.up4: nn.Module = _fuse(c8 + c4, c4)  # a _SplitFuse in the inference copy (fold_batchnorm)
        self.up2: nn.Module = _fuse(c4 + c2, c2)
        self.head = nn.Conv2d(c2, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(_need_bias(self.head))

    def forward(
        self, image: Tensor, coarse: Tensor, clicks: Tensor, prev: Tensor | None = None, feats: Tensor | None = None
    ) -> Tensor:
        """``image [B, 3, H, W]``, ``coarse [B, 1, H, W]`` logits, ``clicks [B, 2, H, W]``, ``prev [B, 1, H, W]``
        logits or None (read only with ``cfg.prev_mask``; None = no previous mask), ``feats [B, D, H / 8, W / 8]``
        (required with ``cfg.feature_dim = D``, else ignored; ``[B, D + S, H / 8, W / 8]`` with ``cfg.similarity_dim
        = S``: ``image_features``) → logits ``[B, 1, H, W]`` (``H``, ``W`` any size; multiples of 8 avoid resampling
        inside)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {tuple(image.shape)}")
        b, _, h, w = image.shape
        if tuple(coarse.shape) != (b, 1, h, w) or tuple(clicks.shape) != (b, 2, h, w):
            raise ValueError(
                f"coarse must be [{b}, 1, {h}, {w}] and clicks [{b}, 2, {h}, {w}], got {tuple(coarse.shape)} and "
                f"{tuple(clicks.shape)}"
            )
        base = coarse.clamp(-self.cfg.coarse_clamp, self.cfg.coarse_clamp)
        parts = [image, torch.sigmoid(base), clicks]
        if self.cfg.prev_mask:
            if prev is None:
                parts.append(torch.zeros_like(coarse))
            elif tuple(prev.shape) != (b, 1, h, w):
                raise ValueError(f"prev must be [{b}, 1, {h}, {w}], got {tuple(prev.shape)}")
            else:
                parts.append(torch.sigmoid(prev.to(coarse.dtype)))
        x = torch.cat(parts, dim=1)
        f2 = self.down2(x)
        f4 = self.blocks4(self.down4(f2))
        f8 = self.down8(f4)
        if self.feat_in is not None:
            d, n = self.cfg.feature_dim, self.cfg.feature_dim + self.cfg.similarity_dim
            if feats is None or feats.dim() != 4 or tuple(feats.shape[:2]) != (b, n):
                got = None if feats is None else tuple(feats.shape)
                raise ValueError(f"feats must be [{b}, {n}, H / 8, W / 8] (image_features), got {got}")
            g = _resize(feats.to(f8.dtype), f8)
            sims = prototype_maps(g[:, d:] if n > d else g, clicks, parts[1]).to(f8.dtype)
            f8 = f8 + self.feat_in(torch.cat([g[:, :d], sims], 1))
        if self.context is not None:
            f8 = f8 + _resize(self.context(f8), f8)
        f8 = self.blocks8(f8)
        y = _merge(self.up4, f8, f4)
        y = _merge(self.up2, y, f2)
        return base + _resize(self.head(y), x)

    def image_features(self, feats: Tensor) -> Tensor:
        """What ``forward`` reads as ``feats``, made once per image from its stride-8 features ``feats [B, D, h,
        w]`` (``stride8_features``): the features themselves, followed by their ``similarity`` embedding when the
        refiner has one (``[B, D + S, h, w]``). Windows of it are windows of the result: the embedding sees the whole
        image, not the window."""
        if self.similarity is None:
            return feats
        return torch.cat([feats, self.similarity(feats).to(feats.dtype)], 1)

    def with_similarity(self, head: SimilarityHead) -> ClickRefiner:
        """A copy whose similarity maps read ``head``'s embedding of the features (``similarity_dim``) instead of
        the features: another function than this refiner's (the maps change), to be trained further (``seem
        train-refiner --init ... --similarity HEAD``)."""
        if not self.cfg.feature_dim:
            raise ValueError("a similarity head needs a refiner that reads model features (feature_dim)")
        if self.cfg.similarity_dim:
            raise ValueError(f"this refiner already has a similarity head ({self.cfg.similarity_dim} channels)")
        first, last = head.net[0], head.net[-1]
        if not isinstance(first, nn.Conv2d) or not isinstance(last, nn.Conv2d):  # pragma: no cover - layout
            raise TypeError("expected a SimilarityHead")
        if first.in_channels != self.cfg.feature_dim:
            raise ValueError(
                f"the head reads {first.in_channels}-channel features, this refiner {self.cfg.feature_dim}-channel ones"
            )
        new = self._grown("similarity.", similarity_dim=last.out_channels, similarity_width=first.out_channels)
        assert new.similarity is not None
        new.similarity.load_state_dict(head.state_dict())
        return new

    def with_prev_mask(self) -> ClickRefiner:
        """A copy that also reads the previous mask (``prev_mask``), with that channel's weights zero: it gives the
        same output as this refiner until trained further (``seem train-refiner --init ... --prev-mask``)."""
        if self.cfg.prev_mask:
            raise ValueError("this refiner already reads the previous mask")
        new = ClickRefiner(dataclasses.replace(self.cfg, prev_mask=True))
        sd = dict(self.state_dict())
        w = sd["down2.0.weight"]
        sd["down2.0.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], dim=1)
        new.load_state_dict(sd, strict=True)
        return new.train(self.training)

    def with_features(self, dim: int) -> ClickRefiner:
        """A copy that also reads ``dim``-channel model features (``feature_dim``), their weights zero: it gives the
        same output as this refiner until trained further (``seem train-refiner --init ... --features``)."""
        if self.cfg.feature_dim:
            raise ValueError(f"this refiner already reads {self.cfg.feature_dim}-channel features")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        return self._grown("feat_in.", feature_dim=dim)

    def with_context(self, blocks: int) -> ClickRefiner:
        """A copy with a stride-16 context stage of ``blocks`` blocks (``context_blocks``) whose output projection
        is zero: it gives the same output as this refiner until trained further (``seem train-refiner --init ...
        --context N``)."""
        if self.cfg.context_blocks:
            raise ValueError(f"this refiner already has a context stage ({self.cfg.context_blocks} blocks)")
        if blocks <= 0:
            raise ValueError(f"blocks must be positive, got {blocks}")
        return self._grown("context.", context_blocks=blocks)

    def narrowed(self, widths: tuple[int, int, int], blocks: tuple[int, int], context_blocks: int) -> ClickRefiner:
        """A smaller refiner made of this one's weights: at each stride the ``widths`` channels with the largest
        BatchNorm scales of the stage's first convolution are kept (the same channels all along the stage, so the
        residual stream stays aligned), in each kept block the hidden channels with the largest scales, and the
        first ``blocks`` blocks of each stage and ``context_blocks`` of the context stage (a dropped residual block
        leaves its input as it was). A narrower net computes another function: a start for distillation
        (``seem.train.refiner --teacher``), not a finished refiner. Widths and block counts may not exceed this
        refiner's."""
        w2, w4, w8 = (int(c) for c in widths)
        n4, n8 = (int(n) for n in blocks)
        cfg = dataclasses.replace(self.cfg, widths=(w2, w4, w8), blocks=(n4, n8), context_blocks=int(context_blocks))
        over = [
            f"{name} {mine} > {theirs}"
            for name, mine, theirs in [
                *[(f"widths[{i}]", a, b) for i, (a, b) in enumerate(zip(cfg.widths, self.cfg.widths, strict=True))],
                *[(f"blocks[{i}]", a, b) for i, (a, b) in enumerate(zip(cfg.blocks, self.cfg.blocks, strict=True))],
                ("context_blocks", cfg.context_blocks, self.cfg.context_blocks),
            ]
            if mine > theirs or mine < (1 if name.startswith("widths") else 0)
        ]
        if over:
            raise ValueError(f"a narrowed refiner keeps at most this one's layout (and widths >= 1): {', '.join(over)}")
        t = {k: v.detach().clone() for k, v in self.state_dict().items()}
        out: dict[str, Tensor] = {}

        def top(key: str, k: int) -> Tensor:  # the k largest |scale| channels of a BatchNorm, in their order
            return torch.topk(t[key].abs(), k).indices.sort().values

        def norm(dst: str, src: str, idx: Tensor) -> None:
            for n in ("weight", "bias", "running_mean", "running_var"):
                out[f"{dst}.{n}"] = t[f"{src}.{n}"][idx]
            out[f"{dst}.num_batches_tracked"] = t[f"{src}.num_batches_tracked"]

        def conv_norm(name: str, iout: Tensor, iin: Tensor | None) -> None:
            w = t[f"{name}.0.weight"][iout]
            out[f"{name}.0.weight"] = w if iin is None else w[:, iin]
            norm(f"{name}.1", f"{name}.1", iout)

        def block(dst: str, src: str, idx: Tensor) -> None:
            hid = top(f"{src}.body.1.weight", len(idx) * cfg.expand)
            out[f"{dst}.body.0.weight"] = t[f"{src}.body.0.weight"][hid][:, idx]
            norm(f"{dst}.body.1", f"{src}.body.1", hid)
            out[f"{dst}.body.3.weight"] = t[f"{src}.body.3.weight"][hid]
            norm(f"{dst}.body.4", f"{src}.body.4", hid)
            out[f"{dst}.body.6.weight"] = t[f"{src}.body.6.weight"][idx][:, hid]
            norm(f"{dst}.body.7", f"{src}.body.7", idx)

        def fuse(name: str, low: Tensor, low_width: int, high: Tensor, iout: Tensor) -> None:
            w = t[f"{name}.0.weight"][iout]  # its input: cat([low, high])
            out[f"{name}.0.weight"] = torch.cat([w[:, low], w[:, low_width + high]], 1)
            norm(f"{name}.1", f"{name}.1", iout)
            out[f"{name}.3.weight"] = t[f"{name}.3.weight"][iout]
            norm(f"{name}.4", f"{name}.4", iout)

        i2, i4, i8 = (top(f"{m}.1.weight", c) for m, c in zip(("down2", "down4", "down8"), cfg.widths, strict=True))
        conv_norm("down2", i2, None)
        conv_norm("down4", i4, i2)
        conv_norm("down8", i8, i4)
        for j in range(cfg.blocks[0]):
            block(f"blocks4.{j}", f"blocks4.{j}", i4)
        for j in range(cfg.blocks[1]):
            block(f"blocks8.{j}", f"blocks8.{j}", i8)
        if cfg.feature_dim:
            out["feat_in.weight"], out["feat_in.bias"] = t["feat_in.weight"][i8], t["feat_in.bias"][i8]
        out.update({k: v for k, v in t.items() if k.startswith("similarity.")})  # reads the features: unchanged
        if cfg.context_blocks:
            conv_norm("context.0", i8, i8)
            for j in range(1, cfg.context_blocks + 1):
                block(f"context.{j}", f"context.{j}", i8)
            last, theirs = cfg.context_blocks + 1, self.cfg.context_blocks + 1
            out[f"context.{last}.weight"] = t[f"context.{theirs}.weight"][i8][:, i8]
            out[f"context.{last}.bias"] = t[f"context.{theirs}.bias"][i8]
        fuse("up4", i8, self.cfg.widths[2], i4, i4)
        fuse("up2", i4, self.cfg.widths[1], i2, i2)
        out["head.weight"], out["head.bias"] = t["head.weight"][:, i2], t["head.bias"]
        new = ClickRefiner(cfg)
        new.load_state_dict(out, strict=True)
        return new.train(self.training)

    def _grown(self, module: str, **changes: int) -> ClickRefiner:
        """A copy built with the config ``changes``, this refiner's weights loaded into it: only the parameters of
        the new ``module`` (key prefix) keep their initialisation (a zero output, so the same function)."""
        new = ClickRefiner(dataclasses.replace(self.cfg, **changes))  # type: ignore[arg-type]
        missing, unexpected = new.load_state_dict(self.state_dict(), strict=False)
        if unexpected or not missing or not all(k.startswith(module) for k in missing):  # pragma: no cover
            raise RuntimeError(f"unexpected layout: missing {missing}, unexpected {unexpected}")
        return new.train(self.training)


def fold_batchnorm(refiner: ClickRefiner) -> ClickRefiner:
    """An inference copy of ``refiner`` (eval mode, no gradients) with every BatchNorm folded into the convolution
    before it (the BatchNorm replaced by ``nn.Identity``) and the two decoder merges split (``_SplitFuse``): the
    same function up to float rounding, about a fifth less time per call on CPU (no separate normalisation pass
    over each feature map, no concatenation at the higher resolution). Its state dict has other keys; save the
    original, not the copy."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(refiner).eval().requires_grad_(False)
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    _, c4, c8 = refiner.cfg.widths
    out.up4 = _SplitFuse(out.up4, c8)
    out.up2 = _SplitFuse(out.up2, c4)
    return out.requires_grad_(False)


class _SplitFuse(nn.Module):
    """A folded ``_fuse`` that merges a coarse map ``low`` into a finer ``high`` without concatenating them: its
    1×1 convolution over ``cat([resize(low), high])`` is ``resize(W_low · low) + W_high · high + b`` (bilinear
    resampling is linear per channel and a 1×1 convolution mixes channels per pixel, so they commute); ``low`` is
    mixed down to the output width before it is resampled, at the coarse resolution."""

    def __init__(self, fuse: nn.Module, low_channels: int) -> None:
        super().__init__()
        parts = list(fuse.children())
        conv = parts[0] if parts else None
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1):  # pragma: no cover - layout contract
            raise TypeError("expected a folded _fuse (1×1 convolution first)")
        w = conv.weight.detach()
        cout = w.shape[0]
        self.low = nn.Conv2d(low_channels, cout, 1, bias=False)
        self.high = nn.Conv2d(w.shape[1] - low_channels, cout, 1)
        with torch.no_grad():
            self.low.weight.copy_(w[:, :low_channels])
            self.high.weight.copy_(w[:, low_channels:])
            _need_bias(self.high).copy_(_need_bias(conv))
        self.rest = nn.Sequential(*parts[1:])  # identity (the folded BatchNorm), ReLU, depthwise 3×3, ReLU

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return self.rest(_resize(self.low(low), high) + self.high(high))


def _merge(fuse: nn.Module, low: Tensor, high: Tensor) -> Tensor:
    """One decoder step of the refiner: ``low`` resampled to ``high``'s size, both merged by ``fuse``."""
    if isinstance(fuse, _SplitFuse):
        return fuse(low, high)
    return fuse(torch.cat([_resize(low, high), high], 1))


def _need_bias(conv: nn.Conv2d) -> Tensor:
    if conv.bias is None:  # pragma: no cover - built with a bias above
        raise RuntimeError("the convolution has no bias")
    return conv.bias


def _resize(x: Tensor, like: Tensor) -> Tensor:
    if x.shape[-2:] == like.shape[-2:]:  # bilinear at scale 1 is the identity
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
