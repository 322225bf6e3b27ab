"""Segment / panoptic result types: RLE round trip, boxes, JSON, overlay drawing, COCO-panoptic export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA_DIR, require
from PIL import Image
from pycocotools import mask as mask_utils

from seem.io import read_image
from seem.models.postprocess import masks_to_boxes
from seem.results import (
    PanopticSegmentation,
    Segment,
    SemanticSegmentation,
    color_for,
    draw_overlay,
    encode_png,
    mask_bbox,
    mask_to_rle,
    rle_to_mask,
    segments_from_json,
    segments_to_json,
)


def _gt_masks() -> list[np.ndarray]:
    d = require(DATA_DIR / "grabcut", "GrabCut data")
    items = json.loads((d / "index.json").read_text())["items"][:4]
    return [np.array(Image.open(d / it["gt"])) == 255 for it in items]


def test_rle_round_trip_on_real_masks() -> None:
    for m in [*_gt_masks(), np.zeros((7, 5), bool), np.ones((3, 9), bool)]:
        rle = mask_to_rle(m)
        assert rle["size"] == list(m.shape) and isinstance(rle["counts"], str)
        json.dumps(rle)  # JSON-ready
        back = rle_to_mask(rle)
        assert back.dtype == bool and np.array_equal(back, m)
        assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == m.sum()
    # uncompressed counts (COCO iscrowd style) decode too: column-major run lengths starting with zeros
    assert rle_to_mask({"size": [2, 3], "counts": [1, 2, 3]}).T.reshape(-1).tolist() == [0, 1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="size"):
        rle_to_mask({"counts": "x"})


def test_bbox_conventions_agree() -> None:
    for m in _gt_masks():
        x0, y0, x1, y1 = mask_bbox(m)
        import torch

        assert [x0, y0, x1, y1] == masks_to_boxes(torch.from_numpy(m)[None])[0].int().tolist()
        coco = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))).tolist()
        assert coco == [x0, y0, x1 - x0, y1 - y0]
        assert m[y0:y1, x0:x1].sum() == m.sum() and m[y0, :].any() and m[y1 - 1, :].any()
    assert mask_bbox(np.zeros((4, 4), bool)) == (0, 0, 0, 0)


def test_segment_json_round_trip() -> None:
    masks = _gt_masks()[:2]
    segs = [
        Segment(mask=masks[0], score=3.5, label="cat", label_id=7, label_score=0.9, source="visual"),
        Segment(mask=masks[1], score=0.1, low_res_logits=np.ones((4, 6), np.float32), source="text", id=3),
    ]
    if masks[0].shape != masks[1].shape:
        segs[1] = Segment(mask=np.zeros_like(masks[0]), score=0.1, low_res_logits=np.ones((4, 6), np.float32))
    doc = segments_to_json(segs, masks[0].shape, file_name="x.jpg", extra={"model": "small"})
    text = json.dumps(doc)
    back = segments_from_json(text)
    for a, b in zip(segs, back, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.score == b.score and a.label == b.label
        assert (a.label_id, a.label_score, a.source, a.id) == (b.label_id, b.label_score, b.source, b.id)
    d = segs[0].to_dict()
    assert d["bbox"] == list(segs[0].bbox) and d["area"] == segs[0].area == int(masks[0].sum())
    assert d["bbox_xywh"][2] == d["bbox"][2] - d["bbox"][0]
    assert doc["model"] == "small" and doc["image"] == {"file_name": "x.jpg", "height": 321, "width": 481}
    withlog = Segment.from_dict(segs[1].to_dict(include_logits=True))
    assert np.array_equal(withlog.low_res_logits, segs[1].low_res_logits)
    with pytest.raises(ValueError, match="image is"):
        segments_to_json(segs, (10, 10))


def test_overlay_png() -> None:
    img = read_image(require(DATA_DIR / "grabcut" / "images" / "21077.jpg", "GrabCut image"))
    m = _gt_masks()[0]
    seg = Segment(mask=m, score=1.0, label="bird", label_score=0.75)
    out = draw_overlay(img, [seg], alpha=0.5, boxes=True)
    assert out.shape == img.shape and out.dtype == np.uint8
    c = np.array(color_for(0), np.float32)
    ys, xs = np.nonzero(m)
    y, x = ys[len(ys) // 2], xs[len(xs) // 2]
    assert np.allclose(out[y, x], np.rint(0.5 * img[y, x] + 0.5 * c), atol=1)
    assert np.array_equal(out[~m & ~_near(m, 40)], img[~m & ~_near(m, 40)])  # far from the mask: untouched
    png = encode_png(out)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and np.array_equal(read_image(png), out)
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(img, [seg], alpha=2)
    with pytest.raises(ValueError, match="uint8"):
        draw_overlay(img.astype(np.float32), [seg])


def _near(m: np.ndarray, r: int) -> np.ndarray:
    """Pixels within the mask's box grown by r (outline, box and caption live there)."""
    x0, y0, x1, y1 = mask_bbox(m)
    out = np.zeros_like(m)
    out[max(0, y0 - r) : y1 + r, max(0, x0 - r) : x1 + r] = True
    return out


def test_coco_panoptic_export_round_trip() -> None:
    pan = np.zeros((6, 8), np.int32)
    pan[1:3, 1:4] = 1
    pan[4:, :] = 300  # ids above 255 use the G channel
    segs = [
        Segment(mask=pan == 1, score=0.9, label="cat", label_id=0, id=1, category_id=17, isthing=True),
        Segment(mask=pan == 300, score=0.95, label="grass", label_id=1, id=300, category_id=125, isthing=False),
    ]
    cats = [{"id": 17, "name": "cat", "isthing": True}, {"id": 125, "name": "grass", "isthing": False}]
    p = PanopticSegmentation(pan, segs, cats)
    rgb = p.to_coco_png()
    assert rgb.dtype == np.uint8 and rgb[4, 0].tolist() == [44, 1, 0]
    assert np.array_equal(PanopticSegmentation.ids_from_coco_png(read_image(encode_png(rgb))), pan)
    js = p.to_coco_json("img.panoptic.png", image_id=5, image_file="img.jpg")
    info = js["annotations"][0]["segments_info"]
    assert [(s["id"], s["category_id"], s["area"], s["bbox"]) for s in info] == [
        (1, 17, 6, [1, 1, 3, 2]),
        (300, 125, 16, [0, 4, 8, 2]),
    ]
    assert js["images"][0] == {"id": 5, "file_name": "img.jpg", "height": 6, "width": 8}
    assert js["categories"][1] == {"id": 125, "name": "grass", "isthing": 0}
    json.dumps(js)
    sem = SemanticSegmentation(label_map=(pan == 300).astype(np.int32), class_names=["a", "b"])
    assert [s.label for s in sem.segments()] == ["a", "b"]
