"""Losses and set criteria of seem.train.losses on hand-built cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seem.models.granularity_decoder import GranularityDecoderOutput
from seem.models.seem_types import DecoderOutput, GroupPrediction, LayerPrediction
from seem.train.losses import (
    GranularityCriterion,
    GranularityTargets,
    SEEMCriterion,
    SeemTargets,
    box_losses,
    dice_loss,
    generalized_box_iou,
    granularity_layers,
    grounding_loss,
    iou_head_loss,
    object_classification_loss,
    point_sample,
    sample_uncertain_points,
    sampled_mask_losses,
    sigmoid_bce_loss,
    sigmoid_focal_loss,
    spatial_loss,
    text_keys,
    vl_similarity,
    weighted_total,
)
from seem.train.matcher import masks_to_boxes_cxcywh


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(masks: torch.Tensor, size: tuple[int, int], scale: float = 20.0) -> torch.Tensor:
    """Mask logits at ``size`` that agree with binary ``masks`` [N, H, W] (area-downsampled, ±scale)."""
    small = F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]
    return scale * (2 * small - 1)


def _squares(h: int = 128, w: int = 128) -> torch.Tensor:
    t = torch.zeros(3, h, w, dtype=torch.bool)
    t[0, 8:60, 8:60] = True
    t[1, 64:120, 40:100] = True
    t[2, 10:50, 70:120] = True
    return t


# ----------------------------------------------------------------------------------------------------------------
# point sampling
# ----------------------------------------------------------------------------------------------------------------


def test_point_sample_reads_pixel_centres_exactly() -> None:
    v = torch.randn(2, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    coords = torch.stack([(xs.flatten() + 0.5) / 7, (ys.flatten() + 0.5) / 5], -1)
    out = point_sample(v, coords[None].expand(2, -1, -1))
    assert out.shape == (2, 3, 35)
    assert torch.allclose(out, v.flatten(2), atol=1e-6)
    # halfway between two pixel centres: the mean; bool maps are read as float; 3-D input gives [N, P]
    m = torch.tensor([[[True, False]]])
    mid = point_sample(m, torch.tensor([[[0.5, 0.5]]]))
    assert mid.shape == (1, 1) and mid.item() == pytest.approx(0.5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_of_binary_maps_equals_grid_sample(align_corners: bool) -> None:
    g = _gen(2)
    m = torch.rand(3, 2, 17, 23, generator=g) > 0.5
    coords = torch.rand(3, 400, 2, generator=g) * 1.2 - 0.1  # some points outside the map
    got = point_sample(m, coords, align_corners=align_corners)
    want = point_sample(m.float(), coords, align_corners=align_corners)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)


def test_importance_sampling_prefers_uncertain_points() -> None:
    logits = torch.full((1, 100, 100), 10.0)
    logits[0, :, 45:55] = 0.0  # a band of uncertain logits: 10 % of the area

    def band_fraction(ratio: float) -> float:
        pts = sample_uncertain_points(logits, 4000, 3.0, ratio, _gen(1))
        x = pts[0, :, 0] * 100
        return ((x > 45.5) & (x < 54.5)).float().mean().item()

    uniform, important = band_fraction(0.0), band_fraction(0.75)
    assert uniform == pytest.approx(0.09, abs=0.02)
    # all ~0.27·P uncertain candidates are kept, plus 10 % of the uniform quarter
    assert important > 0.25 and important > 2.5 * uniform
    a = sample_uncertain_points(logits, 500, generator=_gen(3))
    assert a.shape == (1, 500, 2) and torch.equal(a, sample_uncertain_points(logits, 500, generator=_gen(3)))
    assert float(a.min()) >= 0 and float(a.max()) <= 1


# ----------------------------------------------------------------------------------------------------------------
# elementwise losses
# ----------------------------------------------------------------------------------------------------------------


def test_dice_and_bce_of_known_masks() -> None:
    a = torch.zeros(1, 10, 10)
    a[0, :5] = 1  # 50 px
    b = torch.zeros(1, 10, 10)
    b[0, 3:8] = 1  # 50 px, overlap 20 px
    logits = 50 * (2 * a - 1)  # sigmoid is exactly 0/1 in float32
    want = 1 - (2 * 20 + 1) / (50 + 50 + 1)
    assert dice_loss(logits.flatten(1), b.flatten(1)).item() == pytest.approx(want, abs=1e-6)
    assert dice_loss(logits.flatten(1), a.flatten(1)).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_bce_loss(logits.flatten(1), a.flatten(1)).item() == pytest.approx(0.0, abs=1e-6)
    # 60 wrong pixels with |logit| 50: BCE = 60 * 50 / 100
    assert sigmoid_bce_loss(logits.flatten(1), b.flatten(1)).item() == pytest.approx(30.0, rel=1e-4)


def test_sampled_mask_losses_perfect_vs_wrong() -> None:
    t = _squares()
    perfect = _logits(t, (32, 32))
    g = _gen(0)
    bce, dice = sampled_mask_losses(perfect, t, num_points=4000, importance_sample_ratio=0.0, generator=g)
    assert bce.shape == (3,) and float(bce.max()) < 0.1 and float(dice.max()) < 0.03
    wrong = perfect[[1, 2, 0]]
    bce_w, dice_w = sampled_mask_losses(wrong, t, num_points=4000, importance_sample_ratio=0.0, generator=g)
    assert float(bce_w.min()) > 3.0 and float(dice_w.min()) > 0.9
    with pytest.raises(ValueError, match="same canvas"):
        sampled_mask_losses(perfect, t[:, :, :64])


def test_generalized_box_iou_known_boxes() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    g = generalized_box_iou(a, b)
    assert g[0, 0].item() == pytest.approx(1 / 7 - 2 / 9)  # overlap 1, union 7, hull 9
    assert g[1, 1].item() == pytest.approx(-7 / 9)  # disjoint: union 2, hull 9
    assert g[0, 2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="XYXY"):
        generalized_box_iou(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), b)
    # box losses on cxcywh: identical → 0; shifted by 0.1 in x → L1 0.1 and the matching 1 − GIoU
    p = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    l1, gl = box_losses(p, p.clone())
    assert l1.item() == pytest.approx(0.0) and gl.item() == pytest.approx(0.0, abs=1e-6)
    l1, gl = box_losses(p, torch.tensor([[0.6, 0.5, 0.2, 0.2]]))
    assert l1.item() == pytest.approx(0.1, abs=1e-6)
    assert gl.item() == pytest.approx(1 - (0.02 / 0.06 - 0.0), abs=1e-5)  # IoU 1/3, hull == union


def test_object_classification_loss_weights_background() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    y = torch.tensor([0, 2, -1])  # class 0, background (K = 2), unknown → ignored
    nll = -F.log_softmax(logits, -1)
    want = (1.0 * nll[0, 0] + 0.1 * nll[1, 2]) / (1.0 + 0.1)
    assert object_classification_loss(logits, y, 0.1).item() == pytest.approx(want.item(), rel=1e-6)
    perfect = torch.tensor([[30.0, 0.0, 0.0], [0.0, 0.0, 30.0]])
    assert object_classification_loss(perfect, torch.tensor([0, 2])).item() < 1e-6
    assert object_classification_loss(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def test_grounding_loss_averages_identical_phrases() -> None:
    sim = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 2.0], [0.0, 0.0, 0.0]])  # [Q=4, G=3]
    matched = torch.tensor([0, 1, 2])
    logp = F.log_softmax(sim, 0)
    # distinct phrases: mean of −log p(matched query)
    want = -(logp[0, 0] + logp[1, 1] + logp[2, 2]) / 3
    assert grounding_loss(sim, matched).item() == pytest.approx(want.item(), rel=1e-6)
    # phrases 0 and 2 are the same text: each targets queries 0 and 2 with weight 1/2
    keys = text_keys(["a dog", "the cat", "a dog"])
    assert keys.tolist() == [0, 1, 0]
    want = -((0.5 * (logp[0, 0] + logp[2, 0])) + logp[1, 1] + 0.5 * (logp[0, 2] + logp[2, 2])) / 3
    assert grounding_loss(sim, matched, keys).item() == pytest.approx(want.item(), rel=1e-6)
    # vl_similarity: exp(scale) clamped at 100, cosine in between
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(vl_similarity(v, v, torch.tensor(math.log(10.0))), 10 * torch.eye(2), atol=1e-5)
    assert vl_similarity(v, v, 10.0)[0, 0].item() == pytest.approx(100.0, rel=1e-5)


def test_spatial_loss_is_softmax_over_all_spatial_queries() -> None:
    scores = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 4.0], [0.0, 1.0], [2.0, 0.0]])  # [3n, n=2]
    matched = torch.tensor([0, 3])
    out = spatial_loss(scores, matched)
    want = -F.log_softmax(scores.T, -1)[[0, 1], [0, 3]]
    assert torch.allclose(out, want)


def test_focal_and_iou_head_losses() -> None:
    x = torch.tensor([3.0, -3.0, 0.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    p = torch.sigmoid(x)
    p_t = torch.tensor([p[0], 1 - p[1], p[2]])
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    alpha_t = torch.tensor([0.25, 0.75, 0.25])
    assert torch.allclose(sigmoid_focal_loss(x, y), alpha_t * (1 - p_t) ** 2 * ce)
    dice = torch.tensor([0.1, 0.5], requires_grad=True)
    pred = torch.tensor([0.9, 0.0], requires_grad=True)
    assert torch.allclose(iou_head_loss(pred, dice).detach(), torch.tensor([0.0, 0.25]))
    iou_head_loss(pred, dice).sum().backward()
    assert dice.grad is None or float(dice.grad.abs().sum()) == 0.0  # detached target by default
    dice.grad = None
    iou_head_loss(pred, dice, target_grad=True).sum().backward()
    assert dice.grad is not None and float(dice.grad.abs().sum()) > 0  # official: target keeps its graph


def test_weighted_total() -> None:
    losses = {
        "loss_mask_bce_0": torch.tensor(1.0),
        "loss_mask_bce_9": torch.tensor(2.0),
        "loss_mask_ce_9": torch.tensor(3.0),
    }
    assert weighted_total(losses, {"loss_mask_bce": 5.0, "loss_mask_ce": 2.0}).item() == pytest.approx(21.0)
    with pytest.raises(KeyError, match="loss_mask_ce"):
        weighted_total(losses, {"loss_mask_bce": 5.0})


# ----------------------------------------------------------------------------------------------------------------
# SEEM criterion
# ----------------------------------------------------------------------------------------------------------------


def _seem_output(mask_logits: torch.Tensor, class_logits: torch.Tensor | None, layers: int = 2) -> DecoderOutput:
    d = 8
    q = mask_logits.shape[1]
    obj = GroupPrediction(
        captions=torch.randn(1, q, d),
        mask_embeddings=torch.randn(1, q, d),
        mask_logits=mask_logits,
        class_logits=class_logits,
    )
    return DecoderOutput(predictions=[LayerPrediction(object=obj) for _ in range(layers)])


def test_seem_criterion_perfect_vs_swapped() -> None:
    t = _squares()[:2]
    good = _logits(t, (32, 32))
    k = 5  # vocabulary size; background = index 5
    q = 6
    masks = torch.full((1, q, 32, 32), -20.0)
    masks[0, 1], masks[0, 4] = good[0], good[1]
    cls = torch.full((1, q, k + 1), -20.0)
    cls[0, :, k] = 20.0
    cls[0, 1], cls[0, 4] = -20.0, -20.0
    cls[0, 1, 3], cls[0, 4, 0] = 20.0, 20.0
    targets = [SeemTargets(masks=t, class_ids=torch.tensor([3, 0]))]
    crit = SEEMCriterion(num_points=3000, importance_sample_ratio=0.0)
    masks.requires_grad_(True)
    losses = crit(_seem_output(masks, cls), targets, generator=_gen(0))
    assert sorted(losses) == sorted(f"loss_mask_{t}_{j}" for t in ("ce", "bce", "dice") for j in (0, 1))
    assert all(v.item() < 0.1 for v in losses.values()), losses
    total = crit.total(losses)
    total.backward()
    assert masks.grad is not None
    # classes swapped between the two matched queries: the masks still match, the CE is large
    swapped = cls.clone()
    swapped[0, 1], swapped[0, 4] = cls[0, 4], cls[0, 1]
    bad = crit(_seem_output(masks.detach(), swapped), targets, generator=_gen(0))
    assert bad["loss_mask_ce_1"].item() > 5 and bad["loss_mask_dice_1"].item() < 0.05
    # an image without targets: all background, zero mask losses that still carry the graph
    m2 = masks.detach().clone().requires_grad_(True)
    empty = crit(_seem_output(m2, cls), [SeemTargets(masks=t[:0], class_ids=torch.zeros(0, dtype=torch.long))])
    assert empty["loss_mask_bce_1"].item() == 0.0 and empty["loss_mask_bce_1"].requires_grad


def test_seem_criterion_grounding_and_spatial_groups() -> None:
    t = _squares()
    good = _logits(t, (32, 32))
    d = 4
    # grounding: 4 queries, phrase g matches query 3 - g by caption direction and mask
    gq = 4
    caps = torch.zeros(1, gq, d)
    phrases = torch.eye(d)[:2]
    caps[0, 3, 0], caps[0, 2, 1] = 1.0, 1.0
    caps[0, 0, 2], caps[0, 1, 3] = 1.0, 1.0
    gmasks = torch.full((1, gq, 32, 32), -20.0)
    gmasks[0, 3], gmasks[0, 2] = good[0], good[1]
    grounding = GroupPrediction(
        captions=caps, mask_embeddings=torch.zeros(1, gq, d), mask_logits=gmasks, class_logits=None
    )
    # spatial: 2 prompts × 3 queries; prompt 0's best query is row 1, prompt 1's row 5; row 3 (prompt 1) predicts
    # prompt 0's mask but is not allowed to match it
    n = 2
    smasks = torch.full((1, 3 * n, 32, 32), -20.0)
    smasks[0, 1], smasks[0, 5], smasks[0, 3] = good[0], good[1], good[0]
    pooled = torch.eye(d)[None, :n]
    emb = torch.zeros(1, 3 * n, d)
    emb[0, 1, 0], emb[0, 5, 1] = 10.0, 10.0
    spatial = GroupPrediction(
        captions=torch.zeros(1, 3 * n, d), mask_embeddings=emb, mask_logits=smasks, class_logits=None
    )
    obj_masks = torch.full((1, 3, 32, 32), -20.0)
    obj_masks[0, 0] = good[2]
    out = DecoderOutput(
        predictions=[
            LayerPrediction(
                object=GroupPrediction(torch.zeros(1, 3, d), torch.zeros(1, 3, d), obj_masks, None),
                grounding=grounding,
                spatial=spatial,
            )
        ],
        pooled_pos_spatial=pooled,
    )
    targets = [
        SeemTargets(
            masks=t[2:3],
            class_ids=torch.tensor([-1]),
            grounding_masks=t[:2],
            grounding_embeddings=phrases,
            grounding_weight=2.0,
            spatial_masks=t[:2],
        )
    ]
    crit = SEEMCriterion(num_points=3000, importance_sample_ratio=0.0)
    losses = crit(out, targets, logit_scale=torch.tensor(math.log(100.0)), generator=_gen(0))
    assert "loss_mask_ce_0" not in losses  # no class logits → no CE
    for key in ("grounding_bce", "grounding_dice", "spatial_bce", "spatial_dice", "mask_bce", "mask_dice"):
        assert losses[f"loss_{key}_0"].item() < 0.1, key
    # grounding CE = 2.0 · mean over phrases of −log softmax_q(100·cos) at the matched query
    sim = vl_similarity(caps[0], phrases, math.log(100.0))
    want = 2.0 * grounding_loss(sim, torch.tensor([3, 2]))
    assert losses["loss_grounding_ce_0"].item() == pytest.approx(want.item(), rel=1e-5)
    scores = emb[0] @ pooled[0].T
    assert losses["loss_spatial_ce_0"].item() == pytest.approx(spatial_loss(scores, torch.tensor([1, 5])).mean().item())
    with pytest.raises(ValueError, match="logit_scale"):
        crit(out, targets)
    # a prompted call that skipped the object queries (object=None) and lazy spatial logits: no object terms
    lazy = GroupPrediction(
        torch.zeros(1, 3 * n, d), emb, None, None, mask_features=torch.eye(32)[None, None].expand(1, d, 32, 32)
    )
    spatial_only = DecoderOutput(predictions=[LayerPrediction(object=None, spatial=lazy)], pooled_pos_spatial=pooled)
    got = crit(spatial_only, targets, generator=_gen(0))
    assert sorted(got) == ["loss_spatial_bce_0", "loss_spatial_ce_0", "loss_spatial_dice_0"]


def test_seem_criterion_batched_equals_per_image_outputs() -> None:
    t = _squares()
    good = _logits(t, (32, 32))
    masks = torch.randn(2, 5, 32, 32, generator=_gen(4))
    masks[0, 2], masks[1, 0], masks[1, 4] = good[0], good[1], good[2]
    cls = torch.randn(2, 5, 4, generator=_gen(5))
    caps, emb = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    batched = DecoderOutput(predictions=[LayerPrediction(object=GroupPrediction(caps, emb, masks, cls))])
    singles = [
        DecoderOutput(
            predictions=[
                LayerPrediction(
                    object=GroupPrediction(caps[i : i + 1], emb[i : i + 1], masks[i : i + 1], cls[i : i + 1])
                )
            ]
        )
        for i in range(2)
    ]
    targets = [SeemTargets(t[:1], torch.tensor([1])), SeemTargets(t[1:], torch.tensor([0, 2]))]
    crit = SEEMCriterion(num_points=1000)
    a = crit(batched, targets, generator=_gen(9))
    b = crit(singles, targets, generator=_gen(9))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    assert crit(batched, targets, num_masks=6.0, generator=_gen(9))["loss_mask_bce_0"].item() == pytest.approx(
        a["loss_mask_bce_0"].item() * 3 / 6, rel=1e-5
    )
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        crit(batched, targets[:1])


# ----------------------------------------------------------------------------------------------------------------
# Semantic-SAM criterion
# ----------------------------------------------------------------------------------------------------------------


def _nested() -> torch.Tensor:
    t = torch.zeros(3, 128, 128, dtype=torch.bool)
    t[0, 8:120, 8:120] = True  # whole
    t[1, 16:80, 16:90] = True  # part
    t[2, 24:56, 24:60] = True  # subpart
    return t


def test_granularity_criterion_perfect_prediction_and_deep_supervision() -> None:
    t = _nested()
    k = 6
    good = _logits(t, (32, 32))
    masks = torch.full((1, 1, k, 32, 32), -20.0)
    masks[0, 0, 4], masks[0, 0, 0], masks[0, 0, 2] = good[0], good[1], good[2]
    boxes = torch.zeros(1, 1, k, 4)
    boxes[..., 2:] = 0.1
    tb = masks_to_boxes_cxcywh(t)
    boxes[0, 0, 4], boxes[0, 0, 0], boxes[0, 0, 2] = tb[0], tb[1], tb[2]
    ious = torch.zeros(1, 1, k)
    masks.requires_grad_(True)
    out = GranularityDecoderOutput(
        masks=masks,
        ious=ious,
        boxes=boxes,
        aux_ious=[ious.clone()],
        aux_boxes=[boxes.clone()],
        aux_masks=[masks.detach().clone()],
    )
    targets = [
        GranularityTargets(
            masks=t, click_targets=[[0, 1, 2]], class_ids=torch.tensor([1, -1, -1]), part_ids=torch.tensor([-1, 0, 1])
        )
    ]
    crit = GranularityCriterion(num_points=3000, importance_sample_ratio=0.0)
    m = crit.match(granularity_layers(out)[-1], targets, _gen(0))[0]
    assert sorted(zip(m.token.tolist(), m.target.tolist(), strict=True)) == [(0, 1), (2, 2), (4, 0)]
    losses = crit(out, targets, generator=_gen(0))
    names = {"loss_mask_bce", "loss_mask_dice", "loss_iou", "loss_bbox", "loss_giou"}
    assert set(losses) == {f"{n}_{j}" for n in names for j in (0, 1)}
    for key in ("mask_bce", "mask_dice", "bbox", "giou"):
        assert losses[f"loss_{key}_1"].item() < 0.05, key
    # IoU head predicted 0 for perfect masks: MSE against 1 − dice ≈ 1
    assert losses["loss_iou_1"].item() == pytest.approx(1.0, abs=0.05)
    crit.total(losses).backward()
    assert masks.grad is not None
    # class terms: object focal only where object labels exist, part focal only on images with parts
    obj = [torch.zeros(1, 1, k, 3, requires_grad=True) for _ in range(2)]
    part = [torch.zeros(1, 1, k, 2, requires_grad=True) for _ in range(2)]
    layers = granularity_layers(out, obj, part)
    with_cls = crit(layers, targets, generator=_gen(0))
    assert with_cls["loss_object_cls_1"].item() > 0 and with_cls["loss_part_cls_1"].item() > 0
    no_parts = [
        GranularityTargets(
            masks=t, click_targets=[[0, 1, 2]], class_ids=torch.tensor([1, -1, -1]), part_ids=torch.full((3,), -1)
        )
    ]
    assert crit(layers, no_parts, generator=_gen(0))["loss_part_cls_1"].item() == 0.0
    # the object term over all 6 queries × 3 classes at logit 0: 5 zero targets + 1 one-hot (class 1);
    # the two queries matched to unknown-class targets are left out
    fl0 = sigmoid_focal_loss(torch.zeros(1), torch.zeros(1)).item()
    fl1 = sigmoid_focal_loss(torch.zeros(1), torch.ones(1)).item()
    want = ((k - 2) * 3 - 1) * fl0 + fl1
    assert with_cls["loss_object_cls_1"].item() == pytest.approx(want / 3, rel=1e-5)  # divided by 3 targets


def test_granularity_targets_validation() -> None:
    t = _nested()
    with pytest.raises(ValueError, match="refers to target"):
        GranularityTargets(masks=t, click_targets=[[0, 3]])
    g = GranularityTargets(masks=t, click_targets=[[0]])
    assert g.boxes is not None and g.boxes.shape == (3, 4)
