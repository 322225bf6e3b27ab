"""``seem.models.grabcut``: box and polygon prompts' masks refined by OpenCV's GrabCut (``box_rule`` /
``polygon_rule = "grabcut"``), on the shipped coffee photo. The default model's use of them is tested in
``test_default_model.py`` (GrabCut images)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seem.io import read_image
from seem.models.grabcut import box_fit_iou, grabcut_box_mask, grabcut_polygon_mask
from seem.samples import sample_image

CUP = (170, 10, 420, 300)  # XYXY around the cup of the 600 × 400 coffee photo


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return read_image(sample_image("coffee"))


def _rough(shape: tuple[int, ...]) -> np.ndarray:
    """A rectangle well inside the cup: a poor mask of it, far from the box's edges."""
    m = np.zeros(shape[:2], dtype=bool)
    m[60:250, 220:380] = True
    return m


def test_grabcut_moves_the_mask_toward_the_box_and_stays_inside(coffee: np.ndarray) -> None:
    rough = _rough(coffee.shape)
    cut = grabcut_box_mask(coffee, rough, CUP)
    assert cut is not None and cut.shape == rough.shape and cut.dtype == np.bool_
    outside = cut.copy()
    outside[CUP[1] : CUP[3], CUP[0] : CUP[2]] = False
    assert not outside.any()
    # measured: 0.91 against the rectangle's 0.42 (GrabCut follows the cup's rim out to the box's edges)
    assert box_fit_iou(cut, CUP) > box_fit_iou(rough, CUP) + 0.2
    # it still holds most of the rectangle (the coffee and the cup's inside)
    assert (cut & rough).sum() >= 0.5 * rough.sum()


def test_grabcut_is_deterministic_whatever_opencv_drew_before(coffee: np.ndarray) -> None:
    rough = _rough(coffee.shape)
    first = grabcut_box_mask(coffee, rough, CUP)
    cv2.randu(np.zeros((64, 64), np.float32), 0.0, 1.0)  # advance OpenCV's generator
    cv2.setRNGSeed(12345)
    assert first is not None
    second = grabcut_box_mask(coffee, rough, CUP)
    assert second is not None and np.array_equal(first, second)


def test_nothing_to_cut_gives_none(coffee: np.ndarray) -> None:
    empty = np.zeros(coffee.shape[:2], dtype=bool)
    empty[350:390, 10:50] = True  # a mask outside the box only
    assert grabcut_box_mask(coffee, empty, CUP) is None
    full = np.zeros(coffee.shape[:2], dtype=bool)
    full[CUP[1] : CUP[3], CUP[0] : CUP[2]] = True  # fills the box: no probable background to learn from
    assert grabcut_box_mask(coffee, full, CUP) is None


def test_bad_inputs_are_named(coffee: np.ndarray) -> None:
    rough = _rough(coffee.shape)
    with pytest.raises(ValueError, match=r"image must be uint8 \[H, W, 3\]"):
        grabcut_box_mask(coffee.astype(np.float32), rough, CUP)
    with pytest.raises(ValueError, match=r"mask must be bool \[H, W\] = \(400, 600\)"):
        grabcut_box_mask(coffee, rough[:-1], CUP)
    with pytest.raises(ValueError, match="holds no pixel"):
        grabcut_box_mask(coffee, rough, (700, 10, 800, 100))


def test_box_fit_iou() -> None:
    m = np.zeros((50, 80), dtype=bool)
    assert box_fit_iou(m, (10, 10, 30, 30)) == 0.0
    m[10:30, 10:30] = True
    assert box_fit_iou(m, (10, 10, 30, 30)) == 1.0
    assert box_fit_iou(m, (10, 10, 50, 30)) == pytest.approx(0.5)
    m[:] = False
    m[12, 12] = m[27, 27] = True  # only the extent counts: a diagonal pair spans the same box
    assert box_fit_iou(m, (12, 12, 28, 28)) == 1.0


def _rim_polygon(shape: tuple[int, ...]) -> np.ndarray:
    """A filled ellipse drawn a little loose around the cup's rim (the dark table shows above the rim inside it)."""
    p = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(p, (290, 95), (128, 82), 0, 0, 360, 1, -1)
    return p.astype(bool)


def test_polygon_edges_move_within_the_band_toward_the_image_edges(coffee: np.ndarray) -> None:
    poly = _rim_polygon(coffee.shape)
    band = 8
    cut = grabcut_polygon_mask(coffee, poly, band)
    assert cut is not None and cut.shape == poly.shape and cut.dtype == np.bool_
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    near = cv2.dilate(poly.astype(np.uint8), k).astype(bool)
    core = cv2.erode(poly.astype(np.uint8), k).astype(bool)
    assert not (cut & ~near).any(), "the mask may grow by the band at most"
    assert not (core & ~cut).any(), "the polygon's inside beyond the band stays"
    removed = poly & ~cut
    # measured: 2187 px removed (mean grey 106: the dark table above the rim) against a kept mean of 160
    assert removed.sum() > 500
    grey = coffee.mean(axis=2)
    assert grey[removed].mean() < grey[cut].mean() - 30
    again = grabcut_polygon_mask(coffee, poly, band)
    assert again is not None and np.array_equal(cut, again)


def test_polygon_band_and_empty_polygon(coffee: np.ndarray) -> None:
    poly = _rim_polygon(coffee.shape)
    assert grabcut_polygon_mask(coffee, np.zeros_like(poly), 8) is None
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="band must be an int >= 1"):
            grabcut_polygon_mask(coffee, poly, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"polygon must be bool \[H, W\]"):
        grabcut_polygon_mask(coffee, poly.astype(np.uint8), 8)
