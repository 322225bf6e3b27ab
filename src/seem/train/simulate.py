"""Training-time prompt simulation (seeded, OpenCV drawing): SEEM's visual prompts, corrective clicks, and
Semantic-SAM's click sampling.

Every function takes a ``numpy.random.Generator`` (or a ``torch.Generator`` where the draw is in torch) and is
deterministic given it. Masks are boolean ``[H, W]`` / ``[N, H, W]`` (numpy or torch) on the canvas the model sees;
points are pixel ``(x, y)`` (column, row) unless stated; boxes XYXY pixels with an exclusive right/bottom edge.

SEEM (official ``datasets/visual_sampler``, ``ShapeSampler``; our drawing code, same rules and parameters):

===========  =====================================================================================================
kind         rule
===========  =====================================================================================================
``point``    1–``max_points`` (20) distinct random pixels of the mask, single pixels (not dilated)
``click``    one click as the predictor and the evaluation give it (a 3×3 square, ``click_square``): with probability
             ``click_center_prob`` at the mask pixel farthest from its boundary (the RITM protocol's first click),
             else at a mask pixel drawn with probability proportional to its distance from the boundary (not SEEM's)
``polygon``  a closed Bezier curve (``rad`` 0.2, ``edgy`` 0.05) through 1–``polygon_max_points`` (9) random mask
             pixels of the object's box, drawn 1 px wide and clipped to the box (not to the mask)
``scribble`` 1–5 free-form random strokes (``rand_curve``: brush 3–10 px; ``rand_curve_small``: 2–5 px) starting at
             random mask pixels, intersected with the mask
``circle``   the same generator with thick brushes (``object_like*``: 10–50 px), intersected with the mask
``stroke``   one smooth stroke along the object (``seem.eval.simulate.simulate_stroke``), clipped to the mask
``box``      a jittered tight box (``seem.eval.simulate.simulate_box``), filled
===========  =====================================================================================================

Official training draws ``point``/``polygon``/``scribble``/``circle`` with probability 0.25 each (no boxes, no
strokes); instances under ``min_area`` (10) px or whose drawing came out empty become ``none`` prompts with an
all-False GT (the official sampler zeroes them and the losses skip them).

Corrective clicks (SEEM's ``prepare_next_spaital_mask``, the rule of ``seem.eval.clickers.SEEMClicker``): ``FN = gt ∧
¬pred ∧ ¬prompted``, ``FP = pred ∧ ¬gt ∧ ¬prompted`` (``prompted`` = the prompt's positive ∪ negative pixels), a
positive click iff ``|FN| > |FP|``, at the first row-major maximum of SEEM's distance map
(``seem.eval.clickers.kornia_distance_transform``) of that region, painted as a 3×3 square (``click_square``).

Semantic-SAM (``sample_granularity_clicks``): ``n_clicks`` (60) clicks per image; masks are permuted and repeated to
``n_clicks``, one uniformly random pixel per chosen mask; a click's targets are all masks containing its pixel (a
random ``max_targets`` (6) if more), ordered whole → part (area descending).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seem.eval.clickers import Click, click_square, kornia_argmax
from seem.eval.metrics import as_mask
from seem.eval.simulate import simulate_box, simulate_stroke
from seem.models.seem_types import SpatialPrompts

__all__ = [
    "CIRCLE_PRESETS",
    "SCRIBBLE_PRESETS",
    "TRAIN_PROMPT_KINDS",
    "GranularityClicks",
    "ShapeSampler",
    "ShapeSamplerConfig",
    "StrokePreset",
    "TrainPrompts",
    "add_corrective_clicks",
    "bezier_closed_curve",
    "click_anchor_boxes",
    "corrective_click",
    "draw_box",
    "draw_circle",
    "draw_click",
    "draw_point",
    "draw_polygon",
    "draw_scribble",
    "draw_stroke",
    "jitter_anchor_boxes",
    "random_strokes",
    "sample_granularity_clicks",
]

TRAIN_PROMPT_KINDS = ("point", "polygon", "scribble", "circle", "stroke", "box", "click")


@dataclass(frozen=True)
class StrokePreset:
    """Parameters of the free-form stroke generator (Yu et al., "Free-Form Image Inpainting with Gated
    Convolution"; the official presets).

    Attributes:
        n_vertices: ``[lo, hi)`` number of vertices after the start.
        max_speed: maximum step length (px).
        max_acceleration: ``(speed, angle)`` uniform change per step (px, radians).
        brush_width: ``[lo, hi)`` brush width (px).
        move_ratio: fraction of vertices nudged once after drawing the path.
        max_point_move: a nudged vertex moves by up to this many px per axis.
        max_init_speed: the whole stroke is translated by ``|N(0, max_init_speed / 2)|`` px in a random direction.
    """

    n_vertices: tuple[int, int]
    max_speed: float
    max_acceleration: tuple[float, float]
    brush_width: tuple[float, float]
    move_ratio: float = 0.5
    max_point_move: float = 3.0
    max_init_speed: float = 6.0


SCRIBBLE_PRESETS: dict[str, StrokePreset] = {
    "rand_curve": StrokePreset((10, 30), 20.0, (15.0, 0.5), (3, 10), 0.5, 3.0, 6.0),
    "rand_curve_small": StrokePreset((6, 22), 12.0, (8.0, 0.5), (2.5, 5), 0.5, 1.5, 3.0),
}
CIRCLE_PRESETS: dict[str, StrokePreset] = {
    "object_like": StrokePreset((5, 30), 15.0, (10.0, 1.5), (20, 50), 0.5, 10.0, 10.0),
    "object_like_middle": StrokePreset((5, 15), 8.0, (4.0, 1.5), (20, 50), 0.5, 5.0, 10.0),
    "object_like_small": StrokePreset((5, 20), 7.0, (3.5, 1.5), (10, 30), 0.5, 5.0, 4.0),
}


def _mask(m: Any, name: str = "mask") -> np.ndarray:
    return as_mask(m, name)


def _random_pixels(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, area)`` distinct uniformly drawn pixels of ``mask`` as int64 ``[k, 2]`` ``(x, y)``."""
    flat = np.flatnonzero(mask)
    k = min(int(n), flat.size)
    pick = flat[rng.choice(flat.size, size=k, replace=False)] if k else flat[:0]
    ys, xs = np.divmod(pick, mask.shape[1])
    return np.stack([xs, ys], 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------------------


def draw_point(mask: Any, rng: np.random.Generator, max_points: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """``1 .. min(max_points, area)`` distinct random pixels of the mask → ``(bool [H, W], points (x, y) [k, 2])``."""
    m = _mask(mask)
    area = int(m.sum())
    out = np.zeros_like(m)
    if area == 0:
        return out, np.zeros((0, 2), np.int64)
    k = int(rng.integers(1, min(max_points, area) + 1))
    pts = _random_pixels(m, k, rng)
    out[pts[:, 1], pts[:, 0]] = True
    return out, pts


def draw_click(mask: Any, rng: np.random.Generator, center_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One click inside the mask → ``(bool [H, W] 3×3 square, point (x, y) [1, 2])``; empty outputs for an empty mask.

    With probability ``center_prob`` the click sits at the first row-major maximum of the mask's Euclidean distance
    to its boundary (the image border counts as boundary): the first click of the RITM protocol. Otherwise at a mask
    pixel drawn with probability proportional to that distance, as people click inside objects, seldom on edges
    (only pixels whose 3×3 square lies in the mask, when the mask has any). The square is clipped to the mask.
    """
    import cv2

    m = _mask(mask)
    if not m.any():
        return np.zeros_like(m), np.zeros((0, 2), np.int64)
    dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    if rng.random() < center_prob:
        flat = int(np.argmax(dist))
    else:
        w = dist.ravel().astype(np.float64)
        inner = np.where(w >= 2.0, w, 0.0)  # where the whole 3×3 square lies in the mask, when there is such a place
        w = inner if inner.sum() > 0 else w
        flat = int(rng.choice(w.size, p=w / w.sum()))
    y, x = divmod(flat, m.shape[1])
    return click_square(y, x, m.shape) & m, np.array([[x, y]], np.int64)


def bezier_closed_curve(points: np.ndarray, rad: float = 0.2, edgy: float = 0.05, num: int = 100) -> np.ndarray:
    """A smooth closed curve through ``points`` ``[n, 2]`` (any order): the points are sorted by angle around
    their centroid and joined by cubic Bezier segments whose inner control points lie ``rad`` × the segment length
    along each point's tangent direction (the mean of the adjacent segment directions; ``edgy`` > 0 biases it
    towards the outgoing segment, making corners sharper). Returns float64 ``[n · num, 2]``."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if len(p) == 1:
        return p.copy()
    d = p - p.mean(0)
    p = p[np.argsort(np.arctan2(d[:, 0], d[:, 1]), kind="stable")]
    nxt = np.roll(p, -1, 0)
    seg = nxt - p
    out_ang = np.mod(np.arctan2(seg[:, 1], seg[:, 0]), 2 * np.pi)  # direction of segment i -> i+1
    in_ang = np.roll(out_ang, 1)  # direction of the segment arriving at point i
    w = np.arctan(edgy) / np.pi + 0.5
    tangent = w * out_ang + (1 - w) * in_ang + (np.abs(in_ang - out_ang) > np.pi) * np.pi
    length = np.linalg.norm(seg, axis=1, keepdims=True) * rad
    c1 = p + length * np.stack([np.cos(tangent), np.sin(tangent)], 1)
    t_next = np.roll(tangent, -1)
    c2 = nxt - length * np.stack([np.cos(t_next), np.sin(t_next)], 1)
    t = np.linspace(0.0, 1.0, num)[None, :, None]
    u = 1 - t
    curve = u**3 * p[:, None] + 3 * u**2 * t * c1[:, None] + 3 * u * t**2 * c2[:, None] + t**3 * nxt[:, None]
    return curve.reshape(-1, 2)


def draw_polygon(
    mask: Any,
    rng: np.random.Generator,
    box: Sequence[float] | None = None,
    max_points: int = 9,
    rad: float = 0.2,
    edgy: float = 0.05,
) -> np.ndarray:
    """A thin closed Bezier curve through ``1 .. min(max_points, area)`` random mask pixels, drawn 1 px wide
    (OpenCV polyline) and clipped to ``box`` (XYXY, default the mask's tight box). Returns bool ``[H, W]``."""
    import cv2

    m = _mask(mask)
    out = np.zeros_like(m)
    area = int(m.sum())
    if area == 0:
        return out
    if box is None:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    inbox = np.zeros_like(m)
    inbox[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    k = int(rng.integers(1, min(max_points, area) + 1))
    pts = _random_pixels(m & inbox if (m & inbox).any() else m, k, rng)
    curve = bezier_closed_curve(pts.astype(np.float64), rad, edgy)
    canvas = np.zeros(m.shape, np.uint8)
    poly = np.round(curve).astype(np.int32).reshape(-1, 1, 2)
    if len(poly) == 1:
        canvas[int(poly[0, 0, 1]), int(poly[0, 0, 0])] = 1
    else:
        cv2.polylines(canvas, [poly], True, 1, thickness=1, lineType=cv2.LINE_8)
    return canvas.astype(bool) & inbox


def random_strokes(
    starts_xy: np.ndarray, shape: tuple[int, int], preset: StrokePreset, rng: np.random.Generator
) -> np.ndarray:
    """Free-form random strokes, one per start point (pixel ``(x, y)``), drawn on an ``[H, W]`` canvas.

    Per stroke: ``n ∈ [n_vertices)`` further vertices of a walk whose speed and heading change by uniform
    accelerations (speed clipped to ``[0, max_speed]``); then the stroke is translated by a random velocity and
    half of its vertices are nudged (the official generator's second-frame move); segments are drawn ``width`` px
    wide with round joints (discs of radius ``width // 2 - 1`` at the vertices). Returns bool ``[H, W]``.
    """
    import cv2

    canvas = np.zeros(shape, np.uint8)
    for x0, y0 in np.asarray(starts_xy, np.float64).reshape(-1, 2):
        width = max(int(rng.uniform(*preset.brush_width)), 1)
        n = int(rng.integers(preset.n_vertices[0], preset.n_vertices[1]))
        angle = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0, preset.max_speed)
        acc = rng.uniform(-1.0, 1.0, size=(n, 2)) * np.asarray(preset.max_acceleration)
        xs, ys = [x0], [y0]
        for ds, da in acc:  # at most ~30 vertices: the walk itself is sequential
            speed = float(np.clip(speed + ds, 0.0, preset.max_speed))
            angle += da
            xs.append(xs[-1] + speed * math.cos(angle))
            ys.append(ys[-1] + speed * math.sin(angle))
        pts = np.stack([xs, ys], 1)
        v_speed = abs(rng.normal(0.0, preset.max_init_speed / 2))
        v_angle = rng.uniform(0, 2 * math.pi)
        pts += np.trunc([v_speed * math.cos(v_angle), v_speed * math.sin(v_angle)])
        moved = rng.permutation(len(pts))[: int(len(pts) * preset.move_ratio)]
        if preset.max_point_move >= 1:
            lim = int(preset.max_point_move)
            pts[moved] += rng.integers(-lim, lim, size=(len(moved), 2))
        ipts = np.round(pts).astype(np.int32)
        cv2.polylines(canvas, [ipts.reshape(-1, 1, 2)], False, 1, thickness=width, lineType=cv2.LINE_8)
        r = max(width // 2 - 1, 0)
        for x, y in ipts:
            cv2.circle(canvas, (int(x), int(y)), r, 1, -1)
    return canvas.astype(bool)


def _choose_preset(
    presets: Mapping[str, StrokePreset], probs: Sequence[float] | None, rng: np.random.Generator
) -> StrokePreset:
    names = list(presets)
    if probs is not None and len(probs) != len(names):
        raise ValueError(f"{len(probs)} preset probabilities for {len(names)} presets {names}")
    p = None if probs is None else np.asarray(probs, np.float64) / np.sum(probs)
    return presets[names[int(rng.choice(len(names), p=p))]]


def draw_scribble(
    mask: Any,
    rng: np.random.Generator,
    max_strokes: int = 5,
    presets: Mapping[str, StrokePreset] = SCRIBBLE_PRESETS,
    probs: Sequence[float] | None = (0.5, 0.5),
) -> np.ndarray:
    """``1 .. min(max_strokes, area)`` thin random strokes from random mask pixels, intersected with the mask."""
    m = _mask(mask)
    area = int(m.sum())
    if area == 0:
        return np.zeros_like(m)
    preset = _choose_preset(presets, probs, rng)
    n = int(rng.integers(1, min(max_strokes, area) + 1))
    return random_strokes(_random_pixels(m, n, rng), m.shape, preset, rng) & m


def draw_circle(
    mask: Any,
    rng: np.random.Generator,
    max_strokes: int = 5,
    presets: Mapping[str, StrokePreset] = CIRCLE_PRESETS,
    probs: Sequence[float] | None = (1 / 3, 1 / 3, 1 / 3),
) -> np.ndarray:
    """``min(1 .. max_strokes, area)`` thick-brush strokes ("circles") from random mask pixels, intersected with
    the mask."""
    m = _mask(mask)
    area = int(m.sum())
    if area == 0:
        return np.zeros_like(m)
    preset = _choose_preset(presets, probs, rng)
    n = min(int(rng.integers(1, max_strokes + 1)), area)
    return random_strokes(_random_pixels(m, n, rng), m.shape, preset, rng) & m


def draw_stroke(mask: Any, rng: np.random.Generator) -> np.ndarray:
    """One smooth stroke along the object (``seem.eval.simulate.simulate_stroke``), clipped to the mask."""
    m = _mask(mask)
    if not m.any():
        return np.zeros_like(m)
    return simulate_stroke(m, seed=rng).mask & m


def draw_box(
    mask: Any, rng: np.random.Generator, jitter: float = 0.1, max_jitter_px: float = 20.0
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A noisy box prompt: the tight box with each XYXY coordinate jittered by ``N(0, jitter · side)`` clipped to
    ``±max_jitter_px`` (``seem.eval.simulate.simulate_box``). Returns ``(filled box bool [H, W], box_xyxy)``."""
    m = _mask(mask)
    if not m.any():
        return np.zeros_like(m), (0.0, 0.0, 0.0, 0.0)
    p = simulate_box(m, jitter=jitter, max_jitter_px=max_jitter_px, seed=rng)
    assert p.box_xyxy is not None
    return p.mask, p.box_xyxy


# ---------------------------------------------------------------------------------------------------------------
# SEEM shape sampler
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeSamplerConfig:
    """Settings of ``ShapeSampler`` (official ``STROKE_SAMPLER``; defaults = the SEEM v1 training recipe).

    Attributes:
        kinds, probs: prompt kinds (``TRAIN_PROMPT_KINDS``) and their probabilities (normalised).
        max_candidates: prompts per image (official ``MAX_CANDIDATE`` 10 in training); instances are shuffled.
        min_area: instances smaller than this (px) give a ``none`` prompt.
        max_points, polygon_max_points, scribble_max_strokes, circle_max_strokes: shape sizes.
        scribble_probs, circle_probs: preset probabilities (``SCRIBBLE_PRESETS`` / ``CIRCLE_PRESETS`` order).
        box_jitter, box_max_jitter_px: noisy boxes.
        click_center_prob: a ``click`` prompt's chance of sitting at the mask's innermost pixel (``draw_click``).
    """

    kinds: tuple[str, ...] = ("point", "polygon", "scribble", "circle")
    probs: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    max_candidates: int = 10
    min_area: int = 10
    max_points: int = 20
    polygon_max_points: int = 9
    scribble_max_strokes: int = 5
    scribble_probs: tuple[float, ...] = (0.5, 0.5)
    circle_max_strokes: int = 5
    circle_probs: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    box_jitter: float = 0.1
    box_max_jitter_px: float = 20.0
    click_center_prob: float = 0.5

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.probs) or not self.kinds:
            raise ValueError(f"kinds and probs must be non-empty and equally long, got {self.kinds}, {self.probs}")
        bad = [k for k in self.kinds if k not in TRAIN_PROMPT_KINDS]
        if bad:
            raise ValueError(f"unknown prompt kinds {bad}; choose from {TRAIN_PROMPT_KINDS}")
        if any(p < 0 for p in self.probs) or sum(self.probs) <= 0:
            raise ValueError(f"probs must be >= 0 with a positive sum, got {self.probs}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


@dataclass
class TrainPrompts:
    """Simulated spatial prompts of one image, one per selected instance.

    Attributes:
        instance_ids: long ``[n]``: the index of each prompt's instance in the image's mask list.
        kinds: per prompt its kind (``TRAIN_PROMPT_KINDS``) or ``"none"`` (nothing could be drawn).
        pos_masks: bool ``[n, H, W]``: positive prompt pixels (the drawn shape, then positive click squares).
        neg_masks: bool ``[n, H, W]``: negative pixels (negative corrective click squares).
        gt_masks: bool ``[n, H, W]``: each prompt's target (all-False for ``none`` prompts).
        clicks: per prompt the corrective clicks added so far.
    """

    instance_ids: Tensor
    kinds: list[str]
    pos_masks: Tensor
    neg_masks: Tensor
    gt_masks: Tensor
    clicks: list[list[Click]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.kinds)
        if not self.clicks:
            self.clicks = [[] for _ in range(n)]
        for name in ("pos_masks", "neg_masks", "gt_masks"):
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[0] != n or t.dtype != torch.bool:
                raise ValueError(f"{name} must be bool [{n}, H, W], got {tuple(t.shape)} {t.dtype}")

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def valid(self) -> Tensor:
        """bool ``[n]``: prompts with a drawable shape (kind != ``none``)."""
        return torch.as_tensor([k != "none" for k in self.kinds], dtype=torch.bool)

    def spatial_prompts(self, device: torch.device | str | None = None) -> SpatialPrompts:
        """The ``SpatialPrompts`` the SEEM decoder consumes (masks on this canvas; pad them to the padded canvas
        first with ``padded`` if the canvas is smaller)."""
        neg = self.neg_masks if bool(self.neg_masks.any()) else None
        return SpatialPrompts(pos_masks=self.pos_masks.to(device), neg_masks=None if neg is None else neg.to(device))

    def padded(self, size: tuple[int, int]) -> TrainPrompts:
        """Zero-pad all maps bottom/right to ``size`` ``(Hp, Wp)``."""
        h, w = self.pos_masks.shape[-2:]
        hp, wp = int(size[0]), int(size[1])
        if hp < h or wp < w:
            raise ValueError(f"cannot pad {h}x{w} maps to the smaller {hp}x{wp}")

        def pad(t: Tensor) -> Tensor:
            return torch.nn.functional.pad(t, (0, wp - w, 0, hp - h))

        return replace(
            self,
            pos_masks=pad(self.pos_masks),
            neg_masks=pad(self.neg_masks),
            gt_masks=pad(self.gt_masks),
            clicks=[list(c) for c in self.clicks],
        )


class ShapeSampler:
    """SEEM's training prompt sampler (``ShapeSampler``): picks up to ``max_candidates`` shuffled instances and
    draws each as one kind chosen with ``probs``. Call with the image's masks and a ``numpy`` generator."""

    def __init__(self, config: ShapeSamplerConfig | None = None) -> None:
        self.config = config or ShapeSamplerConfig()

    def draw(self, kind: str, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one prompt of ``kind`` for a bool ``[H, W]`` mask (see the module table)."""
        c = self.config
        if kind == "point":
            return draw_point(mask, rng, c.max_points)[0]
        if kind == "click":
            return draw_click(mask, rng, c.click_center_prob)[0]
        if kind == "polygon":
            return draw_polygon(mask, rng, None, c.polygon_max_points)
        if kind == "scribble":
            return draw_scribble(mask, rng, c.scribble_max_strokes, SCRIBBLE_PRESETS, c.scribble_probs)
        if kind == "circle":
            return draw_circle(mask, rng, c.circle_max_strokes, CIRCLE_PRESETS, c.circle_probs)
        if kind == "stroke":
            return draw_stroke(mask, rng)
        if kind == "box":
            return draw_box(mask, rng, c.box_jitter, c.box_max_jitter_px)[0]
        raise ValueError(f"unknown prompt kind {kind!r}; choose from {TRAIN_PROMPT_KINDS}")

    def __call__(self, masks: Any, rng: np.random.Generator, candidates: Sequence[int] | None = None) -> TrainPrompts:
        """Sample prompts for bool ``[N, H, W]`` masks (numpy or torch).

        Args:
            masks: the image's instance masks.
            rng: numpy generator (the only source of randomness).
            candidates: restrict the choice to these instance indices (e.g. things only); default all.

        Returns:
            ``TrainPrompts`` with ``min(max_candidates, len(candidates))`` prompts (one all-False ``none`` prompt
            when there is no instance, as official).
        """
        m = as_mask(masks, "masks", ndim=3)
        c = self.config
        n, h, w = m.shape
        pool = np.arange(n) if candidates is None else np.asarray(list(candidates), np.int64)
        if pool.size and (pool.min() < 0 or pool.max() >= n):
            raise ValueError(f"candidates must index the {n} masks")
        if pool.size == 0:
            z = torch.zeros(1, h, w, dtype=torch.bool)
            return TrainPrompts(torch.full((1,), -1, dtype=torch.long), ["none"], z, z.clone(), z.clone())
        chosen = rng.permutation(pool)[: c.max_candidates]
        p = np.asarray(c.probs, np.float64) / np.sum(c.probs)
        kind_idx = rng.choice(len(c.kinds), size=len(chosen), p=p)
        pos = np.zeros((len(chosen), h, w), bool)
        gt = np.zeros((len(chosen), h, w), bool)
        kinds: list[str] = []
        for i, (inst, ki) in enumerate(zip(chosen, kind_idx, strict=True)):
            mask = m[inst]
            kind = c.kinds[int(ki)]
            shape = self.draw(kind, mask, rng) if int(mask.sum()) >= c.min_area else None
            if shape is None or not shape.any():
                kinds.append("none")
                continue
            kinds.append(kind)
            pos[i] = shape
            gt[i] = mask
        pos_t = torch.from_numpy(pos)
        return TrainPrompts(
            torch.as_tensor(chosen, dtype=torch.long), kinds, pos_t, torch.zeros_like(pos_t), torch.from_numpy(gt)
        )


# ---------------------------------------------------------------------------------------------------------------
# corrective clicks
# ---------------------------------------------------------------------------------------------------------------


def corrective_click(gt: Any, pred: Any, prompted: Any = None) -> Click | None:
    """SEEM's next corrective click for one prompt (the rule of ``SEEMClicker.propose_next``).

    Args:
        gt, pred: bool ``[H, W]`` target and current prediction.
        prompted: bool ``[H, W]`` pixels already given as prompt (positive ∪ negative; SEEMClicker: the 3×3 squares
            of its clicks) — excluded from both error regions. None = nothing.

    Returns:
        ``Click(y, x, is_positive)`` or None when the chosen error region is empty (nothing to correct).
    """
    g = as_mask(gt, "gt")
    p = as_mask(pred, "pred", shape=g.shape)
    c = np.zeros_like(g) if prompted is None else as_mask(prompted, "prompted", shape=g.shape)
    fn = g & ~p & ~c
    fp = p & ~g & ~c
    positive = int(np.count_nonzero(fn)) > int(np.count_nonzero(fp))
    region = fn if positive else fp
    if not region.any():
        return None
    y, x, _ = kornia_argmax(region)  # = the first row-major maximum of kornia_distance_transform(region)
    return Click(y, x, positive)


@functools.lru_cache(maxsize=1)
def _click_pool() -> ThreadPoolExecutor:
    """Threads for ``add_corrective_clicks`` (one per CPU, at most 8)."""
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="seem-clicks")


def add_corrective_clicks(prompts: TrainPrompts, pred_masks: Any) -> TrainPrompts:
    """One corrective click per drawable prompt, from bool predictions ``[n, H, W]`` on the prompts' canvas
    (threshold and upsample the selected logits first). Returns new ``TrainPrompts`` (the input is unchanged);
    each click is added as a 3×3 square to ``pos_masks`` or ``neg_masks`` and recorded in ``clicks``."""
    pred = as_mask(pred_masks, "pred_masks", ndim=3, shape=tuple(prompts.pos_masks.shape))
    dev = prompts.pos_masks.device
    pos = prompts.pos_masks.detach().cpu().numpy().copy()
    neg = prompts.neg_masks.detach().cpu().numpy().copy()
    gt = prompts.gt_masks.detach().cpu().numpy()
    clicks = [list(c) for c in prompts.clicks]
    shape = gt.shape[1:]
    todo = [i for i, kind in enumerate(prompts.kinds) if kind != "none"]

    def one(i: int) -> Click | None:
        return corrective_click(gt[i], pred[i], pos[i] | neg[i])

    # OpenCV and numpy release the GIL: the prompts' clicks are found in parallel (same result as in order)
    found = list(_click_pool().map(one, todo)) if len(todo) > 1 else [one(i) for i in todo]
    for i, click in zip(todo, found, strict=True):
        if click is None:
            continue
        sq = click_square(click.y, click.x, shape)  # type: ignore[arg-type]
        if click.is_positive:
            pos[i] |= sq
        else:
            neg[i] |= sq
        clicks[i].append(click)
    return replace(
        prompts, pos_masks=torch.from_numpy(pos).to(dev), neg_masks=torch.from_numpy(neg).to(dev), clicks=clicks
    )


# ---------------------------------------------------------------------------------------------------------------
# Semantic-SAM clicks
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class GranularityClicks:
    """Semantic-SAM training clicks of one image.

    Attributes:
        points_xy: float32 ``[C, 2]`` pixel ``(x, y)`` (integer pixel indices) of each click.
        source: long ``[C]``: the mask each click was drawn from.
        targets: per click the indices of all masks containing it (at most ``max_targets``), area descending
            (whole → part); the ``click_targets`` of ``GranularityTargets``.
    """

    points_xy: np.ndarray
    source: np.ndarray
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.targets)


def sample_granularity_clicks(
    masks: Any, rng: np.random.Generator, n_clicks: int = 60, max_targets: int = 6
) -> GranularityClicks:
    """Semantic-SAM's click sampling (``MAX_NUM_INSTANCE`` 60, ``NUM_INTERACTIVE_TOKENS`` 6).

    Non-empty masks are permuted and repeated until ``n_clicks`` are chosen (the first ``n_clicks`` when there are
    more); each click is a uniform random pixel of its mask; its targets are every mask containing that pixel
    (a random ``max_targets`` of them when more), ordered by area descending (ties by index).
    """
    m = as_mask(masks, "masks", ndim=3)
    n = m.shape[0]
    areas = m.reshape(n, m.shape[1] * m.shape[2]).sum(1)  # (n, -1) fails for n = 0
    nonempty = np.flatnonzero(areas > 0)
    if nonempty.size == 0 or n_clicks < 1:
        return GranularityClicks(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), [])
    order = rng.permutation(nonempty)
    reps = -(-n_clicks // order.size)
    source = np.tile(order, reps)[:n_clicks]
    pts = np.zeros((len(source), 2), np.int64)
    cache: dict[int, np.ndarray] = {}
    for i, s in enumerate(source):
        flat = cache.get(int(s))
        if flat is None:
            flat = cache[int(s)] = np.flatnonzero(m[s])
        y, x = divmod(int(flat[int(rng.integers(flat.size))]), m.shape[2])
        pts[i] = (x, y)
    inside = m[:, pts[:, 1], pts[:, 0]]  # [N, C]
    targets: list[list[int]] = []
    for i in range(len(source)):
        idx = np.flatnonzero(inside[:, i])
        if idx.size > max_targets:
            idx = np.sort(rng.choice(idx, size=max_targets, replace=False))
        targets.append(sorted((int(j) for j in idx), key=lambda j: (-int(areas[j]), j)))
    return GranularityClicks(pts.astype(np.float32), source.astype(np.int64), targets)


def click_anchor_boxes(points_xy: Any, canvas_hw: tuple[int, int], half_size: float = 3.0) -> Tensor:
    """Training anchor boxes of clicks (Semantic-SAM: a ±``half_size`` px box around the pixel): ``[C, 2]`` pixel
    ``(x, y)`` → float32 ``[C, 4]`` ``(cx, cy, w, h)`` normalised to the canvas ``(H, W)`` (the decoder's
    ``boxes`` input)."""
    p = torch.as_tensor(np.asarray(points_xy), dtype=torch.float32).reshape(-1, 2)
    h, w = float(canvas_hw[0]), float(canvas_hw[1])
    size = torch.tensor([2 * half_size / w, 2 * half_size / h]).expand_as(p)
    return torch.cat([p / torch.tensor([w, h]), size], 1)


def jitter_anchor_boxes(
    boxes: Tensor,
    generator: torch.Generator | None = None,
    noise_scale: float = 0.4,
    is_point: Tensor | bool = True,
    point_scale: float = 0.01,
) -> Tensor:
    """Semantic-SAM's training box noise: ``box += U(−1, 1) · (w/2, h/2, w, h) · noise_scale`` (the range further
    × ``point_scale`` for clicks), clamped to ``[0, 1]``. ``boxes`` ``[..., 4]`` cxcywh."""
    diff = torch.cat([boxes[..., 2:] / 2, boxes[..., 2:]], -1)
    pt = torch.as_tensor(is_point, dtype=torch.bool, device=boxes.device)
    scale = torch.where(pt, point_scale, 1.0).to(diff)
    diff = diff * (scale.unsqueeze(-1) if scale.dim() else scale)
    if generator is None:
        u = torch.rand(boxes.shape, device=boxes.device)
    else:
        u = torch.rand(boxes.shape, generator=generator, device=generator.device).to(boxes.device)
    return (boxes + (u * 2 - 1).to(boxes) * diff * noise_scale).clamp(0.0, 1.0)
