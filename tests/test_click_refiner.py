"""The click refiner (``seem.models.click_refiner``) and its training (``seem.train.refiner``): click maps, the
net's contract, the simulated errors and clicks, learning, saving, and how a model and the predictor use it."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seem.io import read_image
from seem.models.click_refiner import (
    ClickRefiner,
    ClickRefinerConfig,
    clean_regions,
    click_maps,
    damp_far_correction,
    fold_batchnorm,
    prototype_maps,
    stride8_features,
)
from seem.models.refiner_runtime import OnnxRefiner
from seem.models.seem_model import SEEMModel
from seem.predictor import Segmenter
from seem.prompts import Box, Points, PromptSet
from seem.samples import sample_image
from seem.session import InteractiveSession
from seem.train.config import tiny_seem_config
from seem.train.refiner import (
    NO_PREV,
    PoolImage,
    box_rollout_box,
    check_teacher,
    collect_box_rollouts,
    collect_rollouts,
    distill_loss,
    load_refiner,
    make_batch,
    refiner_loss,
    save_refiner,
    simulate_clicks,
    simulate_coarse,
    student_config,
    train_refiner,
)


def _small_refiner() -> ClickRefiner:
    """A tiny refiner in eval mode whose correction depends on its inputs (a random head; seed 0)."""
    torch.manual_seed(0)
    net = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1))).eval()
    with torch.no_grad():
        net.head.weight.normal_(0, 0.5)
    return net


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_click_maps_draw_disks_by_label() -> None:
    coords = torch.tensor([[10.0, 5.0], [30.0, 20.0], [0.0, 0.0]])
    maps = click_maps(coords, torch.tensor([1, 0, 7]), (32, 40), radius=3)
    assert maps.shape == (2, 32, 40)
    assert maps[0, 5, 10] == 1 and maps[1, 20, 30] == 1
    assert maps[0, 20, 30] == 0 and maps[1, 5, 10] == 0
    assert int(maps[0].sum()) == int(_disk(32, 40, 5, 10, 3).sum())  # a whole disk, radius 3
    assert maps[:, 0, 0].sum() == 0, "labels other than 0 / 1 draw nothing"
    assert click_maps(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), (4, 4), 2).sum() == 0


def test_refiner_starts_as_the_identity_and_checks_shapes() -> None:
    torch.manual_seed(0)
    net = ClickRefiner(ClickRefinerConfig(enabled=True)).eval()
    coarse = torch.randn(2, 1, 64, 80) * 20
    out = net(torch.randn(2, 3, 64, 80), coarse, torch.zeros(2, 2, 64, 80))
    assert out.shape == (2, 1, 64, 80)
    torch.testing.assert_close(out, coarse.clamp(-8, 8))  # zero-initialised head: the clamped coarse mask
    with pytest.raises(ValueError, match=r"coarse must be \[2, 1, 64, 80\]"):
        net(torch.randn(2, 3, 64, 80), torch.randn(2, 1, 32, 40), torch.zeros(2, 2, 64, 80))
    with pytest.raises(ValueError, match=r"image must be \[B, 3, H, W\]"):
        net(torch.randn(3, 64, 80), coarse, torch.zeros(2, 2, 64, 80))


def test_simulated_errors_and_clicks_follow_the_target() -> None:
    rng = np.random.default_rng(0)
    gt = _disk(96, 96, 48, 48, 30)
    others = np.stack([_disk(96, 96, 48, 20, 14), _disk(96, 96, 80, 80, 20)])  # a part of it, a neighbour
    ious, n_clicks = [], 0
    for _ in range(40):
        coarse = simulate_coarse(rng, gt, others)
        assert coarse.shape == gt.shape and coarse.dtype == np.float32 and np.isfinite(coarse).all()
        pred = coarse > 0
        ious.append((pred & gt).sum() / max(1, (pred | gt).sum()))
        coords, labels = simulate_clicks(rng, gt, coarse)
        assert coords.shape == (len(labels), 2) and len(labels) >= 1
        xs, ys = coords[:, 0].astype(int), coords[:, 1].astype(int)
        on_gt = gt[ys, xs]
        assert (on_gt == (labels == 1)).all(), "positive clicks lie on the object, negative ones off it"
        n_clicks += len(labels)
    assert 0.2 < np.mean(ious) < 0.98, "the coarse masks are damaged, not destroyed"
    assert n_clicks > 40, "error clicks are added to the first click"


def _pool() -> list[PoolImage]:
    img = read_image(sample_image("chelsea"))[:96, :128].copy()
    masks = np.stack([_disk(96, 128, 48, 64, 30), _disk(96, 128, 48, 40, 12), _disk(96, 128, 20, 110, 15)])
    return [PoolImage(img, np.packbits(masks), 3)]


def test_training_fits_examples_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pool = _pool()
    assert pool[0].masks().shape == (3, 96, 128)
    assert all((pool[0].mask(k) == pool[0].masks()[k]).all() for k in range(3))
    batch = make_batch(np.random.default_rng(1), pool, 16, 64, 3, prev_mask=True)
    image, coarse, clicks, target, prev, feats = batch
    assert feats is None, "no features asked for"
    assert image.shape == (16, 3, 64, 64) and coarse.shape == (16, 1, 64, 64) == target.shape == prev.shape
    assert clicks.shape == (16, 2, 64, 64)
    none = (prev == NO_PREV).flatten(1).all(1)
    assert 0 < int(none.sum()) < 16, "simulated examples: some without a previous mask, some with one"
    assert ((prev[~none] > 0) == (coarse[~none] > 0)).float().mean() > 0.9, "... which follows the coarse mask"
    plain = make_batch(np.random.default_rng(1), pool, 16, 64, 3)[4]
    assert (plain == NO_PREV).all(), "without the previous-mask input no previous mask is simulated"
    cfg = ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1), click_radius=3)
    before = float(refiner_loss(coarse.clamp(-8, 8), target))
    net = train_refiner(pool, tmp_path, steps=200, batch=8, size=64, lr=3e-3, cfg=cfg, save_every=200, log_every=200)
    with torch.no_grad():
        after = float(refiner_loss(net(image, coarse, clicks), target))
    assert after < 0.8 * before, f"training must lower the loss on its kind of examples: {before:.3f} → {after:.3f}"
    back = load_refiner(tmp_path / "refiner.safetensors")
    assert back.cfg == cfg
    with torch.no_grad():
        torch.testing.assert_close(back(image, coarse, clicks), net(image, coarse, clicks))
    save_refiner(net, tmp_path / "again.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match=r"bad\.safetensors: not a readable safetensors file"):
        load_refiner(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a refiner file"):
        load_refiner(tmp_path / "other.safetensors")


@pytest.fixture()
def refined_model(tmp_path: Path) -> SEEMModel:
    torch.manual_seed(0)
    model = SEEMModel(tiny_seem_config()).eval()
    net = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1)))
    with torch.no_grad():
        net.head.bias.fill_(0.5)  # a refiner that changes every mask a little
    model.set_refiner(net)
    model.save_pretrained(tmp_path / "m")
    return SEEMModel.from_pretrained(tmp_path / "m")


def test_predictor_refines_the_selected_click_mask(refined_model: SEEMModel, one_torch_thread: None) -> None:
    assert refined_model.refiner is not None and refined_model.config.refiner.enabled
    seg = Segmenter(refined_model, progress=False, cache_dir=False)
    seg.set_image(sample_image("chelsea"))
    pts, labels = np.array([[172.0, 112.0], [40.0, 40.0]]), np.array([1, 0])
    masks, scores, low = seg.predict(pts, labels, multimask_output=True, return_logits=True)
    seg.refine_clicks = False
    plain, plain_scores, plain_low = seg.predict(pts, labels, multimask_output=True, return_logits=True)
    assert masks.shape == plain.shape and low.shape == plain_low.shape
    np.testing.assert_array_equal(scores, plain_scores)
    assert np.abs(masks[0] - plain[0]).mean() > 0.1, "the selected candidate goes through the refiner"
    np.testing.assert_allclose(masks[1:], plain[1:], atol=1e-5)  # the alternatives do not
    assert not np.allclose(low[0], plain_low[0]), "the memory of the next round is the refined mask"
    seg.refine_clicks = True
    [seg_obj] = seg.segment(PromptSet(points=Points(pts, labels)))
    np.testing.assert_array_equal(seg_obj.mask, masks[0] > 0)
    levels = seg.segment_levels(PromptSet(points=Points(pts, labels)))
    seg.refine_clicks = False
    assert [lv.mask.sum() for lv in levels] == [
        lv.mask.sum() for lv in seg.segment_levels(PromptSet(points=Points(pts, labels)))
    ], "granularity levels are the decoder's own"


def test_refined_clicks_exit_the_decoder_early(refined_model: SEEMModel, one_torch_thread: None) -> None:
    """``InferenceConfig.click_decoder_layers``: a click whose one mask the refiner corrects runs that many decoder
    layers (the default model: 3); more candidates, granularity levels, boxes and unrefined clicks run them all."""
    model = refined_model
    seen: list[int | None] = []
    decode = model.decode

    def spy(inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(inputs.layers)
        return decode(inputs, *args, **kwargs)

    model.decode = spy  # type: ignore[method-assign]
    model.config = dataclasses.replace(
        model.config, inference=dataclasses.replace(model.config.inference, click_decoder_layers=1)
    )
    seg = Segmenter(model, progress=False, cache_dir=False)
    seg.set_image(sample_image("chelsea"))
    click = PromptSet(points=Points([[172.0, 112.0]]))
    [early] = seg.segment(click, labels=False)
    seg.predict(np.array([[172.0, 112.0]]), np.array([1]), multimask_output=False)
    seg.predict(np.array([[172.0, 112.0]]), np.array([1]), multimask_output=True)
    seg.segment_levels(click, labels=False)
    seg.segment(PromptSet(boxes=[Box([100.0, 60.0, 250.0, 180.0])]), labels=False)
    seg.refine_clicks = False
    seg.segment(click, labels=False)
    assert seen == [1, 1, None, None, None, None]
    # an interactive session decodes its objects jointly: early only when the refiner corrects every one of them
    seen.clear()
    seg.refine_clicks = True
    session = InteractiveSession(seg)
    first = session.click(172.0, 112.0)
    second = session.click(120.0, 150.0, positive=False)
    pair = InteractiveSession(seg, 2)
    pair.step([click, PromptSet(boxes=[Box([100.0, 60.0, 250.0, 180.0])])])
    assert seen == [1, 1, None], "a click session exits early; a round with a box in it runs every layer"
    assert np.array_equal(first.mask, early.mask), "the session's first click is the same as segment()'s"
    [again] = seg.segment(
        PromptSet(points=Points([[172.0, 112.0], [120.0, 150.0]], [1, 0])), memory=[first.low_res_logits]
    )
    assert np.array_equal(second.mask, again.mask), "and its second round the same as segment() with that memory"
    total = model.config.decoder.num_layers
    model.config = dataclasses.replace(
        model.config, inference=dataclasses.replace(model.config.inference, click_decoder_layers=total + 1)
    )
    with pytest.raises(
        ValueError, match=rf"click_decoder_layers must be None or an int in \[0, {total}\], got {total + 1}"
    ):
        seg.segment(click, labels=False)
    # the same mask as the refiner behind a decoder cut to its first layer
    model.config = dataclasses.replace(
        model.config, inference=dataclasses.replace(model.config.inference, click_decoder_layers=None)
    )
    model.decoder.cfg = dataclasses.replace(model.decoder.cfg, num_layers=1)
    [cut] = seg.segment(click, labels=False)
    np.testing.assert_array_equal(early.mask, cut.mask)


def test_set_refiner_rejects_other_modules() -> None:
    model = SEEMModel(tiny_seem_config())
    with pytest.raises(TypeError, match="ClickRefiner"):
        model.set_refiner(torch.nn.Conv2d(1, 1, 1))  # type: ignore[arg-type]
    model.set_refiner(None)
    assert model.refiner is None and not model.config.refiner.enabled
    with pytest.raises(RuntimeError, match="no click refiner"):
        model.refine_clicks(torch.zeros(1, 3, 64, 64), torch.zeros(1, 16, 16), torch.zeros(1, 2), torch.ones(1))


def test_rollouts_record_real_rounds_and_feed_batches(refined_model: SEEMModel, one_torch_thread: None) -> None:
    pool = _pool()
    rolls = collect_rollouts(refined_model, pool, objects=3, rounds=4, progress=False)
    assert 3 <= len(rolls) <= 12
    h4, w4 = -(-96 // 32) * 32 // 4, -(-128 // 32) * 32 // 4  # the padded canvas at stride 4
    for ro in rolls:
        assert ro.logits4.shape == (h4, w4) and ro.logits4.dtype == np.float16
        assert len(ro.coords) == len(ro.labels) >= 1 and ro.labels[0] == 1
        gt = pool[ro.image].masks()[ro.mask]
        x, y = ro.coords[0].astype(int)
        assert gt[y, x], "the first RITM click lies on the target"
    assert max(len(ro.labels) for ro in rolls) >= 2, "later rounds add clicks"
    for a, b in itertools.pairwise(rolls):
        if b.image == a.image and b.mask == a.mask and len(b.labels) == len(a.labels) + 1:
            assert b.memory is not None and b.memory.shape == (h4, w4), "a later round records its memory prompt"
        if len(b.labels) == 1:
            assert b.memory is None, "round 1 has no memory"
    picky = collect_rollouts(refined_model, pool, objects=3, rounds=4, progress=False, min_first_iou=1.01)
    assert [len(ro.labels) for ro in picky] == [len(ro.labels) for ro in rolls if len(ro.labels) > 1], (
        "min_first_iou leaves out first rounds that miss the target, and only them"
    )
    image, coarse, clicks, target, prev, _ = make_batch(np.random.default_rng(0), pool, 6, 64, 3, rolls, real_frac=1.0)
    assert image.shape == (6, 3, 64, 64) and coarse.shape == target.shape == prev.shape == (6, 1, 64, 64)
    assert torch.isfinite(coarse).all() and clicks.sum() > 0 and torch.isfinite(prev).all()


def test_box_rollouts_record_box_masks_as_the_predictor_reads_them(
    refined_model: SEEMModel, one_torch_thread: None
) -> None:
    """``collect_box_rollouts``: a box per pool mask, read as the model reads a box before its refiner (here GrabCut
    in the box), recorded with its inside as positive clicks; batches then draw a ``box_frac`` share of them."""
    rng = np.random.default_rng(0)
    disk = _disk(96, 128, 48, 64, 30)
    assert box_rollout_box(rng, disk, 0.0) == (34, 18, 95, 79), "tight: right / bottom exclusive"
    for _ in range(20):
        x0, y0, x1, y1 = box_rollout_box(rng, disk, 0.1)  # type: ignore[misc]
        assert abs(x0 - 34) <= 7 and abs(y0 - 18) <= 7 and abs(x1 - 95) <= 7 and abs(y1 - 79) <= 7
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 96
    assert box_rollout_box(rng, np.zeros((8, 8), bool), 0.1) is None
    inf = refined_model.config.inference
    refined_model.config.inference = dataclasses.replace(inf, box_rule="fit", stroke_clicks=12.0)
    with pytest.raises(ValueError, match="box_rule is 'fit'"):
        collect_box_rollouts(refined_model, _pool(), objects=2, progress=False)
    refined_model.config.inference = dataclasses.replace(inf, box_rule="grabcut", stroke_clicks=0.0)
    with pytest.raises(ValueError, match="stroke_clicks is 0"):
        collect_box_rollouts(refined_model, _pool(), objects=2, progress=False)
    refined_model.config.inference = dataclasses.replace(inf, box_rule="grabcut", stroke_clicks=12.0)
    pool = _pool()
    img = pool[0].image.copy()
    img[disk] = (230, 40, 40)  # a solid disk: GrabCut's mask of its box has an inside 16 px deep
    pool = [PoolImage(img, pool[0].packed, pool[0].count)]
    rolls = collect_box_rollouts(refined_model, pool, objects=6, progress=False)
    assert rolls, "the large disk's box mask is read as clicks"
    h4, w4 = -(-96 // 32) * 32 // 4, -(-128 // 32) * 32 // 4
    seg = Segmenter(refined_model, short_side=96, progress=False, cache_dir=False, refine_clicks=False)
    seg.set_image(pool[0].image)
    tight_seen = 0
    for ro in rolls:
        assert ro.memory is None and (ro.labels == 1).all() and ro.logits4.shape == (h4, w4)
        assert np.abs(ro.logits4).max() <= 8.0 and (ro.logits4 > 0).any()
        mask = F.interpolate(torch.from_numpy(ro.logits4.astype(np.float32))[None, None], scale_factor=4.0)[0, 0]
        x, y = ro.coords.astype(int).T
        assert (mask[y, x] > 0).all(), "the clicks lie inside the recorded box mask"
        box = box_rollout_box(rng, pool[ro.image].mask(ro.mask), 0.0)
        assert box is not None
        read = seg.segment(PromptSet(boxes=[Box(*(float(v) for v in box))]), labels=False)[0].mask
        hard = torch.full((h4 * 4, w4 * 4), -8.0)
        hard[:96, :128][torch.from_numpy(read)] = 8.0
        tight_seen += np.allclose(ro.logits4, F.avg_pool2d(hard[None, None], 4)[0, 0].numpy(), atol=1e-2)
    assert tight_seen, "a tight box's record is the predictor's own box mask at stride 4"
    _, coarse, _, _, prev, _ = make_batch(
        np.random.default_rng(0), pool, 4, 64, 3, box_rollouts=rolls, box_frac=1.0, prev_mask=True
    )
    assert (prev == NO_PREV).all(), "box examples have no previous mask"
    assert set(np.unique(coarse.numpy().round(3))) - {-8.0, 8.0}, "a box mask at stride 4, upsampled"


def test_clean_regions_removes_specks_and_fills_pinholes_but_keeps_clicked_islands() -> None:
    logits = torch.full((60, 80), -3.0)
    logits[10:50, 10:50] = 4.0  # the object (1600 px)
    logits[30:32, 30:32] = -2.0  # a 4 px hole inside it
    logits[5:7, 60:62] = 2.0  # a 4 px speck far away
    logits[40:44, 65:69] = 2.0  # a 16 px island holding a positive click
    logits[0:20, 0:3] = -1.0  # a notch open to the border is no hole
    coords, labels = torch.tensor([[66.0, 41.0], [20.0, 20.0]]), torch.tensor([1, 1])
    out = clean_regions(logits, coords, labels, min_frac=0.02)
    assert out[31, 31] == 2.0 and out[6, 61] == -2.0, "hole filled, speck removed, magnitudes kept"
    assert out[41, 66] > 0, "an island with a positive click stays"
    assert (out[:, :3] == logits[:, :3]).all()
    changed = (out > 0) != (logits > 0)
    assert int(changed.sum()) == 8
    torch.testing.assert_close(clean_regions(logits, coords, labels, 0.0), logits)  # 0: off
    negative = clean_regions(logits, torch.tensor([[66.0, 41.0], [30.0, 30.0]]), torch.tensor([1, 0]), 0.02)
    assert negative[31, 31] < 0 and negative[6, 61] < 0, "a hole made by a negative click stays open"
    twice = clean_regions(out, coords, labels, 0.02)
    assert torch.equal(twice, out), "a clean mask is left as it is"


def _clean_regions_reference(fg: np.ndarray, xy: np.ndarray, lab: np.ndarray, min_frac: float) -> np.ndarray:
    """The rule of ``clean_regions`` written plainly with scipy over the whole image: the cleaned boolean mask."""
    from scipy import ndimage

    h, w = fg.shape
    limit = min_frac * fg.sum()
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    out = fg.copy()
    islands, n = ndimage.label(fg, structure=np.ones((3, 3)))
    for i in range(1, n + 1):
        region = islands == i
        clicked = any(region[y, x] for (x, y), lb in zip(xy[ok], lab[ok], strict=True) if lb == 1)
        if region.sum() < limit and not clicked:
            out[region] = False
    holes, n = ndimage.label(~out)  # 4-connected
    for i in range(1, n + 1):
        region = holes == i
        border = region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
        clicked = any(region[y, x] for (x, y), lb in zip(xy[ok], lab[ok], strict=True) if lb == 0)
        if region.sum() < limit and not border and not clicked:
            out[region] = True
    return out


def test_clean_regions_matches_a_plain_reference_on_random_masks() -> None:
    """Islands and holes anywhere, at the image's border and at the mask's bounding box (which is all that
    ``clean_regions`` reads), clicks inside and outside the image: the same pixels flip as in a plain scipy version."""
    g = torch.Generator().manual_seed(3)
    flips = 0
    for _ in range(150):
        h, w = (int(v) for v in torch.randint(12, 90, (2,), generator=g))
        cell = int(torch.randint(2, 10, (1,), generator=g))
        blobs = torch.randn(1, 1, h // cell + 1, w // cell + 1, generator=g) + float(torch.randn(1, generator=g))
        logits = F.interpolate(blobs, size=(h, w), mode="bilinear")[0, 0] + 0.4 * torch.randn(h, w, generator=g)
        n = int(torch.randint(0, 6, (1,), generator=g))
        xs, ys = torch.randint(-3, w + 3, (n,), generator=g), torch.randint(-3, h + 3, (n,), generator=g)
        coords = torch.stack([xs, ys], 1)
        labels = torch.randint(0, 3, (n,), generator=g)
        frac = float(torch.rand(1, generator=g)) * 0.2
        out = clean_regions(logits, coords.float(), labels, frac)
        want = _clean_regions_reference((logits > 0).numpy(), coords.numpy(), labels.numpy(), frac)
        np.testing.assert_array_equal((out > 0).numpy(), want)
        assert torch.equal(out.abs(), logits.abs()), "flipping keeps magnitudes"
        flips += int(((out > 0) != (logits > 0)).sum())
    assert flips > 500, "the random masks exercise the cleaning"


def test_correction_is_damped_far_from_the_clicks(refined_model: SEEMModel) -> None:
    base, refined = torch.zeros(1, 1, 40, 60), torch.full((1, 1, 40, 60), 4.0)
    out = damp_far_correction(base, refined, torch.tensor([[10.0, 20.0]]), 15.0, 0.25)
    assert out[0, 0, 20, 10] == 4.0 and out[0, 0, 20, 25] == 4.0, "within reach (15 px): in full"
    assert out[0, 0, 20, 26] == 1.0 and out[0, 0, 0, 59] == 1.0, "farther: a quarter of the correction"
    two_clicks = damp_far_correction(base, refined, torch.tensor([[10.0, 20.0], [55.0, 5.0]]), 15.0, 0.25)
    assert two_clicks[0, 0, 0, 59] == 4.0 and two_clicks[0, 0, 39, 40] == 1.0, "near any click: in full"
    torch.testing.assert_close(damp_far_correction(base, refined, torch.tensor([[10.0, 20.0]]), 15.0, 1.0), refined)
    with pytest.raises(ValueError, match="far_weight must be in"):
        ClickRefinerConfig(far_weight=1.5)
    with pytest.raises(ValueError, match="reach must be >= 0"):
        ClickRefinerConfig(reach=-1.0)
    # in the model: every round, before the cleaning of regions
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24) * 3
    one, lab1 = torch.tensor([[20.0, 30.0]]), torch.tensor([1])
    two, lab2 = torch.tensor([[20.0, 30.0], [80.0, 10.0]]), torch.tensor([1, 0])
    cfg = refined_model.config.refiner
    calls = [(one, lab1, None), (two, lab2, None), (two, lab2, logits4[0])]  # first click, two clicks, a later round
    refined_model.config.refiner = dataclasses.replace(cfg, min_region=0.0)
    with torch.no_grad():
        plain = [refined_model.refine_clicks(canvas, logits4, *c) for c in calls]
        refined_model.config.refiner = dataclasses.replace(cfg, min_region=0.0, reach=20.0, far_weight=0.5)
        damped = [refined_model.refine_clicks(canvas, logits4, *c) for c in calls]
        other = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1)))
        refined_model.set_refiner(other)  # the settings belong to the model: a new refiner keeps them
        assert (refined_model.config.refiner.reach, refined_model.config.refiner.far_weight) == (20.0, 0.5)
    refined_model.config.refiner = cfg
    coarse = F.interpolate(logits4[:, None], size=(64, 96), mode="bilinear", align_corners=False)[:, 0].clamp(-8, 8)
    near1, near2, far = (slice(None), 30, 20), (slice(None), 10, 80), (slice(None), 60, 50)
    for i, (a, b) in enumerate(zip(plain, damped, strict=True)):
        torch.testing.assert_close(b[near1], a[near1])
        torch.testing.assert_close(b[far], coarse[far] + 0.5 * (a[far] - coarse[far]))
        assert not torch.allclose(a[far], coarse[far]), f"call {i}: the refiner corrects far from the clicks too"
    torch.testing.assert_close(damped[1][near2], plain[1][near2])  # near the second (negative) click: in full
    assert not torch.allclose(damped[0][near2], plain[0][near2]), "far from the only click: damped"


def test_folded_batchnorm_gives_the_same_masks_and_follows_weight_changes(refined_model: SEEMModel) -> None:
    torch.manual_seed(0)
    net = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 2), prev_mask=True))
    with torch.no_grad():  # trained-looking statistics and a correction that depends on the inputs
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.2)
        net.head.weight.normal_(0, 0.5)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()), "the original is left as it was"
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training
    image, coarse, clicks, prev = torch.randn(2, 3, 48, 64), torch.randn(2, 1, 48, 64), torch.zeros(2, 2, 48, 64), None
    clicks[:, 0, 20:26, 30:36] = 1
    with torch.no_grad():
        torch.testing.assert_close(folded(image, coarse, clicks, prev), net(image, coarse, clicks, prev))
    # the model runs a folded copy at inference, made again when the refiner's weights change in place
    refined_model.set_refiner(net)
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24)
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    with torch.no_grad():
        a = refined_model.refine_clicks(canvas, logits4, coords, labels)
        used = refined_model._inference_refiner()
        assert used is not refined_model.refiner and refined_model._inference_refiner() is used, "cached"
        assert refined_model.refiner is not None
        refined_model.refiner.head.bias.add_(5.0)  # as an optimizer step or load_state_dict would
        b = refined_model.refine_clicks(canvas, logits4, coords, labels)
    assert refined_model._inference_refiner() is not used and (b - a).mean() > 1.0, "the change is seen"
    with torch.no_grad():  # a weight replaced by another tensor (as a user's assignment would) is seen too
        head = refined_model.refiner.head
        head.bias = torch.nn.Parameter(head.bias - 5.0)
        torch.testing.assert_close(refined_model.refine_clicks(canvas, logits4, coords, labels), a)
    assert not any("folded" in k for k in refined_model.state_dict()), "the copy is not saved"
    assert refined_model._inference_refiner() is refined_model.refiner, "with gradients on: the module itself"


def test_prev_mask_channel_starts_neutral_and_is_read(refined_model: SEEMModel) -> None:
    net = _small_refiner()
    image, coarse, clicks = torch.randn(2, 3, 48, 64), torch.randn(2, 1, 48, 64), torch.zeros(2, 2, 48, 64)
    prev = torch.randn(2, 1, 48, 64) * 4
    wide = net.with_prev_mask().eval()
    assert wide.cfg.prev_mask and wide.down2[0].weight.shape[1] == 7
    with torch.no_grad():
        base = net(image, coarse, clicks)
        torch.testing.assert_close(wide(image, coarse, clicks, prev), base)  # zero weights: the same refiner
        torch.testing.assert_close(wide(image, coarse, clicks, None), base)
        torch.testing.assert_close(net(image, coarse, clicks, prev), base)  # without the channel prev is unread
        wide.down2[0].weight[:, 6].normal_()
        assert not torch.allclose(wide(image, coarse, clicks, prev), wide(image, coarse, clicks, None))
    with pytest.raises(ValueError, match="prev must be"):
        wide(image, coarse, clicks, prev[:, :, :8])
    with pytest.raises(ValueError, match="already reads"):
        wide.with_prev_mask()
    # the model passes the memory prompt to such a refiner; save / load keeps the channel
    refined_model.set_refiner(wide)
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24)
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    with torch.no_grad():
        a = refined_model.refine_clicks(canvas, logits4, coords, labels, None)
        b = refined_model.refine_clicks(canvas, logits4, coords, labels, torch.randn(16, 24) * 4)
    assert a.shape == b.shape == (1, 64, 96) and not torch.allclose(a, b)


def test_correct_previous_starts_from_the_previous_round_and_trains_on_swapped_rounds(
    refined_model: SEEMModel,
) -> None:
    net = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1), prev_mask=True)).eval()
    net.cfg = dataclasses.replace(net.cfg, correct_previous=True, min_region=0.0)  # head zero: no correction
    refined_model.set_refiner(net)
    canvas = torch.randn(1, 3, 64, 96)
    decoder4, prev4 = torch.full((1, 16, 24), -3.0), torch.full((16, 24), -3.0)
    decoder4[0, 4:12, 4:10] = 3.0  # the decoder's mask: left; the previous round's: right
    prev4[4:12, 14:20] = 3.0
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    with torch.no_grad():
        first = refined_model.refine_clicks(canvas, decoder4, coords, labels)
        later = refined_model.refine_clicks(canvas, decoder4, coords, labels, prev4)
    up = F.interpolate(torch.stack([decoder4[0], prev4])[:, None], size=(64, 96), mode="bilinear")[:, 0]
    assert torch.equal(first[0] > 0, up[0] > 0), "a first round corrects the decoder's mask"
    assert torch.equal(later[0] > 0, up[1] > 0), "a later round corrects the previous round's mask"
    with pytest.raises(ValueError, match=r"correct_previous needs refiner\.prev_mask"):
        ClickRefinerConfig(enabled=True, correct_previous=True)
    # training batches swap the two where an example has a previous mask, as refine_clicks does
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    masks = np.stack([_disk(64, 64, 32, 32, 14), _disk(64, 64, 20, 20, 8)])
    pool = [PoolImage(img, np.packbits(masks), 2)]
    plain = make_batch(np.random.default_rng(3), pool, 8, 64, 3, prev_mask=True)
    swapped = make_batch(np.random.default_rng(3), pool, 8, 64, 3, prev_mask=True, correct_previous=True)
    has_prev = plain[4].flatten(1).amax(1) > NO_PREV / 2
    assert has_prev.any() and (~has_prev).any()
    torch.testing.assert_close(swapped[1][has_prev], plain[4][has_prev])
    torch.testing.assert_close(swapped[4][has_prev], plain[1][has_prev])
    torch.testing.assert_close(swapped[1][~has_prev], plain[1][~has_prev])


def test_prototype_maps_compare_every_position_to_the_clicked_features() -> None:
    feats = torch.zeros(1, 4, 6, 8)
    feats[0, 0, :, :4] = 2.0  # left half: feature e0, right half: e1
    feats[0, 1, :, 4:] = 3.0
    clicks = torch.zeros(1, 2, 48, 64)
    clicks[0, 0, 20:26, 8:14] = 1  # a positive click on the left half, no negative click
    coarse = torch.zeros(1, 1, 48, 64)
    coarse[0, 0, :, 32:] = 1.0  # the coarse mask covers the right half
    sims = prototype_maps(feats, clicks, coarse)
    assert sims.shape == (1, 3, 6, 8)
    torch.testing.assert_close(sims[0, 0, :, :4], torch.ones(6, 4))
    torch.testing.assert_close(sims[0, 0, :, 4:], torch.zeros(6, 4))
    torch.testing.assert_close(sims[0, 1], torch.zeros(6, 8)), "no negative click: no similarity"
    torch.testing.assert_close(sims[0, 2, :, 4:], torch.ones(6, 4))


def test_feature_input_starts_neutral_is_read_and_is_required(refined_model: SEEMModel) -> None:
    net = _small_refiner()
    image, coarse, clicks = torch.randn(2, 3, 48, 64), torch.randn(2, 1, 48, 64), torch.zeros(2, 2, 48, 64)
    clicks[:, 0, 10:14, 10:14] = 1
    d = refined_model.config.pixel_decoder.mask_dim
    feats = torch.randn(2, d, 6, 8)
    wide = net.with_features(d).eval()
    assert wide.cfg.feature_dim == d and wide.feat_in is not None
    with torch.no_grad():
        base = net(image, coarse, clicks)
        torch.testing.assert_close(wide(image, coarse, clicks, None, feats), base)  # zero weights: the same refiner
        wide.feat_in.weight.normal_()
        assert not torch.allclose(wide(image, coarse, clicks, None, feats), base)
    with pytest.raises(ValueError, match="feats must be"):
        wide(image, coarse, clicks)
    with pytest.raises(ValueError, match="already reads"):
        wide.with_features(d)
    with pytest.raises(ValueError, match=f"reads {d + 1}-channel model features, this model's have {d}"):
        refined_model.set_refiner(net.with_features(d + 1))
    # the model pools its mask features for it; the predictor passes them; save / load keeps the input
    refined_model.set_refiner(wide)
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24)
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    with pytest.raises(ValueError, match="mask features"):
        refined_model.refine_clicks(canvas, logits4, coords, labels)
    with torch.no_grad():
        a = refined_model.refine_clicks(canvas, logits4, coords, labels, None, torch.randn(1, d, 16, 24))
        b = refined_model.refine_clicks(canvas, logits4, coords, labels, None, torch.randn(1, d, 16, 24))
    assert a.shape == (1, 64, 96) and not torch.allclose(a, b), "the features change the refined mask"
    f = torch.randn(1, d, 16, 24)
    with torch.no_grad():  # the model pools an image's features once; a change in place is seen
        first = refined_model.refine_clicks(canvas, logits4, coords, labels, None, f)
        f.mul_(-1.0)
        again = refined_model.refine_clicks(canvas, logits4, coords, labels, None, f)
        fresh = refined_model.refine_clicks(canvas, logits4, coords, labels, None, f.clone())
    assert torch.equal(again, fresh) and not torch.equal(first, again)
    seg = Segmenter(refined_model, progress=False, cache_dir=False)
    seg.set_image(sample_image("chelsea"))
    masks, _, _ = seg.predict(np.array([[172.0, 112.0]]), np.array([1]), multimask_output=False)
    seg.refine_clicks = False
    plain, _, _ = seg.predict(np.array([[172.0, 112.0]]), np.array([1]), multimask_output=False)
    assert (masks != plain).any(), "the predictor runs such a refiner with the image's features"


def test_context_stage_starts_neutral_sees_farther_and_folds(tmp_path: Path) -> None:
    net = _small_refiner()
    image, coarse, clicks = torch.randn(1, 3, 32, 512), torch.randn(1, 1, 32, 512), torch.zeros(1, 2, 32, 512)
    clicks[:, 0, 12:18, 10:16] = 1
    far = image.clone()
    far[..., 224:] = torch.randn(1, 3, 32, 288)  # a change 200+ px from the first 32 columns
    wide = net.with_context(4).eval()
    assert wide.cfg.context_blocks == 4 and wide.context is not None
    with torch.no_grad():
        base = net(image, coarse, clicks)
        torch.testing.assert_close(wide(image, coarse, clicks), base)  # zero projection: the same refiner
        torch.testing.assert_close(net(far, coarse, clicks)[..., :32], base[..., :32]), "out of the net's reach"
        for m in wide.context.modules():  # a trained-looking context stage
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.5)
        near, moved = wide(image, coarse, clicks), wide(far, coarse, clicks)
    assert (near[..., :32] - moved[..., :32]).abs().max() > 1e-3, "the context stage sees 200 px farther"
    with torch.no_grad():  # BatchNorm folding keeps the function; saving keeps the stage
        for bn in (m for m in wide.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        torch.testing.assert_close(fold_batchnorm(wide)(image, coarse, clicks), wide(image, coarse, clicks))
    save_refiner(wide, tmp_path / "r.safetensors")
    back = load_refiner(tmp_path / "r.safetensors")
    assert back.cfg.context_blocks == 4
    with torch.no_grad():
        torch.testing.assert_close(back(image, coarse, clicks), wide(image, coarse, clicks))
    with pytest.raises(ValueError, match="already has a context stage"):
        wide.with_context(2)
    with pytest.raises(ValueError, match="context_blocks must be >= 0"):
        ClickRefinerConfig(enabled=True, context_blocks=-1)


def test_stride8_features_of_a_window_are_a_slice_of_the_whole_canvas() -> None:
    # refine_clicks pools an image's features once and slices each click's window (edges on multiples of 8 px, or
    # the canvas edges) out of that map: the same values as pooling the window's own features
    f = torch.randn(1, 5, 24, 30)  # stride-4 features of a 96 × 120 canvas
    whole = stride8_features(f)
    for y0, y1, x0, x1 in [(0, 96, 0, 120), (8, 40, 16, 120), (48, 96, 0, 64), (0, 96, 112, 120)]:
        part = stride8_features(f[..., y0 // 4 : y1 // 4, x0 // 4 : x1 // 4])
        assert torch.equal(part, whole[..., y0 // 8 : -(-y1 // 8), x0 // 8 : -(-x1 // 8)])


def test_feature_crops_stay_aligned_with_the_image_crops(tmp_path: Path) -> None:
    pool = _pool()
    h, w = pool[0].image.shape[:2]
    # features that hold the masks themselves at stride 8: a batch's feature crop must match its target
    masks = torch.from_numpy(pool[0].masks().astype(np.float32))[None]
    feats = [torch.nn.functional.avg_pool2d(masks, 8, ceil_mode=True)[0].numpy().astype(np.float16)]
    assert feats[0].shape == (3, -(-h // 8), -(-w // 8))
    *_, target, _, f = make_batch(np.random.default_rng(3), pool, 16, 64, 3, features=feats)
    assert f is not None and f.shape == (16, 3, 8, 8)
    t8 = torch.nn.functional.avg_pool2d(target, 8)[:, 0]
    err = [float((f[i] - t8[i]).abs().sum((1, 2)).min() / (t8[i].sum() + 1)) for i in range(16)]
    # aligned: about 0.2 (resampling); one cell off: 0.6; flipped the wrong way: 0.75
    assert np.mean(err) < 0.35, f"scaled, flipped and cropped alike (relative errors {np.round(err, 2)})"
    cfg = ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1), click_radius=3, feature_dim=3)
    with pytest.raises(ValueError, match="features"):
        train_refiner(pool, tmp_path, steps=1, batch=2, size=64, cfg=cfg)
    net = train_refiner(pool, tmp_path, steps=3, batch=4, size=64, cfg=cfg, features=feats, log_every=3)
    assert load_refiner(tmp_path / "refiner.safetensors").cfg.feature_dim == 3 and net.feat_in is not None


def test_a_smaller_refiner_learns_its_teachers_output(tmp_path: Path) -> None:
    pool = _pool()
    torch.manual_seed(0)
    teacher = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1), click_radius=3)).eval()
    with torch.no_grad():
        teacher.head.weight.normal_(0, 20.0)  # a strong correction that depends on the inputs, not the target
    cfg = student_config(teacher.cfg, widths=(8, 8, 16), blocks=(0, 1), context=0)
    assert (cfg.widths, cfg.blocks, cfg.click_radius, cfg.prev_mask) == ((8, 8, 16), (0, 1), 3, False)
    assert student_config(teacher.cfg, None, None, 0) == teacher.cfg, "no changes asked for: the teacher's layout"
    with pytest.raises(ValueError, match="3 positive channel counts"):
        student_config(teacher.cfg, widths=(4, 8), blocks=None, context=0)
    image, coarse, clicks, *_ = make_batch(np.random.default_rng(5), pool, 8, 64, 3)
    with torch.no_grad():
        taught = teacher(image, coarse, clicks)
        assert float(distill_loss(taught, taught)) == pytest.approx(0.0, abs=1e-6), "no loss where the two agree"
        before = float(distill_loss(coarse.clamp(-8, 8), taught))  # the student starts as the identity
    nets = {
        w: train_refiner(pool, tmp_path, steps=100, batch=8, size=64, lr=3e-3, cfg=cfg, teacher=t, distill=20.0)
        for w, t in (("taught", teacher), ("alone", None))
    }
    assert sum(p.numel() for p in nets["taught"].parameters()) < sum(p.numel() for p in teacher.parameters())
    with torch.no_grad():
        after = {w: float(distill_loss(net(image, coarse, clicks), taught)) for w, net in nets.items()}
    assert after["taught"] < 0.5 * after["alone"], f"the student must learn the teacher's output ({before=}): {after}"
    with pytest.raises(ValueError, match="prev_mask False vs True"):
        check_teacher(teacher, dataclasses.replace(cfg, prev_mask=True))
    with pytest.raises(ValueError, match="reads other inputs"):
        train_refiner(
            pool, tmp_path, steps=1, batch=2, size=64, cfg=dataclasses.replace(cfg, click_radius=5), teacher=teacher
        )


def test_narrowed_refiner_is_cut_out_of_the_teachers_weights() -> None:
    torch.manual_seed(0)
    cfg = ClickRefinerConfig(enabled=True, widths=(8, 12, 16), blocks=(2, 3), context_blocks=2, feature_dim=5)
    net = ClickRefiner(cfg)
    with torch.no_grad():  # a trained-looking net: every weight and statistic random, the head not zero
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.rand_like(p) + 0.5 if p.dim() == 1 else torch.randn_like(p) * 0.3)
    net.eval()
    image, coarse = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64) * 4
    clicks, feats = torch.zeros(1, 2, 64, 64), torch.randn(1, 5, 8, 8)
    clicks[0, 0, 30:34, 30:34] = 1
    with torch.no_grad():
        want = net(image, coarse, clicks, None, feats)
        same = net.narrowed(cfg.widths, cfg.blocks, cfg.context_blocks).eval()
        torch.testing.assert_close(same(image, coarse, clicks, None, feats), want)
        # fewer blocks only: the same as the net with those residual blocks left out
        fewer = net.narrowed(cfg.widths, (1, 2), 1).eval()
        manual = ClickRefiner(cfg).eval()
        manual.load_state_dict(net.state_dict())
        manual.blocks4, manual.blocks8 = manual.blocks4[:1], manual.blocks8[:2]
        assert manual.context is not None
        manual.context = torch.nn.Sequential(manual.context[0], manual.context[1], manual.context[3])
        torch.testing.assert_close(
            fewer(image, coarse, clicks, None, feats), manual(image, coarse, clicks, None, feats)
        )
        thin = net.narrowed((4, 6, 8), (1, 1), 1).eval()
        assert thin.cfg.widths == (4, 6, 8) and thin.cfg.feature_dim == 5 and thin.cfg.context_blocks == 1
        assert thin(image, coarse, clicks, None, feats).shape == (1, 1, 64, 64)
        assert sum(p.numel() for p in thin.parameters()) < sum(p.numel() for p in net.parameters()) / 3
        # the kept channels of a stage are those with the largest BatchNorm scales of its first convolution
        kept = torch.topk(net.down8[1].weight.abs(), 8).indices.sort().values
        torch.testing.assert_close(thin.down8[1].weight, net.down8[1].weight[kept])
    with pytest.raises(ValueError, match=r"widths\[2\] 32 > 16"):
        net.narrowed((8, 12, 32), (1, 1), 1)
    with pytest.raises(ValueError, match="context_blocks 3 > 2"):
        net.narrowed((8, 12, 16), (1, 1), 3)


def test_train_refiner_cli_distils_a_narrowed_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import DATA_DIR, require

    from seem.train.refiner import main

    root = require(DATA_DIR / "grabcut", "GrabCut")
    data = tmp_path / "data.yaml"
    data.write_text(f"data:\n  sources:\n    - {{type: grabcut, root: {root}, limit: 2}}\n")
    teacher = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 12, 16), blocks=(2, 2), click_radius=3))
    save_refiner(teacher, tmp_path / "teacher.safetensors")
    common = ["--data", str(data), "--steps", "2", "--batch", "2", "--size", "64", "--short-side", "96"]
    out = tmp_path / "student"
    args = ["--out", str(out), "--teacher", str(tmp_path / "teacher.safetensors"), "--widths", "4", "6", "8"]
    assert main([*common, *args, "--blocks", "1", "1"]) == 0
    student = load_refiner(out / "refiner.safetensors")
    assert (student.cfg.widths, student.cfg.blocks, student.cfg.click_radius) == ((4, 6, 8), (1, 1), 3)
    assert main([*common, *args, "--blocks", "3", "1"]) == 2, "more blocks than the teacher has"
    assert "blocks[0] 3 > 2" in capsys.readouterr().err
    assert main([*common, "--out", str(out), "--widths", "4", "6", "8"]) == 2
    assert "taught by a --teacher" in capsys.readouterr().err
    # without a teacher: --init goes on from a refiner, grown by what the options add
    assert (
        main([*common, "--out", str(tmp_path / "more"), "--init", str(tmp_path / "teacher.safetensors"), "--prev-mask"])
        == 0
    )
    more = load_refiner(tmp_path / "more" / "refiner.safetensors")
    assert more.cfg.widths == (8, 12, 16) and more.cfg.prev_mask


def test_train_refiner_cli_learns_from_box_rollouts(
    refined_model: SEEMModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import DATA_DIR, require

    from seem.train.refiner import main

    root = require(DATA_DIR / "grabcut", "GrabCut")
    data = tmp_path / "data.yaml"
    data.write_text(f"data:\n  sources:\n    - {{type: grabcut, root: {root}, limit: 2}}\n")
    save_refiner(refined_model.refiner, tmp_path / "init.safetensors")  # type: ignore[arg-type]
    inf = refined_model.config.inference
    common = ["--data", str(data), "--steps", "2", "--batch", "2", "--size", "64", "--short-side", "160"]
    common += ["--init", str(tmp_path / "init.safetensors"), "--box-rollouts", "4", "--box-frac", "1.0"]
    refined_model.config.inference = dataclasses.replace(inf, box_rule="grabcut", stroke_clicks=0.0)
    refined_model.save_pretrained(tmp_path / "no_clicks")
    assert main([*common, "--out", str(tmp_path / "a"), "--model", str(tmp_path / "no_clicks")]) == 2
    assert "stroke_clicks is 0" in capsys.readouterr().err
    refined_model.config.inference = dataclasses.replace(inf, box_rule="grabcut", stroke_clicks=20.0)
    refined_model.save_pretrained(tmp_path / "boxes")
    assert main([*common, "--out", str(tmp_path / "b"), "--model", str(tmp_path / "boxes")]) == 0
    got = capsys.readouterr().out
    assert "box rollouts: " in got and "box rollouts: 0 boxes" not in got, "GrabCut's objects give box examples"
    assert (tmp_path / "b" / "refiner.safetensors").exists()


def test_large_windows_of_few_clicks_are_read_at_half_resolution(refined_model: SEEMModel) -> None:
    d = refined_model.config.pixel_decoder.mask_dim
    net = _small_refiner().with_prev_mask().with_features(d).eval()
    with torch.no_grad():
        assert net.feat_in is not None
        net.feat_in.weight.normal_()  # the features count
    refined_model.set_refiner(net)
    cfg = dataclasses.replace(refined_model.config.refiner, min_region=0.0)
    seen: list[tuple[Tensor, ...]] = []
    folded = refined_model._inference_refiner

    def spy(*args: Tensor) -> Tensor:
        seen.append(args)
        return folded()(*args)

    canvas, features = torch.randn(1, 3, 64, 96), torch.randn(1, d, 16, 24)
    logits4 = torch.full((1, 16, 24), -3.0)
    logits4[:, 2:14, 3:20] = 3.0  # a large object: the window is the whole canvas (6144 px)
    one, lab1 = torch.tensor([[41.0, 30.0]]), torch.tensor([1])
    three, lab3 = torch.tensor([[41.0, 30.0], [70.0, 50.0], [10.0, 10.0]]), torch.tensor([1, 0, 0])

    def run(coords: Tensor, labels: Tensor, **changes: int) -> Tensor:
        refined_model.config.refiner = dataclasses.replace(cfg, **changes)
        with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(refined_model, "_refiner_runner", lambda *_: spy)
            return refined_model.refine_clicks(canvas, logits4, coords, labels, logits4[0], features)

    full = run(one, lab1, half_above=0)
    assert seen[-1][0].shape[-2:] == (64, 96), "off: the net reads the canvas"
    half = run(one, lab1, half_above=4000, half_clicks=2)
    image, coarse, clicks, prev, feats = seen[-1]
    assert image.shape[-2:] == coarse.shape[-2:] == clicks.shape[-2:] == prev.shape[-2:] == (32, 48)
    assert feats.shape[-2:] == (4, 6), "the stride-8 features pooled again: stride 8 of the half-size window"
    torch.testing.assert_close(image, F.avg_pool2d(canvas, 2))  # each input pixel: the mean of a 2×2 cell
    ys, xs = torch.nonzero(clicks[0, 0], as_tuple=True)  # the click's disk, centred where the click is
    assert abs(xs.float().mean().item() - (41.0 - 0.5) / 2) < 0.5 and abs(ys.float().mean().item() - 14.75) < 0.5
    assert half.shape == full.shape == (1, 64, 96)
    assert ((half > 0) == (full > 0)).float().mean() > 0.8, "the same mask, mostly"
    assert not torch.equal(half, full)
    # more clicks than half_clicks, or a window no larger than half_above: the canvas resolution, as with it off
    torch.testing.assert_close(run(three, lab3, half_above=4000, half_clicks=2), run(three, lab3, half_above=0))
    assert seen[-2][0].shape[-2:] == (64, 96)
    torch.testing.assert_close(run(one, lab1, half_above=6144), full)
    # a refiner that corrects nothing corrects nothing at half resolution either (the decoder's mask, clamped)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    coarse_canvas = F.interpolate(logits4[:, None], size=(64, 96), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(run(one, lab1, half_above=4000), coarse_canvas.clamp(-8, 8))
    refined_model.config.refiner = cfg
    with pytest.raises(ValueError, match=r"half_above .* must be >= 0"):
        ClickRefinerConfig(half_above=-1)


def _refiner_with_every_input(d: int) -> ClickRefiner:
    """A tiny eval-mode refiner reading the previous mask, ``d``-channel features and a context stage, each with
    weights that count."""
    net = _small_refiner().with_prev_mask().with_features(d).with_context(2).eval()
    with torch.no_grad():
        assert net.feat_in is not None and net.context is not None
        net.feat_in.weight.normal_()
        net.context[-1].weight.normal_(0, 0.5)
        net.down2[0].weight[:, 6].normal_()  # the previous mask's channel
    return net


def test_onnxruntime_runs_the_refiner_like_pytorch(refined_model: SEEMModel) -> None:
    d = refined_model.config.pixel_decoder.mask_dim
    folded = fold_batchnorm(_refiner_with_every_input(d))
    runner = OnnxRefiner(folded, threads=1)
    assert not any(m.training for m in folded.modules()), "the net stays in eval mode"
    g = torch.Generator().manual_seed(0)
    for (h, w), with_prev in itertools.product([(64, 96), (40, 24), (8, 16)], [True, False]):
        x = [torch.randn(2, c, h, w, generator=g) for c in (3, 1, 2, 1)] + [torch.randn(2, d, h // 8, w // 8)]
        x[2] = (x[2] > 1).float()
        prev = x[3] if with_prev else None
        with torch.no_grad():
            want = folded(x[0], x[1], x[2], prev, x[4])
        got = runner(x[0], x[1], x[2], prev, x[4])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # one exported graph, any window and batch
    x = [torch.randn(1, c, 60, 90, generator=g) for c in (3, 1, 2, 1)] + [torch.randn(1, d, 8, 12)]
    with torch.no_grad():  # sides not multiples of 8: the PyTorch net itself
        assert torch.equal(runner(*x), folded(*x))

    # the model: on a CPU without gradients the folded net in onnxruntime, made once; the same masks as PyTorch's
    refined_model.set_refiner(_refiner_with_every_input(d))
    canvas, features = torch.randn(1, 3, 64, 96, generator=g), torch.randn(1, d, 16, 24, generator=g)
    logits4 = torch.randn(1, 16, 24, generator=g)
    coords, labels = torch.tensor([[40.0, 30.0], [10.0, 50.0]]), torch.tensor([1, 0])
    cfg = refined_model.config.refiner
    with torch.no_grad():
        used = refined_model._refiner_runner()
        assert isinstance(used, OnnxRefiner) and refined_model._refiner_runner() is used
        a = refined_model.refine_clicks(canvas, logits4, coords, labels, logits4[0], features)
        refined_model.config.refiner = dataclasses.replace(cfg, onnxruntime=False)
        assert refined_model._refiner_runner() is refined_model._inference_refiner()
        b = refined_model.refine_clicks(canvas, logits4, coords, labels, logits4[0], features)
        refined_model.config.refiner = cfg
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert refined_model._refiner_runner() is refined_model.refiner, "with gradients on: the module itself"
    twin = copy.deepcopy(refined_model)  # a session is neither copied nor pickled: the copy makes its own
    assert twin._onnx_refiner.runner is None
    with torch.no_grad():
        torch.testing.assert_close(twin.refine_clicks(canvas, logits4, coords, labels, logits4[0], features), a)


def test_a_refiner_onnxruntime_cannot_run_stays_with_pytorch(
    refined_model: SEEMModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24)
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="could not be run by onnxruntime: no exporter here"):
            a = refined_model.refine_clicks(canvas, logits4, coords, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # told once, not at every click
            b = refined_model.refine_clicks(canvas, logits4, coords, labels)
        assert refined_model._refiner_runner() is refined_model._inference_refiner()
        refined_model.config.refiner = dataclasses.replace(refined_model.config.refiner, onnxruntime=False)
        torch.testing.assert_close(refined_model.refine_clicks(canvas, logits4, coords, labels), a)
    assert torch.equal(a, b)


def test_average_refiners_is_the_mean_of_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``seem average-refiners``: each weight (BatchNorm statistics too) is the mean over the files, so two rounds'
    average corrects a real mask differently from either; one file, or another architecture, is refused."""
    from seem.cli import main

    a = _small_refiner()
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    with torch.no_grad():  # another round: every weight and BatchNorm statistic moved
        for name, t in itertools.chain(b.named_parameters(), b.named_buffers()):
            if name.endswith("running_var"):
                t.mul_(1 + 0.5 * torch.rand_like(t))
            elif t.is_floating_point():
                t.add_(0.2 * torch.randn_like(t))
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    save_refiner(a, paths[0])
    save_refiner(b, paths[1], {"round": 2})
    out = tmp_path / "avg.safetensors"
    assert main(["average-refiners", str(paths[0]), str(paths[1]), "--out", str(out)]) == 0
    assert "the average of 2 refiners" in capsys.readouterr().out
    avg = load_refiner(out)
    sa, sb, s = a.state_dict(), b.state_dict(), avg.state_dict()
    for k, v in s.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (sa[k] + sb[k]) / 2)
        else:
            assert torch.equal(v, sa[k]), f"{k}: integer buffers come from the first file"
    img = read_image(sample_image("coffee"))[:96, :128]
    image = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    coarse = torch.full((1, 1, 96, 128), -4.0)
    coarse[..., 20:70, 30:100] = 4.0
    clicks = torch.from_numpy(np.stack([_disk(96, 128, 45, 60, 5), _disk(96, 128, 10, 10, 5)])).float()[None]
    with torch.no_grad():
        ya, yb, y = (n(image, coarse, clicks) for n in (a, b, avg))
    assert not torch.allclose(y, ya, atol=1e-3) and not torch.allclose(y, yb, atol=1e-3)
    assert main(["average-refiners", str(paths[0]), "--out", str(out)]) == 2
    assert "at least two refiner files" in capsys.readouterr().err
    wide = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 12, 16), blocks=(1, 1)))
    save_refiner(wide, tmp_path / "wide.safetensors")
    assert main(["average-refiners", str(paths[0]), str(tmp_path / "wide.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "wide.safetensors: another architecture" in err and "widths" in err
