"""Property tests (hypothesis): images of any size / aspect / dtype and prompts of any mix / coordinates.

The only failures allowed are the documented clear errors (``ImageError``, ``PromptError``); everything else
must give results of the right shape. Examples are derandomised (the same on every run) and few, for speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import SEEM_PARITY_DIR, require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seem.io import ImageError, read_image
from seem.models.postprocess import crop_and_resize
from seem.models.seem_model import SEEMModel
from seem.predictor import Segmenter
from seem.prompts import (
    Box,
    ImageGeometry,
    MaskPrompt,
    Points,
    Polygon,
    PromptError,
    PromptSet,
    ReferenceImage,
    Scribble,
    rasterize,
)

FAST = settings(max_examples=30, deadline=None, derandomize=True)
MODEL = settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

DTYPES = [np.uint8, np.bool_, np.uint16, np.int64, np.int8, np.float32, np.float64, np.complex64]


@st.composite
def arrays(draw: Any, max_side: int = 48) -> np.ndarray:
    """Arrays that may or may not be valid images: any small shape, 0-4 dims, many dtypes and value ranges."""
    ndim = draw(st.sampled_from([2, 3, 3, 3, 1, 4]))
    shape = [draw(st.integers(0 if draw(st.booleans()) and ndim != 3 else 1, max_side)) for _ in range(min(ndim, 2))]
    if ndim >= 3:
        shape.append(draw(st.sampled_from([1, 3, 3, 4, 2, 5])))
    if ndim == 4:
        shape.append(2)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 255.0, 300.0]))
    a = rng.random(shape) * scale
    if draw(st.booleans()) and a.size:
        a.flat[0] = -1.0  # an out-of-range value sometimes
    return a.astype(dtype)


@FAST
@given(arrays())
def test_read_image_any_array(a: np.ndarray) -> None:
    try:
        out = read_image(a)
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    assert out.shape[:2] == a.shape[:2]


@FAST
@given(
    h=st.integers(1, 3000),
    w=st.integers(1, 3000),
    fx=st.floats(0, 1, exclude_max=True),
    fy=st.floats(0, 1, exclude_max=True),
)
def test_click_lands_on_its_pixel_at_any_size(h: int, w: int, fx: float, fy: float) -> None:
    """An integer click is drawn around canvas pixel floor((x + 0.5)·s), and the output resizing (crop + bilinear,
    the interactive rule) maps that square back onto the clicked pixel, at any size and aspect."""
    try:
        g = ImageGeometry.for_image(h, w)
    except ImageError as e:
        assert "long side" in str(e)
        return
    x, y = int(fx * w), int(fy * h)
    r = rasterize(PromptSet(points=Points([[x, y]])), g)
    assert r.pos.shape == g.padded_size and not r.neg.any()
    u, v = g.canvas_pixels(np.array([[x, y]]))[0]
    assert u == min(int(np.floor((x + 0.5) * g.resized_size[1] / w)), g.resized_size[1] - 1)
    assert r.pos[v, u] and r.pos.sum() <= 9
    back = crop_and_resize(torch.from_numpy(r.pos).float()[None], g.resized_size, g.original_size, "bilinear", False)
    assert float(back[0, y, x]) == pytest.approx(1.0)


@st.composite
def images(draw: Any) -> np.ndarray:
    """Mostly valid images of any size and aspect (1..120 px a side) in the accepted forms; sometimes not."""
    if draw(st.integers(0, 9)) == 0:
        return draw(arrays(max_side=60))
    h, w = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    channels = draw(st.sampled_from([None, 1, 3, 3, 4]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["uint8", "uint8", "bool", "uint16", "float"]))
    if kind == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "bool":
        return rng.random(shape) > 0.5
    if kind == "uint16":
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.random(shape).astype(np.float32)


INSIDE = st.floats(0, 0.999, allow_nan=False)
ANYWHERE = st.floats(-0.2, 1.2, allow_nan=False)


@st.composite
def prompt_specs(draw: Any) -> list[tuple[str, Any]]:
    """A random mix of prompt specifications, coordinates as fractions of the image size: each prompt is
    valid most of the time (inside the image, well formed) and sometimes not (outside, degenerate, too few
    points, wrong mask size, empty text). The prompts are built inside the test, so construction errors count."""
    kinds = draw(
        st.lists(
            st.sampled_from(["point", "point", "box", "scribble", "polygon", "mask", "text"]), min_size=1, max_size=3
        )
    )
    specs: list[tuple[str, Any]] = []
    for k in kinds:
        ok = draw(st.integers(0, 9)) > 0
        coord = INSIDE if ok else ANYWHERE
        if k == "point":
            n = draw(st.integers(1, 3))
            pts = [(draw(coord), draw(coord)) for _ in range(n)]
            labels = [1] + [draw(st.sampled_from([0, 1])) for _ in range(n - 1)]
            specs.append((k, (pts, labels if ok else [draw(st.sampled_from([0, 1])) for _ in range(n)])))
        elif k == "box":
            x0, y0 = draw(st.floats(0, 0.8)), draw(st.floats(0, 0.8))
            lo = 0.01 if ok else -0.1
            specs.append((k, [x0, y0, x0 + draw(st.floats(lo, 0.2)), y0 + draw(st.floats(lo, 0.2))]))
        elif k in ("scribble", "polygon"):
            n = draw(st.integers(3 if ok else 0, 5))
            specs.append((k, [(draw(coord), draw(coord)) for _ in range(n)]))
        elif k == "mask":
            specs.append((k, (draw(st.integers(0, 2**16)), ok)))
        else:
            specs.append((k, draw(st.text(min_size=1 if ok else 0, max_size=20))))
    return specs


def _build(specs: list[tuple[str, Any]], hw: tuple[int, int]) -> PromptSet:
    h, w = hw

    def px(pts: list[tuple[float, float]]) -> np.ndarray:
        return np.array([[fx * w, fy * h] for fx, fy in pts], dtype=np.float64).reshape(-1, 2)

    kw: dict[str, Any] = {"boxes": [], "scribbles": [], "polygons": [], "masks": []}
    for kind, v in specs:
        if kind == "point":
            kw["points"] = Points(px(v[0]), v[1])
        elif kind == "box":
            kw["boxes"].append(Box(v[0] * w, v[1] * h, v[2] * w, v[3] * h))
        elif kind == "scribble":
            kw["scribbles"].append(Scribble(px(v)))
        elif kind == "polygon":
            kw["polygons"].append(Polygon(px(v)))
        elif kind == "mask":
            seed, right_size = v
            shape = hw if right_size else (h + 1, w)
            kw["masks"].append(MaskPrompt(np.random.default_rng(seed).random(shape) > 0.7))
        else:
            kw["text"] = v
    return PromptSet(**kw)


@pytest.fixture(scope="module")
def small_segmenter() -> Segmenter:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    model, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return Segmenter(model, short_side=64, cache_dir=False)  # small model input: fast examples


@MODEL
@given(image=images(), specs=prompt_specs(), joint=st.booleans(), with_ref=st.booleans())
def test_segment_any_image_any_prompts(
    small_segmenter: Segmenter, image: np.ndarray, specs: list[tuple[str, Any]], joint: bool, with_ref: bool
) -> None:
    seg = small_segmenter
    try:
        seg.set_image(image)
    except ImageError:
        return
    hw = seg.original_size
    try:
        prompts = _build(specs, hw)
        objects = [prompts]
        if with_ref:
            ref = ReferenceImage(np.full((40, 30, 3), 90, np.uint8), PromptSet(points=Points([[5, 5]])))
            objects.append(PromptSet(reference=ref))
        out = seg.segment(objects, joint=joint, labels=False)
    except PromptError:
        return
    assert len(out) == len(objects)
    for s in out:
        assert s.mask.shape == hw and s.mask.dtype == bool and np.isfinite(s.score)
        assert s.low_res_logits is not None and s.low_res_logits.shape == tuple(
            v // 4 for v in seg.geometry.padded_size
        )
    masks, scores, low = seg.predict(point_coords=np.array([[0, 0]]), point_labels=np.array([1]))
    assert masks.shape == (3, *hw) and scores.shape == (3,) and low.shape[0] == 3
