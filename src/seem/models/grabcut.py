"""Box and polygon prompts' masks refined by OpenCV's GrabCut (``InferenceConfig.box_rule`` / ``polygon_rule =
"grabcut"``).

GrabCut (Rother et al. 2004, ``cv2.grabCut``) fits colour models to what is probably the object and what is probably
not, and cuts along the image's edges. Both rules run it in two passes for speed (``_two_pass``): five iterations at
half resolution (the colour models and a first cut), then one at full resolution from that cut.

- **Box** (``grabcut_box_mask``): the default model's decoder gives a box a mask from its granularity queries
  (``box_rule = "fit"``: the query mask whose bounding box best matches the box, cut to the box); those masks follow
  the object only roughly. GrabCut starts from that mask (probable object; the rest of the box probably not; outside
  the box certainly not) and the caller keeps whichever of the two masks has the bounding box closer to the box
  (``box_fit_iou``): a user draws a box around the object, and GrabCut sometimes spills over the whole box or
  shrinks to one colour of the object.
- **Polygon** (``grabcut_polygon_mask``): a polygon traces the object's outline (as an annotator clicks it), which is
  already a closer mask than a small model gives; GrabCut snaps its edge to the image's edges within a band on
  either side of it (the rest of the polygon is the object, the rest of the image is not).

Everything here is on the model's resized image (``ImageGeometry.resized_size``), in pixels, boxes XYXY with
exclusive right / bottom edges.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["box_fit_iou", "grabcut_box_mask", "grabcut_polygon_mask"]

COARSE_SCALE = 0.5
"""Scale of the first pass (colour models and a first cut); the second pass runs at full resolution."""
COARSE_ITERATIONS = 5
FINE_ITERATIONS = 1
RNG_SEED = 0
_NO_RECT = (0, 0, 0, 0)  # grabCut's rectangle, unused when it starts from a mask


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")


def _check_mask(name: str, mask: np.ndarray, image: np.ndarray) -> None:
    if mask.dtype != np.bool_ or mask.shape != image.shape[:2]:
        raise ValueError(f"{name} must be bool [H, W] = {tuple(image.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")


def _two_pass(image: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """GrabCut on uint8 RGB ``image [H, W, 3]`` from ``labels [H, W]`` (``cv2.GC_*`` values): five iterations at
    ``COARSE_SCALE``, then one at full resolution from their cut (``GC_BGD`` / ``GC_FGD`` pixels stay). Returns the
    bool foreground ``[H, W]``, or None when the half-resolution labels lack probable foreground or probable
    background (nothing to learn a colour model from). Seeds OpenCV's generator with ``RNG_SEED`` first: GrabCut
    starts its colour models with k-means++ from it, and the same inputs then give the same mask every time (this
    resets the calling thread's OpenCV generator)."""
    h, w = labels.shape
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
    first_full = cv2.resize(first, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    free = (labels == cv2.GC_PR_FGD) | (labels == cv2.GC_PR_BGD)
    fine = labels.copy()  # certain labels stay; the probable ones start from the first cut
    fine[free] = np.where(first_full[free], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    cv2.grabCut(rgb, fine, _NO_RECT, bgd, fgd, FINE_ITERATIONS, cv2.GC_EVAL)
    return (fine == cv2.GC_FGD) | (fine == cv2.GC_PR_FGD)


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

    Deterministic (see ``_two_pass``).
    """
    _check_image(image)
    _check_mask("mask", mask, image)
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} (XYXY pixels) holds no pixel of the {w}×{h} image")
    inside = np.zeros((h, w), dtype=bool)
    inside[y0:y1, x0:x1] = True
    fg = mask & inside
    if not fg.any() or fg[y0:y1, x0:x1].all():
        return None
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[inside] = cv2.GC_PR_BGD
    labels[fg] = cv2.GC_PR_FGD
    return _two_pass(image, labels)


def grabcut_polygon_mask(image: np.ndarray, polygon: np.ndarray, band: int) -> np.ndarray | None:
    """GrabCut along a filled polygon's edge: bool ``[H, W]``, or None when there is nothing to cut (an empty
    polygon, or one too small or too thin for the first pass).

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        polygon: bool ``[H, W]``, the filled polygon(s).
        band: width in pixels (>= 1) of the bands along the polygon's edge that GrabCut decides: inside the polygon
            probable foreground, outside it probable background. Deeper inside is foreground, farther outside
            background: the mask moves the polygon's edge by at most ``band`` pixels either way (GrabCut's colour
            models alone would also cut out parts of the object coloured like its surroundings).

    Deterministic (see ``_two_pass``).
    """
    _check_image(image)
    _check_mask("polygon", polygon, image)
    if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 1:
        raise ValueError(f"band must be an int >= 1 (pixels), got {band!r}")
    if not polygon.any():
        return None
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(band) + 1, 2 * int(band) + 1))
    near = cv2.dilate(polygon.astype(np.uint8), k).astype(bool)
    labels = np.full(polygon.shape, cv2.GC_BGD, np.uint8)
    labels[near] = cv2.GC_PR_BGD
    labels[polygon] = cv2.GC_PR_FGD
    labels[cv2.erode(polygon.astype(np.uint8), k).astype(bool)] = cv2.GC_FGD
    return _two_pass(image, labels)
