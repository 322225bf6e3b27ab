"""One-to-one and many-to-many Hungarian matchers (seem.train.matcher) on hand-built cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seem.train.matcher import (
    FORBIDDEN_COST,
    HungarianMatcher,
    ManyToManyMatcher,
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    linear_assignment,
    mask_match_costs,
    masks_to_boxes_cxcywh,
    pairwise_dice_cost,
    pairwise_sigmoid_bce_cost,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(masks: torch.Tensor, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    small = F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]
    return 20 * (2 * small - 1)


def _three() -> torch.Tensor:
    t = torch.zeros(3, 128, 128, dtype=torch.bool)
    t[0, 8:60, 8:60] = True
    t[1, 64:120, 40:100] = True
    t[2, 10:50, 70:120] = True
    return t


def _nested() -> torch.Tensor:
    t = torch.zeros(3, 128, 128, dtype=torch.bool)
    t[0, 8:120, 8:120] = True
    t[1, 16:80, 16:90] = True
    t[2, 24:56, 24:60] = True
    return t


def test_pairwise_costs_match_elementwise_definitions() -> None:
    g = _gen(0)
    logits = torch.randn(4, 50, generator=g)
    labels = (torch.rand(3, 50, generator=g) > 0.5).float()
    bce = pairwise_sigmoid_bce_cost(logits, labels)
    dice = pairwise_dice_cost(logits, labels)
    for i in range(4):
        for j in range(3):
            want = F.binary_cross_entropy_with_logits(logits[i], labels[j])
            assert bce[i, j].item() == pytest.approx(want.item(), rel=1e-5)
            s = logits[i].sigmoid()
            want_d = 1 - (2 * (s * labels[j]).sum() + 1) / (s.sum() + labels[j].sum() + 1)
            assert dice[i, j].item() == pytest.approx(want_d.item(), rel=1e-5)


def test_swapped_predictions_are_swapped_back() -> None:
    t = _three()
    pred = _logits(t[[2, 0, 1]])  # query 0 predicts target 2, query 1 target 0, query 2 target 1
    m = HungarianMatcher(num_points=2000).match(pred, t, generator=_gen(1))
    assert sorted(zip(m.pred.tolist(), m.target.tolist(), strict=True)) == [(0, 2), (1, 0), (2, 1)]
    # extra background queries stay unmatched
    bg = torch.full((2, 32, 32), -20.0)
    m = HungarianMatcher(num_points=2000).match(torch.cat([bg, pred]), t, generator=_gen(1))
    assert sorted(m.pred.tolist()) == [2, 3, 4]


def test_class_cost_breaks_mask_ties() -> None:
    t = _three()[:2]
    pred = _logits(t[[0, 0]])  # two queries with the same mask
    logits = torch.tensor([[0.0, 8.0, 0.0], [8.0, 0.0, 0.0]])  # query 0 says class 1, query 1 class 0
    m = HungarianMatcher(num_points=2000).match_objects(
        pred, t[[0, 0]], logits, torch.tensor([0, 1]), generator=_gen(0)
    )
    assert dict(zip(m.target.tolist(), m.pred.tolist(), strict=True)) == {0: 1, 1: 0}
    # unknown classes (-1) get no class cost; out-of-range classes are rejected
    m = HungarianMatcher(num_points=500).match_objects(pred, t, logits, torch.tensor([-1, -1]), generator=_gen(0))
    assert len(m) == 2
    with pytest.raises(ValueError, match="out of range"):
        HungarianMatcher().match_objects(pred, t, logits, torch.tensor([0, 2]))


def test_spatial_matching_never_crosses_prompts() -> None:
    t = _three()[:2]
    good = _logits(t)
    masks = torch.full((6, 32, 32), -20.0)
    masks[4] = good[0]  # a query of prompt 1 predicts prompt 0's mask perfectly
    masks[1] = good[0] * 0.2  # prompt 0's own best query is only roughly right
    masks[3] = good[1]
    scores = torch.zeros(6, 2)
    m = HungarianMatcher(num_points=2000).match_spatial(masks, t, scores, 3, generator=_gen(0))
    pairs = dict(zip(m.target.tolist(), m.pred.tolist(), strict=True))
    assert pairs == {0: 1, 1: 3}
    assert all(p // 3 == tgt for tgt, p in pairs.items())
    # grounding: the class cost is a softmax over queries
    sim = torch.tensor([[10.0, 0.0], [0.0, 0.0], [0.0, 10.0]])
    m = HungarianMatcher(cost_mask=0, cost_dice=0, num_points=10).match_grounding(
        torch.zeros(3, 8, 8), t[:, :32, :32], sim, generator=_gen(0)
    )
    assert dict(zip(m.target.tolist(), m.pred.tolist(), strict=True)) == {0: 0, 1: 2}


def test_mask_costs_use_shared_random_points_and_reject_other_canvases() -> None:
    t = _three()
    pred = _logits(t)
    bce1, dice1 = mask_match_costs(pred, t, 1000, _gen(5))
    bce2, dice2 = mask_match_costs(pred, t, 1000, _gen(5))
    assert torch.equal(bce1, bce2) and torch.equal(dice1, dice2)  # reproducible from the generator
    assert bool((bce1.diagonal() < bce1 + 1e-6).all()) and dice1.diagonal().max() < 0.05
    with pytest.raises(ValueError, match="same canvas"):
        mask_match_costs(pred, t[:, :, :100], 10)
    with pytest.raises(ValueError, match="NaN"):
        linear_assignment(torch.tensor([[0.0, float("nan")]]))


def test_many_to_many_click_inside_three_nested_masks() -> None:
    t = _nested()
    k = 6
    good = _logits(t)
    masks = torch.full((1, k, 32, 32), -20.0)
    masks[0, 5], masks[0, 1], masks[0, 3] = good[0], good[1], good[2]
    boxes = torch.zeros(1, k, 4)
    boxes[..., 2:] = 0.05
    tb = masks_to_boxes_cxcywh(t)
    boxes[0, 5], boxes[0, 1], boxes[0, 3] = tb[0], tb[1], tb[2]
    m = ManyToManyMatcher(num_points=2000)(masks, boxes, t, tb, [[0, 1, 2]], _gen(0))
    assert len(m) == 3 and len(set(m.token.tolist())) == 3  # three distinct tokens
    assert sorted(zip(m.token.tolist(), m.target.tolist(), strict=True)) == [(1, 1), (3, 2), (5, 0)]
    assert m.click.tolist() == [0, 0, 0] and torch.equal(m.query, m.click * k + m.token)


def test_many_to_many_never_matches_across_clicks() -> None:
    t = _nested()
    k = 3
    good = _logits(t)
    # click 0 targets the whole (0) and part (1); click 1 the subpart (2). Click 1's predictions fit click 0's
    # targets perfectly, click 0's own predictions are poor — the matching must still stay within each click.
    masks = torch.full((2, k, 32, 32), -20.0)
    masks[1, 0], masks[1, 1] = good[0], good[1]
    masks[0, 0], masks[0, 1] = good[0] * 0.1, good[1] * 0.1
    masks[0, 2] = good[2]  # click 0 predicts click 1's target perfectly
    targets = [[0, 1], [2]]
    matcher = ManyToManyMatcher(num_points=2000)
    m = matcher(masks, None, t, None, targets, _gen(0))
    assert len(m) == 3
    for c, tgt in zip(m.click.tolist(), m.target.tolist(), strict=True):
        assert tgt in targets[c]
    cost = matcher.cost_matrix(masks, None, t, None, targets, _gen(0))
    assert cost.shape == (2 * k, 3)
    assert (cost[:k, 2] == FORBIDDEN_COST).all() and (cost[k:, :2] == FORBIDDEN_COST).all()
    with pytest.raises(ValueError, match="only 3 predictions"):
        matcher(masks, None, t, None, [[0, 1, 2, 0], [2]])


def test_box_conversions() -> None:
    b = torch.tensor([[0.1, 0.2, 0.5, 0.8]])
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(b)), b)
    m = torch.zeros(2, 10, 20, dtype=torch.bool)
    m[0, 2:5, 4:10] = True
    want = box_xyxy_to_cxcywh(torch.tensor([[4 / 20, 2 / 10, 10 / 20, 5 / 10], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(masks_to_boxes_cxcywh(m), want)
