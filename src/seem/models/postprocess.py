"""SEEM post-processing: from the decoder's stride-4 mask logits to results at the requested image size.

Everything between the decoder outputs and the final masks of the official SEEM code
(``seem_model_v1.py`` / ``seem_model_demo.py`` and the Gradio demo's ``interactive.py``), as pure,
device-agnostic functions. Verified against the official outputs (``tests/test_postprocess.py``).

Sizes and coordinates
---------------------
Three sizes appear everywhere, all given as ``(height, width)`` in pixels:

- ``padded_size`` ``(Hp, Wp)``: the network input after zero padding (bottom/right) to a multiple of 32.
  Stride-4 mask logits ``[…, Hp/4, Wp/4]`` cover this whole canvas.
- ``image_size`` ``(h, w)``: the image that was fed to the model, before padding (the top-left ``h × w``
  window of the padded canvas).
- ``output_size`` ``(H0, W0)``: the size results are returned at. Official v1 evaluation passes the
  **original** image size here (``height``/``width`` of the input dict); the demo passes the resized size
  (``output_size == image_size``).

Resizing rules of the official paths (all with ``align_corners=False``):

=============================== ===================== ============ ====================================
path                            stride 4 → padded     crop         padded crop → output
=============================== ===================== ============ ====================================
semantic / panoptic / instance  bilinear              ``[:h,:w]``  bicubic, ``antialias=True``
grounding                       bilinear              ``[:h,:w]``  bicubic, ``antialias=True``; ``> 0``
``evaluate_interactive``        bilinear              ``[:h,:w]``  bilinear; ``sigmoid > 0.5``
``evaluate_interactive_single`` bicubic               ``[:h,:w]``  bicubic (no antialias); ``sigmoid > 0.5``
demo (stroke/example/text)      bilinear              ``[:h,:w]``  none (stays at ``h × w``); ``> 0``
=============================== ===================== ============ ====================================

Interpolations always run as one ``[1, C, H, W]`` call with every map of the input as a channel, as the
official code does (``expand(1, -1, -1, -1)``); leading dimensions of the inputs are flattened into ``C``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import InferenceConfig

__all__ = [
    "InstancePredictions",
    "PanopticDecision",
    "PanopticResult",
    "SegmentationResult",
    "crop_and_resize",
    "demo_final_mask",
    "grounding_masks",
    "instance_inference",
    "interactive_final_masks",
    "interactive_single_final_masks",
    "masks_to_boxes",
    "panoptic_inference",
    "panoptic_segmentation",
    "segmentation_postprocess",
    "sem_seg_postprocess",
    "semantic_inference",
    "upsample_to_padded",
]


# --------------------------------------------------------------------------------------------------------
# validation helpers


def _size(name: str, size: Sequence[int] | torch.Size) -> tuple[int, int]:
    try:
        vals = [int(v) for v in size]
    except TypeError:
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {size!r}") from None
    if len(vals) != 2:
        raise ValueError(f"{name} must be a (height, width) pair, got {tuple(vals)}")
    if vals[0] <= 0 or vals[1] <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(vals)}")
    return vals[0], vals[1]


def _float_maps(name: str, x: Any, min_dim: int = 2) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (logits), got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims [..., H, W], got shape {tuple(x.shape)}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty spatial dims, got shape {tuple(x.shape)}")
    return x


def _check_crop(image_size: tuple[int, int], padded: tuple[int, int]) -> None:
    if image_size[0] > padded[0] or image_size[1] > padded[1]:
        raise ValueError(f"image_size {image_size} must fit inside padded_size {padded}")


def _resize(x: Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> Tensor:
    """``F.interpolate`` of ``[..., H, W]`` maps as one ``[1, C, H, W]`` call (``align_corners=False``)."""
    lead = x.shape[:-2]
    y = x.reshape(1, -1, x.shape[-2], x.shape[-1])
    y = F.interpolate(y, size=size, mode=mode, align_corners=False, antialias=antialias)
    return y.reshape(*lead, size[0], size[1])


# --------------------------------------------------------------------------------------------------------
# resizing


def upsample_to_padded(mask_logits: Tensor, padded_size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize mask logits ``[..., h4, w4]`` to the padded canvas ``[..., Hp, Wp]``.

    ``mode`` is ``"bilinear"`` (every official path but one) or ``"bicubic"``
    (``evaluate_interactive_single``); ``align_corners=False``. Maps already at ``padded_size`` are returned
    unchanged.
    """
    x = _float_maps("mask_logits", mask_logits)
    hp, wp = _size("padded_size", padded_size)
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    if tuple(x.shape[-2:]) == (hp, wp):
        return x
    return _resize(x, (hp, wp), mode)


def crop_and_resize(
    maps: Tensor,
    image_size: Sequence[int],
    output_size: Sequence[int],
    mode: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Crop padded-canvas maps ``[..., Hp, Wp]`` to ``[..., :h, :w]`` and resize to ``output_size``.

    This is detectron2/X-Decoder ``sem_seg_postprocess`` with ``mode="bicubic", antialias=True`` (the
    defaults). When ``output_size == image_size`` the crop is returned as is (the official bicubic resize at
    scale 1 is the identity; checked on the fixtures).
    """
    x = _float_maps("maps", maps)
    h, w = _size("image_size", image_size)
    out = _size("output_size", output_size)
    _check_crop((h, w), (x.shape[-2], x.shape[-1]))
    x = x[..., :h, :w]
    if out == (h, w):
        return x
    return _resize(x, out, mode, antialias=antialias)


def sem_seg_postprocess(
    logits: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
) -> Tensor:
    """Official mask post-processing of the semantic, panoptic, instance and grounding paths.

    Args:
        logits: ``[..., h4, w4]`` stride-4 mask logits (or any per-pixel maps), or maps already at the
            padded size ``[..., Hp, Wp]``.
        padded_size: ``(Hp, Wp)`` of the network input.
        image_size: ``(h, w)`` of the unpadded network input.
        output_size: ``(H0, W0)`` to return (original image size in official evaluation).

    Returns:
        ``[..., H0, W0]``, same dtype: bilinear to ``(Hp, Wp)`` (if not already there), crop to ``(h, w)``,
        bicubic with ``antialias=True`` to ``(H0, W0)``, all ``align_corners=False``.
    """
    hp, wp = _size("padded_size", padded_size)
    _check_crop(_size("image_size", image_size), (hp, wp))
    x = upsample_to_padded(logits, (hp, wp), mode="bilinear")
    return crop_and_resize(x, image_size, output_size, mode="bicubic", antialias=True)


def grounding_masks(
    mask_logits: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Final grounding (referring text) masks: ``evaluate_grounding``.

    Args:
        mask_logits: ``[n, h4, w4]`` stride-4 logits of the query selected for each phrase.
        padded_size, image_size, output_size: see the module docstring.

    Returns:
        ``(masks, logits)``: bool ``[n, H0, W0]`` = ``logits > 0`` and the float logits ``[n, H0, W0]`` after
        ``sem_seg_postprocess`` (official ``grounding_mask``; the evaluator thresholds sigmoid at 0.5).
    """
    logits = sem_seg_postprocess(mask_logits, padded_size, image_size, output_size)
    return logits > 0, logits


def interactive_final_masks(
    prev_mask: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    mode: str = "bilinear",
) -> Tensor:
    """Final masks of v1 ``evaluate_interactive`` (one per prompt).

    Args:
        prev_mask: ``[..., n, h4, w4]`` stride-4 logits of the selected spatial query per prompt
            (``outputs['prev_mask']``).
        padded_size, image_size, output_size: see the module docstring.
        mode: ``"bilinear"`` (official ``evaluate_interactive``) or ``"bicubic"``.

    Returns:
        bool ``[..., n, H0, W0]``: ``mode`` to ``(Hp, Wp)``, crop to ``(h, w)``, ``mode`` (no antialias) to
        ``(H0, W0)``, then ``sigmoid > 0.5``.
    """
    x = upsample_to_padded(prev_mask, padded_size, mode=mode)
    x = crop_and_resize(x, image_size, output_size, mode=mode, antialias=False)
    return x.sigmoid() > 0.5


def interactive_single_final_masks(
    prev_mask: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Final masks of ``evaluate_interactive_single`` (referring-image stage 2), which uses **bicubic**.

    Args:
        prev_mask: ``[..., n, h4, w4]`` stride-4 logits.
        padded_size, image_size, output_size: see the module docstring.

    Returns:
        ``(pred_mask_ori, pred_mask_batch)``: bool ``[..., n, H0, W0]`` (bicubic to the padded size, crop,
        bicubic without antialias to ``(H0, W0)``, ``sigmoid > 0.5``) and bool ``[..., n, h, w]`` (the crop,
        ``sigmoid > 0.5``). The official code returns them as ``[B, H0, W0]`` (``[:, 0]``) and
        ``[B, 1, h, w]``.
    """
    x = upsample_to_padded(prev_mask, padded_size, mode="bicubic")
    h, w = _size("image_size", image_size)
    _check_crop((h, w), (x.shape[-2], x.shape[-1]))
    crop = x[..., :h, :w]
    ori = crop_and_resize(crop, (h, w), output_size, mode="bicubic", antialias=False)
    return ori.sigmoid() > 0.5, crop.sigmoid() > 0.5


def demo_final_mask(mask_logits: Tensor, padded_size: Sequence[int], image_size: Sequence[int]) -> Tensor:
    """The Gradio demo's final mask (Stroke / Example / Text / Audio).

    Args:
        mask_logits: ``[..., h4, w4]`` stride-4 logits of the chosen object query (``pred_masks[0, q]``).
        padded_size: ``(Hp, Wp)``; image_size: ``(h, w)`` of the resized (short side 512) image.

    Returns:
        bool ``[..., h, w]``: bilinear (``align_corners=False``) to ``(Hp, Wp)``, crop, ``> 0``. The demo never
        maps the mask back to the original image size.
    """
    x = upsample_to_padded(mask_logits, padded_size, mode="bilinear")
    h, w = _size("image_size", image_size)
    _check_crop((h, w), (x.shape[-2], x.shape[-1]))
    return x[..., :h, :w] > 0


# --------------------------------------------------------------------------------------------------------
# semantic / panoptic / instance inference (Mask2Former rules as in seem_model_v1.py)


def _cls_and_masks(mask_cls: Tensor, mask_pred: Tensor) -> None:
    if not isinstance(mask_cls, Tensor) or not mask_cls.is_floating_point():
        raise TypeError("mask_cls must be a floating-point tensor of class logits [Q, K+1]")
    _float_maps("mask_pred", mask_pred, min_dim=3)
    if mask_cls.dim() != mask_pred.dim() - 1:
        raise ValueError(
            f"mask_cls [..., Q, K+1] and mask_pred [..., Q, H, W] disagree: {tuple(mask_cls.shape)} vs "
            f"{tuple(mask_pred.shape)}"
        )
    if mask_cls.shape[:-1] != mask_pred.shape[:-2]:
        raise ValueError(
            f"mask_cls {tuple(mask_cls.shape)} and mask_pred {tuple(mask_pred.shape)} have different query dims"
        )
    if mask_cls.shape[-1] < 2:
        raise ValueError(f"mask_cls needs K >= 1 classes plus background, got shape {tuple(mask_cls.shape)}")


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Per-class semantic score maps.

    Args:
        mask_cls: ``[..., Q, K+1]`` class logits; the last column is background ("no object").
        mask_pred: ``[..., Q, H, W]`` mask logits.

    Returns:
        ``[..., K, H, W]`` = ``einsum('qc,qhw->chw', softmax(mask_cls)[..., :K], sigmoid(mask_pred))``.
    """
    _cls_and_masks(mask_cls, mask_pred)
    cls = F.softmax(mask_cls, dim=-1)[..., :-1]
    masks = mask_pred.sigmoid()
    if cls.dim() == 2:
        return torch.einsum("qc,qhw->chw", cls, masks)
    return torch.einsum("...qc,...qhw->...chw", cls, masks)


@dataclass(frozen=True)
class PanopticDecision:
    """Why a kept query did or did not become a panoptic segment (diagnostics; no official equivalent).

    ``won_area``: pixels whose argmax (of ``score · sigmoid``) is this query — the official "mask_area",
    which counts pixels even where the query's own sigmoid is < 0.5, so ``won_area / original_area`` can
    exceed 1. ``original_area``: pixels with ``sigmoid >= 0.5``. ``intersection``: both. ``accepted``: all
    three > 0 and ``won_area / original_area >= overlap_threshold``. ``segment_id``: the id painted (a stuff
    query merged into an earlier segment of its class gets that segment's id), 0 if not accepted.
    """

    query: int
    label: int
    score: float
    won_area: int
    original_area: int
    intersection: int
    accepted: bool
    segment_id: int


@dataclass
class PanopticResult:
    """``panoptic_seg`` int32 ``[H, W]`` (0 = void), official ``segments_info``, and per-kept-query
    ``decisions`` in kept order."""

    panoptic_seg: Tensor
    segments_info: list[dict[str, Any]]
    decisions: list[PanopticDecision] = field(default_factory=list)


def panoptic_segmentation(
    mask_cls: Tensor,
    mask_pred: Tensor,
    thing_classes: Collection[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticResult:
    """Official (Mask2Former) panoptic inference of one image, with per-query diagnostics.

    Args:
        mask_cls: ``[Q, K+1]`` class logits of the object queries; column ``K`` is background.
        mask_pred: ``[Q, H, W]`` mask logits at the output size (after ``sem_seg_postprocess``).
        thing_classes: contiguous class ids (``0..K-1``) that are things (official
            ``metadata.thing_dataset_id_to_contiguous_id.values()``); every other class is stuff.
        object_mask_threshold: keep queries with ``softmax`` max score **>** this (0.8 v1 eval, 0.4 demo).
        overlap_threshold: drop a query when ``won_area / original_area <`` this.

    Rules (official ``panoptic_inference``):
        1. ``score, label = softmax(mask_cls).max(-1)``; keep ``label != K`` and ``score > threshold``.
           (Official compares with ``sem_seg_head.num_classes``; here background is always the last column.)
        2. each pixel goes to the kept query with the largest ``score · sigmoid(mask)`` (first on ties).
        3. in kept order, a query becomes a segment if ``won_area``, ``original_area`` and ``intersection``
           are all > 0 and ``won_area / original_area >= overlap_threshold``; it paints the intersection.
        4. stuff queries of a class that already has a segment paint that segment's id and add no entry.

    Returns:
        ``PanopticResult`` with ``panoptic_seg`` int32 ``[H, W]`` and ``segments_info`` =
        ``[{"id": int, "isthing": bool, "category_id": int}, ...]`` (ids 1, 2, ... in creation order).
    """
    _cls_and_masks(mask_cls, mask_pred)
    if mask_cls.dim() != 2:
        raise ValueError(f"panoptic inference is per image: mask_cls must be [Q, K+1], got {tuple(mask_cls.shape)}")
    num_classes = mask_cls.shape[-1] - 1
    things = {int(c) for c in thing_classes}

    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    masks = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    kept_idx = torch.nonzero(keep).flatten().tolist()
    cur_scores = scores[keep]
    cur_classes = labels[keep]
    cur_masks = masks[keep]
    cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks

    h, w = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    segments_info: list[dict[str, Any]] = []
    decisions: list[PanopticDecision] = []
    if cur_masks.shape[0] == 0:
        return PanopticResult(panoptic_seg, segments_info, decisions)

    cur_mask_ids = cur_prob_masks.argmax(0)
    current_segment_id = 0
    stuff_memory: dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k].item())
        isthing = pred_class in things
        won = cur_mask_ids == k
        own = cur_masks[k] >= 0.5
        mask = won & own
        won_area, original_area, inter = int(won.sum().item()), int(own.sum().item()), int(mask.sum().item())
        accepted = won_area > 0 and original_area > 0 and inter > 0
        if accepted and won_area / original_area < overlap_threshold:
            accepted = False
        seg_id = 0
        if accepted:
            if not isthing and pred_class in stuff_memory:
                seg_id = stuff_memory[pred_class]
                panoptic_seg[mask] = seg_id
            else:
                if not isthing:
                    stuff_memory[pred_class] = current_segment_id + 1
                current_segment_id += 1
                seg_id = current_segment_id
                panoptic_seg[mask] = seg_id
                segments_info.append({"id": seg_id, "isthing": bool(isthing), "category_id": pred_class})
        decisions.append(
            PanopticDecision(
                query=kept_idx[k],
                label=pred_class,
                score=float(cur_scores[k].item()),
                won_area=won_area,
                original_area=original_area,
                intersection=inter,
                accepted=accepted,
                segment_id=seg_id,
            )
        )
    return PanopticResult(panoptic_seg, segments_info, decisions)


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    thing_classes: Collection[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """``(panoptic_seg int32 [H, W], segments_info)`` exactly as the official ``panoptic_inference``.

    See ``panoptic_segmentation`` for the arguments and rules.
    """
    r = panoptic_segmentation(mask_cls, mask_pred, thing_classes, object_mask_threshold, overlap_threshold)
    return r.panoptic_seg, r.segments_info


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks ``[N, H, W]`` → float32 ``[N, 4]`` XYXY in pixels.

    detectron2 ``BitMasks.get_bounding_boxes`` convention: ``(x_min, y_min, x_max + 1, y_max + 1)``
    (exclusive right/bottom edge); an empty mask gives ``(0, 0, 0, 0)``.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be a [N, H, W] tensor, got {getattr(masks, 'shape', type(masks))}")
    m = masks.bool()
    n, h, w = m.shape
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=m.device)
    if n == 0:
        return boxes
    x_any, y_any = m.any(dim=1), m.any(dim=2)  # [N, W], [N, H]
    xs = torch.arange(w, device=m.device)
    ys = torch.arange(h, device=m.device)
    nonempty = x_any.any(dim=1)
    big = max(h, w) + 1
    x0 = torch.where(x_any, xs, big).amin(dim=1)
    x1 = torch.where(x_any, xs, -1).amax(dim=1) + 1
    y0 = torch.where(y_any, ys, big).amin(dim=1)
    y1 = torch.where(y_any, ys, -1).amax(dim=1) + 1
    b = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    return torch.where(nonempty[:, None], b, boxes)


@dataclass
class InstancePredictions:
    """Instance results of one image, sorted by ``scores`` descending.

    ``masks`` bool ``[N, H, W]``; ``scores`` float ``[N]``; ``classes`` int64 ``[N]`` (contiguous ids);
    ``boxes`` float32 ``[N, 4]`` XYXY pixels from the masks (see ``masks_to_boxes``).
    """

    masks: Tensor
    scores: Tensor
    classes: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    detections_per_image: int = 100,
    thing_classes: Collection[int] | None = None,
) -> InstancePredictions:
    """Official (Mask2Former) instance inference of one image.

    Args:
        mask_cls: ``[Q, K+1]`` class logits (last column background).
        mask_pred: ``[Q, H, W]`` mask logits at the output size.
        detections_per_image: ``k`` of the top-k over the ``Q × K`` (query, class) scores; must be ``<= Q·K``
            (the official ``topk`` raises otherwise).
        thing_classes: with panoptic on (official default), only these classes survive the top-k; ``None``
            keeps every class (panoptic off).

    Rules: ``scores = softmax(mask_cls)[:, :K]``; top-k over the flattened ``[Q·K]`` scores; masks =
    ``logit > 0``; score = class score × mean ``sigmoid`` inside the mask (``/ (area + 1e-6)``).

    Deviations (documented): the official ``topk(sorted=False)`` order is unspecified; we return instances
    sorted by final score descending (stable). The official ``pred_boxes`` are zeros (no box head); we return
    boxes computed from the masks.
    """
    _cls_and_masks(mask_cls, mask_pred)
    if mask_cls.dim() != 2:
        raise ValueError(f"instance inference is per image: mask_cls must be [Q, K+1], got {tuple(mask_cls.shape)}")
    q, k1 = mask_cls.shape
    num_classes = k1 - 1
    if not 0 < detections_per_image <= q * num_classes:
        raise ValueError(
            f"detections_per_image must be in [1, Q*K] = [1, {q * num_classes}], got {detections_per_image}"
        )
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).unsqueeze(0).repeat(q, 1).flatten(0, 1)
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(detections_per_image, sorted=True)
    labels_per_image = labels[topk_indices]
    query_idx = topk_indices // num_classes
    masks = mask_pred[query_idx]
    if thing_classes is not None:
        things = torch.tensor(sorted({int(c) for c in thing_classes}), device=mask_cls.device, dtype=torch.long)
        keep = torch.isin(labels_per_image, things)
        scores_per_image, labels_per_image, masks = scores_per_image[keep], labels_per_image[keep], masks[keep]
    binary = (masks > 0).to(masks.dtype)
    mask_scores = (masks.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    final = scores_per_image * mask_scores
    order = torch.sort(final, descending=True, stable=True).indices
    pred_masks = binary[order].bool()
    return InstancePredictions(
        masks=pred_masks,
        scores=final[order],
        classes=labels_per_image[order],
        boxes=masks_to_boxes(pred_masks),
    )


# --------------------------------------------------------------------------------------------------------
# the whole evaluate() post-processing of one image


@dataclass
class SegmentationResult:
    """Output of ``segmentation_postprocess`` for one image (``None`` where a task was switched off).

    ``sem_seg`` ``[K, H0, W0]``; ``panoptic_seg`` int32 ``[H0, W0]`` with ``segments_info``;
    ``instances``; ``mask_pred`` ``[Q, H0, W0]`` the post-processed mask logits they were computed from.
    """

    mask_pred: Tensor
    sem_seg: Tensor | None = None
    panoptic_seg: Tensor | None = None
    segments_info: list[dict[str, Any]] | None = None
    instances: InstancePredictions | None = None


def segmentation_postprocess(
    mask_cls: Tensor,
    mask_logits: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    thing_classes: Collection[int],
    inference: InferenceConfig | None = None,
    semantic: bool = True,
    panoptic: bool = True,
    instance: bool = True,
) -> SegmentationResult:
    """Official ``evaluate()`` post-processing of one image (v1 model and the demo's Panoptic mode).

    Args:
        mask_cls: ``[Q, K+1]`` object-query class logits (``pred_logits[0]``).
        mask_logits: ``[Q, h4, w4]`` object-query stride-4 mask logits (``pred_masks[0]``).
        padded_size, image_size, output_size: see the module docstring (the demo passes
            ``output_size == image_size``).
        thing_classes: contiguous ids of the thing classes.
        inference: thresholds (``InferenceConfig()`` = v1 evaluation defaults; demo: threshold 0.4).
        semantic, panoptic, instance: which results to compute (official ``*_ON`` switches; with
            ``panoptic`` on, instances keep thing classes only).

    The masks go through ``sem_seg_postprocess`` *before* inference (official
    ``sem_seg_postprocess_before_inference``), so every result is at ``output_size``.
    """
    _cls_and_masks(mask_cls, mask_logits)
    if mask_cls.dim() != 2:
        raise ValueError(f"post-processing is per image: mask_cls must be [Q, K+1], got {tuple(mask_cls.shape)}")
    cfg = inference if inference is not None else InferenceConfig()
    mask_pred = sem_seg_postprocess(mask_logits, padded_size, image_size, output_size)
    mask_cls = mask_cls.to(mask_pred)
    res = SegmentationResult(mask_pred=mask_pred)
    if semantic:
        res.sem_seg = semantic_inference(mask_cls, mask_pred)
    if panoptic:
        res.panoptic_seg, res.segments_info = panoptic_inference(
            mask_cls, mask_pred, thing_classes, cfg.object_mask_threshold, cfg.overlap_threshold
        )
    if instance:
        res.instances = instance_inference(
            mask_cls, mask_pred, cfg.detections_per_image, thing_classes if panoptic else None
        )
    return res
