"""AutomaticMaskGenerator: SAM-style utilities, official Semantic-SAM generator parity (case d), both model families,
output modes, crops, the ``seem everything`` CLI and bad input.

Models: the reduced official Semantic-SAM (``SSAM_PARITY_DIR``) and the reduced SEEM v1 (``SEEM_PARITY_DIR``), both
with random weights (masks are noise-like; the tests check rules and official decisions, not quality).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEEM_PARITY_DIR, SSAM_PARITY_DIR, require
from PIL import Image

from seem.automatic import (
    AutomaticMaskGenerator,
    GridFrame,
    SEEMGridAdapter,
    SemanticSAMGridAdapter,
    batched_mask_to_box,
    batched_nms,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    coco_encode_mask,
    generate_crop_boxes,
    grid_adapter_for,
    is_box_near_crop_edge,
    mask_stats,
    mask_to_rle,
    nms,
    rle_to_mask,
    upscale_logits,
)
from seem.automatic_cli import add_everything_parser, parse_levels, render_overlay
from seem.granularity import GranularityPredictor, remove_small_regions
from seem.models.semantic_sam import SemanticSAM, save_semantic_sam, semantic_sam_from_official

COFFEE = SSAM_PARITY_DIR / "images" / "coffee.png"  # 400x600 original
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools, numpy 2
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def ssam() -> SemanticSAM:
    root = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures (SSAM_PARITY_DIR)")
    return semantic_sam_from_official(root / "ssam_small.pth", config=root / "ssam_small.yaml")[0]


@pytest.fixture(scope="module")
def seem_v1():
    from seem.models.seem_model import SEEMModel

    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity model (SEEM_PARITY_DIR)")
    return SEEMModel.from_official(ckpt, config=SEEM_PARITY_DIR / "seem_v1_small.yaml")[0]


# ------------------------------------------------------------------------------------------------------ utilities


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Plain-Python torchvision rule (float32), ties broken by index."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    b = boxes.astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    removed: set[int] = set()
    keep = []
    for a, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = np.float32(w * h)
            if inter / (area[i] + area[j] - inter) > np.float32(thr):
                removed.add(j)
    return keep


def test_point_grids_and_crop_boxes() -> None:
    g = build_point_grid(4)
    assert g.shape == (16, 2) and g.dtype == np.float64
    np.testing.assert_allclose(g[:4], [[0.125, 0.125], [0.375, 0.125], [0.625, 0.125], [0.875, 0.125]])
    npz = np.load(require(SSAM_PARITY_DIR / "case_d_astronaut_amg.npz", "case d"))
    assert np.array_equal(build_point_grid(8), npz["levels_all_grid_xy_rel"])  # bitwise the official grid
    grids = build_all_layer_point_grids(8, 2, 2)
    assert [len(x) for x in grids] == [64, 16, 4]
    with pytest.raises(ValueError, match="empty"):
        build_all_layer_point_grids(2, 2, 2)
    with pytest.raises(ValueError, match="empty grid"):
        build_point_grid(0)
    boxes, layers = generate_crop_boxes((640, 960), 1, 512 / 1500)
    assert boxes[0] == [0, 0, 960, 640] and layers == [0, 1, 1, 1, 1]
    overlap = int(512 / 1500 * 640)  # layer 1: 2x2 crops overlapping by this much
    cw, ch = int(np.ceil((overlap + 960) / 2)), int(np.ceil((overlap + 640) / 2))
    assert boxes[1:] == [[0, 0, cw, ch], [0, ch - overlap, cw, 640], [cw - overlap, 0, 960, ch],
                         [cw - overlap, ch - overlap, 960, 640]]  # fmt: skip


def test_stability_boxes_and_edges() -> None:
    logits = torch.full((3, 5, 6), -5.0)
    logits[0, 1:3, 2:5] = 5.0  # 6 px, all far from the thresholds
    logits[1, 0, 0] = 0.5  # inside the union only
    logits[1, 4, 5] = 2.0
    stab = calculate_stability_score(logits, 0.0, 1.0)
    assert stab.dtype == torch.float32
    assert stab[0] == 1.0 and stab[1] == 0.5 and torch.isnan(stab[2])
    boxes = batched_mask_to_box(logits > 0)
    assert boxes.tolist() == [[2, 1, 4, 2], [0, 0, 5, 4], [0, 0, 0, 0]]
    near = is_box_near_crop_edge(torch.tensor([[0.0, 0, 10, 10], [100.0, 100, 300, 300]]), [0, 0, 300, 300],
                                 [0, 0, 600, 600])  # fmt: skip
    assert near.tolist() == [False, True]  # image edges do not count; the crop's inner edge does
    frame = GridFrame(input_size=(10, 14), padded_size=(16, 16))
    low = torch.randn(2, 4, 4)
    up = upscale_logits(low, frame)
    ref = torch.nn.functional.interpolate(low[:, None], size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(up, ref[:, 0, :10, :14])
    assert upscale_logits(low, frame, (5, 7)).shape == (2, 5, 7)


def test_fast_mask_stats_match_the_exact_upscaling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-cell stability / box computation equals upscaling every mask (cropped padded frames included)."""
    import seem.automatic

    monkeypatch.setattr(seem.automatic, "MIXED_CELL_LIMIT", 1.0)  # always the cell method, even for noise
    gen = torch.Generator().manual_seed(0)
    for (h4, w4), (h, w) in (((40, 60), (160, 240)), ((38, 58), (150, 225)), ((8, 8), (30, 29))):
        frame = GridFrame(input_size=(h, w), padded_size=(4 * h4, 4 * w4))
        yy, xx = torch.meshgrid(
            torch.arange(h4, dtype=torch.float32), torch.arange(w4, dtype=torch.float32), indexing="ij"
        )
        c = torch.rand(12, 2, 1, 1, generator=gen) * torch.tensor([w4, h4]).view(1, 2, 1, 1)
        r = torch.rand(12, 1, 1, generator=gen) * h4 / 2 + 1
        disks = (r - ((xx - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2).sqrt()) * 3  # smooth object-like logits
        extremes = torch.stack([torch.full((h4, w4), -5.0), torch.full((h4, w4), 5.0)])
        for low in (torch.cat([disks, extremes]), torch.randn(4, h4, w4, generator=gen) * 30):
            st_fast, box_fast = mask_stats(low, frame, 1.0, fast=True)
            st, box = mask_stats(low, frame, 1.0, fast=False)
            torch.testing.assert_close(st_fast, st, equal_nan=True)
            assert torch.equal(box_fast, box)
            logits = upscale_logits(low, frame)
            torch.testing.assert_close(st, calculate_stability_score(logits, 0.0, 1.0), equal_nan=True)
            assert torch.equal(box, batched_mask_to_box(logits > 0))


def test_nms_matches_the_torchvision_rule() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (300, 2))
    wh = rng.uniform(1, 40, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    scores[10:20] = 0.5  # ties
    for thr in (0.3, 0.7, 1.0):
        keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
        assert keep.tolist() == _reference_nms(boxes, scores, thr)
    # batched: categories never suppress each other
    idxs = torch.from_numpy(rng.integers(0, 3, 300))
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), idxs, 0.5)
    for c in range(3):
        sel = np.flatnonzero(idxs.numpy() == c)
        want = sorted(sel[_reference_nms(boxes[sel], scores[sel], 0.5)].tolist())
        assert sorted(k for k in keep.tolist() if idxs[k] == c) == want
    # official tie order: exactly torch's non-stable ``scores.sort(0, descending=True)``
    ties = torch.zeros(89)
    same = torch.tensor([[0.0, 0, 10, 10]]).repeat(89, 1) + torch.arange(89.0)[:, None] * 100
    assert nms(same, ties, 0.5, stable=False).tolist() == ties.sort(0, descending=True)[1].tolist()
    assert nms(same, ties, 0.5).tolist() == list(range(89))
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.numel() == 0


def test_rle_and_small_regions() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    for m in (rng.random((7, 9)) > 0.5, np.zeros((3, 4), bool), np.ones((3, 4), bool)):
        rle = mask_to_rle(m)
        assert rle["size"] == list(m.shape) and sum(rle["counts"]) == m.size
        assert np.array_equal(rle_to_mask(rle), m)
        assert sum(rle["counts"][1::2]) == m.sum()
        coco = coco_encode_mask(m)
        assert isinstance(coco["counts"], str)
        assert np.array_equal(mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode()}), m)
        # the uncompressed RLE is what pycocotools builds from the same runs
        assert mask_utils.frPyObjects(rle, *m.shape)["counts"].decode() == coco["counts"]
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5, 5] = False  # a 1-px hole
    m[15:17, 15:17] = True  # a 4-px island
    filled, changed = remove_small_regions(m, 5, "holes")
    assert changed and filled[5, 5] and filled.sum() == m.sum() + 1
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[15:17, 15:17].any() and cleaned.sum() == 100
    again, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and np.array_equal(again, cleaned)
    tiny = np.zeros((9, 9), bool)
    tiny[1, 1] = True
    tiny[5:7, 5:7] = True
    kept, _ = remove_small_regions(tiny, 100, "islands")  # every island small: the largest stays
    assert kept.sum() == 4 and kept[5:7, 5:7].all()


# --------------------------------------------------------------------------------------------------- parity case d


@pytest.mark.parity
def test_official_generator_parity_case_d(ssam: SemanticSAM) -> None:
    """``official_semantic_sam`` reproduces SemanticSamAutomaticMaskGenerator: records, masks, every filter decision."""
    npz = np.load(require(SSAM_PARITY_DIR / "case_d_astronaut_amg.npz", "case d"))
    meta = json.loads((SSAM_PARITY_DIR / "cases_meta.json").read_text())["case_d"]
    variants = sorted({k[: -len("_grid_xy_rel")] for k in npz.files if k.endswith("_grid_xy_rel")})
    assert set(variants) == {"levels_all", "level_2", "levels_all_nms_off"}
    image = SSAM_PARITY_DIR / "images" / meta["model_input"].split("/")[-1]
    for v in variants:
        params, ref = meta[v]["params"], meta[v]["records"]
        gen = AutomaticMaskGenerator.official_semantic_sam(
            ssam,
            points_per_side=params["points_per_side"],
            levels=params["level_user"],
            box_nms_thresh=params["box_nms_thresh"],
        )
        # the official defaults, read back from the fixture
        for name in ("points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                     "crop_n_layers", "crop_nms_thresh", "min_mask_region_area", "output_mode"):  # fmt: skip
            assert getattr(gen, name) == params[name], (v, name)
        assert list(gen.adapter.tokens) == params["level_token_index"]
        trace: list[dict] = []
        recs = gen.generate(image, trace=trace)
        assert len(recs) == meta[v]["n_records"] == len(ref), v
        # every MaskData.filter decision, in order (IoU > 0.88, stability >= 0.92, box NMS, post-cleanup NMS)
        filters = [e for e in trace if "keep" in e]
        assert [e["stage"] for e in filters] == ["pred_iou", "stability", "box_nms", "post_nms"]
        for ours, off in zip(filters, meta[v]["trace"]["filters"], strict=True):
            assert ours["keep"] == off["keep"], (v, ours["stage"])
        stab = next(e for e in trace if e["stage"] == "stability")["scores"]
        np.testing.assert_allclose(stab, meta[v]["trace"]["stability"][0], atol=1e-4)
        changed = next(e for e in trace if e["stage"] == "small_regions")["changed"]
        flags = [f["changed"] for f in meta[v]["trace"]["small_regions"]]
        assert [c for pair in changed for c in pair] == flags
        bits = np.unpackbits(npz[f"{v}_records_segmentation_bits"], axis=-1)
        masks = bits[..., : int(npz[f"{v}_records_segmentation_shape"][-1])].astype(bool)
        for r, o, m in zip(recs, ref, masks, strict=True):  # record order included
            assert abs(r["area"] - o["area"]) <= 2, v  # ±1 px float noise, as between thread counts
            assert r["bbox"] == o["bbox"]
            assert r["predicted_iou"] == pytest.approx(o["predicted_iou"], abs=1e-5)
            assert r["stability_score"] == pytest.approx(o["stability_score"], abs=1e-4)
            assert r["point_coords"] == o["point_coords"]
            assert r["crop_box"] == o["crop_box"]
            assert r["segmentation"].shape == m.shape and (r["segmentation"] != m).mean() <= 1e-4
            assert r["level"] in params["level_user"] and r["label"] is None and r["part_label"] is None


# ---------------------------------------------------------------------------------------------- default behaviour


def test_semantic_sam_records_original_size_and_batching_independence(ssam: SemanticSAM) -> None:
    kw = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.5,
        "levels": (1, 3),
        "short_side": 128,
    }
    gen = AutomaticMaskGenerator(ssam, points_per_batch=16, **kw)
    recs = gen.generate(COFFEE)
    assert recs, "expected some masks with these thresholds"
    assert set(gen.timings) == {"encode", "decode", "postprocess", "total"}
    keys = {"segmentation", "bbox", "area", "predicted_iou", "stability_score", "point_coords", "crop_box", "level",
            "label", "part_label", "label_score", "part_label_score", "label_reason"}  # fmt: skip
    for r in recs:
        assert set(r) == keys
        m = r["segmentation"]
        assert m.shape == (400, 600) and m.dtype == bool and r["area"] == int(m.sum())
        ys, xs = np.nonzero(m)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["level"] in (1, 3) and r["crop_box"] == [0, 0, 600, 400]
        ((x, y),) = r["point_coords"]
        assert (x * 4 / 600) % 1 == 0.5 and (y * 4 / 400) % 1 == 0.5  # grid cell centres, original pixels
        assert r["predicted_iou"] > 0.0 and r["stability_score"] >= 0.5
        assert r["label"] is None and r["part_label"] is None
        assert r["label_score"] is None and r["part_label_score"] is None and r["label_reason"] == gen.label_reason
    assert gen.label_reason is not None
    # independent decoding: the batch size never changes a result
    other = AutomaticMaskGenerator(ssam, points_per_batch=5, **kw).generate(COFFEE)
    assert len(other) == len(recs)
    for a, b in zip(recs, other, strict=True):
        assert a["point_coords"] == b["point_coords"] and a["level"] == b["level"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-5)
        assert (a["segmentation"] != b["segmentation"]).mean() <= 1e-4
    # output modes encode the same masks
    rle = AutomaticMaskGenerator(ssam, output_mode="uncompressed_rle", **kw).generate(COFFEE)
    coco = AutomaticMaskGenerator(ssam, output_mode="coco_rle", **kw).generate(COFFEE)
    from pycocotools import mask as mask_utils

    for a, b, c in zip(recs, rle, coco, strict=True):
        assert np.array_equal(rle_to_mask(b["segmentation"]), a["segmentation"])
        dec = mask_utils.decode({"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()})
        assert np.array_equal(dec.astype(bool), a["segmentation"])
    # a GranularityPredictor is accepted too
    assert isinstance(AutomaticMaskGenerator(GranularityPredictor(ssam)).adapter, SemanticSAMGridAdapter)


def test_filters_thresholds_and_cleanup(ssam: SemanticSAM) -> None:
    img = np.array(Image.open(COFFEE).convert("RGB").resize((96, 64)))  # small image: fast encode
    base = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0,
            "short_side": 64}  # fmt: skip
    trace: list[dict] = []
    all_recs = AutomaticMaskGenerator(ssam, **base).generate(img, trace=trace)
    n_cand = len(trace[0]["keep"])
    assert n_cand == 9 * 6
    strict = AutomaticMaskGenerator(ssam, **{**base, "pred_iou_thresh": 0.9}).generate(img)
    assert all(r["predicted_iou"] > 0.9 for r in strict) and len(strict) <= len(all_recs)
    stab = AutomaticMaskGenerator(ssam, **{**base, "stability_score_thresh": 0.9}).generate(img)
    assert all(r["stability_score"] >= 0.9 for r in stab)
    nms_on = AutomaticMaskGenerator(ssam, **{**base, "box_nms_thresh": 0.7}).generate(img)
    assert len(nms_on) < len(all_recs)
    cleaned = AutomaticMaskGenerator(ssam, **{**base, "min_mask_region_area": 50}).generate(img)
    for r in cleaned:
        m = r["segmentation"]
        assert remove_small_regions(m, 50, "holes")[1] is False
        assert remove_small_regions(m, 50, "islands")[1] is False
    crops = AutomaticMaskGenerator(ssam, **{**base, "crop_n_layers": 1}).generate(img)
    boxes = {tuple(r["crop_box"]) for r in crops}
    assert (0, 0, 96, 64) in boxes and all(r["segmentation"].shape == (64, 96) for r in crops)
    for r in crops:  # a mask from a crop lies inside its crop
        x0, y0, cw, ch = r["crop_box"]
        outside = r["segmentation"].copy()
        outside[y0 : y0 + ch, x0 : x0 + cw] = False
        assert not outside.any()
    grid = AutomaticMaskGenerator(ssam, points_per_side=None, point_grids=[np.array([[0.5, 0.5]])], levels=(2,),
                                  pred_iou_thresh=-1e9, stability_score_thresh=0.0,
                                  short_side=64).generate(img)  # fmt: skip
    assert len(grid) == 1 and grid[0]["level"] == 2 and grid[0]["point_coords"] == [[48.0, 32.0]]


# ------------------------------------------------------------------------------------------------------------- SEEM


def test_seem_clicks_one_mask_each(seem_v1) -> None:
    img = SEEM_PARITY_DIR / "images" / "coffee_original.png"  # 400x600 -> 512x768 model input
    kw = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    trace: list[dict] = []
    gen = AutomaticMaskGenerator(seem_v1, points_per_batch=64, **kw)
    assert isinstance(gen.adapter, SEEMGridAdapter) and gen.adapter.max_points_per_call == 56
    recs = gen.generate(img, trace=trace)
    assert len(trace[0]["keep"]) == 9  # one mask per click: no levels
    assert len(recs) == 9
    for r in recs:
        assert r["level"] is None and r["label"] is None and r["segmentation"].shape == (400, 600)
        assert 0.0 < r["predicted_iou"] <= 1.0  # mean sigmoid inside the mask
    # each click is its own prompt: batching changes nothing
    two = AutomaticMaskGenerator(seem_v1, points_per_batch=2, **kw).generate(img)
    for a, b in zip(recs, two, strict=True):
        assert a["point_coords"] == b["point_coords"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-5)
        assert (a["segmentation"] != b["segmentation"]).mean() <= 1e-4
    # the adapter's click squares: 3x3 at (int(y*H'), int(x*W')), clipped at the image border
    sq = gen.adapter.click_masks(np.array([[0.5, 0.5], [0.0, 0.0]]))
    assert sq.shape == (2, 512, 768) and sq[0].sum() == 9 and sq[0, 255:258, 383:386].all() and sq[1].sum() == 4
    # labels from a vocabulary
    names = ["cup", "table", "spoon"]
    labelled = AutomaticMaskGenerator(seem_v1, class_names=names, **kw).generate(img)
    assert all(r["label"] in [*names, None] for r in labelled)
    assert any(r["label"] is not None for r in labelled)


def test_seem_levels_rank_each_clicks_queries_by_area(seem_v1) -> None:
    img = SEEM_PARITY_DIR / "images" / "coffee_original.png"
    kw = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    trace: list[dict] = []
    recs = AutomaticMaskGenerator(seem_v1, levels=(1, 3), **kw).generate(img, trace=trace)
    assert len(trace[0]["keep"]) == 18  # 9 clicks x 2 levels
    by_click: dict[tuple, dict[int, int]] = {}
    for r in recs:
        assert r["level"] in (1, 3)
        by_click.setdefault(tuple(r["point_coords"][0]), {})[r["level"]] = r["area"]
    assert len(by_click) == 9
    # level 1 is the click's largest query mask, level 3 its smallest (areas at the model's stride-4 grid, so
    # compare loosely at the original size)
    assert all(a[1] >= a[3] * 0.98 for a in by_click.values() if len(a) == 2)
    assert any(a[1] > a[3] for a in by_click.values() if len(a) == 2)
    demo = copy.deepcopy(seem_v1)
    demo.config.decoder.variant = "demo"
    with pytest.raises(ValueError, match="several queries per prompt"):
        SEEMGridAdapter(demo, levels=(1,))


def test_seem_demo_variant_one_click_per_call() -> None:
    from seem.models.seem_model import SEEMModel

    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity model (SEEM_PARITY_DIR)")
    demo, _ = SEEMModel.from_official(ckpt, variant="demo", config=SEEM_PARITY_DIR / "seem_v1_small.yaml")
    assert demo.config.decoder.variant == "demo"
    img = np.array(Image.open(SEEM_PARITY_DIR / "images" / "coffee_original.png").convert("RGB"))
    gen = AutomaticMaskGenerator(demo, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                 box_nms_thresh=1.0)  # fmt: skip
    assert gen.adapter.max_points_per_call == 1
    recs = gen.generate(img)
    assert (
        len(recs) == 4
    )  # box NMS off: one record per click and all(r["segmentation"].shape == (400, 600) for r in recs)


# ------------------------------------------------------------------------------------------------------------- CLI


def test_everything_cli(ssam: SemanticSAM, tmp_path: Path) -> None:
    model_dir = save_semantic_sam(ssam, tmp_path / "ssam_small")
    parser = argparse.ArgumentParser(prog="seem")
    sub = parser.add_subparsers(dest="command", required=True)
    add_everything_parser(sub)
    out = tmp_path / "out"
    args = parser.parse_args(["everything", str(COFFEE), "--model", str(model_dir), "--levels", "1,3",
                              "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.5",
                              "--out", str(out), "--no-progress"])  # fmt: skip
    assert args.func(args) == 0
    doc = json.loads((out / "coffee_everything.json").read_text())
    assert doc["image"] == {"image_id": 0, "file_name": "coffee.png", "width": 600, "height": 400}
    assert doc["info"]["levels"] == [1, 3] and doc["info"]["family"] == "semantic_sam"
    from pycocotools import mask as mask_utils

    assert doc["annotations"]
    for a in doc["annotations"]:
        m = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert m.shape == (400, 600) and int(m.sum()) == a["area"] and a["level"] in (1, 3)
    png = np.array(Image.open(out / "coffee_everything.png"))
    assert png.shape == (400, 600, 3)
    assert not np.array_equal(png, np.array(Image.open(COFFEE).convert("RGB")))  # masks were drawn
    bad = parser.parse_args(
        ["everything", str(COFFEE), "--model", str(model_dir), "--levels", "0,7", "--out", str(out)]
    )
    assert bad.func(bad) == 2
    missing = parser.parse_args(["everything", str(tmp_path / "nope.png"), "--model", str(model_dir)])
    assert missing.func(missing) == 2
    assert parse_levels("1, 3") == (1, 3) and parse_levels(None) is None
    with pytest.raises(ValueError, match="not an integer"):
        parse_levels("1,a")
    overlay = render_overlay(np.zeros((4, 4, 3), np.uint8), [np.ones((4, 4), bool)], seed=3)
    assert overlay.shape == (4, 4, 3) and overlay.any()


# ------------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors(ssam: SemanticSAM, seem_v1) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.6"):
        AutomaticMaskGenerator(ssam, levels=(0, 2))
    with pytest.raises(ValueError, match=r"outside 1\.\.6"):
        AutomaticMaskGenerator(ssam, levels=(7,))
    with pytest.raises(ValueError, match="empty grid"):
        AutomaticMaskGenerator(ssam, points_per_side=0)
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(ssam, points_per_side=None)
    with pytest.raises(ValueError, match="points_per_batch"):
        AutomaticMaskGenerator(ssam, points_per_batch=0)
    with pytest.raises(ValueError, match="output_mode"):
        AutomaticMaskGenerator(ssam, output_mode="png")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty point grid"):
        AutomaticMaskGenerator(ssam, points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2)
    with pytest.raises(ValueError, match="point_grids"):
        AutomaticMaskGenerator(ssam, points_per_side=None, point_grids=[np.array([[0.5, 1.5]])])
    with pytest.raises(ValueError, match="class heads"):
        AutomaticMaskGenerator(ssam, class_names=["cat"])
    with pytest.raises(ValueError, match="crop_n_layers=0"):
        AutomaticMaskGenerator.official_semantic_sam(ssam, crop_n_layers=1)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        AutomaticMaskGenerator(seem_v1, levels=(1, 5))  # the parity model has 3 queries per prompt
    with pytest.raises(ValueError, match="needs a SemanticSAM"):
        AutomaticMaskGenerator(seem_v1, official=True)
    with pytest.raises(TypeError, match="SemanticSAM or SEEMModel"):
        AutomaticMaskGenerator({"model": {}})
    with pytest.raises(TypeError, match="SemanticSAM or SEEMModel"):
        grid_adapter_for("swint_only_sam_many2many.pth")
    gen = AutomaticMaskGenerator(ssam, points_per_side=1)
    with pytest.raises(TypeError, match="uint8"):
        gen.generate(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(RuntimeError, match="set_image"):
        SemanticSAMGridAdapter(ssam).propose(np.array([[0.5, 0.5]]))
