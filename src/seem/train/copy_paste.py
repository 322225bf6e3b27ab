"""Copy-paste augmentation: twins of an image's own objects pasted elsewhere in the same image.

A click on one of two look-alike objects must give that object only. Real photos with several instances of one
kind are rare in small datasets, and a model trained on them learns to segment everything that looks like the
clicked pixels (all cars, all people). ``CopyPaste`` makes such scenes: it cuts an object (its mask's pixels),
optionally rescales and mirrors it, and pastes it at another place of the same image, where it occludes what was
there. Seeded like every transform (``(sample, rng) -> sample``); runs after the large-scale jitter, on the crop.

Annotations after a paste: the twin is a new mask (same class, thing flag and part id as its source, its own
granularity chain, no sentence); every other mask, and the ignore map, lose the pixels the twin covers; masks left
smaller than ``min_mask_area`` are dropped. Images with referring sentences are left unchanged (a twin would make
"the man on the left" ambiguous).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from seem.train.data import Sample, drop_small_masks

__all__ = ["CopyPaste", "CopyPasteConfig"]


@dataclass(frozen=True)
class CopyPasteConfig:
    """Settings of ``CopyPaste``.

    Attributes:
        prob: chance that an image gets twins at all.
        max_copies: 1..max_copies twins per image (uniform).
        min_area: smallest source object (pixels); max_area_frac: largest, as a fraction of the image.
        scale: the twin's size relative to its source, uniform in ``[lo, hi]``.
        flip_prob: chance that a twin is mirrored left-right.
        max_overlap: a twin may cover at most this fraction of its source object (positions are redrawn, up to
            ``tries`` times, then the twin is skipped).
        min_mask_area: masks smaller than this after pasting are dropped.
    """

    prob: float = 0.5
    max_copies: int = 2
    min_area: int = 400
    max_area_frac: float = 0.25
    scale: tuple[float, float] = (0.75, 1.25)
    flip_prob: float = 0.5
    max_overlap: float = 0.2
    tries: int = 10
    min_mask_area: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0 or not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"copy-paste probabilities must lie in [0, 1], got {self.prob}, {self.flip_prob}")
        if self.max_copies < 1 or self.tries < 1 or not 0.0 < self.max_area_frac <= 1.0:
            raise ValueError(f"invalid copy-paste settings {self}")
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"copy-paste scale must be 0 < lo <= hi, got {self.scale}")


class CopyPaste:
    """Paste twins of an image's objects into it (see the module docstring)."""

    def __init__(self, config: CopyPasteConfig | None = None) -> None:
        self.config = config or CopyPasteConfig()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        c = self.config
        if sample.sentences or sample.num_masks == 0 or rng.uniform() >= c.prob:
            return sample
        for _ in range(int(rng.integers(1, c.max_copies + 1))):
            sample = self._paste_one(sample, rng)
        return drop_small_masks(sample, c.min_mask_area)

    def _sources(self, sample: Sample) -> np.ndarray:
        """Indices of the masks that may be copied: things when the image has eligible things, else any mask."""
        c = self.config
        areas = sample.areas().numpy()
        ok = (areas >= c.min_area) & (areas <= c.max_area_frac * sample.height * sample.width)
        things = ok & sample.is_thing.numpy()
        return np.flatnonzero(things if things.any() else ok)

    def _paste_one(self, sample: Sample, rng: np.random.Generator) -> Sample:
        import cv2

        c = self.config
        cands = self._sources(sample)
        if cands.size == 0:
            return sample
        i = int(cands[rng.integers(cands.size)])
        src = sample.masks[i].numpy()
        ys, xs = np.nonzero(src)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        patch: np.ndarray = sample.image[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()
        pmask: np.ndarray = src[y0:y1, x0:x1].astype(np.uint8)
        s = float(rng.uniform(*c.scale))
        ph, pw = max(round((y1 - y0) * s), 1), max(round((x1 - x0) * s), 1)
        h, w = sample.height, sample.width
        if ph > h or pw > w:
            return sample
        if (ph, pw) != pmask.shape:
            patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_LINEAR)
            pmask = cv2.resize(pmask, (pw, ph), interpolation=cv2.INTER_NEAREST)
        if rng.uniform() < c.flip_prob:
            patch, pmask = patch[:, ::-1], pmask[:, ::-1]
        pm = pmask.astype(bool)
        if not pm.any():
            return sample
        src_area = int(src.sum())
        for _ in range(c.tries):
            ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if int((src[ty : ty + ph, tx : tx + pw] & pm).sum()) <= c.max_overlap * src_area:
                break
        else:
            return sample
        twin = np.zeros((h, w), bool)
        twin[ty : ty + ph, tx : tx + pw] = pm
        t = torch.from_numpy(twin)
        image = sample.image.clone()
        region = image[:, ty : ty + ph, tx : tx + pw]
        region[:, torch.from_numpy(pm)] = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[
            :, torch.from_numpy(pm)
        ]
        n = sample.num_masks
        return replace(
            sample,
            image=image,
            masks=torch.cat([sample.masks & ~t, t[None]]),
            class_ids=torch.cat([sample.class_ids, sample.class_ids[i : i + 1]]),
            part_ids=torch.cat([sample.part_ids, sample.part_ids[i : i + 1]]),
            is_thing=torch.cat([sample.is_thing, sample.is_thing[i : i + 1]]),
            granularity_groups=[*sample.granularity_groups, [n]],
            ignore=sample.ignore & ~t,
        )
