"""``SegmentationService``: what the HTTP routes do, as plain (blocking) methods run in the inference threads.

It owns the models, the session cache, the Segmenter pool and the video jobs, and uses only seem's public predictor
API: ``Segmenter`` (SEEM), ``InteractiveSession`` (rounds with the memory prompt), ``GranularityPredictor``
(Semantic-SAM levels), ``AutomaticMaskGenerator`` (segment everything) and the result helpers of ``seem.results``.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from seem.granularity import ALL_LEVELS, GranularityPredictor, check_levels
from seem.io import ImageError, read_image, sniff_image_format
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM
from seem.predictor import Segmenter
from seem.prompts import PromptError, PromptSet
from seem.results import Segment, draw_overlay, encode_png, mask_to_rle, rle_to_mask
from seem.serve.config import ServeConfig
from seem.serve.convert import b64_png, mask_record, object_masks_out, segment_record, to_prompt_set
from seem.serve.errors import ApiError
from seem.serve.gate import Deadline
from seem.serve.jobs import JobManager, Tracker, decode_frames, decode_video, default_tracker
from seem.serve.schemas import (
    EverythingRequest,
    ExportRequest,
    GranularityRequest,
    PanopticRequest,
    PromptsIn,
    SegmentRequest,
)
from seem.serve.sessions import (
    AnyObject,
    GranularityObject,
    InteractiveObject,
    SegmenterPool,
    Session,
    SessionStore,
    StaticObject,
    model_storages,
    new_id,
)
from seem.session import InteractiveSession

__all__ = ["SegmentationService", "load_image_bytes"]


def load_image_bytes(data: bytes, max_pixels: int, what: str = "the upload") -> np.ndarray:
    """Uploaded bytes → ``uint8 [H, W, 3]``; the type is checked by content and the size from the header first.

    Raises ``ApiError``: 415 (not a PNG / JPEG / GIF / BMP / TIFF / WebP), 413 (more than ``max_pixels``, or a
    decompression bomb), 422 (corrupt or truncated).
    """
    if not data:
        raise ApiError(422, f"{what} is empty", "invalid_image")
    fmt = sniff_image_format(data[:16])
    if fmt is None:
        raise ApiError(
            415,
            f"{what} is not a PNG, JPEG, GIF, BMP, TIFF or WebP image (the type is checked by content; it starts "
            f"with {data[:8]!r})",
            "unsupported_media_type",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"{what} was refused as a decompression bomb: {e}", "too_large") from None
    except Exception as e:
        raise ApiError(422, f"{what}: cannot read this {fmt} file: {e}", "invalid_image") from None
    if w * h > max_pixels:
        raise ApiError(413, f"{what} is {w}×{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}", "too_large")
    try:
        return read_image(data, max_pixels=max_pixels)
    except ImageError as e:
        raise ApiError(422, f"{what}: {e}", "invalid_image") from None


def _safe_name(name: str | None) -> str | None:
    """A display name only (never used as a path): the last path component, printable, at most 200 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c for c in base if c.isprintable())[:200]
    return clean or None


class SegmentationService:
    """The server's state and operations (see the module docstring).

    Args:
        seem_model: a ``SEEMModel`` (clicks, boxes, scribbles, text, reference, panoptic, everything, video) or None.
        semantic_sam: a ``SemanticSAM`` (granularity levels, everything) or None. At least one model is needed.
        config: the limits (``ServeConfig``).
        tracker: the video tracker (``seem.serve.jobs.Tracker``); default: ``default_tracker`` (needs SEEM).
    """

    def __init__(
        self,
        seem_model: SEEMModel | None,
        semantic_sam: SemanticSAM | None = None,
        config: ServeConfig | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        if seem_model is None and semantic_sam is None:
            raise TypeError("the server needs a SEEMModel and/or a SemanticSAM")
        if seem_model is not None and not isinstance(seem_model, SEEMModel):
            raise TypeError(f"seem_model must be a SEEMModel, got {type(seem_model).__name__}")
        if semantic_sam is not None and not isinstance(semantic_sam, SemanticSAM):
            raise TypeError(f"semantic_sam must be a SemanticSAM, got {type(semantic_sam).__name__}")
        self.cfg = config or ServeConfig()
        self.seem = seem_model.eval() if seem_model is not None else None
        self.ssam = semantic_sam.eval() if semantic_sam is not None else None
        self.exclude = model_storages(self.seem, self.ssam)
        self.pool = SegmenterPool(self._new_segmenter) if self.seem is not None else None
        self.store = SessionStore(
            self.cfg.cache_bytes, self.cfg.max_sessions, self.cfg.session_ttl_s, on_close=self._on_close
        )
        name: str | None
        if tracker is not None:
            name = str(getattr(tracker, "name", None) or getattr(tracker, "__name__", None) or type(tracker).__name__)
        elif self.pool is not None:
            name, tracker = default_tracker(self.pool.acquire, self.pool.release)
        else:
            name = None
        self.tracker_name = name
        self.jobs = (
            JobManager(tracker, name or "custom", self.cfg.max_jobs, self.cfg.max_running_jobs, self.cfg.job_ttl_s)
            if tracker is not None
            else None
        )

    # ------------------------------------------------------------------------------------------------ plumbing

    def _new_segmenter(self) -> Segmenter:
        assert self.seem is not None
        return Segmenter(
            self.seem,
            short_side=self.cfg.short_side,
            cache_dir=self.cfg.vocab_cache_dir,
            max_pixels=self.cfg.max_pixels,
            progress=False,
        )

    def warm(self) -> None:
        """Encode (or load from the disk cache) the default vocabulary once, before the first click needs it."""
        if self.pool is not None:
            seg = self.pool.acquire()
            seg.class_embeddings(seg.vocabulary)
            self.pool.release(seg)

    def families(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seem is not None:
            out["seem"] = {"variant": self.seem.config.decoder.variant, "vocabulary": "coco-panoptic (133 classes)"}
        if self.ssam is not None:
            out["semantic_sam"] = {"levels": list(ALL_LEVELS)}
        return out

    def _recycle(self, s: Session) -> None:
        if s.segmenter is not None and self.pool is not None:
            self.pool.release(s.segmenter)
        s.segmenter = None
        s.granularity = None
        s.objects.clear()

    def _on_close(self, s: Session) -> None:
        s.closed = True
        if s.lock.acquire(blocking=False):
            try:
                self._recycle(s)
            finally:
                s.lock.release()
        # else: the request holding the lock recycles it when it ends (``_use``)

    @contextmanager
    def _use(self, sid: str, deadline: Deadline) -> Iterator[Session]:
        s = self.store.get(sid)
        s.acquire(deadline.remaining())
        closed = False
        try:
            yield s
        finally:
            closed = s.closed
            if closed:
                self._recycle(s)
            else:
                s.measure(self.exclude)
            s.lock.release()
        if not closed:
            self.store.resized(s)

    def _need_seem(self, what: str) -> Segmenter:
        if self.seem is None:
            raise ApiError(400, f"{what} needs a SEEM model; this server runs Semantic-SAM only", "feature_unavailable")
        return self.seem  # type: ignore[return-value]

    def _reference_image(self, sid: str) -> np.ndarray:
        return self.store.get(sid).image

    def _session_out(self, s: Session, t0: float | None = None) -> dict[str, Any]:
        fam = []
        if s.segmenter is not None and s.segmenter.is_image_set:
            fam.append("seem")
        if s.granularity is not None and s.granularity.features is not None:
            fam.append("semantic_sam")
        return {
            "session_id": s.id,
            "width": s.size[1],
            "height": s.size[0],
            "bytes": s.nbytes,
            "expires_in_s": max(0.0, self.cfg.session_ttl_s - (time.monotonic() - s.last_used)),
            "objects": len(s.objects),
            "families": fam,
            "timing_ms": None if t0 is None else round((time.perf_counter() - t0) * 1000, 2),
        }

    # ------------------------------------------------------------------------------------------------ sessions

    def create_session(self, data: bytes, file_name: str | None, deadline: Deadline) -> dict[str, Any]:
        """Decode, check and encode an uploaded image; the new session is cached. Returns ``SessionOut``."""
        t0 = time.perf_counter()
        image = load_image_bytes(data, self.cfg.max_pixels)
        deadline.check("the upload")
        s = Session(image, _safe_name(file_name))
        try:
            if self.pool is not None:
                seg = self.pool.acquire()
                s.segmenter = seg
                seg.set_image(image)
            else:
                self._granularity_predictor(s)
        except ImageError as e:  # e.g. an extreme aspect ratio
            self._recycle(s)
            raise ApiError(422, str(e), "invalid_image") from None
        except BaseException:
            self._recycle(s)
            raise
        s.measure(self.exclude)
        try:
            self.store.add(s)
        except ApiError:
            self._recycle(s)
            raise
        return self._session_out(s, t0)

    def session_info(self, sid: str, deadline: Deadline) -> dict[str, Any]:
        with self._use(sid, deadline) as s:
            return self._session_out(s)

    def delete_session(self, sid: str) -> None:
        self.store.remove(sid)

    # ------------------------------------------------------------------------------------------------ objects

    def _object_out(
        self, obj: AnyObject, formats: Sequence[str], t0: float | None = None, masks: Sequence[np.ndarray] | None = None
    ) -> dict[str, Any]:
        selected = None
        prompts = None
        if isinstance(obj, InteractiveObject):
            segs = obj.session.segments or []
            recs = []
            for sg in segs:
                r = segment_record(sg)
                if "png" in formats:
                    r["png"] = b64_png(sg.mask)
                if "rle" not in formats:
                    r.pop("segmentation", None)
                recs.append(r)
            p = obj.session.prompts(0)
            prompts = p.describe() if p is not None else None
            rnd = obj.session.round
        elif isinstance(obj, GranularityObject):
            recs = object_masks_out(obj.levels, formats)
            selected = obj.selected_level
            rnd = obj.round
            prompts = f"{len(obj.points)} points" + (", 1 box" if obj.box is not None else "")
        else:
            recs = object_masks_out([obj.record], formats)
            rnd = obj.round
        return {
            "object_id": obj.id,
            "kind": obj.kind,
            "round": rnd,
            "masks": recs,
            "selected_level": selected,
            "prompts": prompts,
            "timing_ms": None if t0 is None else round((time.perf_counter() - t0) * 1000, 2),
        }

    def _check_room(self, s: Session, n: int = 1) -> None:
        if len(s.objects) + n > self.cfg.max_objects:
            raise ApiError(
                409,
                f"session {s.id} holds {len(s.objects)} objects; the limit is {self.cfg.max_objects} "
                "(delete some, or reset the session)",
                "too_many_objects",
            )

    def segment(self, sid: str, req: SegmentRequest, deadline: Deadline) -> dict[str, Any]:
        """Add prompts to an object (or start one) and run one round (SEEM, memory prompt from round 2)."""
        self._need_seem("segmenting with prompts")
        with self._use(sid, deadline) as s:
            t0 = time.perf_counter()
            assert s.segmenter is not None
            ps = to_prompt_set(req.prompts, s.size, self._reference_image)
            s.used_reference = s.used_reference or ps.reference is not None
            obj: InteractiveObject
            new = req.object_id is None
            if new:
                self._check_room(s)
                obj = InteractiveObject(new_id("o"), InteractiveSession(s.segmenter, 1, labels=req.labels), req.labels)
            else:
                found = s.object(str(req.object_id))
                if not isinstance(found, InteractiveObject):
                    raise ApiError(
                        409, f"object {found.id} is a {found.kind} object; it takes no prompts", "wrong_object_kind"
                    )
                obj = found
                if obj.session.round >= self.cfg.max_rounds:
                    raise ApiError(409, f"object {obj.id} reached {self.cfg.max_rounds} rounds", "too_many_rounds")
            try:
                obj.session.step(ps)
            except PromptError as e:
                raise ApiError(422, str(e), "invalid_prompt") from None
            if new:
                s.objects[obj.id] = obj
            return self._object_out(obj, req.mask_formats, t0)

    def _granularity_predictor(self, s: Session) -> GranularityPredictor:
        if s.granularity is None:
            g = GranularityPredictor(self.ssam)  # type: ignore[arg-type]
            g.set_image(np.array(s.image))
            s.granularity = g
        return s.granularity

    def granularity(self, sid: str, req: GranularityRequest, deadline: Deadline) -> dict[str, Any]:
        """Semantic-SAM clicks / box → one mask per granularity level (see ``GranularityRequest``)."""
        if self.ssam is None:
            raise ApiError(
                400,
                "granularity levels need a Semantic-SAM model (start the server with --granularity-model)",
                "feature_unavailable",
            )
        try:
            levels = check_levels(req.levels)
        except (TypeError, ValueError) as e:
            raise ApiError(422, str(e), "invalid_request") from None
        with self._use(sid, deadline) as s:
            t0 = time.perf_counter()
            new = req.object_id is None
            if new:
                self._check_room(s)
                obj = GranularityObject(new_id("o"))
            else:
                found = s.object(str(req.object_id))
                if not isinstance(found, GranularityObject):
                    raise ApiError(
                        409,
                        f"object {found.id} is a {found.kind} object, not a granularity object",
                        "wrong_object_kind",
                    )
                obj = found
                if obj.round >= self.cfg.max_rounds:
                    raise ApiError(409, f"object {obj.id} reached {self.cfg.max_rounds} rounds", "too_many_rounds")
            pts = list(obj.points) + [[float(p[0]), float(p[1])] for p in (req.points or [])]
            labs = list(obj.point_labels) + [int(p[2]) if len(p) == 3 else 1 for p in (req.points or [])]
            box = [float(v) for v in req.box] if req.box is not None else obj.box
            if not pts and box is None:
                raise ApiError(422, "give at least one click ('points') or a 'box'", "invalid_prompt")
            g = self._granularity_predictor(s)
            try:
                res = g.predict(
                    np.array(pts, dtype=np.float64) if pts else None,
                    np.array(labs, dtype=np.int64) if pts else None,
                    None if box is None else np.array(box, dtype=np.float64),
                    levels=levels,
                    sort="level",
                    dedup_iou=req.dedup_iou,
                    min_iou=-math.inf if req.min_iou is None else req.min_iou,
                    min_region=req.min_region,
                )
            except ValueError as e:
                raise ApiError(422, str(e), "invalid_prompt") from None
            records = [
                mask_record(
                    r.mask,
                    level=r.level,
                    predicted_iou=r.predicted_iou,
                    score=r.predicted_iou,
                    source="granularity",
                    label=r.label,
                )
                for r in res
            ]
            got = [r["level"] for r in records]
            selected: int | None
            if req.level is not None and req.level in got:
                selected = req.level
            else:
                selected = max(records, key=lambda r: r["predicted_iou"])["level"] if records else None
            obj.history.append((obj.points, obj.point_labels, obj.box, obj.levels, obj.selected_level))
            obj.points, obj.point_labels, obj.box = pts, labs, box
            obj.levels, obj.selected_level = records, selected
            if new:
                s.objects[obj.id] = obj
            return self._object_out(obj, req.mask_formats, t0)

    def list_objects(self, sid: str, formats: Sequence[str], deadline: Deadline) -> dict[str, Any]:
        with self._use(sid, deadline) as s:
            return {"session_id": s.id, "objects": [self._object_out(o, formats) for o in s.objects.values()]}

    def get_object(self, sid: str, oid: str, formats: Sequence[str], deadline: Deadline) -> dict[str, Any]:
        with self._use(sid, deadline) as s:
            return self._object_out(s.object(oid), formats)

    def undo(self, sid: str, oid: str, formats: Sequence[str], deadline: Deadline) -> dict[str, Any]:
        """Drop an object's last round; at round 0 the object has no mask (``masks`` is empty)."""
        with self._use(sid, deadline) as s:
            obj = s.object(oid)
            if isinstance(obj, InteractiveObject):
                if obj.session.round == 0:
                    raise ApiError(409, f"object {oid}: nothing to undo", "nothing_to_undo")
                obj.session.undo()
            elif isinstance(obj, GranularityObject):
                if not obj.history:
                    raise ApiError(409, f"object {oid}: nothing to undo", "nothing_to_undo")
                obj.points, obj.point_labels, obj.box, obj.levels, obj.selected_level = obj.history.pop()
            else:
                raise ApiError(409, f"object {oid} is a {obj.kind} result: delete it instead", "wrong_object_kind")
            return self._object_out(obj, formats)

    def delete_object(self, sid: str, oid: str, deadline: Deadline) -> None:
        with self._use(sid, deadline) as s:
            s.object(oid)
            del s.objects[oid]

    def reset(self, sid: str, deadline: Deadline) -> dict[str, Any]:
        with self._use(sid, deadline) as s:
            s.objects.clear()
            return {"session_id": s.id, "objects": []}

    # ------------------------------------------------------------------------------------------------ image-level

    def panoptic(self, sid: str, req: PanopticRequest, deadline: Deadline) -> dict[str, Any]:
        self._need_seem("panoptic segmentation")
        with self._use(sid, deadline) as s:
            t0 = time.perf_counter()
            assert s.segmenter is not None
            try:
                pan = s.segmenter.panoptic(
                    req.class_names,
                    stuff_classes=req.stuff_classes,
                    object_mask_threshold=req.object_mask_threshold,
                    overlap_threshold=req.overlap_threshold,
                )
            except (ValueError, TypeError) as e:
                raise ApiError(422, str(e), "invalid_request") from None
            if req.store:
                self._check_room(s, len(pan.segments))
            objs = []
            for sg in pan.segments:
                rec = segment_record(sg)
                obj = StaticObject(new_id("o"), "panoptic", rec)
                if req.store:
                    s.objects[obj.id] = obj
                objs.append(self._object_out(obj, req.mask_formats))
            name = (s.file_name or "image").rsplit(".", 1)[0]
            coco = pan.to_coco_json(f"{name}_panoptic.png", image_file=s.file_name or "image")
            png = b64_png_rgb(pan.to_coco_png()) if req.panoptic_png else None
            return {
                "session_id": s.id,
                "objects": objs,
                "coco_panoptic": coco,
                "panoptic_png": png,
                "timing_ms": round((time.perf_counter() - t0) * 1000, 2),
            }

    def everything(self, sid: str, req: EverythingRequest, deadline: Deadline) -> dict[str, Any]:
        from pycocotools import mask as mask_utils

        from seem.automatic import AutomaticMaskGenerator

        family = req.family
        if family == "auto":
            family = "semantic_sam" if self.ssam is not None else "seem"
        model: Any = self.ssam if family == "semantic_sam" else self.seem
        if model is None:
            raise ApiError(400, f"no {family} model is loaded on this server", "feature_unavailable")
        if req.points_per_side > self.cfg.max_points_per_side:
            raise ApiError(
                422,
                f"points_per_side {req.points_per_side} is above the server's limit of {self.cfg.max_points_per_side}",
                "invalid_request",
            )
        kw: dict[str, Any] = {}
        if family == "semantic_sam":
            if req.class_names is not None:
                raise ApiError(422, "class_names apply to the SEEM model only", "invalid_request")
            if req.levels is not None:
                kw["levels"] = req.levels
        else:
            if req.levels is not None:
                raise ApiError(422, "levels apply to the Semantic-SAM model only", "invalid_request")
            kw["class_names"] = req.class_names
        try:
            gen = AutomaticMaskGenerator(
                model,
                points_per_side=req.points_per_side,
                pred_iou_thresh=req.pred_iou_thresh,
                stability_score_thresh=req.stability_score_thresh,
                box_nms_thresh=req.box_nms_thresh,
                min_mask_region_area=req.min_mask_region_area,
                output_mode="coco_rle",
                **kw,
            )
        except (ValueError, TypeError) as e:
            raise ApiError(422, str(e), "invalid_request") from None
        with self._use(sid, deadline) as s:
            t0 = time.perf_counter()
            records = gen.generate(np.array(s.image))
            records.sort(key=lambda r: -float(r["predicted_iou"]))
            records = records[: req.max_masks]
            if req.store:
                self._check_room(s, len(records))
            objs = []
            for r in records:
                rle = {"size": [int(v) for v in r["segmentation"]["size"]], "counts": r["segmentation"]["counts"]}
                coco = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
                x, y, w, h = (round(v) for v in mask_utils.toBbox(coco).tolist())
                rec = {
                    "bbox": [x, y, x + w, y + h],
                    "bbox_xywh": [x, y, w, h],
                    "area": int(mask_utils.area(coco)),
                    "segmentation": rle,
                    "score": float(r["predicted_iou"]),
                    "predicted_iou": float(r["predicted_iou"]),
                    "stability_score": float(r["stability_score"]),
                    "level": r.get("level"),
                    "label": r.get("label"),
                    "source": "everything",
                }
                obj = StaticObject(new_id("o"), "everything", {k: v for k, v in rec.items() if v is not None})
                if req.store:
                    s.objects[obj.id] = obj
                objs.append(self._object_out(obj, req.mask_formats))
            return {
                "session_id": s.id,
                "family": family,
                "objects": objs,
                "label_reason": gen.label_reason,
                "timing_ms": round((time.perf_counter() - t0) * 1000, 2),
            }

    # ------------------------------------------------------------------------------------------------ export

    def _export_items(self, s: Session, req: ExportRequest) -> list[tuple[str, str, np.ndarray, dict[str, Any]]]:
        """``(object_id, kind, mask, fields)`` of the requested objects (every object with a mask by default)."""
        pairs: list[tuple[AnyObject, int | None]] = (
            [(s.object(o.object_id), o.level) for o in req.objects]
            if req.objects is not None
            else [(o, None) for o in s.objects.values()]
        )
        items = []
        for obj, level in pairs:
            if isinstance(obj, InteractiveObject):
                segs = obj.session.segments
                if not segs:
                    continue
                sg = segs[0]
                items.append((obj.id, obj.kind, sg.mask, segment_record(sg)))
            elif isinstance(obj, GranularityObject):
                lv = level if level is not None else obj.selected_level
                rec = next((r for r in obj.levels if r["level"] == lv), None)
                if rec is None:
                    if level is not None:
                        raise ApiError(422, f"object {obj.id} has no mask at level {level}", "invalid_request")
                    continue
                items.append((obj.id, obj.kind, rle_to_mask(rec["segmentation"]), rec))
            else:
                items.append((obj.id, obj.kind, rle_to_mask(obj.record["segmentation"]), obj.record))
        return items

    def export(self, sid: str, req: ExportRequest, deadline: Deadline) -> tuple[bytes, str, str]:
        """``(content, media type, file name)`` of the objects as COCO JSON, an index PNG or an overlay PNG.

        ``png``: ``uint8`` (``uint16`` beyond 255 objects) map, pixel = 1-based position of the object in the list
        (later objects on top), 0 = none. ``coco``: COCO instances JSON (RLE segmentations, XYWH boxes, labels).
        """
        import json

        import cv2

        with self._use(sid, deadline) as s:
            items = self._export_items(s, req)
            h, w = s.size
            stem = (s.file_name or "image").rsplit(".", 1)[0]
            if req.format == "png":
                dtype = np.uint8 if len(items) < 256 else np.uint16
                index = np.zeros((h, w), dtype=dtype)
                for i, (_, _, m, _) in enumerate(items):
                    index[m] = i + 1
                ok, buf = cv2.imencode(".png", index)
                if not ok:  # pragma: no cover
                    raise RuntimeError("PNG encoding failed")
                return buf.tobytes(), "image/png", f"{stem}_masks.png"
            if req.format == "overlay":
                segs = [
                    Segment(
                        mask=m,
                        score=float(f.get("score") or 0.0),
                        label=f.get("label"),
                        label_score=f.get("label_score"),
                    )
                    for _, _, m, f in items
                ]
                return encode_png(draw_overlay(np.array(s.image), segs)), "image/png", f"{stem}_overlay.png"
            categories: dict[str, int] = {}
            anns = []
            for i, (oid, kind, m, f) in enumerate(items):
                label = f.get("label") or "object"
                cat = categories.setdefault(label, len(categories) + 1)
                x0, y0, x1, y1 = f.get("bbox") or [0, 0, 0, 0]
                anns.append(
                    {
                        "id": i + 1,
                        "image_id": 1,
                        "category_id": cat,
                        "segmentation": f.get("segmentation") or mask_to_rle(m),
                        "area": int(m.sum()),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "iscrowd": 0,
                        "score": f.get("score"),
                        "label": f.get("label"),
                        "label_score": f.get("label_score"),
                        "level": f.get("level"),
                        "object_id": oid,
                        "kind": kind,
                    }
                )
            doc = {
                "images": [{"id": 1, "file_name": s.file_name or "image", "width": w, "height": h}],
                "annotations": anns,
                "categories": [{"id": i, "name": n} for n, i in categories.items()],
            }
            return json.dumps(doc).encode("utf-8"), "application/json", f"{stem}_coco.json"

    # ------------------------------------------------------------------------------------------------ video

    def submit_video(
        self, frames: Sequence[bytes], video: bytes | None, prompts: PromptsIn, deadline: Deadline
    ) -> dict[str, Any]:
        """Decode the frames (images or one video file), check the prompts on frame 0 and queue the job."""
        if self.jobs is None:
            raise ApiError(400, "video tracking needs a SEEM model (or a tracker)", "feature_unavailable")
        if prompts.reference is not None:
            raise ApiError(422, "video prompts take no reference image", "invalid_prompt")
        if video is not None and frames:
            raise ApiError(422, "give either 'frames' (images) or one 'video', not both", "invalid_request")
        c = self.cfg
        if video is not None:
            decoded = decode_video(video, c.max_video_frames, c.max_pixels, c.max_video_decoded_bytes)
        else:
            decoded = decode_frames(frames, c.max_video_frames, c.max_pixels, c.max_video_decoded_bytes)
        deadline.check("the video upload")
        ps: PromptSet = to_prompt_set(prompts, decoded[0].shape[:2])
        try:
            ps.validate(decoded[0].shape[:2])
        except PromptError as e:
            raise ApiError(422, str(e), "invalid_prompt") from None
        job = self.jobs.submit(decoded, ps)
        return job.public()

    def shutdown(self) -> None:
        if self.jobs is not None:
            self.jobs.shutdown()
        self.store.clear()


def b64_png_rgb(rgb: np.ndarray) -> str:
    import base64

    return base64.b64encode(encode_png(rgb)).decode("ascii")
