"""Results of the predictor: ``Segment`` (one mask with its label and score), panoptic and semantic maps, and
their exports (COCO RLE, JSON, overlay PNG, COCO-panoptic PNG + JSON).

Conventions: masks are bool ``[H, W]`` numpy arrays at the **original** image size; boxes are XYXY pixels with an
exclusive right/bottom edge (``(x_min, y_min, x_max + 1, y_max + 1)``, the tight box of the mask; ``(0, 0, 0, 0)``
for an empty mask), so a ``Segment``'s ``bbox`` is also a valid ``seem.prompts.Box`` for the same region; COCO
exports use ``[x, y, width, height]`` with the same edges (equal to ``pycocotools.mask.toBbox``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "PanopticSegmentation",
    "Segment",
    "SemanticSegmentation",
    "color_for",
    "draw_overlay",
    "encode_png",
    "mask_bbox",
    "mask_to_rle",
    "rle_to_mask",
    "segments_from_json",
    "segments_to_json",
]


# --------------------------------------------------------------------------------------------------------
# masks, boxes, RLE


def _as_mask(mask: Any, what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [H, W] array, got shape {m.shape}")
    return m.astype(bool, copy=False)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight XYXY box of a bool ``[H, W]`` mask with exclusive right/bottom edges; ``(0, 0, 0, 0)`` if empty."""
    m = _as_mask(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return (0, 0, 0, 0)
    rows = np.flatnonzero(m.any(axis=1))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a bool ``[H, W]`` mask: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    m = _as_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed ``counts`` as str/bytes, or uncompressed ``counts`` as a list) to bool [H, W]."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a mapping with 'size' [H, W] and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        obj = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(obj).astype(bool)


# --------------------------------------------------------------------------------------------------------
# Segment


@dataclass(eq=False)
class Segment:
    """One predicted mask.

    Attributes:
        mask: bool ``[H, W]`` at the original image size.
        score: how the mask was chosen (higher is better; its meaning depends on ``source``):
            ``"visual"`` / ``"reference"``: the official selection score (dot product of the query's mask embedding
            with the prompt's pooled embedding; not a probability); ``"text"``: the grounding similarity
            (``min(exp(logit_scale), 100) · cosine``); ``"panoptic"``: the class probability; ``"instance"``: class
            probability × mean mask probability (official instance score); ``"semantic"``: mean class probability
            over the mask.
        label: class name from the vocabulary (``"background"`` when the background column wins), or None.
        label_id: index of ``label`` in the vocabulary (``len(vocabulary)`` for background), or None.
        label_score: softmax probability of ``label`` over the vocabulary plus background, or None.
        low_res_logits: float32 ``[Hp/4, Wp/4]``: the model's stride-4 mask logits on the padded canvas (pass them
            back as ``mask_input`` / memory), or None.
        source: ``"visual"``, ``"reference"``, ``"text"``, ``"panoptic"``, ``"instance"`` or ``"semantic"``.
        id: segment id (panoptic segments: the value in ``panoptic_seg``), or None.
        category_id: the exported category id (COCO id for the default vocabulary), or None.
        isthing: thing (True) or stuff (False) for panoptic / instance segments, else None.
    """

    mask: np.ndarray
    score: float
    label: str | None = None
    label_id: int | None = None
    label_score: float | None = None
    low_res_logits: np.ndarray | None = field(default=None, repr=False)
    source: str = "visual"
    id: int | None = None
    category_id: int | None = None
    isthing: bool | None = None

    def __post_init__(self) -> None:
        self.mask = _as_mask(self.mask)
        self.score = float(self.score)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Tight XYXY box (exclusive right/bottom edge) of the mask."""
        return mask_bbox(self.mask)

    @property
    def area(self) -> int:
        """Number of mask pixels."""
        return int(self.mask.sum())

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the mask."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def rle(self) -> dict[str, Any]:
        """COCO RLE of the mask (see ``mask_to_rle``)."""
        return mask_to_rle(self.mask)

    def to_dict(self, include_mask: bool = True, include_logits: bool = False) -> dict[str, Any]:
        """JSON-ready dict: score, label fields, ``bbox`` (XYXY), ``bbox_xywh`` (COCO), area, ``segmentation`` (RLE)."""
        x0, y0, x1, y1 = self.bbox
        d: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "score": self.score,
            "label": self.label,
            "label_id": self.label_id,
            "label_score": self.label_score,
            "category_id": self.category_id,
            "isthing": self.isthing,
            "bbox": [x0, y0, x1, y1],
            "bbox_xywh": [x0, y0, x1 - x0, y1 - y0],
            "area": self.area,
        }
        if include_mask:
            d["segmentation"] = self.rle()
        if include_logits and self.low_res_logits is not None:
            d["low_res_logits"] = np.asarray(self.low_res_logits, dtype=np.float32).tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Segment:
        """Inverse of ``to_dict`` (needs ``segmentation``)."""
        if "segmentation" not in d:
            raise ValueError("Segment.from_dict needs the 'segmentation' RLE")
        logits = d.get("low_res_logits")
        return cls(
            mask=rle_to_mask(d["segmentation"]),
            score=float(d.get("score", 0.0)),
            label=d.get("label"),
            label_id=d.get("label_id"),
            label_score=d.get("label_score"),
            low_res_logits=None if logits is None else np.asarray(logits, dtype=np.float32),
            source=str(d.get("source", "visual")),
            id=d.get("id"),
            category_id=d.get("category_id"),
            isthing=d.get("isthing"),
        )


def segments_to_json(
    segments: Sequence[Segment],
    image_size: tuple[int, int],
    file_name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"image": {"file_name", "height", "width"}, "segments": [Segment.to_dict(), ...], **extra}``."""
    h, w = image_size
    for s in segments:
        if s.size != (h, w):
            raise ValueError(f"segment mask is {s.size} but the image is {(h, w)}")
    out: dict[str, Any] = {
        "image": {"file_name": file_name, "height": int(h), "width": int(w)},
        "segments": [s.to_dict() for s in segments],
    }
    if extra:
        out.update(extra)
    return out


def segments_from_json(data: Mapping[str, Any] | str) -> list[Segment]:
    """Segments of a ``segments_to_json`` dict (or its JSON text)."""
    d = json.loads(data) if isinstance(data, str) else data
    return [Segment.from_dict(s) for s in d["segments"]]


# --------------------------------------------------------------------------------------------------------
# drawing

_PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (188, 189, 34),
        (23, 190, 207),
        (255, 187, 120),
        (152, 223, 138),
        (255, 152, 150),
        (197, 176, 213),
        (196, 156, 148),
        (247, 182, 210),
        (219, 219, 141),
        (158, 218, 229),
        (57, 106, 177),
        (218, 124, 48),
        (62, 150, 81),
    ],
    dtype=np.uint8,
)


def color_for(index: int) -> tuple[int, int, int]:
    """A fixed RGB colour for segment ``index`` (a 20-colour cycle)."""
    c = _PALETTE[int(index) % len(_PALETTE)]
    return (int(c[0]), int(c[1]), int(c[2]))


def _caption(s: Segment) -> str:
    if s.label is None:
        return f"{s.score:.2f}"
    if s.label_score is not None:
        return f"{s.label} {s.label_score:.2f}"
    return s.label


def draw_levels(image: np.ndarray, segments: Sequence[Segment], alpha: float = 0.55) -> np.ndarray:
    """One panel per segment (``draw_overlay`` of that segment alone), side by side, each titled ``level i``
    (1 = the first segment); returns ``uint8 [H, W·n, 3]`` RGB. Used for the granularity levels of one prompt."""
    import cv2

    panels = []
    for i, s in enumerate(segments):
        p = np.ascontiguousarray(draw_overlay(image, [s], alpha=alpha, colors=[color_for(i)], labels=False))
        h = p.shape[0]
        scale = max(0.4, h / 600)
        cv2.putText(p, f"level {i + 1}", (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3)
        cv2.putText(p, f"level {i + 1}", (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
        panels.append(p)
    if not panels:
        raise ValueError("draw_levels needs at least one segment")
    return np.concatenate(panels, axis=1)


def draw_overlay(
    image: np.ndarray,
    segments: Sequence[Segment],
    alpha: float = 0.5,
    outline: bool = True,
    boxes: bool = False,
    labels: bool = True,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Draw segments over ``image`` (``uint8 [H, W, 3]`` RGB); returns a new ``uint8 [H, W, 3]`` RGB array.

    Each segment is filled with its colour (``colors[i]`` or ``color_for(i)``) blended with weight ``alpha``,
    outlined, optionally boxed, and captioned with its label (and label score) or its score.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    cols = [colors[i] if colors is not None else color_for(i) for i in range(len(segments))]
    for s, c in zip(segments, cols, strict=True):
        if s.size != (h, w):
            raise ValueError(f"segment mask is {s.size} but the image is {(h, w)}")
        m = s.mask
        out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(c, dtype=np.float32)
    canvas = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    thick = max(1, round(min(h, w) / 300))
    font_scale = max(0.35, min(h, w) / 900)
    for s, c in zip(segments, cols, strict=True):
        color = (int(c[0]), int(c[1]), int(c[2]))
        if outline and s.mask.any():
            contours, _ = cv2.findContours(s.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, color, thick)
        x0, y0, x1, y1 = s.bbox
        if boxes and x1 > x0:
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color, thick)
        if labels and x1 > x0:
            text = _caption(s)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            tx, ty = min(x0, max(0, w - tw - 2)), max(th + base + 1, y0)
            cv2.rectangle(canvas, (tx, ty - th - base - 1), (tx + tw + 2, ty), color, -1)
            cv2.putText(canvas, text, (tx + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1)
    return canvas


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of ``uint8 [H, W, 3]`` RGB or ``[H, W]`` grayscale."""
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"encode_png takes uint8 [H, W, 3] RGB or [H, W], got {a.dtype} {a.shape}")
    ok, buf = cv2.imencode(".png", a[:, :, ::-1] if a.ndim == 3 else a)
    if not ok:  # pragma: no cover - OpenCV failure
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------------------
# panoptic / semantic


@dataclass
class PanopticSegmentation:
    """A panoptic result at the original image size.

    Attributes:
        panoptic_seg: int32 ``[H, W]``: segment id per pixel (0 = void / unassigned).
        segments: one ``Segment`` per id (``Segment.id``), in id order, with label, ``category_id`` and ``isthing``.
        categories: the vocabulary as COCO categories ``[{"id", "name", "isthing"}, ...]`` (index = label id).
    """

    panoptic_seg: np.ndarray
    segments: list[Segment]
    categories: list[dict[str, Any]]

    def to_coco_png(self) -> np.ndarray:
        """COCO-panoptic PNG content: ``uint8 [H, W, 3]`` RGB with ``id = R + 256·G + 256²·B``."""
        ids = self.panoptic_seg.astype(np.int64)
        return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=2).astype(np.uint8)

    @staticmethod
    def ids_from_coco_png(rgb: np.ndarray) -> np.ndarray:
        """Inverse of ``to_coco_png``: int32 ``[H, W]`` segment ids."""
        a = np.asarray(rgb).astype(np.int64)
        return (a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]).astype(np.int32)

    def to_coco_json(self, file_name: str, image_id: int | str = 0, image_file: str | None = None) -> dict[str, Any]:
        """COCO-panoptic JSON (``images``, ``annotations`` with ``segments_info``, ``categories``) for this image.

        ``file_name`` is the panoptic PNG's name; ``image_file`` the original image's (default: ``file_name``).
        Each ``segments_info`` entry has ``id``, ``category_id``, ``iscrowd`` 0, ``bbox`` ``[x, y, w, h]``,
        ``area``, plus ``score`` and ``label``.
        """
        h, w = self.panoptic_seg.shape
        infos = []
        for s in self.segments:
            x0, y0, x1, y1 = s.bbox
            infos.append(
                {
                    "id": int(s.id or 0),
                    "category_id": s.category_id,
                    "iscrowd": 0,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": s.area,
                    "isthing": s.isthing,
                    "score": s.score,
                    "label": s.label,
                }
            )
        return {
            "images": [{"id": image_id, "file_name": image_file or file_name, "height": int(h), "width": int(w)}],
            "annotations": [{"image_id": image_id, "file_name": file_name, "segments_info": infos}],
            "categories": [
                {"id": c["id"], "name": c["name"], "isthing": int(bool(c["isthing"]))} for c in self.categories
            ],
        }


@dataclass
class SemanticSegmentation:
    """A semantic result at the original image size.

    Attributes:
        label_map: int32 ``[H, W]``: vocabulary index of the best class per pixel (official ``sem_seg.argmax(0)``).
        class_names: the vocabulary.
        scores: float32 ``[K, H, W]`` per-class scores (official ``sem_seg``) when requested, else None.
    """

    label_map: np.ndarray
    class_names: list[str]
    scores: np.ndarray | None = None

    def segments(self) -> list[Segment]:
        """One ``Segment`` per class present in ``label_map`` (score: mean class score over it when known)."""
        out = []
        for k in np.unique(self.label_map).tolist():
            m = self.label_map == k
            score = float(self.scores[k][m].mean()) if self.scores is not None else 0.0
            out.append(Segment(mask=m, score=score, label=self.class_names[k], label_id=int(k), source="semantic"))
        return out
