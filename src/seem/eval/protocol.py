"""What the evaluation runner needs from a model: the SAM-style predictor protocol and optional extras.

Any object with ``set_image`` and a SAM-style ``predict`` can be evaluated (``InteractivePredictor``); the
other tasks need one extra method each and are skipped with a clear message when it is missing:

================  ====================================================  ==========================================
task              method                                                used by
================  ====================================================  ==========================================
interactive       ``predict(point_coords, point_labels, mask_input)``   ``runner.evaluate_interactive``
single prompts    ``predict`` (point, box), ``predict_prompt(prompt)``  ``runner.evaluate_prompts``
                  (stroke, scribble, polygon)
panoptic          ``panoptic(class_names)``                             ``runner.evaluate_panoptic``
referring         ``referring(phrase)``                                 ``runner.evaluate_referring``
video             ``track(frames, first_mask)``                         ``runner.evaluate_video``
granularity       ``predict_levels(points)``                            ``runner.evaluate_granularity``
================  ====================================================  ==========================================

Coordinate conventions (those of SAM's ``SamPredictor``): images are ``HWC uint8 RGB`` numpy arrays; points are
pixel ``(x, y)`` = (column, row), the centre of pixel ``(row r, column c)`` being ``(c, r)``; boxes are XYXY
pixels ``(x0, y0, x1, y1)`` (the runner passes the tight box with an exclusive right/bottom edge); returned
masks are at the image's original size ``[H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "GranularityPredictor",
    "InteractivePredictor",
    "PanopticPredictor",
    "PromptPredictor",
    "ReferringPredictor",
    "VideoPredictor",
    "missing_method_message",
    "supports",
]


@runtime_checkable
class InteractivePredictor(Protocol):
    """The SAM-style predictor every evaluated model implements.

    ``set_image(image)`` is called once per image (the runner skips it when consecutive items share the same
    image) and ``predict`` once per click / prompt.
    """

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image``: uint8 ``[H, W, 3]`` RGB."""
        ...

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for the prompts on the current image.

        Args:
            point_coords: float ``[N, 2]`` pixel ``(x, y)`` of the clicks, oldest first, or None.
            point_labels: ``[N]`` 1 = positive (foreground), 0 = negative (background), or None.
            box: float ``[4]`` XYXY pixel box, or None.
            mask_input: low-resolution logits of the previous round, ``[1, h, w]`` (SAM: ``[1, 256, 256]``), as
                returned in ``low_res_logits`` by the previous call; None on the first round.
            multimask_output: return several candidate masks (SAM: 3) instead of one.

        Returns:
            ``(masks bool [C, H, W], scores float [C], low_res_logits float [C, h, w])``. The runner uses the
            candidate with the highest score (the only one when ``C == 1``) and passes its logits
            (``low_res_logits[i][None]``) back as ``mask_input`` on the next round.
        """
        ...


@runtime_checkable
class PromptPredictor(Protocol):
    """Optional: free-form prompts (strokes, scribbles, polygons) given as a ``seem.eval.SimulatedPrompt``."""

    def predict_prompt(self, prompt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``prompt``: a ``SimulatedPrompt`` (``kind``, rasterised ``mask`` bool ``[H, W]``, ``points_xy``,
        ``paths_xy``, ``box_xyxy``, ``negative_mask``). Returns the same triple as ``predict``."""
        ...


@runtime_checkable
class PanopticPredictor(Protocol):
    """Optional: open-vocabulary panoptic segmentation of the current image."""

    def panoptic(self, class_names: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Returns ``(segment_ids int [H, W], segments)``: 0 = no segment; ``segments`` holds one dict per id
        with ``"id"`` (int, > 0) and ``"class"`` (int index into ``class_names``). An object with
        ``panoptic_seg`` and ``segments`` (entries with ``id`` and ``label_id``), as ``seem.results.
        PanopticSegmentation``, is accepted too."""
        ...


@runtime_checkable
class ReferringPredictor(Protocol):
    """Optional: referring segmentation (text → one mask) on the current image."""

    def referring(self, phrase: str) -> np.ndarray:
        """Returns the mask of the object ``phrase`` refers to, bool ``[H, W]`` (or an object with a ``mask``
        attribute, e.g. a ``seem.results.Segment``)."""
        ...


@runtime_checkable
class VideoPredictor(Protocol):
    """Optional: semi-supervised video object segmentation (mask propagation)."""

    def track(self, frames: Sequence[np.ndarray], first_mask: np.ndarray) -> np.ndarray:
        """``frames``: uint8 ``[H, W, 3]`` RGB, in time order; ``first_mask``: bool ``[H, W]`` of the object in
        frame 0. Returns bool ``[T, H, W]``, one mask per frame (frame 0 included)."""
        ...


@runtime_checkable
class GranularityPredictor(Protocol):
    """Optional: multi-granularity masks for a click (Semantic-SAM's 6 levels) on the current image."""

    def predict_levels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``points``: float ``[N, 2]`` pixel ``(x, y)`` positive clicks (the runner sends one). Returns
        ``(masks bool [K, H, W], predicted_ious float [K])`` (K = 6 for Semantic-SAM)."""
        ...


def supports(predictor: Any, method: str) -> bool:
    """True when ``predictor`` has a callable attribute ``method`` (e.g. ``"panoptic"``)."""
    return callable(getattr(predictor, method, None))


def missing_method_message(predictor: Any, method: str, task: str) -> str:
    """The message the runner reports when ``predictor`` lacks the optional ``method`` a ``task`` needs."""
    return (
        f"{type(predictor).__name__} does not implement {method}(), which the {task} evaluation needs "
        f"(see seem.eval.protocol); skipped"
    )
