"""BSDS500 → ``Sample``: every annotator's segmentation is one granularity level.

Each segment of each annotator becomes a mask (identical segments of different annotators are kept once),
ordered from the coarsest annotator to the finest (``coarse_to_fine``). Annotators draw the same boundaries
slightly differently, so nesting across annotators is decided by containment: a segment's parent is the smallest
larger segment holding at least ``containment`` (0.8) of it; the chains root → leaf are the granularity groups.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from seem.eval.readers import Bsds500, coarse_to_fine
from seem.train.data import Sample, containment_groups, read_image

__all__ = ["BsdsSource"]


class BsdsSource:
    """BSDS500 split (official ``.mat`` or converted PNG layout, see ``seem.eval.readers.Bsds500``) → ``Sample``.

    Args:
        root, split: as ``Bsds500``.
        containment: nesting threshold across annotators (0.8).
        min_area: segments smaller than this (px) are left out.
        exclude: image ids to leave out (e.g. the GrabCut images, which come from BSDS500, when GrabCut is the
            evaluation set).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        containment: float = 0.8,
        min_area: int = 0,
        exclude: Sequence[str] = (),
    ) -> None:
        self.reader = Bsds500(root, split)
        drop = {str(e) for e in exclude}
        self.rows = [i for i in range(len(self.reader)) if str(self.reader[i].id) not in drop]
        if not self.rows:
            raise FileNotFoundError(f"no BSDS500 images with ground truth under {root} (split {split!r})")
        self.class_names: list[str] = []
        self.part_names: list[str] = []
        self.containment = float(containment)
        self.min_area = int(min_area)

    def __len__(self) -> int:
        return len(self.rows)

    def segments(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(masks bool [N, H, W], annotator [N])``: deduplicated segments, coarse annotators first."""
        maps = self.reader[self.rows[index]].label_maps()
        masks: list[np.ndarray] = []
        owner: list[int] = []
        seen: set[bytes] = set()
        for a in coarse_to_fine(maps):
            lm = maps[a]
            for v in np.unique(lm):
                m = lm == v
                if int(m.sum()) < max(self.min_area, 1):
                    continue
                key = np.packbits(m).tobytes()
                if key in seen:
                    continue
                seen.add(key)
                masks.append(m)
                owner.append(a)
        h, w = maps[0].shape
        stack = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return stack, np.asarray(owner, np.int64)

    def __getitem__(self, index: int) -> Sample:
        item = self.reader[self.rows[index]]
        image = read_image(item.image_path)
        masks, _ = self.segments(index)
        if masks.shape[1:] != tuple(image.shape[1:]):
            raise ValueError(f"BSDS {item.id}: label maps {masks.shape[1:]} vs image {tuple(image.shape[1:])}")
        return Sample.create(
            image, masks, granularity_groups=containment_groups(masks, self.containment), image_id=item.id
        )
