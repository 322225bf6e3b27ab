"""BSDS500 ground truth: every annotator's segmentation of an image, read as one granularity level each.

Two layouts are read:

- official: ``BSDS500/data/images/<split>/<id>.jpg`` and ``BSDS500/data/groundTruth/<split>/<id>.mat``; the
  ``.mat`` holds ``groundTruth``, a 1×K MATLAB cell of structs with ``Segmentation`` (uint16 label map,
  segment ids 1..n) and ``Boundaries`` (logical) per annotator;
- converted PNGs (as in ``shared/data/bsds500``): ``images/[<split>/]<id>.jpg`` and
  ``gt/[<split>/]<id>/<k>.png``, one 16-bit label PNG per annotator ``k`` (0-based, ``.mat`` order).

Annotators split the same image at different granularity; ``coarse_to_fine`` orders them by segment count.
``segments_at`` gives, for a click, the segment containing it in every annotator's map: the GT masks of the
all-granularity metric.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Bsds500", "BsdsSample", "coarse_to_fine", "read_bsds_mat", "read_bsds_png_dir", "segments_at"]


def _struct_field(s: Any, name: str) -> np.ndarray:
    """Field of a loadmat struct element, with or without ``squeeze_me``."""
    v = s[name]
    while isinstance(v, np.ndarray) and v.dtype == object and v.size == 1:
        v = v.item()
    v = np.asarray(v)
    while v.ndim > 2 and v.shape[0] == 1:
        v = v[0]
    return v


def read_bsds_mat(
    path: str | os.PathLike[str], *, boundaries: bool = False
) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Read a BSDS500 ``groundTruth`` ``.mat`` → list of uint16 ``[H, W]`` label maps, one per annotator (file
    order); with ``boundaries=True`` also the list of bool boundary maps."""
    from scipy.io import loadmat

    m = loadmat(str(path))
    if "groundTruth" not in m:
        raise ValueError(f"{path}: no 'groundTruth' variable (not a BSDS500 ground-truth file)")
    cell = np.asarray(m["groundTruth"]).reshape(-1)
    segs, bnds = [], []
    for s in cell:
        st = s[0, 0] if isinstance(s, np.ndarray) and s.dtype.names is None and s.size == 1 else s
        if isinstance(st, np.ndarray) and st.dtype.names is None:
            st = st.item()
        segs.append(_struct_field(st, "Segmentation").astype(np.uint16))
        if boundaries:
            bnds.append(_struct_field(st, "Boundaries").astype(bool))
    return (segs, bnds) if boundaries else segs


def read_bsds_png_dir(folder: str | os.PathLike[str]) -> list[np.ndarray]:
    """Read ``<k>.png`` label maps (16-bit) of one image, ordered by annotator index ``k``."""
    from PIL import Image

    files = sorted(Path(folder).glob("*.png"), key=lambda p: int(p.stem))
    if not files:
        raise FileNotFoundError(f"{folder}: no <k>.png label maps")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append(np.array(im).astype(np.uint16))
    return out


def coarse_to_fine(label_maps: list[np.ndarray]) -> list[int]:
    """Annotator indices sorted by number of distinct segments, ascending (ties by index)."""
    counts = [len(np.unique(m)) for m in label_maps]
    return sorted(range(len(label_maps)), key=lambda i: (counts[i], i))


def segments_at(label_maps: list[np.ndarray], y: int, x: int) -> np.ndarray:
    """bool ``[K, H, W]``: for each annotator, the segment that contains pixel ``(y, x)`` (row, column)."""
    if not label_maps:
        raise ValueError("no label maps")
    h, w = label_maps[0].shape
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) outside the {h}x{w} image")
    return np.stack([m == m[y, x] for m in label_maps])


@dataclass
class BsdsSample:
    """One image: ``id``, ``image_path`` and the ground-truth source (``.mat`` file or PNG folder)."""

    id: str
    image_path: Path
    gt_path: Path

    def label_maps(self) -> list[np.ndarray]:
        """uint16 ``[H, W]`` per annotator (file order)."""
        if self.gt_path.suffix == ".mat":
            maps = read_bsds_mat(self.gt_path)
            assert isinstance(maps, list)
            return maps
        return read_bsds_png_dir(self.gt_path)


class Bsds500:
    """Reader of a BSDS500 split in either layout (see the module doc).

    Args:
        root: the folder holding ``images/`` and ``groundTruth/`` (official, i.e. ``BSDS500/data``) or ``gt/``
            (converted).
        split: ``"train"``, ``"val"``, ``"test"``, or None when the folders have no split level.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = "val") -> None:
        self.root = Path(root)
        sub = (lambda p: p / split) if split else (lambda p: p)
        img_dir = sub(self.root / "images")
        mat_dir = sub(self.root / "groundTruth")
        png_dir = sub(self.root / "gt")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir} not found")
        self.samples: list[BsdsSample] = []
        for img in sorted(img_dir.glob("*.jpg"), key=lambda p: p.stem):
            if (mat_dir / f"{img.stem}.mat").exists():
                self.samples.append(BsdsSample(img.stem, img, mat_dir / f"{img.stem}.mat"))
            elif (png_dir / img.stem).is_dir():
                self.samples.append(BsdsSample(img.stem, img, png_dir / img.stem))

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[BsdsSample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> BsdsSample:
        return self.samples[i]
