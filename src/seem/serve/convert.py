"""Between the JSON of the API and seem's types: prompts in, masks out.

Nothing here touches the file system: masks come as COCO RLE or base64 PNG bytes, never as paths.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seem.io import ImageError, read_mask
from seem.prompts import Box, MaskPrompt, Points, Polygon, PromptError, PromptSet, ReferenceImage, Scribble
from seem.results import Segment, encode_png, mask_bbox, mask_to_rle, rle_to_mask
from seem.serve.errors import ApiError
from seem.serve.schemas import MaskIn, PromptsIn, VisualPromptsIn

__all__ = ["b64_png", "decode_b64", "mask_record", "object_masks_out", "segment_record", "to_prompt_set"]


def decode_b64(text: str, what: str) -> bytes:
    """Base64 (optionally a ``data:...;base64,`` URL) → bytes; ``ApiError(422)`` when malformed."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{what}: not valid base64", "invalid_request") from None


def b64_png(mask: np.ndarray) -> str:
    """Base64 of an 8-bit grayscale PNG of a bool mask (255 inside)."""
    return base64.b64encode(encode_png(mask.astype(np.uint8) * np.uint8(255))).decode("ascii")


def _mask(m: MaskIn, size: tuple[int, int], what: str) -> MaskPrompt:
    if (m.rle is None) == (m.png is None):
        raise ApiError(422, f"{what}: give exactly one of 'rle' and 'png'", "invalid_prompt")
    try:
        if m.rle is not None:
            arr = rle_to_mask(m.rle)
        else:
            assert m.png is not None
            arr = read_mask(decode_b64(m.png, what))
    except ApiError:
        raise
    except (ImageError, ValueError, TypeError, KeyError) as e:
        raise ApiError(422, f"{what}: cannot decode the mask: {e}", "invalid_prompt") from None
    if tuple(arr.shape) != tuple(size):
        raise ApiError(
            422,
            f"{what}: the mask is {arr.shape[1]}×{arr.shape[0]} (W×H) but the image is {size[1]}×{size[0]}",
            "invalid_prompt",
        )
    return MaskPrompt(arr, label=m.label)


def _visual(p: VisualPromptsIn, size: tuple[int, int], where: str) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if p.points:
        coords = [q[:2] for q in p.points]
        labels = [int(q[2]) if len(q) == 3 else 1 for q in p.points]
        kw["points"] = Points(coords, labels)
    if p.boxes:
        kw["boxes"] = [Box(b) for b in p.boxes]
    if p.scribbles:
        kw["scribbles"] = [Scribble(s.points, width=s.width, label=s.label) for s in p.scribbles]
    if p.polygons:
        kw["polygons"] = [Polygon(s.points, label=s.label) for s in p.polygons]
    if p.masks:
        kw["masks"] = [_mask(m, size, f"{where}masks[{i}]") for i, m in enumerate(p.masks)]
    return kw


def to_prompt_set(
    p: PromptsIn, size: tuple[int, int], reference_image: Callable[[str], np.ndarray] | None = None
) -> PromptSet:
    """The API prompts of one object → a ``PromptSet`` whose parts are checked against ``size = (H, W)``.

    The rule "at least one positive visual input" is left to the predictor, which checks the object's prompts
    merged over all rounds (a correction round may hold a negative click only).

    ``reference_image(session_id)`` returns the image of a reference session (or raises ``ApiError(404)``).
    Raises ``ApiError(422)`` naming the problem.
    """
    try:
        kw = _visual(p, size, "")
        if p.text is not None:
            kw["text"] = p.text
        if p.reference is not None:
            if reference_image is None:
                raise ApiError(422, "reference prompts are not available here", "invalid_prompt")
            ref_img = reference_image(p.reference.session_id)
            ref_kw = _visual(p.reference.prompts, ref_img.shape[:2], "reference.prompts.")
            kw["reference"] = ReferenceImage(ref_img, PromptSet(**ref_kw))
        ps = PromptSet(**kw)
        for group in (ps.boxes, ps.scribbles, ps.polygons, ps.masks):  # each part; the whole set is checked after
            for part in group:  # merging with the object's earlier prompts (a correction may be negative only)
                part.validate(size)
        if ps.points is not None:
            ps.points.validate(size)
        if ps.is_empty:
            raise PromptError("empty prompts: give points, boxes, scribbles, polygons, masks, text or a reference")
    except PromptError as e:
        raise ApiError(422, str(e), "invalid_prompt") from None
    return ps


# ---------------------------------------------------------------------------------------------------- output


def mask_record(mask: np.ndarray, **fields: Any) -> dict[str, Any]:
    """A ``MaskOut`` dict with RLE, boxes and area of ``mask`` plus ``fields``."""
    x0, y0, x1, y1 = mask_bbox(mask)
    rec: dict[str, Any] = {
        "bbox": [x0, y0, x1, y1],
        "bbox_xywh": [x0, y0, x1 - x0, y1 - y0],
        "area": int(mask.sum()),
        "segmentation": mask_to_rle(mask),
    }
    rec.update({k: v for k, v in fields.items() if v is not None})
    return rec


def segment_record(s: Segment) -> dict[str, Any]:
    """A ``MaskOut`` dict of a predictor ``Segment``."""
    d = s.to_dict(include_mask=True)
    d.pop("id", None)
    return {k: v for k, v in d.items() if v is not None}


def object_masks_out(records: Sequence[dict[str, Any]], formats: Sequence[str]) -> list[dict[str, Any]]:
    """Copies of stored records in the requested formats (``rle`` keeps ``segmentation``, ``png`` adds ``png``)."""
    out = []
    for r in records:
        d = dict(r)
        if "png" in formats and d.get("segmentation") is not None:
            d["png"] = b64_png(rle_to_mask(d["segmentation"]))
        if "rle" not in formats:
            d.pop("segmentation", None)
        out.append(d)
    return out
