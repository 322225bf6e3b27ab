"""Training prompt simulation (seem.train.simulate) on real masks from shared/data (GrabCut, COCO panoptic, BSDS)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require

from seem.eval.clickers import Click, SEEMClicker, click_square
from seem.eval.readers import CocoPanoptic, read_binary_mask, read_bsds_png_dir
from seem.models.seem_types import SpatialPrompts
from seem.train.simulate import (
    TRAIN_PROMPT_KINDS,
    ShapeSampler,
    ShapeSamplerConfig,
    add_corrective_clicks,
    bezier_closed_curve,
    click_anchor_boxes,
    corrective_click,
    draw_box,
    draw_click,
    draw_point,
    draw_polygon,
    jitter_anchor_boxes,
    sample_granularity_clicks,
)


@pytest.fixture(scope="module")
def real_masks() -> list[np.ndarray]:
    """Real object masks: 3 GrabCut objects, 4 COCO panoptic segments (things and stuff), 3 BSDS segments."""
    gc = require(DATA_DIR / "grabcut", "GrabCut sample")
    out = [read_binary_mask(gc / "gt" / f"{i}.png")[0] for i in ("65019", "124084", "326038")]
    pan_dir = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    pan = CocoPanoptic(pan_dir / "panoptic_examples.json", pan_dir / "panoptic")
    masks, _ = pan.sample(142238).masks()
    areas = masks.reshape(len(masks), -1).sum(1)
    out += [masks[i] for i in np.argsort(-areas)[[0, 3, 6, 10]]]
    bsds = require(DATA_DIR / "bsds500", "BSDS500 sample")
    maps = read_bsds_png_dir(bsds / "gt" / "val" / json.loads((bsds / "index.json").read_text())["items"][0]["id"])
    segs = [lm == v for lm in maps for v in np.unique(lm)]
    segs = sorted((m for m in segs if m.sum() > 1000), key=lambda m: -int(m.sum()))
    out += [segs[0], segs[len(segs) // 2], segs[-1]]
    assert all(m.dtype == bool and m.sum() > 100 for m in out)
    return out


def _box(m: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("kind", TRAIN_PROMPT_KINDS)
def test_each_shape_lies_in_its_mask_or_box_and_is_reproducible(kind: str, real_masks: list[np.ndarray]) -> None:
    sampler = ShapeSampler()
    for i, m in enumerate(real_masks):
        a = sampler.draw(kind, m, np.random.default_rng(i))
        b = sampler.draw(kind, m, np.random.default_rng(i))
        assert a.dtype == bool and a.shape == m.shape and a.any()
        assert np.array_equal(a, b), "not reproducible from its seed"
        if kind == "polygon":
            x0, y0, x1, y1 = _box(m)
            inside = np.zeros_like(m)
            inside[y0:y1, x0:x1] = True
            assert not (a & ~inside).any()
        elif kind == "box":
            mask, (x0, y0, x1, y1) = draw_box(m, np.random.default_rng(i))
            assert np.array_equal(mask, a)
            want = np.zeros_like(m)
            want[int(y0) : int(y1), int(x0) : int(x1)] = True
            assert np.array_equal(a, want)  # the filled jittered box
            gx0, gy0, gx1, gy1 = _box(m)
            assert max(abs(x0 - gx0), abs(y0 - gy0), abs(x1 - gx1), abs(y1 - gy1)) <= 20  # max_jitter_px
        else:
            assert not (a & ~m).any(), f"{kind} leaves its mask"
    # different seeds give different drawings (on a large object)
    m = real_masks[0]
    draws = {sampler.draw(kind, m, np.random.default_rng(s)).tobytes() for s in range(4)}
    assert len(draws) > 1


def test_click_is_a_square_inside_at_the_innermost_pixel_or_drawn_inside(real_masks: list[np.ndarray]) -> None:
    import cv2

    for i, m in enumerate(real_masks):
        dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        y, x = divmod(int(np.argmax(dist)), m.shape[1])
        sq, pt = draw_click(m, np.random.default_rng(i), center_prob=1.0)
        assert pt.tolist() == [[x, y]] and np.array_equal(sq, click_square(y, x, m.shape))  # RITM's first click
        for s in range(10):
            sq, pt = draw_click(m, np.random.default_rng(s), center_prob=0.0)
            (px, py) = pt[0]
            assert np.array_equal(sq, click_square(int(py), int(px), m.shape)) and sq.sum() == 9  # whole square inside
    empty, pts = draw_click(np.zeros((5, 5), bool), np.random.default_rng(0))
    assert not empty.any() and pts.shape == (0, 2)


def test_point_counts_and_polygon_curve(real_masks: list[np.ndarray]) -> None:
    m = real_masks[0]
    for s in range(20):
        pm, pts = draw_point(m, np.random.default_rng(s), 20)
        assert 1 <= len(pts) <= 20 and pm.sum() == len(pts) and m[pts[:, 1], pts[:, 0]].all()
    # the closed curve passes through its points
    p = np.array([[10.0, 10.0], [50.0, 12.0], [30.0, 40.0]])
    curve = bezier_closed_curve(p, num=50)
    assert all(np.min(np.linalg.norm(curve - q, axis=1)) < 1e-9 for q in p)
    poly = draw_polygon(m, np.random.default_rng(0), box=(100, 100, 200, 200))
    assert not poly[:100].any() and not poly[:, :100].any() and not poly[200:].any()


def test_shape_sampler_instances_kinds_and_none(real_masks: list[np.ndarray]) -> None:
    shape = real_masks[3].shape
    coco = np.stack([m for m in real_masks[3:7]])
    tiny = np.zeros(shape, bool)
    tiny[5, 5:9] = True  # 4 px < min_area
    masks = np.concatenate([coco, tiny[None]])
    sampler = ShapeSampler(ShapeSamplerConfig(max_candidates=10))
    p = sampler(masks, np.random.default_rng(0))
    assert len(p) == 5 and sorted(p.instance_ids.tolist()) == [0, 1, 2, 3, 4]
    for i, k in enumerate(p.kinds):
        inst = int(p.instance_ids[i])
        if inst == 4:
            assert k == "none" and not p.gt_masks[i].any() and not p.pos_masks[i].any()
        else:
            assert k in ("point", "polygon", "scribble", "circle")
            assert torch.equal(p.gt_masks[i], torch.from_numpy(masks[inst]))
    assert not p.neg_masks.any() and p.valid.tolist() == [k != "none" for k in p.kinds]
    q = sampler(masks, np.random.default_rng(0))
    assert q.kinds == p.kinds and torch.equal(q.pos_masks, p.pos_masks)
    # probabilities are respected; max_candidates caps the prompts; candidates restrict the choice
    only_points = ShapeSampler(ShapeSamplerConfig(kinds=("point", "box"), probs=(1.0, 0.0), max_candidates=2))
    r = only_points(masks, np.random.default_rng(1), candidates=[0, 1, 2])
    assert r.kinds == ["point", "point"] and set(r.instance_ids.tolist()) <= {0, 1, 2}
    counts: dict[str, int] = {}
    for s in range(200):
        kind = sampler(coco[:1, ::4, ::4], np.random.default_rng(s)).kinds[0]
        counts[kind] = counts.get(kind, 0) + 1
    assert set(counts) == {"point", "polygon", "scribble", "circle"} and min(counts.values()) > 25
    # an image without instances gives one empty prompt; the decoder input is SpatialPrompts
    e = sampler(np.zeros((0, *shape), bool), np.random.default_rng(0))
    assert e.kinds == ["none"] and e.pos_masks.shape == (1, *shape)
    sp = p.padded((shape[0] + 5, shape[1] + 11)).spatial_prompts()
    assert isinstance(sp, SpatialPrompts) and sp.pos_masks.shape == (5, shape[0] + 5, shape[1] + 11)
    assert sp.neg_masks is None
    with pytest.raises(ValueError, match="unknown prompt kinds"):
        ShapeSamplerConfig(kinds=("lasso",), probs=(1.0,))


def test_corrective_click_is_the_seem_clicker_rule(real_masks: list[np.ndarray]) -> None:
    import cv2

    for m in real_masks[:5]:
        k = np.ones((15, 15), np.uint8)
        for pred in (cv2.erode(m.astype(np.uint8), k) > 0, cv2.dilate(m.astype(np.uint8), k) > 0):
            clicker = SEEMClicker()
            first = clicker.propose_first(m).click
            clicker.add_click(first)
            want = clicker.propose_next(m, pred).click
            got = corrective_click(m, pred, click_square(first.y, first.x, m.shape))
            assert got == want
    # nothing to correct → no click
    assert corrective_click(real_masks[0], real_masks[0]) is None


def test_add_corrective_clicks_paints_squares(real_masks: list[np.ndarray]) -> None:
    m = real_masks[0]
    masks = np.stack([m, real_masks[1]])
    p = ShapeSampler(ShapeSamplerConfig(kinds=("point",), probs=(1.0,)))(masks, np.random.default_rng(0))
    pred = np.zeros((2, *m.shape), bool)
    pred[int(np.flatnonzero(p.instance_ids == 1)[0])] = np.ones(m.shape, bool)  # all foreground: many FPs
    q = add_corrective_clicks(p, pred)
    assert not torch.equal(q.pos_masks, p.pos_masks) or not torch.equal(q.neg_masks, p.neg_masks)
    assert p.clicks == [[], []]  # the input is unchanged
    for i in range(2):
        (c,) = q.clicks[i]
        gt = p.gt_masks[i].numpy()
        if pred[i].all():
            assert not c.is_positive and not gt[c.y, c.x] and q.neg_masks[i, c.y, c.x]
        else:
            assert c.is_positive and gt[c.y, c.x] and q.pos_masks[i, c.y, c.x]
        sq = torch.from_numpy(click_square(c.y, c.x, m.shape))
        assert bool((q.pos_masks[i] | q.neg_masks[i])[sq].all())
    assert isinstance(q.clicks[0][0], Click)


def test_granularity_clicks_on_bsds_segments() -> None:
    bsds = require(DATA_DIR / "bsds500", "BSDS500 sample")
    item = json.loads((bsds / "index.json").read_text())["items"][1]
    maps = read_bsds_png_dir(bsds / "gt" / "val" / item["id"])
    masks = np.concatenate([np.stack([lm == v for v in np.unique(lm)]) for lm in maps])
    c = sample_granularity_clicks(masks, np.random.default_rng(0), n_clicks=60, max_targets=6)
    assert len(c) == 60 and c.points_xy.shape == (60, 2)
    areas = masks.reshape(len(masks), -1).sum(1)
    for (x, y), src, tg in zip(c.points_xy.astype(int), c.source, c.targets, strict=True):
        assert masks[src, y, x]
        assert 1 <= len(tg) <= 6 and all(masks[t, y, x] for t in tg)
        assert [areas[t] for t in tg] == sorted((areas[t] for t in tg), reverse=True)
        if len(maps) <= 6:
            assert len(tg) == len(maps)  # a pixel lies in exactly one segment per annotator
    d = sample_granularity_clicks(masks, np.random.default_rng(0), n_clicks=60)
    assert np.array_equal(c.points_xy, d.points_xy) and c.targets == d.targets
    few = sample_granularity_clicks(masks[:3], np.random.default_rng(1), n_clicks=7)
    assert sorted(set(few.source.tolist())) == [0, 1, 2]  # masks repeat to fill the clicks


def test_anchor_boxes() -> None:
    b = click_anchor_boxes(np.array([[10.0, 20.0]]), (100, 200), half_size=3)
    assert torch.allclose(b, torch.tensor([[10 / 200, 20 / 100, 6 / 200, 6 / 100]]))
    g = torch.Generator().manual_seed(0)
    j = jitter_anchor_boxes(b, g, 0.4, True, 0.01)
    diff = (j - b).abs()[0]
    assert bool((diff[:2] <= b[0, 2:] / 2 * 0.004 + 1e-7).all()) and bool((diff[2:] <= b[0, 2:] * 0.004 + 1e-7).all())
    assert torch.equal(j, jitter_anchor_boxes(b, torch.Generator().manual_seed(0), 0.4, True, 0.01))
