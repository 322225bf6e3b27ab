"""SA-1B (per-image ``sa_<id>.json`` next to ``sa_<id>.jpg``) → ``Sample``.

SA-1B has no labels (class / part ids -1, ``is_thing`` False). Its masks nest (whole, part, subpart from the same
point prompts), so the granularity chains come from containment (``containment_groups``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from seem.eval.readers import read_sa1b
from seem.train.data import Sample, containment_groups, read_image

__all__ = ["Sa1bSource"]


class Sa1bSource:
    """SA-1B annotation files → ``Sample``.

    Args:
        paths: a folder (every ``*.json`` in it, sorted) or a list of annotation files.
        containment: a mask nests in another when at least this fraction of it lies inside (0.9).
        min_area: masks smaller than this (px) are left out.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        containment: float = 0.9,
        min_area: int = 0,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            root = Path(paths)
            self.files = sorted(root.glob("*.json")) if root.is_dir() else [root]
        else:
            self.files = [Path(p) for p in paths]
        if not self.files:
            raise FileNotFoundError(f"no SA-1B annotation files in {paths}")
        self.class_names: list[str] = []
        self.part_names: list[str] = []
        self.containment = float(containment)
        self.min_area = int(min_area)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        rec = read_sa1b(self.files[index])
        image = read_image(rec.image_path)
        if (int(image.shape[1]), int(image.shape[2])) != (rec.height, rec.width):
            raise ValueError(
                f"{rec.image_path}: image is {tuple(image.shape[1:])}, JSON says {(rec.height, rec.width)}"
            )
        masks = rec.masks()
        if self.min_area > 0:
            masks = masks[masks.reshape(masks.shape[0], -1).sum(1) >= self.min_area]
        return Sample.create(
            image,
            masks,
            granularity_groups=containment_groups(masks, self.containment),
            image_id=rec.image_id,
        )
