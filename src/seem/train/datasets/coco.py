"""COCO panoptic (+ LVIS masks, + RefCOCOg sentences) and RefCOCO adapters → ``Sample``.

SEEM's training set is COCO panoptic train2017 without the RefCOCOg-val images, where

* a thing mask is replaced by the LVIS mask of the same object when their mask IoU exceeds 0.7 (the SEEM
  supplementary; the official mapper compares *boxes* with IoU > 0.7 — ``lvis_match="box"`` reproduces that), and
* RefCOCOg (UMD) sentences are attached to the panoptic segment of the referred object (mask IoU ≥ 0.5; a referred
  object with no such segment is appended as a new mask).

Crowd segments are not targets (the official mapper drops them); their pixels go to ``Sample.ignore``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seem.eval.readers import CocoPanoptic, LvisInstances, PanopticSample, RefCoco, RefSample
from seem.train.data import Sample, mask_iou_matrix, read_image

__all__ = ["CocoPanopticSource", "RefCocoSource"]


def _check_size(image: torch.Tensor, h: int, w: int, what: str) -> None:
    if (int(image.shape[1]), int(image.shape[2])) != (h, w):
        raise ValueError(f"{what}: image is {tuple(image.shape[1:])} but the annotation is {(h, w)}")


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    n = masks.shape[0]
    out = np.zeros((n, 4), np.float64)
    for i in range(n):
        rows, cols = np.flatnonzero(masks[i].any(1)), np.flatnonzero(masks[i].any(0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class CocoPanopticSource:
    """COCO panoptic → ``Sample`` (classes = the panoptic categories in file order; things / stuff from
    ``isthing``; one singleton granularity group per segment).

    Args:
        annotations: panoptic JSON (path or dict) with ``images`` and ``categories``.
        png_root: folder of the panoptic id PNGs.
        image_root: folder of the images.
        lvis: LVIS instances (``LvisInstances``, a path or a dict) whose masks replace matching thing masks.
        lvis_threshold: IoU above which the LVIS mask replaces the COCO one (0.7).
        lvis_match: ``"mask"`` (mask IoU, the paper) or ``"box"`` (tight-box IoU, the official code).
        refcoco: a ``RefCoco`` reader (e.g. RefCOCOg UMD train) whose sentences are attached.
        refcoco_threshold: minimum mask IoU between the referred object and a segment to share it (0.5).
        exclude_image_ids: images to leave out (e.g. the RefCOCOg val images).
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Mapping[str, Any],
        png_root: str | os.PathLike[str],
        image_root: str | os.PathLike[str],
        *,
        lvis: LvisInstances | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        lvis_threshold: float = 0.7,
        lvis_match: str = "mask",
        refcoco: RefCoco | None = None,
        refcoco_threshold: float = 0.5,
        exclude_image_ids: Iterable[int] = (),
    ) -> None:
        if lvis_match not in ("mask", "box"):
            raise ValueError(f"lvis_match must be 'mask' or 'box', got {lvis_match!r}")
        self.panoptic = CocoPanoptic(annotations, png_root, image_root)
        cats = list(self.panoptic.data.get("categories", []))
        if not cats:
            raise ValueError("the panoptic file has no 'categories' (needed for class names and isthing)")
        self.class_names: list[str] = [str(c["name"]) for c in cats]
        self.part_names: list[str] = []
        self.thing_classes: list[bool] = [bool(c.get("isthing", 0)) for c in cats]
        self.category_index: dict[int, int] = {int(c["id"]): i for i, c in enumerate(cats)}
        excluded = {int(i) for i in exclude_image_ids}
        self.items: list[PanopticSample] = [s for s in self.panoptic if s.image_id not in excluded]
        if lvis is None or isinstance(lvis, LvisInstances):
            self.lvis = lvis
        else:
            self.lvis = LvisInstances(lvis)
        self.lvis_threshold = float(lvis_threshold)
        self.lvis_match = lvis_match
        self.refs: dict[int, list[RefSample]] = {}
        if refcoco is not None:
            for r in refcoco:
                self.refs.setdefault(r.image_id, []).append(r)
        self.refcoco_threshold = float(refcoco_threshold)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        ps = self.items[index]
        if ps.image_path is None:
            raise ValueError(f"image {ps.image_id} has no entry in 'images' (file name unknown)")
        image = read_image(ps.image_path)
        all_masks, cats = ps.masks()
        h, w = all_masks.shape[1:] if all_masks.ndim == 3 else (image.shape[1], image.shape[2])
        _check_size(image, int(h), int(w), f"COCO panoptic image {ps.image_id}")
        crowd = np.array([bool(s.get("iscrowd", 0)) for s in ps.segments], bool)
        ignore = all_masks[crowd].any(0) if crowd.any() else np.zeros((h, w), bool)
        masks = all_masks[~crowd]
        cats = cats[~crowd]
        unknown = [int(c) for c in cats if int(c) not in self.category_index]
        if unknown:
            raise ValueError(f"image {ps.image_id}: category ids {unknown} are not in 'categories'")
        class_ids = np.array([self.category_index[int(c)] for c in cats], np.int64)
        is_thing = np.array([self.thing_classes[i] for i in class_ids], bool)
        if self.lvis is not None:
            masks = self._swap_lvis(ps.image_id, masks, is_thing)
        sentences: list[tuple[int, str]] = []
        for r in self.refs.get(ps.image_id, []):
            masks, class_ids, is_thing, idx = self._attach_ref(r, masks, class_ids, is_thing)
            sentences.extend((idx, s) for s in r.sentences)
        return Sample.create(
            image,
            masks,
            class_ids=class_ids,
            is_thing=is_thing,
            sentences=sentences,
            image_id=ps.image_id,
            ignore=ignore,
        )

    def _swap_lvis(self, image_id: int, masks: np.ndarray, is_thing: np.ndarray) -> np.ndarray:
        assert self.lvis is not None
        if image_id not in self.lvis.images or not is_thing.any():
            return masks
        lm = self.lvis.sample(image_id).masks()
        if lm.shape[0] == 0:
            return masks
        if lm.shape[1:] != masks.shape[1:]:
            raise ValueError(f"image {image_id}: LVIS masks are {lm.shape[1:]}, panoptic {masks.shape[1:]}")
        things = np.flatnonzero(is_thing)
        if self.lvis_match == "mask":
            iou = mask_iou_matrix(masks[things], lm)
        else:
            iou = _box_iou(_tight_boxes(masks[things]), _tight_boxes(lm))
        best = iou.argmax(1)
        ok = iou.max(1) > self.lvis_threshold
        out = masks.copy()
        out[things[ok]] = lm[best[ok]]
        return out

    def _attach_ref(
        self, ref: RefSample, masks: np.ndarray, class_ids: np.ndarray, is_thing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        rm = ref.mask()
        if rm.shape != masks.shape[1:]:
            raise ValueError(f"ref {ref.ref_id}: mask {rm.shape} does not match image {masks.shape[1:]}")
        if masks.shape[0]:
            iou = mask_iou_matrix(rm[None], masks)[0]
            j = int(iou.argmax())
            if iou[j] >= self.refcoco_threshold:
                return masks, class_ids, is_thing, j
        cls = self.category_index.get(int(ref.category_id), -1)
        masks = np.concatenate([masks, rm[None]], 0)
        class_ids = np.append(class_ids, cls)
        is_thing = np.append(is_thing, True)
        return masks, class_ids, is_thing, masks.shape[0] - 1


class RefCocoSource:
    """RefCOCO / RefCOCO+ / RefCOCOg alone: one ``Sample`` per image with its referred objects (one mask per
    annotation) and all their sentences. Classes are the ``instances.json`` categories sorted by id.

    Args:
        refcoco: a ``RefCoco`` reader (choose the split there).
        image_root: folder of the COCO images (default: the reader's ``image_root``).
    """

    def __init__(self, refcoco: RefCoco, image_root: str | os.PathLike[str] | None = None) -> None:
        self.refcoco = refcoco
        cats = sorted(refcoco.coco.categories.values(), key=lambda c: int(c["id"]))
        self.class_names: list[str] = [str(c["name"]) for c in cats]
        self.part_names: list[str] = []
        self.category_index = {int(c["id"]): i for i, c in enumerate(cats)}
        self.image_root = Path(image_root) if image_root is not None else refcoco.image_root
        self.by_image: dict[int, list[RefSample]] = {}
        for r in refcoco:
            self.by_image.setdefault(r.image_id, []).append(r)
        self.image_ids = list(self.by_image)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        refs = self.by_image[self.image_ids[index]]
        first = refs[0]
        if self.image_root is None:
            raise ValueError("RefCocoSource needs an image_root (here or in the RefCoco reader)")
        image = read_image(self.image_root / first.file_name)
        _check_size(image, first.height, first.width, f"RefCOCO image {first.image_id}")
        ann_index: dict[int, int] = {}
        masks: list[np.ndarray] = []
        class_ids: list[int] = []
        sentences: list[tuple[int, str]] = []
        for r in refs:
            if r.ann_id not in ann_index:
                ann_index[r.ann_id] = len(masks)
                masks.append(r.mask())
                class_ids.append(self.category_index.get(int(r.category_id), -1))
            sentences.extend((ann_index[r.ann_id], s) for s in r.sentences)
        n = len(masks)
        return Sample.create(
            image,
            np.stack(masks),
            class_ids=np.array(class_ids, np.int64),
            is_thing=np.ones(n, bool),
            sentences=sentences,
            image_id=first.image_id,
        )
