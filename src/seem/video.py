"""Video object tracking with SEEM: prompts on one frame, a mask of every object on every following frame.

    from seem.predictor import Segmenter, resolve_model
    from seem.prompts import Points, PromptSet
    from seem.video import TrackingWriter, VideoTracker

    tracker = VideoTracker(Segmenter(resolve_model("seem_focalt_v1.pt")))
    prompts = {1: PromptSet(points=Points([[320, 240]])), "dog": PromptSet(text="the dog")}
    with TrackingWriter("out/", stem="clip", fps=24) as writer:       # PNG masks, RLE JSON, overlay mp4
        for result in tracker.track("clip.mp4", prompts, start_frame=10):
            writer.write(result)                                      # result.masks[1]: bool [H, W]

Frames
------
``open_frames`` reads a folder of images (sorted by name, numbers compared as numbers), a video file (OpenCV:
.mp4, .avi, ...; frames come back RGB) or a list of ``uint8 [H, W, 3]`` RGB arrays. Frames are read one at a
time, so memory does not grow with the video's length. Frame ``index`` is the 0-based position in the source,
``name`` the file stem (folders) or the zero-padded index (videos, arrays).

How an object is followed (SEEM's way)
--------------------------------------
On its prompt frame each object is segmented from its ``PromptSet`` (clicks, boxes, scribbles, masks, text, a
reference image: anything ``Segmenter.segment`` takes). An object prompted with **masks only** (positive masks,
optionally negative ones, nothing else) is taken as given on its prompt frame, as semi-supervised video object
segmentation defines it (``union(positive) - union(negative)``; nothing is decoded for it there).

On every later frame the object is a **referring-image** prompt (``ReferenceImage``): the reference is an earlier
frame with the object's mask drawn on it as a mask prompt; the model finds the same thing in the new frame. Which
earlier frame (``reference``):

- ``"previous"`` (default; SEEM's video mode): the previous frame and its mask. Follows gradual change in
  appearance and pose; errors can accumulate.
- ``"first"``: the prompt frame and its mask for every frame (the official demo applies the reference tokens of
  the user's reference image to every frame this way). Never drifts, but loses objects that change appearance.
- ``"both"``: both references, the two results' stride-4 logits averaged before they are brought to the frame's
  size (bicubic, ``logit > 0`` for v1; bilinear for demo-rule models, as each rule's single result).
  Costs one more decoder call per object and frame (the image encoder, the dominant cost, still runs once).

``refine=True`` then re-prompts the object on the same frame with the propagated mask as a mask prompt (and, for
v1 models, the propagated logits as the memory prompt: one interactive correction round) and keeps that result.

When an object's mask comes out empty, later frames refer to the last frame where it was not empty (the object may
reappear). Reference frames are kept per object (at most two frames each), so memory stays constant; the
segmenter keeps the encoded previous frame (and, for ``"first"`` / ``"both"``, the prompt frame; the tracker raises
``Segmenter.reference_cache_size`` to 3 for them) for the reference, so each frame is encoded once.

Objects can enter later, or be corrected, with ``extra_prompts={frame_index: {object_id: PromptSet}}``: on that
frame the prompts replace the propagation for those objects (and become their new ``"first"`` reference).

Background use
--------------
``track`` returns an iterator that works frame by frame; ``progress`` takes a callback ``(done, total)`` and
``cancel`` a ``threading.Event`` (or any ``() -> bool``), checked before each frame: a web server runs the loop
in a worker thread and sets the event to stop it (``TrackingCancelled`` is raised in the worker). A ``Segmenter``
is not thread-safe: give each worker its own tracker and segmenter (they may share the model).

Outputs
-------
``TrackingWriter`` streams results to disk: ``<stem>_masks/<object>/<frame>.png`` (uint8 0/255), ``<stem>.json``
(COCO RLE per object and frame, written incrementally) and ``<stem>.overlay.mp4`` (OpenCV ``VideoWriter``,
``mp4v``). Everything is written into a hidden temporary folder inside the output folder and moved into place
only by a successful ``close()``; on an error (or ``abort()``) nothing appears. ``JFAccumulator`` scores results
against ground-truth mask PNGs (DAVIS J&F) frame by frame, again with constant memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from seem.io import ImageError, read_image
from seem.models.postprocess import crop_and_resize, upsample_to_padded
from seem.predictor import Segmenter
from seem.prompts import MaskPrompt, PromptError, PromptSet, PromptTypeError, ReferenceImage
from seem.results import Segment, color_for, draw_overlay

__all__ = [
    "IMAGE_EXTENSIONS",
    "Frame",
    "FrameFolder",
    "FrameList",
    "FrameResult",
    "FrameSource",
    "JFAccumulator",
    "ObjectId",
    "ReferenceMode",
    "TrackingCancelled",
    "TrackingWriter",
    "VideoError",
    "VideoFile",
    "VideoTracker",
    "open_frames",
    "read_gt_labels",
]

ObjectId = Hashable
"""An object's key: any hashable (ints and short strings are the practical choice; file names use ``str(id)``)."""
ReferenceMode = Literal["previous", "first", "both"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""Frame files recognised in a folder (case-insensitive)."""
DEFAULT_FPS = 24.0
"""Frame rate of the overlay video when the source has none (frame folders, arrays): DAVIS' 24 fps."""

ProgressCallback = Callable[[int, "int | None"], Any]
CancelFlag = threading.Event | Callable[[], bool]


class VideoError(ValueError):
    """A video source or output cannot be used (missing, unreadable, empty, inconsistent frame sizes, ...)."""


class TrackingCancelled(RuntimeError):
    """``track`` stopped because its ``cancel`` flag was set."""


# --------------------------------------------------------------------------------------------------------
# frame sources


@dataclass(frozen=True)
class Frame:
    """One frame: ``index`` (0-based position in the source), ``name`` (for file names), ``image`` uint8 RGB."""

    index: int
    name: str
    image: np.ndarray = field(repr=False)


class FrameSource:
    """Frames in time order, read lazily. Iterating again starts again from the first frame.

    Attributes:
        description: what the frames come from (for messages and the JSON output).
        fps: frames per second if the source knows it (video files), else None.
        num_frames: the number of frames if known (exact for folders and lists; a video container's count,
            which some files get wrong), else None.
    """

    description: str = "frames"
    fps: float | None = None
    num_frames: int | None = None

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start <= index < stop`` (``stop`` None: to the end)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def read(self, index: int) -> Frame:
        """Frame ``index``; ``VideoError`` when the source has fewer frames."""
        if index < 0:
            raise VideoError(f"frame index must be >= 0, got {index}")
        for f in self.frames(index, index + 1):
            return f
        n = f" (it has {self.num_frames})" if self.num_frames is not None else ""
        raise VideoError(f"{self.description}: no frame {index}{n}")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class FrameFolder(FrameSource):
    """A folder of image files (``IMAGE_EXTENSIONS``), one frame each, in natural name order (``2`` before
    ``10``). Frame names are the file stems."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise VideoError(f"frame folder not found: {self.path}")
        if not self.path.is_dir():
            raise VideoError(f"not a folder: {self.path}")
        self.files = sorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise VideoError(f"{self.path}: the folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
        self.description = str(self.path)
        self.fps = _check_fps(fps)
        self.num_frames = len(self.files)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        for i in range(max(0, start), len(self.files) if stop is None else min(stop, len(self.files))):
            p = self.files[i]
            try:
                image = read_image(p)
            except ImageError as e:
                raise VideoError(f"frame {i} ({p.name}): {e}") from e
            yield Frame(i, p.stem, image)


class VideoFile(FrameSource):
    """A video file read with OpenCV (``cv2.VideoCapture``; any container/codec its FFmpeg reads). The file is
    checked when the object is made: ``VideoError`` if it is missing, cannot be opened or has no frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise VideoError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise VideoError(f"not a file: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise VideoError(f"{self.path}: cannot open this video (not a video file OpenCV can decode)")
            ok, first = cap.read()
            if not ok or first is None:
                raise VideoError(f"{self.path}: the video has no readable frame")
            native_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        self.description = str(self.path)
        if fps is not None:
            self.fps = _check_fps(fps)
        else:
            self.fps = native_fps if math.isfinite(native_fps) and native_fps > 0 else None
        self.num_frames = count if count > 0 else None

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise VideoError(f"{self.path}: cannot open this video")
            i = 0
            while stop is None or i < stop:
                if i < start:  # decode without converting: skipping is cheap and exact (seeking is not)
                    if not cap.grab():
                        return
                    i += 1
                    continue
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                yield Frame(i, f"{i:05d}", np.ascontiguousarray(bgr[:, :, ::-1]))
                i += 1
        finally:
            cap.release()


class FrameList(FrameSource):
    """Frames given as arrays (anything ``seem.io.read_image`` accepts: ``uint8 [H, W, 3]`` RGB, PIL images,
    paths). A list or tuple is re-iterable; another iterable (e.g. a generator) can be read once."""

    def __init__(self, frames: Iterable[Any], fps: float | None = None) -> None:
        if isinstance(frames, (str, bytes, os.PathLike, np.ndarray)):
            raise PromptTypeError("FrameList takes an iterable of frames; use open_frames for a path")
        self._items: Sequence[Any] | None = frames if isinstance(frames, Sequence) else None
        self._iter: Iterator[Any] | None = None if self._items is not None else iter(frames)
        if self._items is not None and len(self._items) == 0:
            raise VideoError("no frames given (empty list)")
        self.description = "frames"
        self.fps = _check_fps(fps)
        self.num_frames = len(self._items) if self._items is not None else None

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        if self._items is not None:
            source: Iterable[Any] = self._items
        else:
            if self._iter is None:
                raise VideoError("these frames came from a one-shot iterator that was already read")
            source, self._iter = self._iter, None
        for i, item in enumerate(source):
            if stop is not None and i >= stop:
                return
            if i < start:
                continue
            try:
                image = read_image(item)
            except ImageError as e:
                raise VideoError(f"frame {i}: {e}") from e
            yield Frame(i, f"{i:05d}", image)


def _check_fps(fps: float | None) -> float | None:
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


def open_frames(source: str | os.PathLike[str] | FrameSource | Iterable[Any], fps: float | None = None) -> FrameSource:
    """A ``FrameSource`` for a folder of frames, a video file, an existing ``FrameSource`` (returned as is) or an
    iterable of frame arrays. ``fps`` overrides the source's frame rate (used for the overlay video)."""
    if isinstance(source, FrameSource):
        if fps is not None:
            source.fps = _check_fps(fps)
        return source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if not p.exists():
            raise VideoError(f"video not found: {p} (give a video file or a folder of frames)")
        return FrameFolder(p, fps) if p.is_dir() else VideoFile(p, fps)
    if isinstance(source, (bytes, bytearray, np.ndarray)):
        raise PromptTypeError(
            f"frames must be a path, a FrameSource or a list of frames, got {type(source).__name__} "
            "(wrap a single array in a list)"
        )
    if isinstance(source, Iterable):
        return FrameList(source, fps)
    raise PromptTypeError(f"frames must be a path, a FrameSource or a list of frames, got {type(source).__name__}")


# --------------------------------------------------------------------------------------------------------
# tracking


@dataclass
class FrameResult:
    """The objects on one frame.

    Attributes:
        index: the frame's 0-based position in the source.
        name: the frame's name (file stem or zero-padded index).
        image: the frame, ``uint8 [H, W, 3]`` RGB (for drawing; drop results you do not need to keep memory flat).
        segments: ``{object_id: Segment}`` for every object known by this frame (mask bool ``[H, W]``; ``source``
            ``"visual"``/``"text"``/... on a prompt frame, ``"reference"`` when propagated, ``"given"`` for a
            given mask).
        prompted: the objects segmented from prompts on this frame (not propagated).
    """

    index: int
    name: str
    image: np.ndarray = field(repr=False)
    segments: dict[ObjectId, Segment]
    prompted: frozenset[ObjectId] = frozenset()

    @property
    def masks(self) -> dict[ObjectId, np.ndarray]:
        """``{object_id: bool [H, W]}``."""
        return {k: s.mask for k, s in self.segments.items()}

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


@dataclass
class _Track:
    order: int
    anchor: tuple[np.ndarray, np.ndarray] | None = None  # (frame, mask) on the latest prompt frame
    last: tuple[np.ndarray, np.ndarray] | None = None  # (frame, mask) on the latest frame with a non-empty mask


def _check_prompts(prompts: Any, what: str) -> dict[ObjectId, PromptSet]:
    if isinstance(prompts, PromptSet):
        raise PromptTypeError(f"{what}: give a dict {{object_id: PromptSet}} (e.g. {{1: prompts}})")
    if not isinstance(prompts, Mapping):
        raise PromptTypeError(f"{what}: expected a dict {{object_id: PromptSet}}, got {type(prompts).__name__}")
    out: dict[ObjectId, PromptSet] = {}
    for k, v in prompts.items():
        if not isinstance(k, Hashable) or isinstance(k, (float, bool)):
            raise PromptTypeError(f"{what}: object ids must be ints or strings, got {k!r}")
        if not isinstance(v, PromptSet):
            raise PromptTypeError(f"{what}: object {k!r}: expected a PromptSet, got {type(v).__name__}")
        out[k] = v
    return out


def _given_mask(p: PromptSet) -> np.ndarray | None:
    """The mask of a masks-only prompt set (union of positive minus union of negative), else None."""
    if not p.masks or p.points is not None or p.boxes or p.scribbles or p.polygons or p.text or p.reference:
        return None
    pos = [m.mask for m in p.masks if m.label]
    if not pos:
        return None
    mask = np.logical_or.reduce(pos)
    for m in p.masks:
        if not m.label:
            mask &= ~m.mask
    return mask


def _cancel_check(cancel: CancelFlag | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event, a callable or None, got {type(cancel).__name__}")


class VideoTracker:
    """Follow prompted objects through a video with a ``Segmenter`` (see the module docstring).

    Args:
        segmenter: the ``Segmenter`` to use (its current image is replaced frame by frame).
        reference: ``"previous"`` (default), ``"first"`` or ``"both"``: which earlier frame(s) refer to the object.
        refine: re-prompt each propagated object with its propagated mask (one more decoder call per object).
        labels: label every mask from the segmenter's vocabulary (costs the vocabulary's encoding once).
    """

    def __init__(
        self, segmenter: Segmenter, *, reference: ReferenceMode = "previous", refine: bool = False, labels: bool = False
    ) -> None:
        if not isinstance(segmenter, Segmenter):
            raise TypeError(f"segmenter must be a seem.predictor.Segmenter, got {type(segmenter).__name__}")
        if reference not in ("previous", "first", "both"):
            raise ValueError(f"reference must be 'previous', 'first' or 'both', got {reference!r}")
        self.segmenter = segmenter
        self.reference: ReferenceMode = reference
        self.refine = bool(refine)
        self.labels = bool(labels)

    # ------------------------------------------------------------------ public

    def track(
        self,
        frames: str | os.PathLike[str] | FrameSource | Iterable[Any],
        prompts: Mapping[Any, PromptSet],
        start_frame: int = 0,
        *,
        end_frame: int | None = None,
        extra_prompts: Mapping[int, Mapping[Any, PromptSet]] | None = None,
        progress: bool | ProgressCallback | None = True,
        cancel: CancelFlag | None = None,
    ) -> Iterator[FrameResult]:
        """Follow the objects from ``start_frame`` on; yields one ``FrameResult`` per frame, as it is computed.

        Args:
            frames: a video file, a folder of frames, a ``FrameSource`` or a list of ``uint8 [H, W, 3]`` RGB frames.
            prompts: ``{object_id: PromptSet}`` on frame ``start_frame``, in that frame's pixels (may be empty when
                ``extra_prompts`` introduces every object).
            start_frame: the prompt frame; earlier frames are skipped (tracking runs forward).
            end_frame: stop before this frame index (None: the end of the video).
            extra_prompts: ``{frame_index: {object_id: PromptSet}}``: objects entering later, or corrections.
            progress: True for a progress bar (tqdm, on stderr), a callback ``(done, total)`` called after every
                frame (``total`` None when unknown), or False / None.
            cancel: a ``threading.Event`` or ``() -> bool``, checked before each frame; when set,
                ``TrackingCancelled`` is raised.

        The arguments are checked here, before anything runs; the frames are read and decoded while iterating.
        """
        source = open_frames(frames)
        if isinstance(start_frame, bool) or not isinstance(start_frame, int) or start_frame < 0:
            raise VideoError(f"start_frame must be an int >= 0, got {start_frame!r}")
        if end_frame is not None and (
            isinstance(end_frame, bool) or not isinstance(end_frame, int) or end_frame <= start_frame
        ):
            raise VideoError(f"end_frame must be an int > start_frame ({start_frame}), got {end_frame!r}")
        schedule: dict[int, dict[ObjectId, PromptSet]] = {}
        first = _check_prompts(prompts, "prompts")
        if first:
            schedule[start_frame] = dict(first)
        for f, group in (extra_prompts or {}).items():
            if isinstance(f, bool) or not isinstance(f, int) or f < start_frame:
                raise VideoError(f"extra_prompts: frame {f!r} must be an int >= start_frame ({start_frame})")
            if end_frame is not None and f >= end_frame:
                raise VideoError(f"extra_prompts: frame {f} is not before end_frame ({end_frame})")
            schedule.setdefault(f, {}).update(_check_prompts(group, f"extra_prompts[{f}]"))
        if not schedule:
            raise PromptError("no object to track: give prompts (a dict {object_id: PromptSet})")
        if source.num_frames is not None and isinstance(source, (FrameFolder, FrameList)):
            late = sorted(f for f in schedule if f >= source.num_frames)
            if late:
                raise VideoError(
                    f"{source.description}: prompts on frame(s) {late} but there are {source.num_frames} frames"
                )
        if isinstance(progress, bool) or progress is None:
            callback: ProgressCallback | None = None
            bar = bool(progress)
        elif callable(progress):
            callback, bar = progress, False
        else:
            raise TypeError(f"progress must be a bool or a callable (done, total), got {type(progress).__name__}")
        stop = end_frame
        total = None
        if source.num_frames is not None:
            total = max(0, (source.num_frames if stop is None else min(stop, source.num_frames)) - start_frame)
        elif stop is not None:
            total = stop - start_frame
        if self.reference != "previous":  # the current, the previous and the prompt frame stay encoded
            self.segmenter.reference_cache_size = max(self.segmenter.reference_cache_size, 3)
        return self._run(source, schedule, start_frame, stop, total, callback, bar, _cancel_check(cancel))

    def track_masks(self, frames: Sequence[np.ndarray], first_mask: np.ndarray) -> np.ndarray:
        """Semi-supervised VOS: the object's mask on frame 0 given, bool ``[T, H, W]`` for every frame (frame 0
        is the given mask). The evaluation protocol's ``track`` (``seem.eval.protocol.VideoPredictor``)."""
        mask = np.asarray(first_mask).astype(bool)
        out = [r.masks[1] for r in self.track(list(frames), {1: PromptSet(masks=MaskPrompt(mask))}, progress=False)]
        return np.stack(out)

    # ------------------------------------------------------------------ internals

    def _run(
        self,
        source: FrameSource,
        schedule: dict[int, dict[ObjectId, PromptSet]],
        start: int,
        stop: int | None,
        total: int | None,
        callback: ProgressCallback | None,
        bar: bool,
        cancelled: Callable[[], bool],
    ) -> Iterator[FrameResult]:
        pbar = None
        if bar:
            from tqdm.auto import tqdm

            pbar = tqdm(total=total, desc="tracking", unit="frame", leave=False)
        tracks: dict[ObjectId, _Track] = {}
        done = 0
        size: tuple[int, int] | None = None
        try:
            for frame in source.frames(start, stop):
                if cancelled():
                    raise TrackingCancelled(f"tracking cancelled after {done} frame(s)")
                if size is not None and frame.image.shape[:2] != size:
                    raise VideoError(
                        f"frame {frame.index} ({frame.name}) is {frame.image.shape[1]}×{frame.image.shape[0]} but "
                        f"earlier frames are {size[1]}×{size[0]} (W×H)"
                    )
                size = frame.image.shape[:2]
                yield self._step(frame, schedule.get(frame.index, {}), tracks)
                done += 1
                if pbar is not None:
                    pbar.update(1)
                if callback is not None:
                    callback(done, total)
            if done == 0:
                raise VideoError(f"{source.description}: no frame at or after start_frame {start}")
            missing = sorted(f for f in schedule if f >= start + done)
            if missing:
                last = start + done - 1
                raise VideoError(f"prompts were given for frame(s) {missing}, after the last frame ({last})")
        finally:
            if pbar is not None:
                pbar.close()

    def _step(self, frame: Frame, prompted: dict[ObjectId, PromptSet], tracks: dict[ObjectId, _Track]) -> FrameResult:
        seg = self.segmenter
        image = frame.image
        h, w = image.shape[:2]
        for k in prompted:
            if k not in tracks:
                tracks[k] = _Track(order=len(tracks))
            try:
                prompted[k].validate((h, w))
            except PromptError as e:
                raise type(e)(f"frame {frame.index}, object {k!r}: {e}") from None
        seg.set_image(image)
        out: dict[ObjectId, Segment] = {}
        # objects with prompts on this frame
        for k, p in prompted.items():
            given = _given_mask(p)
            if given is not None:
                out[k] = Segment(mask=given, score=1.0, source="given")
                continue
            try:
                out[k] = seg.segment(p, labels=self.labels)[0]
            except PromptError as e:
                raise type(e)(f"frame {frame.index}, object {k!r}: {e}") from None
        # objects propagated from earlier frames
        for k, t in tracks.items():
            if k in prompted:
                continue
            out[k] = self._propagate(t)
        for k, s in out.items():
            t = tracks[k]
            if s.mask.any():
                t.last = (image, s.mask)
                if k in prompted:
                    t.anchor = (image, s.mask)
        ordered = {k: out[k] for k in sorted(out, key=lambda k: tracks[k].order)}
        return FrameResult(frame.index, frame.name, image, ordered, frozenset(prompted))

    def _propagate(self, t: _Track) -> Segment:
        seg = self.segmenter
        refs: list[tuple[np.ndarray, np.ndarray]] = []
        if self.reference in ("previous", "both") and t.last is not None:
            refs.append(t.last)
        first = t.anchor if self.reference in ("first", "both") else None
        if first is not None and (not refs or refs[0][0] is not first[0]):
            refs.append(first)
        if not refs and t.last is not None:  # "first" with no anchor (the prompt gave nothing) but a later mask
            refs.append(t.last)
        h, w = seg.original_size
        if not refs:
            return Segment(mask=np.zeros((h, w), bool), score=0.0, source="reference")
        objs = [PromptSet(reference=ReferenceImage(img, PromptSet(masks=MaskPrompt(m)))) for img, m in refs]
        results = seg.segment(objs, labels=self.labels)
        s = results[0] if len(results) == 1 else self._fuse(results)
        if self.refine and s.mask.any():
            memory = [s.low_res_logits] if seg.variant == "v1" else None
            r = seg.segment(PromptSet(masks=MaskPrompt(s.mask)), memory=memory, labels=self.labels)[0]
            if r.mask.any():
                s = dataclasses.replace(r, source="reference")
        return s

    def _fuse(self, results: list[Segment]) -> Segment:
        """Average the stride-4 logits of several results on the current frame; the reference rule's resizing."""
        g = self.segmenter.geometry
        logits = [r.low_res_logits for r in results if r.low_res_logits is not None]
        if len(logits) != len(results):  # pragma: no cover - Segmenter always returns them
            return results[0]
        mean = torch.from_numpy(np.mean(np.stack(logits), axis=0).astype(np.float32))
        mode = "bicubic" if self.segmenter.variant == "v1" else "bilinear"
        up = upsample_to_padded(mean[None], g.padded_size, mode=mode)
        full = crop_and_resize(up, g.resized_size, g.original_size, mode=mode, antialias=False)[0]
        mask = (full > 0).numpy()  # sigmoid(x) > 0.5
        best = max(results, key=lambda r: r.score)
        return dataclasses.replace(
            best,
            mask=mask,
            score=float(np.mean([r.score for r in results])),
            low_res_logits=mean.numpy(),
            source="reference",
        )


# --------------------------------------------------------------------------------------------------------
# writing


def _safe_name(s: Any) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("._") or "object"
    return name[:80]


class TrackingWriter:
    """Write tracking results as they come, with all-or-nothing semantics.

    Files (``stem`` defaults to ``"video"``):

    - ``<out>/<stem>_masks/<object>/<frame name>.png``: uint8 0/255 mask per object and frame (``png=True``);
    - ``<out>/<stem>.json``: ``{"video": {...}, "frames": [{"index", "name", "objects": {id: Segment.to_dict()
      (COCO RLE "segmentation", "bbox" XYXY, "score", ...)}}], "objects": [ids]}`` (``rle_json=True``);
    - ``<out>/<stem>.overlay.mp4``: every frame with the objects drawn (fixed colour per object, captioned with
      its id), ``mp4v`` at ``fps`` (``overlay=True``).

    Use as a context manager (committed on success, removed on an exception) or call ``close()`` /
    ``abort()``. Until ``close()`` everything lives in a hidden temporary folder inside ``out_dir``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        stem: str = "video",
        *,
        fps: float | None = None,
        png: bool = True,
        rle_json: bool = True,
        overlay: bool = True,
        alpha: float = 0.5,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.out_dir = Path(out_dir).expanduser()
        self.stem = _safe_name(stem)
        self.fps = _check_fps(fps) or DEFAULT_FPS
        self.png, self.rle_json, self.overlay, self.alpha = png, rle_json, overlay, alpha
        self.info = dict(info or {})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.stem}.", suffix=".partial", dir=self.out_dir))
        self._json: Any = None
        self._video: Any = None
        self._size: tuple[int, int] | None = None
        self._objects: list[ObjectId] = []
        self._names: dict[ObjectId, str] = {}
        self._frames = 0
        self._closed = False
        self._extra: dict[str, Path] = {}

    # paths of the final outputs
    @property
    def masks_dir(self) -> Path:
        return self.out_dir / f"{self.stem}_masks"

    @property
    def json_path(self) -> Path:
        return self.out_dir / f"{self.stem}.json"

    @property
    def video_path(self) -> Path:
        return self.out_dir / f"{self.stem}.overlay.mp4"

    def _object_name(self, k: ObjectId) -> str:
        if k not in self._names:
            name = _safe_name(k)
            used = set(self._names.values())
            base, i = name, 2
            while name in used:
                name, i = f"{base}_{i}", i + 1
            self._names[k] = name
            self._objects.append(k)
        return self._names[k]

    def write(self, result: FrameResult) -> None:
        """Add one frame's results."""
        if self._closed:
            raise VideoError("this TrackingWriter is closed")
        h, w = result.size
        if self._size is None:
            self._size = (h, w)
            if self.png:
                (self._tmp / "masks").mkdir()
            if self.rle_json:
                self._json = open(self._tmp / "masks.json", "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
                self._json.write('{"frames": [\n')
            if self.overlay:
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                self._video = cv2.VideoWriter(str(self._tmp / "overlay.mp4"), fourcc, self.fps, (w, h))
                if not self._video.isOpened():
                    raise VideoError("OpenCV cannot write an mp4v video here (VideoWriter did not open)")
        elif (h, w) != self._size:
            raise VideoError(f"frame {result.index} is {w}×{h} but earlier frames are {self._size[1]}×{self._size[0]}")
        names = [self._object_name(k) for k in result.segments]
        if self.png:
            for name, s in zip(names, result.segments.values(), strict=True):
                d = self._tmp / "masks" / name
                d.mkdir(parents=True, exist_ok=True)
                ok = cv2.imwrite(str(d / f"{_safe_name(result.name)}.png"), s.mask.astype(np.uint8) * 255)
                if not ok:
                    raise VideoError(f"cannot write the mask PNG of frame {result.name}")
        if self._json is not None:
            entry = {
                "index": result.index,
                "name": result.name,
                "prompted": sorted(str(k) for k in result.prompted),
                "objects": {str(k): s.to_dict() for k, s in result.segments.items()},
            }
            self._json.write(("" if self._frames == 0 else ",\n") + json.dumps(entry))
        if self._video is not None:
            segs, colors = [], []
            for k, s in result.segments.items():
                caption = str(k) if s.label is None else f"{k}: {s.label}"
                segs.append(dataclasses.replace(s, label=caption, label_score=None))
                colors.append(color_for(self._objects.index(k)))
            frame = draw_overlay(result.image, segs, alpha=self.alpha, colors=colors)
            self._video.write(np.ascontiguousarray(frame[:, :, ::-1]))
        self._frames += 1

    def attach(self, name: str, data: bytes) -> Path:
        """Add a file ``out_dir/name`` (e.g. a metrics JSON) that appears together with the others on
        ``close()``; returns its final path."""
        if self._closed:
            raise VideoError("this TrackingWriter is closed")
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"attach: {name!r} must be a plain file name")
        tmp = self._tmp / f"extra-{len(self._extra)}"
        tmp.write_bytes(data)
        self._extra[name] = tmp
        return self.out_dir / name

    def close(self) -> list[Path]:
        """Finish the files and move them into place; returns the written paths (the masks folder as one)."""
        if self._closed:
            raise VideoError("this TrackingWriter is already closed")
        if self._frames == 0:
            self.abort()
            raise VideoError("no frame was written")
        try:
            if self._json is not None:
                h, w = self._size or (0, 0)
                tail = {
                    "video": {**self.info, "height": h, "width": w, "fps": self.fps, "num_frames": self._frames},
                    "objects": [{"id": str(k), "name": self._names[k]} for k in self._objects],
                }
                self._json.write("\n],\n" + json.dumps(tail)[1:] + "\n")
                self._json.close()
                self._json = None
            if self._video is not None:
                self._video.release()
                self._video = None
            moves: list[tuple[Path, Path]] = []
            if self.png:
                moves.append((self._tmp / "masks", self.masks_dir))
            if self.rle_json:
                moves.append((self._tmp / "masks.json", self.json_path))
            if self.overlay:
                moves.append((self._tmp / "overlay.mp4", self.video_path))
            moves += [(tmp, self.out_dir / name) for name, tmp in self._extra.items()]
            for src, dst in moves:
                if src.is_dir() and dst.exists():
                    old = self._tmp / "old"
                    os.replace(dst, old)
                    os.replace(src, dst)
                else:
                    os.replace(src, dst)
            self._closed = True
            return [dst for _, dst in moves]
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop everything written so far (nothing appears in ``out_dir``)."""
        if self._json is not None:
            self._json.close()
            self._json = None
        if self._video is not None:
            self._video.release()
            self._video = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> TrackingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------------------
# J&F against ground truth


def read_gt_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """A ground-truth mask PNG → uint8 ``[H, W]`` stored values (palette indices for palette PNGs)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "P", "1"):
                return np.array(im).astype(np.uint8)
            return np.array(im.convert("L")).astype(np.uint8)
    except (OSError, ValueError) as e:
        raise VideoError(f"cannot read the ground-truth mask {path}: {e}") from e


class JFAccumulator:
    """DAVIS J&F of tracking results against ground-truth PNGs in ``gt_dir`` (``<frame name>.png``), frame by
    frame (nothing but two floats per object and frame is kept).

    Ground-truth values: a mask holding only 0 and 255 is one object (the tracked object when there is one,
    else the object with id ``1``); otherwise value ``k`` is object ``k`` (objects keyed by int ids or their
    decimal strings) and 255 is void (left out of J and F). Each object is scored on the frames with a
    ground-truth file from its prompt frame on; ``summary()`` gives DAVIS' statistics (mean, recall, decay),
    dropping each object's first and last scored frame by default, as the DAVIS semi-supervised evaluation does.
    """

    def __init__(self, gt_dir: str | os.PathLike[str], *, drop_first_last: bool = True) -> None:
        self.gt_dir = Path(gt_dir).expanduser()
        if not self.gt_dir.is_dir():
            raise VideoError(f"ground-truth folder not found: {self.gt_dir}")
        self.drop_first_last = drop_first_last
        self.values: dict[ObjectId, dict[str, list[float]]] = {}
        self.frames_scored = 0
        self._started: set[ObjectId] = set()

    def _gt(self, name: str) -> np.ndarray | None:
        p = self.gt_dir / f"{name}.png"
        return read_gt_labels(p) if p.is_file() else None

    def add(self, result: FrameResult) -> None:
        """Score one frame's results (skipped when the frame has no ground truth)."""
        from seem.eval.metrics import boundary_f_measure, region_similarity

        self._started.update(result.prompted)
        labels = self._gt(result.name)
        if labels is None:
            return
        if labels.shape != result.size:
            raise VideoError(
                f"ground truth {result.name}.png is {labels.shape[1]}×{labels.shape[0]} but the frame is "
                f"{result.size[1]}×{result.size[0]}"
            )
        values = set(np.unique(labels).tolist()) - {0}
        binary = values <= {255}
        void = None if binary else labels == 255
        scored = False
        for k, s in result.segments.items():
            if k not in self._started:
                continue  # an object is scored from its prompt frame on
            if binary:
                if len(result.segments) > 1 and _as_int(k) != 1:
                    continue
                gt = labels == 255
            else:
                kid = _as_int(k)
                if kid is None:
                    continue
                gt = labels == kid
            v = self.values.setdefault(k, {"J": [], "F": []})
            v["J"].append(float(region_similarity(gt, s.mask, void)))
            v["F"].append(float(boundary_f_measure(gt, s.mask, void)))
            scored = True
        self.frames_scored += int(scored)

    def summary(self) -> dict[str, Any]:
        """``{"objects": {id: {"J": {M, R, D}, "F": {...}, "JF", "n_frames"}}, "J_mean", "F_mean", "JF"}``."""
        from seem.eval.metrics import davis_statistics

        objs: dict[str, Any] = {}
        jm_all, fm_all = [], []
        for k, v in self.values.items():
            j, f = np.asarray(v["J"]), np.asarray(v["F"])
            if self.drop_first_last and len(j) > 2:
                j, f = j[1:-1], f[1:-1]
            jm, jr, jd = davis_statistics(j)
            fm, fr, fd = davis_statistics(f)
            objs[str(k)] = {
                "J": {"M": jm, "R": jr, "D": jd},
                "F": {"M": fm, "R": fr, "D": fd},
                "JF": (jm + fm) / 2,
                "n_frames": len(v["J"]),
                "n_scored": len(j),
            }
            jm_all.append(jm)
            fm_all.append(fm)
        jmean = float(np.nanmean(jm_all)) if jm_all else math.nan
        fmean = float(np.nanmean(fm_all)) if fm_all else math.nan
        return {
            "objects": objs,
            "J_mean": jmean,
            "F_mean": fmean,
            "JF": (jmean + fmean) / 2,
            "drop_first_last": self.drop_first_last,
        }


def _as_int(k: ObjectId) -> int | None:
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return int(k)
    if isinstance(k, str) and k.isdigit():
        return int(k)
    return None
