"""Training losses of SEEM and Semantic-SAM, and the set criteria that apply them to every decoder layer.

Elementwise pieces (each a small function, vectorised over masks / queries):

* ``sample_uncertain_points``: Mask2Former's importance sampling (``oversample_ratio · P`` uniform candidates,
  the ``importance_sample_ratio · P`` most uncertain ones — smallest ``|logit|`` — plus uniform random points);
* ``sigmoid_bce_loss`` / ``dice_loss``: per-mask point losses; ``sampled_mask_losses`` combines them;
* ``object_classification_loss``: cross-entropy over ``K + 1`` logits (``background`` last) with the no-object
  class weighted ``no_object_weight`` (0.1), unknown classes ignored;
* ``vl_similarity`` / ``grounding_loss``: SEEM's phrase → query softmax cross-entropy, targets averaged over
  identical phrases;
* ``spatial_loss``: softmax over the spatial queries of ``mask_embedding · pooled_prompt``, one-hot at the matched
  query;
* ``sigmoid_focal_loss``, box ``L1`` + ``GIoU`` and the IoU-head MSE (target ``1 − dice`` on the sampled points).

Criteria (deep supervision):

* ``SEEMCriterion`` consumes ``seem.models.seem_types.DecoderOutput`` (every ``LayerPrediction``, matching
  recomputed per layer, as official) and per-image ``SeemTargets``.
* ``GranularityCriterion`` consumes ``GranularityDecoderOutput`` (or ``GranularityLayer`` lists) and per-image
  ``GranularityTargets``; the many-to-many match of the last layer is reused for all earlier layers (official).

Both return ``{name: scalar}`` with names ``loss_<group>_<term>_<j>``, ``j`` the layer index in prediction order
(0 = first, the largest = final); ``weighted_total`` sums them with a weight dict keyed by ``loss_<group>_<term>``.
Every key of a present group is returned every step (zeros that keep the graph when nothing matched), so
distributed ranks always reduce the same set.

Normalisation: object / granularity mask, box and class terms are divided by ``num_masks`` (the number of targets
in the batch; in distributed training pass the all-reduced mean, clamped to ≥ 1, as official); grounding and spatial
mask terms by the number of matched pairs of the batch (official ``len(src_masks)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seem.train.matcher import (
    HungarianMatcher,
    ManyToManyMatch,
    ManyToManyMatcher,
    box_cxcywh_to_xyxy,
    check_same_canvas,
    generalized_box_iou,
    linear_assignment,
    masks_to_boxes_cxcywh,
    paired_generalized_box_iou,
    point_sample,
    random_points,
)

__all__ = [
    "GRANULARITY_LOSS_WEIGHTS",
    "GROUNDING_TASK_WEIGHTS",
    "SEEM_LOSS_WEIGHTS",
    "GranularityCriterion",
    "GranularityLayer",
    "GranularityTargets",
    "SEEMCriterion",
    "SeemTargets",
    "box_losses",
    "dice_loss",
    "generalized_box_iou",
    "granularity_layers",
    "grounding_loss",
    "iou_head_loss",
    "object_classification_loss",
    "point_sample",
    "sample_uncertain_points",
    "sampled_mask_losses",
    "sigmoid_bce_loss",
    "sigmoid_focal_loss",
    "spatial_loss",
    "text_keys",
    "uncertainty",
    "vl_similarity",
    "weighted_total",
]

SEEM_LOSS_WEIGHTS: dict[str, float] = {
    "loss_mask_ce": 2.0,
    "loss_mask_bce": 5.0,
    "loss_mask_dice": 5.0,
    "loss_grounding_ce": 0.4,
    "loss_grounding_bce": 1.0,
    "loss_grounding_dice": 1.0,
    "loss_spatial_ce": 0.4,
    "loss_spatial_bce": 1.0,
    "loss_spatial_dice": 1.0,
}
"""SEEM v1 weights (``CLASS/MASK/DICE_WEIGHT`` 2/5/5, ``G*`` 0.4/1/1, ``S*`` 0.4/1/1)."""

GROUNDING_TASK_WEIGHTS: dict[str, float] = {"text": 2.0, "class": 0.5}
"""Per-image factor of the grounding CE: referring sentences (``TEXT_WEIGHT``) vs class names (``CLASS_WEIGHT``)."""

GRANULARITY_LOSS_WEIGHTS: dict[str, float] = {
    "loss_mask_bce": 5.0,
    "loss_mask_dice": 5.0,
    "loss_bbox": 5.0,
    "loss_giou": 2.0,
    "loss_iou": 1.0,
    "loss_object_cls": 4.0,
    "loss_part_cls": 4.0,
}
"""Semantic-SAM weights (mask 5/5, box L1 5, GIoU 2, IoU head 1, focal class 4 for whole and part labels)."""


# ---------------------------------------------------------------------------------------------------------------
# point-sampled mask losses
# ---------------------------------------------------------------------------------------------------------------


def uncertainty(logits: Tensor) -> Tensor:
    """Mask2Former's uncertainty of a logit: ``−|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


@torch.no_grad()
def sample_uncertain_points(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Importance-sampled points (Mask2Former ``get_uncertain_point_coords_with_randomness``).

    Draws ``int(num_points · oversample_ratio)`` uniform candidates per mask, keeps the ``int(importance_sample_ratio
    · num_points)`` most uncertain (``uncertainty`` of the bilinearly read logit), and adds uniform points up to
    ``num_points``.

    Args:
        logits: ``[N, h, w]`` or ``[N, 1, h, w]`` mask logits.

    Returns:
        ``[N, num_points, 2]`` normalised ``(x, y)`` in ``[0, 1]`` (the uncertain points first).
    """
    if logits.dim() == 4:
        if logits.shape[1] != 1:
            raise ValueError(f"logits must be [N, h, w] or [N, 1, h, w], got shape {tuple(logits.shape)}")
        logits = logits[:, 0]
    if logits.dim() != 3:
        raise ValueError(f"logits must be [N, h, w] or [N, 1, h, w], got shape {tuple(logits.shape)}")
    if num_points < 1 or oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            "need num_points >= 1, oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1; got "
            f"{num_points}, {oversample_ratio}, {importance_sample_ratio}"
        )
    n = logits.shape[0]
    dev = logits.device
    dtype = logits.dtype if logits.is_floating_point() else torch.float32
    n_cand = int(num_points * oversample_ratio)
    n_unc = int(importance_sample_ratio * num_points)
    cand = random_points((n, n_cand, 2), device=dev, dtype=dtype, generator=generator)
    unc = uncertainty(point_sample(logits.to(dtype), cand))  # [N, n_cand]
    idx = unc.topk(n_unc, dim=1).indices
    chosen = cand.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    rest = random_points((n, num_points - n_unc, 2), device=dev, dtype=dtype, generator=generator)
    return torch.cat((chosen, rest), 1)


def sigmoid_bce_loss(point_logits: Tensor, point_labels: Tensor) -> Tensor:
    """Per-mask mean binary cross-entropy over points: ``[M, P]``, ``[M, P]`` → ``[M]``."""
    return F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)


def dice_loss(point_logits: Tensor, point_labels: Tensor) -> Tensor:
    """Per-mask soft dice loss ``1 − (2·Σ σ(x)·y + 1) / (Σ σ(x) + Σ y + 1)``: ``[M, P]`` × 2 → ``[M]``."""
    s = point_logits.sigmoid().flatten(1)
    y = point_labels.flatten(1)
    return 1 - (2 * (s * y).sum(-1) + 1) / (s.sum(-1) + y.sum(-1) + 1)


def sampled_mask_losses(
    pred_masks: Tensor,
    target_masks: Tensor,
    *,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Point-sampled BCE and dice of matched pairs (Mask2Former ``loss_masks``).

    Args:
        pred_masks: ``[M, h, w]`` logits (e.g. stride 4).
        target_masks: ``[M, H, W]`` binary (bool or 0/1) on the same canvas (e.g. full resolution).

    Returns:
        ``(bce [M], dice [M])`` per pair (labels are bilinear reads of the targets, as official).
    """
    if pred_masks.dim() != 3 or target_masks.dim() != 3 or pred_masks.shape[0] != target_masks.shape[0]:
        raise ValueError(
            f"pred_masks [M, h, w] and target_masks [M, H, W] must pair up; got {tuple(pred_masks.shape)} and "
            f"{tuple(target_masks.shape)}"
        )
    check_same_canvas(pred_masks.shape[-2:], target_masks.shape[-2:])
    if pred_masks.shape[0] == 0:
        z = pred_masks.sum((1, 2)) * 0.0
        return z, z
    coords = sample_uncertain_points(pred_masks, num_points, oversample_ratio, importance_sample_ratio, generator)
    with torch.no_grad():
        tm = target_masks.to(pred_masks.device)
        labels = point_sample(tm if not tm.is_floating_point() else tm.to(coords.dtype), coords)
    logits = point_sample(pred_masks, coords.to(pred_masks.dtype) if pred_masks.is_floating_point() else coords)
    logits, labels = logits.float(), labels.float()
    return sigmoid_bce_loss(logits, labels), dice_loss(logits, labels)


# ---------------------------------------------------------------------------------------------------------------
# classification, grounding, spatial
# ---------------------------------------------------------------------------------------------------------------


def object_classification_loss(logits: Tensor, target_classes: Tensor, no_object_weight: float = 0.1) -> Tensor:
    """Cross-entropy over ``K + 1`` classes (``background`` last) with the background weighted.

    Args:
        logits: ``[Q, K + 1]`` (all queries of all images concatenated).
        target_classes: long ``[Q]``: the matched class, ``K`` (background) for unmatched queries, ``-1`` for a
            query matched to a target of unknown class (ignored).

    Returns:
        scalar: ``Σ w[y]·nll / Σ w[y]`` over non-ignored queries (PyTorch's weighted mean), 0 if all are ignored.
    """
    if logits.dim() != 2 or target_classes.shape != logits.shape[:1]:
        raise ValueError(
            f"logits [Q, K+1] and target_classes [Q] expected; got {tuple(logits.shape)}, {tuple(target_classes.shape)}"
        )
    k1 = logits.shape[1]
    weight = torch.ones(k1, device=logits.device, dtype=torch.float32)
    weight[-1] = no_object_weight
    y = target_classes.to(logits.device).long().clone()
    y[y < 0] = -100
    if not bool((y != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), y, weight=weight, ignore_index=-100)


def vl_similarity(captions: Tensor, phrases: Tensor, logit_scale: Tensor | float) -> Tensor:
    """SEEM's ``vl_similarity``: ``min(exp(logit_scale), 100) · normalize(captions) @ normalize(phrases).T``
    (normalisation ``v / (‖v‖ + 1e-7)``): ``[Q, D]`` × ``[G, D]`` → ``[Q, G]``."""
    v = captions / (captions.norm(dim=-1, keepdim=True) + 1e-7)
    t = phrases / (phrases.norm(dim=-1, keepdim=True) + 1e-7)
    scale = torch.as_tensor(logit_scale, dtype=v.dtype, device=v.device).exp().clamp(max=100)
    return scale * (v @ t.T)


def text_keys(texts: Sequence[str]) -> Tensor:
    """Long ``[G]`` ids with equal ids for identical texts (first-occurrence order; stable across processes,
    unlike Python's ``hash``)."""
    ids: dict[str, int] = {}
    return torch.as_tensor([ids.setdefault(t, len(ids)) for t in texts], dtype=torch.long)


def grounding_loss(similarity: Tensor, matched_query: Tensor, keys: Tensor | None = None) -> Tensor:
    """SEEM's grounding cross-entropy of one image: per phrase, softmax over queries; the target is one-hot at the
    phrase's matched query, averaged over all phrases with the same text (``keys``).

    Args:
        similarity: ``[Q, G]`` logits (``vl_similarity``).
        matched_query: long ``[G]``: the query matched to each phrase.
        keys: long ``[G]`` text ids (``text_keys``); None = all phrases distinct.

    Returns:
        scalar: mean over phrases of ``−Σ_q target[q] · log_softmax_q(similarity[:, g])``.
    """
    q, g = similarity.shape
    if matched_query.shape != (g,):
        raise ValueError(f"matched_query must be [{g}], got {tuple(matched_query.shape)}")
    dev = similarity.device
    onehot = torch.zeros(q, g, device=dev, dtype=torch.float32)
    onehot[matched_query.to(dev), torch.arange(g, device=dev)] = 1.0
    if keys is not None:
        k = keys.to(dev)
        same = (k[:, None] == k[None, :]).float()
        onehot = onehot @ (same / same.sum(-1, keepdim=True))
    logp = F.log_softmax(similarity.float(), dim=0)
    return -(onehot * logp).sum(0).mean()


def spatial_loss(scores: Tensor, matched_query: Tensor) -> Tensor:
    """SEEM's spatial cross-entropy per prompt: softmax over **all** spatial queries (official: no masking of
    other prompts' queries here) of ``scores`` ``[Q, n]`` (``mask_embedding · pooled_prompt``), one-hot at
    ``matched_query`` (long ``[n]``). Returns ``[n]`` per-prompt losses."""
    logp = F.log_softmax(scores.float().T, dim=-1)  # [n, Q]
    return -logp.gather(1, matched_query.to(scores.device).long()[:, None])[:, 0]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss (RetinaNet): ``α_t · (1 − p_t)^γ · BCE``; same shape as ``logits``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def box_losses(pred_boxes: Tensor, target_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pair L1 (summed over the 4 coordinates) and ``1 − GIoU`` of ``(cx, cy, w, h)`` boxes ``[M, 4]``."""
    l1 = (pred_boxes.float() - target_boxes.float()).abs().sum(-1)
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes.float()), box_cxcywh_to_xyxy(target_boxes.float()))
    return l1, 1 - giou


def iou_head_loss(pred_ious: Tensor, dice: Tensor, *, target_grad: bool = False) -> Tensor:
    """Per-pair IoU-head MSE against ``1 − dice`` (Semantic-SAM's target, unbounded head, no sigmoid).

    ``target_grad=False`` (default) detaches the target; the official code leaves it attached, so its IoU loss
    also pushes the mask towards the predicted score (``target_grad=True`` reproduces that)."""
    target = 1 - (dice if target_grad else dice.detach())
    return (pred_ious.float() - target) ** 2


def weighted_total(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``Σ weights[base] · value`` where ``base`` is a key without its ``_<layer>`` suffix. Raises ``KeyError``
    for a loss without a weight."""
    total: Tensor | None = None
    for k, v in losses.items():
        base = re.sub(r"_\d+$", "", k)
        if base not in weights:
            raise KeyError(f"no weight for loss {k!r} (base {base!r}); known: {sorted(weights)}")
        term = weights[base] * v
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no losses to sum")
    return total


def _zero(*tensors: Tensor | None) -> Tensor:
    """A zero that keeps the graph of the given tensors (so every rank's backward touches the same parameters)."""
    z: Tensor | None = None
    for t in tensors:
        if t is not None:
            s = t.sum() * 0.0
            z = s if z is None else z + s
    if z is None:
        raise ValueError("no tensor to build a zero loss from")
    return z


# ---------------------------------------------------------------------------------------------------------------
# SEEM criterion
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SeemTargets:
    """Ground truth of one image for ``SEEMCriterion`` (all masks on the padded canvas the decoder saw).

    Attributes:
        masks: bool ``[N, H, W]`` object / stuff masks.
        class_ids: long ``[N]`` indices into the vocabulary (``background`` = ``K`` is not a target class);
            ``-1`` = unknown (no class loss for that query).
        grounding_masks: bool ``[G, H, W]`` or None: the mask of each phrase.
        grounding_embeddings: ``[G, D]`` phrase embeddings (``class_emb``) or None.
        grounding_keys: long ``[G]`` text ids (``text_keys``) or None (all distinct).
        grounding_weight: per-image factor of the grounding CE (``GROUNDING_TASK_WEIGHTS``: 2.0 for sentences,
            0.5 for class names).
        spatial_masks: bool ``[n, H, W]`` or None: the GT of each spatial prompt (all-False for a prompt that
            could not be drawn: it gets no loss, as official).
        spatial_levels: None, or per prompt a bool ``[q, H, W]`` stack: the target of each of the prompt's ``q``
            spatial queries, query 0 the coarsest region that contains the prompt, query ``q − 1`` the finest (its
            granularity chain, ``seem.train.steps.granularity_targets``; a region may repeat). Then every query
            gets the mask losses against its own level (fixed order, so the queries become granularity levels) and
            ``spatial_level_query`` names the query whose level is the prompt's own target: the selection target of
            the spatial CE, instead of the Hungarian match.
        spatial_level_query: long ``[n]`` with ``spatial_levels``: the query (0..q−1) holding each prompt's target.
        spatial_extra: None, or per prompt a bool ``[m, H, W]`` stack of the regions enclosing its target
            (``seem.train.steps.enclosing_targets``), matched after the Hungarian selection to the prompt's other
            queries (Hungarian on the dice cost) — the ``level_targets: matched`` alternative to fixed levels.
    """

    masks: Tensor
    class_ids: Tensor
    grounding_masks: Tensor | None = None
    grounding_embeddings: Tensor | None = None
    grounding_keys: Tensor | None = None
    grounding_weight: float = 1.0
    spatial_masks: Tensor | None = None
    spatial_levels: list[Tensor] | None = None
    spatial_level_query: Tensor | None = None
    spatial_extra: list[Tensor] | None = None

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {tuple(self.masks.shape)}")
        if self.class_ids.shape != self.masks.shape[:1]:
            raise ValueError(f"class_ids must be [{self.masks.shape[0]}], got {tuple(self.class_ids.shape)}")
        if (self.grounding_masks is None) != (self.grounding_embeddings is None):
            raise ValueError("grounding_masks and grounding_embeddings go together")
        if self.grounding_masks is not None and self.grounding_embeddings is not None:
            g = self.grounding_masks.shape[0]
            if self.grounding_masks.dim() != 3 or self.grounding_embeddings.shape[0] != g:
                raise ValueError("grounding_masks [G, H, W] and grounding_embeddings [G, D] must agree in G")
            if self.grounding_keys is not None and self.grounding_keys.shape != (g,):
                raise ValueError(f"grounding_keys must be [{g}]")
        if self.spatial_masks is not None and self.spatial_masks.dim() != 3:
            raise ValueError(f"spatial_masks must be [n, H, W], got shape {tuple(self.spatial_masks.shape)}")
        if self.spatial_levels is not None:
            n = -1 if self.spatial_masks is None else self.spatial_masks.shape[0]
            if len(self.spatial_levels) != n or any(t.dim() != 3 for t in self.spatial_levels):
                raise ValueError(f"spatial_levels must hold one [q, H, W] stack per spatial prompt ({n})")
            if self.spatial_level_query is None or tuple(self.spatial_level_query.shape) != (n,):
                raise ValueError(f"spatial_levels needs spatial_level_query, a long tensor [{n}]")


class SEEMCriterion:
    """SEEM's ``SetCriterion`` for the v1 decoder: object, grounding and spatial query groups on every layer.

    Per layer ``j`` (every ``DecoderOutput.predictions[j]``) and image:

    * object group: Hungarian match (``match_objects``), ``loss_mask_ce_j`` (CE over ``class_logits``, background
      last, no-object weight 0.1; only when the decoder produced class logits), ``loss_mask_bce_j`` and
      ``loss_mask_dice_j`` (point-sampled, divided by ``num_masks``);
    * grounding group (when present in the prediction and the image has phrases): ``vl_similarity`` of the
      grounding captions with the phrase embeddings, match, ``loss_grounding_{ce,bce,dice}_j``;
    * spatial group (when present and the image has spatial targets): ``scores = mask_embeddings ·
      pooled_pos_spatial``, match, ``loss_spatial_{ce,bce,dice}_j``; prompts with an empty GT are left out.

    Args:
        matcher: the one-to-one matcher (default 2 / 5 / 5, 12544 points).
        weights: loss weights for ``total`` (default ``SEEM_LOSS_WEIGHTS``).
        no_object_weight: CE weight of the background class (0.1).
        num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
        queries_per_prompt: spatial queries per prompt (v1: 3).
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        weights: Mapping[str, float] | None = None,
        *,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        queries_per_prompt: int = 3,
    ) -> None:
        self.matcher = matcher or HungarianMatcher(num_points=num_points)
        self.weights = dict(SEEM_LOSS_WEIGHTS if weights is None else weights)
        self.no_object_weight = float(no_object_weight)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.queries_per_prompt = int(queries_per_prompt)

    @staticmethod
    def count_masks(targets: Sequence[SeemTargets]) -> int:
        """Local number of object targets (all-reduce and average it across ranks for ``num_masks``)."""
        return sum(int(t.masks.shape[0]) for t in targets)

    def total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of ``losses`` with this criterion's weights."""
        return weighted_total(losses, self.weights)

    def _mask_terms(self, pred: Tensor, tgt: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        bce, dice = sampled_mask_losses(
            pred,
            tgt,
            num_points=self.num_points,
            oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio,
            generator=gen,
        )
        return bce.sum(), dice.sum()

    def __call__(
        self,
        outputs: Any,
        targets: Sequence[SeemTargets],
        *,
        logit_scale: Tensor | float | None = None,
        num_masks: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Compute all losses.

        Args:
            outputs: one ``DecoderOutput`` holding all ``B = len(targets)`` images, or a sequence of per-image
                ``DecoderOutput`` (``B = 1`` each; prompted decoder calls are per image).
            targets: per-image ``SeemTargets``.
            logit_scale: the text encoder's ``logit_scale`` (required for grounding).
            num_masks: normaliser of the object mask losses (default: the local target count, ≥ 1).
            generator: random points of matching and losses.

        Returns:
            ``{loss_<group>_<term>_<j>: scalar}``.
        """
        views = _image_views(outputs, len(targets))
        n_layers = len(views[0][0].predictions)
        if any(len(o.predictions) != n_layers for o, _ in views):
            raise ValueError("all outputs must have the same number of layers")
        norm = float(max(num_masks if num_masks is not None else self.count_masks(targets), 1.0))
        losses: dict[str, Tensor] = {}
        for j in range(n_layers):
            losses.update(self._layer(j, views, targets, logit_scale, norm, generator))
        return losses

    def _layer(
        self,
        j: int,
        views: list[tuple[Any, int]],
        targets: Sequence[SeemTargets],
        logit_scale: Tensor | float | None,
        norm: float,
        gen: torch.Generator | None,
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        preds = [(o.predictions[j], b) for o, b in views]
        # -- object group (absent when the decoder skipped the object queries) -------------------------------
        objs = [(p.object, b, t) for (p, b), t in zip(preds, targets, strict=True) if p.object is not None]
        if objs:
            out.update(self._objects(j, objs, norm, gen))
        # -- grounding group ----------------------------------------------------------------------------------
        if any(p.grounding is not None for p, _ in preds):
            out.update(self._grounding(j, preds, targets, logit_scale, gen))
        # -- spatial group ------------------------------------------------------------------------------------
        if any(p.spatial is not None for p, _ in preds):
            out.update(self._spatial(j, preds, views, targets, gen))
        return out

    def _objects(
        self, j: int, objs: list[tuple[Any, int, SeemTargets]], norm: float, gen: torch.Generator | None
    ) -> dict[str, Tensor]:
        has_cls = all(o.class_logits is not None for o, _, _ in objs)
        ce_logits: list[Tensor] = []
        ce_targets: list[Tensor] = []
        bce_sum = dice_sum = _zero(*[_group_zero(o, b) for o, b, _ in objs])
        for o, b, t in objs:
            masks = o.mask_logits[b]
            logits = o.class_logits[b] if has_cls else None
            m = self.matcher.match_objects(masks, t.masks, logits, t.class_ids if has_cls else None, gen)
            if len(m):
                pm, tm = masks[m.pred.to(masks.device)], t.masks[m.target.to(t.masks.device)]
                bsum, dsum = self._mask_terms(pm, tm, gen)
                bce_sum, dice_sum = bce_sum + bsum, dice_sum + dsum
            if logits is not None:
                y = torch.full((logits.shape[0],), logits.shape[-1] - 1, dtype=torch.long, device=logits.device)
                if len(m):
                    y[m.pred.to(y.device)] = t.class_ids.to(y.device)[m.target.to(y.device)].long()
                ce_logits.append(logits)
                ce_targets.append(y)
        out: dict[str, Tensor] = {}
        if has_cls:
            out[f"loss_mask_ce_{j}"] = object_classification_loss(
                torch.cat(ce_logits), torch.cat(ce_targets), self.no_object_weight
            )
        out[f"loss_mask_bce_{j}"] = bce_sum / norm
        out[f"loss_mask_dice_{j}"] = dice_sum / norm
        return out

    def _grounding(
        self,
        j: int,
        preds: list[tuple[Any, int]],
        targets: Sequence[SeemTargets],
        logit_scale: Tensor | float | None,
        gen: torch.Generator | None,
    ) -> dict[str, Tensor]:
        zero = _zero(*[_group_zero(p.grounding, b) for p, b in preds if p.grounding is not None])
        bce, dice, ce, n_pairs, n_img = zero, zero, zero, 0, 0
        for (p, b), t in zip(preds, targets, strict=True):
            if p.grounding is None or t.grounding_masks is None or t.grounding_embeddings is None:
                continue
            if t.grounding_masks.shape[0] == 0:
                continue
            if logit_scale is None:
                raise ValueError("logit_scale is required for the grounding loss")
            g = p.grounding
            if t.grounding_masks.shape[0] > g.mask_embeddings.shape[1]:
                raise ValueError(
                    f"{t.grounding_masks.shape[0]} phrases but only {g.mask_embeddings.shape[1]} grounding queries"
                )
            sim = vl_similarity(g.captions[b], t.grounding_embeddings.to(g.captions), logit_scale)
            m = self.matcher.match_grounding(g.mask_logits[b], t.grounding_masks, sim.detach(), gen)
            pm = g.mask_logits[b][m.pred.to(sim.device)]
            tm = t.grounding_masks[m.target.to(t.grounding_masks.device)]
            bsum, dsum = self._mask_terms(pm, tm, gen)
            bce, dice, n_pairs = bce + bsum, dice + dsum, n_pairs + len(m)
            matched = torch.empty(t.grounding_masks.shape[0], dtype=torch.long)
            matched[m.target] = m.pred
            ce = ce + t.grounding_weight * grounding_loss(sim, matched, t.grounding_keys)
            n_img += 1
        return {
            f"loss_grounding_bce_{j}": bce / max(n_pairs, 1),
            f"loss_grounding_dice_{j}": dice / max(n_pairs, 1),
            f"loss_grounding_ce_{j}": ce / max(n_img, 1),
        }

    def _spatial(
        self,
        j: int,
        preds: list[tuple[Any, int]],
        views: list[tuple[Any, int]],
        targets: Sequence[SeemTargets],
        gen: torch.Generator | None,
    ) -> dict[str, Tensor]:
        zero = _zero(*[_group_zero(p.spatial, b) for p, b in preds if p.spatial is not None])
        bce, dice, n_pairs = zero, zero, 0
        ce_terms: list[Tensor] = []
        for (p, b), (o, _), t in zip(preds, views, targets, strict=True):
            if p.spatial is None or t.spatial_masks is None or t.spatial_masks.shape[0] == 0:
                continue
            pooled = o.pooled_pos_spatial
            if pooled is None:
                raise ValueError("a spatial prediction needs DecoderOutput.pooled_pos_spatial")
            s = p.spatial
            scores = s.mask_embeddings[b] @ pooled[b].to(s.mask_embeddings).T  # [n*q, n]
            q = self.queries_per_prompt
            keep = t.spatial_masks.flatten(1).any(1).cpu()
            if t.spatial_levels is not None and t.spatial_level_query is not None:
                matched = torch.arange(len(keep)) * q + t.spatial_level_query.cpu()
            else:
                m = self.matcher.match_spatial(s.mask_logits[b], t.spatial_masks, scores.detach(), q, gen)
                matched = torch.empty(t.spatial_masks.shape[0], dtype=torch.long)
                matched[m.target] = m.pred
            if not bool(keep.any()):
                continue
            ce_terms.append(spatial_loss(scores, matched)[keep.to(scores.device)])
            if t.spatial_levels is not None:  # every query against its own granularity level
                kept = torch.nonzero(keep).flatten().tolist()
                rows = torch.tensor([p_ * q + j for p_ in kept for j in range(q)], device=scores.device)
                pm = s.mask_logits[b][rows]
                tm = torch.cat([t.spatial_levels[p_] for p_ in kept])
            else:
                pm = s.mask_logits[b][matched[keep].to(scores.device)]
                tm = t.spatial_masks[keep.to(t.spatial_masks.device)]
            bsum, dsum = self._mask_terms(pm, tm, gen)
            bce, dice, n_pairs = bce + bsum, dice + dsum, n_pairs + int(pm.shape[0])
            if t.spatial_extra is not None:
                rows_, tgts = _level_pairs(s.mask_logits[b], matched, keep, t.spatial_extra, q)
                if rows_:
                    bsum, dsum = self._mask_terms(s.mask_logits[b][rows_], torch.cat(tgts), gen)
                    bce, dice, n_pairs = bce + bsum, dice + dsum, n_pairs + len(rows_)
        ce = torch.cat(ce_terms).mean() + zero if ce_terms else zero
        return {
            f"loss_spatial_bce_{j}": bce / max(n_pairs, 1),
            f"loss_spatial_dice_{j}": dice / max(n_pairs, 1),
            f"loss_spatial_ce_{j}": ce,
        }


def _level_pairs(
    logits: Tensor, matched: Tensor, keep: Tensor, levels: Sequence[Tensor], q: int
) -> tuple[list[int], list[Tensor]]:
    """Match each prompt's further granularity targets to its unmatched queries (Hungarian on the dice cost at the
    prediction's resolution). ``logits`` ``[n·q, h, w]``; returns (query rows, ``[1, H, W]`` targets) pairs."""
    rows: list[int] = []
    tgts: list[Tensor] = []
    h, w = logits.shape[-2:]
    for p, extra in enumerate(levels):
        if not bool(keep[p]) or extra.shape[0] == 0:
            continue
        free = [r for r in range(p * q, p * q + q) if r != int(matched[p])]
        extra = extra[: len(free)]
        with torch.no_grad():
            prob = logits[free].float().sigmoid().flatten(1)  # [f, h*w]
            small = F.interpolate(extra[:, None].float(), size=(h, w), mode="area")[:, 0].flatten(1)  # [m, h*w]
            inter = prob @ small.T
            cost = 1 - (2 * inter + 1) / (prob.sum(1)[:, None] + small.sum(1)[None, :] + 1)
        qi, ti = linear_assignment(cost)
        for a, c in zip(qi.tolist(), ti.tolist(), strict=True):
            rows.append(free[a])
            tgts.append(extra[c : c + 1])
    return rows, tgts


def _group_zero(group: Any, b: int) -> Tensor:
    """0 connected to every output of a query group for image ``b`` (mask logits only when already computed, so
    lazy logits stay lazy; they derive from the mask embeddings anyway)."""
    z = group.mask_embeddings[b].sum() * 0.0 + group.captions[b].sum() * 0.0
    if getattr(group, "mask_logits_computed", True):
        z = z + group.mask_logits[b].sum() * 0.0
    return z


def _batch_size(output: Any) -> int:
    """Images in a ``DecoderOutput`` (from whichever query group exists; lazy mask logits are not computed)."""
    first = output.predictions[0]
    for g in (first.object, first.grounding, first.spatial):
        if g is not None:
            return int(g.mask_embeddings.shape[0])
    raise ValueError("a DecoderOutput prediction has no query group")


def _image_views(outputs: Any, n_images: int) -> list[tuple[Any, int]]:
    """``[(output, batch index)]`` per image for a batched ``DecoderOutput`` or a per-image sequence."""
    if hasattr(outputs, "predictions"):
        b = _batch_size(outputs)
        if b != n_images:
            raise ValueError(f"outputs hold {b} images but {n_images} targets were given")
        return [(outputs, i) for i in range(b)]
    outs = list(outputs)
    if len(outs) != n_images:
        raise ValueError(f"{len(outs)} outputs for {n_images} targets")
    if any(_batch_size(o) != 1 for o in outs):
        raise ValueError("a sequence of outputs must hold one image each")
    return [(o, 0) for o in outs]


# ---------------------------------------------------------------------------------------------------------------
# Semantic-SAM criterion
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class GranularityTargets:
    """Ground truth of one image for ``GranularityCriterion``.

    Attributes:
        masks: bool ``[T, H, W]`` on the padded canvas.
        click_targets: per click (in the decoder's prompt order) the indices of its target masks (at most ``K``
            each; ``simulate.sample_granularity_clicks`` builds them).
        boxes: ``[T, 4]`` ``(cx, cy, w, h)`` normalised to the canvas, or None to take the masks' tight boxes.
        class_ids: long ``[T]`` object (whole) class, ``-1`` unknown; None = no object labels.
        part_ids: long ``[T]`` part class, ``-1`` = not a part; None = no part labels.
    """

    masks: Tensor
    click_targets: list[list[int]]
    boxes: Tensor | None = None
    class_ids: Tensor | None = None
    part_ids: Tensor | None = None

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"masks must be [T, H, W], got shape {tuple(self.masks.shape)}")
        t = self.masks.shape[0]
        for i, ts in enumerate(self.click_targets):
            for v in ts:
                if not 0 <= int(v) < t:
                    raise ValueError(f"click {i} refers to target {v}, but there are {t} masks")
        if self.boxes is None:
            self.boxes = masks_to_boxes_cxcywh(self.masks)
        for name in ("class_ids", "part_ids"):
            v = getattr(self, name)
            if v is not None and v.shape != (t,):
                raise ValueError(f"{name} must be [{t}], got {tuple(v.shape)}")


@dataclass
class GranularityLayer:
    """One decoder layer's Semantic-SAM predictions for ``B`` images, ``C`` clicks, ``K`` tokens.

    Attributes:
        ious: ``[B, C, K]`` raw IoU-head outputs.
        boxes: ``[B, C, K, 4]`` ``(cx, cy, w, h)`` on the padded canvas.
        masks: ``[B, C, K, h, w]`` logits or None (no mask / IoU losses on this layer).
        object_logits: ``[B, C, K, Co]`` whole-object class logits or None.
        part_logits: ``[B, C, K, Cp]`` part class logits or None.
    """

    ious: Tensor
    boxes: Tensor
    masks: Tensor | None = None
    object_logits: Tensor | None = None
    part_logits: Tensor | None = None


def granularity_layers(
    output: Any,
    object_logits: Sequence[Tensor] | None = None,
    part_logits: Sequence[Tensor] | None = None,
) -> list[GranularityLayer]:
    """``GranularityDecoderOutput`` → one ``GranularityLayer`` per decoder layer (first to final). Earlier
    layers have masks only when the decoder ran with ``all_layer_masks=True``. Optional class logits are per
    layer, in the same order."""
    n = len(output.aux_ious) + 1
    masks: list[Tensor | None] = list(output.aux_masks) if output.aux_masks else [None] * (n - 1)
    masks.append(output.masks)
    ious = [*output.aux_ious, output.ious]
    boxes = [*output.aux_boxes, output.boxes]
    for name, extra in (("object_logits", object_logits), ("part_logits", part_logits)):
        if extra is not None and len(extra) != n:
            raise ValueError(f"{name} must have one entry per layer ({n}), got {len(extra)}")
    return [
        GranularityLayer(
            ious=ious[i],
            boxes=boxes[i],
            masks=masks[i],
            object_logits=object_logits[i] if object_logits is not None else None,
            part_logits=part_logits[i] if part_logits is not None else None,
        )
        for i in range(n)
    ]


class GranularityCriterion:
    """Semantic-SAM's many-to-many criterion (``SetCriterionOsPartWholeM2M``), deep-supervised.

    The last layer is matched (``ManyToManyMatcher``; masks and boxes); that match is **reused** on every layer
    (official). Per layer ``j``: ``loss_mask_bce_j`` / ``loss_mask_dice_j`` (point-sampled) and ``loss_iou_j`` (MSE
    of the IoU head against ``1 − dice``) when the layer has masks, ``loss_bbox_j`` (L1) and ``loss_giou_j``; with
    class logits, ``loss_object_cls_j`` (focal, images with object labels only) and ``loss_part_cls_j`` (focal,
    images with part labels only). All divided by ``num_masks`` (default: number of ``(click, target)`` slots).

    Args:
        matcher: default 5 / 5 / 5 / 2, 12544 points.
        weights: default ``GRANULARITY_LOSS_WEIGHTS``.
        num_points, oversample_ratio, importance_sample_ratio: point sampling.
        iou_target_grad: let the IoU loss reach the masks through its target (official True; default False).
        focal_alpha, focal_gamma: focal loss of the class terms (0.25, 2).
    """

    def __init__(
        self,
        matcher: ManyToManyMatcher | None = None,
        weights: Mapping[str, float] | None = None,
        *,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        iou_target_grad: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        self.matcher = matcher or ManyToManyMatcher(num_points=num_points)
        self.weights = dict(GRANULARITY_LOSS_WEIGHTS if weights is None else weights)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.iou_target_grad = bool(iou_target_grad)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)

    @staticmethod
    def count_masks(targets: Sequence[GranularityTargets]) -> int:
        """Local number of ``(click, target)`` slots (all-reduce and average across ranks for ``num_masks``)."""
        return sum(len(ts) for t in targets for ts in t.click_targets)

    def total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of ``losses`` with this criterion's weights."""
        return weighted_total(losses, self.weights)

    def match(
        self, layer: GranularityLayer, targets: Sequence[GranularityTargets], generator: torch.Generator | None = None
    ) -> list[ManyToManyMatch]:
        """Many-to-many match of every image on ``layer``."""
        out = []
        for b, t in enumerate(targets):
            masks = layer.masks[b] if layer.masks is not None else None
            boxes = layer.boxes[b]
            out.append(self.matcher(masks, boxes, t.masks, t.boxes, t.click_targets, generator))
        return out

    def __call__(
        self,
        outputs: Any,
        targets: Sequence[GranularityTargets],
        *,
        num_masks: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Compute all losses of a ``GranularityDecoderOutput`` (or a list of ``GranularityLayer``) for ``B =
        len(targets)`` images. Returns ``{loss_<term>_<j>: scalar}``."""
        layers = granularity_layers(outputs) if hasattr(outputs, "aux_ious") else list(outputs)
        if not layers:
            raise ValueError("no layers")
        b = int(layers[-1].ious.shape[0])
        if b != len(targets):
            raise ValueError(f"outputs hold {b} images but {len(targets)} targets were given")
        for i, t in enumerate(targets):
            c = int(layers[-1].ious.shape[1])
            if len(t.click_targets) != c:
                raise ValueError(f"image {i}: {len(t.click_targets)} click target lists for {c} clicks")
        norm = float(max(num_masks if num_masks is not None else self.count_masks(targets), 1.0))
        matches = self.match(layers[-1], targets, generator)
        losses: dict[str, Tensor] = {}
        for j, layer in enumerate(layers):
            losses.update(self._layer(j, layer, targets, matches, norm, generator))
        return losses

    def _layer(
        self,
        j: int,
        layer: GranularityLayer,
        targets: Sequence[GranularityTargets],
        matches: list[ManyToManyMatch],
        norm: float,
        gen: torch.Generator | None,
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        zero_box = _zero(layer.boxes)
        l1_sum, giou_sum = zero_box, zero_box
        if layer.masks is not None:
            zero_mask = _zero(layer.masks, layer.ious)
            bce_sum, dice_sum, iou_sum = zero_mask, zero_mask, zero_mask
        for b, (t, m) in enumerate(zip(targets, matches, strict=True)):
            if not len(m):
                continue
            dev = layer.boxes.device
            q = m.query.to(dev)
            tgt = m.target
            pb = layer.boxes[b].flatten(0, 1)[q]
            assert t.boxes is not None
            l1, g = box_losses(pb, t.boxes[tgt.to(t.boxes.device)].to(pb))
            l1_sum, giou_sum = l1_sum + l1.sum(), giou_sum + g.sum()
            if layer.masks is not None:
                pm = layer.masks[b].flatten(0, 1)[q]
                tm = t.masks[tgt.to(t.masks.device)]
                bce, dice = sampled_mask_losses(
                    pm,
                    tm,
                    num_points=self.num_points,
                    oversample_ratio=self.oversample_ratio,
                    importance_sample_ratio=self.importance_sample_ratio,
                    generator=gen,
                )
                pi = layer.ious[b].reshape(-1)[q]
                bce_sum = bce_sum + bce.sum()
                dice_sum = dice_sum + dice.sum()
                iou_sum = iou_sum + iou_head_loss(pi, dice, target_grad=self.iou_target_grad).sum()
        if layer.masks is not None:
            out[f"loss_mask_bce_{j}"] = bce_sum / norm
            out[f"loss_mask_dice_{j}"] = dice_sum / norm
            out[f"loss_iou_{j}"] = iou_sum / norm
        out[f"loss_bbox_{j}"] = l1_sum / norm
        out[f"loss_giou_{j}"] = giou_sum / norm
        if layer.object_logits is not None:
            out[f"loss_object_cls_{j}"] = self._focal(layer.object_logits, targets, matches, "class_ids") / norm
        if layer.part_logits is not None:
            out[f"loss_part_cls_{j}"] = self._focal(layer.part_logits, targets, matches, "part_ids") / norm
        return out

    def _focal(
        self,
        logits: Tensor,
        targets: Sequence[GranularityTargets],
        matches: list[ManyToManyMatch],
        field: str,
    ) -> Tensor:
        """Summed focal loss over all queries × classes of the images that have ``field`` labels; matched queries
        get a one-hot target (all-zero for label −1, e.g. a whole object in the part term), unmatched all-zero.
        For the object term, queries matched to a target of unknown class (−1) are left out."""
        total = _zero(logits)
        n_cls = logits.shape[-1]
        for b, (t, m) in enumerate(zip(targets, matches, strict=True)):
            labels = getattr(t, field)
            if labels is None or not bool((labels >= 0).any()):
                continue  # decoupled: no object (part) loss on images without object (part) labels
            lg = logits[b].reshape(-1, n_cls).float()
            onehot = torch.zeros_like(lg)
            keep = torch.ones(lg.shape[0], dtype=torch.bool, device=lg.device)
            if len(m):
                y = labels.to(lg.device)[m.target.to(lg.device)].long()
                q = m.query.to(lg.device)
                pos = y >= 0
                onehot[q[pos], y[pos]] = 1.0
                if field == "class_ids":
                    keep[q[~pos]] = False
            total = total + sigmoid_focal_loss(lg[keep], onehot[keep], self.focal_alpha, self.focal_gamma).sum()
        return total
