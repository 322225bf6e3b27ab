"""DAVIS folder layout (2016 / 2017, optional resolution level) and DAVIS-interactive scribble JSON.

Layout::

    root/JPEGImages[/<resolution>]/<sequence>/<frame>.jpg
    root/Annotations[/<resolution>]/<sequence>/<frame>.png      L (2016: 0/255) or palette P (2017: ids)
    root/ImageSets/<year>/<set>.txt                              optional sequence lists
    root/Scribbles/<sequence>/<NNN>.json                         DAVIS-interactive scribbles

Mask values: DAVIS-2016 masks hold one object as 255 (``single_object=True``: every non-zero pixel is the
object, no void); DAVIS-2017 palette masks hold object ids 1..K and 255 = void (``single_object=False``, the
default; the official evaluation takes objects 1..max id, void = 255). Read PNGs with Pillow so palette
indices stay indices.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DavisDataset", "DavisScribbles", "ScribbleStroke", "read_davis_labels", "read_scribbles", "split_objects"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def read_davis_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an annotation PNG → uint8 ``[H, W]`` stored values (palette indices for P images)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "1"):
            raise ValueError(f"{path}: expected an L or palette PNG, got mode {im.mode}")
        return np.array(im).astype(np.uint8)


def split_objects(
    labels: np.ndarray, *, single_object: bool = False, void_value: int | None = 255, num_objects: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Label map ``[H, W]`` → ``(masks bool [K, H, W], object_ids int64 [K], void bool [H, W] | None)``.

    ``single_object``: DAVIS-2016, K = 1, the object is every non-zero pixel, no void. Otherwise object ids are
    1..``num_objects`` (default: the largest id present, excluding ``void_value``), so an object absent from
    this frame gives an empty mask, as the official evaluation does.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be [H, W], got {lab.shape}")
    if single_object:
        return (lab > 0)[None], np.array([1], np.int64), None
    void = (lab == void_value) if void_value is not None else None
    ids = lab.astype(np.int64)
    if void is not None:
        ids = np.where(void, 0, ids)
    k = int(ids.max(initial=0)) if num_objects is None else int(num_objects)
    obj = np.arange(1, k + 1, dtype=np.int64)
    return ids[None] == obj[:, None, None], obj, void


class DavisDataset:
    """Reader of a DAVIS folder.

    Args:
        root: the dataset root (holding ``JPEGImages`` / ``Annotations``).
        resolution: the resolution level (``"480p"``, ``"Full-Resolution"``); None = auto: ``480p`` when that
            folder exists, else none.
        image_set: e.g. ``"2017/val"`` reads ``ImageSets/2017/val.txt``; None = every sequence folder found.
        single_object: DAVIS-2016 masks (see ``split_objects``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: str | None = None,
        image_set: str | None = None,
        *,
        single_object: bool = False,
    ) -> None:
        self.root = Path(root)
        if not (self.root / "Annotations").is_dir() and not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"{root}: no Annotations/ or JPEGImages/ folder (not a DAVIS root)")
        if resolution is None and (
            (self.root / "Annotations" / "480p").is_dir() or (self.root / "JPEGImages" / "480p").is_dir()
        ):
            resolution = "480p"
        self.resolution = resolution
        self.single_object = single_object
        if image_set is not None:
            lst = self.root / "ImageSets" / f"{image_set}.txt"
            self.sequences = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
        else:
            found: set[str] = set()
            for d in (self._dir("Annotations"), self._dir("JPEGImages")):
                if d.is_dir():
                    found.update(p.name for p in d.iterdir() if p.is_dir())
            self.sequences = sorted(found)

    def _dir(self, kind: str) -> Path:
        d = self.root / kind
        return d / self.resolution if self.resolution else d

    def frames(self, sequence: str) -> list[str]:
        """Frame names (file stems, sorted) of ``sequence``: from ``JPEGImages`` when present, else from
        ``Annotations``."""
        img_dir = self._dir("JPEGImages") / sequence
        if img_dir.is_dir():
            names = [p.stem for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS]
        else:
            names = [p.stem for p in (self._dir("Annotations") / sequence).glob("*.png")]
        return sorted(names)

    def annotated_frames(self, sequence: str) -> list[str]:
        """Frame names that have an annotation PNG."""
        return sorted(p.stem for p in (self._dir("Annotations") / sequence).glob("*.png"))

    def image_path(self, sequence: str, frame: str) -> Path:
        d = self._dir("JPEGImages") / sequence
        for ext in _IMAGE_EXTS:
            p = d / f"{frame}{ext}"
            if p.exists():
                return p
        raise FileNotFoundError(f"no image for {sequence}/{frame} in {d}")

    def mask_path(self, sequence: str, frame: str) -> Path:
        return self._dir("Annotations") / sequence / f"{frame}.png"

    def labels(self, sequence: str, frame: str) -> np.ndarray:
        """uint8 ``[H, W]`` stored label values of one frame."""
        return read_davis_labels(self.mask_path(sequence, frame))

    def objects(
        self, sequence: str, frame: str, num_objects: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(masks bool [K, H, W], object_ids, void | None)`` of one frame (see ``split_objects``)."""
        return split_objects(self.labels(sequence, frame), single_object=self.single_object, num_objects=num_objects)

    def sequence_labels(self, sequence: str, frames: list[str] | None = None) -> np.ndarray:
        """uint8 ``[T, H, W]`` label maps of the given (default: annotated) frames."""
        names = self.annotated_frames(sequence) if frames is None else frames
        return np.stack([self.labels(sequence, f) for f in names])


@dataclass(frozen=True)
class ScribbleStroke:
    """One scribble stroke: ``object_id`` and ``path`` float64 ``[N, 2]`` normalised ``(x, y)`` in 0..1 (x by
    width, y by height), plus its timing fields when present."""

    object_id: int
    path: np.ndarray
    start_time: float | None = None
    end_time: float | None = None

    def path_xy(self, height: int, width: int) -> np.ndarray:
        """The path in pixel ``(x, y)`` as davis-interactive maps it: ``x · (W − 1)``, ``y · (H − 1)``."""
        return self.path * np.array([width - 1, height - 1], np.float64)


@dataclass(frozen=True)
class DavisScribbles:
    """A DAVIS-interactive scribble file: ``sequence`` and, per frame, the list of strokes."""

    sequence: str | None
    frames: tuple[tuple[ScribbleStroke, ...], ...]

    def annotated_frames(self) -> list[int]:
        return [i for i, s in enumerate(self.frames) if s]

    def to_mask(self, frame: int, height: int, width: int, *, default: int = -1) -> np.ndarray:
        """int16 ``[H, W]``: the object id of the stroke through each pixel, ``default`` elsewhere.

        Each stroke is drawn as a 1-px 8-connected polyline through its vertices rounded to pixels (the
        davis-interactive ``scribbles2mask`` rule with Bresenham lines); later strokes overwrite earlier ones.
        """
        import cv2

        out = np.full((height, width), default, np.int16)
        for st in self.frames[frame]:
            pts = np.round(st.path_xy(height, width)).astype(np.int32).reshape(-1, 1, 2)
            canvas = np.zeros((height, width), np.uint8)
            cv2.polylines(canvas, [pts], False, 1, thickness=1, lineType=cv2.LINE_8)
            out[canvas > 0] = st.object_id
        return out


def read_scribbles(path: str | os.PathLike[str]) -> DavisScribbles:
    """Read a DAVIS-interactive scribble JSON ``{"sequence", "scribbles": [per frame: [{"path", "object_id",
    "start_time", "end_time"}]]}``."""
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    if "scribbles" not in data:
        raise ValueError(f"{path}: not a DAVIS scribble file (no 'scribbles')")
    frames = []
    for per_frame in data["scribbles"]:
        strokes = []
        for s in per_frame:
            p = np.asarray(s["path"], np.float64).reshape(-1, 2)
            strokes.append(ScribbleStroke(int(s["object_id"]), p, s.get("start_time"), s.get("end_time")))
        frames.append(tuple(strokes))
    return DavisScribbles(data.get("sequence"), tuple(frames))
