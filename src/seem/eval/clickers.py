"""Click simulators of the interactive-segmentation evaluation protocols (RITM and SEEM), per round.

A runner drives a clicker like this (one clicker per object; ``reset()`` to reuse it)::

    clicker = RITMClicker()                      # or SEEMClicker()
    pred = np.zeros_like(gt)                     # nothing predicted before the first click
    for _ in range(max_clicks):
        click = clicker.next_click(gt, pred, void)   # Click(y, x, is_positive) or None (SEEM: no click)
        ...                                      # feed clicker.clicks (or SEEM's click masks) to the model
        pred = model_output > threshold          # bool [H, W]

Coordinates: a ``Click`` holds ``(y, x)`` = (row, column), 0-based pixel indices in the frame of the masks it
was computed from; ``Click.xy`` gives the ``(x, y)`` pixel point of the project's prompt API. Masks are
boolean ``[H, W]`` (numpy or torch; torch is converted); ``void`` pixels are "don't care" (see each protocol).

Both protocols are deterministic (no random draws; a ``seed`` is only used by ``SEEMClicker(mode=
"best_random")``, which then draws from its own seeded generator, restarted by ``reset()``): the same masks
always give the same clicks. Exact reproduction of the official rules, ties included, is checked against the
peers' own outputs in ``tests/test_eval_clickers.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seem.eval.metrics import as_mask

__all__ = [
    "Click",
    "ClickProposal",
    "Clicker",
    "RITMClicker",
    "SEEMClicker",
    "click_square",
    "kornia_argmax",
    "kornia_distance_transform",
    "ritm_error_distance",
]


@dataclass(frozen=True)
class Click:
    """One simulated click. ``y``, ``x``: pixel row and column (0-based); ``is_positive``: True = foreground."""

    y: int
    x: int
    is_positive: bool

    @property
    def yx(self) -> tuple[int, int]:
        return (self.y, self.x)

    @property
    def xy(self) -> tuple[int, int]:
        """The click as a pixel point ``(x, y)`` (the convention of the prompt API)."""
        return (self.x, self.y)


@dataclass(frozen=True)
class ClickProposal:
    """What a clicker would do next, without changing its state.

    Attributes:
        click: the click the rule computes (also when it is not placed).
        placed: False when the protocol adds no click this round (SEEM: IoU ≥ 0.925); RITM always places.
        info: diagnostics of the rule (error-region sizes, distance maxima, IoU, ...), for tests and logs.
    """

    click: Click
    placed: bool
    info: dict[str, Any] = field(default_factory=dict)


def _region_bbox(region: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(region.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _padded_crop(region: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """uint8 crop of the region's bounding box with a one-pixel zero ring, and the crop's (y0, x0) offset of
    the ring's inner corner in the image; None for an empty region.

    The nearest pixel outside the region (image border = outside) always lies within that ring, for any
    distance that does not grow when a coordinate moves towards the pixel (Euclidean, chessboard), so
    distance transforms of the crop equal those of the whole image.
    """
    bb = _region_bbox(region)
    if bb is None:
        return None
    y0, y1, x0, x1 = bb
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
    crop[1:-1, 1:-1] = region[y0:y1, x0:x1]
    return crop, y0, x0


def _ritm_dt_crop(region: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    import cv2

    pc = _padded_crop(region)
    if pc is None:
        return None
    crop, y0, x0 = pc
    return cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1], y0, x0


def ritm_error_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each ``region`` pixel to the nearest pixel outside it, the image border
    counting as outside (RITM: 1-px zero padding, ``cv2.distanceTransform(DIST_L2, DIST_MASK_PRECISE)``).

    ``region``: bool ``[H, W]``. Returns float32 ``[H, W]`` (0 outside the region). Only the bounding box of the
    region plus a one-pixel ring is transformed, which gives identical values.
    """
    out = np.zeros(region.shape, np.float32)
    r = _ritm_dt_crop(region)
    if r is not None:
        dt, y0, x0 = r
        out[y0 : y0 + dt.shape[0], x0 : x0 + dt.shape[1]] = dt
    return out


# kornia 0.7.0 ``distance_transform`` (kernel_size 3, h = 0.35) --------------------------------------------------

_KORNIA_H = 0.35
# neighbour offsets (dy, dx) in kernel row-major order; bit i of a neighbourhood code = neighbour i
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

# float32(-h·log(n_edge·e^(-1/h) + n_corner·e^(-√2/h))) computed in float64, indexed [n_edge][n_corner]: the
# soft-min term of kornia's cascade for a pixel reached in the current wave whose already-reached neighbours
# are n_edge 4-neighbours and n_corner diagonal ones (checked against that formula by the tests).
_SOFT_MIN_BY_COUNTS = (
    (0.0, 1.4142135381698608, 1.171612024307251, 1.0296992063522339, 0.9290105104446411),
    (1.0, 0.9065032005310059, 0.8327901363372803, 0.7719331979751587, 0.7201070189476013),
    (0.7573984861373901, 0.7075372934341431, 0.663901686668396, 0.6251081228256226, 0.5901886224746704),
    (0.6154857277870178, 0.5814685821533203, 0.5504667162895203, 0.5219888687133789, 0.495654821395874),
    (0.5147969722747803, 0.4889792203903198, 0.4649357795715332, 0.44243839383125305, 0.42130017280578613),
)


@functools.cache
def _soft_min_table() -> np.ndarray:
    """float32 ``[256]``: the soft-min term for each 8-bit pattern of already-reached neighbours."""
    codes = np.arange(256)
    bits = (codes[:, None] >> np.arange(8)) & 1
    is_edge = np.array([dy == 0 or dx == 0 for dy, dx in _NEIGHBOURS])
    n_edge = bits[:, is_edge].sum(1)
    n_corner = bits[:, ~is_edge].sum(1)
    return np.asarray(_SOFT_MIN_BY_COUNTS, dtype=np.float32)[n_edge, n_corner]


def _chessboard_crop(region: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """Chessboard distance (float32 integers) of the padded crop (ring included), and the offset."""
    import cv2

    pc = _padded_crop(region)
    if pc is None:
        return None
    crop, y0, x0 = pc
    return cv2.distanceTransform(crop, cv2.DIST_C, 3), y0, x0


def _kornia_values(d: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """kornia's value at pixels ``(ys, xs)`` (inside the ring) of a padded chessboard-distance crop ``d``."""
    here = d[ys, xs]
    code = np.zeros(ys.shape, np.uint8)
    for i, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (d[ys + dy, xs + dx] < here).astype(np.uint8) << np.uint8(i)
    wave = here.astype(np.int64) - 1
    return ((3 * wave) // 2).astype(np.float32) + _soft_min_table()[code]


def kornia_distance_transform(region: np.ndarray) -> np.ndarray:
    """SEEM's distance map of a region: ``kornia.contrib.distance_transform(~pad(region, 1))`` cropped back
    (kornia 0.7.0, the version SEEM pins), computed in closed form instead of by its cascade.

    kornia's cascade reaches, in wave ``i``, exactly the pixels at chessboard distance ``i + 1`` from the
    outside (3×3 neighbourhood growth), and gives each the value ``floor(3i/2) + (-h·log S)`` where ``S`` is
    the kernel-weighted count of its neighbours reached earlier. So the map is the chessboard distance
    (OpenCV ``DIST_C``, exact) plus a table of the soft-min term indexed by the neighbour pattern. Values are
    roughly 1.4–1.5× the Euclidean distance and exact ties are common. The soft-min term lies in
    [0.42, 1.42), so a deeper wave always has larger values: the maximum lies in the deepest wave.

    Rounding: kornia sums the kernel weights with ``conv2d`` in float32, whose summation order depends on the
    CPU kernel, so two neighbour patterns with the same numbers of edge and corner neighbours can differ by one
    float32 ulp from machine to machine (and break exact ties differently). Here the term depends only on
    those two counts and is computed in float64 then rounded (``_SOFT_MIN_BY_COUNTS``): the map is the same on
    every machine, equals kornia's values up to 1–2 ulps (kornia's own float32 log and sum differ by that between
    CPUs), and keeps such ties exact (first in row-major order wins).

    ``region``: bool ``[H, W]``; the image border counts as outside. Returns float32 ``[H, W]`` (0 outside).
    """
    out = np.zeros(region.shape, np.float32)
    r = _chessboard_crop(region)
    if r is None:
        return out
    d, y0, x0 = r
    ys, xs = np.nonzero(d)
    out[ys - 1 + y0, xs - 1 + x0] = _kornia_values(d, ys, xs)
    return out


def kornia_argmax(region: np.ndarray) -> tuple[int, int, float]:
    """First row-major maximum of ``kornia_distance_transform(region)`` and its value, evaluating only the
    deepest wave (where the maximum lies); ``(0, 0, 0.0)`` for an empty region (the argmax of a zero map)."""
    r = _chessboard_crop(region)
    if r is None:
        return 0, 0, 0.0
    d, y0, x0 = r
    ys, xs = np.nonzero(d == d.max())  # row-major order
    vals = _kornia_values(d, ys, xs)
    i = int(np.argmax(vals))
    return int(ys[i]) - 1 + y0, int(xs[i]) - 1 + x0, float(vals[i])


def click_square(y: int, x: int, shape: tuple[int, int], radius: int = 1) -> np.ndarray:
    """Bool ``[H, W]`` map of the ``(2·radius+1)²`` square centred on pixel ``(y, x)``, clipped at the border
    (SEEM's 3×3 click: one-hot map convolved with ones(3, 3), padding 1, > 0)."""
    m = np.zeros(shape, bool)
    m[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1] = True
    return m


class Clicker:
    """Base class: state = the clicks placed so far for one object. Subclasses implement ``propose``."""

    def __init__(self) -> None:
        self.clicks: list[Click] = []

    def reset(self) -> None:
        """Forget all clicks (start a new object)."""
        self.clicks = []

    def add_click(self, click: Click) -> None:
        """Record a click placed by someone else (e.g. an initial click)."""
        self.clicks.append(click)

    def propose(self, gt: Any, pred: Any, void: Any = None) -> ClickProposal:  # pragma: no cover - abstract
        raise NotImplementedError

    def next_click(self, gt: Any, pred: Any, void: Any = None) -> Click | None:
        """Compute the next click for ``pred`` against ``gt`` and record it. Returns None when the protocol
        places no click this round (only SEEM, at IoU ≥ 0.925)."""
        proposal = self.propose(gt, pred, void)
        if not proposal.placed:
            return None
        self.add_click(proposal.click)
        return proposal.click

    @staticmethod
    def _inputs(gt: Any, pred: Any, void: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        g = as_mask(gt, "gt")
        p = as_mask(pred, "pred", shape=g.shape)
        v = None if void is None else as_mask(void, "void", shape=g.shape)
        return g, p, v


class RITMClicker(Clicker):
    """RITM's evaluation clicker (``isegm.inference.clicker.Clicker``), exactly.

    Rule per round:

    1. ``FN = gt ∧ ¬pred ∧ ¬void``, ``FP = ¬gt ∧ pred ∧ ¬void`` (void pixels are in neither error region).
    2. Exact Euclidean distance to the nearest pixel outside each region, the image border counting as
       outside (``ritm_error_distance``).
    3. The distance is set to 0 at the exact pixels of earlier clicks (only those pixels: an earlier click at
       the maximum moves the next one to a neighbouring pixel).
    4. Positive iff max FN distance > max FP distance (strictly; equal maxima give a negative click).
    5. The pixel is the first maximum of the chosen map in row-major order. With no error at all this is a
       negative click at (0, 0), as in RITM.

    ``init_clicks``: clicks already placed (RITM's ``init_clicks``).
    """

    def __init__(self, init_clicks: Iterable[Click] = ()) -> None:
        super().__init__()
        self._init = list(init_clicks)
        self.clicks = list(self._init)

    def reset(self) -> None:
        self.clicks = list(self._init)

    def propose(self, gt: Any, pred: Any, void: Any = None) -> ClickProposal:
        """The next click for boolean ``gt``/``pred``/``void`` ``[H, W]``; does not record it."""
        g, p, v = self._inputs(gt, pred, void)
        fn = g & ~p
        fp = p & ~g
        if v is not None:
            fn &= ~v
            fp &= ~v
        maxima = []
        for region in (fn, fp):
            r = _ritm_dt_crop(region)
            if r is None:
                maxima.append((0.0, 0, 0))
                continue
            dt, y0, x0 = r
            for c in self.clicks:  # RITM's not_clicked_map: zero at the exact clicked pixels
                cy, cx = c.y - y0, c.x - x0
                if 0 <= cy < dt.shape[0] and 0 <= cx < dt.shape[1]:
                    dt[cy, cx] = 0.0
            flat = int(np.argmax(dt))
            m = float(dt.flat[flat])
            cy, cx = divmod(flat, dt.shape[1])
            # a zero maximum means an all-zero map: its first maximum is pixel (0, 0)
            maxima.append((m, cy + y0, cx + x0) if m > 0 else (0.0, 0, 0))
        (fn_max, fn_y, fn_x), (fp_max, fp_y, fp_x) = maxima
        positive = fn_max > fp_max
        y, x = (fn_y, fn_x) if positive else (fp_y, fp_x)
        info = {
            "fn_pixels": int(np.count_nonzero(fn)),
            "fp_pixels": int(np.count_nonzero(fp)),
            "fn_max_dist": fn_max,
            "fp_max_dist": fp_max,
            "region": "fn" if positive else "fp",
        }
        return ClickProposal(Click(y, x, bool(positive)), True, info)


class SEEMClicker(Clicker):
    """SEEM's interactive-evaluation click sampler (``configs/seem/focalt_unicl_lang_v1.yaml``: ``EVAL.MODE
    'best'``, dilation 3, ``MAX_ITER`` 20), exactly.

    **First click** (no click placed yet; ``SimpleClickSampler.forward_point``): always positive, at the first
    row-major maximum of SEEM's distance map (``kornia_distance_transform``) of the whole GT, in the mask's
    own frame. The prediction is not consulted.

    **Later clicks** (``GeneralizedSEEM.prepare_next_spaital_mask``), in the frame padded with zeros to a
    multiple of ``size_divisibility`` (32) at the bottom/right:

    1. ``clicked`` = union of the 3×3 squares of all earlier clicks;
       ``FN = gt ∧ ¬pred ∧ ¬clicked``, ``FP = ¬gt ∧ pred ∧ ¬clicked``.
    2. Positive iff ``|FN| > |FP|`` in pixels (strictly; equal counts give a negative click).
    3. The pixel is the first row-major maximum of SEEM's distance map of the chosen region in the padded
       frame (``mode="best"``); ``mode="best_random"`` instead draws uniformly among the pixels with a
       positive distance, from this clicker's seeded generator.
    4. No click is placed when IoU = |gt ∧ pred| / (|gt ∨ pred| + 1e-8) ≥ 0.925 (float32, as SEEM).

    **Void** is ignored, as SEEM does (its mappers build the click GT as ``instance == id``, so void pixels
    are background for the sampler; only the scored IoU leaves them out). ``void`` is accepted for API
    symmetry and not used.

    Each click stands for a 3×3 square (``click_square``), which is what SEEM feeds its model:
    ``positive_mask`` / ``negative_mask`` hold their union in the image frame.

    Note: SEEM's data mapper first resizes image and GT to the test size (GT with ``cv2.INTER_CUBIC``, then
    bool); that is the runner's job, the clicker works in the frame of the masks it is given.
    """

    def __init__(
        self,
        mode: str = "best",
        *,
        size_divisibility: int = 32,
        stop_iou: float = 0.925,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if mode not in ("best", "best_random"):
            raise ValueError(f"mode must be 'best' or 'best_random', got {mode!r}")
        if size_divisibility < 1:
            raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility}")
        self.mode = mode
        self.size_divisibility = int(size_divisibility)
        self.stop_iou = float(stop_iou)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._shape: tuple[int, int] | None = None
        self._pos: np.ndarray | None = None
        self._neg: np.ndarray | None = None

    def reset(self) -> None:
        super().reset()
        self._rng = np.random.default_rng(self.seed)
        self._shape = self._pos = self._neg = None

    # -- click masks ---------------------------------------------------------------------------------------------

    def _ensure_maps(self, shape: tuple[int, int]) -> None:
        if self._shape != shape:
            if self._shape is not None and self.clicks:
                raise ValueError(f"mask shape changed from {self._shape} to {shape} between rounds; reset() first")
            self._shape = shape
            self._pos = np.zeros(shape, bool)
            self._neg = np.zeros(shape, bool)
            for c in self.clicks:
                self._paint(c)

    def _paint(self, c: Click) -> None:
        assert self._pos is not None and self._neg is not None and self._shape is not None
        sq = click_square(c.y, c.x, self._shape)
        if c.is_positive:
            self._pos |= sq
        else:
            self._neg |= sq

    def add_click(self, click: Click) -> None:
        super().add_click(click)
        if self._shape is not None:
            self._paint(click)

    def click_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(positive, negative)`` bool ``[H, W]`` unions of the 3×3 click squares for masks of ``shape``."""
        self._ensure_maps(tuple(shape))  # type: ignore[arg-type]
        assert self._pos is not None and self._neg is not None
        return self._pos.copy(), self._neg.copy()

    @property
    def positive_mask(self) -> np.ndarray | None:
        """Union of the positive 3×3 click squares (image frame), None before the first round."""
        return None if self._pos is None else self._pos.copy()

    @property
    def negative_mask(self) -> np.ndarray | None:
        """Union of the negative 3×3 click squares (image frame), None before the first round."""
        return None if self._neg is None else self._neg.copy()

    # -- rules ---------------------------------------------------------------------------------------------------

    def _pick(self, region: np.ndarray) -> tuple[int, int, float]:
        if self.mode == "best":
            return kornia_argmax(region)
        dt = kornia_distance_transform(region)
        ys, xs = np.nonzero(dt > 0)
        if ys.size == 0:  # SEEM would fail on randint(0, 0); fall back to the 'best' rule (pixel (0, 0))
            return 0, 0, 0.0
        i = int(self._rng.integers(ys.size))
        return int(ys[i]), int(xs[i]), float(dt[ys[i], xs[i]])

    def propose_first(self, gt: Any) -> ClickProposal:
        """SEEM's first click (``forward_point``) for ``gt`` bool ``[H, W]``; does not record it."""
        g = as_mask(gt, "gt")
        y, x, m = self._pick(g)
        return ClickProposal(Click(y, x, True), True, {"dt_max": m, "rule": "forward_point"})

    def propose_next(self, gt: Any, pred: Any, void: Any = None) -> ClickProposal:
        """SEEM's corrective click (``prepare_next_spaital_mask``) given the clicks so far; does not record it.
        Also used by ``propose`` once a click exists; callable directly on the first round, where (with an empty
        prediction) it agrees with ``propose_first``."""
        g, p, _ = self._inputs(gt, pred, void)
        h, w = g.shape
        self._ensure_maps((h, w))
        assert self._pos is not None and self._neg is not None
        clicked = self._pos | self._neg
        fn = g & ~p & ~clicked
        fp = p & ~g & ~clicked
        n_fn, n_fp = int(np.count_nonzero(fn)), int(np.count_nonzero(fp))
        positive = n_fn > n_fp
        # SEEM works in the frame zero-padded to a multiple of size_divisibility; the region never reaches the
        # padding and the distance map does not depend on the frame, so the image frame gives the same pixel
        # (row-major order is preserved) without building the padded arrays.
        s = self.size_divisibility
        hp, wp = -(-h // s) * s, -(-w // s) * s
        y, x, m = self._pick(fn if positive else fp)
        # float32 throughout, as SEEM's torch expression: I / (U + 1e-8) < 0.925
        inter = np.float32(np.count_nonzero(g & p))
        union = np.float32(np.count_nonzero(g | p))
        iou = inter / (union + np.float32(1e-8))
        placed = bool(iou < np.float32(self.stop_iou))
        info = {
            "fn_pixels": n_fn,
            "fp_pixels": n_fp,
            "region": "fn" if positive else "fp",
            "dt_max": m,
            "iou": float(iou),
            "padded_hw": (hp, wp),
            "rule": "prepare_next_spatial_mask",
        }
        return ClickProposal(Click(y, x, bool(positive)), placed, info)

    def propose(self, gt: Any, pred: Any, void: Any = None) -> ClickProposal:
        """First round (no clicks yet): ``propose_first(gt)``; afterwards ``propose_next``."""
        if not self.clicks:
            g, _, _ = self._inputs(gt, pred, void)
            self._ensure_maps(g.shape)  # type: ignore[arg-type]
            return self.propose_first(g)
        return self.propose_next(gt, pred, void)
