"""Video jobs: track an object through the frames of a video in a background thread.

The tracker is any callable with this interface (``Tracker``)::

    track(frames, first_frame_prompts, progress_cb) -> per-frame masks

- ``frames``: a sequence of ``uint8 [H, W, 3]`` RGB arrays, all the same size;
- ``first_frame_prompts``: a ``seem.prompts.PromptSet`` describing the object on ``frames[0]``;
- ``progress_cb(done, total)``: call it after each frame; it raises ``JobCancelled`` when the job was cancelled
  (the exception must be allowed to propagate);
- returns one bool ``[H, W]`` mask per frame.

``default_tracker`` picks ``SeemVideoTracker`` (``seem.video.VideoTracker``: frame 0 from the prompts, every later
frame from the previous frame and its mask as a referring-image prompt) when ``seem.video`` is importable, else
``MaskPropagationTracker``, a simple fallback: frame 0 from the prompts, every later frame from the previous
frame's mask given as a **mask prompt** to the ``Segmenter`` on the new frame.

``JobManager`` keeps at most ``max_jobs`` jobs, runs ``max_running_jobs`` at once, reports progress, cancels and
deletes finished jobs ``job_ttl_s`` after they ended.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from seem.io import ImageError, read_image, sniff_image_format
from seem.predictor import Segmenter
from seem.prompts import MaskPrompt, PromptSet
from seem.results import encode_png, mask_bbox, mask_to_rle, rle_to_mask
from seem.serve.errors import ApiError
from seem.serve.sessions import new_id

__all__ = [
    "Job",
    "JobCancelled",
    "JobManager",
    "MaskPropagationTracker",
    "ProgressCallback",
    "SeemVideoTracker",
    "Tracker",
    "decode_video",
    "default_tracker",
    "sniff_video_format",
]

ProgressCallback = Callable[[int, int], None]


class Tracker(Protocol):
    def __call__(
        self, frames: Sequence[np.ndarray], first_frame_prompts: PromptSet, progress_cb: ProgressCallback
    ) -> Sequence[np.ndarray]: ...


class JobCancelled(Exception):
    """Raised by ``progress_cb`` when the job was cancelled."""


class MaskPropagationTracker:
    """Frame 0 from the prompts, frame ``t`` from frame ``t-1``'s mask as a mask prompt (see the module docstring).

    Args:
        acquire: returns a ``Segmenter`` for the job (e.g. ``SegmenterPool.acquire``).
        release: takes it back when the job ends.
    """

    name = "mask-propagation"

    def __init__(self, acquire: Callable[[], Segmenter], release: Callable[[Segmenter], None] | None = None) -> None:
        self._acquire = acquire
        self._release = release

    def __call__(
        self, frames: Sequence[np.ndarray], first_frame_prompts: PromptSet, progress_cb: ProgressCallback
    ) -> list[np.ndarray]:
        n = len(frames)
        seg = self._acquire()
        try:
            masks: list[np.ndarray] = []
            for t in range(n):
                seg.set_image(frames[t])
                if t == 0:
                    m = seg.segment(first_frame_prompts, labels=False)[0].mask
                elif masks[-1].any():
                    m = seg.segment(PromptSet(masks=MaskPrompt(masks[-1])), labels=False)[0].mask
                else:  # the object was lost: nothing to propagate
                    m = np.zeros_like(masks[-1])
                masks.append(m)
                progress_cb(t + 1, n)
            return masks
        finally:
            if self._release is not None:
                self._release(seg)


class SeemVideoTracker:
    """``seem.video.VideoTracker`` behind the ``Tracker`` interface (one object; SEEM's referring-image
    propagation from the previous frame). Each job gets its own ``Segmenter`` from ``acquire``."""

    name = "seem.video"

    def __init__(self, acquire: Callable[[], Segmenter], release: Callable[[Segmenter], None] | None = None) -> None:
        self._acquire = acquire
        self._release = release

    def __call__(
        self, frames: Sequence[np.ndarray], first_frame_prompts: PromptSet, progress_cb: ProgressCallback
    ) -> list[np.ndarray]:
        from seem.video import VideoTracker

        n = len(frames)
        seg = self._acquire()
        try:
            tracker = VideoTracker(seg)
            results = tracker.track(
                list(frames), {1: first_frame_prompts}, progress=lambda done, _: progress_cb(done, n)
            )
            return [r.masks[1] for r in results]
        finally:
            if self._release is not None:
                self._release(seg)


def default_tracker(acquire: Callable[[], Segmenter], release: Callable[[Segmenter], None]) -> tuple[str, Tracker]:
    """``(name, tracker)``: ``seem.video``'s tracker when it is installed, else ``MaskPropagationTracker``."""
    try:
        from seem.video import VideoTracker  # noqa: F401
    except ImportError:
        return MaskPropagationTracker.name, MaskPropagationTracker(acquire, release)
    return SeemVideoTracker.name, SeemVideoTracker(acquire, release)


# ------------------------------------------------------------------------------------------------ video input

_VIDEO_MAGIC = (
    (4, b"ftyp", "MP4"),
    (0, b"\x1aE\xdf\xa3", "WEBM"),
)


def sniff_video_format(header: bytes) -> str | None:
    """``"MP4"`` (MP4 / MOV), ``"WEBM"`` (WebM / Matroska), ``"AVI"`` from the first bytes, or None."""
    for off, magic, name in _VIDEO_MAGIC:
        if header[off : off + len(magic)] == magic:
            return name
    if header[:4] == b"RIFF" and header[8:12] == b"AVI ":
        return "AVI"
    return None


def decode_video(data: bytes, max_frames: int, max_pixels: int, max_decoded_bytes: int) -> list[np.ndarray]:
    """Decode a video file's bytes (MP4, WebM, AVI; OpenCV/FFmpeg) into RGB frames, within the limits.

    The bytes go to a private temporary file (OpenCV reads videos from files), removed afterwards.
    Raises ``ApiError`` 413 (too many frames / pixels / bytes), 415 (not a video) or 422 (undecodable).
    """
    import cv2

    fmt = sniff_video_format(data[:16])
    if fmt is None:
        raise ApiError(415, "the video is not an MP4, WebM or AVI file (checked by content)", "unsupported_media_type")
    fd, path = tempfile.mkstemp(prefix="seem-serve-", suffix=".video")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise ApiError(422, f"cannot open this {fmt} video", "invalid_video")
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if w * h > max_pixels:
                raise ApiError(413, f"video frames are {w}×{h}, more than {max_pixels:,} pixels", "too_large")
            frames: list[np.ndarray] = []
            total = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if len(frames) >= max_frames:
                    raise ApiError(413, f"the video has more than {max_frames} frames", "too_large")
                if bgr.shape[0] * bgr.shape[1] > max_pixels:
                    raise ApiError(413, f"a video frame has more than {max_pixels:,} pixels", "too_large")
                total += bgr.nbytes
                if total > max_decoded_bytes:
                    raise ApiError(413, f"the decoded video exceeds {max_decoded_bytes / 2**20:.0f} MiB", "too_large")
                frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        finally:
            cap.release()
    finally:
        os.unlink(path)
    if not frames:
        raise ApiError(422, f"no frame could be decoded from this {fmt} video", "invalid_video")
    return frames


def decode_frames(blobs: Sequence[bytes], max_frames: int, max_pixels: int, max_decoded_bytes: int) -> list[np.ndarray]:
    """Decode uploaded frame images (checked by content, same size each) within the limits."""
    if not blobs:
        raise ApiError(422, "no frames: upload 'frames' (images) or one 'video'", "invalid_request")
    if len(blobs) > max_frames:
        raise ApiError(413, f"{len(blobs)} frames, more than the limit of {max_frames}", "too_large")
    frames: list[np.ndarray] = []
    total = 0
    for i, b in enumerate(blobs):
        if sniff_image_format(b[:16]) is None:
            raise ApiError(415, f"frame {i} is not a PNG, JPEG, GIF, BMP, TIFF or WebP image", "unsupported_media_type")
        try:
            arr = read_image(b, max_pixels=max_pixels)
        except ImageError as e:
            status = 413 if "more than the limit" in str(e) or "decompression bomb" in str(e) else 422
            raise ApiError(status, f"frame {i}: {e}", "too_large" if status == 413 else "invalid_image") from None
        if frames and arr.shape != frames[0].shape:
            raise ApiError(
                422, f"frame {i} is {arr.shape[1]}×{arr.shape[0]}, frame 0 is {frames[0].shape[1]}×{frames[0].shape[0]}"
            )
        total += arr.nbytes
        if total > max_decoded_bytes:
            raise ApiError(413, f"the decoded frames exceed {max_decoded_bytes / 2**20:.0f} MiB", "too_large")
        frames.append(arr)
    return frames


# ------------------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One video job; ``status``: queued → running → done | failed | cancelled."""

    id: str
    frames: list[np.ndarray] | None
    prompts: PromptSet
    total: int
    size: tuple[int, int]
    tracker: str
    status: str = "queued"
    done: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    ended_monotonic: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None
    rles: list[dict[str, Any]] | None = None

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "status": self.status,
            "frames": self.total,
            "done": self.done,
            "progress": self.done / self.total if self.total else 0.0,
            "tracker": self.tracker,
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
            "result_url": f"/v1/videos/{self.id}/result" if self.status == "done" else None,
        }

    def result_json(self) -> dict[str, Any]:
        assert self.rles is not None
        h, w = self.size
        frames = []
        for i, rle in enumerate(self.rles):
            m = rle_to_mask(rle)
            x0, y0, x1, y1 = mask_bbox(m)
            frames.append({"frame": i, "segmentation": rle, "area": int(m.sum()), "bbox": [x0, y0, x1, y1]})
        return {"job_id": self.id, "width": w, "height": h, "tracker": self.tracker, "frames": frames}

    def result_zip(self) -> bytes:
        assert self.rles is not None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for i, rle in enumerate(self.rles):
                z.writestr(f"masks/{i:05d}.png", encode_png(rle_to_mask(rle).astype(np.uint8) * np.uint8(255)))
        return buf.getvalue()


class JobManager:
    """Stores, runs, cancels and expires video jobs (see the module docstring)."""

    def __init__(self, tracker: Tracker, tracker_name: str, max_jobs: int, max_running: int, ttl_s: float) -> None:
        self.tracker = tracker
        self.tracker_name = tracker_name
        self.max_jobs = int(max_jobs)
        self.ttl_s = float(ttl_s)
        self._pool = ThreadPoolExecutor(max_workers=int(max_running), thread_name_prefix="seem-video")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def sweep(self) -> int:
        """Delete finished jobs older than ``ttl_s``; returns how many."""
        now = time.monotonic()
        with self._lock:
            dead = [
                j.id
                for j in self._jobs.values()
                if j.ended_monotonic is not None and now - j.ended_monotonic > self.ttl_s
            ]
            for jid in dead:
                del self._jobs[jid]
        return len(dead)

    def submit(self, frames: list[np.ndarray], prompts: PromptSet) -> Job:
        self.sweep()
        h, w = frames[0].shape[:2]
        job = Job(new_id("v"), frames, prompts, len(frames), (int(h), int(w)), self.tracker_name)
        with self._lock:
            if len(self._jobs) >= self.max_jobs:
                raise ApiError(
                    429,
                    f"{len(self._jobs)} video jobs are stored, the limit is {self.max_jobs}; delete finished jobs "
                    "(DELETE /v1/videos/{job_id}) or wait",
                    "too_many_jobs",
                    headers={"Retry-After": "5"},
                )
            self._jobs[job.id] = job
        job.future = self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"video job {job_id!r} does not exist (or expired)", "job_not_found")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.future is not None and job.future.cancel():  # never started
            self._end(job, "cancelled")
        return job

    def delete(self, job_id: str) -> None:
        self.cancel(job_id)
        with self._lock:
            self._jobs.pop(job_id, None)

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        job.status = status
        job.error = error
        job.finished = time.time()
        job.ended_monotonic = time.monotonic()
        job.frames = None  # free the decoded frames

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            self._end(job, "cancelled")
            return
        job.status = "running"
        job.started = time.time()

        def progress(done: int, total: int) -> None:
            job.done = int(done)
            if job.cancel.is_set():
                raise JobCancelled

        try:
            assert job.frames is not None
            masks = self.tracker(job.frames, job.prompts, progress)
            if len(masks) != job.total:
                raise RuntimeError(f"the tracker returned {len(masks)} masks for {job.total} frames")
            rles = []
            for m in masks:
                m = np.asarray(m).astype(bool)
                if m.shape != job.size:
                    raise RuntimeError(f"the tracker returned a {m.shape} mask for {job.size} frames")
                rles.append(mask_to_rle(m))
            job.rles = rles
            job.done = job.total
            self._end(job, "done")
        except JobCancelled:
            self._end(job, "cancelled")
        except Exception as e:  # reported to the client through the job's status
            msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            self._end(job, "failed", msg)

    def shutdown(self) -> None:
        with self._lock:
            for j in self._jobs.values():
                j.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
