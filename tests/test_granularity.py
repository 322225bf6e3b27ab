"""GranularityPredictor: official SemanticSAMPredictor parity (case c), multi-click / negative / box rules, bad input.

The model is the reduced official Semantic-SAM with random weights from ``SSAM_PARITY_DIR`` (its README): masks are
noise-like, so the tests check the documented rules and the official decisions, not mask quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEEM_PARITY_DIR, SSAM_PARITY_DIR, require
from PIL import Image

from seem.granularity import (
    ALL_LEVELS,
    NO_LABEL_REASON,
    PROMPT_SWITCH,
    GranularityPredictor,
    check_levels,
    load_rgb,
    mask_to_xywh,
    remove_small_regions,
    resize_short_side,
    resized_size,
)
from seem.models.semantic_sam import SemanticSAM, semantic_sam_from_official

CASE_C = sorted(p.name for p in SSAM_PARITY_DIR.glob("case_c*_predictor.npz")) if SSAM_PARITY_DIR.exists() else []
ALL = {"min_iou": -1e9, "dedup_iou": 1.0, "min_region": 0, "sort": "level"}  # every level, untouched


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> SemanticSAM:
    root = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures (SSAM_PARITY_DIR)")
    return semantic_sam_from_official(root / "ssam_small.pth", config=root / "ssam_small.yaml")[0]


@pytest.fixture(scope="module")
def resized(model: SemanticSAM) -> GranularityPredictor:
    """Predictor on the official model input (coffee 640x960): original size = resized size."""
    p = GranularityPredictor(model)
    p.set_image(SSAM_PARITY_DIR / "images" / "coffee_resized640.png")
    return p


@pytest.fixture(scope="module")
def original(model: SemanticSAM) -> GranularityPredictor:
    """Predictor on the original coffee image (400x600), resized to 640x960 internally."""
    p = GranularityPredictor(model)
    p.set_image(SSAM_PARITY_DIR / "images" / "coffee.png")
    return p


def _unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits, axis=-1)[..., : int(shape[-1])].astype(bool)


# ------------------------------------------------------------------------------------------------ official parity


@pytest.mark.parity
@pytest.mark.parametrize("case_file", CASE_C or ["<no fixtures>"])
def test_official_predictor_parity(resized: GranularityPredictor, case_file: str) -> None:
    """``official=True`` reproduces SemanticSAMPredictor.predict + process_multi_mask (cases c1, c2)."""
    npz = np.load(require(SSAM_PARITY_DIR / case_file, case_file))
    name = case_file.split("_")[1]
    meta = json.loads((SSAM_PARITY_DIR / "cases_meta.json").read_text())["case_c"][name]
    h, w = resized.original_size
    x, y = meta["click_xy_rel"]
    res = resized.predict([[x * w, y * h]], official=True)
    kept = meta["kept_in_iou_order"]
    assert [r.token for r in res] == [k["token"] for k in kept] == npz["kept_tokens_in_iou_order"].tolist()
    assert [r.level for r in res] == [next(lv for lv, t in PROMPT_SWITCH.items() if t == k["token"]) for k in kept]
    for r, k in zip(res, kept, strict=True):
        assert r.predicted_iou == pytest.approx(k["predicted_iou"], abs=1e-5)
        assert round(r.predicted_iou, 2) == k["iou_rounded"]
        assert abs(r.raw_area - k["area_before_cleanup"]) <= 2  # ±1 px float noise (thread count, README §7)
        assert abs(r.area - k["area_after_cleanup"]) <= 2
        assert r.mask.shape == (640, 960) and r.mask.dtype == bool
        assert r.bbox == mask_to_xywh(r.mask)
        assert r.label is None and r.part_label is None and r.label_reason == NO_LABEL_REASON
    ref = _unpack(npz["kept_cleaned_masks_bits"], npz["kept_cleaned_masks_shape"])
    for r, m in zip(res, ref, strict=True):
        assert (r.mask != m).mean() <= 1e-4
    # the area-sorted list (by the area before clean-up, as officially)
    by_area = resized.predict([[x * w, y * h]], official=True, sort="area")
    assert [r.token for r in by_area] == [res[i].token for i in npz["area_sorted_order_of_kept"]]
    # the decisions the fixture names: c1 drops a duplicate (token 1), c2 drops the IoU 0.47 mask (token 1)
    dropped = set(range(6)) - {r.token for r in res}
    assert dropped == set(npz["iou_sorted_token_order"].tolist()) - set(npz["kept_tokens_in_iou_order"].tolist())
    # the default mode takes the same decisions here and returns the same masks (original size = resized size)
    default = resized.predict([[x * w, y * h]])
    assert [r.token for r in default] == [r.token for r in res]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(default, res, strict=True))


def test_official_rounding_and_keep_last_quirks(resized: GranularityPredictor) -> None:
    """min_iou above every IoU: official keeps the LAST (lowest IoU) mask, the default keeps the best one."""
    h, w = resized.original_size
    click = [[0.5 * w, 0.9 * h]]
    every = resized.predict(click, **ALL)
    best = max(every, key=lambda r: r.predicted_iou)
    worst = min(every, key=lambda r: r.predicted_iou)
    official = resized.predict(click, official=True, min_iou=5.0)
    assert [r.token for r in official] == [worst.token]
    ours = resized.predict(click, min_iou=5.0)
    assert [r.token for r in ours] == [best.token]


# --------------------------------------------------------------------------------------------------- default mode


def test_default_mode_original_size_levels_and_sorting(original: GranularityPredictor) -> None:
    assert original.original_size == (400, 600) and original.input_size == (640, 960)
    click = [[450.0, 116.0]]
    res = original.predict(click, levels=(1, 3, 6), **{**ALL, "sort": "iou"})
    assert sorted(r.level for r in res) == [1, 3, 6]
    assert [r.token for r in sorted(res, key=lambda r: r.level)] == [3, 0, 5]
    assert [r.predicted_iou for r in res] == sorted((r.predicted_iou for r in res), reverse=True)
    for r in res:
        assert r.mask.shape == (400, 600) and r.mask.dtype == bool
        assert r.area == int(r.mask.sum()) == r.raw_area
        assert r.bbox == mask_to_xywh(r.mask)
        assert r.to_dict()["level"] == r.level
    by_area = original.predict(click, levels=(1, 3, 6), **{**ALL, "sort": "area"})
    assert [r.area for r in by_area] == sorted(r.area for r in by_area)
    # the same click on the 640x960 model input, bilinear-resized to 400x600, gives these masks
    model = original.model
    with torch.no_grad():
        out = model.decode_clicks(original.features, torch.tensor([[0.75, 0.29]]), relative=True)
        up = model.upscale_masks(out.masks[0, 0, [3]], original.features)
        small = torch.nn.functional.interpolate(up[None], size=(400, 600), mode="bilinear", align_corners=False)
    level1 = next(r for r in res if r.level == 1)
    assert np.array_equal(level1.mask, (small[0, 0] > 0).numpy())
    # cleanup: holes and islands below min_region are removed (hole filling first)
    cleaned = original.predict(click, levels=(1,), min_iou=-1e9, min_region=100)[0]
    m, _ = remove_small_regions(level1.mask, 100, "holes")
    m, _ = remove_small_regions(m, 100, "islands")
    assert np.array_equal(cleaned.mask, m) and cleaned.raw_area == level1.area


def test_dedup_drops_near_duplicates(resized: GranularityPredictor) -> None:
    h, w = resized.original_size
    click = [[0.75 * w, 0.29 * h]]
    every = resized.predict(click, min_iou=-1e9, dedup_iou=1.0, min_region=0)
    dedup = resized.predict(click, min_iou=-1e9, dedup_iou=0.95, min_region=0)
    assert len(dedup) < len(every)
    for i, a in enumerate(dedup):
        for b in dedup[:i]:
            iou = np.logical_and(a.mask, b.mask).sum() / np.logical_or(a.mask, b.mask).sum()
            assert iou <= 0.95


def test_several_positive_clicks_are_a_union_per_level(original: GranularityPredictor) -> None:
    clicks = np.array([[450.0, 116.0], [120.0, 300.0], [300.0, 200.0]])
    singles = [original.predict(c[None], **ALL) for c in clicks]
    together = original.predict(clicks, **ALL)
    assert [r.level for r in together] == list(ALL_LEVELS)
    for j, r in enumerate(together):
        union = np.logical_or.reduce([s[j].mask for s in singles])
        assert np.array_equal(r.mask, union)
        assert r.predicted_iou == pytest.approx(np.mean([s[j].predicted_iou for s in singles]), abs=1e-6)
    # exact batching (official batched inference) lets the clicks see each other: other masks
    exact = original.predict(clicks, exact_batching=True, **ALL)
    assert any(not np.array_equal(a.mask, b.mask) for a, b in zip(exact, together, strict=True))


def test_negative_click_subtracts_its_largest_mask_free_of_positive_clicks(original: GranularityPredictor) -> None:
    pos, neg = [450.0, 116.0], [200.0, 250.0]
    base = original.predict([pos], **ALL)
    own = original.predict([neg], **ALL)  # the negative click's six masks, decoded alone
    px, py = int(pos[0]), int(pos[1])
    free = [r.mask for r in own if not r.mask[py, px]]
    removal = max(free, key=lambda m: int(m.sum())) if free else np.zeros((400, 600), dtype=bool)
    res = original.predict([pos, neg], [1, 0], **ALL)
    for r, b in zip(res, base, strict=True):
        assert np.array_equal(r.mask, b.mask & ~removal)
        assert r.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-6)  # negatives do not change the score
    if free:
        assert all(not r.mask[int(neg[1]), int(neg[0])] for r in res if removal[int(neg[1]), int(neg[0])])


def test_box_prompt_is_clipped_to_the_box(original: GranularityPredictor) -> None:
    box = [100.0, 50.0, 400.0, 300.0]
    res = original.predict(box=box, **ALL)
    assert len(res) == 6
    outside = np.ones((400, 600), dtype=bool)
    outside[50:300, 100:400] = False
    for r in res:
        assert not (r.mask & outside).any()
    with_click = original.predict([[250.0, 150.0]], box=np.array([box]), **ALL)
    alone = original.predict([[250.0, 150.0]], **ALL)
    for a, b, c in zip(with_click, res, alone, strict=True):
        assert np.array_equal(a.mask, (b.mask | c.mask) & ~outside)
    # box + negative click: the removed region never covers the box centre
    neg = original.predict(np.array([[120.0, 80.0]]), np.array([0]), box=box, **ALL)
    own = original.predict([[120.0, 80.0]], **ALL)
    free = [r.mask for r in own if not r.mask[175, 250]]
    removal = max(free, key=lambda m: int(m.sum())) if free else np.zeros((400, 600), dtype=bool)
    for a, b in zip(neg, res, strict=True):
        assert np.array_equal(a.mask, b.mask & ~removal)


# ---------------------------------------------------------------------------------------------------- image inputs


def test_image_inputs_and_resize_rule(model: SemanticSAM) -> None:
    assert resized_size(400, 600) == (640, 960)
    assert resized_size(300, 451) == (640, 962)  # int(640 * 451 / 300), truncated
    assert resized_size(512, 512) == (640, 640)
    assert resized_size(960, 640) == (960, 640)
    path = SSAM_PARITY_DIR / "images" / "coffee.png"
    arr = load_rgb(path)
    assert arr.shape == (400, 600, 3) and arr.dtype == np.uint8 and arr.flags.writeable
    assert np.array_equal(load_rgb(Image.open(path)), arr)
    assert np.array_equal(load_rgb(torch.from_numpy(arr).permute(2, 0, 1)), arr)
    assert load_rgb(arr[..., 0]).shape == (400, 600, 3)
    ours = resize_short_side(arr)
    official = load_rgb(SSAM_PARITY_DIR / "images" / "coffee_resized640.png")
    assert ours.shape == official.shape == (640, 960, 3)
    assert np.abs(ours.astype(int) - official.astype(int)).max() <= 1  # PIL bicubic (identical with Pillow 13)
    assert resize_short_side(official) is official  # already the target size: unchanged
    p = GranularityPredictor(model, short_side=64)  # small input: a fast encode
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict([[1.0, 1.0]])
    p.set_image(Image.open(path))
    assert p.original_size == (400, 600) and p.input_size == (64, 96)
    assert p.features is not None and p.features.padded_size == (64, 96)
    assert p.predict([[599.9, 399.9]], min_region=0)[0].mask.shape == (400, 600)


# ------------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors(original: GranularityPredictor, tmp_path: Path) -> None:
    p = original
    with pytest.raises(ValueError, match=r"outside 1\.\.6"):
        p.predict([[10.0, 10.0]], levels=(0, 1))
    with pytest.raises(ValueError, match=r"outside 1\.\.6"):
        check_levels([7])
    with pytest.raises(ValueError, match="twice"):
        check_levels([2, 2])
    with pytest.raises(ValueError, match="at least one"):
        check_levels([])
    with pytest.raises(TypeError, match="ints"):
        check_levels([1.5])
    with pytest.raises(ValueError, match="outside the image"):
        p.predict([[600.5, 10.0]])
    with pytest.raises(ValueError, match="outside the image"):
        p.predict([[10.0, -1.0]])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        p.predict([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="one label per click"):
        p.predict([[1.0, 2.0]], [1, 1])
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        p.predict([[1.0, 2.0]], [2])
    with pytest.raises(ValueError, match="x1 > x0"):
        p.predict(box=[100.0, 10.0, 100.0, 50.0])
    with pytest.raises(ValueError, match="x1 > x0"):
        p.predict(box=[100.0, 60.0, 200.0, 50.0])
    with pytest.raises(ValueError, match="inside the image"):
        p.predict(box=[100.0, 10.0, 700.0, 50.0])
    with pytest.raises(ValueError, match="one XYXY box"):
        p.predict(box=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="positive click"):
        p.predict([[10.0, 10.0]], [0])
    with pytest.raises(ValueError, match="exactly one positive click"):
        p.predict([[10.0, 10.0], [20.0, 20.0]], official=True)
    with pytest.raises(ValueError, match="all six"):
        p.predict([[10.0, 10.0]], levels=(1,), official=True)
    with pytest.raises(ValueError, match="sort"):
        p.predict([[10.0, 10.0]], sort="size")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uint8"):
        p.set_image(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        p.set_image(np.zeros((8, 8, 4), dtype=np.uint8))
    with pytest.raises(FileNotFoundError):
        p.set_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="Semantic-SAM model"):
        GranularityPredictor(object())  # type: ignore[arg-type]


def test_seem_model_is_rejected() -> None:
    from seem.models.seem_model import SEEMModel

    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity model")
    seem_model, _ = SEEMModel.from_official(ckpt, config=SEEM_PARITY_DIR / "seem_v1_small.yaml")
    with pytest.raises(TypeError, match=r"SEEMModel.*no granularity tokens"):
        GranularityPredictor(seem_model)  # type: ignore[arg-type]
