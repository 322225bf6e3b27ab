"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema at ``/openapi.json``).

Coordinates are pixels of the **original** image: ``x`` to the right, ``y`` down; points are ``[x, y]`` or
``[x, y, label]`` (label 1 positive, the default; 0 negative); boxes are ``[x0, y0, x1, y1]`` (XYXY edges, the box
covers ``x0 <= x < x1``, ``y0 <= y < y1``). Masks come back as COCO RLE (``{"size": [H, W], "counts": str}``, decode
with ``pycocotools.mask.decode``) and/or as a base64 PNG (8-bit grayscale, 255 inside).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "EverythingRequest",
    "EverythingResponse",
    "ExportObject",
    "ExportRequest",
    "GranularityRequest",
    "InfoResponse",
    "MaskOut",
    "ObjectOut",
    "ObjectsResponse",
    "PanopticRequest",
    "PanopticResponse",
    "PromptsIn",
    "SegmentRequest",
    "SessionOut",
    "VideoJobOut",
    "VisualPromptsIn",
]

MAX_POINTS = 1000
MAX_STROKE_POINTS = 10_000
MAX_ITEMS = 100
MAX_TEXT = 500
MAX_CLASSES = 1000

MaskFormat = Literal["rle", "png"]


def _rle_only() -> list[MaskFormat]:
    return ["rle"]


def _check_xy(points: list[list[float]], allow_label: bool, what: str) -> list[list[float]]:
    for i, p in enumerate(points):
        n = len(p)
        if n not in ((2, 3) if allow_label else (2,)):
            want = "[x, y] or [x, y, label]" if allow_label else "[x, y]"
            raise ValueError(f"{what}[{i}] must be {want}, got {n} numbers")
        if n == 3 and p[2] not in (0, 1):
            raise ValueError(f"{what}[{i}]: label must be 1 (positive) or 0 (negative), got {p[2]:g}")
    return points


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StrokeIn(_Strict):
    """A scribble: a polyline through ``points``, ``width`` pixels thick on the model canvas (short side 512)."""

    points: list[list[float]] = Field(..., min_length=1, max_length=MAX_STROKE_POINTS, description="[[x, y], ...]")
    label: Literal[0, 1] = Field(1, description="1 positive, 0 negative")
    width: int = Field(5, ge=1, le=255, description="stroke width on the model canvas (official: 5)")

    @field_validator("points")
    @classmethod
    def _xy(cls, v: list[list[float]]) -> list[list[float]]:
        return _check_xy(v, False, "points")


class PolygonIn(_Strict):
    """A filled polygon through ``points`` (at least 3 vertices)."""

    points: list[list[float]] = Field(..., min_length=3, max_length=MAX_STROKE_POINTS, description="[[x, y], ...]")
    label: Literal[0, 1] = 1

    @field_validator("points")
    @classmethod
    def _xy(cls, v: list[list[float]]) -> list[list[float]]:
        return _check_xy(v, False, "points")


class MaskIn(_Strict):
    """A binary mask at the original image size: a COCO RLE **or** a base64 PNG (nonzero = inside)."""

    rle: dict[str, Any] | None = Field(None, description='COCO RLE {"size": [H, W], "counts": str or list}')
    png: str | None = Field(None, description="base64 PNG (or data: URL), nonzero pixels = mask")
    label: Literal[0, 1] = 1


class VisualPromptsIn(_Strict):
    """Visual prompts of one object (all in original-image pixels)."""

    points: list[list[float]] | None = Field(
        None, max_length=MAX_POINTS, description="[[x, y, label], ...]; label 1 positive (default), 0 negative"
    )
    boxes: list[list[float]] | None = Field(None, max_length=MAX_ITEMS, description="[[x0, y0, x1, y1], ...] XYXY")
    scribbles: list[StrokeIn] | None = Field(None, max_length=MAX_ITEMS)
    polygons: list[PolygonIn] | None = Field(None, max_length=MAX_ITEMS)
    masks: list[MaskIn] | None = Field(None, max_length=8)

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        return None if v is None else _check_xy(v, True, "points")

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        for i, b in enumerate(v or []):
            if len(b) != 4:
                raise ValueError(f"boxes[{i}] must be [x0, y0, x1, y1], got {len(b)} numbers")
        return v


class ReferenceIn(_Strict):
    """A referring image: another session's image with visual prompts on it; segment the same thing here."""

    session_id: str = Field(..., max_length=100, description="session of the reference image")
    prompts: VisualPromptsIn


class PromptsIn(VisualPromptsIn):
    """Every prompt of one object: visual prompts, a referring phrase and/or a reference image."""

    text: str | None = Field(None, max_length=MAX_TEXT, description="referring phrase, e.g. 'the white cup'")
    reference: ReferenceIn | None = None


class SegmentRequest(_Strict):
    """Add prompts to an object (a new object when ``object_id`` is null) and run one round."""

    object_id: str | None = Field(None, max_length=100, description="object to refine; null: a new object")
    prompts: PromptsIn
    labels: bool = Field(True, description="label the mask from the vocabulary (new objects only)")
    mask_formats: list[MaskFormat] = Field(default_factory=_rle_only, max_length=2)


class GranularityRequest(_Strict):
    """Semantic-SAM: clicks (and/or a box) → one mask per granularity level (1 = whole ... 6 = finest part).

    Clicks of an existing ``object_id`` accumulate; a box replaces the previous box. By default every requested
    level is returned (no IoU filtering, no de-duplication), which is what a whole ↔ part slider needs.
    """

    object_id: str | None = Field(None, max_length=100)
    points: list[list[float]] | None = Field(None, max_length=MAX_POINTS, description="[[x, y, label], ...]")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="[x0, y0, x1, y1]")
    levels: list[int] | None = Field(None, max_length=6, description="levels 1..6 (default all)")
    level: int | None = Field(None, ge=1, le=6, description="level to select for exports (default: best IoU)")
    min_iou: float | None = Field(None, description="drop levels whose predicted IoU is below (default: keep all)")
    dedup_iou: float = Field(1.0, ge=0.0, le=1.0, description="drop a level whose mask IoU with a kept one is above")
    min_region: int = Field(100, ge=0, le=1_000_000, description="fill holes / remove islands below (pixels)")
    mask_formats: list[MaskFormat] = Field(default_factory=_rle_only, max_length=2)

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        return None if v is None else _check_xy(v, True, "points")


class PanopticRequest(_Strict):
    """Panoptic segmentation with a class list (default: the 133 COCO-panoptic classes)."""

    class_names: list[str] | None = Field(None, max_length=MAX_CLASSES)
    stuff_classes: list[str] | None = Field(None, max_length=MAX_CLASSES)
    object_mask_threshold: float | None = Field(None, ge=0.0, le=1.0)
    overlap_threshold: float | None = Field(None, ge=0.0, le=1.0)
    store: bool = Field(True, description="keep the segments as objects of the session (for exports)")
    mask_formats: list[MaskFormat] = Field(default_factory=_rle_only, max_length=2)
    panoptic_png: bool = Field(False, description="also return the COCO-panoptic PNG (base64)")


class EverythingRequest(_Strict):
    """Segment everything (SAM-style grid of clicks) with the Semantic-SAM model, or the SEEM model."""

    family: Literal["auto", "seem", "semantic_sam"] = Field("auto", description="auto: Semantic-SAM when loaded")
    points_per_side: int = Field(16, ge=1, description="grid clicks per side (limit: max_points_per_side)")
    pred_iou_thresh: float = Field(0.88, description="keep masks whose score is above")
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    min_mask_region_area: int = Field(0, ge=0, le=1_000_000)
    levels: list[int] | None = Field(None, max_length=6, description="Semantic-SAM levels (default all)")
    class_names: list[str] | None = Field(None, max_length=200, description="SEEM only: label masks")
    max_masks: int = Field(500, ge=1, le=5000, description="keep at most this many (highest score first)")
    store: bool = True
    mask_formats: list[MaskFormat] = Field(default_factory=_rle_only, max_length=2)


class ExportObject(_Strict):
    object_id: str = Field(..., max_length=100)
    level: int | None = Field(None, ge=1, le=6, description="granularity objects: which level")


class ExportRequest(_Strict):
    """Which objects to export (in drawing order; later ones on top in the PNG) and how."""

    format: Literal["coco", "png", "overlay"] = "coco"
    objects: list[ExportObject] | None = Field(None, max_length=5000, description="default: every object")


# -------------------------------------------------------------------------------------------------- responses


class MaskOut(BaseModel):
    """One mask with what the model says about it."""

    score: float | None = Field(None, description="selection score (SEEM), class probability (panoptic), ...")
    label: str | None = None
    label_id: int | None = None
    label_score: float | None = None
    category_id: int | None = None
    isthing: bool | None = None
    source: str | None = Field(None, description="visual, text, reference, panoptic, granularity, everything")
    level: int | None = Field(None, description="granularity level 1..6")
    predicted_iou: float | None = None
    stability_score: float | None = None
    bbox: list[int] = Field(..., description="XYXY, exclusive right/bottom edge")
    bbox_xywh: list[int] = Field(..., description="COCO [x, y, w, h]")
    area: int
    segmentation: dict[str, Any] | None = Field(None, description="COCO RLE")
    png: str | None = Field(None, description="base64 PNG, 255 inside")


class ObjectOut(BaseModel):
    """An object of a session: its kind, round count and current mask(s) (one per level for granularity)."""

    object_id: str
    kind: Literal["interactive", "granularity", "panoptic", "everything"]
    round: int
    masks: list[MaskOut]
    selected_level: int | None = None
    prompts: str | None = Field(None, description="summary of the prompts given so far")
    timing_ms: float | None = None


class ObjectsResponse(BaseModel):
    session_id: str
    objects: list[ObjectOut]


class SessionOut(BaseModel):
    session_id: str
    width: int
    height: int
    bytes: int = Field(..., description="memory this session holds in the cache")
    expires_in_s: float = Field(..., description="idle time left before the session expires")
    objects: int
    families: list[str] = Field(..., description="model families whose features are cached")
    timing_ms: float | None = None


class PanopticResponse(BaseModel):
    session_id: str
    objects: list[ObjectOut]
    coco_panoptic: dict[str, Any] = Field(..., description="COCO-panoptic JSON (images, annotations, categories)")
    panoptic_png: str | None = Field(None, description="base64 COCO-panoptic PNG, id = R + 256 G + 256² B")
    timing_ms: float | None = None


class EverythingResponse(BaseModel):
    session_id: str
    family: str
    objects: list[ObjectOut]
    label_reason: str | None = None
    timing_ms: float | None = None


class VideoJobOut(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    frames: int
    done: int = Field(..., description="frames processed")
    progress: float = Field(..., description="done / frames")
    tracker: str
    error: str | None = None
    created: float
    finished: float | None = None
    result_url: str | None = None


class InfoResponse(BaseModel):
    version: str
    families: dict[str, Any]
    video_tracker: str
    limits: dict[str, Any]
    sessions: int
    cache_bytes_used: int
    pending_requests: int
