"""seem's own predictors as evaluation predictors (``seem.eval.protocol``).

- ``SegmenterAdapter`` wraps a SEEM ``Segmenter``: SAM-style ``predict``, plus ``predict_prompt`` (strokes,
  scribbles, polygons, boxes drawn as masks — how SEEM receives every visual prompt), ``panoptic``, ``referring``
  and ``track`` (video, when ``seem.video`` is available).
- ``GranularityAdapter`` wraps a Semantic-SAM ``GranularityPredictor``: ``predict`` returns the level with the highest
  predicted IoU, ``predict_levels`` all six levels.

``adapt(model)`` picks the adapter for a loaded model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seem.prompts import Box, MaskPrompt, Points, Polygon, PromptSet


def _triple(mask: np.ndarray, score: float, low_res: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logits = np.asarray(low_res, dtype=np.float32) if low_res is not None else mask.astype(np.float32)
    return mask[None].astype(bool), np.array([score], np.float32), logits[None]


class SegmenterAdapter:
    """A ``seem.predictor.Segmenter`` with every optional evaluation method."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter

    def __repr__(self) -> str:
        return repr(self.segmenter)

    def set_image(self, image: np.ndarray) -> None:
        self.segmenter.set_image(image)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        masks, scores, logits = self.segmenter.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            box=box,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
        return masks, scores, logits

    def predict_prompt(self, prompt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A simulated prompt: points, boxes and polygons as such (a model's ``box_rule`` / ``polygon_rule`` read
        them), strokes and scribbles as their drawn masks."""
        if prompt.kind == "point":
            ps = PromptSet(points=Points(np.asarray(prompt.points_xy, np.float32)))
        elif prompt.kind == "box" and prompt.box_xyxy is not None:
            ps = PromptSet(boxes=[Box(*[float(v) for v in prompt.box_xyxy])])
        elif prompt.kind == "polygon" and len(prompt.paths_xy) == 1 and len(prompt.paths_xy[0]) >= 3:
            ps = PromptSet(polygons=[Polygon(np.asarray(prompt.paths_xy[0], np.float32))])
        else:
            masks = [MaskPrompt(prompt.mask)]
            if prompt.negative_mask is not None and prompt.negative_mask.any():
                masks.append(MaskPrompt(prompt.negative_mask, label=0))
            ps = PromptSet(masks=masks)
        seg = self.segmenter.segment(ps, labels=False)[0]
        return _triple(seg.mask, float(seg.score), seg.low_res_logits)

    def predict_levels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every mask the model gives the clicks (``Segmenter.segment_levels``: coarse → fine; the default model's
        6 granularity levels, an official SEEM model's 3 queries); scores are the selection scores."""
        ps = PromptSet(points=Points(np.asarray(points, np.float32)))
        segs = self.segmenter.segment_levels(ps, labels=False)
        return np.stack([s.mask for s in segs]), np.array([s.score for s in segs], np.float32)

    def panoptic(self, class_names: Sequence[str]) -> Any:
        return self.segmenter.panoptic(list(class_names))

    def referring(self, phrase: str) -> Any:
        return self.segmenter.segment_text(phrase, labels=False)[0]

    def track(self, frames: Sequence[np.ndarray], first_mask: np.ndarray) -> np.ndarray:
        from seem.video import VideoTracker

        return VideoTracker(self.segmenter).track_masks(frames, first_mask)


class GranularityAdapter:
    """A ``seem.granularity.GranularityPredictor`` as an evaluation predictor."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def __repr__(self) -> str:
        p = self.predictor
        return f"{type(p).__name__}({type(p.model).__name__}, short_side={p.short_side})"

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The granularity with the highest predicted IoU (Semantic-SAM has no memory: ``mask_input`` is unused)."""
        recs = self.predictor.predict(point_coords, point_labels, box, sort="iou")
        if not multimask_output:
            recs = recs[:1]
        masks = np.stack([r.mask for r in recs])
        scores = np.array([r.predicted_iou for r in recs], np.float32)
        return masks, scores, masks.astype(np.float32)

    def predict_levels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All six levels (1 = whole … 6 = finest), untouched: no filtering, de-duplication or clean-up."""
        recs = self.predictor.predict(points, None, None, sort="level", min_iou=-1e9, dedup_iou=1.0, min_region=0)
        return np.stack([r.mask for r in recs]), np.array([r.predicted_iou for r in recs], np.float32)


def adapt(model: Any) -> Any:
    """The evaluation predictor for a loaded model (``SEEMModel`` or ``SemanticSAM``) or a seem predictor."""
    from seem.granularity import GranularityPredictor
    from seem.models.semantic_sam import SemanticSAM
    from seem.predictor import Segmenter

    if isinstance(model, SemanticSAM):
        return GranularityAdapter(GranularityPredictor(model))
    if isinstance(model, GranularityPredictor):
        return GranularityAdapter(model)
    if isinstance(model, Segmenter):
        return SegmenterAdapter(model)
    return SegmenterAdapter(Segmenter(model))
