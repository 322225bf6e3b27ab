"""Training data (seem.train.data, seem.train.datasets): the sample format, adapters on the real samples in
shared/data, and LVIS / RefCOCOg / SA-1B / PACO files written in their official layouts into ``tmp_path`` from real
COCO masks; augmentation, dataset wrapper and collate."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require
from PIL import Image

from seem.eval.readers import CocoPanoptic, RefCoco, read_binary_mask
from seem.models.preprocess import normalize_and_pad
from seem.train.data import (
    Collate,
    LargeScaleJitter,
    LSJConfig,
    Sample,
    TrainDataset,
    collate,
    containment_groups,
    containment_matrix,
    crop_sample,
    hflip_sample,
    resize_sample,
    swap_left_right,
)
from seem.train.datasets import (
    BsdsSource,
    CocoPanopticSource,
    FolderSource,
    PartSource,
    RefCocoSource,
    Sa1bSource,
)

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


@pytest.fixture(scope="module")
def pan_dir() -> Path:
    return require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")


@pytest.fixture(scope="module")
def coco(pan_dir: Path) -> CocoPanopticSource:
    return CocoPanopticSource(pan_dir / "panoptic_examples.json", pan_dir / "panoptic", pan_dir / "images")


@pytest.fixture(scope="module")
def things_142238(pan_dir: Path) -> tuple[dict, list[tuple[dict, np.ndarray]]]:
    """Image 142238's entry and its non-crowd thing segments with masks (largest first)."""
    pan = CocoPanoptic(pan_dir / "panoptic_examples.json", pan_dir / "panoptic")
    s = pan.sample(142238)
    masks, _ = s.masks()
    isthing = pan.isthing
    out = [
        (seg, m) for seg, m in zip(s.segments, masks, strict=True) if isthing[seg["category_id"]] and not seg["iscrowd"]
    ]
    out.sort(key=lambda sm: -int(sm[1].sum()))
    return pan.images[142238], out


def _rle(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def _xywh(m: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


# ----------------------------------------------------------------------------------------------------------------
# the sample
# ----------------------------------------------------------------------------------------------------------------


def test_sample_validation_and_select() -> None:
    img = np.zeros((8, 10, 3), np.uint8)
    masks = np.zeros((3, 8, 10), bool)
    masks[0, :6], masks[1, :3], masks[2, 5:] = True, True, True
    s = Sample.create(img, masks, class_ids=[1, 1, 2], granularity_groups=[[0, 1], [2]], sentences=[(2, "b")])
    assert s.image.shape == (3, 8, 10) and s.part_ids.tolist() == [-1, -1, -1] and not s.ignore.any()
    sub = s.select([2, 1])
    assert sub.class_ids.tolist() == [2, 1] and sub.granularity_groups == [[1], [0]] and sub.sentences == [(0, "b")]
    assert s.boxes_xyxy().tolist()[2] == [0.0, 5.0, 10.0, 8.0]
    with pytest.raises(TypeError, match="uint8"):
        Sample.create(img.astype(np.float32), masks)
    with pytest.raises(ValueError, match="granularity group"):
        Sample.create(img, masks, granularity_groups=[[0, 3]])
    with pytest.raises(ValueError, match="masks must be"):
        Sample.create(img, masks[:, :4])
    with pytest.raises(ValueError, match="sentence"):
        Sample.create(img, masks, sentences=[(5, "x")])


def test_containment_groups_nest() -> None:
    m = np.zeros((4, 20, 20), bool)
    m[0, 2:18, 2:18] = True  # whole
    m[1, 4:12, 4:12] = True  # part of 0
    m[2, 5:8, 5:8] = True  # part of 1
    m[3, 13:17, 13:17] = True  # another part of 0
    c = containment_matrix(m)
    assert c[2, 1] == 1.0 and c[1, 2] == pytest.approx(9 / 64) and c[0, 0] == 1.0
    assert containment_groups(m) == [[0, 1, 2], [0, 3]]


# ----------------------------------------------------------------------------------------------------------------
# COCO panoptic (+ LVIS, RefCOCOg)
# ----------------------------------------------------------------------------------------------------------------


def test_coco_panoptic_classes_things_and_stuff(coco: CocoPanopticSource, pan_dir: Path) -> None:
    data = json.loads((pan_dir / "panoptic_examples.json").read_text())
    cats = {c["id"]: c for c in data["categories"]}
    assert len(coco) == 2 and len(coco.class_names) == 133 and sum(coco.thing_classes) == 80
    pan = CocoPanoptic(data, pan_dir / "panoptic")
    for i, ann in enumerate(data["annotations"]):
        s = coco[i]
        segs = [seg for seg in ann["segments_info"] if not seg["iscrowd"]]
        ids = pan.sample(ann["image_id"]).id_map()
        assert s.image_id == str(ann["image_id"]) and s.num_masks == len(segs)
        assert tuple(s.image.shape[1:]) == ids.shape
        for k, seg in enumerate(segs):
            assert coco.class_names[int(s.class_ids[k])] == cats[seg["category_id"]]["name"]
            assert bool(s.is_thing[k]) == bool(cats[seg["category_id"]]["isthing"])
            assert torch.equal(s.masks[k], torch.from_numpy(ids == seg["id"]))
        crowd = [seg["id"] for seg in ann["segments_info"] if seg["iscrowd"]]
        assert torch.equal(s.ignore, torch.from_numpy(np.isin(ids, crowd)))
        assert s.granularity_groups == [[k] for k in range(s.num_masks)]
        assert bool(s.is_thing.any()) and bool((~s.is_thing).any())  # things and stuff in both images


def test_lvis_masks_replace_coco_masks(tmp_path: Path, pan_dir: Path, things_142238) -> None:
    import cv2

    image, things = things_142238
    (_seg_a, ma), (_seg_b, mb) = things[0], things[1]
    near = cv2.dilate(ma.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # IoU with ma > 0.7
    far = np.roll(mb, 200, axis=1)  # same shape elsewhere: IoU ~ 0
    lvis = {
        "images": [
            {
                "id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "coco_url": f"http://images.cocodataset.org/val2017/{image['file_name']}",
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": image["id"],
                "category_id": 805,
                "segmentation": _rle(near),
                "area": int(near.sum()),
                "bbox": _xywh(near),
            },
            {
                "id": 2,
                "image_id": image["id"],
                "category_id": 805,
                "segmentation": _rle(far),
                "area": int(far.sum()),
                "bbox": _xywh(far),
            },
        ],
        "categories": [{"id": 805, "name": "person", "synset": "person.n.01", "frequency": "f"}],
    }
    (tmp_path / "lvis_v1_train.json").write_text(json.dumps(lvis))
    src = CocoPanopticSource(
        pan_dir / "panoptic_examples.json",
        pan_dir / "panoptic",
        pan_dir / "images",
        lvis=tmp_path / "lvis_v1_train.json",
    )
    plain = CocoPanopticSource(pan_dir / "panoptic_examples.json", pan_dir / "panoptic", pan_dir / "images")
    i = [it.image_id for it in src.items].index(image["id"])
    s, p = src[i], plain[i]
    ka = next(k for k in range(p.num_masks) if torch.equal(p.masks[k], torch.from_numpy(ma)))
    assert torch.equal(s.masks[ka], torch.from_numpy(near))  # replaced
    changed = [k for k in range(p.num_masks) if not torch.equal(p.masks[k], s.masks[k])]
    assert changed == [ka]  # the far LVIS mask replaced nothing; stuff is never touched
    other = src[1 - i]  # an image without LVIS annotations is unchanged
    assert torch.equal(other.masks, plain[1 - i].masks)
    box = CocoPanopticSource(
        pan_dir / "panoptic_examples.json",
        pan_dir / "panoptic",
        pan_dir / "images",
        lvis=tmp_path / "lvis_v1_train.json",
        lvis_match="box",
    )
    assert torch.equal(box[i].masks[ka], torch.from_numpy(near))


def test_refcocog_sentences_attach_to_segments(tmp_path: Path, pan_dir: Path, things_142238) -> None:
    image, things = things_142238
    (_seg_a, ma), (_seg_b, mb), (_seg_c, mc) = things[0], things[1], things[2]
    union = ma | mb | mc  # a "group of people": IoU < 0.5 with each person → appended as a new mask
    anns = [
        {
            "id": 100 + k,
            "image_id": image["id"],
            "category_id": 1,
            "segmentation": _rle(m),
            "area": int(m.sum()),
            "bbox": _xywh(m),
            "iscrowd": 0,
        }
        for k, m in enumerate((ma, mb, union))
    ]
    instances = {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    sents = [["the man on the left", "left person"], ["woman in red"], ["the three people"]]
    refs = [
        {
            "ref_id": k,
            "ann_id": 100 + k,
            "image_id": image["id"],
            "category_id": 1,
            "split": "train",
            "file_name": f"COCO_train2014_{image['id']:012d}_{100 + k}.jpg",
            "sent_ids": [],
            "sentences": [{"sent": t, "raw": t, "tokens": t.split(), "sent_id": 0} for t in ss],
        }
        for k, ss in enumerate(sents)
    ]
    folder = tmp_path / "refcocog"
    folder.mkdir()
    (folder / "instances.json").write_text(json.dumps(instances))
    with open(folder / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    reader = RefCoco(folder / "refs(umd).p", folder / "instances.json", split="train")
    src = CocoPanopticSource(
        pan_dir / "panoptic_examples.json",
        pan_dir / "panoptic",
        pan_dir / "images",
        refcoco=reader,
        exclude_image_ids=[439180],
    )
    assert len(src) == 1
    s = src[0]
    plain = CocoPanopticSource(pan_dir / "panoptic_examples.json", pan_dir / "panoptic", pan_dir / "images")
    n0 = plain[[it.image_id for it in plain.items].index(image["id"])].num_masks
    assert s.num_masks == n0 + 1  # the union was appended
    by_text = {t: i for i, t in s.sentences}
    assert torch.equal(s.masks[by_text["the man on the left"]], torch.from_numpy(ma))
    assert by_text["left person"] == by_text["the man on the left"]
    assert torch.equal(s.masks[by_text["woman in red"]], torch.from_numpy(mb))
    assert by_text["the three people"] == n0 and torch.equal(s.masks[n0], torch.from_numpy(union))
    assert src.class_names[int(s.class_ids[n0])] == "person" and bool(s.is_thing[n0])
    # flipping swaps left and right in the sentences, not in the classes
    f = hflip_sample(s)
    assert dict((t, i) for i, t in f.sentences)["the man on the right"] == by_text["the man on the left"]
    assert torch.equal(f.class_ids, s.class_ids) and torch.equal(f.masks[0], s.masks[0].flip(-1))
    # RefCOCOg alone
    ref_src = RefCocoSource(reader, pan_dir / "images")
    r = ref_src[0]
    assert len(ref_src) == 1 and r.num_masks == 3 and ref_src.class_names == ["person"]
    assert [t for _, t in r.sentences] == [t for ss in sents for t in ss] and r.class_ids.tolist() == [0, 0, 0]


# ----------------------------------------------------------------------------------------------------------------
# SA-1B, PACO, BSDS, user folders
# ----------------------------------------------------------------------------------------------------------------


def test_sa1b_nested_masks_form_chains(tmp_path: Path, pan_dir: Path, things_142238) -> None:
    image, things = things_142238
    people = [m for _, m in things[:3]]
    union2 = people[0] | people[1]
    everything = union2 | people[2]
    masks = [everything, people[2], union2, people[0], people[1]]
    anns = [
        {
            "id": k,
            "segmentation": _rle(m),
            "area": int(m.sum()),
            "bbox": _xywh(m),
            "predicted_iou": 0.9,
            "stability_score": 0.95,
            "crop_box": [0, 0, image["width"], image["height"]],
            "point_coords": [[1.0, 1.0]],
        }
        for k, m in enumerate(masks)
    ]
    data = {
        "image": {"image_id": 7, "width": image["width"], "height": image["height"], "file_name": "sa_7.jpg"},
        "annotations": anns,
    }
    (tmp_path / "sa_7.json").write_text(json.dumps(data))
    (tmp_path / "sa_7.jpg").symlink_to(pan_dir / "images" / image["file_name"])
    src = Sa1bSource(tmp_path)
    s = src[0]
    assert len(src) == 1 and s.image_id == "7" and s.num_masks == 5
    assert (s.class_ids == -1).all() and (s.part_ids == -1).all() and not s.is_thing.any()
    assert sorted(s.granularity_groups) == sorted([[0, 2, 3], [0, 2, 4], [0, 1]])
    for k, m in enumerate(masks):
        assert torch.equal(s.masks[k], torch.from_numpy(m))


def _paco(image: dict, people: list[np.ndarray], with_obj_ids: bool) -> dict:
    anns = []
    for k, m in enumerate(people):
        anns.append(
            {
                "id": 10 + k,
                "image_id": image["id"],
                "category_id": 1,
                "segmentation": _rle(m),
                "area": int(m.sum()),
                "bbox": _xywh(m),
                "obj_ann_id": 10 + k,
            }
        )
        rows = np.flatnonzero(m.any(1))
        mid = (rows[0] + rows[-1]) // 2
        for cat, part in (
            (2, m & (np.arange(m.shape[0])[:, None] <= mid)),
            (3, m & (np.arange(m.shape[0])[:, None] > mid)),
        ):
            if k == 1 and cat == 3:
                continue  # the second person has only an upper part
            anns.append(
                {
                    "id": 100 + 10 * k + cat,
                    "image_id": image["id"],
                    "category_id": cat,
                    "segmentation": _rle(part),
                    "area": int(part.sum()),
                    "bbox": _xywh(part),
                    "obj_ann_id": 10 + k,
                }
            )
    if not with_obj_ids:
        for a in anns:
            del a["obj_ann_id"]
    return {
        "images": [dict(image)],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "person", "supercategory": "OBJECT"},
            {"id": 2, "name": "person:upper_body", "supercategory": "PART"},
            {"id": 3, "name": "person:lower_body", "supercategory": "PART"},
        ],
    }


@pytest.mark.parametrize("with_obj_ids", [True, False])
def test_paco_objects_and_parts(tmp_path: Path, pan_dir: Path, things_142238, with_obj_ids: bool) -> None:
    image, things = things_142238
    people = [m for _, m in things[:2]]
    path = tmp_path / "paco_lvis_v1_train.json"
    path.write_text(json.dumps(_paco(image, people, with_obj_ids)))
    src = PartSource(path, pan_dir / "images")
    assert src.class_names == ["person"] and src.part_names == ["upper_body", "lower_body"]
    s = src[0]
    # annotation order: person 0, its upper, its lower, person 1, its upper
    assert s.num_masks == 5
    assert s.class_ids.tolist() == [0, 0, 0, 0, 0]  # parts carry their object's class (decoupled labels)
    assert s.part_ids.tolist() == [-1, 0, 1, -1, 0]
    assert s.granularity_groups == [[0, 1], [0, 2], [3, 4]]
    assert torch.equal(s.masks[1] | s.masks[2], s.masks[0])


def test_bsds_annotators_become_nested_granularity_chains() -> None:
    root = require(DATA_DIR / "bsds500", "BSDS500 sample")
    src = BsdsSource(root, "val")
    assert len(src) == 50
    for i in (0, 1):
        s = src[i]
        masks = s.masks.numpy()
        areas = masks.reshape(len(masks), -1).sum(1)
        c = containment_matrix(masks)
        covered = set()
        for g in s.granularity_groups:
            covered.update(g)
            for parent, child in itertools.pairwise(g):
                assert areas[parent] >= areas[child] and c[child, parent] >= src.containment
        assert covered == set(range(s.num_masks))
        assert max(len(g) for g in s.granularity_groups) >= 3  # several annotators nest
        packed = {np.packbits(m).tobytes() for m in masks}
        assert len(packed) == len(masks)  # identical segments of different annotators kept once
        assert not s.ignore.any() and (s.class_ids == -1).all()


def test_user_folder_of_label_maps_and_binary_masks(tmp_path: Path) -> None:
    import cv2

    gc = require(DATA_DIR / "grabcut", "GrabCut sample")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "b").mkdir(parents=True)
    # a: a label map with GrabCut's void band (128)
    (tmp_path / "images" / "a.jpg").symlink_to(gc / "images" / "65019.jpg")
    raw = np.array(Image.open(gc / "gt" / "65019.png"))
    Image.fromarray(raw).save(tmp_path / "masks" / "a.png")
    # b: one binary PNG per mask, an object and its eroded core (nested)
    (tmp_path / "images" / "b.jpg").symlink_to(gc / "images" / "124084.jpg")
    gt_b, _ = read_binary_mask(gc / "gt" / "124084.png")
    core = cv2.erode(gt_b.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    Image.fromarray(gt_b.astype(np.uint8) * 255).save(tmp_path / "masks" / "b" / "obj.png")
    Image.fromarray(core.astype(np.uint8) * 255).save(tmp_path / "masks" / "b" / "obj_core.png")
    (tmp_path / "images" / "c.jpg").symlink_to(gc / "images" / "153077.jpg")  # no mask: skipped
    src = FolderSource(tmp_path, class_names=["obj"], void_value=128)
    assert len(src) == 2
    a, b = src[0], src[1]
    gt_a, void_a = read_binary_mask(gc / "gt" / "65019.png")
    assert a.image_id == "a" and a.num_masks == 1 and torch.equal(a.masks[0], torch.from_numpy(gt_a))
    assert void_a is not None and torch.equal(a.ignore, torch.from_numpy(void_a)) and bool(a.ignore.any())
    assert a.class_ids.tolist() == [-1]  # label value 255 is beyond the 1-class vocabulary
    assert b.num_masks == 2 and b.class_ids.tolist() == [0, 0] and b.granularity_groups == [[0, 1]]
    assert torch.equal(b.masks[1], torch.from_numpy(core))
    assert tuple(b.image.shape[1:]) == gt_b.shape


# ----------------------------------------------------------------------------------------------------------------
# augmentation, dataset, collate
# ----------------------------------------------------------------------------------------------------------------


def test_large_scale_jitter_is_consistent_and_seeded(coco: CocoPanopticSource) -> None:
    s = coco[0]
    lsj = LargeScaleJitter(LSJConfig(image_size=256))
    a = lsj(s, np.random.default_rng(5))
    b = lsj(s, np.random.default_rng(5))
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and a.sentences == b.sentences
    assert a.height <= 256 and a.width <= 256 and bool((a.areas() >= 1).all())
    sizes = {tuple(lsj(s, np.random.default_rng(k)).image.shape) for k in range(6)}
    assert len(sizes) > 1
    # fixed scale, no flip: the cropped resize equals resizing everything then cropping
    fixed = LargeScaleJitter(LSJConfig(image_size=256, min_scale=1.5, max_scale=1.5, flip_prob=0.0, min_mask_area=0))
    out = fixed(s, np.random.default_rng(0))
    scale = min(1.5 * 256 / s.height, 1.5 * 256 / s.width)
    full = resize_sample(s, (round(s.height * scale), round(s.width * scale)))
    assert out.height == 256 and out.width == 256
    # find the crop offset by matching the image, then compare the masks exactly
    found = False
    for oy in range(full.height - 255):
        for ox in range(full.width - 255):
            if torch.equal(full.image[:, oy : oy + 256, ox : ox + 256], out.image):
                ref = crop_sample(full, oy, ox, 256, 256)
                assert torch.equal(ref.masks, out.masks) and torch.equal(ref.ignore, out.ignore)
                found = True
                break
        if found:
            break
    assert found
    # a mask cropped away is dropped, with its group
    assert out.num_masks <= s.num_masks and all(max(g) < out.num_masks for g in out.granularity_groups)


def test_swap_left_right_words() -> None:
    assert swap_left_right("Left of the right one, leftover") == "Right of the left one, leftover"
    assert swap_left_right("LEFT") == "RIGHT"


def test_dataset_wrapper_and_collate(coco: CocoPanopticSource) -> None:
    ds = TrainDataset(coco, LargeScaleJitter(LSJConfig(image_size=192)), seed=1)
    x0, x0b = ds[0], ds[0]
    assert torch.equal(x0.image, x0b.image)
    ds.set_epoch(1)
    assert not torch.equal(ds[0].masks.sum((1, 2)), x0.masks.sum((1, 2))) or ds[0].image.shape != x0.image.shape
    ds.set_epoch(0)
    batch = Collate(pad_to=192)([ds[0], ds[1]])
    assert batch.images.shape == (2, 3, 192, 192) and batch.canvas_size == (192, 192)
    assert [tuple(s.masks.shape[1:]) for s in batch.samples] == [(192, 192)] * 2
    for i, (h, w) in enumerate(batch.image_sizes):
        assert bool((batch.images[i, :, h:] == 0).all()) and bool((batch.images[i, :, :, w:] == 0).all())
        assert not batch.samples[i].masks[:, h:].any()
    norm = batch.normalized(MEAN, STD)
    for i, (h, w) in enumerate(batch.image_sizes):
        ref = normalize_and_pad(batch.images[i, :, :h, :w], MEAN, STD, size_divisibility=1)[0]
        assert torch.allclose(norm[i, :, :h, :w], ref) and bool((norm[i, :, h:] == 0).all())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=Collate(size_divisibility=32))
    (b2,) = list(loader)
    assert (
        b2.canvas_size[0] % 32 == 0
        and len(b2) == 2
        and torch.equal(b2.samples[0].image[:, : x0.height, : x0.width], x0.image)
    )
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
