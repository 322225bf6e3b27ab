"""RefCOCO / RefCOCO+ / RefCOCOg (REFER layout: ``refs(<split_by>).p`` + ``instances.json``) → referring samples.

``refs(unc).p`` (RefCOCO/RefCOCO+, UNC splits), ``refs(umd).p`` (RefCOCOg, UMD splits) or
``refs(google).p`` is a Python pickle of a list of dicts: ``ref_id``, ``ann_id``, ``image_id``, ``category_id``,
``split`` (train / val / test / testA / testB), ``file_name`` and ``sentences`` (``sent``, ``raw``, ``tokens``,
``sent_id``). ``instances.json`` is COCO instances (train2014 images) holding the referred annotations.

The pickle is read with an unpickler that refuses every global (class / function) reference, so only plain
containers, strings and numbers load: an untrusted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seem.eval.readers.coco import CocoInstances, annotation_to_mask, bbox_xywh_to_xyxy

__all__ = ["RefCoco", "RefSample", "load_refs"]


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: refs files hold only plain data")


def load_refs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load a REFER ``refs(*).p`` pickle safely (plain data only; Python 2 pickles decoded as latin-1)."""
    with open(path, "rb") as f:
        data = f.read()
    refs = _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(refs, list) or (refs and not isinstance(refs[0], dict)):
        raise ValueError(f"{path}: expected a list of ref dicts, got {type(refs).__name__}")
    return refs


@dataclass
class RefSample:
    """One referred object with all its expressions.

    Attributes:
        ref_id, ann_id, image_id, category_id, split: from the refs file.
        sentences: the expressions (``sent`` of each entry), in file order.
        file_name: the COCO image file (from ``instances.json``), ``image_path`` under the image root if given.
        height, width: image size.
        bbox_xyxy: XYXY pixel box (exclusive right/bottom edge) of the referred annotation.
        segmentation: its COCO segmentation (use ``mask()``).
    """

    ref_id: int
    ann_id: int
    image_id: int
    category_id: int
    split: str
    sentences: list[str]
    file_name: str
    image_path: Path | None
    height: int
    width: int
    bbox_xyxy: tuple[float, float, float, float]
    segmentation: Any

    def mask(self) -> np.ndarray:
        """bool ``[H, W]`` mask of the referred object."""
        return annotation_to_mask(self.segmentation, self.height, self.width)


class RefCoco:
    """Reader of a REFER dataset folder's refs + instances; iterates ``RefSample`` (file order).

    Args:
        refs: path of ``refs(<split_by>).p`` or an already loaded list.
        instances: path of ``instances.json`` or the loaded dict (or a ``CocoInstances``).
        split: keep only refs of this split (e.g. ``"val"``); None keeps all.
        image_root: folder of the COCO train2014 images (optional).
    """

    def __init__(
        self,
        refs: str | os.PathLike[str] | list[dict[str, Any]],
        instances: str | os.PathLike[str] | Mapping[str, Any] | CocoInstances,
        split: str | None = None,
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.refs = refs if isinstance(refs, list) else load_refs(refs)
        self.coco = instances if isinstance(instances, CocoInstances) else CocoInstances(instances)
        self.anns = {int(a["id"]): a for a in self.coco.data["annotations"]}
        self.image_root = Path(image_root) if image_root is not None else None
        self.split = split
        self._items = [r for r in self.refs if split is None or r.get("split") == split]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[RefSample]:
        for r in self._items:
            yield self._sample(r)

    def _sample(self, r: Mapping[str, Any]) -> RefSample:
        ann_id = int(r["ann_id"])
        if ann_id not in self.anns:
            raise ValueError(f"ref {r.get('ref_id')} refers to annotation {ann_id} missing from instances")
        ann = self.anns[ann_id]
        im = self.coco.images[int(r["image_id"])]
        name = str(im["file_name"])
        return RefSample(
            ref_id=int(r["ref_id"]),
            ann_id=ann_id,
            image_id=int(r["image_id"]),
            category_id=int(r.get("category_id", ann["category_id"])),
            split=str(r.get("split", "")),
            sentences=[str(s["sent"]) for s in r.get("sentences", [])],
            file_name=name,
            image_path=self.image_root / name if self.image_root is not None else None,
            height=int(im["height"]),
            width=int(im["width"]),
            bbox_xyxy=bbox_xywh_to_xyxy(ann["bbox"]),
            segmentation=ann["segmentation"],
        )
