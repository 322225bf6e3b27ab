"""Hungarian matching of predictions to ground truth, and the geometric primitives the costs and losses share.

Conventions:

* Mask predictions are **logits** at any resolution (SEEM and Semantic-SAM: stride 4 of the padded canvas); target
  masks are binary maps of the **same canvas** at any resolution (usually full). They are compared at shared
  random points given in normalised ``(x, y)`` coordinates in ``[0, 1]`` of the canvas and read with
  ``point_sample`` (``grid_sample``, ``align_corners=False``), so the two resolutions never need to agree.
* Boxes are ``(cx, cy, w, h)`` normalised to the canvas unless a function says XYXY.
* Every random draw takes an optional ``torch.Generator``; numbers are drawn on the generator's device and moved to
  the data's, so a CPU generator gives the same matching on every device.

Matchers (official recipes, ``docs``: official-code.md §6):

* ``HungarianMatcher``: one-to-one (``scipy.optimize.linear_sum_assignment``) with cost
  ``cost_class · class_cost + cost_mask · BCE + cost_dice · dice`` on ``num_points`` shared uniform random points.
  SEEM uses 2 / 5 / 5 for every query group (its ``COST_SPATIAL`` setting is ignored by the official constructor).
  ``match_objects``: class cost ``-softmax(class_logits)[:, target_class]``; ``match_grounding``: ``-softmax over
  queries`` of the phrase similarity; ``match_spatial``: ``-softmax over the prompt's own queries`` of
  ``mask_embedding · pooled_prompt``, and queries of other prompts are forbidden.
* ``ManyToManyMatcher``: Semantic-SAM. Each click has ``K`` (6) predictions and up to ``K`` targets (every GT mask
  that contains the click). One Hungarian problem per image over all ``clicks × K`` predictions and all
  ``(click, target)`` slots, pairs of different clicks cost ``FORBIDDEN_COST`` (1e6, as official); cost
  ``5·BCE + 5·dice + 5·L1(box) + 2·(−GIoU)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FORBIDDEN_COST",
    "HungarianMatcher",
    "ManyToManyMatch",
    "ManyToManyMatcher",
    "Match",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "check_same_canvas",
    "generalized_box_iou",
    "linear_assignment",
    "mask_match_costs",
    "masks_to_boxes_cxcywh",
    "paired_generalized_box_iou",
    "pairwise_box_iou",
    "pairwise_dice_cost",
    "pairwise_sigmoid_bce_cost",
    "point_sample",
    "random_points",
]

FORBIDDEN_COST = 1e6
"""Cost of a pair that must not be matched (Semantic-SAM's value; finite so that scipy always finds a solution)."""


# ---------------------------------------------------------------------------------------------------------------
# point sampling
# ---------------------------------------------------------------------------------------------------------------


def random_points(
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform ``[0, 1)`` numbers of ``shape`` (e.g. ``[N, P, 2]`` point coordinates), drawn from ``generator``
    on the generator's own device and moved to ``device`` (so a CPU generator is reproducible everywhere)."""
    if generator is None:
        return torch.rand(tuple(shape), device=device, dtype=dtype)
    out = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=device, dtype=dtype)


def point_sample(values: Tensor, coords: Tensor, *, align_corners: bool = False) -> Tensor:
    """Bilinear reads of maps at normalised points (detectron2's PointRend ``point_sample``).

    Args:
        values: ``[N, C, H, W]`` or ``[N, H, W]`` maps. Bool / integer maps (e.g. full-resolution target masks)
            are read by gathering the four neighbours, without a float copy of the whole stack.
        coords: ``[N, P, 2]`` points ``(x, y)`` in ``[0, 1]`` of each map (0 = left/top edge, 1 = right/bottom edge
            with ``align_corners=False``); points outside read zeros.

    Returns:
        ``[N, C, P]`` (or ``[N, P]`` for 3-D ``values``) in ``values``' float dtype (float32 for bool/int input).
    """
    if not isinstance(values, Tensor) or not isinstance(coords, Tensor):
        raise TypeError("point_sample expects torch tensors")
    squeeze = values.dim() == 3
    if squeeze:
        values = values.unsqueeze(1)
    if values.dim() != 4:
        raise ValueError(f"values must be [N, C, H, W] or [N, H, W], got shape {tuple(values.shape)}")
    if coords.dim() != 3 or coords.shape[-1] != 2 or coords.shape[0] != values.shape[0]:
        raise ValueError(f"coords must be [N={values.shape[0]}, P, 2], got shape {tuple(coords.shape)}")
    if not values.is_floating_point():
        out = _point_sample_gather(values, coords.float(), align_corners)
        return out.squeeze(1) if squeeze else out
    grid = (2.0 * coords.to(values.dtype) - 1.0).unsqueeze(2)  # [N, P, 1, 2]
    out = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    out = out.squeeze(3)
    return out.squeeze(1) if squeeze else out


def _point_sample_gather(values: Tensor, coords: Tensor, align_corners: bool) -> Tensor:
    """``grid_sample`` (bilinear, zero padding) of integer / bool maps ``[N, C, H, W]`` by gathering the four
    neighbours, so a stack of full-resolution binary masks is never copied to float. Returns float32 ``[N, C, P]``."""
    n, c, h, w = values.shape
    x, y = coords[..., 0], coords[..., 1]
    if align_corners:
        x, y = x * (w - 1), y * (h - 1)
    else:
        x, y = x * w - 0.5, y * h - 0.5
    x0, y0 = x.floor(), y.floor()
    wx1, wy1 = x - x0, y - y0
    xi, yi = x0.long(), y0.long()
    # per axis: (clamped index, weight × in-bounds) of the two neighbours
    cols = [((xi + d).clamp(0, w - 1), wt * ((xi + d >= 0) & (xi + d < w))) for d, wt in ((0, 1 - wx1), (1, wx1))]
    rows = [((yi + d).clamp(0, h - 1) * w, wt * ((yi + d >= 0) & (yi + d < h))) for d, wt in ((0, 1 - wy1), (1, wy1))]
    flat = values.flatten(2)  # [N, C, H*W]
    out = torch.zeros(n, c, coords.shape[1], dtype=torch.float32, device=values.device)
    for r, wr in rows:
        for col, wc in cols:
            v = flat.gather(2, (r + col)[:, None].expand(-1, c, -1))
            out.addcmul_(v.float(), (wr * wc)[:, None])
    return out


# ---------------------------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------------------------


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``(cx, cy, w, h)`` → ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), -1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``(x0, y0, x1, y1)`` → ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), -1)


def box_area(boxes: Tensor) -> Tensor:
    """``[..., 4]`` XYXY → ``[...]`` areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _check_xyxy(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must be [N, 4] XYXY boxes, got shape {tuple(boxes.shape)}")
    if boxes.numel() and not bool((boxes[:, 2:] >= boxes[:, :2]).all()):
        raise ValueError(f"{name} must be XYXY with x1 >= x0 and y1 >= y0 (degenerate or swapped box found)")


def pairwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and union of every XYXY box pair: ``[N, 4]`` × ``[M, 4]`` → ``([N, M], [N, M])``."""
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    a1, a2 = box_area(boxes1), box_area(boxes2)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = a1[:, None] + a2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU (Rezatofighi et al. 2019) of every XYXY pair: ``[N, 4]`` × ``[M, 4]`` → ``[N, M]`` in
    ``[-1, 1]``: ``IoU − (|hull| − |union|) / |hull|``."""
    iou, union = pairwise_box_iou(boxes1, boxes2)
    lt = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matched XYXY pairs: ``[N, 4]`` and ``[N, 4]`` → ``[N]`` (the diagonal of ``generalized_box_iou``)."""
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"paired boxes need equal shapes, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    lt_h = torch.minimum(boxes1[:, :2], boxes2[:, :2])
    rb_h = torch.maximum(boxes1[:, 2:], boxes2[:, 2:])
    wh_h = (rb_h - lt_h).clamp(min=0)
    hull = wh_h[:, 0] * wh_h[:, 1]
    return inter / union - (hull - union) / hull


def masks_to_boxes_cxcywh(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks ``[N, H, W]`` as ``(cx, cy, w, h)`` normalised to the mask canvas.

    The box of a mask spans pixel edges: ``x0 = min col``, ``x1 = max col + 1`` (exclusive edge), divided by ``W``
    (``H`` for y). An empty mask gets the zero box ``(0, 0, 0, 0)``.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    n, h, w = masks.shape
    m = masks.bool()
    rows = m.any(2)  # [N, H]
    cols = m.any(1)  # [N, W]
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(1).float()
    y1 = torch.where(rows, ar_h, -1).amax(1).float() + 1
    x0 = torch.where(cols, ar_w, big).amin(1).float()
    x1 = torch.where(cols, ar_w, -1).amax(1).float() + 1
    xyxy = torch.stack((x0 / w, y0 / h, x1 / w, y1 / h), -1)
    empty = ~rows.any(1)
    xyxy[empty] = 0.0
    return box_xyxy_to_cxcywh(xyxy).reshape(n, 4)


# ---------------------------------------------------------------------------------------------------------------
# pairwise mask costs
# ---------------------------------------------------------------------------------------------------------------


def pairwise_sigmoid_bce_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy over points of every (prediction, target) pair.

    Args:
        logits: ``[Q, P]`` predicted logits at ``P`` points.
        labels: ``[T, P]`` target values in ``[0, 1]`` at the same points.

    Returns:
        ``[Q, T]``: ``mean_p BCE(logits[q, p], labels[t, p])`` (computed as two matrix products).
    """
    p = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ labels.T + neg @ (1 - labels).T) / max(p, 1)


def pairwise_dice_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """Soft dice loss of every pair: ``1 − (2·Σ σ(x)·y + 1) / (Σ σ(x) + Σ y + 1)`` → ``[Q, T]``."""
    s = logits.sigmoid()
    num = 2 * (s @ labels.T)
    den = s.sum(-1)[:, None] + labels.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def mask_match_costs(
    pred_masks: Tensor, target_masks: Tensor, num_points: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """BCE and dice costs ``[Q, T]`` of mask logits ``[Q, h, w]`` against binary targets ``[T, H, W]`` (same
    canvas) on ``num_points`` uniform random points shared by all masks (the official matchers' rule)."""
    if pred_masks.dim() != 3 or target_masks.dim() != 3:
        raise ValueError(
            f"pred_masks must be [Q, h, w] and target_masks [T, H, W]; got {tuple(pred_masks.shape)} and "
            f"{tuple(target_masks.shape)}"
        )
    check_same_canvas(pred_masks.shape[-2:], target_masks.shape[-2:])
    q, t = pred_masks.shape[0], target_masks.shape[0]
    dev = pred_masks.device
    dtype = pred_masks.dtype if pred_masks.is_floating_point() else torch.float32
    if q == 0 or t == 0:
        z = torch.zeros(q, t, device=dev, dtype=dtype)
        return z, z.clone()
    coords = random_points((1, num_points, 2), device=dev, dtype=dtype, generator=generator)
    logits = point_sample(pred_masks.to(dtype), coords.expand(q, -1, -1))
    labels = point_sample(target_masks.to(dev), coords.expand(t, -1, -1))
    logits, labels = logits.float(), labels.float()
    return pairwise_sigmoid_bce_cost(logits, labels), pairwise_dice_cost(logits, labels)


def check_same_canvas(pred_hw: Sequence[int], tgt_hw: Sequence[int]) -> None:
    """Prediction and target maps must cover the same canvas: equal aspect ratio (e.g. stride 4 vs full)."""
    ph, pw = int(pred_hw[0]), int(pred_hw[1])
    th, tw = int(tgt_hw[0]), int(tgt_hw[1])
    if ph * tw != pw * th:
        raise ValueError(
            f"prediction maps {ph}x{pw} and target masks {th}x{tw} do not cover the same canvas (aspect ratios "
            "differ); give targets on the padded canvas the predictions were made on"
        )


def linear_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment (``scipy.optimize.linear_sum_assignment``) of a ``[Q, T]`` cost.

    Returns ``(rows, cols)`` long tensors on CPU, ``min(Q, T)`` pairs, rows ascending.
    """
    from scipy.optimize import linear_sum_assignment

    if cost.dim() != 2:
        raise ValueError(f"cost must be [Q, T], got shape {tuple(cost.shape)}")
    c = cost.detach().float().cpu().numpy()
    if c.size == 0:
        e = torch.zeros(0, dtype=torch.long)
        return e, e.clone()
    if not np.isfinite(c).all():
        raise ValueError("matching cost has NaN or infinite entries (check the predictions for NaN)")
    r, k = linear_sum_assignment(c)
    return torch.as_tensor(r, dtype=torch.long), torch.as_tensor(k, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------
# one-to-one (SEEM)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A one-to-one matching of one image: prediction ``pred[i]`` ↔ target ``target[i]`` (long, CPU)."""

    pred: Tensor
    target: Tensor

    def __len__(self) -> int:
        return int(self.pred.numel())


class HungarianMatcher:
    """One-to-one Hungarian matcher of SEEM's query groups (``cost_class · class + cost_mask · BCE + cost_dice ·
    dice`` on ``num_points`` shared random points; official 2 / 5 / 5 and 12544).

    All methods work on **one image** and return a ``Match``; they never track gradients.
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.cost_class = float(cost_class)
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.num_points = int(num_points)

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_masks: Tensor,
        target_masks: Tensor,
        class_cost: Tensor | None = None,
        forbidden: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Total cost ``[Q, T]``: mask costs (+ ``cost_class · class_cost``), ``FORBIDDEN_COST`` where
        ``forbidden`` (bool ``[Q, T]``) is True."""
        bce, dice = mask_match_costs(pred_masks, target_masks, self.num_points, generator)
        c = self.cost_mask * bce + self.cost_dice * dice
        if class_cost is not None:
            if class_cost.shape != c.shape:
                raise ValueError(f"class_cost must be {tuple(c.shape)}, got {tuple(class_cost.shape)}")
            c = c + self.cost_class * class_cost.to(c)
        if forbidden is not None:
            c = torch.where(forbidden.to(c.device), torch.full_like(c, FORBIDDEN_COST), c)
        return c

    @torch.no_grad()
    def match(
        self,
        pred_masks: Tensor,
        target_masks: Tensor,
        class_cost: Tensor | None = None,
        forbidden: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Match:
        """Match mask logits ``[Q, h, w]`` to binary targets ``[T, H, W]`` with an optional class cost."""
        r, c = linear_assignment(self.cost_matrix(pred_masks, target_masks, class_cost, forbidden, generator))
        return Match(r, c)

    @torch.no_grad()
    def match_objects(
        self,
        pred_masks: Tensor,
        target_masks: Tensor,
        class_logits: Tensor | None = None,
        target_classes: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Match:
        """Object queries: class cost ``−softmax(class_logits)[:, class]`` (``[Q, K + 1]``, background last);
        targets of unknown class (−1) get no class cost. Without logits only the mask costs count."""
        cls = None
        if class_logits is not None:
            if target_classes is None:
                raise ValueError("target_classes is required with class_logits")
            tc = target_classes.to(class_logits.device).long()
            if tc.numel() and int(tc.max()) >= class_logits.shape[-1] - 1:
                raise ValueError(
                    f"target class {int(tc.max())} out of range for {class_logits.shape[-1] - 1} classes (+background)"
                )
            prob = class_logits.float().softmax(-1)
            cls = -prob[:, tc.clamp(min=0)] * (tc >= 0).float()[None, :]
        return self.match(pred_masks, target_masks, cls, None, generator)

    @torch.no_grad()
    def match_grounding(
        self, pred_masks: Tensor, target_masks: Tensor, similarity: Tensor, generator: torch.Generator | None = None
    ) -> Match:
        """Grounding queries: ``similarity`` ``[Q, G]`` (``vl_similarity`` of query captions and phrases); class
        cost ``−softmax over queries``."""
        return self.match(pred_masks, target_masks, -similarity.float().softmax(0), None, generator)

    @torch.no_grad()
    def match_spatial(
        self,
        pred_masks: Tensor,
        target_masks: Tensor,
        scores: Tensor,
        queries_per_prompt: int = 3,
        generator: torch.Generator | None = None,
    ) -> Match:
        """Spatial queries: ``pred_masks`` ``[n·q, h, w]`` (prompt ``k`` owns rows ``q·k .. q·k + q − 1``),
        ``target_masks`` ``[n, H, W]`` (the GT of each prompt), ``scores`` ``[n·q, n]`` = ``mask_embedding ·
        pooled_prompt``. Class cost ``−softmax`` over the prompt's own queries; other prompts' queries are
        forbidden (official ±inf masking)."""
        nq, n = scores.shape
        if nq != n * queries_per_prompt or target_masks.shape[0] != n or pred_masks.shape[0] != nq:
            raise ValueError(
                f"spatial matching needs scores [{n}·{queries_per_prompt}, {n}], pred_masks [{nq}, h, w] and "
                f"target_masks [{n}, H, W]; got {tuple(scores.shape)}, {tuple(pred_masks.shape)}, "
                f"{tuple(target_masks.shape)}"
            )
        owner = torch.arange(n, device=scores.device).repeat_interleave(queries_per_prompt)
        forbidden = owner[:, None] != torch.arange(n, device=scores.device)[None, :]
        s = scores.float().masked_fill(forbidden, float("-inf"))
        cls = -s.softmax(0)
        return self.match(pred_masks, target_masks, cls, forbidden, generator)


# ---------------------------------------------------------------------------------------------------------------
# many-to-many (Semantic-SAM)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManyToManyMatch:
    """Many-to-many matching of one image (long tensors on CPU, one entry per matched pair).

    Attributes:
        query: flat prediction index ``click · K + token``.
        click, token: the same index split.
        target: index of the matched GT mask.
        slot: index into the flattened ``(click, target)`` slot list (for debugging).
    """

    query: Tensor
    click: Tensor
    token: Tensor
    target: Tensor
    slot: Tensor

    def __len__(self) -> int:
        return int(self.query.numel())


class ManyToManyMatcher:
    """Semantic-SAM's many-to-many matcher (``M2MHungarianMatcher``): every click's ``K`` predictions are matched
    one-to-one to that click's targets, solved as one Hungarian problem per image where cross-click pairs cost
    ``FORBIDDEN_COST``. Cost ``cost_mask · BCE + cost_dice · dice + cost_box · L1 + cost_giou · (−GIoU)``
    (official 5 / 5 / 5 / 2, 12544 shared random points)."""

    def __init__(
        self,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        num_points: int = 12544,
    ) -> None:
        if cost_mask == 0 and cost_dice == 0 and cost_box == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.cost_box = float(cost_box)
        self.cost_giou = float(cost_giou)
        self.num_points = int(num_points)

    @staticmethod
    def slots(click_targets: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Flatten per-click target lists → ``(slot_click [S], slot_target [S])`` long tensors."""
        sc = [c for c, ts in enumerate(click_targets) for _ in ts]
        st = [int(t) for ts in click_targets for t in ts]
        return torch.as_tensor(sc, dtype=torch.long), torch.as_tensor(st, dtype=torch.long)

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_masks: Tensor | None,
        pred_boxes: Tensor | None,
        target_masks: Tensor | None,
        target_boxes: Tensor | None,
        click_targets: Sequence[Sequence[int]],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Cost ``[C·K, S]`` of every prediction against every ``(click, target)`` slot (cross-click pairs
        ``FORBIDDEN_COST``). ``pred_masks`` ``[C, K, h, w]`` logits, ``pred_boxes`` ``[C, K, 4]`` cxcywh,
        ``target_masks`` ``[T, H, W]``, ``target_boxes`` ``[T, 4]`` cxcywh; masks or boxes may be None (their
        costs are then skipped)."""
        ref = pred_masks if pred_masks is not None else pred_boxes
        if ref is None:
            raise ValueError("give pred_masks and/or pred_boxes")
        c, k = int(ref.shape[0]), int(ref.shape[1])
        if len(click_targets) != c:
            raise ValueError(f"click_targets has {len(click_targets)} entries for {c} clicks")
        for i, ts in enumerate(click_targets):
            if len(ts) > k:
                raise ValueError(f"click {i} has {len(ts)} targets but only {k} predictions (keep at most {k})")
        slot_click, slot_target = self.slots(click_targets)
        dev = ref.device
        s = int(slot_click.numel())
        cost = torch.zeros(c * k, s, device=dev)
        if s == 0:
            return cost
        uniq, inv = torch.unique(slot_target, return_inverse=True)
        if pred_masks is not None and (self.cost_mask or self.cost_dice):
            if target_masks is None:
                raise ValueError("target_masks is required with pred_masks")
            bce, dice = mask_match_costs(
                pred_masks.flatten(0, 1), target_masks[uniq.to(target_masks.device)], self.num_points, generator
            )
            cost = cost + (self.cost_mask * bce + self.cost_dice * dice)[:, inv.to(dev)]
        if pred_boxes is not None and (self.cost_box or self.cost_giou):
            if target_boxes is None:
                raise ValueError("target_boxes is required with pred_boxes")
            pb = pred_boxes.flatten(0, 1).float()
            tb = target_boxes[uniq.to(target_boxes.device)].to(dev).float()
            l1 = torch.cdist(pb, tb, p=1)
            giou = generalized_box_iou(box_cxcywh_to_xyxy(pb), box_cxcywh_to_xyxy(tb))
            cost = cost + (self.cost_box * l1 - self.cost_giou * giou)[:, inv.to(dev)]
        owner = torch.arange(c, device=dev).repeat_interleave(k)
        forbidden = owner[:, None] != slot_click.to(dev)[None, :]
        return cost.masked_fill(forbidden, FORBIDDEN_COST)

    @torch.no_grad()
    def __call__(
        self,
        pred_masks: Tensor | None,
        pred_boxes: Tensor | None,
        target_masks: Tensor | None,
        target_boxes: Tensor | None,
        click_targets: Sequence[Sequence[int]],
        generator: torch.Generator | None = None,
    ) -> ManyToManyMatch:
        """Match one image (see ``cost_matrix`` for the arguments)."""
        ref = pred_masks if pred_masks is not None else pred_boxes
        assert ref is not None
        k = int(ref.shape[1])
        cost = self.cost_matrix(pred_masks, pred_boxes, target_masks, target_boxes, click_targets, generator)
        rows, cols = linear_assignment(cost)
        slot_click, slot_target = self.slots(click_targets)
        ok = (rows // k) == slot_click[cols] if cols.numel() else torch.zeros(0, dtype=torch.bool)
        rows, cols = rows[ok], cols[ok]
        order = torch.argsort(cols)  # slot order: click-major, targets in the click's order
        rows, cols = rows[order], cols[order]
        return ManyToManyMatch(
            query=rows, click=rows // k, token=rows % k, target=slot_target[cols] if cols.numel() else cols, slot=cols
        )
