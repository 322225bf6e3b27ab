"""GrabCut / Berkeley style datasets: an image folder and a mask folder of single-channel PNG (or BMP) masks
paired by file stem, with an optional void value.

GrabCut: 0 = background, 255 = object, 128 = void (a thin band along the boundary; left out of IoU).
Berkeley (RITM's copy): 0 / 255, no void. Masks stored as RGB with equal channels are read from the first
channel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BinaryMaskDataset", "BinarySample", "read_binary_mask"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_binary_mask(
    path: str | os.PathLike[str], *, void_value: int | None = 128, fg_value: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a mask file → ``(gt bool [H, W], void bool [H, W] | None)``.

    ``void_value``: the stored value meaning "ignore" (None = no void). ``fg_value``: the stored object value;
    None = every non-zero, non-void pixel is object. ``void`` is None when ``void_value`` is None.
    """
    from PIL import Image

    with Image.open(path) as im:
        a = np.array(im)
    if a.ndim == 3:
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise ValueError(f"{path}: colour mask with different channels; expected a single-channel mask")
        a = a[..., 0]
    void = (a == void_value) if void_value is not None else None
    gt = (a == fg_value) if fg_value is not None else (a != 0)
    if void is not None:
        gt &= ~void
    return gt, void


@dataclass
class BinarySample:
    """One object: ``id`` (file stem), ``image_path``, ``mask_path``; masks via ``read()``."""

    id: str
    image_path: Path
    mask_path: Path
    void_value: int | None
    fg_value: int | None

    def read(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(gt, void)`` as ``read_binary_mask``."""
        return read_binary_mask(self.mask_path, void_value=self.void_value, fg_value=self.fg_value)


class BinaryMaskDataset:
    """Image + mask pairs matched by stem (mask stems may carry a suffix such as ``_gt``, see ``mask_suffix``).

    Args:
        root: dataset folder.
        image_dir, mask_dir: sub-folders (GrabCut in shared/data: ``images``, ``gt``; RITM's GrabCut:
            ``data_GT``, ``boundary_GT``; RITM's Berkeley: ``images``, ``masks``).
        void_value: 128 for GrabCut; None for Berkeley.
        fg_value: stored object value (None: any non-zero, non-void value).
        mask_suffix: text after the image stem in mask names (e.g. ``"_gt"``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_dir: str = "images",
        mask_dir: str = "gt",
        *,
        void_value: int | None = 128,
        fg_value: int | None = None,
        mask_suffix: str = "",
    ) -> None:
        self.root = Path(root)
        img_root, mask_root = self.root / image_dir, self.root / mask_dir
        if not img_root.is_dir() or not mask_root.is_dir():
            raise FileNotFoundError(f"{root}: expected folders {image_dir}/ and {mask_dir}/")
        images = {p.stem: p for p in sorted(img_root.iterdir()) if p.suffix.lower() in _IMAGE_EXTS}
        self.samples: list[BinarySample] = []
        for m in sorted(mask_root.iterdir()):
            if m.suffix.lower() not in _IMAGE_EXTS:
                continue
            stem = m.stem[: -len(mask_suffix)] if mask_suffix and m.stem.endswith(mask_suffix) else m.stem
            if stem in images:
                self.samples.append(BinarySample(stem, images[stem], m, void_value, fg_value))

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[BinarySample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> BinarySample:
        return self.samples[i]
