"""SA-1B per-image annotation JSON (``sa_<id>.json`` next to ``sa_<id>.jpg``) → masks.

Format: ``{"image": {"image_id", "width", "height", "file_name"}, "annotations": [{"id", "segmentation":
{"size": [h, w], "counts": <COCO compressed RLE string>}, "area", "bbox": [x, y, w, h], "predicted_iou",
"stability_score", "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}``. Masks are decoded with pycocotools;
boxes returned as XYXY pixels (exclusive right/bottom edge); ``point_coords`` are pixel ``(x, y)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seem.eval.readers.coco import annotation_to_mask, bbox_xywh_to_xyxy

__all__ = ["Sa1bImage", "read_sa1b"]


@dataclass
class Sa1bImage:
    """One SA-1B image: metadata, ``image_path`` (``file_name`` next to the JSON) and its annotations."""

    image_id: int
    file_name: str
    height: int
    width: int
    image_path: Path
    annotations: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.annotations)

    def masks(self) -> np.ndarray:
        """bool ``[N, H, W]``."""
        if not self.annotations:
            return np.zeros((0, self.height, self.width), bool)
        return np.stack([annotation_to_mask(a["segmentation"], self.height, self.width) for a in self.annotations])

    @property
    def boxes_xyxy(self) -> np.ndarray:
        """float32 ``[N, 4]``."""
        return np.array([bbox_xywh_to_xyxy(a["bbox"]) for a in self.annotations], np.float32).reshape(-1, 4)

    @property
    def point_coords_xy(self) -> list[np.ndarray]:
        """Per annotation, float32 ``[P, 2]`` pixel ``(x, y)`` of the point(s) that generated it."""
        return [np.asarray(a.get("point_coords", []), np.float32).reshape(-1, 2) for a in self.annotations]

    @property
    def predicted_ious(self) -> np.ndarray:
        return np.array([float(a.get("predicted_iou", np.nan)) for a in self.annotations], np.float64)


def read_sa1b(path: str | os.PathLike[str]) -> Sa1bImage:
    """Read one SA-1B annotation JSON."""
    p = Path(path)
    with open(p) as f:
        data = json.load(f)
    if "image" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not an SA-1B annotation file (needs 'image' and 'annotations')")
    im = data["image"]
    name = str(im["file_name"])
    return Sa1bImage(
        image_id=int(im["image_id"]),
        file_name=name,
        height=int(im["height"]),
        width=int(im["width"]),
        image_path=p.parent / name,
        annotations=list(data["annotations"]),
    )
