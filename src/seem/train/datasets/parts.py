"""Part datasets in COCO-style JSON (PACO-LVIS, PASCAL-Part conversions) → ``Sample``.

Layout (PACO): COCO / LVIS instances JSON whose ``categories`` hold objects (``"dog"``) and parts named
``"<object>:<part>"`` (``"dog:head"``); each annotation has ``obj_ann_id``: its own id for an object, the id of the
object it belongs to for a part. Files without ``obj_ann_id`` (PASCAL-Part conversions) get each part's object by
containment (the object annotation holding the largest share of the part, at least ``containment``, preferring the
object category named before the separator).

Labels are decoupled as in Semantic-SAM: ``class_ids`` is the object class for objects **and** for their parts;
``part_ids`` is the part class (index into ``part_names``, the distinct part names) for parts and -1 for objects.
Granularity chains are ``[object, part]`` for each part and ``[object]`` for an object without parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from seem.eval.readers import LvisInstances
from seem.train.data import Sample, containment_matrix, read_image

__all__ = ["PartSource"]


class PartSource:
    """Object + part annotations → ``Sample``.

    Args:
        annotations: the JSON (path or dict); images may have ``file_name`` or an LVIS ``coco_url``.
        image_root: folder the image names are relative to.
        separator: between object and part names in part category names (``":"``).
        part_category_ids: the part categories, when names do not use ``separator`` (default: by name, or
            ``supercategory == "PART"``).
        containment: minimum share of a part inside its object when ``obj_ann_id`` is missing (0.5).
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Mapping[str, Any],
        image_root: str | os.PathLike[str] | None = None,
        *,
        separator: str = ":",
        part_category_ids: Iterable[int] | None = None,
        containment: float = 0.5,
    ) -> None:
        self.coco = LvisInstances(annotations, image_root, include_empty=False)
        cats = sorted(self.coco.categories.values(), key=lambda c: int(c["id"]))
        explicit = None if part_category_ids is None else {int(i) for i in part_category_ids}

        def is_part(c: Mapping[str, Any]) -> bool:
            if explicit is not None:
                return int(c["id"]) in explicit
            return separator in str(c["name"]) or str(c.get("supercategory", "")).lower() == "part"

        self.class_names: list[str] = []
        self.part_names: list[str] = []
        self.object_index: dict[int, int] = {}
        self.part_index: dict[int, int] = {}
        self.part_object_name: dict[int, str] = {}
        for c in cats:
            name = str(c["name"])
            if is_part(c):
                obj, _, part = name.partition(separator) if separator in name else ("", "", name)
                if part not in self.part_names:
                    self.part_names.append(part)
                self.part_index[int(c["id"])] = self.part_names.index(part)
                self.part_object_name[int(c["id"])] = obj
            else:
                self.object_index[int(c["id"])] = len(self.class_names)
                self.class_names.append(name)
        self.class_by_name = {n: i for i, n in enumerate(self.class_names)}
        self.containment = float(containment)
        self.image_ids = list(self.coco.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        s = self.coco.sample(self.image_ids[index])
        if s.image_path is None:
            raise ValueError("PartSource needs an image_root")
        image = read_image(s.image_path)
        if (int(image.shape[1]), int(image.shape[2])) != (s.height, s.width):
            raise ValueError(f"image {s.image_id}: file is {tuple(image.shape[1:])}, JSON says {(s.height, s.width)}")
        all_masks = s.masks()
        crowd = s.iscrowd
        ignore = all_masks[crowd].any(0) if crowd.any() else np.zeros((s.height, s.width), bool)
        anns = [a for a, c in zip(s.annotations, crowd, strict=True) if not c]
        masks = all_masks[~crowd]
        n = len(anns)
        cat = np.array([int(a["category_id"]) for a in anns], np.int64)
        unknown = sorted({int(c) for c in cat if int(c) not in self.object_index and int(c) not in self.part_index})
        if unknown:
            raise ValueError(f"image {s.image_id}: category ids {unknown} are not in 'categories'")
        part = np.array([int(c) in self.part_index for c in cat], bool)
        parent = self._parents(anns, masks, cat, part)
        class_ids = np.full(n, -1, np.int64)
        part_ids = np.full(n, -1, np.int64)
        for i in range(n):
            if not part[i]:
                class_ids[i] = self.object_index[int(cat[i])]
                continue
            part_ids[i] = self.part_index[int(cat[i])]
            if parent[i] >= 0:
                class_ids[i] = self.object_index[int(cat[parent[i]])]
            else:
                class_ids[i] = self.class_by_name.get(self.part_object_name[int(cat[i])], -1)
        groups: list[list[int]] = []
        for i in range(n):
            if not part[i]:
                kids = [int(k) for k in np.flatnonzero(parent == i)]
                groups.extend([[i, k] for k in kids] if kids else [[i]])
            elif parent[i] < 0:
                groups.append([i])
        return Sample.create(
            image,
            masks,
            class_ids=class_ids,
            part_ids=part_ids,
            is_thing=np.ones(n, bool),
            granularity_groups=groups,
            image_id=s.image_id,
            ignore=ignore,
        )

    def _parents(self, anns: list[dict[str, Any]], masks: np.ndarray, cat: np.ndarray, part: np.ndarray) -> np.ndarray:
        """Index of each part's object annotation (-1 for objects and orphan parts)."""
        n = len(anns)
        parent = np.full(n, -1, np.int64)
        by_id = {int(a["id"]): i for i, a in enumerate(anns) if not part[i]}
        need = []
        for i, a in enumerate(anns):
            if not part[i]:
                continue
            oid = a.get("obj_ann_id")
            if oid is not None and int(oid) != int(a["id"]) and int(oid) in by_id:
                parent[i] = by_id[int(oid)]
            else:
                need.append(i)
        objects = np.flatnonzero(~part)
        if need and objects.size:
            c = containment_matrix(masks)
            for i in need:
                share = c[i, objects]
                same = np.array(
                    [
                        self.class_names[self.object_index[int(cat[o])]] == self.part_object_name[int(cat[i])]
                        for o in objects
                    ]
                )
                score = share + same.astype(np.float64)  # same-named objects first, then the largest share
                j = int(np.argmax(score))
                if share[j] >= self.containment:
                    parent[i] = int(objects[j])
        return parent
