"""Typed prompts, their validation, and how they land on the model's canvas.

Coordinates
-----------
Every prompt is given in **pixels of the original image** (the array the user passed to ``set_image``):
``x`` to the right (column), ``y`` down (row), ``(x, y)`` order everywhere, floats allowed.

- A **point** (click, scribble / polygon vertex) is a pixel index: ``(x, y) = (12, 30)`` is the centre of the
  pixel ``image[30, 12]``; a fractional point belongs to the nearest pixel centre (``x = 12.7`` is in column 13).
  Valid points satisfy ``0 <= x < W`` and ``0 <= y < H``.
- A **box** is ``(x0, y0, x1, y1)`` (XYXY) with *edges* in continuous pixel units: it covers the pixels
  ``x0 <= x < x1``, ``y0 <= y < y1`` (so ``(0, 0, W, H)`` is the whole image, and the ``bbox`` of a ``Segment`` is
  a valid box prompt for the same region). Valid boxes satisfy ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``.
- A **mask** prompt is a boolean ``[H, W]`` array at the original size.

The model canvas
----------------
The model sees the image resized with the official rule (``ImageGeometry``): the short side becomes
``short_side`` (512), the long side ``int(short_side * long / short)`` (torchvision ``Resize(512)``), PIL bicubic;
then it is zero-padded bottom/right to a multiple of 32 (the *padded canvas*, ``(Hp, Wp)``). Prompts are drawn
on that canvas, as the official code draws them:

- a click is a 3×3 square around its pixel (a single pixel dilated by the model's 3×3 kernel);
- a scribble is a ``cv2.polylines`` stroke, ``width`` pixels thick **on the canvas** (official: 5);
- a box is a filled rectangle; a polygon a filled polygon (plus its outline, so thin ones keep their pixels);
- a mask is resized with nearest-neighbour sampling of pixel centres, plus every canvas pixel that contains the
  centre of a mask pixel (so thin masks do not vanish when the image is downscaled).

Pixel centres are mapped exactly: original pixel ``x`` (centre ``x + 0.5``) lands in canvas pixel
``floor((x + 0.5) * w / W)``; the inverse (canvas pixel ``u`` → original ``(u + 0.5) * W / w - 0.5``) is what the
output masks use (``align_corners=False`` resizing). Positive inputs go to the positive mask, negative inputs
(``label 0``) to the negative mask of the same object.

Errors
------
Every problem raises ``PromptError`` (a ``ValueError``; ``PromptTypeError`` is also a ``TypeError``) naming the
prompt and what is wrong: a point outside the image, a degenerate box, an empty scribble or mask, a mask of the
wrong size, an empty text, a visual prompt without any positive input, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from seem.io import ImageError, ImageInput, read_image
from seem.models.seem_types import DecoderDraws

__all__ = [
    "CLICK_RADIUS",
    "DEFAULT_SHORT_SIDE",
    "MAX_ASPECT_RATIO",
    "STROKE_WIDTH",
    "Box",
    "ImageGeometry",
    "MaskPrompt",
    "Points",
    "Polygon",
    "PromptError",
    "PromptSet",
    "PromptTypeError",
    "RasterizedPrompt",
    "ReferenceImage",
    "Scribble",
    "Text",
    "rasterize",
    "resized_size",
    "spaced_pixels",
]

DEFAULT_SHORT_SIDE = 512
"""The official SEEM inference/demo size of the image's short side."""
MAX_ASPECT_RATIO = 16.0
"""Largest ``long side / short side`` accepted: the model sees ``short_side × (ratio · short_side)`` pixels."""
CLICK_RADIUS = 1
"""A click covers ``(2r + 1)²`` canvas pixels: the official 3×3 dilation."""
STROKE_WIDTH = 5
"""Official scribble/stroke thickness on the canvas (``cv2.polylines(..., thickness=5)``)."""
MAX_STROKE_WIDTH = 255


class PromptError(ValueError):
    """A prompt is invalid (bad values, outside the image, empty, inconsistent)."""


class PromptTypeError(PromptError, TypeError):
    """A prompt argument has the wrong type."""


# --------------------------------------------------------------------------------------------------------
# geometry


def resized_size(height: int, width: int, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[int, int]:
    """``(h, w)`` of the official resize: short side → ``short_side``, long side → ``int(short_side*long/short)``.

    This is ``torchvision.transforms.Resize(short_side)`` (``_compute_resized_output_size``), so it is the identity
    when the short side already equals ``short_side``.
    """
    if height <= 0 or width <= 0:
        raise ImageError(f"image size must be positive, got {height}×{width} (H×W)")
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes of one image on its way through the model, all ``(height, width)`` in pixels.

    Attributes:
        original_size: ``(H, W)`` of the user's image; results are returned at this size.
        resized_size: ``(h, w)`` after the official resize (the model input before padding).
        padded_size: ``(Hp, Wp)``: ``resized_size`` rounded up to a multiple of ``size_divisibility``.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    padded_size: tuple[int, int]

    @classmethod
    def for_image(
        cls,
        height: int,
        width: int,
        short_side: int = DEFAULT_SHORT_SIDE,
        size_divisibility: int = 32,
        max_aspect_ratio: float = MAX_ASPECT_RATIO,
    ) -> ImageGeometry:
        """Geometry of an ``height × width`` image; ``ImageError`` when its aspect ratio is too extreme."""
        if not isinstance(short_side, int) or short_side < 8:
            raise PromptTypeError(f"short_side must be an int >= 8, got {short_side!r}")
        ratio = max(height, width) / max(1, min(height, width))
        if ratio > max_aspect_ratio:
            raise ImageError(
                f"the image is {width}×{height} (W×H): its long side is {ratio:.1f}× its short side; at most "
                f"{max_aspect_ratio:g}× is supported (the model sees the short side at {short_side} px)"
            )
        h, w = resized_size(height, width, short_side)
        d = max(1, size_divisibility)
        return cls((int(height), int(width)), (h, w), (-(-h // d) * d, -(-w // d) * d))

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: canvas pixels per original pixel along y and x."""
        return self.resized_size[0] / self.original_size[0], self.resized_size[1] / self.original_size[1]

    def to_canvas(self, xy: np.ndarray) -> np.ndarray:
        """Continuous canvas coordinates of original points ``[N, 2]`` (x, y): ``(x + 0.5) · s``.

        In these coordinates canvas pixel ``u`` spans ``[u, u + 1)``.
        """
        sy, sx = self.scale
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([(xy[:, 0] + 0.5) * sx, (xy[:, 1] + 0.5) * sy], axis=1)

    def canvas_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Canvas pixel ``(u, v)`` (int64 ``[N, 2]``, x then y) holding each original point's position."""
        c = np.floor(self.to_canvas(xy)).astype(np.int64)
        h, w = self.resized_size
        c[:, 0] = np.clip(c[:, 0], 0, w - 1)
        c[:, 1] = np.clip(c[:, 1], 0, h - 1)
        return c

    def to_original(self, uv: np.ndarray) -> np.ndarray:
        """Original pixel coordinates (float ``[N, 2]``) of canvas pixel centres ``(u, v)``: ``(u + 0.5)/s - 0.5``."""
        sy, sx = self.scale
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return np.stack([(uv[:, 0] + 0.5) / sx - 0.5, (uv[:, 1] + 0.5) / sy - 0.5], axis=1)

    def box_to_canvas(self, box: Sequence[float]) -> tuple[int, int, int, int]:
        """Canvas pixels ``[u0, u1) × [v0, v1)`` whose centres lie in the box (at least the pixel of its centre)."""
        sy, sx = self.scale
        h, w = self.resized_size
        x0, y0, x1, y1 = (float(v) for v in box)
        eps = 1e-9

        def span(a: float, b: float, s: float, n: int) -> tuple[int, int]:
            lo = max(0, math.ceil(a * s - 0.5 - eps))
            hi = min(n, math.ceil(b * s - 0.5 - eps))
            if hi <= lo:  # thinner than a canvas pixel: keep the pixel holding its centre
                c = min(n - 1, max(0, math.floor((a + b) / 2 * s)))
                lo, hi = c, c + 1
            return lo, hi

        u0, u1 = span(x0, x1, sx, w)
        v0, v1 = span(y0, y1, sy, h)
        return u0, v0, u1, v1


# --------------------------------------------------------------------------------------------------------
# prompt types


def _label(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value) in (0.0, 1.0):  # SAM users pass float arrays too
        return int(value)
    raise PromptError(f"{what}: label must be 1 (positive) or 0 (negative), got {value!r}")


def _xy_array(value: Any, what: str, min_points: int = 1) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptTypeError(f"{what}: coordinates must be numbers in an [N, 2] array of (x, y)") from None
    if a.ndim == 1 and a.shape[0] == 2:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 2:
        raise PromptError(f"{what}: coordinates must have shape [N, 2] (x, y), got {a.shape}")
    if a.shape[0] < min_points:
        raise PromptError(f"{what}: needs at least {min_points} point(s), got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise PromptError(f"{what}: coordinates must be finite (no NaN or inf)")
    return a


def _check_inside(xy: np.ndarray, size: tuple[int, int], what: str) -> None:
    h, w = size
    bad = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PromptError(
            f"{what}: point {i} at (x={xy[i, 0]:g}, y={xy[i, 1]:g}) lies outside the {w}×{h} image "
            f"(x must be in [0, {w}), y in [0, {h}))"
        )


@dataclass(frozen=True, init=False)
class Points:
    """Clicks: ``coords`` float ``[N, 2]`` (x, y) in original pixels; ``labels`` int ``[N]``: 1 positive, 0 negative.

    ``Points([[x, y], ...])`` makes positive clicks; ``labels`` follows SAM's ``point_labels``.
    """

    coords: np.ndarray
    labels: np.ndarray

    def __init__(self, coords: Any, labels: Any = None) -> None:
        xy = _xy_array(coords, "points")
        if labels is None:
            lab = np.ones(len(xy), dtype=np.int64)
        else:
            try:
                raw = np.asarray(labels).reshape(-1)
            except (TypeError, ValueError):
                raise PromptTypeError("points: labels must be an array of 1/0") from None
            if raw.shape[0] != xy.shape[0]:
                raise PromptError(f"points: {xy.shape[0]} coordinates but {raw.shape[0]} labels")
            lab = np.array([_label(v.item() if hasattr(v, "item") else v, "points") for v in raw], dtype=np.int64)
        object.__setattr__(self, "coords", xy)
        object.__setattr__(self, "labels", lab)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def validate(self, size: tuple[int, int]) -> None:
        _check_inside(self.coords, size, "points")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Points)
            and np.array_equal(self.coords, other.coords)
            and np.array_equal(self.labels, other.labels)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False)
class Box:
    """A positive box ``(x0, y0, x1, y1)``: edges in original pixels, covering ``x0 <= x < x1``, ``y0 <= y < y1``."""

    xyxy: tuple[float, float, float, float]

    def __init__(self, x0: Any, y0: float | None = None, x1: float | None = None, y1: float | None = None) -> None:
        vals: Any = (x0, y0, x1, y1) if y0 is not None else x0
        try:
            a = np.asarray(vals, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise PromptTypeError(f"box: expected 4 numbers (x0, y0, x1, y1), got {vals!r}") from None
        if a.shape[0] != 4:
            raise PromptError(f"box: expected 4 numbers (x0, y0, x1, y1), got {a.shape[0]}")
        if not np.isfinite(a).all():
            raise PromptError(f"box: coordinates must be finite, got {a.tolist()}")
        if a[2] <= a[0] or a[3] <= a[1]:
            raise PromptError(
                f"box: degenerate box {tuple(round(float(v), 3) for v in a)}: need x1 > x0 and y1 > y0 (XYXY)"
            )
        object.__setattr__(self, "xyxy", (float(a[0]), float(a[1]), float(a[2]), float(a[3])))

    def validate(self, size: tuple[int, int]) -> None:
        h, w = size
        x0, y0, x1, y1 = self.xyxy
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise PromptError(
                f"box: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) extends outside the {w}×{h} image "
                f"(need 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})"
            )


@dataclass(frozen=True, init=False)
class Scribble:
    """A stroke through ``points`` float ``[N, 2]`` (x, y), ``width`` canvas pixels thick; ``label`` 1 or 0.

    One point makes a dot of diameter ``width``. ``width`` is measured on the model canvas (short side 512), where
    the official code draws strokes 5 pixels thick.
    """

    points: np.ndarray
    width: int
    label: int

    def __init__(self, points: Any, width: int = STROKE_WIDTH, label: Any = 1) -> None:
        xy = _xy_array(points, "scribble")
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise PromptTypeError(f"scribble: width must be an int, got {width!r}")
        if not 1 <= int(width) <= MAX_STROKE_WIDTH:
            raise PromptError(f"scribble: width must be in [1, {MAX_STROKE_WIDTH}], got {width}")
        object.__setattr__(self, "points", xy)
        object.__setattr__(self, "width", int(width))
        object.__setattr__(self, "label", _label(label, "scribble"))

    def validate(self, size: tuple[int, int]) -> None:
        _check_inside(self.points, size, "scribble")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Scribble)
            and np.array_equal(self.points, other.points)
            and (self.width, self.label) == (other.width, other.label)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False)
class Polygon:
    """A filled polygon through ``points`` float ``[N >= 3, 2]`` (x, y) vertices; ``label`` 1 or 0."""

    points: np.ndarray
    label: int

    def __init__(self, points: Any, label: Any = 1) -> None:
        object.__setattr__(self, "points", _xy_array(points, "polygon", min_points=3))
        object.__setattr__(self, "label", _label(label, "polygon"))

    def validate(self, size: tuple[int, int]) -> None:
        _check_inside(self.points, size, "polygon")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polygon) and np.array_equal(self.points, other.points) and self.label == other.label

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False)
class MaskPrompt:
    """A full-resolution binary mask ``[H, W]`` (bool; for numbers nonzero = True) at the original image size."""

    mask: np.ndarray
    label: int

    def __init__(self, mask: Any, label: Any = 1) -> None:
        if not isinstance(mask, np.ndarray):
            try:
                mask = np.asarray(mask)
            except Exception:
                raise PromptTypeError(f"mask: expected a 2-D array, got {type(mask).__name__}") from None
        if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.number):
            raise PromptTypeError(f"mask: expected a bool (or 0/1) array, got dtype {mask.dtype}")
        if mask.ndim != 2:
            raise PromptError(f"mask: expected a 2-D [H, W] array, got shape {mask.shape}")
        m = np.ascontiguousarray(mask != 0) if mask.dtype != np.bool_ else np.ascontiguousarray(mask).copy()
        if not m.any():
            raise PromptError("mask: the mask is empty (no True pixel)")
        object.__setattr__(self, "mask", m)
        object.__setattr__(self, "label", _label(label, "mask"))

    def validate(self, size: tuple[int, int]) -> None:
        if tuple(self.mask.shape) != tuple(size):
            raise PromptError(
                f"mask: shape {self.mask.shape} (H, W) does not match the image size {tuple(size)}; mask prompts "
                "are given at the original image size"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskPrompt) and np.array_equal(self.mask, other.mask) and self.label == other.label

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False)
class Text:
    """A referring phrase (``"the white coffee cup"``); surrounding whitespace is removed."""

    phrase: str

    def __init__(self, phrase: Any) -> None:
        if not isinstance(phrase, str):
            raise PromptTypeError(f"text: expected a str, got {type(phrase).__name__}")
        p = phrase.strip()
        if not p:
            raise PromptError("text: the phrase is empty")
        object.__setattr__(self, "phrase", p)


@dataclass(init=False, eq=False)
class ReferenceImage:
    """A referring-image ("Example") prompt: visual prompts drawn on *another* image select what to find here.

    Attributes:
        image: the reference image, ``uint8 [H, W, 3]`` (read with ``seem.io.read_image``).
        prompts: a ``PromptSet`` with visual prompts only (points, boxes, scribbles, polygons, masks), in the
            reference image's pixels.
        draws: explicit random choices of the stage-1 prompt sampling (official-parity replay); None = the
            deterministic default.
    """

    image: np.ndarray
    prompts: PromptSet
    draws: DecoderDraws | None

    def __init__(self, image: ImageInput, prompts: PromptSet, draws: DecoderDraws | None = None) -> None:
        self.image = read_image(image)
        if not isinstance(prompts, PromptSet):
            raise PromptTypeError(f"reference: prompts must be a PromptSet, got {type(prompts).__name__}")
        if prompts.text is not None or prompts.reference is not None:
            raise PromptError("reference: the reference image takes visual prompts only (no text, no reference)")
        if not prompts.has_positive_visual:
            raise PromptError("reference: needs at least one positive visual prompt on the reference image")
        prompts.validate(self.image.shape[:2])
        self.prompts = prompts
        self.draws = draws


def _tuple_of(value: Any, kind: type, name: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, kind):
        return (value,)
    if isinstance(value, (list, tuple)):
        bad = [type(v).__name__ for v in value if not isinstance(v, kind)]
        if bad:
            raise PromptTypeError(f"{name}: expected {kind.__name__} items, got {bad[0]}")
        return tuple(value)
    raise PromptTypeError(f"{name}: expected a {kind.__name__} or a list of them, got {type(value).__name__}")


@dataclass(init=False, eq=False)
class PromptSet:
    """Every prompt of **one** object: any mix of clicks, boxes, scribbles, polygons, masks, text and a reference.

    ``PromptSet(points=Points([[x, y]]), boxes=Box(x0, y0, x1, y1), text="the dog")``: single items or lists are
    accepted for ``boxes``, ``scribbles``, ``polygons`` and ``masks``; a ``str`` for ``text``.

    How the kinds combine is decided by the predictor (``seem.predictor.Segmenter``): all visual inputs are drawn
    into one positive and one negative mask; text and reference are separate prompt kinds.
    """

    points: Points | None
    boxes: tuple[Box, ...]
    scribbles: tuple[Scribble, ...]
    polygons: tuple[Polygon, ...]
    masks: tuple[MaskPrompt, ...]
    text: Text | None
    reference: ReferenceImage | None

    def __init__(
        self,
        points: Points | None = None,
        boxes: Box | Sequence[Box] | None = None,
        scribbles: Scribble | Sequence[Scribble] | None = None,
        polygons: Polygon | Sequence[Polygon] | None = None,
        masks: MaskPrompt | Sequence[MaskPrompt] | None = None,
        text: Text | str | None = None,
        reference: ReferenceImage | None = None,
    ) -> None:
        if points is not None and not isinstance(points, Points):
            raise PromptTypeError(f"points: expected a Points, got {type(points).__name__}")
        if reference is not None and not isinstance(reference, ReferenceImage):
            raise PromptTypeError(f"reference: expected a ReferenceImage, got {type(reference).__name__}")
        self.points = points
        self.boxes = _tuple_of(boxes, Box, "boxes")
        self.scribbles = _tuple_of(scribbles, Scribble, "scribbles")
        self.polygons = _tuple_of(polygons, Polygon, "polygons")
        self.masks = _tuple_of(masks, MaskPrompt, "masks")
        if text is None or isinstance(text, Text):
            self.text = text
        else:
            self.text = Text(text)
        self.reference = reference

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_sam(cls, point_coords: Any = None, point_labels: Any = None, box: Any = None) -> PromptSet:
        """SAM's ``predict`` arguments: ``point_coords`` ``[N, 2]`` (x, y), ``point_labels`` ``[N]`` (1/0),
        ``box`` ``[4]`` or ``[1, 4]`` XYXY."""
        pts = None
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be given with point_coords (1 positive, 0 negative)")
            pts = Points(point_coords, point_labels)
        elif point_labels is not None:
            raise PromptError("point_labels given without point_coords")
        bx = None
        if box is not None:
            try:
                b = np.asarray(box, dtype=np.float64)
            except (TypeError, ValueError):
                raise PromptTypeError(f"box must be 4 numbers XYXY, got {box!r}") from None
            if b.size != 4:
                raise PromptError(f"box must be [4] or [1, 4] (x0, y0, x1, y1), got shape {b.shape}")
            bx = Box(b.reshape(4))
        return cls(points=pts, boxes=bx)

    def merged(self, other: PromptSet) -> PromptSet:
        """The union of two prompt sets (visual inputs added; ``other``'s text / reference replace this one's)."""
        pts = self.points
        if other.points is not None:
            pts = (
                other.points
                if pts is None
                else Points(
                    np.concatenate([pts.coords, other.points.coords]), np.concatenate([pts.labels, other.points.labels])
                )
            )
        return PromptSet(
            points=pts,
            boxes=self.boxes + other.boxes,
            scribbles=self.scribbles + other.scribbles,
            polygons=self.polygons + other.polygons,
            masks=self.masks + other.masks,
            text=other.text if other.text is not None else self.text,
            reference=other.reference if other.reference is not None else self.reference,
        )

    # ------------------------------------------------------------------ queries

    @property
    def has_visual(self) -> bool:
        """Any click, box, scribble, polygon or mask on this image."""
        return bool(self.points is not None or self.boxes or self.scribbles or self.polygons or self.masks)

    @property
    def has_positive_visual(self) -> bool:
        """At least one positive visual input (a positive click, a box, or a positive scribble/polygon/mask)."""
        return bool(
            (self.points is not None and bool(self.points.labels.any()))
            or self.boxes
            or any(s.label for s in self.scribbles)
            or any(p.label for p in self.polygons)
            or any(m.label for m in self.masks)
        )

    @property
    def is_empty(self) -> bool:
        return not (self.has_visual or self.text is not None or self.reference is not None)

    def validate(self, size: tuple[int, int]) -> None:
        """Check every prompt against an image of ``size = (H, W)``; raises ``PromptError`` naming the problem."""
        if self.is_empty:
            raise PromptError(
                "empty prompt set: give points, a box, a scribble, a polygon, a mask, text or a reference"
            )
        if self.has_visual and not self.has_positive_visual:
            raise PromptError(
                "visual prompts need at least one positive input (a positive click, a box, or a positive "
                "scribble / polygon / mask); negative inputs only correct a positive one"
            )
        if self.points is not None:
            self.points.validate(size)
        for group in (self.boxes, self.scribbles, self.polygons, self.masks):
            for p in group:
                p.validate(size)

    def describe(self) -> str:
        """Short human-readable summary, e.g. ``"2 points (1+, 1-), 1 box, text 'a dog'"``."""
        parts = []
        if self.points is not None:
            n_pos = int(self.points.labels.sum())
            parts.append(f"{len(self.points)} points ({n_pos}+, {len(self.points) - n_pos}-)")
        for name, group in (("box", self.boxes), ("scribble", self.scribbles), ("polygon", self.polygons)):
            if group:
                parts.append(f"{len(group)} {name}{'es' if name == 'box' and len(group) > 1 else ''}")
        if self.masks:
            parts.append(f"{len(self.masks)} mask(s)")
        if self.text is not None:
            parts.append(f"text {self.text.phrase!r}")
        if self.reference is not None:
            parts.append("reference image")
        return ", ".join(parts) or "nothing"


# --------------------------------------------------------------------------------------------------------
# rasterisation


@dataclass
class RasterizedPrompt:
    """Visual prompts of one object drawn on the padded canvas: bool ``pos`` / ``neg`` ``[Hp, Wp]``."""

    pos: np.ndarray
    neg: np.ndarray
    geometry: ImageGeometry = field(repr=False)


def _draw_points(canvas_pos: np.ndarray, canvas_neg: np.ndarray, pts: Points, g: ImageGeometry) -> None:
    uv = g.canvas_pixels(pts.coords)
    h, w = g.resized_size
    r = CLICK_RADIUS
    for (u, v), lab in zip(uv, pts.labels, strict=True):
        target = canvas_pos if lab else canvas_neg
        target[max(0, v - r) : min(h, v + r + 1), max(0, u - r) : min(w, u + r + 1)] = True


def _poly_pixels(points: np.ndarray, g: ImageGeometry) -> np.ndarray:
    uv = g.canvas_pixels(points).astype(np.int32)
    if len(uv) == 1:
        uv = np.concatenate([uv, uv])  # cv2.polylines draws nothing for a single vertex
    return uv.reshape(-1, 1, 2)


def _draw_mask(target: np.ndarray, mask: np.ndarray, g: ImageGeometry) -> None:
    h, w = g.resized_size
    resized = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
    ys, xs = np.nonzero(mask)
    uv = g.canvas_pixels(np.stack([xs, ys], axis=1))
    resized[uv[:, 1], uv[:, 0]] = True
    target |= resized


def rasterize(prompts: PromptSet, geometry: ImageGeometry) -> RasterizedPrompt:
    """Draw the visual prompts of one object on the padded canvas (see the module docstring for the rules).

    The prompts are validated against ``geometry.original_size`` first. Text and reference are ignored here.

    Returns:
        ``RasterizedPrompt`` with bool ``pos`` and ``neg`` ``[Hp, Wp]`` (False in the padding).
    """
    prompts.validate(geometry.original_size)
    h, w = geometry.resized_size
    hp, wp = geometry.padded_size
    pos = np.zeros((h, w), dtype=bool)
    neg = np.zeros((h, w), dtype=bool)
    if prompts.points is not None:
        _draw_points(pos, neg, prompts.points, geometry)
    for b in prompts.boxes:
        u0, v0, u1, v1 = geometry.box_to_canvas(b.xyxy)
        pos[v0:v1, u0:u1] = True
    for s in prompts.scribbles:
        canvas = np.zeros((h, w), dtype=np.uint8)
        cv2.polylines(canvas, [_poly_pixels(s.points, geometry)], isClosed=False, color=1, thickness=s.width)
        (pos if s.label else neg)[canvas.astype(bool)] = True
    for p in prompts.polygons:
        canvas = np.zeros((h, w), dtype=np.uint8)
        pts = _poly_pixels(p.points, geometry)
        cv2.fillPoly(canvas, [pts], color=1)
        cv2.polylines(canvas, [pts], isClosed=True, color=1, thickness=1)
        (pos if p.label else neg)[canvas.astype(bool)] = True
    for m in prompts.masks:
        _draw_mask(pos if m.label else neg, m.mask, geometry)
    out_pos = np.zeros((hp, wp), dtype=bool)
    out_neg = np.zeros((hp, wp), dtype=bool)
    out_pos[:h, :w] = pos
    out_neg[:h, :w] = neg
    return RasterizedPrompt(out_pos, out_neg, geometry)


def spaced_pixels(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Pixels of bool ``mask [H, W]`` at least ``spacing`` px apart, covering it: int64 ``[K, 2]`` ``(x, y)``.

    Greedy in row-major order: the first pixel of the mask is taken, every pixel closer than ``spacing`` to it is
    dropped, and so on; every mask pixel then lies within ``spacing`` of a taken one. Deterministic. An empty mask
    gives ``[0, 2]``. Used to read a stroke, scribble or mask prompt as clicks (``InferenceConfig.stroke_clicks``).
    """
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"mask must be bool [H, W], got {mask.dtype} {tuple(mask.shape)}")
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0 (pixels), got {spacing!r}")
    ys, xs = np.nonzero(mask)
    alive = np.ones(xs.shape[0], dtype=bool)
    taken: list[int] = []
    s2 = float(spacing) ** 2
    while alive.any():
        j = int(np.argmax(alive))  # the first pixel still alive, row-major
        taken.append(j)
        alive &= (xs - xs[j]) ** 2 + (ys - ys[j]) ** 2 >= s2
    return np.stack([xs[taken], ys[taken]], axis=1).astype(np.int64).reshape(-1, 2)


def mask_core_clicks(mask: np.ndarray, margin: int, spacing: float) -> np.ndarray:
    """The inside of bool ``mask [H, W]`` read as positive clicks: its pixels at least ``margin`` px in from its
    edge (an elliptical erosion), ``spacing`` px apart (``spaced_pixels``): int64 ``[K, 2]`` ``(x, y)``; ``[0, 2]``
    when the mask has no inside that deep. How a box's mask is read by the click refiner
    (``InferenceConfig.box_rule = "grabcut"``), in use and in training (``seem train-refiner --box-rollouts``)."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"mask must be bool [H, W], got {mask.dtype} {tuple(mask.shape)}")
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin must be an int >= 0 (pixels), got {margin!r}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    core = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return spaced_pixels(core, spacing)
