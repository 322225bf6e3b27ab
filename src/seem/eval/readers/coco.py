"""COCO instances JSON (polygons, compressed or uncompressed RLE) → per-image instance masks.

Layout (the official ``annotations/instances_<split>.json``): ``images`` (id, file_name, height, width),
``annotations`` (id, image_id, category_id, segmentation, area, bbox ``[x, y, w, h]``, iscrowd), ``categories``
(id, name, supercategory). Masks are decoded with pycocotools. Boxes are returned as XYXY pixels with an
exclusive right/bottom edge (``x + w``, ``y + h``), the convention of the prompt API.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CocoInstances", "InstanceSample", "annotation_to_mask", "bbox_xywh_to_xyxy"]


def bbox_xywh_to_xyxy(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` → XYXY ``(x, y, x + w, y + h)`` in pixels."""
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def annotation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one COCO ``segmentation`` to a bool ``[height, width]`` mask.

    Accepts polygons (list of flat ``[x0, y0, x1, y1, ...]`` lists, pixel coordinates, several parts are
    merged), compressed RLE (``{"size": [h, w], "counts": str|bytes}``) and uncompressed RLE (``counts`` a list
    of ints), as ``pycocotools.coco.COCO.annToMask`` does.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if len(segmentation) == 0:
            return np.zeros((height, width), bool)
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, Mapping) and "counts" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(dict(segmentation), height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise TypeError(f"unsupported segmentation type {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools 2.0.x on numpy 2 warns about __array__(copy=...) internally
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


@dataclass
class InstanceSample:
    """One image and its instance annotations.

    Attributes:
        image_id, file_name, height, width: from ``images``.
        image_path: ``image_root / file_name`` when the reader was given an image root, else None.
        annotations: the raw annotation dicts of this image, in file order.
        extra: format-specific image fields (e.g. LVIS' ``neg_category_ids``).
    """

    image_id: int
    file_name: str
    height: int
    width: int
    image_path: Path | None
    annotations: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def category_ids(self) -> np.ndarray:
        """int64 ``[N]``."""
        return np.array([int(a["category_id"]) for a in self.annotations], np.int64)

    @property
    def ann_ids(self) -> np.ndarray:
        """int64 ``[N]``."""
        return np.array([int(a["id"]) for a in self.annotations], np.int64)

    @property
    def iscrowd(self) -> np.ndarray:
        """bool ``[N]`` (missing = 0, as in LVIS)."""
        return np.array([bool(a.get("iscrowd", 0)) for a in self.annotations], bool)

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """float32 ``[N, 4]`` XYXY pixel boxes (exclusive right/bottom edge) from ``bbox``."""
        b = [bbox_xywh_to_xyxy(a["bbox"]) for a in self.annotations]
        return np.array(b, np.float32).reshape(-1, 4)

    def mask(self, index: int) -> np.ndarray:
        """bool ``[H, W]`` mask of annotation ``index``."""
        return annotation_to_mask(self.annotations[index]["segmentation"], self.height, self.width)

    def masks(self) -> np.ndarray:
        """bool ``[N, H, W]`` masks of all annotations."""
        if not self.annotations:
            return np.zeros((0, self.height, self.width), bool)
        return np.stack([self.mask(i) for i in range(len(self.annotations))])


class CocoInstances:
    """Reader of a COCO instances file; iterates ``InstanceSample`` in the order of ``images``.

    Args:
        annotations: path of the JSON file, or the already loaded dict.
        image_root: folder the ``file_name`` entries are relative to (optional).
        include_empty: also yield images without annotations (default True).
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Mapping[str, Any],
        image_root: str | os.PathLike[str] | None = None,
        *,
        include_empty: bool = True,
    ) -> None:
        if isinstance(annotations, Mapping):
            data = dict(annotations)
        else:
            with open(annotations) as f:
                data = json.load(f)
        for key in ("images", "annotations"):
            if key not in data:
                raise ValueError(f"not a COCO instances file: no {key!r} entry")
        self.data = data
        self.image_root = Path(image_root) if image_root is not None else None
        self.categories: dict[int, dict[str, Any]] = {int(c["id"]): c for c in data.get("categories", [])}
        self.images: dict[int, dict[str, Any]] = {int(im["id"]): im for im in data["images"]}
        self.anns_by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in self.images}
        for a in data["annotations"]:
            iid = int(a["image_id"])
            if iid not in self.anns_by_image:
                raise ValueError(f"annotation {a.get('id')} refers to unknown image {iid}")
            self.anns_by_image[iid].append(a)
        self.image_ids = [i for i in self.images if include_empty or self.anns_by_image[i]]

    def _file_name(self, image: Mapping[str, Any]) -> str:
        return str(image["file_name"])

    def _extra(self, image: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[InstanceSample]:
        for i in self.image_ids:
            yield self.sample(i)

    def sample(self, image_id: int) -> InstanceSample:
        im = self.images[int(image_id)]
        name = self._file_name(im)
        return InstanceSample(
            image_id=int(image_id),
            file_name=name,
            height=int(im["height"]),
            width=int(im["width"]),
            image_path=self.image_root / name if self.image_root is not None else None,
            annotations=list(self.anns_by_image[int(image_id)]),
            extra=self._extra(im),
        )
