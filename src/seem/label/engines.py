"""Run a labeling job: the worker that labels one image, the local and the Ray engine, and ``run_job``.

Both engines use the same ``LabelWorker`` (the model is loaded once per worker) and the same single writer
(``seem.label.writers.OutputFolder``, in the calling process), so they write the same files:

- ``local`` (default): one process, images in source order, a progress bar;
- ``ray``: Ray Data reads the images (``ray.data.read_binary_files``; local paths or any object storage Ray Data
  reads) and labels them in an actor pool (``map_batches`` with the callable class ``RayLabeler``: one model per
  actor); the results stream back to this process, which writes them. A worker that dies is restarted by Ray and its
  unfinished batches are retried (Ray Data's actor-pool defaults, ``max_restarts=-1``, ``max_task_retries=-1``); a
  second answer for an image that was already written is ignored, so the output is complete and has no duplicates.

Ray is an optional extra (``pip install 'seem[ray]'``); it is imported only inside the Ray engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seem.label.job import FAMILY_SHORT_SIDE, LabelJob, LabelJobError, LabelSettings
from seem.label.sources import SourceItem, is_uri, list_source, read_bytes, unreadable_reason
from seem.label.writers import ImageResult, LabelSummary, OutputFolder

__all__ = ["ENGINES", "LabelWorker", "RayLabeler", "connect_ray", "run_job"]


def model_short_side(model: Any) -> int | None:
    """The input short side a SEEM-family model declares (``config.inference.short_side``), else None."""
    inference = getattr(getattr(model, "config", None), "inference", None)
    side = getattr(inference, "short_side", None)
    return int(side) if isinstance(side, int) else None


ENGINES = ("local", "ray")
READ_CPUS = 0.25
"""CPUs reserved by each Ray Data read task (reading is I/O: a small share keeps workers from starving it)."""


def _peak_rss_mb() -> float:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except Exception:  # pragma: no cover - not POSIX
        return 0.0


# ======================================================================================================================
# the worker


def _xywh(mask: np.ndarray) -> tuple[list[int], int]:
    from seem.results import mask_bbox

    x0, y0, x1, y1 = mask_bbox(mask)
    return [x0, y0, x1 - x0, y1 - y0], int(mask.sum())


class _SharedFeatures:
    """Encoded model inputs shared by the per-level adapters of one image (LRU by pixel content)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.entries: OrderedDict[str, Any] = OrderedDict()


def _shared_adapter(model: Any, level: int, cache: _SharedFeatures, class_names: Sequence[str] | None) -> Any:
    """A Semantic-SAM grid adapter for one level whose image encoding is shared with the other levels' adapters."""
    from seem.automatic import GridFrame, SemanticSAMGridAdapter

    class _Adapter(SemanticSAMGridAdapter):
        def set_image(self, image: np.ndarray) -> GridFrame:
            key = hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() + str(image.shape)
            if key in cache.entries:
                cache.entries.move_to_end(key)
                self.features = cache.entries[key]
                return GridFrame(input_size=self.features.image_size, padded_size=self.features.padded_size)
            frame = super().set_image(image)
            cache.entries[key] = self.features
            while len(cache.entries) > cache.size:
                cache.entries.popitem(last=False)
            return frame

    adapter = _Adapter(model, (level,))
    if class_names is not None:
        adapter.set_vocabulary(class_names, None)
    return adapter


class LabelWorker:
    """Labels one image at a time with the job's task; loads the model once.

    Args:
        spec: ``LabelJob.worker_spec()`` (plain data, so it travels to Ray workers).

    Raises:
        LabelJobError: the model cannot be loaded or the task's predictor cannot be built with these settings.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        self.settings = LabelSettings.from_dict(spec["settings"])
        self.fingerprint = str(spec["fingerprint"])
        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        m = spec["model"]
        self.family = str(m["family"])
        device = spec.get("device") or "cpu"
        try:
            if self.family == "seem":
                from seem.predictor import resolve_model

                model: Any = resolve_model(m["spec"], config=m["config"], device=device)
            else:
                from seem.loading import load

                model = load(m["spec"], device=device)
            self._build(model)
        except LabelJobError:
            raise
        except Exception as e:
            raise LabelJobError(f"cannot set up --task {self.settings.task}: {type(e).__name__}: {e}") from e
        self.worker = f"{os.getpid()}@{socket.gethostname()}"

    # ------------------------------------------------------------------------------------------------- set-up

    def _build(self, model: Any) -> None:
        s = self.settings
        short = s.size or model_short_side(model) or FAMILY_SHORT_SIDE[self.family]
        self.segmenter: Any = None
        self.generators: list[tuple[int | None, Any]] = []
        if s.task in ("panoptic", "text"):
            from seem.predictor import Segmenter

            self.segmenter = Segmenter(
                model,
                short_side=short,
                vocabulary=list(s.classes) if s.classes is not None else None,
                stuff_classes=list(s.stuff) if s.stuff is not None else None,
                max_pixels=None,
                progress=False,
            )
            if s.task == "panoptic":
                self.segmenter.class_embeddings(self.segmenter.vocabulary)  # encode (or read) the vocabulary now
            return
        from seem.automatic import AutomaticMaskGenerator

        kw: dict[str, Any] = {
            "points_per_side": s.points_per_side,
            "points_per_batch": s.points_per_batch,
            "pred_iou_thresh": s.pred_iou_thresh,
            "stability_score_thresh": s.stability_score_thresh,
            "box_nms_thresh": s.box_nms_thresh,
            "min_mask_region_area": s.min_mask_region_area,
            "crop_n_layers": s.crop_n_layers,
            "short_side": short,
            "progress": False,
        }
        classes = list(s.classes) if s.classes is not None else None
        if s.task == "everything":
            if self.family == "semantic_sam":
                kw["levels"] = s.levels
            self.generators = [(None, AutomaticMaskGenerator(model, class_names=classes, **kw))]
            return
        from seem.automatic import generate_crop_boxes

        n_crops = len(generate_crop_boxes((1000, 1000), s.crop_n_layers, 0.3)[0])
        cache = _SharedFeatures(n_crops)
        for lv in s.levels or ():
            self.generators.append((lv, AutomaticMaskGenerator(_shared_adapter(model, lv, cache, classes), **kw)))

    # ------------------------------------------------------------------------------------------------- labelling

    def process(self, data: bytes, path: str) -> ImageResult:
        """Label one encoded image; any failure (unreadable, corrupt, too large, model error) becomes an error
        result with its reason instead of an exception."""
        t0 = time.perf_counter()
        try:
            from seem.io import read_image

            image = read_image(bytes(data), max_pixels=self.settings.max_pixels)
            doc, pan_png, segments = self._label(image)
            overlay = self._overlay(image, segments) if self.settings.overlays else None
            result = ImageResult(path=path, ok=True, doc=doc, panoptic_png=pan_png, overlay_png=overlay)
        except Exception as e:
            msg = str(e)
            if msg.startswith("image bytes"):  # seem.io names bytes so; name the file instead
                msg = path.replace("\\", "/").rsplit("/", 1)[-1] + msg[len("image bytes") :]
            result = ImageResult(path=path, ok=False, reason=f"{type(e).__name__}: {msg}")
        result.seconds = time.perf_counter() - t0
        result.worker = self.worker
        result.peak_rss_mb = _peak_rss_mb()
        return result

    def _label(self, image: np.ndarray) -> tuple[dict[str, Any], bytes | None, list[Any]]:
        """→ (per-image doc, panoptic PNG or None, ``Segment`` list for the overlay)."""
        from seem.results import Segment, encode_png, mask_to_rle

        s = self.settings
        h, w = image.shape[:2]
        anns: list[dict[str, Any]] = []
        segments: list[Segment] = []
        pan_png: bytes | None = None
        extra: dict[str, Any] = {}

        def add(mask: np.ndarray, fields: dict[str, Any]) -> None:
            bbox, area = _xywh(mask)
            if area == 0:
                return
            anns.append({"id": len(anns), "segmentation": mask_to_rle(mask), "bbox": bbox, "area": area, **fields})
            segments.append(Segment(mask=mask, score=float(fields["score"]), label=fields.get("label")))

        if s.task == "panoptic":
            seg = self.segmenter
            seg.set_image(image)
            pan = seg.panoptic(object_mask_threshold=s.threshold, overlap_threshold=s.overlap)
            for sg in pan.segments:
                add(
                    sg.mask,
                    {
                        "score": sg.score,
                        "label": sg.label,
                        "label_score": sg.label_score,
                        "category_id": sg.category_id,
                        "level": None,
                        "segment_id": sg.id,
                        "isthing": sg.isthing,
                    },
                )
            pan_png = encode_png(pan.to_coco_png())
            extra["panoptic"] = {"segments_info": pan.to_coco_json("")["annotations"][0]["segments_info"]}
        elif s.task == "text":
            seg = self.segmenter
            seg.set_image(image)
            phrases = list(s.phrases or ())
            for i, (phrase, sg) in enumerate(zip(phrases, seg.segment_text(phrases, labels=False), strict=True)):
                add(
                    sg.mask,
                    {"score": sg.score, "label": phrase, "label_score": None, "category_id": i + 1, "level": None},
                )
        else:
            for _lv, gen in self.generators:
                for r in gen.generate(image):
                    add(
                        r["segmentation"],
                        {
                            "score": float(r["predicted_iou"]),
                            "label": r["label"],
                            "label_score": r["label_score"],
                            "category_id": None,
                            "level": r["level"],
                            "predicted_iou": float(r["predicted_iou"]),
                            "stability_score": float(r["stability_score"]),
                            "point_coords": [[float(v) for v in p] for p in r["point_coords"]],
                            "crop_box": [int(v) for v in r["crop_box"]],
                            "part_label": r["part_label"],
                            "part_label_score": r["part_label_score"],
                        },
                    )
        doc = {
            "image": {"width": int(w), "height": int(h)},
            "annotations": anns,
            "task": s.task,
            "fingerprint": self.fingerprint,
            **extra,
        }
        return doc, pan_png, segments

    def _overlay(self, image: np.ndarray, segments: list[Any]) -> bytes:
        import cv2

        from seem.results import draw_overlay, encode_png

        canvas = draw_overlay(image, segments, labels=any(sg.label is not None for sg in segments))
        h, w = canvas.shape[:2]
        scale = self.settings.thumb_size / max(h, w)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
        return encode_png(canvas)


# ======================================================================================================================
# engines


def _run_local(worker: LabelWorker, items: Sequence[SourceItem], folder: OutputFolder, progress: bool) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc="seem label", unit="image", disable=not progress) as bar:
        for it in items:
            try:
                data = read_bytes(it.path)
            except Exception as e:
                folder.accept(it, ImageResult(path=it.path, ok=False, reason=f"{type(e).__name__}: {e}"))
            else:
                folder.accept(it, worker.process(data, it.path))
            bar.update(1)


def import_ray() -> Any:
    """``ray`` (with ``ray.data``), or a ``LabelJobError`` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise LabelJobError("--engine ray needs Ray: pip install 'seem[ray]' (or pip install 'ray[data]')") from e
    return ray


def _address_host_port(address: str) -> tuple[str, int]:
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    default = 10001 if address.startswith("ray://") else 6379
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        return (host or rest).strip("[]"), int(port) if port else default
    except ValueError:
        raise LabelJobError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT") from None


def connect_ray(address: str | None, timeout: float = 5.0) -> bool:
    """Join (``address``: ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or start (None) a Ray cluster.

    A given address is checked first (a TCP connection, ``timeout`` seconds), so an unreachable cluster is reported
    at once. A Ray session already running in this process is then used as it is. Returns True when this call
    started the connection (the caller shuts it down).

    Raises:
        LabelJobError: Ray is missing, or the address is malformed, unreachable or not a Ray cluster.
    """
    ray = import_ray()
    if address is not None and address != "auto":
        host, port = _address_host_port(address)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            raise LabelJobError(
                f"--address {address}: cannot reach a Ray cluster at {host}:{port} ({e}); start one with "
                "`ray start --head` and pass its address, or use --address auto on a cluster node"
            ) from None
    if ray.is_initialized():
        return False
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as e:
        raise LabelJobError(f"--address {address}: cannot connect to Ray: {type(e).__name__}: {e}") from None
    return True


class RayLabeler:
    """Ray Data callable class: one ``LabelWorker`` (one model) per actor; batches of ``{"bytes", "path"}`` →
    columns of ``ImageResult`` (``doc`` as JSON text)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.worker = LabelWorker(spec)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {
            k: []
            for k in ("path", "ok", "reason", "doc", "panoptic_png", "overlay_png", "seconds", "worker", "peak_rss_mb")
        }
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            r = self.worker.process(bytes(data), str(path))
            cols["path"].append(str(path))
            cols["ok"].append(bool(r.ok))
            cols["reason"].append(r.reason or "")
            cols["doc"].append(json.dumps(r.doc) if r.doc is not None else "")
            cols["panoptic_png"].append(r.panoptic_png or b"")
            cols["overlay_png"].append(r.overlay_png or b"")
            cols["seconds"].append(float(r.seconds))
            cols["worker"].append(r.worker)
            cols["peak_rss_mb"].append(float(r.peak_rss_mb))
        return cols


def _row_result(row: dict[str, Any]) -> ImageResult:
    return ImageResult(
        path=str(row["path"]),
        ok=bool(row["ok"]),
        reason=str(row["reason"]) or None,
        doc=json.loads(row["doc"]) if row["doc"] else None,
        panoptic_png=bytes(row["panoptic_png"]) or None,
        overlay_png=bytes(row["overlay_png"]) or None,
        seconds=float(row["seconds"]),
        worker=str(row["worker"]),
        peak_rss_mb=float(row["peak_rss_mb"]),
    )


def _supports(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _run_ray(
    job: LabelJob,
    items: Sequence[SourceItem],
    folder: OutputFolder,
    *,
    num_workers: int,
    batch_size: int,
    cpus_per_worker: float,
    progress: bool,
) -> None:
    ray = import_ray()
    from tqdm.auto import tqdm

    by_path: dict[str, SourceItem] = {}
    readable: list[SourceItem] = []
    bar = tqdm(total=len(items), desc="seem label (ray)", unit="image", disable=not progress)
    for it in items:
        reason = unreadable_reason(it.path)
        if reason is not None:  # Ray Data would fail the whole read on it
            folder.accept(it, ImageResult(path=it.path, ok=False, reason=f"ImageError: {reason}"))
            bar.update(1)
            continue
        readable.append(it)
        by_path[it.path] = it
        if is_uri(it.path):
            by_path[it.path.split("://", 1)[1]] = it
    if not readable:
        bar.close()
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    read_kw: dict[str, Any] = {"include_paths": True}
    if _supports(ray.data.read_binary_files, "num_cpus"):
        read_kw["num_cpus"] = READ_CPUS
    else:  # pragma: no cover - older Ray
        read_kw["ray_remote_args"] = {"num_cpus": READ_CPUS}
    ds = ray.data.read_binary_files([it.path for it in readable], **read_kw)
    ds = ds.map_batches(
        RayLabeler,
        fn_constructor_kwargs={"spec": job.worker_spec()},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
        batch_format="numpy",
    )  # Ray Data's actor pools restart dead actors and retry their tasks (max_restarts / max_task_retries -1)
    seen: set[str] = set()
    try:
        for row in ds.iter_rows():
            path = str(row["path"])
            found = by_path.get(path) or by_path.get(os.path.normpath(path))
            if found is None:  # pragma: no cover - Ray returned a path we did not give it
                continue
            if folder.accept(found, _row_result(row)):
                bar.update(1)
            seen.add(found.key)
    except Exception as e:
        raise _ray_error(e) from e
    finally:
        bar.close()
    for it in readable:  # safety net: an image the engine never answered is an error (retried by a rerun)
        if it.key not in seen:
            folder.accept(it, ImageResult(path=it.path, ok=False, reason="the Ray job returned no result for it"))


def _ray_error(e: Exception) -> Exception:
    """A worker that cannot build its predictor becomes a ``LabelJobError`` with the worker's own message."""
    import re

    text = str(e)
    found = re.findall(r"LabelJobError: (.+)", text)
    if found:
        return LabelJobError(f"a Ray worker could not start: {found[-1].strip()}")
    if "creation task" in text:
        return LabelJobError(f"a Ray worker could not start: {text.splitlines()[-1] if text else type(e).__name__}")
    return e


# ======================================================================================================================
# orchestration


def _check_engine_args(
    engine: str, address: str | None, num_workers: int | None, batch_size: int, cpus_per_worker: float | None
) -> None:
    if engine not in ENGINES:
        raise LabelJobError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "local" and (address is not None or num_workers is not None or cpus_per_worker is not None):
        raise LabelJobError("--address / --num-workers / --cpus-per-worker apply to --engine ray only")
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1
    ):
        raise LabelJobError(f"--num-workers must be an integer >= 1, got {num_workers!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LabelJobError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    if cpus_per_worker is not None and not (isinstance(cpus_per_worker, int | float) and cpus_per_worker > 0):
        raise LabelJobError(f"--cpus-per-worker must be a number > 0, got {cpus_per_worker!r}")


def run_job(
    job: LabelJob,
    engine: str = "local",
    *,
    address: str | None = None,
    num_workers: int | None = None,
    batch_size: int = 4,
    cpus_per_worker: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> LabelSummary:
    """Label every image of ``job.source`` that has no result yet in ``job.out``; returns the summary.

    Before any image is labelled: the source is listed (an empty one is refused), the output folder is checked
    (another run's folder is refused), Ray is reached (``engine="ray"``; an unreachable address is refused) and, for
    the local engine, the model is loaded.

    Args:
        job: from ``seem.label.make_job``.
        engine: ``"local"`` or ``"ray"``.
        address: Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None starts a local Ray (or uses
            the Ray session already running in this process).
        num_workers: Ray actors (each loads the model once); default: the cluster's CPUs minus one (at least 1).
        batch_size: images per Ray task.
        cpus_per_worker: CPUs reserved per actor; default 1, or a fraction when the cluster has fewer CPUs than
            ``num_workers + 1`` (so the read stage always gets a CPU share).
        progress: show a progress bar.
        log: where to send one-line notes (default: nowhere).

    Raises:
        LabelJobError: the job cannot run (see above); Ray's own exception when a Ray run fails midway.
    """
    note = log or (lambda _msg: None)
    _check_engine_args(engine, address, num_workers, batch_size, cpus_per_worker)
    items = _outside(list_source(job.source, job.image_root), job.out, job.source)
    folder = OutputFolder(job.out)
    folder.check(job)
    worker: LabelWorker | None = None
    started_ray = False
    info: dict[str, Any] = {"name": engine}
    if engine == "ray":
        started_ray = connect_ray(address)
        ray = import_ray()
        total = float(ray.cluster_resources().get("CPU", 1.0))
        workers = num_workers or max(1, int(total) - 1)
        cpus = cpus_per_worker
        if cpus is None:
            cpus = 1.0 if total >= workers + READ_CPUS else max(0.05, round((total - 0.5) / workers, 2))
        threads = job.threads or max(1, int(cpus))
        job = _with_threads(job, threads)
        info.update(
            address=address, num_workers=workers, batch_size=batch_size, cpus_per_worker=cpus, cluster_cpus=total
        )
        info["threads"] = threads
    else:
        worker = LabelWorker(job.worker_spec())
        info["threads"] = job.threads
    try:
        pending = folder.open(job, items, info)
        note(
            f"{len(items)} images in {job.source}: {len(items) - len(pending)} already labelled, "
            f"{len(pending)} to do ({engine} engine)"
        )
        try:
            if pending:
                if worker is not None:
                    _run_local(worker, pending, folder, progress)
                else:
                    _run_ray(
                        job,
                        pending,
                        folder,
                        num_workers=min(int(info["num_workers"]), len(pending)),
                        batch_size=batch_size,
                        cpus_per_worker=float(info["cpus_per_worker"]),
                        progress=progress,
                    )
        except BaseException:
            folder.finalize(job, items, interrupted=True)
            raise
        return folder.finalize(job, items)
    finally:
        folder.close()
        if started_ray:
            import_ray().shutdown()


def _outside(items: list[SourceItem], out: Path, source: str) -> list[SourceItem]:
    """Drop the images inside the output folder (its overlays and panoptic PNGs when ``--out`` is inside SOURCE)."""
    root = out.expanduser().resolve()
    kept = [it for it in items if is_uri(it.path) or not Path(it.path).resolve().is_relative_to(root)]
    if not kept:
        raise LabelJobError(f"source {source} holds no images outside the output folder {out}")
    return kept


def _with_threads(job: LabelJob, threads: int) -> LabelJob:
    from dataclasses import replace

    return replace(job, threads=threads)
