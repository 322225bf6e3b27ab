"""``ServeConfig``: every limit of the HTTP server in one place, with its default.

Sizes are bytes, times are seconds. The defaults suit one user on a workstation (loopback); raise them for a shared
server with a GPU, lower them for a small machine. ``seem serve --help`` names the command-line flag of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MiB = 1 << 20

__all__ = ["MiB", "ServeConfig"]


@dataclass
class ServeConfig:
    """Limits and switches of the server (see ``docs/serve.md``).

    Attributes:
        max_upload_bytes: largest request body of every endpoint but video uploads (413 beyond).
        max_pixels: largest image (height × width) accepted; checked from the file header before decoding, so
            decompression bombs are refused without being decoded (413).
        max_video_bytes: largest video-job request body (all frames or the video file together).
        max_video_frames: most frames of one video job.
        max_video_decoded_bytes: most bytes of decoded RGB frames of one video job (frames × H × W × 3).
        cache_bytes: memory budget of the session cache (images, encoder features, masks); least recently used
            sessions are evicted beyond it (a single session larger than the budget is refused with 413).
        max_sessions: most sessions kept at once (least recently used evicted beyond).
        session_ttl_s: a session unused for this long expires.
        workers: model calls run at once (threads). The model's weights are shared; keep 1 on a CPU.
        max_pending: model requests running or waiting at once; more are refused at once with 503 + Retry-After.
        request_timeout_s: a model request (waiting + running) that takes longer gets 504.
        max_jobs: video jobs kept at once (queued, running or finished); more are refused with 429.
        max_running_jobs: video jobs processed at once (the others wait in order).
        job_ttl_s: a finished video job (and its results) is deleted this long after it ended.
        max_objects: objects (masks) one session may hold.
        max_rounds: interaction rounds of one object.
        max_points_per_side: largest ``points_per_side`` of segment-everything (its cost grows with its square).
        api_key: when set, every ``/v1`` request needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (401).
        cors_origins: origins allowed by CORS (empty: CORS off, browsers allow same-origin pages only).
        vocab_cache_dir: vocabulary embedding cache (``Segmenter(cache_dir=...)``): None = seem's default
            directory, False = memory only.
        short_side: SEEM model input short side; None = the model's own (official 512, default model 384).
    """

    max_upload_bytes: int = 20 * MiB
    max_pixels: int = 25_000_000
    max_video_bytes: int = 200 * MiB
    max_video_frames: int = 300
    max_video_decoded_bytes: int = 512 * MiB
    cache_bytes: int = 2048 * MiB
    max_sessions: int = 64
    session_ttl_s: float = 1800.0
    workers: int = 1
    max_pending: int = 64
    request_timeout_s: float = 60.0
    max_jobs: int = 4
    max_running_jobs: int = 1
    job_ttl_s: float = 3600.0
    max_objects: int = 256
    max_rounds: int = 100
    max_points_per_side: int = 32
    api_key: str | None = None
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    vocab_cache_dir: str | Path | bool | None = None
    short_side: int | None = None

    def __post_init__(self) -> None:
        positive_ints = (
            "max_upload_bytes",
            "max_pixels",
            "max_video_bytes",
            "max_video_frames",
            "max_video_decoded_bytes",
            "cache_bytes",
            "max_sessions",
            "workers",
            "max_jobs",
            "max_running_jobs",
            "max_objects",
            "max_rounds",
            "max_points_per_side",
        )
        for name in positive_ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ServeConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int) or self.max_pending < 0:
            raise ValueError(f"ServeConfig.max_pending must be an int >= 0, got {self.max_pending!r}")
        for name in ("session_ttl_s", "request_timeout_s", "job_ttl_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"ServeConfig.{name} must be a number > 0, got {v!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or len(self.api_key) < 8):
            raise ValueError("ServeConfig.api_key must be a string of at least 8 characters (or None)")
        if isinstance(self.cors_origins, str):
            raise ValueError("ServeConfig.cors_origins must be a list of origins, not a string")
        self.cors_origins = tuple(self.cors_origins)
        bad = isinstance(self.short_side, bool) or not isinstance(self.short_side, int) or self.short_side < 32
        if self.short_side is not None and bad:
            raise ValueError(f"ServeConfig.short_side must be an int >= 32 or None, got {self.short_side!r}")

    def public(self) -> dict[str, Any]:
        """The limits a client may know (everything but the API key and local paths)."""
        hidden = {"api_key", "vocab_cache_dir"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        out["cors_origins"] = list(self.cors_origins)
        out["api_key_required"] = self.api_key is not None
        return out
