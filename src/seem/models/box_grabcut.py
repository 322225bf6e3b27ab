"""A box prompt's mask refined by OpenCV's GrabCut (``InferenceConfig.box_rule = "grabcut"``).

The default model's decoder gives a box a mask from its granularity queries (``box_rule = "fit"``: the query mask
whose bounding box best matches the box, cut to the box); those masks follow the object only roughly. GrabCut
(Rother et al. 2004, ``cv2.grabCut``) fits colour models to the inside and the outside of the box and cuts along
the image's edges; started from the model's mask instead of from the box alone, it keeps what the model knows of the
object. ``grabcut_box_mask`` runs it in two passes for speed: five iterations at half resolution (the colour
models and a first cut), then one at full resolution from that cut. The caller keeps whichever of the two masks —
the model's or GrabCut's — has the bounding box closer to the box (``box_fit_iou``): a user draws a box around the
object, and GrabCut sometimes spills over the whole box or shrinks to one colour of the object.

Everything here is on the model's resized image (``ImageGeometry.resized_size``), in pixels, boxes XYXY with
exclusive right / bottom edges.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["box_fit_iou", "grabcut_box_mask"]

COARSE_SCALE = 0.5
"""Scale of the first pass (colour models and a first cut); the second pass runs at full resolution."""
COARSE_ITERATIONS = 5
FINE_ITERATIONS = 1
RNG_SEED = 0
_NO_RECT = (0, 0, 0, 0)  # grabCut's rectangle, unused when it starts from a mask


def _check(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    if mask.dtype != np.bool_ or mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be bool [H, W] = {tuple(image.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} (XYXY pixels) holds no pixel of the {w}×{h} image")
    return x0, y0, x1, y1


def box_fit_iou(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """IoU of the bounding box of bool ``mask [H, W]`` with ``box`` (XYXY, exclusive right / bottom); 0 if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    x0, y0, x1, y1 = (int(v) for v in box)
    iw = max(0, min(bx1, x1) - max(bx0, x0))
    ih = max(0, min(by1, y1) - max(by0, y0))
    union = (bx1 - bx0) * (by1 - by0) + (x1 - x0) * (y1 - y0) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def grabcut_box_mask(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """GrabCut inside ``box``, started from ``mask``: bool ``[H, W]`` (False outside the box), or None when there is
    nothing to cut (an empty ``mask`` in the box, a mask that fills the box, a box too small for the first pass).

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        mask: bool ``[H, W]``: the model's mask (probable foreground; the rest of the box probable background,
            everything outside the box background).
        box: XYXY pixels, exclusive right / bottom edges (clipped to the image).

    Deterministic: GrabCut starts its colour models with k-means++ from OpenCV's random generator, which is seeded
    with ``RNG_SEED`` here on every call (``cv2.setRNGSeed``; this resets the calling thread's OpenCV generator).
    """
    x0, y0, x1, y1 = _check(image, mask, box)
    h, w = mask.shape
    inside = np.zeros((h, w), dtype=bool)
    inside[y0:y1, x0:x1] = True
    fg = mask & inside
    if not fg.any() or fg[y0:y1, x0:x1].all():
        return None
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[inside] = cv2.GC_PR_BGD
    labels[fg] = cv2.GC_PR_FGD
    sw, sh = max(1, round(w * COARSE_SCALE)), max(1, round(h * COARSE_SCALE))
    small = cv2.resize(labels, (sw, sh), interpolation=cv2.INTER_NEAREST)
    if not ((small == cv2.GC_PR_FGD).any() and (small == cv2.GC_PR_BGD).any()):
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(RNG_SEED)
    rgb = np.ascontiguousarray(image)
    coarse_rgb = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    cv2.grabCut(coarse_rgb, small, _NO_RECT, bgd, fgd, COARSE_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    first = ((small == cv2.GC_FGD) | (small == cv2.GC_PR_FGD)).astype(np.float32)
    first_full = (cv2.resize(first, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5) & inside
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[inside] = np.where(first_full[inside], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    cv2.grabCut(rgb, labels, _NO_RECT, bgd, fgd, FINE_ITERATIONS, cv2.GC_EVAL)
    return ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)) & inside
