"""A user's own data: ``images/<name>.<ext>`` with ``masks/<name>.png`` (a label map) or ``masks/<name>/*.png``
(one binary mask per file) → ``Sample``.

Label maps: every distinct value except 0 (background) and ``void_value`` becomes one mask (ascending value);
with ``class_names`` the value ``v`` is class ``v - 1``. 8- and 16-bit PNGs work (read with Pillow).
Binary folders: each file (sorted by name) is one mask (non-zero, non-void pixels); with ``class_names`` a file
named ``<class>.png`` or ``<class>_<anything>.png`` gets that class. Pixels equal to ``void_value`` go to
``Sample.ignore``. Nested masks form granularity chains by containment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seem.eval.readers import read_binary_mask
from seem.train.data import Sample, containment_groups, read_image

__all__ = ["FolderSource"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.array(im)
    if a.ndim == 3:
        if not all(np.array_equal(a[..., 0], a[..., k]) for k in range(1, a.shape[2])):
            raise ValueError(f"{path}: colour mask; expected a single-channel label map or binary mask")
        a = a[..., 0]
    return a


class FolderSource:
    """Images + masks folder → ``Sample`` (see the module docstring).

    Args:
        root: folder holding ``images`` and ``masks``.
        images, masks: sub-folder names.
        class_names: optional vocabulary (label value ``v`` → class ``v - 1``; binary files by name).
        void_value: stored value meaning "no label" (e.g. 255 for VOC-style maps, 128 for GrabCut); None = none.
        single_class: every mask is this class (a one-class figure/ground dataset such as Weizmann horses);
            replaces ``class_names``.
        containment: nesting threshold for granularity chains (0.9).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        images: str = "images",
        masks: str = "masks",
        *,
        class_names: Sequence[str] | None = None,
        void_value: int | None = None,
        single_class: str | None = None,
        containment: float = 0.9,
    ) -> None:
        self.root = Path(root)
        # names relative to root; an absolute path, or one that already starts with root, is taken as it is
        img_dir, mask_dir = (self._under_root(Path(p)) for p in (images, masks))
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(f"{root}: expected folders {images}/ and {masks}/")
        self.items: list[tuple[str, Path, Path]] = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in _IMAGE_EXTS:
                continue
            if (mask_dir / f"{p.stem}.png").is_file():
                self.items.append((p.stem, p, mask_dir / f"{p.stem}.png"))
            elif (mask_dir / p.stem).is_dir():
                self.items.append((p.stem, p, mask_dir / p.stem))
        if not self.items:
            raise FileNotFoundError(f"{root}: no image in {images}/ has a mask in {masks}/")
        if single_class is not None and class_names:
            raise ValueError("give class_names or single_class, not both")
        self.single_class = single_class
        self.class_names: list[str] = [single_class] if single_class is not None else list(class_names or [])
        self.part_names: list[str] = []
        self.void_value = void_value
        self.containment = float(containment)

    def _under_root(self, p: Path) -> Path:
        if p.is_absolute() or (p.parts[: len(self.root.parts)] == self.root.parts and len(self.root.parts) > 0):
            return p
        return self.root / p

    def __len__(self) -> int:
        return len(self.items)

    def _class_of(self, stem: str) -> int:
        if not self.class_names:
            return -1
        for key in (stem, stem.rsplit("_", 1)[0]):
            if key in self.class_names:
                return self.class_names.index(key)
        return -1

    def __getitem__(self, index: int) -> Sample:
        stem, img_path, mask_path = self.items[index]
        image = read_image(img_path)
        h, w = int(image.shape[1]), int(image.shape[2])
        ignore = np.zeros((h, w), bool)
        masks: list[np.ndarray] = []
        classes: list[int] = []
        if mask_path.is_file():
            lm = _read_png(mask_path)
            if lm.shape != (h, w):
                raise ValueError(f"{mask_path}: mask is {lm.shape}, image {(h, w)}")
            if self.void_value is not None:
                ignore = lm == self.void_value
            for v in np.unique(lm):
                if v == 0 or (self.void_value is not None and v == self.void_value):
                    continue
                masks.append(lm == v)
                k = 0 if self.single_class is not None else int(v) - 1
                classes.append(k if self.class_names and k < len(self.class_names) else -1)
        else:
            for f in sorted(mask_path.glob("*.png")):
                gt, void = read_binary_mask(f, void_value=self.void_value)
                if gt.shape != (h, w):
                    raise ValueError(f"{f}: mask is {gt.shape}, image {(h, w)}")
                if void is not None:
                    ignore |= void
                masks.append(gt)
                classes.append(0 if self.single_class is not None else self._class_of(f.stem))
        stack = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return Sample.create(
            image,
            stack,
            class_ids=np.array(classes, np.int64),
            granularity_groups=containment_groups(stack, self.containment),
            image_id=stem,
            ignore=ignore,
        )
