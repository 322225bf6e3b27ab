"""Prompt types, validation, geometry and rasterisation (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEEM_PARITY_DIR

from seem.io import ImageError
from seem.models.postprocess import crop_and_resize
from seem.prompts import (
    Box,
    ImageGeometry,
    MaskPrompt,
    Points,
    Polygon,
    PromptError,
    PromptSet,
    PromptTypeError,
    ReferenceImage,
    Scribble,
    Text,
    mask_core_clicks,
    rasterize,
    resized_size,
    spaced_pixels,
)


def test_resized_size_is_torchvision_resize_512() -> None:
    assert resized_size(400, 600) == (512, 768)  # coffee (README §4)
    assert resized_size(512, 512) == (512, 512)
    assert resized_size(300, 451) == (512, 769)  # chelsea (hidden set): int(512 * 451 / 300)
    assert resized_size(481, 321) == (767, 512)
    assert resized_size(1, 3) == (512, 1536)
    g = ImageGeometry.for_image(300, 451)
    assert g.padded_size == (512, 800) and g.resized_size == (512, 769)
    with pytest.raises(ImageError, match="long side"):
        ImageGeometry.for_image(10, 400)


@pytest.mark.parametrize(("h", "w"), [(400, 600), (321, 481), (1000, 37), (5, 7), (512, 512), (2000, 1999)])
def test_pixel_centres_round_trip(h: int, w: int) -> None:
    """Original pixel centre → canvas pixel → back lands on the same original pixel when upscaling, and
    within half a canvas pixel when downscaling."""
    g = ImageGeometry.for_image(h, w, max_aspect_ratio=100)
    rng = np.random.default_rng(h * 7 + w)
    xy = np.stack([rng.integers(0, w, 50), rng.integers(0, h, 50)], 1)
    uv = g.canvas_pixels(xy)
    back = g.to_original(uv)
    sy, sx = g.scale
    tol = np.array([max(0.5, 0.5 / sx), max(0.5, 0.5 / sy)])
    assert (np.abs(back - xy) <= tol + 1e-9).all()
    if sx >= 1 and sy >= 1:
        assert np.array_equal(np.rint(back), xy)


def test_click_square_and_output_mapping() -> None:
    """A click is a 3×3 square on the canvas, and the output resizing maps it back onto the clicked pixel."""
    g = ImageGeometry.for_image(400, 600)
    r = rasterize(PromptSet(points=Points([[300, 200], [0, 0]], [1, 0])), g)
    ys, xs = np.nonzero(r.pos)
    # floor(300.5 * 1.28) = 384, floor(200.5 * 1.28) = 256: the square is centred there
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (383, 385, 255, 257)
    assert r.neg.sum() == 4 and r.neg[:2, :2].all()  # clipped at the image corner
    import torch

    back = crop_and_resize(torch.from_numpy(r.pos).float()[None], g.resized_size, g.original_size, "bilinear", False)
    assert float(back[0, 200, 300]) == pytest.approx(1.0)


def test_box_edges_and_degenerate_boxes() -> None:
    g = ImageGeometry.for_image(400, 600)
    sy, sx = g.scale
    r = rasterize(PromptSet(boxes=Box(215 / sx, 20 / sy, 520 / sx, 300 / sy)), g)  # case d's first box
    ys, xs = np.nonzero(r.pos)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 299, 215, 519)
    whole = rasterize(PromptSet(boxes=Box(0, 0, 600, 400)), g)
    assert whole.pos[:512, :768].all() and not whole.pos[512:].any()
    tiny = rasterize(PromptSet(boxes=Box(10.1, 10.1, 10.2, 10.2)), g)
    assert tiny.pos.sum() == 1  # thinner than a canvas pixel: the pixel of its centre
    for bad in [(5, 5, 5, 9), (9, 5, 5, 9), (0, 0, float("nan"), 3)]:
        with pytest.raises(PromptError):
            Box(bad)
    with pytest.raises(PromptError, match="4 numbers"):
        Box([1, 2, 3])
    with pytest.raises(PromptError, match="outside"):
        PromptSet(boxes=Box(0, 0, 601, 10)).validate((400, 600))


def test_scribble_is_cv2_polyline_of_width_5() -> None:
    """Case c's round-3 scribble is drawn exactly as the official fixture's prompt mask."""
    ref = np.load(SEEM_PARITY_DIR / "case_c_interactive.npz") if SEEM_PARITY_DIR.exists() else None
    g = ImageGeometry.for_image(512, 512)
    s = Scribble([[60, 300], [100, 350], [120, 400], [150, 460]])
    r = rasterize(PromptSet(scribbles=s, points=Points([[225, 120]])), g)
    if ref is not None:
        assert np.array_equal(r.pos, ref["round3/prompt/pos_mask"][0])
    dot = rasterize(PromptSet(scribbles=Scribble([[50, 50]], width=5)), g)
    assert 9 <= dot.pos.sum() <= 30  # a single vertex still draws a dot
    neg = rasterize(PromptSet(boxes=Box(0, 0, 10, 10), scribbles=Scribble([[100, 100], [200, 100]], label=0)), g)
    assert neg.neg.sum() > 0 and not (neg.pos & neg.neg).any()


def test_spaced_pixels_cover_a_drawn_stroke() -> None:
    """A scribble drawn on the canvas, read as clicks: taken pixels lie on the stroke, at least ``spacing`` apart, and
    every stroke pixel is within ``spacing`` of one (the rule ``InferenceConfig.stroke_clicks`` uses)."""
    g = ImageGeometry.for_image(384, 576)
    drawn = rasterize(PromptSet(scribbles=Scribble([[40, 300], [200, 100], [420, 260], [540, 60]])), g).pos
    for spacing in (10.0, 60.0):
        pts = spaced_pixels(drawn, spacing)
        assert pts.dtype == np.int64 and pts.shape[1] == 2 and drawn[pts[:, 1], pts[:, 0]].all()
        d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        assert d[~np.eye(len(pts), dtype=bool)].min() >= spacing
        ys, xs = np.nonzero(drawn)
        nearest = np.hypot(xs[:, None] - pts[None, :, 0], ys[:, None] - pts[None, :, 1]).min(axis=1)
        assert nearest.max() < spacing
        assert np.array_equal(pts, spaced_pixels(drawn, spacing))
    assert len(spaced_pixels(drawn, 60.0)) < len(spaced_pixels(drawn, 10.0))
    first = spaced_pixels(drawn, 1e9)  # one pixel: the first of the stroke in row-major order
    ys, xs = np.nonzero(drawn)
    assert first.tolist() == [[int(xs[0]), int(ys[0])]]
    assert spaced_pixels(np.zeros((5, 5), bool), 3.0).shape == (0, 2)
    with pytest.raises(ValueError, match="spacing must be > 0"):
        spaced_pixels(drawn, 0.0)
    with pytest.raises(ValueError, match=r"mask must be bool \[H, W\]"):
        spaced_pixels(drawn.astype(np.uint8), 5.0)


def test_mask_core_clicks_lie_deep_inside_the_mask() -> None:
    """A box's mask read as clicks: the pixels at least ``margin`` in from its edge, ``spacing`` apart."""
    yy, xx = np.mgrid[:120, :160]
    disk = (yy - 60) ** 2 + (xx - 80) ** 2 <= 40**2
    pts = mask_core_clicks(disk, 16, 10.0)
    assert pts.dtype == np.int64 and len(pts) > 3
    assert np.hypot(pts[:, 0] - 80, pts[:, 1] - 60).max() <= 40 - 16 + 1, "every click 16 px in from the edge"
    assert np.hypot(pts[:, 0] - 80, pts[:, 1] - 60).max() > 40 - 16 - 10, "... covering that core"
    assert np.array_equal(mask_core_clicks(disk, 0, 10.0), spaced_pixels(disk, 10.0))
    assert mask_core_clicks(disk, 41, 10.0).shape == (0, 2), "no inside that deep"
    with pytest.raises(ValueError, match="margin must be an int >= 0"):
        mask_core_clicks(disk, -1, 10.0)
    with pytest.raises(ValueError, match=r"mask must be bool \[H, W\]"):
        mask_core_clicks(disk.astype(np.uint8), 4, 10.0)


def test_polygon_and_mask_prompts() -> None:
    g = ImageGeometry.for_image(40, 60)  # upscaled ×12.8
    poly = rasterize(PromptSet(polygons=Polygon([[10, 10], [30, 10], [20, 30]])), g)
    assert poly.pos.sum() > 1000
    thin = rasterize(PromptSet(polygons=Polygon([[1, 1], [20, 1], [40, 1]])), g)  # collinear: outline kept
    assert thin.pos.sum() > 0
    m = np.zeros((40, 60), bool)
    m[5:15, 10:30] = True
    mk = rasterize(PromptSet(masks=MaskPrompt(m)), g)
    ys, xs = np.nonzero(mk.pos)
    # rows 5..14 → canvas rows [64, 192): nearest-exact sampling of pixel centres
    assert (ys.min(), ys.max()) == (64, 191) and (xs.min(), xs.max()) == (128, 383)
    big = ImageGeometry.for_image(4000, 6000)  # downscaled: a 1-pixel line must survive
    line = np.zeros((4000, 6000), bool)
    line[2000, 100:5000] = True
    assert rasterize(PromptSet(masks=MaskPrompt(line)), big).pos.sum() > 300
    with pytest.raises(PromptError, match="empty"):
        MaskPrompt(np.zeros((4, 4), bool))
    with pytest.raises(PromptError, match="2-D"):
        MaskPrompt(np.ones((2, 4, 4), bool))
    with pytest.raises(PromptTypeError):
        MaskPrompt(np.array([["a"]]))


def test_points_validation() -> None:
    p = Points([[1, 2], [3, 4]], [1, 0])
    assert p.coords.shape == (2, 2) and p.labels.tolist() == [1, 0]
    assert Points([5, 6]).coords.tolist() == [[5.0, 6.0]]
    assert Points([[1, 1]], [True]).labels.tolist() == [1]
    assert Points([[1, 1], [2, 2]], np.array([1.0, 0.0])).labels.tolist() == [1, 0]  # SAM-style float labels
    with pytest.raises(PromptError, match="label"):
        Points([[1, 2]], [0.5])
    with pytest.raises(PromptError, match="labels"):
        Points([[1, 2]], [1, 0])
    with pytest.raises(PromptError, match="label"):
        Points([[1, 2]], [-1])
    with pytest.raises(PromptError, match="finite"):
        Points([[np.inf, 2]])
    with pytest.raises(PromptError, match=r"\[N, 2\]"):
        Points([[1, 2, 3]])
    with pytest.raises(PromptTypeError):
        Points([["a", "b"]])
    with pytest.raises(PromptError, match=r"outside the 600×400 image"):
        p2 = Points([[600, 10]])
        p2.validate((400, 600))
    Points([[599.9, 399.9]]).validate((400, 600))


def test_prompt_set_construction_merge_and_checks() -> None:
    ps = PromptSet(points=Points([[1, 1]]), boxes=Box(0, 0, 5, 5), text="a cat")
    assert ps.boxes == (Box(0, 0, 5, 5),) and ps.text == Text("a cat")
    assert ps.has_visual and ps.has_positive_visual and not ps.is_empty
    more = ps.merged(PromptSet(points=Points([[2, 2]], [0]), text="a dog"))
    assert more.points is not None and more.points.labels.tolist() == [1, 0] and more.text == Text("a dog")
    assert "2 points (1+, 1-)" in more.describe()
    with pytest.raises(PromptTypeError):
        PromptSet(boxes=[(0, 0, 1, 1)])  # type: ignore[list-item]
    with pytest.raises(PromptTypeError):
        PromptSet(points=[[1, 2]])  # type: ignore[arg-type]
    with pytest.raises(PromptTypeError):
        Text(5)  # type: ignore[arg-type]
    with pytest.raises(PromptError, match="width"):
        Scribble([[1, 1]], width=0)
    with pytest.raises(PromptError, match="at least 3"):
        Polygon([[1, 1], [2, 2]])
    sam = PromptSet.from_sam(np.array([[3, 4]]), np.array([1]), np.array([[0, 0, 9, 9]]))
    assert sam.points is not None and sam.boxes[0].xyxy == (0.0, 0.0, 9.0, 9.0)
    with pytest.raises(PromptError, match="point_labels"):
        PromptSet.from_sam(np.array([[3, 4]]))
    ref = ReferenceImage(np.zeros((20, 30, 3), np.uint8), PromptSet(points=Points([[3, 4]])))
    assert ref.image.shape == (20, 30, 3)
    with pytest.raises(PromptError, match="outside"):
        ReferenceImage(np.zeros((20, 30, 3), np.uint8), PromptSet(points=Points([[31, 4]])))
    with pytest.raises(PromptError, match="visual prompts only"):
        ReferenceImage(np.zeros((20, 30, 3), np.uint8), PromptSet(points=Points([[3, 4]]), text="x"))
