"""Readers of the evaluation formats, on the real samples in shared/data.

Formats without a real sample there (LVIS, RefCOCO, SA-1B, BSDS500 ``.mat``) are written in their official
layout into ``tmp_path`` from real COCO / BSDS masks and read back.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SHARED, require
from PIL import Image

from seem.eval.readers import (
    BinaryMaskDataset,
    Bsds500,
    CocoInstances,
    CocoPanoptic,
    DavisDataset,
    LvisInstances,
    RefCoco,
    annotation_to_mask,
    coarse_to_fine,
    load_refs,
    read_binary_mask,
    read_bsds_mat,
    read_sa1b,
    read_scribbles,
    read_two_channel_png,
    segments_at,
    split_objects,
)

EVAL_PARITY_DIR = Path(os.environ.get("SEEM_EVAL_PARITY_DIR", SHARED / "parity" / "eval"))


def _data(name: str) -> Path:
    return require(DATA_DIR / name, f"shared data sample {name}")


def _index(name: str) -> dict:
    return json.loads((_data(name) / "index.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# GrabCut / Berkeley
# ----------------------------------------------------------------------------------------------------------------


def test_grabcut_folder_with_void() -> None:
    idx = _index("grabcut")
    ds = BinaryMaskDataset(_data("grabcut"), "images", "gt", void_value=128)
    assert [s.id for s in ds] == sorted(it["id"] for it in idx["items"])
    by_id = {it["id"]: it for it in idx["items"]}
    for s in ds:
        gt, void = s.read()
        it = by_id[s.id]
        assert gt.shape == (it["height"], it["width"])
        assert int(gt.sum()) == it["fg_pixels"] and int(void.sum()) == it["void_pixels"]
        assert not (gt & void).any()
        with Image.open(s.image_path) as im:
            assert im.size == (it["width"], it["height"])
    # Berkeley-style reading of the same files (no void): the void band becomes object
    gt_b, void_b = read_binary_mask(ds[0].mask_path, void_value=None)
    assert void_b is None and int(gt_b.sum()) == by_id[ds[0].id]["fg_pixels"] + by_id[ds[0].id]["void_pixels"]
    gt_f, _ = read_binary_mask(ds[0].mask_path, void_value=128, fg_value=255)
    assert np.array_equal(gt_f, ds[0].read()[0])


# ----------------------------------------------------------------------------------------------------------------
# DAVIS
# ----------------------------------------------------------------------------------------------------------------


def test_davis2016_folder() -> None:
    idx = _index("davis2016")
    ds = DavisDataset(_data("davis2016"), single_object=True)
    assert ds.resolution is None
    assert ds.sequences == sorted(s["name"] for s in idx["sequences"])
    for it in idx["items"]:
        frame = Path(it["mask"]).stem
        assert frame in ds.annotated_frames(it["sequence"])
        masks, ids, void = ds.objects(it["sequence"], frame)
        assert masks.shape == (1, it["height"], it["width"]) and ids.tolist() == [1] and void is None
        assert int(masks.sum()) == it["fg_pixels"]
        assert ds.image_path(it["sequence"], frame).exists()
    clip = ds.sequence_labels("blackswan", [f"{i:05d}" for i in range(30)])
    assert clip.shape == (30, 480, 854) and set(np.unique(clip)) <= {0, 255}


def test_davis2017_palette_objects_void_and_scribbles() -> None:
    idx = _index("davis_scribbles")
    ds = DavisDataset(_data("davis_scribbles"))
    assert ds.resolution == "480p" and ds.sequences == ["bear", "blackswan", "tennis"]
    assert ds.frames("blackswan") == [f"{i:05d}" for i in range(6)]  # no JPEGs: frames from Annotations
    masks, ids, void = ds.objects("tennis", "00000")
    lab = ds.labels("tennis", "00000")
    assert ids.tolist() == [1, 2] and void is not None and void.any() and np.array_equal(void, lab == 255)
    assert np.array_equal(masks[0], lab == 1) and np.array_equal(masks[1], lab == 2)
    m3, ids3, _ = split_objects(lab, num_objects=3)  # an object absent from the frame gives an empty mask
    assert ids3.tolist() == [1, 2, 3] and not m3[2].any()
    for entry in idx["scribbles"]:
        sc = read_scribbles(_data("davis_scribbles") / entry["file"])
        assert sc.sequence == entry["sequence"] and len(sc.frames) == entry["n_frames"]
        assert [len(f) for f in sc.frames] == entry["strokes_per_frame"]
        for f in sc.annotated_frames():
            m = sc.to_mask(f, 480, 854)
            obj_ids = {s.object_id for s in sc.frames[f]}
            assert set(np.unique(m).tolist()) == {-1} | obj_ids
            for st in sc.frames[f]:
                xy = st.path_xy(480, 854)
                assert (st.path >= 0).all() and (st.path <= 1).all()
                assert m[int(np.rint(xy[0, 1])), int(np.rint(xy[0, 0]))] != -1


# ----------------------------------------------------------------------------------------------------------------
# BSDS500
# ----------------------------------------------------------------------------------------------------------------


def test_bsds500_png_label_maps() -> None:
    idx = _index("bsds500")
    ds = Bsds500(_data("bsds500"), "val")
    val_items = {it["id"]: it for it in idx["items"] if it["split"] == "val"}
    assert len(ds) == len(val_items) == 50
    for s in list(ds)[:8]:
        it = val_items[s.id]
        maps = s.label_maps()
        assert [len(np.unique(m)) for m in maps] == [a["n_segments"] for a in it["annotators"]]
        assert all(m.shape == (it["height"], it["width"]) and m.min() >= 1 for m in maps)
        assert coarse_to_fine(maps) == it["coarse_to_fine"]
        seg = segments_at(maps, 10, 20)
        assert seg.shape[0] == len(maps) and seg[:, 10, 20].all()
    test_split = Bsds500(_data("bsds500_test"), split=None)
    assert len(test_split) == len(_index("bsds500_test")["items"])


def test_bsds500_mat_layout(tmp_path: Path) -> None:
    """A groundTruth ``.mat`` in the official layout (1xK cell of structs with Segmentation / Boundaries), written
    from the real label maps of one image, reads back to the same maps."""
    from scipy.io import savemat

    src = Bsds500(_data("bsds500"), "val")[0]
    maps = src.label_maps()
    cell = np.empty((1, len(maps)), dtype=object)
    bounds = []
    for k, m in enumerate(maps):
        b = np.zeros(m.shape, bool)
        b[:, :-1] |= m[:, :-1] != m[:, 1:]
        b[:-1, :] |= m[:-1, :] != m[1:, :]
        bounds.append(b)
        cell[0, k] = {"Segmentation": m.astype(np.uint16), "Boundaries": b}
    root = tmp_path / "BSDS500" / "data"
    (root / "groundTruth" / "val").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    savemat(root / "groundTruth" / "val" / f"{src.id}.mat", {"groundTruth": cell})
    (root / "images" / "val" / f"{src.id}.jpg").symlink_to(src.image_path)
    ds = Bsds500(root, "val")
    assert len(ds) == 1 and ds[0].gt_path.suffix == ".mat"
    back = ds[0].label_maps()
    assert len(back) == len(maps) and all(
        np.array_equal(a, b) and a.dtype == np.uint16 for a, b in zip(back, maps, strict=True)
    )
    _, bnds = read_bsds_mat(ds[0].gt_path, boundaries=True)
    assert all(np.array_equal(a, b) for a, b in zip(bnds, bounds, strict=True))


# ----------------------------------------------------------------------------------------------------------------
# COCO panoptic and instances
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panoptic() -> CocoPanoptic:
    root = _data("coco_panoptic_sample")
    return CocoPanoptic(root / "panoptic_examples.json", root / "panoptic", root / "images")


def test_coco_panoptic_sample(panoptic: CocoPanoptic) -> None:
    idx = _index("coco_panoptic_sample")
    root = _data("coco_panoptic_sample")
    assert len(panoptic) == 2 and len(panoptic.categories) == 133
    assert sum(panoptic.isthing.values()) == 80
    for s, it in zip(panoptic, idx["items"], strict=True):
        assert s.image_id == it["image_id"] and len(s.segments) == it["n_segments"]
        ids = s.id_map()
        assert ids.shape == (it["height"], it["width"]) == (s.height, s.width)
        present = set(np.unique(ids).tolist()) - {0}
        assert present == {seg["id"] for seg in s.segments}
        for seg in s.segments:
            assert int((ids == seg["id"]).sum()) == seg["area"]
        masks, _ = s.masks()
        assert masks.shape[0] == len(s.segments) and not (masks.sum(0) > 1).any()
        cat_map, _ = read_two_channel_png(root / it["panoptic_2ch_png"])
        seg_cat = {seg["id"]: seg["category_id"] for seg in s.segments}
        lut_ids = np.array(sorted(seg_cat))
        want = np.zeros_like(ids)
        pos = np.searchsorted(lut_ids, ids)
        hit = (ids > 0) & (pos < len(lut_ids))
        want[hit] = np.array([seg_cat[i] for i in lut_ids])[pos[hit]]
        assert np.array_equal(cat_map, want)
        assert s.image_path is not None and s.image_path.exists()


def test_coco_instances_polygons_labelme() -> None:
    """COCO polygons (labelme export of 3 VOC images) rasterise onto the labelme instance / class PNGs."""
    root = _data("voc_samples") / "labelme"
    coco = CocoInstances(root / "annotations.json", root)
    assert len(coco) == 3 and sum(len(s) for s in coco) == 12
    for s in coco:
        stem = Path(s.file_name).stem
        obj = np.array(Image.open(root / "SegmentationObject" / f"{stem}.png"))
        cls = np.array(Image.open(root / "SegmentationClass" / f"{stem}.png"))
        masks = s.masks()
        assert masks.shape == (len(s), s.height, s.width) == (len(s), *obj.shape)
        assert s.image_path is not None and s.image_path.exists()
        for m, cat in zip(masks, s.category_ids, strict=True):
            best = max(((m & (obj == k)).sum() / (m | (obj == k)).sum()) for k in range(1, obj.max() + 1))
            assert best > 0.9
            labels, counts = np.unique(cls[m], return_counts=True)
            keep = (labels != 0) & (labels != 255)
            assert labels[keep][np.argmax(counts[keep])] == cat  # labelme's class order is VOC's
        boxes = s.boxes_xyxy
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] <= s.height).all()


def test_coco_instances_rle_against_panoptic(panoptic: CocoPanoptic) -> None:
    """The RLE instances derived from the panoptic sample decode to exactly the panoptic segments."""
    path = require(EVAL_PARITY_DIR / "ap" / "instances_gt.json", "instances_gt.json (eval parity fixtures)")
    coco = CocoInstances(path)
    id_maps = {s.image_id: s.id_map() for s in panoptic}
    n = 0
    for s in coco:
        for i, ann in enumerate(s.annotations):
            m = s.mask(i)
            assert np.array_equal(m, id_maps[s.image_id] == ann["panoptic_segment_id"])
            assert int(m.sum()) == ann["area"]
            n += 1
    assert n == 43 and sum(s.iscrowd.sum() for s in coco) == 3


def _thing_annotations(panoptic: CocoPanoptic, image_id: int) -> tuple[dict, list[tuple[dict, np.ndarray]]]:
    s = panoptic.sample(image_id)
    ids = s.id_map()
    out = [(seg, ids == seg["id"]) for seg in s.segments if panoptic.isthing[seg["category_id"]] and not seg["iscrowd"]]
    image = {"id": s.image_id, "height": s.height, "width": s.width, "file_name": Path(s.image_path).name}
    return image, out


def _polygons(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def test_lvis_layout_roundtrip(tmp_path: Path, panoptic: CocoPanoptic) -> None:
    image, things = _thing_annotations(panoptic, 142238)
    lvis = {
        "info": {},
        "licenses": [],
        "images": [
            {
                "id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "coco_url": f"http://images.cocodataset.org/val2017/{image['file_name']}",
                "neg_category_ids": [3, 8],
                "not_exhaustive_category_ids": [1],
            }
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": image["id"],
                "category_id": seg["category_id"],
                "segmentation": _polygons(m),
                "area": int(m.sum()),
                "bbox": seg["bbox"],
            }
            for i, (seg, m) in enumerate(things)
        ],
        "categories": [{"id": 1, "name": "person", "synset": "person.n.01", "frequency": "f"}],
    }
    path = tmp_path / "lvis_v1_val.json"
    path.write_text(json.dumps(lvis))
    ds = LvisInstances(path, tmp_path / "coco")
    (s,) = list(ds)
    assert s.file_name == f"val2017/{image['file_name']}" and s.image_path == tmp_path / "coco" / s.file_name
    assert s.extra == {"neg_category_ids": [3, 8], "not_exhaustive_category_ids": [1]}
    assert not s.iscrowd.any() and ds.frequency(1) == "f"
    masks = s.masks()
    for (_, m), back in zip(things, masks, strict=True):  # polygons trace the pixel outline: nearly the same mask
        assert (m & back).sum() / (m | back).sum() > 0.7
    want = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (seg["bbox"] for seg, _ in things)], np.float32)
    assert np.array_equal(s.boxes_xyxy, want)


def test_refcoco_layout_roundtrip(tmp_path: Path, panoptic: CocoPanoptic) -> None:
    from pycocotools import mask as mask_utils

    image, things = _thing_annotations(panoptic, 439180)
    anns = []
    for i, (seg, m) in enumerate(things[:4]):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "id": 100 + i,
                "image_id": image["id"],
                "category_id": seg["category_id"],
                "segmentation": rle,
                "area": int(m.sum()),
                "bbox": seg["bbox"],
                "iscrowd": 0,
            }
        )
    instances = {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    refs = [
        {
            "ref_id": j,
            "ann_id": a["id"],
            "image_id": image["id"],
            "category_id": a["category_id"],
            "split": "val" if j % 2 == 0 else "train",
            "file_name": f"COCO_train2014_{image['id']:012d}_{a['id']}.jpg",
            "sent_ids": [2 * j, 2 * j + 1],
            "sentences": [
                {
                    "sent": f"object {j} left",
                    "raw": f"Object {j} left.",
                    "tokens": ["object", str(j), "left"],
                    "sent_id": 2 * j,
                },
                {"sent": f"the {j}th one", "raw": f"The {j}th one", "tokens": ["the"], "sent_id": 2 * j + 1},
            ],
        }
        for j, a in enumerate(anns)
    ]
    folder = tmp_path / "refcocog"
    folder.mkdir()
    (folder / "instances.json").write_text(json.dumps(instances))
    with open(folder / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    ds = RefCoco(folder / "refs(umd).p", folder / "instances.json", split="val")
    samples = list(ds)
    assert [s.ref_id for s in samples] == [0, 2] and len(RefCoco(refs, instances)) == 4
    for s in samples:
        seg, m = things[s.ann_id - 100]
        assert np.array_equal(s.mask(), m)
        assert s.sentences == [f"object {s.ref_id} left", f"the {s.ref_id}th one"]
        assert s.file_name == image["file_name"] and s.bbox_xyxy[2] == seg["bbox"][0] + seg["bbox"][2]
    # a refs pickle that references any global is refused (it could run code)
    bad = tmp_path / "refs(bad).p"
    bad.write_bytes(pickle.dumps([{"x": os.getcwd}]))
    with pytest.raises(pickle.UnpicklingError):
        load_refs(bad)


def test_sa1b_layout_roundtrip(tmp_path: Path, panoptic: CocoPanoptic) -> None:
    from pycocotools import mask as mask_utils

    image, things = _thing_annotations(panoptic, 142238)
    anns = []
    for i, (seg, m) in enumerate(things):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ys, xs = np.nonzero(m)
        anns.append(
            {
                "id": 1000 + i,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                "area": int(m.sum()),
                "bbox": [float(v) for v in seg["bbox"]],
                "predicted_iou": 0.9,
                "stability_score": 0.95,
                "crop_box": [0, 0, image["width"], image["height"]],
                "point_coords": [[float(xs[0]), float(ys[0])]],
            }
        )
    data = {
        "image": {"image_id": 1, "width": image["width"], "height": image["height"], "file_name": "sa_1.jpg"},
        "annotations": anns,
    }
    (tmp_path / "sa_1.json").write_text(json.dumps(data))
    s = read_sa1b(tmp_path / "sa_1.json")
    assert s.image_path == tmp_path / "sa_1.jpg" and len(s) == len(things)
    masks = s.masks()
    for (_, m), back, pt in zip(things, masks, s.point_coords_xy, strict=True):
        assert np.array_equal(m, back)
        assert back[int(pt[0, 1]), int(pt[0, 0])]  # point_coords are (x, y)
    assert np.allclose(s.boxes_xyxy[:, 2:] - s.boxes_xyxy[:, :2], [seg["bbox"][2:] for seg, _ in things])


def test_annotation_to_mask_formats() -> None:
    poly = [[2.0, 2.0, 8.0, 2.0, 8.0, 6.0, 2.0, 6.0]]
    m = annotation_to_mask(poly, 10, 12)
    assert m.shape == (10, 12) and m[3:6, 3:8].all() and not m[0].any()
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert np.array_equal(annotation_to_mask({"size": [10, 12], "counts": rle["counts"].decode()}, 10, 12), m)
    flat = m.T.reshape(-1)  # uncompressed RLE: column-major runs starting with zeros
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    assert np.array_equal(annotation_to_mask({"size": [10, 12], "counts": runs}, 10, 12), m)
    with pytest.raises(ValueError, match="size"):
        annotation_to_mask({"size": [5, 5], "counts": rle["counts"]}, 10, 12)
