"""COCO panoptic format (JSON + RGB id PNGs, and the 2-channel PNG variant) → segment-id maps.

Layout (``panoptic_<split>.json`` + ``panoptic_<split>/``): ``annotations[]`` with ``image_id``, ``file_name``
(the PNG) and ``segments_info[]`` (id, category_id, iscrowd, area, bbox ``[x, y, w, h]``); ``categories[]`` with
``isthing``. In the PNG, segment id = R + 256·G + 256²·B and 0 = unlabelled / void. A prediction file may hold
only ``annotations`` (panopticapi accepts that), which this reader also reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CocoPanoptic", "PanopticSample", "id_to_rgb", "read_panoptic_png", "read_two_channel_png", "rgb_to_id"]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` → int64 ``[H, W]`` segment ids (R + 256·G + 256²·B)."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB array [H, W, 3], got shape {a.shape}")
    a = a.astype(np.int64)
    return a[..., 0] + 256 * a[..., 1] + 256 * 256 * a[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """int ``[H, W]`` segment ids (< 256³) → uint8 ``[H, W, 3]``."""
    a = np.asarray(ids, np.int64)
    if a.min(initial=0) < 0 or a.max(initial=0) >= 256**3:
        raise ValueError("segment ids must lie in 0..256^3-1")
    return np.stack([a % 256, (a // 256) % 256, a // (256 * 256)], -1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an RGB panoptic PNG → int64 ``[H, W]`` segment-id map."""
    from PIL import Image

    with Image.open(path) as im:
        return rgb_to_id(np.array(im.convert("RGB")))


def read_two_channel_png(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2-channel panoptic PNG (R = category id, G = instance id; category 0 = void) → ``(category,
    instance)`` int64 ``[H, W]`` maps (panopticapi ``converters/2channels2panoptic_coco_format.py``)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.array(im.convert("RGB")).astype(np.int64)
    return a[..., 0], a[..., 1]


@dataclass
class PanopticSample:
    """One panoptic annotation: ``segments`` are the ``segments_info`` dicts (file order); ``png_path`` the id
    PNG; ``height``/``width`` from ``images`` when the file has them (else None); ``image_path`` when an image
    root was given."""

    image_id: int
    file_name: str
    png_path: Path
    segments: list[dict[str, Any]]
    height: int | None = None
    width: int | None = None
    image_path: Path | None = None

    def id_map(self) -> np.ndarray:
        """int64 ``[H, W]`` segment ids (0 = void)."""
        return read_panoptic_png(self.png_path)

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """``(masks bool [N, H, W], category_ids int64 [N])`` for the listed segments, in list order."""
        ids = self.id_map()
        seg_ids = np.array([int(s["id"]) for s in self.segments], np.int64)
        cats = np.array([int(s["category_id"]) for s in self.segments], np.int64)
        return ids[None] == seg_ids[:, None, None], cats


class CocoPanoptic:
    """Reader of a COCO panoptic JSON and its PNG folder; iterates ``PanopticSample`` in annotation order.

    Args:
        annotations: JSON path or loaded dict.
        png_root: folder with the id PNGs (``file_name`` of each annotation).
        image_root: folder of the images (optional; names from ``images[].file_name``).
    """

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Mapping[str, Any],
        png_root: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(annotations, Mapping):
            data = dict(annotations)
        else:
            with open(annotations) as f:
                data = json.load(f)
        if "annotations" not in data:
            raise ValueError("not a COCO panoptic file: no 'annotations' entry")
        self.data = data
        self.png_root = Path(png_root)
        self.image_root = Path(image_root) if image_root is not None else None
        self.categories: dict[int, dict[str, Any]] = {int(c["id"]): c for c in data.get("categories", [])}
        self.images: dict[int, dict[str, Any]] = {int(im["id"]): im for im in data.get("images", [])}
        self.annotations: list[dict[str, Any]] = list(data["annotations"])

    @property
    def isthing(self) -> dict[int, bool]:
        """category id → isthing."""
        return {k: bool(c.get("isthing", 0)) for k, c in self.categories.items()}

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self) -> Iterator[PanopticSample]:
        for a in self.annotations:
            yield self._sample(a)

    def sample(self, image_id: int) -> PanopticSample:
        for a in self.annotations:
            if int(a["image_id"]) == int(image_id):
                return self._sample(a)
        raise KeyError(f"no panoptic annotation for image {image_id}")

    def _sample(self, a: Mapping[str, Any]) -> PanopticSample:
        iid = int(a["image_id"])
        im = self.images.get(iid, {})
        return PanopticSample(
            image_id=iid,
            file_name=str(a["file_name"]),
            png_path=self.png_root / str(a["file_name"]),
            segments=[dict(s) for s in a["segments_info"]],
            height=int(im["height"]) if "height" in im else None,
            width=int(im["width"]) if "width" in im else None,
            image_path=self.image_root / str(im["file_name"]) if self.image_root is not None and im else None,
        )
