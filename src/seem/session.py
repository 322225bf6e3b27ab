"""Multi-round interactive segmentation with SEEM's memory prompt.

    session = InteractiveSession(segmenter)      # after segmenter.set_image(...)
    seg = session.click(225, 120)                # round 1: a positive click
    seg = session.click(400, 420, positive=False)  # round 2: a correction; the round-1 mask is the memory prompt
    seg = session.scribble([(60, 300), (100, 350), (120, 400)])
    session.undo()                               # back to round 2's state
    session.reset()                              # start over

Each round re-runs the object with **all** its inputs so far (positive and negative clicks, strokes, boxes,
polygons and masks are accumulated, as the official ``evaluate_interactive`` loop ORs every new click into the
prompt masks) and, for v1 models from round 2 on, the previous round's stride-4 mask logits as the **memory
prompt** (``prev_mask``; the official loop feeds it from round 2). Text given in a later round replaces the earlier
text. Demo-rule models have no memory: each round just re-runs the accumulated prompts.

A session may hold several objects (``num_objects``). By default all objects are decoded together in one call per
round (``joint=True``), exactly like the official multi-prompt interactive evaluation (case d of the parity
fixtures: two boxes, then a correction for one of them); ``joint=False`` decodes them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seem.models.seem_types import DecoderDraws
from seem.predictor import Segmenter
from seem.prompts import STROKE_WIDTH, Box, Points, PromptError, PromptSet, PromptTypeError, Scribble
from seem.results import Segment

__all__ = ["InteractiveSession"]


@dataclass(frozen=True)
class _State:
    prompts: tuple[PromptSet | None, ...]
    segments: tuple[Segment, ...] | None


class InteractiveSession:
    """Interaction rounds on the segmenter's current image for ``num_objects`` objects.

    Args:
        segmenter: a ``Segmenter`` with an image set; the session is bound to that image.
        num_objects: how many objects are refined together (each round returns one ``Segment`` per object).
        joint: decode all objects in one decoder call per round (official multi-prompt evaluation) or one by one.
        labels: label the masks from the segmenter's vocabulary.
    """

    def __init__(self, segmenter: Segmenter, num_objects: int = 1, *, joint: bool = True, labels: bool = True) -> None:
        if not isinstance(segmenter, Segmenter):
            raise TypeError(f"segmenter must be a Segmenter, got {type(segmenter).__name__}")
        if isinstance(num_objects, bool) or not isinstance(num_objects, int) or num_objects < 1:
            raise ValueError(f"num_objects must be an int >= 1, got {num_objects!r}")
        self.segmenter = segmenter
        self.num_objects = num_objects
        self.joint = joint
        self.labels = labels
        self._token = segmenter.image_token
        self._history: list[_State] = [_State((None,) * num_objects, None)]

    # ------------------------------------------------------------------ state

    @property
    def round(self) -> int:
        """Number of completed rounds (0 before the first prompt)."""
        return len(self._history) - 1

    @property
    def segments(self) -> list[Segment] | None:
        """The latest round's segments (one per object), or None before the first round."""
        s = self._history[-1].segments
        return None if s is None else list(s)

    def prompts(self, obj: int = 0) -> PromptSet | None:
        """Everything given so far for object ``obj`` (accumulated), or None."""
        return self._history[-1].prompts[self._obj(obj)]

    def _obj(self, obj: int) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int) or not 0 <= obj < self.num_objects:
            raise ValueError(f"obj must be an int in [0, {self.num_objects}), got {obj!r}")
        return obj

    def _check_image(self) -> None:
        if self.segmenter.image_token != self._token:
            raise RuntimeError("the segmenter's image changed since this session started; call reset()")

    # ------------------------------------------------------------------ rounds

    def step(
        self, corrections: PromptSet | Sequence[PromptSet | None], *, draws: DecoderDraws | None = None
    ) -> list[Segment]:
        """Run one round: add ``corrections`` (one ``PromptSet`` or None per object; a single ``PromptSet`` for a
        one-object session) and return the new segments, one per object.

        ``draws``: explicit random choices of this round's decoder call (``joint=True``) for replaying the official
        code; None uses the deterministic defaults.
        """
        self._check_image()
        if isinstance(corrections, PromptSet):
            corrections = [corrections]
        if not isinstance(corrections, Sequence) or len(corrections) != self.num_objects:
            raise PromptError(f"give one PromptSet (or None) per object: {self.num_objects} expected")
        cur = self._history[-1]
        new_prompts: list[PromptSet] = []
        for i, (old, add) in enumerate(zip(cur.prompts, corrections, strict=True)):
            if add is not None and not isinstance(add, PromptSet):
                raise PromptTypeError(f"object {i}: expected a PromptSet or None, got {type(add).__name__}")
            merged = add if old is None else (old if add is None else old.merged(add))
            if merged is None:
                raise PromptError(f"object {i} has no prompt yet: its first round needs a PromptSet")
            new_prompts.append(merged)
        memory: list[Any] | None = None
        if cur.segments is not None and self.segmenter.variant == "v1":
            memory = [
                s.low_res_logits if (p.has_visual or p.reference is not None) else None
                for p, s in zip(new_prompts, cur.segments, strict=True)
            ]
            if all(m is None for m in memory):
                memory = None
        segs = self.segmenter.segment(new_prompts, joint=self.joint, labels=self.labels, memory=memory, draws=draws)
        self._history.append(_State(tuple(new_prompts), tuple(segs)))
        return segs

    def add(self, prompts: PromptSet, obj: int = 0, *, draws: DecoderDraws | None = None) -> Segment:
        """Add ``prompts`` to object ``obj`` (the others get no new input) and run a round; returns ``obj``'s mask."""
        i = self._obj(obj)
        corr: list[PromptSet | None] = [None] * self.num_objects
        corr[i] = prompts
        return self.step(corr, draws=draws)[i]

    def click(self, x: float, y: float, positive: bool = True, obj: int = 0) -> Segment:
        """A click at pixel ``(x, y)`` of the original image (positive or negative), then a round."""
        return self.add(PromptSet(points=Points([[x, y]], [int(bool(positive))])), obj)

    def scribble(self, points: Any, positive: bool = True, width: int = STROKE_WIDTH, obj: int = 0) -> Segment:
        """A stroke through ``points`` ``[(x, y), ...]`` (``width`` canvas pixels thick), then a round."""
        return self.add(PromptSet(scribbles=Scribble(points, width=width, label=int(bool(positive)))), obj)

    def box(self, x0: float, y0: float, x1: float, y1: float, obj: int = 0) -> Segment:
        """A box (XYXY edges, original pixels), then a round."""
        return self.add(PromptSet(boxes=Box(x0, y0, x1, y1)), obj)

    def text(self, phrase: str, obj: int = 0) -> Segment:
        """Set the object's text (replacing earlier text), then a round."""
        return self.add(PromptSet(text=phrase), obj)

    def undo(self) -> list[Segment] | None:
        """Drop the last round (its inputs and result); returns the segments now current (None if none)."""
        if len(self._history) <= 1:
            raise RuntimeError("nothing to undo")
        self._history.pop()
        return self.segments

    def reset(self) -> None:
        """Forget every round and bind to the segmenter's current image."""
        self._token = self.segmenter.image_token
        self._history = [_State((None,) * self.num_objects, None)]
