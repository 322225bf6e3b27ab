"""The images a labeling job reads: a folder, a glob, a text file of paths, a COCO JSON, or object storage.

``list_source(source)`` turns what the user named into a sorted, de-duplicated list of ``SourceItem``. Every item
has a ``key``: a relative POSIX path, unique within the source, from which the output names are made
(``labels/<key>.json``), so the same image always lands in the same output file and a rerun finds it.

Accepted sources:

- **a folder**: every image file below it (recursive; hidden files and folders skipped), key = path relative to it;
- **a glob** (``photos/**/*.jpg``; ``**`` matches any depth): the matching image files, key = path relative to the
  pattern's fixed leading folder;
- **a COCO JSON** (``*.json`` with an ``images`` list): its images in file order, read with
  ``seem.eval.readers.CocoInstances``; ``file_name`` is relative to ``image_root`` (default: the JSON's folder) and
  is the key; the COCO ``id`` becomes the image id of the outputs;
- **a text file of paths** (any other non-image file): one path or URI per line (blank lines and ``#`` comments
  skipped), relative paths are relative to the text file's folder; key = path relative to the entries' common folder;
- **one image file**: just that image;
- **object storage** (``s3://bucket/prefix``, ``gs://…``, ``abfs://…``, anything ``pyarrow.fs`` opens): every
  image under the prefix, listed with pyarrow (installed with ``seem[ray]``), key = path relative to the prefix.
  URIs may also appear in text files.

Images are files whose extension is one of ``IMAGE_EXTENSIONS`` (any case); the format itself is recognised from the
file's bytes when it is read (``seem.io.read_image``), so a corrupt ``.jpg`` is listed and then reported.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from seem.label.job import LabelJobError

__all__ = ["IMAGE_EXTENSIONS", "SourceItem", "is_uri", "list_source", "read_bytes", "unreadable_reason"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class SourceItem:
    """One image of a source.

    Attributes:
        key: unique relative POSIX path (no ``..``, no leading ``/``); output names are made from it.
        path: absolute local path, or a URI (object storage).
        image_id: the COCO image id when the source is a COCO JSON, else None.
    """

    key: str
    path: str
    image_id: int | None = None


def is_uri(text: str) -> bool:
    """True for ``scheme://…`` (object storage); ``file://`` URIs count as local paths."""
    return bool(_URI.match(text)) and not text.startswith("file://")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _clean_key(rel: str, what: str) -> str:
    """A safe relative POSIX key: normalised, no leading ``/``, no ``..`` components (replaced by ``__up__``)."""
    p = posixpath.normpath(rel.replace("\\", "/")).lstrip("/")
    parts = ["__up__" if part == ".." else part for part in PurePosixPath(p).parts if part not in ("", ".")]
    if not parts:
        raise LabelJobError(f"{what}: cannot make an output name from {rel!r}")
    return "/".join(parts)


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _unique(items: list[SourceItem], what: str) -> list[SourceItem]:
    """Drop repeated images (same path); refuse two different images with the same key."""
    seen_path: set[str] = set()
    by_key: dict[str, str] = {}
    out = []
    for it in items:
        if it.path in seen_path:
            continue
        if it.key in by_key:
            raise LabelJobError(
                f"{what}: {by_key[it.key]} and {it.path} would write the same output ({it.key}); rename one of them"
            )
        seen_path.add(it.path)
        by_key[it.key] = it.path
        out.append(it)
    return out


# -------------------------------------------------------------------------------------------------------- listing


def list_source(source: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> list[SourceItem]:
    """The images of ``source`` (see the module docstring), sorted by key (COCO JSON: in file order).

    Raises:
        LabelJobError: the source does not exist, cannot be read, or holds no image.
    """
    text = str(source)
    if not text.strip():
        raise LabelJobError("no source given")
    if is_uri(text):
        items = _list_uri(text)
    else:
        local = _local(text)
        path = Path(local).expanduser()
        if path.is_dir():
            items = _list_folder(path)
        elif path.is_file():
            if path.suffix.lower() == ".json":
                items = _list_coco(path, image_root)
            elif _is_image_name(path.name):
                items = [SourceItem(key=path.name, path=str(path.resolve()))]
            else:
                items = _list_text(path)
        elif _GLOB_CHARS.search(local):
            items = _list_glob(os.path.expanduser(local))
        else:
            raise LabelJobError(
                f"source not found: {text} (expected a folder, a glob pattern, a text file of paths, a COCO JSON, "
                "an image, or an object-storage URI such as s3://bucket/prefix)"
            )
    items = _unique(items, text)
    if not items:
        raise LabelJobError(f"source {text} holds no images (looked for files ending in {', '.join(IMAGE_EXTENSIONS)})")
    return items


def _list_folder(root: Path) -> list[SourceItem]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not _is_image_name(name):
                continue
            full = Path(dirpath) / name
            out.append(
                SourceItem(key=_clean_key(full.relative_to(root).as_posix(), str(root)), path=str(full.resolve()))
            )
    return sorted(out, key=lambda it: it.key)


def _list_glob(pattern: str) -> list[SourceItem]:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    base = Path(*fixed) if fixed else Path(".")
    out = []
    for m in glob.glob(pattern, recursive=True):
        p = Path(m)
        if not p.is_file() or not _is_image_name(p.name):
            continue
        rel = os.path.relpath(p, base)
        out.append(SourceItem(key=_clean_key(Path(rel).as_posix(), pattern), path=str(p.resolve())))
    return sorted(out, key=lambda it: it.key)


def _list_text(path: Path) -> list[SourceItem]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelJobError(f"source {path}: cannot read it as a text file of image paths: {e}") from e
    entries: list[str] = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if is_uri(s):
            entries.append(s)
        else:
            p = Path(_local(s)).expanduser()
            entries.append(str((p if p.is_absolute() else path.parent / p).resolve()))
    local = [x for x in entries if not is_uri(x)]
    common = os.path.commonpath([os.path.dirname(x) for x in local]) if local else ""
    out = []
    for entry in entries:
        if is_uri(entry):
            key = _URI.sub("", entry)
        else:
            key = Path(os.path.relpath(entry, common) if common else entry).as_posix()
        out.append(SourceItem(key=_clean_key(key, str(path)), path=entry))
    return sorted(out, key=lambda it: it.key)


def _list_coco(path: Path, image_root: str | os.PathLike[str] | None) -> list[SourceItem]:
    from seem.eval.readers import CocoInstances

    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelJobError(f"source {path}: not a readable COCO JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelJobError(f"source {path}: a JSON file without an 'images' list (expected a COCO JSON)")
    data.setdefault("annotations", [])  # image-info files (e.g. COCO test) have no annotations
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    try:
        coco = CocoInstances(data, root)
        samples = [coco.sample(i) for i in coco.image_ids]
    except (KeyError, TypeError, ValueError) as e:
        raise LabelJobError(f"source {path}: malformed COCO JSON: {e}") from e
    out = []
    for s in samples:
        name = str(s.file_name)
        target = name if is_uri(name) else str((root / _local(name)).resolve())
        out.append(SourceItem(key=_clean_key(_URI.sub("", name), str(path)), path=target, image_id=int(s.image_id)))
    return out


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow import fs as pafs
    except ImportError as e:  # pragma: no cover - pyarrow comes with seem[ray]
        raise LabelJobError(f"{uri}: reading object storage needs pyarrow (pip install 'seem[ray]')") from e
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise LabelJobError(f"{uri}: cannot open this location: {e}") from e


def _list_uri(uri: str) -> list[SourceItem]:
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(uri)
    scheme = uri.split("://", 1)[0]
    try:
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            infos = [info]
            base = posixpath.dirname(root)
        elif info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
            base = root
        else:
            raise LabelJobError(f"source not found: {uri}")
    except LabelJobError:
        raise
    except Exception as e:
        raise LabelJobError(f"{uri}: cannot list it: {e}") from e
    out = []
    for fi in infos:
        name = posixpath.basename(fi.path)
        if fi.type != pafs.FileType.File or name.startswith(".") or not _is_image_name(name):
            continue
        rel = posixpath.relpath(fi.path, base) if base else fi.path
        out.append(SourceItem(key=_clean_key(rel, uri), path=f"{scheme}://{fi.path}"))
    return sorted(out, key=lambda it: it.key)


# -------------------------------------------------------------------------------------------------------- reading


def read_bytes(path: str) -> bytes:
    """The bytes of a local file or an object-storage URI (``OSError`` / ``LabelJobError`` when unreadable)."""
    if is_uri(path):
        filesystem, p = _filesystem(path)
        with filesystem.open_input_stream(p) as f:
            return bytes(f.read())
    with open(_local(path), "rb") as f:
        return f.read()


def unreadable_reason(path: str) -> str | None:
    """Why a local file cannot be read (missing, not a file, no permission), or None (URIs: not checked)."""
    if is_uri(path):
        return None
    p = Path(_local(path))
    if not p.exists():
        return f"image file not found: {p}"
    if not p.is_file():
        return f"not a file: {p}"
    if not os.access(p, os.R_OK):
        return f"cannot read {p}: permission denied"
    return None
