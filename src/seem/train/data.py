"""Training data: one sample format for every dataset, augmentation, a ``Dataset`` wrapper and the collate function.

``Sample`` is what every adapter in ``seem.train.datasets`` returns and what augmentation, prompt simulation and
the trainer consume::

    image               uint8 [3, H, W] RGB
    masks               bool  [N, H, W] (may overlap: parts, nested SA-1B / BSDS masks, LVIS)
    class_ids           long  [N] index into the adapter's ``class_names`` (-1 = unknown)
    part_ids            long  [N] index into the adapter's ``part_names`` (-1 = not a part)
    is_thing            bool  [N] (COCO things vs stuff; False when unknown)
    granularity_groups  list of chains of mask indices, each ordered whole → part (nested masks)
    sentences           list of (mask index, text) referring expressions
    image_id            str
    ignore              bool  [H, W] pixels without a label (void bands, crowd regions); never a loss target

Augmentation (``LargeScaleJitter``, the SEEM / Mask2Former recipe): horizontal flip (p = 0.5; "left" and "right"
are swapped in the sentences so the text still describes the flipped image; no class changes), then a random scale
``s ~ U(0.1, 2.0)`` of a ``image_size``² target (the image is resized to fit ``s · image_size`` on both sides,
keeping its aspect ratio), then a random crop of at most ``image_size``². Masks use nearest-neighbour resizing,
the image bilinear (antialiased when shrinking); everything is drawn from one ``numpy.random.Generator``, so a sample
is reproducible from ``(seed, epoch, index)``. Padding to the square canvas happens in ``collate`` (``pad_to``),
with zeros that ``Batch.normalized`` keeps at 0 after normalisation, exactly like inference padding (the official
``FixedSizeCrop`` pads raw pixels with 128 instead).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "Batch",
    "Collate",
    "LSJConfig",
    "LargeScaleJitter",
    "Sample",
    "SampleSource",
    "TrainDataset",
    "Transform",
    "collate",
    "containment_groups",
    "containment_matrix",
    "crop_sample",
    "drop_small_masks",
    "hflip_sample",
    "mask_iou_matrix",
    "pad_sample",
    "read_image",
    "resize_sample",
    "resize_shortest_edge",
    "swap_left_right",
]


# ---------------------------------------------------------------------------------------------------------------
# the sample
# ---------------------------------------------------------------------------------------------------------------


def _as_tensor(x: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


@dataclass
class Sample:
    """One training image with all its annotations (see the module docstring for the fields).

    Construct with ``Sample.create`` to convert numpy arrays and fill defaults; the constructor validates shapes,
    dtypes and indices and raises ``ValueError`` / ``TypeError`` naming the bad field.
    """

    image: Tensor
    masks: Tensor
    class_ids: Tensor
    part_ids: Tensor
    is_thing: Tensor
    granularity_groups: list[list[int]]
    sentences: list[tuple[int, str]]
    image_id: str
    ignore: Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.bool))

    def __post_init__(self) -> None:
        if not isinstance(self.image, Tensor) or self.image.dtype != torch.uint8:
            raise TypeError(
                f"image must be a uint8 tensor [3, H, W], got {type(self.image).__name__} "
                f"{getattr(self.image, 'dtype', '')}"
            )
        if self.image.dim() != 3 or self.image.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W] (RGB, channels first), got shape {tuple(self.image.shape)}")
        h, w = int(self.image.shape[1]), int(self.image.shape[2])
        if not isinstance(self.masks, Tensor) or self.masks.dtype != torch.bool:
            raise TypeError(f"masks must be a bool tensor [N, H, W], got {getattr(self.masks, 'dtype', None)}")
        if self.masks.dim() != 3 or tuple(self.masks.shape[1:]) != (h, w):
            raise ValueError(f"masks must be [N, {h}, {w}], got shape {tuple(self.masks.shape)}")
        n = int(self.masks.shape[0])
        for name, dtype in (("class_ids", torch.long), ("part_ids", torch.long), ("is_thing", torch.bool)):
            v = getattr(self, name)
            if not isinstance(v, Tensor) or v.dtype != dtype or tuple(v.shape) != (n,):
                raise ValueError(
                    f"{name} must be a {dtype} tensor [{n}], got {getattr(v, 'dtype', type(v))} "
                    f"{tuple(getattr(v, 'shape', ()))}"
                )
        if n and (int(self.class_ids.min()) < -1 or int(self.part_ids.min()) < -1):
            raise ValueError("class_ids and part_ids must be >= -1 (-1 = unknown / not a part)")
        if self.ignore.numel() == 0 and tuple(self.ignore.shape) != (h, w):
            self.ignore = torch.zeros(h, w, dtype=torch.bool)
        if self.ignore.dtype != torch.bool or tuple(self.ignore.shape) != (h, w):
            raise ValueError(f"ignore must be bool [{h}, {w}], got {self.ignore.dtype} {tuple(self.ignore.shape)}")
        for g in self.granularity_groups:
            if not g or any(not 0 <= int(i) < n for i in g):
                raise ValueError(f"granularity group {g} must be a non-empty list of mask indices < {n}")
        for i, text in self.sentences:
            if not 0 <= int(i) < n or not isinstance(text, str):
                raise ValueError(f"sentence ({i!r}, {text!r}) must refer to a mask index < {n} with a str text")
        self.image_id = str(self.image_id)

    @classmethod
    def create(
        cls,
        image: Any,
        masks: Any,
        *,
        class_ids: Any = None,
        part_ids: Any = None,
        is_thing: Any = None,
        granularity_groups: Sequence[Sequence[int]] | None = None,
        sentences: Sequence[tuple[int, str]] = (),
        image_id: str | int = "",
        ignore: Any = None,
    ) -> Sample:
        """Build from numpy or torch inputs: ``image`` uint8 ``[H, W, 3]`` or ``[3, H, W]``; ``masks`` bool / 0-1
        ``[N, H, W]``; missing labels default to -1 / False, groups to one singleton per mask."""
        img = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
        if img.dtype != torch.uint8:
            raise TypeError(f"image must be uint8 RGB (0..255), got {img.dtype}")
        if img.dim() == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
            img = img.permute(2, 0, 1)
        img = img.contiguous()
        h, w = int(img.shape[-2]), int(img.shape[-1])
        m = _as_tensor(masks, torch.bool) if masks is not None else torch.zeros(0, h, w, dtype=torch.bool)
        if m.dim() == 2:
            m = m[None]
        n = int(m.shape[0])
        cid = torch.full((n,), -1, dtype=torch.long) if class_ids is None else _as_tensor(class_ids, torch.long)
        pid = torch.full((n,), -1, dtype=torch.long) if part_ids is None else _as_tensor(part_ids, torch.long)
        thing = torch.zeros(n, dtype=torch.bool) if is_thing is None else _as_tensor(is_thing, torch.bool)
        groups = (
            [[i] for i in range(n)] if granularity_groups is None else [[int(i) for i in g] for g in granularity_groups]
        )
        ign = torch.zeros(h, w, dtype=torch.bool) if ignore is None else _as_tensor(ignore, torch.bool)
        return cls(
            image=img,
            masks=m.contiguous(),
            class_ids=cid.reshape(-1),
            part_ids=pid.reshape(-1),
            is_thing=thing.reshape(-1),
            granularity_groups=groups,
            sentences=[(int(i), str(t)) for i, t in sentences],
            image_id=str(image_id),
            ignore=ign,
        )

    @property
    def height(self) -> int:
        return int(self.image.shape[1])

    @property
    def width(self) -> int:
        return int(self.image.shape[2])

    @property
    def num_masks(self) -> int:
        return int(self.masks.shape[0])

    def areas(self) -> Tensor:
        """long ``[N]`` mask areas in pixels."""
        return self.masks.flatten(1).sum(1)

    def boxes_xyxy(self) -> Tensor:
        """float32 ``[N, 4]`` tight XYXY pixel boxes (exclusive right/bottom edge); zeros for empty masks."""
        n, h, w = self.masks.shape
        rows, cols = self.masks.any(2), self.masks.any(1)
        ar_h, ar_w = torch.arange(h), torch.arange(w)
        y0 = torch.where(rows, ar_h, h).amin(1) if h else torch.zeros(n, dtype=torch.long)
        y1 = torch.where(rows, ar_h, -1).amax(1) + 1 if h else torch.zeros(n, dtype=torch.long)
        x0 = torch.where(cols, ar_w, w).amin(1) if w else torch.zeros(n, dtype=torch.long)
        x1 = torch.where(cols, ar_w, -1).amax(1) + 1 if w else torch.zeros(n, dtype=torch.long)
        out = torch.stack((x0, y0, x1, y1), 1).float()
        out[~rows.any(1)] = 0
        return out

    def select(self, keep: Sequence[int] | Tensor) -> Sample:
        """The sample restricted to masks ``keep`` (indices or a bool ``[N]``), in that order; groups and sentences
        are re-indexed (entries of dropped masks are removed, empty groups dropped, duplicates merged)."""
        k = torch.as_tensor(keep)
        idx = torch.nonzero(k).flatten() if k.dtype == torch.bool else k.long().flatten()
        old_to_new = {int(o): i for i, o in enumerate(idx.tolist())}
        groups: list[list[int]] = []
        seen: set[tuple[int, ...]] = set()
        for g in self.granularity_groups:
            ng = tuple(old_to_new[i] for i in g if i in old_to_new)
            if ng and ng not in seen:
                seen.add(ng)
                groups.append(list(ng))
        # a chain that became a prefix of another one carries no extra information
        tuples = [tuple(g) for g in groups]
        groups = [list(g) for g in tuples if not any(o != g and o[: len(g)] == g for o in tuples)]
        sentences = [(old_to_new[i], t) for i, t in self.sentences if i in old_to_new]
        return replace(
            self,
            masks=self.masks[idx],
            class_ids=self.class_ids[idx],
            part_ids=self.part_ids[idx],
            is_thing=self.is_thing[idx],
            granularity_groups=groups,
            sentences=sentences,
        )


class SampleSource(Protocol):
    """What every dataset adapter provides: ``len``, ``source[i] -> Sample`` (deterministic, unaugmented) and its
    vocabularies."""

    class_names: list[str]
    part_names: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """Read an image file as RGB uint8 ``[3, H, W]`` (EXIF orientation applied, as detectron2 does)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im) or im
        arr = np.array(upright.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# ---------------------------------------------------------------------------------------------------------------
# mask relations
# ---------------------------------------------------------------------------------------------------------------


def _rles(masks: np.ndarray) -> list[dict[str, Any]]:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))))


def containment_matrix(masks: Any) -> np.ndarray:
    """``C[i, j] = |m_i ∩ m_j| / |m_i|`` (the fraction of mask ``i`` inside mask ``j``) for bool ``[N, H, W]``
    masks, computed on run-length encodings (pycocotools) so it stays fast for large images. Empty masks give
    rows of 0. Returns float64 ``[N, N]``."""
    from pycocotools import mask as mask_utils

    m = masks.numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    m = m.astype(bool)
    n = m.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    rles = _rles(m)
    c = np.asarray(mask_utils.iou(rles, rles, [1] * n), np.float64).reshape(n, n)
    areas = m.reshape(n, -1).sum(1)
    c[areas == 0] = 0.0
    return c


def mask_iou_matrix(a: Any, b: Any) -> np.ndarray:
    """IoU of every pair of bool masks ``[N, H, W]`` × ``[M, H, W]`` → float64 ``[N, M]`` (pycocotools RLE)."""
    from pycocotools import mask as mask_utils

    ma = (a.numpy() if isinstance(a, Tensor) else np.asarray(a)).astype(bool)
    mb = (b.numpy() if isinstance(b, Tensor) else np.asarray(b)).astype(bool)
    if ma.shape[0] == 0 or mb.shape[0] == 0:
        return np.zeros((ma.shape[0], mb.shape[0]))
    if ma.shape[1:] != mb.shape[1:]:
        raise ValueError(f"mask sizes differ: {ma.shape[1:]} vs {mb.shape[1:]}")
    return np.asarray(mask_utils.iou(_rles(ma), _rles(mb), [0] * mb.shape[0]), np.float64).reshape(
        ma.shape[0], mb.shape[0]
    )


def containment_groups(masks: Any, threshold: float = 0.9, contain: np.ndarray | None = None) -> list[list[int]]:
    """Granularity chains of possibly nested masks, whole → part.

    Each mask's parent is the smallest strictly larger mask (equal area: lower index) that contains at least
    ``threshold`` of it; each chain runs from a root to a leaf (a mask that is nobody's parent), so every mask is
    in at least one chain and consecutive entries nest. Chains are listed in leaf order; empty masks are left out.

    Args:
        masks: bool ``[N, H, W]``.
        threshold: minimum fraction of the child inside the parent.
        contain: a precomputed ``containment_matrix(masks)``.
    """
    m = masks.numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    n = m.shape[0]
    if n == 0:
        return []
    c = containment_matrix(m) if contain is None else contain
    areas = m.reshape(n, -1).sum(1).astype(np.int64)
    idx = np.arange(n)
    larger = (areas[None, :] > areas[:, None]) | ((areas[None, :] == areas[:, None]) & (idx[None, :] < idx[:, None]))
    ok = (c >= threshold) & larger & (areas[:, None] > 0)
    np.fill_diagonal(ok, False)
    key = np.where(ok, areas[None, :].astype(np.float64) + idx[None, :] / (n + 1.0), np.inf)
    parent = np.where(ok.any(1), key.argmin(1), -1)
    is_parent = np.zeros(n, bool)
    is_parent[parent[parent >= 0]] = True
    groups = []
    for leaf in idx[(~is_parent) & (areas > 0)]:
        chain = [int(leaf)]
        while parent[chain[-1]] >= 0:
            chain.append(int(parent[chain[-1]]))
        groups.append(chain[::-1])
    return groups


# ---------------------------------------------------------------------------------------------------------------
# geometric transforms (image and masks together)
# ---------------------------------------------------------------------------------------------------------------

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap the words "left" and "right" (case kept), for captions of a mirrored image."""

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        r = "right" if w.lower() == "left" else "left"
        return r.upper() if w.isupper() else (r.capitalize() if w[0].isupper() else r)

    return _LEFT_RIGHT.sub(sub, text)


def hflip_sample(sample: Sample, *, swap_words: bool = True) -> Sample:
    """Mirror image, masks and ignore map horizontally; classes are unchanged and (``swap_words``) "left" /
    "right" are swapped in the sentences."""
    sentences = [(i, swap_left_right(t)) for i, t in sample.sentences] if swap_words else list(sample.sentences)
    return replace(
        sample,
        image=sample.image.flip(-1),
        masks=sample.masks.flip(-1),
        ignore=sample.ignore.flip(-1),
        sentences=sentences,
    )


def _resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    x = image[None].float()
    shrink = size[0] < h or size[1] < w
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def _nearest_index(n_in: int, n_out: int, offset: int, count: int) -> Tensor:
    """Source indices of output pixels ``offset .. offset + count`` of a nearest resize ``n_in → n_out``
    (half-pixel centres, PyTorch's ``nearest-exact``)."""
    dst = torch.arange(offset, offset + count, dtype=torch.float64)
    return ((dst + 0.5) * (n_in / n_out)).floor().clamp(0, n_in - 1).long()


def _resize_crop(sample: Sample, size: tuple[int, int], crop: tuple[int, int, int, int]) -> Sample:
    """Resize to ``size`` ``(H', W')`` and crop ``(y0, x0, h, w)`` of the resized frame; masks are gathered only
    inside the crop (nearest), so memory stays at the output size."""
    y0, x0, ch, cw = crop
    h, w = sample.height, sample.width
    image = _resize_image(sample.image, size)[:, y0 : y0 + ch, x0 : x0 + cw].contiguous()
    ry = _nearest_index(h, size[0], y0, ch)
    rx = _nearest_index(w, size[1], x0, cw)

    def gather(m: Tensor) -> Tensor:
        return m.index_select(-2, ry).index_select(-1, rx).contiguous()

    return replace(sample, image=image, masks=gather(sample.masks), ignore=gather(sample.ignore))


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``size`` ``(H, W)``: image bilinear (antialiased when shrinking), masks / ignore nearest."""
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return _resize_crop(sample, (h, w), (0, 0, h, w))


def crop_sample(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop the window ``[top, top + height) × [left, left + width)`` (clipped to the image)."""
    t, l_ = max(int(top), 0), max(int(left), 0)
    b, r = min(t + int(height), sample.height), min(l_ + int(width), sample.width)
    if b <= t or r <= l_:
        raise ValueError(f"crop ({top}, {left}, {height}, {width}) is outside the {sample.height}x{sample.width} image")
    return replace(
        sample,
        image=sample.image[:, t:b, l_:r].contiguous(),
        masks=sample.masks[:, t:b, l_:r].contiguous(),
        ignore=sample.ignore[t:b, l_:r].contiguous(),
    )


def pad_sample(sample: Sample, size: tuple[int, int], value: int = 0) -> Sample:
    """Pad bottom/right to ``size`` ``(H, W)``: image with ``value``, masks and ignore with False."""
    hp, wp = int(size[0]), int(size[1])
    h, w = sample.height, sample.width
    if hp < h or wp < w:
        raise ValueError(f"cannot pad a {h}x{w} sample to the smaller {hp}x{wp}")
    if (hp, wp) == (h, w):
        return sample
    pad = (0, wp - w, 0, hp - h)
    return replace(
        sample,
        image=F.pad(sample.image, pad, value=value),
        masks=F.pad(sample.masks, pad, value=False),
        ignore=F.pad(sample.ignore, pad, value=False),
    )


def drop_small_masks(sample: Sample, min_area: int = 1) -> Sample:
    """Remove masks with fewer than ``min_area`` pixels (re-indexing groups and sentences)."""
    keep = sample.areas() >= min_area
    return sample if bool(keep.all()) else sample.select(keep)


def resize_shortest_edge(sample: Sample, short: int, max_size: int | None = None) -> Sample:
    """Resize so the short side is ``short`` (the long side at most ``max_size``), keeping the aspect ratio."""
    h, w = sample.height, sample.width
    s = short / min(h, w)
    if max_size is not None and max(h, w) * s > max_size:
        s = max_size / max(h, w)
    return resize_sample(sample, (max(round(h * s), 1), max(round(w * s), 1)))


Transform = Callable[[Sample, np.random.Generator], Sample]
"""A seeded augmentation: ``(sample, rng) -> sample``."""


@dataclass(frozen=True)
class LSJConfig:
    """Large-scale jitter settings (SEEM v1: ``IMAGE_SIZE`` 1024, ``MIN_SCALE`` 0.1, ``MAX_SCALE`` 2.0, horizontal
    flip). ``min_mask_area``: masks smaller than this after the crop are dropped."""

    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip_prob: float = 0.5
    swap_left_right: bool = True
    min_mask_area: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 1 or not 0 < self.min_scale <= self.max_scale or not 0 <= self.flip_prob <= 1:
            raise ValueError(f"invalid LSJ settings {self}")


class LargeScaleJitter:
    """Flip → random scale of a square target → random crop (detectron2 ``RandomFlip``, ``ResizeScale``,
    ``FixedSizeCrop`` without its padding; see the module docstring). Output at most ``image_size``² ."""

    def __init__(self, config: LSJConfig | None = None) -> None:
        self.config = config or LSJConfig()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        c = self.config
        if rng.uniform() < c.flip_prob:
            sample = hflip_sample(sample, swap_words=c.swap_left_right)
        h, w = sample.height, sample.width
        s = rng.uniform(c.min_scale, c.max_scale) * c.image_size
        scale = min(s / h, s / w)
        rh, rw = max(round(h * scale), 1), max(round(w * scale), 1)
        ch, cw = min(c.image_size, rh), min(c.image_size, rw)
        oy = round((rh - ch) * rng.uniform())
        ox = round((rw - cw) * rng.uniform())
        out = _resize_crop(sample, (rh, rw), (oy, ox, ch, cw))
        return drop_small_masks(out, c.min_mask_area)


class Sequential:
    """Transforms applied one after the other, each with the same generator (picklable, for loader workers)."""

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = transforms

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


# ---------------------------------------------------------------------------------------------------------------
# dataset and batches
# ---------------------------------------------------------------------------------------------------------------


class TrainDataset(Dataset[Sample]):
    """A ``torch.utils.data.Dataset`` over any ``SampleSource`` with a seeded transform.

    Item ``i`` of epoch ``e`` is ``transform(source[i], numpy.random.default_rng([seed, e, i]))``, so it does not
    depend on worker count, worker assignment or order of access. Call ``set_epoch`` at the start of each epoch
    (workers hold a copy: with persistent workers recreate the loader or use a sampler-driven epoch).
    """

    def __init__(self, source: Any, transform: Transform | None = None, *, seed: int = 0) -> None:
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise TypeError("source must support len() and indexing (a SampleSource)")
        self.source = source
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator item ``index`` uses in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        s = self.source[index]
        if not isinstance(s, Sample):
            raise TypeError(f"source returned {type(s).__name__}, expected Sample")
        return self.transform(s, self.rng(index)) if self.transform is not None else s


@dataclass
class Batch:
    """Collated samples.

    Attributes:
        images: uint8 ``[B, 3, Hc, Wc]``, each image at the top-left, zero-padded bottom/right.
        image_sizes: per image its unpadded ``(H, W)``.
        samples: the samples padded to ``(Hc, Wc)`` (masks / ignore False in the padding); use them for targets
            and prompt simulation on the canvas.
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def canvas_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def valid_mask(self) -> Tensor:
        """bool ``[B, Hc, Wc]``: True inside each unpadded image."""
        b = len(self.samples)
        hc, wc = self.canvas_size
        ys = torch.arange(hc)[None, :, None]
        xs = torch.arange(wc)[None, None, :]
        hs = torch.tensor([s[0] for s in self.image_sizes]).view(b, 1, 1)
        ws = torch.tensor([s[1] for s in self.image_sizes]).view(b, 1, 1)
        return ((ys < hs) & (xs < ws)).to(self.images.device)

    def normalized(self, mean: Sequence[float], std: Sequence[float]) -> Tensor:
        """float32 ``[B, 3, Hc, Wc]``: ``(image − mean) / std`` inside each image and exactly 0 in the padding (the
        model's own preprocessing, ``seem.models.preprocess.normalize_and_pad``)."""
        m = torch.as_tensor(mean, dtype=torch.float32, device=self.images.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=self.images.device).view(1, 3, 1, 1)
        x = (self.images.float() - m) / s
        return x * self.valid_mask()[:, None].to(x)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        def one(s: Sample) -> Sample:
            return replace(
                s,
                image=fn(s.image),
                masks=fn(s.masks),
                class_ids=fn(s.class_ids),
                part_ids=fn(s.part_ids),
                is_thing=fn(s.is_thing),
                ignore=fn(s.ignore),
            )

        return Batch(fn(self.images), list(self.image_sizes), [one(s) for s in self.samples])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy (called by ``DataLoader(pin_memory=True)``)."""
        return self._map(lambda t: t.pin_memory())


def collate(
    samples: Sequence[Sample], *, size_divisibility: int = 32, pad_to: int | tuple[int, int] | None = None
) -> Batch:
    """Stack samples on one canvas: the largest ``(H, W)`` of the batch (at least ``pad_to``), rounded up to a
    multiple of ``size_divisibility``; images, masks and ignore maps are zero-padded bottom/right."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    hc = max(s.height for s in samples)
    wc = max(s.width for s in samples)
    if pad_to is not None:
        ph, pw = (pad_to, pad_to) if isinstance(pad_to, int) else pad_to
        hc, wc = max(hc, int(ph)), max(wc, int(pw))
    if size_divisibility > 1:
        hc = int(math.ceil(hc / size_divisibility) * size_divisibility)
        wc = int(math.ceil(wc / size_divisibility) * size_divisibility)
    padded = [pad_sample(s, (hc, wc)) for s in samples]
    return Batch(
        images=torch.stack([s.image for s in padded]),
        image_sizes=[(s.height, s.width) for s in samples],
        samples=padded,
    )


@dataclass(frozen=True)
class Collate:
    """Picklable ``collate_fn`` for ``DataLoader`` (``Collate(pad_to=1024)``)."""

    size_divisibility: int = 32
    pad_to: int | tuple[int, int] | None = None

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        return collate(samples, size_divisibility=self.size_divisibility, pad_to=self.pad_to)
