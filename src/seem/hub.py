"""Registered model names, their download addresses, and a verified local cache.

``fetch(name)`` returns the local path of a registered checkpoint, downloading it once into the cache
(``cache_dir()``: ``$SEEM_CACHE``, default ``~/.cache/seem``). Downloads stream to a temporary file, show
progress, check the sha256 and only then move into place, so an interrupted or corrupt download never looks like a
checkpoint.

Hashes: where the registry knows a file's sha256 the download must match it. The official SEEM / Semantic-SAM
files were published without hashes and this project's machines cannot reach the hub to compute them, so their
entries have ``sha256=None``: the first download records the hash it saw next to the file (trust on first use) and
every later use verifies the file against that record. Pin a hash yourself with ``SEEM_SHA256_<NAME>`` (name upper-
cased, ``-`` → ``_``), e.g. ``SEEM_SHA256_SEEM_FOCALT_V1=…``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Family = Literal["seem", "semantic_sam"]


class DownloadError(RuntimeError):
    """A registered checkpoint could not be downloaded or failed its hash check."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered checkpoint.

    Attributes:
        name: the registered name (``seem.load(name)``).
        family: ``"seem"`` or ``"semantic_sam"``.
        url: where the official file lives.
        filename: the file name in the cache.
        sha256: expected hash, or None when unknown (see the module docstring).
        variant: SEEM decoder rules for this file (``"v1"`` / ``"demo"``); None for other families.
    """

    name: str
    family: Family
    url: str
    filename: str
    sha256: str | None = None
    variant: str | None = None


_HF = "https://huggingface.co/xdecoder/SEEM/resolve/main/"
_SSAM = "https://github.com/UX-Decoder/Semantic-SAM/releases/download/checkpoint/"

REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("seem-focalt-v1", "seem", _HF + "seem_focalt_v1.pt", "seem_focalt_v1.pt", variant="v1"),
        ModelEntry("seem-focall-v1", "seem", _HF + "seem_focall_v1.pt", "seem_focall_v1.pt", variant="v1"),
        ModelEntry("seem-focalt-v0", "seem", _HF + "seem_focalt_v0.pt", "seem_focalt_v0.pt", variant="demo"),
        ModelEntry("seem-focall-v0", "seem", _HF + "seem_focall_v0.pt", "seem_focall_v0.pt", variant="demo"),
        ModelEntry(
            "semantic-sam-swint", "semantic_sam", _SSAM + "swint_only_sam_many2many.pth", "swint_only_sam_many2many.pth"
        ),
        ModelEntry(
            "semantic-sam-swinl", "semantic_sam", _SSAM + "swinl_only_sam_many2many.pth", "swinl_only_sam_many2many.pth"
        ),
    )
}


def cache_dir() -> Path:
    """The root of every cache seem keeps: ``$SEEM_CACHE``, else ``$XDG_CACHE_HOME/seem``, else ``~/.cache/seem``."""
    root = os.environ.get("SEEM_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "seem"


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> str:
    """Download ``url`` to ``dest`` atomically; returns the file's sha256.

    The data streams into a temporary file in ``dest``'s folder; when ``sha256`` is given and differs, the temporary
    file is deleted and ``DownloadError`` raised. Otherwise the file is renamed to ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as e:
                raise DownloadError(
                    f"could not download {url} ({e}); download it by other means and pass the file's path instead"
                ) from e
            with resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = _progress(total, dest.name) if progress else None
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    if bar is not None:
                        bar.update(len(block))
                if bar is not None:
                    bar.close()
                if total is not None and out.tell() != total:
                    raise DownloadError(f"{url}: got {out.tell()} bytes, expected {total} (connection cut?)")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"{url}: sha256 {digest} does not match the expected {sha256}; file discarded")
        tmp.replace(dest)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def _progress(total: int | None, desc: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)


def _pinned_sha(entry: ModelEntry) -> str | None:
    env = "SEEM_SHA256_" + entry.name.upper().replace("-", "_")
    return os.environ.get(env) or entry.sha256


def fetch(name: str, progress: bool = True) -> Path:
    """Local path of the registered checkpoint ``name``, downloading and verifying it on first use.

    Raises ``KeyError``-style ``ValueError`` for unknown names and ``DownloadError`` when the download fails or the
    file in the cache no longer matches its recorded hash.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model name {name!r}; registered: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    path = cache_dir() / entry.filename
    record = path.with_name(path.name + ".sha256")
    expected = _pinned_sha(entry)
    if path.is_file():
        known = expected or (record.read_text().strip() if record.is_file() else None)
        if known is None:
            record.write_text(sha256_of(path) + "\n")
        elif sha256_of(path) != known:
            raise DownloadError(f"{path}: sha256 differs from the recorded {known}; delete the file to download again")
        return path
    digest = download(entry.url, path, sha256=expected, progress=progress)
    record.write_text(digest + "\n")
    return path


def clear_partial_downloads() -> int:
    """Remove leftover ``*.part`` files from the cache (e.g. after a crash); returns how many were removed."""
    d = cache_dir()
    n = 0
    for p in d.glob("*.part") if d.is_dir() else []:
        p.unlink(missing_ok=True)
        n += 1
    return n


__all__ = ["REGISTRY", "DownloadError", "ModelEntry", "cache_dir", "download", "fetch", "sha256_of"]
