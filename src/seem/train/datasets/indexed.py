"""An instance dataset described by an ``index.json`` (the layout of ``shared/data/coco128_seg``) → ``Sample``.

``index.json`` holds ``classes`` (the vocabulary, a list of names) and ``items``; each item names its ``image`` and
``instances_png`` (paths relative to the root; a single-channel 8/16-bit PNG where 0 is no object and ``k`` is
instance ``k``) and lists ``instances`` with ``instance_id`` and ``class_name``. Every instance becomes one thing
mask with its class; nested instances form granularity chains by containment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seem.train.data import Sample, containment_groups, read_image
from seem.train.datasets.folder import _read_png

__all__ = ["IndexedInstancesSource"]


class IndexedInstancesSource:
    """``index.json`` + instance PNGs → ``Sample`` (see the module docstring).

    Args:
        root: the folder holding ``index.json``.
        index: its file name.
        containment: nesting threshold for granularity chains (0.9).
    """

    def __init__(self, root: str | os.PathLike[str], index: str = "index.json", *, containment: float = 0.9) -> None:
        self.root = Path(root)
        path = self.root / index
        if not path.is_file():
            raise FileNotFoundError(f"{root}: no {index}")
        meta = json.loads(path.read_text())
        classes = meta.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{path}: 'classes' must be a list of class names")
        self.class_names: list[str] = list(classes)
        self.part_names: list[str] = []
        self.items = [it for it in meta.get("items", []) if it.get("instances_png") and it.get("image")]
        if not self.items:
            raise FileNotFoundError(f"{path}: no item with 'image' and 'instances_png'")
        self.containment = float(containment)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        it = self.items[index]
        image = read_image(self.root / it["image"])
        h, w = int(image.shape[1]), int(image.shape[2])
        ids = _read_png(self.root / it["instances_png"])
        if ids.shape != (h, w):
            raise ValueError(f"{it['instances_png']}: mask is {ids.shape}, image {(h, w)}")
        masks: list[np.ndarray] = []
        classes: list[int] = []
        for inst in it.get("instances", []):
            m = ids == int(inst["instance_id"])
            if not m.any():
                continue
            masks.append(m)
            name = inst.get("class_name")
            classes.append(self.class_names.index(name) if name in self.class_names else -1)
        stack = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return Sample.create(
            image,
            stack,
            class_ids=np.array(classes, np.int64),
            is_thing=np.ones(len(masks), bool),
            granularity_groups=containment_groups(stack, self.containment),
            image_id=str(it.get("id", Path(it["image"]).stem)),
        )
