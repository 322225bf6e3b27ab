"""LVIS v1 instances JSON → per-image instance masks (a COCO instances reader with LVIS' fields).

Differences from COCO handled here: images have ``coco_url`` instead of ``file_name`` (the file is
``<split folder>/<name>`` taken from the URL, e.g. ``val2017/000000397133.jpg``, the layout of the COCO image
folders LVIS reuses); annotations have no ``iscrowd`` (read as 0); images carry ``neg_category_ids`` (verified
absent) and ``not_exhaustive_category_ids`` (possibly incomplete), exposed in ``InstanceSample.extra``;
categories carry ``frequency`` (``r``/``c``/``f``) and ``synset``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seem.eval.readers.coco import CocoInstances

__all__ = ["LvisInstances"]


class LvisInstances(CocoInstances):
    """Reader of an LVIS v1 file (``lvis_v1_{train,val}.json``); ``image_root`` is the folder that holds
    ``train2017/`` and ``val2017/``. Same interface as ``CocoInstances``."""

    def _file_name(self, image: Mapping[str, Any]) -> str:
        if "file_name" in image:
            return str(image["file_name"])
        url = str(image.get("coco_url", ""))
        parts = url.rstrip("/").split("/")
        if len(parts) < 2:
            raise ValueError(f"LVIS image {image.get('id')} has neither file_name nor a usable coco_url")
        return f"{parts[-2]}/{parts[-1]}"

    def _extra(self, image: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "neg_category_ids": [int(c) for c in image.get("neg_category_ids", [])],
            "not_exhaustive_category_ids": [int(c) for c in image.get("not_exhaustive_category_ids", [])],
        }

    def frequency(self, category_id: int) -> str:
        """``"r"`` (rare), ``"c"`` (common) or ``"f"`` (frequent)."""
        return str(self.categories[int(category_id)]["frequency"])
