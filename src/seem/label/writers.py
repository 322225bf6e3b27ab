"""The output folder of a labeling run: atomic per-image files, the manifest, and the merged COCO files.

Layout of ``OUT/``::

    manifest.json        the run: model, settings, fingerprint, versions, counts, errors, one entry per engine run
    journal.jsonl        one line per image handled (ok / error, reason, seconds, worker, peak memory): the
                         manifest's per-image record, appended as results arrive
    labels/<key>.json    one SA-1B-style file per image (see below); its presence means "this image is done"
    panoptic/<key>.png   (task panoptic) COCO-panoptic id PNG of the image
    overlays/<key>.png   (with overlays) thumbnail of the image with its masks drawn
    instances.json       merged COCO instances (results format: each annotation has a score), written at the end
    panoptic.json        (task panoptic) merged COCO-panoptic JSON for ``panoptic/``, written at the end

``<key>`` is the image's key (``seem.label.sources``), e.g. ``sub/photo.jpg`` → ``labels/sub/photo.jpg.json``.

Per-image JSON (SA-1B style)::

    {"image": {"image_id", "file_name": key, "width", "height"},
     "annotations": [{"id", "segmentation": COCO RLE, "bbox": [x, y, w, h], "area", "score", "label",
                      "label_score", "category_id", "level", ...task fields}],
     "task", "fingerprint"}

Boxes are COCO ``[x, y, width, height]`` pixels of the tight box with exclusive right/bottom edges (equal to
``pycocotools.mask.toBbox``). Empty masks are not written.

Nothing lost, nothing twice: every per-image result is written atomically (temporary file in the same folder, then
``os.replace``; the label JSON is renamed last, so its presence implies the PNGs are complete) by **one writer**, the
driver process, which ignores a second result for an image it already wrote (a retried Ray task). A rerun skips the
images whose label JSON exists, removes temporary files a killed run left behind, and retries failed images. A
folder written with a different fingerprint (model or settings) is refused once it holds a labelled image; so is a
folder another run holds (lock file) and a non-empty folder that is not a labeling output.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from seem.io import write_files_atomically
from seem.label.job import FORMAT, LabelJob, LabelJobError, categories_for
from seem.label.sources import SourceItem

__all__ = ["ImageResult", "LabelSummary", "OutputFolder", "versions"]

MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
LOCK = ".lock"


@dataclass
class ImageResult:
    """What a worker returns for one image (both engines).

    Attributes:
        path: the item's path (engines map it back to its ``SourceItem``).
        ok: labelled (True) or failed (False, see ``reason``).
        reason: why the image failed (``"ImageError: …"``), None when ok.
        doc: the per-image JSON without ``image.file_name`` / ``image.image_id`` (the writer fills them).
        panoptic_png: COCO-panoptic id PNG bytes (task panoptic).
        overlay_png: overlay thumbnail PNG bytes (with overlays).
        seconds: worker time for this image (read, model, encoding).
        worker: ``pid@host`` of the worker.
        peak_rss_mb: the worker process's peak resident memory so far, MiB.
    """

    path: str
    ok: bool
    reason: str | None = None
    doc: dict[str, Any] | None = None
    panoptic_png: bytes | None = None
    overlay_png: bytes | None = None
    seconds: float = 0.0
    worker: str = ""
    peak_rss_mb: float = 0.0


@dataclass
class LabelSummary:
    """The outcome of a run (also in ``manifest.json``)."""

    out: Path
    status: str
    images: int
    labelled: int
    skipped: int
    processed: int
    errors: list[dict[str, Any]]
    annotations: int
    seconds: float
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def images_per_minute(self) -> float:
        """Images handled by this run per minute of wall time (0 when nothing was processed)."""
        return 60.0 * self.processed / self.seconds if self.seconds > 0 and self.processed else 0.0


def versions(engine: str | None = None) -> dict[str, str]:
    """Versions of what produced the outputs (seem, Python, torch, numpy, pycocotools, and ray for the ray engine)."""
    import numpy
    import torch

    import seem

    out = {
        "seem": seem.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        from importlib.metadata import version

        out["pycocotools"] = version("pycocotools")
        if engine == "ray":
            out["ray"] = version("ray")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        pass
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")


class OutputFolder:
    """The output folder of a job (see the module docstring). Use ``check`` (read-only), then ``open``, ``accept``
    per result, ``finalize``, ``close``."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.labels_dir = self.out / "labels"
        self.panoptic_dir = self.out / "panoptic"
        self.overlays_dir = self.out / "overlays"
        self.manifest_path = self.out / MANIFEST
        self.journal_path = self.out / JOURNAL
        self._lock: IO[str] | None = None
        self._journal: IO[str] | None = None
        self._manifest: dict[str, Any] = {}
        self._written: set[str] = set()
        self._errors: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._duplicates = 0
        self._run: dict[str, Any] = {}
        self._t0 = 0.0

    # ------------------------------------------------------------------------------------------------------ names

    def label_path(self, key: str) -> Path:
        return self.labels_dir / f"{key}.json"

    def panoptic_name(self, key: str) -> str:
        """Name of the panoptic PNG relative to ``panoptic/`` (COCO-panoptic ``file_name``)."""
        return f"{key}.png"

    def overlay_path(self, key: str) -> Path:
        return self.overlays_dir / f"{key}.png"

    # ---------------------------------------------------------------------------------------------------- checking

    def check(self, job: LabelJob) -> dict[str, Any] | None:
        """Refuse a folder that belongs to another run or is not a labeling output; read-only.

        Returns the existing manifest (None for a new or empty folder).
        """
        out = self.out
        if out.exists() and not out.is_dir():
            raise LabelJobError(f"--out {out} is a file, not a folder")
        if not out.exists() or not any(p.name != LOCK for p in out.iterdir()):
            return None
        if not self.manifest_path.is_file():
            raise LabelJobError(
                f"--out {out} is not empty and holds no {MANIFEST}: it is not the output of a `seem label` run; "
                "choose a new or empty folder"
            )
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LabelJobError(f"{self.manifest_path}: unreadable ({e}); choose a new folder") from e
        if manifest.get("format") != FORMAT:
            raise LabelJobError(
                f"{self.manifest_path}: written by another seem version (format {manifest.get('format')!r}, this "
                f"seem writes {FORMAT!r}); choose a new folder"
            )
        if manifest.get("fingerprint") != job.fingerprint:
            if not self.labels_dir.is_dir() or not any(self.labels_dir.rglob("*.json")):
                return None  # no image labelled yet (e.g. the workers could not start): nothing to mix with
            raise LabelJobError(
                f"--out {out} belongs to a different run ({'; '.join(_differences(manifest, job)) or 'settings differ'}"
                "); refusing to mix outputs: use a new folder, or rerun with the folder's model and settings "
                f"(see {self.manifest_path})"
            )
        return manifest

    # ----------------------------------------------------------------------------------------------------- opening

    def open(self, job: LabelJob, items: Sequence[SourceItem], engine: dict[str, Any]) -> list[SourceItem]:
        """Lock the folder, clean up after a killed run, write the manifest (status ``running``).

        Returns the items still to label (those without a label JSON).
        """
        existing = self.check(job)
        self.out.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        if existing is None:  # a new folder, or one whose earlier run labelled nothing: start its records afresh
            self.journal_path.unlink(missing_ok=True)
        for tmp in self.out.rglob(".*.tmp"):  # left by write_files_atomically in a killed run
            tmp.unlink(missing_ok=True)
        pending = [it for it in items if not self.label_path(it.key).is_file()]
        self._t0 = time.perf_counter()
        self._run = {
            "started": _now(),
            "engine": engine,
            "images": len(items),
            "already_done": len(items) - len(pending),
            "host": socket.gethostname(),
            "argv": list(sys.argv),
        }
        runs = list(existing.get("runs", [])) if existing else []
        self._manifest = {
            "format": FORMAT,
            **job.describe(),
            "source": job.source,
            "image_root": job.image_root,
            "status": "running",
            "versions": versions(engine.get("name")),
            "created": existing.get("created", _now()) if existing else _now(),
            "runs": [*runs, self._run],
            "counts": existing.get("counts", {}) if existing else {},
            "errors": existing.get("errors", []) if existing else [],
        }
        self._write_manifest()
        self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        return pending

    def _acquire_lock(self) -> None:
        f = open(self.out / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until close()
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError as e:
            f.close()
            raise LabelJobError(f"--out {self.out}: another `seem label` run is writing to this folder") from e
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}@{socket.gethostname()}\n")
        f.flush()
        self._lock = f

    def _write_manifest(self) -> None:
        write_files_atomically({self.manifest_path: (json.dumps(self._manifest, indent=1) + "\n").encode("utf-8")})

    # ----------------------------------------------------------------------------------------------------- results

    def accept(self, item: SourceItem, result: ImageResult) -> bool:
        """Write one image's result atomically and journal it; False when the image was already written in this
        run (a retried task's second answer), which is then ignored."""
        if item.key in self._written:
            self._duplicates += 1
            return False
        w = self._workers.setdefault(result.worker or "?", {"images": 0, "peak_rss_mb": 0.0, "seconds": 0.0})
        w["images"] += 1
        w["seconds"] = round(w["seconds"] + result.seconds, 3)
        w["peak_rss_mb"] = max(w["peak_rss_mb"], round(result.peak_rss_mb, 1))
        entry: dict[str, Any] = {"key": item.key, "path": item.path}
        if result.ok and result.doc is not None:
            doc = result.doc
            doc["image"] = {"image_id": item.image_id, "file_name": item.key, **doc.get("image", {})}
            files: dict[str | os.PathLike[str], bytes] = {}
            if result.panoptic_png is not None:
                name = self.panoptic_name(item.key)
                doc.setdefault("panoptic", {})["file_name"] = name
                files[self.panoptic_dir / name] = result.panoptic_png
            if result.overlay_png is not None:
                files[self.overlay_path(item.key)] = result.overlay_png
            files[self.label_path(item.key)] = _dumps(doc)  # last: its presence means the image is done
            write_files_atomically(files)
            self._errors.pop(item.key, None)
            entry.update(status="ok", annotations=len(doc.get("annotations", [])))
        else:
            reason = result.reason or "unknown error"
            self._errors[item.key] = {"key": item.key, "path": item.path, "reason": reason}
            entry.update(status="error", reason=reason)
        self._written.add(item.key)
        entry.update(
            seconds=round(result.seconds, 4),
            worker=result.worker,
            peak_rss_mb=round(result.peak_rss_mb, 1),
            run=len(self._manifest.get("runs", [])),
            time=_now(),
        )
        if self._journal is not None:
            self._journal.write(json.dumps(entry) + "\n")
            self._journal.flush()
        return True

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Errors of this run (images that failed and have no result)."""
        return list(self._errors.values())

    # ---------------------------------------------------------------------------------------------------- finishing

    def finalize(self, job: LabelJob, items: Sequence[SourceItem], *, interrupted: bool = False) -> LabelSummary:
        """Write the merged COCO files (unless interrupted) and the final manifest; returns the summary."""
        seconds = time.perf_counter() - self._t0
        labelled = sum(1 for it in items if self.label_path(it.key).is_file())
        errors = [e for k, e in self._errors.items() if not self.label_path(k).is_file()]
        annotations = 0
        outputs: dict[str, str] = {"labels": "labels/", "journal": JOURNAL}
        if not interrupted:
            annotations = self._merge(job, items)
            outputs["instances"] = "instances.json"
            if job.settings.task == "panoptic":
                outputs.update(panoptic="panoptic.json", panoptic_pngs="panoptic/")
        if job.settings.overlays:
            outputs["overlays"] = "overlays/"
        if interrupted:
            status = "interrupted"
        elif labelled == len(items):
            status = "complete"
        else:
            status = "complete_with_errors"
        processed = len(self._written)
        self._run.update(
            finished=_now(),
            seconds=round(seconds, 3),
            processed=processed,
            errors=len(errors),
            duplicates_ignored=self._duplicates,
            workers=self._workers,
        )
        self._manifest.update(
            status=status,
            counts={"images": len(items), "labelled": labelled, "errors": len(errors), "annotations": annotations},
            errors=errors,
            outputs=outputs,
        )
        self._write_manifest()
        return LabelSummary(
            out=self.out,
            status=status,
            images=len(items),
            labelled=labelled,
            skipped=int(self._run.get("already_done", 0)),
            processed=processed,
            errors=errors,
            annotations=annotations,
            seconds=seconds,
            workers=dict(self._workers),
        )

    def close(self) -> None:
        """Close the journal and release the lock."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ------------------------------------------------------------------------------------------------------ merging

    def _docs(self, items: Iterable[SourceItem]) -> Iterable[tuple[int, SourceItem, dict[str, Any]]]:
        """``(image id, item, per-image doc)`` of every labelled item, in source order; ids: COCO's, else 1..N."""
        for i, it in enumerate(items):
            p = self.label_path(it.key)
            if not p.is_file():
                continue
            doc = json.loads(p.read_text(encoding="utf-8"))
            yield (it.image_id if it.image_id is not None else i + 1), it, doc

    def _merge(self, job: LabelJob, items: Sequence[SourceItem]) -> int:
        """Stream ``instances.json`` (and ``panoptic.json``) from the per-image files; returns the annotation count."""
        s = job.settings
        fixed_categories = s.task in ("panoptic", "text") or s.classes is not None
        categories = categories_for(s)
        cat_ids = {c["name"]: c["id"] for c in categories}
        info = {
            "description": f"seem label --task {s.task}",
            "fingerprint": job.fingerprint,
            "model": job.model.spec,
        }
        images: list[dict[str, Any]] = []
        pan_annotations: list[dict[str, Any]] = []
        n = 0
        tmp = self.out / ".instances.json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write('{"info":' + json.dumps(info) + ',"annotations":[')
            for image_id, _it, doc in self._docs(items):
                im = doc["image"]
                images.append(
                    {"id": image_id, "file_name": im["file_name"], "width": im["width"], "height": im["height"]}
                )
                for a in doc.get("annotations", []):
                    ann = dict(a)
                    ann.pop("id", None)
                    if s.task in ("everything", "granularity"):
                        label = a.get("label")
                        if label is not None and label not in cat_ids and not fixed_categories:
                            cat_ids[label] = len(cat_ids) + 1
                            categories.append({"id": cat_ids[label], "name": label})
                        ann["category_id"] = cat_ids.get(label, 1) if label is not None else 1
                    n += 1
                    f.write(("," if n > 1 else "") + json.dumps({"id": n, "image_id": image_id, **ann, "iscrowd": 0}))
                if s.task == "panoptic" and "panoptic" in doc:
                    pan = doc["panoptic"]
                    pan_annotations.append(
                        {"image_id": image_id, "file_name": pan["file_name"], "segments_info": pan["segments_info"]}
                    )
            f.write('],"images":' + json.dumps(images) + ',"categories":' + json.dumps(categories) + "}\n")
        os.replace(tmp, self.out / "instances.json")
        if s.task == "panoptic":
            pan_doc = {
                "info": info,
                "images": images,
                "annotations": pan_annotations,
                "categories": categories,
            }
            write_files_atomically({self.out / "panoptic.json": _dumps(pan_doc)})
        return n


def _differences(manifest: dict[str, Any], job: LabelJob) -> list[str]:
    """Human-readable differences between a folder's manifest and a job."""
    out = []
    old_model = manifest.get("model", {}) or {}
    if old_model.get("fingerprint") != job.model.fingerprint:
        out.append(
            f"model: the folder was labelled with {old_model.get('spec') or 'the default model'} "
            f"(sha256 {str(old_model.get('fingerprint'))[:12]}), this run uses {job.model.spec or 'the default model'} "
            f"(sha256 {job.model.fingerprint[:12]})"
        )
    old = manifest.get("settings", {}) or {}
    new = job.settings.to_dict()
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            out.append(f"{k.replace('_', '-')}: folder {old.get(k)!r}, this run {new.get(k)!r}")
    return out
