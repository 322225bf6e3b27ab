"""Sessions: one uploaded image with its cached encoder features and the objects segmented on it.

``SessionStore`` keeps sessions in least-recently-used order under a memory budget (``cache_bytes``) and a count
limit (``max_sessions``); sessions unused for ``session_ttl_s`` expire. A session's size is measured from what it
holds: the image, every tensor reachable from the predictors' cached features (the model's own weights excluded) and
its masks. Evicted and expired sessions answer 404 with the reason.

``SegmenterPool`` recycles ``Segmenter`` objects of evicted / deleted sessions (``reset_image``), so their in-memory
vocabulary embeddings are reused instead of being loaded again for every upload.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seem.granularity import GranularityPredictor
from seem.predictor import Segmenter
from seem.serve.errors import ApiError
from seem.session import InteractiveSession

__all__ = [
    "GranularityObject",
    "InteractiveObject",
    "SegmenterPool",
    "Session",
    "SessionStore",
    "StaticObject",
    "new_id",
    "tensor_bytes",
]


def new_id(prefix: str) -> str:
    """An unguessable id such as ``s_3q2...`` (128 random bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


# ---------------------------------------------------------------------------------------------------- measuring


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return (s.data_ptr(), s.nbytes())


def model_storages(*models: Any) -> set[tuple[int, int]]:
    """Storage keys of the models' parameters and buffers (excluded from session sizes)."""
    keys: set[tuple[int, int]] = set()
    for m in models:
        if isinstance(m, torch.nn.Module):
            for t in list(m.parameters()) + list(m.buffers()):
                keys.add(_storage_key(t))
    return keys


def tensor_bytes(obj: Any, exclude: set[tuple[int, int]] | None = None, _seen: set[Any] | None = None) -> int:
    """Bytes of every tensor / array reachable from ``obj`` (dataclasses, dicts, sequences, plain objects), each
    storage counted once; storages in ``exclude`` (model weights) are skipped. Modules are not entered."""
    seen: set[Any] = set(exclude or ()) if _seen is None else _seen
    total = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        if o is None or isinstance(o, str | bytes | int | float | bool | torch.nn.Module) or depth > 8:
            continue
        if isinstance(o, torch.Tensor):
            key = _storage_key(o)
            if key not in seen:
                seen.add(key)
                total += key[1]
            continue
        if isinstance(o, np.ndarray):
            base = o if o.base is None or not isinstance(o.base, np.ndarray) else o.base
            if id(base) not in seen:
                seen.add(id(base))
                total += int(base.nbytes)
            continue
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, dict):
            stack.extend((v, depth + 1) for v in o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend((v, depth + 1) for v in o)
        elif dataclasses.is_dataclass(o):
            stack.extend((getattr(o, f.name, None), depth + 1) for f in dataclasses.fields(o))
        elif hasattr(o, "__dict__"):
            stack.extend((v, depth + 1) for v in vars(o).values())
    return total


def rle_bytes(record: dict[str, Any]) -> int:
    seg = record.get("segmentation")
    return 256 + (len(seg["counts"]) if isinstance(seg, dict) and isinstance(seg.get("counts"), str) else 0)


# ---------------------------------------------------------------------------------------------------- objects


@dataclass
class InteractiveObject:
    """An object refined by rounds of prompts (``seem.session.InteractiveSession``, one object)."""

    id: str
    session: InteractiveSession
    labels: bool
    kind: str = "interactive"

    def nbytes(self) -> int:
        segs = self.session.segments
        if not segs:
            return 1024
        s = segs[0]
        per_round = s.mask.nbytes + (0 if s.low_res_logits is None else s.low_res_logits.nbytes)
        return 1024 + per_round * max(1, self.session.round)


@dataclass
class GranularityObject:
    """A Semantic-SAM object: accumulated clicks (and a box) and one mask record per granularity level."""

    id: str
    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    history: list[tuple[list[list[float]], list[int], list[float] | None, list[dict[str, Any]], int | None]] = field(
        default_factory=list
    )
    levels: list[dict[str, Any]] = field(default_factory=list)
    selected_level: int | None = None
    kind: str = "granularity"

    @property
    def round(self) -> int:
        return len(self.history)

    def nbytes(self) -> int:
        n = 1024 + sum(rle_bytes(r) for r in self.levels)
        return n + sum(sum(rle_bytes(r) for r in h[3]) for h in self.history)


@dataclass
class StaticObject:
    """A mask that is not refined any more (panoptic or segment-everything), stored as a COCO-RLE record."""

    id: str
    kind: str
    record: dict[str, Any]
    round: int = 1

    def nbytes(self) -> int:
        return rle_bytes(self.record)


AnyObject = InteractiveObject | GranularityObject | StaticObject


# ---------------------------------------------------------------------------------------------------- session


class Session:
    """One uploaded image and everything computed on it.

    Attributes:
        id: the session id given to the client.
        image: ``uint8 [H, W, 3]`` RGB, never modified after upload.
        segmenter: the SEEM predictor holding this image's features (None without a SEEM model).
        granularity: the Semantic-SAM predictor (created and encoded on first use; None until then).
        objects: object id → object, in creation order.
        lock: held by whoever uses the predictors or the objects (one request at a time per session).
    """

    def __init__(self, image: np.ndarray, file_name: str | None = None) -> None:
        self.id = new_id("s")
        self.image = image
        self.image.flags.writeable = False
        self.file_name = file_name
        self.created = time.time()
        self.last_used = time.monotonic()
        self.lock = threading.Lock()
        self.segmenter: Segmenter | None = None
        self.granularity: GranularityPredictor | None = None
        self.objects: OrderedDict[str, AnyObject] = OrderedDict()
        self.nbytes = int(image.nbytes)
        self.closed = False
        self.used_reference = False

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def measure(self, exclude: set[tuple[int, int]]) -> int:
        """Recompute ``nbytes`` (call with ``lock`` held)."""
        n = int(self.image.nbytes)
        seen: set[Any] = set(exclude)
        seen.add(id(self.image))
        if self.segmenter is not None and self.segmenter.is_image_set:
            feats = tensor_bytes(self.segmenter.features, _seen=seen)
            # after a reference-image prompt the Segmenter also keeps that image's features (one more image)
            n += feats * (2 if self.used_reference else 1)
        if self.granularity is not None and self.granularity.features is not None:
            n += tensor_bytes(self.granularity.features, _seen=seen)
            if self.granularity.input_image is not None:
                n += int(self.granularity.input_image.nbytes)
        n += sum(o.nbytes() for o in self.objects.values())
        self.nbytes = n
        return n

    def object(self, object_id: str) -> AnyObject:
        obj = self.objects.get(object_id)
        if obj is None:
            raise ApiError(404, f"object {object_id!r} not found in session {self.id}", "object_not_found")
        return obj

    def acquire(self, timeout: float) -> None:
        """Take ``lock`` within ``timeout`` seconds or raise ``ApiError(504)``."""
        if not self.lock.acquire(timeout=max(0.0, timeout)):
            raise ApiError(504, f"session {self.id} stayed busy with another request; retry", "timeout")
        if self.closed:
            self.lock.release()
            raise ApiError(404, f"session {self.id} was deleted", "session_not_found")


class SegmenterPool:
    """Reuses ``Segmenter`` objects (and their in-memory vocabulary caches) across sessions."""

    def __init__(self, factory: Callable[[], Segmenter], max_idle: int = 8) -> None:
        self._factory = factory
        self._idle: list[Segmenter] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle
        self.created = 0

    def acquire(self) -> Segmenter:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.created += 1
        return self._factory()

    def release(self, seg: Segmenter) -> None:
        seg.reset_image()
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(seg)


class SessionStore:
    """Sessions in LRU order, bounded by ``cache_bytes`` and ``max_sessions``; idle ones expire after ``ttl_s``.

    Args:
        cache_bytes: memory budget of all sessions together.
        max_sessions: most sessions at once.
        ttl_s: idle time after which a session expires.
        on_close: called with each session that leaves the store (to recycle its predictors).
    """

    _FORGET = 4096  # how many removal reasons are remembered for 404 messages

    def __init__(
        self,
        cache_bytes: int,
        max_sessions: int,
        ttl_s: float,
        on_close: Callable[[Session], None] | None = None,
    ) -> None:
        self.cache_bytes = int(cache_bytes)
        self.max_sessions = int(max_sessions)
        self.ttl_s = float(ttl_s)
        self._on_close = on_close
        self._d: OrderedDict[str, Session] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._d.values())

    def _forget(self, sid: str, reason: str) -> None:
        self._gone[sid] = reason
        while len(self._gone) > self._FORGET:
            self._gone.popitem(last=False)

    def _close(self, sessions: list[Session]) -> None:
        for s in sessions:
            if self._on_close is not None:
                self._on_close(s)

    def add(self, session: Session) -> None:
        """Insert ``session`` (most recently used), evicting the least recently used ones beyond the limits."""
        if session.nbytes > self.cache_bytes:
            raise ApiError(
                413,
                f"this image needs about {session.nbytes / 2**20:.0f} MiB of cache, more than the server's whole "
                f"session cache ({self.cache_bytes / 2**20:.0f} MiB); upload a smaller image",
                "too_large",
            )
        session.last_used = time.monotonic()  # idle time counts from now, not from before the encoding
        with self._lock:
            self._d[session.id] = session
            closed = self._enforce(keep=session.id)
        self._close(closed)

    def _enforce(self, keep: str) -> list[Session]:
        out = []
        total = sum(s.nbytes for s in self._d.values())
        while self._d and (total > self.cache_bytes or len(self._d) > self.max_sessions):
            victim = next((sid for sid in self._d if sid != keep), None)
            if victim is None:
                break
            s = self._d.pop(victim)
            total -= s.nbytes
            self.evicted += 1
            self._forget(victim, "was evicted to keep the server's session cache within its memory budget")
            out.append(s)
        return out

    def resized(self, session: Session) -> None:
        """``session.nbytes`` changed: evict others if the budget is now exceeded."""
        with self._lock:
            if session.id not in self._d:
                return
            closed = self._enforce(keep=session.id)
        self._close(closed)

    def get(self, sid: str) -> Session:
        """The session (now most recently used), or ``ApiError(404)`` saying why it is gone."""
        now = time.monotonic()
        expired: Session | None = None
        with self._lock:
            s = self._d.get(sid)
            if s is not None and now - s.last_used > self.ttl_s:
                expired = self._d.pop(sid)
                self.expired += 1
                self._forget(sid, f"expired after {self.ttl_s:g} s without use")
                s = None
            if s is not None:
                s.last_used = now
                self._d.move_to_end(sid)
            reason = self._gone.get(sid, "does not exist")
        if expired is not None:
            self._close([expired])
        if s is None:
            raise ApiError(404, f"session {sid!r} {reason}; upload the image again", "session_not_found")
        return s

    def remove(self, sid: str) -> Session:
        with self._lock:
            s = self._d.pop(sid, None)
            reason = self._gone.get(sid, "does not exist")
            if s is not None:
                self._forget(sid, "was deleted")
        if s is None:
            raise ApiError(404, f"session {sid!r} {reason}", "session_not_found")
        self._close([s])
        return s

    def sweep(self) -> int:
        """Remove expired sessions now; returns how many."""
        now = time.monotonic()
        with self._lock:
            dead = [sid for sid, s in self._d.items() if now - s.last_used > self.ttl_s]
            closed = []
            for sid in dead:
                closed.append(self._d.pop(sid))
                self.expired += 1
                self._forget(sid, f"expired after {self.ttl_s:g} s without use")
        self._close(closed)
        return len(closed)

    def clear(self) -> None:
        with self._lock:
            closed = list(self._d.values())
            self._d.clear()
        self._close(closed)
