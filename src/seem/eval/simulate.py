"""Simulated single prompts from a ground-truth mask (point, box, stroke, scribble, polygon), seeded.

These feed the single-prompt table ("1-IoU per prompt type": one prompt, one predicted mask, its IoU).
Every simulator takes the GT as a boolean ``[H, W]`` mask (numpy or torch) and a ``seed`` (an int, or a
``numpy.random.Generator`` to share one stream); the same GT and seed always give the same prompt.

Coordinates of the returned prompts follow the project's prompt API:

- points and polyline / polygon vertices are pixel ``(x, y)`` = (column, row) float32 arrays ``[N, 2]``, pixel
  centres at integer coordinates;
- boxes are XYXY pixel boxes ``(x0, y0, x1, y1)`` with an exclusive right/bottom edge, i.e. the tight box of a
  mask is ``(min col, min row, max col + 1, max row + 1)`` (detectron2's ``BitMasks.get_bounding_boxes``);
- ``mask`` is the prompt rasterised at the GT's size (what a mask-based prompt encoder such as SEEM's visual
  sampler receives).

The rules are ours (documented per function) and modelled on SEEM's training samplers
(``datasets/visual_sampler``: random-walk "rand_curve" scribbles clipped to the object, polygons from the
object outline, jittered boxes); SEEM's own evaluation sampler draws them from the unseeded global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from seem.eval.metrics import as_mask

__all__ = [
    "PROMPT_KINDS",
    "SimulatedPrompt",
    "simulate_box",
    "simulate_point",
    "simulate_polygon",
    "simulate_prompt",
    "simulate_scribble",
    "simulate_stroke",
]

PROMPT_KINDS = ("point", "box", "stroke", "scribble", "polygon")


@dataclass(frozen=True)
class SimulatedPrompt:
    """One simulated prompt.

    Attributes:
        kind: one of ``PROMPT_KINDS``.
        mask: bool ``[H, W]``, the prompt rasterised (point: the pixel; box: the filled box; stroke / scribble:
            the drawn strokes clipped to the GT; polygon: the filled polygon).
        points_xy: float32 ``[N, 2]`` pixel ``(x, y)``: the click (N = 1), the box corners ``(x0, y0), (x1, y1)``,
            the vertices of all strokes (concatenated) or the polygon vertices.
        paths_xy: per stroke / polygon, float32 ``[Ni, 2]`` ``(x, y)`` vertices (empty for point and box).
        box_xyxy: XYXY pixel box (exclusive right/bottom edge) for ``kind == "box"``, else None.
        negative_mask: bool ``[H, W]`` background scribbles (only ``simulate_scribble(negative=...)``), else None.
    """

    kind: str
    mask: np.ndarray
    points_xy: np.ndarray
    paths_xy: tuple[np.ndarray, ...] = ()
    box_xyxy: tuple[float, float, float, float] | None = None
    negative_mask: np.ndarray | None = None


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _gt(gt: Any) -> np.ndarray:
    g = as_mask(gt, "gt")
    if not g.any():
        raise ValueError("cannot simulate a prompt for an empty GT mask")
    return g


def _edt(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance to the nearest pixel outside ``mask`` (image border = outside), float32."""
    import cv2

    p = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(p, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def simulate_point(gt: Any, *, mode: str = "center", seed: int | np.random.Generator | None = 0) -> SimulatedPrompt:
    """One positive click.

    ``mode="center"``: the first row-major maximum of the Euclidean distance to the object's outside (RITM's
    first click; deterministic). ``mode="random"``: a uniformly drawn object pixel.
    """
    g = _gt(gt)
    if mode == "center":
        flat = int(np.argmax(_edt(g)))
        y, x = divmod(flat, g.shape[1])
    elif mode == "random":
        ys, xs = np.nonzero(g)
        i = int(_rng(seed).integers(ys.size))
        y, x = int(ys[i]), int(xs[i])
    else:
        raise ValueError(f"mode must be 'center' or 'random', got {mode!r}")
    m = np.zeros_like(g)
    m[y, x] = True
    return SimulatedPrompt("point", m, np.array([[x, y]], np.float32))


def simulate_box(
    gt: Any, *, jitter: float = 0.0, max_jitter_px: float = 20.0, seed: int | np.random.Generator | None = 0
) -> SimulatedPrompt:
    """The object's tight XYXY box (exclusive right/bottom edge), optionally jittered.

    ``jitter``: standard deviation of the Gaussian noise added to each coordinate, as a fraction of the box
    side along that axis, each offset clipped to ``±max_jitter_px`` (the SAM-style noisy box); the box is
    then clipped to the image and kept at least one pixel wide. ``jitter=0`` gives the tight box.
    """
    g = _gt(gt)
    h, w = g.shape
    rows = np.flatnonzero(g.any(1))
    cols = np.flatnonzero(g.any(0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)
    if jitter > 0:
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        noise = np.clip(_rng(seed).normal(0.0, jitter, 4) * side, -max_jitter_px, max_jitter_px)
        box = np.round(box + noise)
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        box[2] = max(box[2], min(box[0] + 1, w))
        box[0] = min(box[0], box[2] - 1)
        box[3] = max(box[3], min(box[1] + 1, h))
        box[1] = min(box[1], box[3] - 1)
    x0, y0, x1, y1 = (float(v) for v in box)
    m = np.zeros_like(g)
    m[int(y0) : int(y1), int(x0) : int(x1)] = True
    return SimulatedPrompt("box", m, np.array([[x0, y0], [x1, y1]], np.float32), box_xyxy=(x0, y0, x1, y1))


def _draw_paths(shape: tuple[int, int], paths: list[np.ndarray], width: int) -> np.ndarray:
    import cv2

    canvas = np.zeros(shape, np.uint8)
    for p in paths:
        pts = np.round(p).astype(np.int32).reshape(-1, 1, 2)
        if len(pts) == 1:
            cv2.circle(canvas, (int(pts[0, 0, 0]), int(pts[0, 0, 1])), max(width // 2, 0), 1, -1)
        else:
            cv2.polylines(canvas, [pts], False, 1, thickness=max(width, 1), lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _default_width(area: int) -> int:
    return int(max(3, round(0.02 * math.sqrt(area))))


def simulate_stroke(
    gt: Any, *, seed: int | np.random.Generator | None = 0, width: int | None = None, n_vertices: int = 12
) -> SimulatedPrompt:
    """One smooth stroke through the object, as a user drags along it.

    Rule: the stroke runs along the object's principal axis (PCA of its pixel coordinates) through its
    innermost pixel (the Euclidean distance maximum), over the part of that line that stays inside the object
    eroded by half the brush width; its ``n_vertices`` vertices get a small seeded perpendicular wobble
    (±10 % of the local inner distance). Drawn with ``width`` px (default ``max(3, 2 % of √area)``) and clipped
    to the GT. Falls back to a single dot when the object is thinner than the brush.
    """
    g = _gt(gt)
    rng = _rng(seed)
    width = width or _default_width(int(g.sum()))
    dist = _edt(g)
    y0, x0 = divmod(int(np.argmax(dist)), g.shape[1])
    ys, xs = np.nonzero(g)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    cov = np.cov((pts - pts.mean(0)).T) if len(pts) > 1 else np.eye(2)
    evals, evecs = np.linalg.eigh(np.atleast_2d(cov))
    axis = evecs[:, int(np.argmax(evals))]
    inner = dist > max(width / 2.0, 1.0)
    if not inner[y0, x0]:
        inner = dist >= dist[y0, x0]

    def extent(sign: float) -> float:
        t = 0.0
        while True:
            nx, ny = x0 + sign * (t + 1) * axis[0], y0 + sign * (t + 1) * axis[1]
            iy, ix = int(np.rint(ny)), int(np.rint(nx))
            if not (0 <= iy < g.shape[0] and 0 <= ix < g.shape[1]) or not inner[iy, ix]:
                return t
            t += 1

    t_neg, t_pos = extent(-1.0), extent(1.0)
    ts = np.linspace(-t_neg, t_pos, max(n_vertices, 2))
    path = np.stack([x0 + ts * axis[0], y0 + ts * axis[1]], 1)
    normal = np.array([-axis[1], axis[0]])
    for i in range(1, len(path) - 1):
        iy, ix = int(np.rint(path[i, 1])), int(np.rint(path[i, 0]))
        amp = 0.1 * float(dist[iy, ix]) if 0 <= iy < g.shape[0] and 0 <= ix < g.shape[1] else 0.0
        path[i] += normal * rng.uniform(-amp, amp)
    path = path.astype(np.float32)
    if t_neg + t_pos < 1:
        path = np.array([[x0, y0]], np.float32)
    mask = _draw_paths(g.shape, [path], width) & g
    if not mask.any():
        mask[y0, x0] = True
    return SimulatedPrompt("stroke", mask, path, paths_xy=(path,))


def _random_walk(
    start_xy: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, n_vertices: int, step: float
) -> np.ndarray:
    """A random-walk polyline from ``start_xy`` whose vertices stay in ``allowed``: the heading changes by a
    Gaussian turn (σ = 30°) per vertex; a vertex that would leave ``allowed`` is retried with other turns and
    the walk ends when none fits."""
    h, w = allowed.shape
    heading = rng.uniform(0, 2 * math.pi)
    pts = [start_xy.astype(np.float64)]
    for _ in range(n_vertices - 1):
        for attempt in range(8):
            turn = rng.normal(0.0, math.radians(30)) + (math.pi * attempt / 4 if attempt else 0.0)
            a = heading + turn
            nxt = pts[-1] + step * np.array([math.cos(a), math.sin(a)])
            ix, iy = int(np.rint(nxt[0])), int(np.rint(nxt[1]))
            if 0 <= iy < h and 0 <= ix < w and allowed[iy, ix]:
                heading = a
                pts.append(nxt)
                break
        else:
            break
    return np.asarray(pts, np.float32)


def simulate_scribble(
    gt: Any,
    *,
    seed: int | np.random.Generator | None = 0,
    n_strokes: int = 3,
    n_vertices: tuple[int, int] = (6, 22),
    width: int | None = None,
    negative: bool = False,
    band: int | None = None,
) -> SimulatedPrompt:
    """Random-walk scribbles inside the object (SEEM's "rand_curve" idea), optionally with background ones.

    Rule: ``n_strokes`` walks start at distinct object pixels drawn uniformly; each has a random number of
    vertices in ``n_vertices`` (inclusive), a step of ``max(2, 4 % of √area)`` px, and stays inside the object;
    strokes are drawn with ``width`` px (default ``max(3, 2 % of √area)``) and clipped to the GT.
    ``negative=True`` also draws as many walks in the background band within ``band`` px of the object
    (default: 10 % of √area, at least 5 px), clipped to that band, returned as ``negative_mask``.
    """
    g = _gt(gt)
    rng = _rng(seed)
    area = int(g.sum())
    width = width or _default_width(area)
    step = max(2.0, 0.04 * math.sqrt(area))

    def walks(allowed: np.ndarray) -> list[np.ndarray]:
        ys, xs = np.nonzero(allowed)
        if ys.size == 0:
            return []
        starts = rng.choice(ys.size, size=min(n_strokes, ys.size), replace=False)
        out = []
        for s in starts:
            nv = int(rng.integers(n_vertices[0], n_vertices[1] + 1))
            out.append(_random_walk(np.array([xs[s], ys[s]], np.float64), allowed, rng, nv, step))
        return out

    paths = walks(g)
    mask = _draw_paths(g.shape, paths, width) & g
    neg_mask = None
    neg_paths: list[np.ndarray] = []
    if negative:
        import cv2

        r = band if band is not None else max(5, int(np.rint(0.1 * math.sqrt(area))))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        ring = (cv2.dilate(g.astype(np.uint8), k) > 0) & ~g
        neg_paths = walks(ring)
        neg_mask = _draw_paths(g.shape, neg_paths, width) & ring
    all_paths = tuple(paths) + tuple(neg_paths)
    pts = np.concatenate(all_paths, 0) if all_paths else np.zeros((0, 2), np.float32)
    return SimulatedPrompt("scribble", mask, pts, paths_xy=tuple(paths), negative_mask=neg_mask)


def simulate_polygon(
    gt: Any,
    *,
    seed: int | np.random.Generator | None = 0,
    epsilon: float = 0.01,
    jitter_px: float = 0.0,
) -> SimulatedPrompt:
    """A polygon around the object, as an annotator clicks its outline.

    Rule: the outer contour of the largest connected component (OpenCV ``findContours``, external), simplified
    with Douglas–Peucker at ``epsilon`` × perimeter (``approxPolyDP``); each vertex then moves by seeded
    Gaussian noise of σ = ``jitter_px`` (0 = none), clipped to the image. ``mask`` is the filled polygon (not
    clipped to the GT: the prompt is the polygon).
    """
    import cv2

    g = _gt(gt)
    rng = _rng(seed)
    contours, _ = cv2.findContours(g.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    approx = cv2.approxPolyDP(contour, epsilon * cv2.arcLength(contour, True), True).reshape(-1, 2)
    poly = approx.astype(np.float64)
    if jitter_px > 0:
        poly = poly + rng.normal(0.0, jitter_px, poly.shape)
        poly[:, 0] = np.clip(poly[:, 0], 0, g.shape[1] - 1)
        poly[:, 1] = np.clip(poly[:, 1], 0, g.shape[0] - 1)
    poly32 = poly.astype(np.float32)
    canvas = np.zeros(g.shape, np.uint8)
    cv2.fillPoly(canvas, [np.round(poly).astype(np.int32).reshape(-1, 1, 2)], 1)
    return SimulatedPrompt("polygon", canvas.astype(bool), poly32, paths_xy=(poly32,))


def simulate_prompt(
    kind: str, gt: Any, *, seed: int | np.random.Generator | None = 0, **kwargs: Any
) -> SimulatedPrompt:
    """Dispatch to ``simulate_<kind>`` (``kind`` in ``PROMPT_KINDS``) with the remaining keyword arguments."""
    fns: dict[str, Callable[..., SimulatedPrompt]] = {
        "point": simulate_point,
        "box": simulate_box,
        "stroke": simulate_stroke,
        "scribble": simulate_scribble,
        "polygon": simulate_polygon,
    }
    if kind not in fns:
        raise ValueError(f"kind must be one of {PROMPT_KINDS}, got {kind!r}")
    return fns[kind](gt, seed=seed, **kwargs)
