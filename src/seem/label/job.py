"""What a ``seem label`` run does: the task, the model, the settings, and the fingerprint that ties an output folder
to them.

A ``LabelJob`` is validated completely when it is made (``make_job``), without loading the model: unknown tasks,
options that do not apply to the task or to the model's family, bad numbers and missing models are refused with a
``LabelJobError`` before any image is touched. The job's ``fingerprint`` is a sha256 over the model's bytes and
every setting that changes the output files; an output folder written with another fingerprint is refused (see
``seem.label.writers``). Engine choices (local / Ray, workers, batch size, threads, device) are not part of it:
both engines write the same files, so a run may be resumed with the other engine.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seem.io import DEFAULT_MAX_PIXELS

__all__ = [
    "FORMAT",
    "TASKS",
    "LabelJob",
    "LabelJobError",
    "LabelSettings",
    "ModelRef",
    "categories_for",
    "make_job",
    "model_fingerprint",
    "resolve_model_ref",
]

FORMAT = "seem-label-1"
"""Version tag of the output folder layout (part of the fingerprint)."""

TASKS: tuple[str, ...] = ("panoptic", "everything", "text", "granularity")
"""``panoptic``: SEEM panoptic segmentation with ``classes`` (default: the 133 COCO-panoptic classes).
``everything``: every mask of a grid of clicks (``seem.automatic.AutomaticMaskGenerator``; SEEM or Semantic-SAM,
one de-duplicated set over all requested levels). ``text``: SEEM referring segmentation, one mask per phrase.
``granularity``: Semantic-SAM, one complete set of masks **per level** (the generator run at each level on its own,
so every level is a full segmentation at that granularity)."""

FAMILY_SHORT_SIDE = {"seem": 512, "semantic_sam": 640}
"""Default short side of the model input per family (the official resize rules)."""


class LabelJobError(ValueError):
    """A labeling job that cannot run as asked (reported before any work starts)."""


# ----------------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelRef:
    """A model that every worker can load by name.

    Attributes:
        spec: what ``seem.load`` / ``seem.predictor.resolve_model`` accept: a directory in seem's format, an official
            checkpoint file, or a registered name; None for the installation's default model.
        config: official YAML for an official SEEM checkpoint whose architecture is not inferable (or None).
        family: ``"seem"`` or ``"semantic_sam"``.
        fingerprint: sha256 of the model's files (config and weights).
    """

    spec: str | None
    config: str | None
    family: str
    fingerprint: str


def _sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def model_fingerprint(path: Path, config: Path | None = None) -> str:
    """sha256 of a model: its directory's ``config.json`` + ``model.safetensors``, or an official file (+ YAML)."""
    from seem.models.checkpoints.native import CONFIG_FILE, WEIGHTS_FILE

    if path.is_dir():
        return _sha256_files([path / CONFIG_FILE, path / WEIGHTS_FILE])
    return _sha256_files([path] + ([config] if config is not None else []))


def _family_of_file(path: Path) -> str:
    """Family of an official checkpoint file, by the same rule as ``seem.load`` (Semantic-SAM keys start with
    ``model.``), reading the file memory-mapped (no copy of the weights)."""
    import torch

    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LabelJobError(f"--model {path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    inner = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if not isinstance(inner, dict):
        raise LabelJobError(f"--model {path}: not a checkpoint of a SEEM or Semantic-SAM model")
    return "semantic_sam" if any(str(k).startswith("model.") for k in inner) else "seem"


def resolve_model_ref(model: str | Path | None, config: str | Path | None = None) -> ModelRef:
    """Find out what ``model`` names (family, files) and fingerprint it, without building the model.

    Raises:
        LabelJobError: nothing to load, a missing path, a directory that is not a seem model, an unreadable file.
    """
    from seem.hub import REGISTRY, fetch
    from seem.loading import default_model_dir
    from seem.models.checkpoints.common import CheckpointError
    from seem.models.checkpoints.native import CONFIG_FILE, load_native

    cfg = Path(config).expanduser() if config is not None else None
    if cfg is not None and not cfg.is_file():
        raise LabelJobError(f"--config {config}: file not found")
    if model is None or (isinstance(model, str) and not model.strip()):
        d = default_model_dir()
        if d is None:
            raise LabelJobError(
                "no model given: pass --model (an official checkpoint, a directory written by `seem convert` or a "
                f"registered name: {', '.join(sorted(REGISTRY))}); this installation has no default model"
            )
        model = d
    if isinstance(model, str) and model in REGISTRY:
        entry = REGISTRY[model]
        try:
            path = fetch(model)
        except Exception as e:
            raise LabelJobError(f"--model {model}: cannot fetch the registered model: {e}") from e
        record = path.with_name(path.name + ".sha256")
        digest = record.read_text().strip() if record.is_file() else model_fingerprint(path)
        return ModelRef(spec=model, config=None, family=entry.family, fingerprint=digest)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise LabelJobError(f"--model {path}: a directory but not a seem model (no {CONFIG_FILE})")
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LabelJobError(f"--model {path}: unreadable {CONFIG_FILE}: {e}") from e
        family = str(meta.get("family", ""))
        if family not in FAMILY_SHORT_SIDE:
            try:  # let the loader say what is wrong
                load_native(path)
            except CheckpointError as e:
                raise LabelJobError(f"--model {path}: {e}") from e
            raise LabelJobError(f"--model {path}: unknown model family {family!r}")
        if cfg is not None:
            raise LabelJobError("--config applies to official checkpoint files only, not to a seem model directory")
        return ModelRef(str(path.resolve()), None, family, model_fingerprint(path))
    if path.is_file():
        family = _family_of_file(path)
        if cfg is not None and family != "seem":
            raise LabelJobError("--config applies to official SEEM checkpoints only")
        return ModelRef(
            str(path.resolve()),
            str(cfg.resolve()) if cfg is not None else None,
            family,
            model_fingerprint(path, cfg),
        )
    hint = f"; registered names: {', '.join(sorted(REGISTRY))}" if not path.suffix else ""
    raise LabelJobError(f"--model {model}: not found (not a file, a directory or a registered name{hint})")


# -------------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LabelSettings:
    """Everything that changes the output files (all of it is in the fingerprint).

    Attributes:
        task: one of ``TASKS``.
        classes: vocabulary: panoptic classes (default COCO-panoptic); ``everything`` / ``granularity``: labels for
            the masks (SEEM; Semantic-SAM models with trained class heads).
        stuff: which ``classes`` are stuff (panoptic).
        phrases: referring phrases (``text``), one mask each.
        levels: Semantic-SAM granularity levels 1..6 (``everything``: default all six, one merged set;
            ``granularity``: default all six, one set per level).
        size: short side of the model input in pixels (None: the family's official value, 512 SEEM / 640 SSAM).
        points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, box_nms_thresh,
        min_mask_region_area, crop_n_layers: the generator's settings (``everything`` / ``granularity``).
        threshold, overlap: panoptic object-score and overlap thresholds (None: the model config's).
        overlays: also write an overlay thumbnail per image.
        thumb_size: long side of the overlay thumbnails in pixels.
        max_pixels: images larger than this are recorded as errors (``seem.io.read_image``).
    """

    task: str
    classes: tuple[str, ...] | None = None
    stuff: tuple[str, ...] | None = None
    phrases: tuple[str, ...] | None = None
    levels: tuple[int, ...] | None = None
    size: int | None = None
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    crop_n_layers: int = 0
    threshold: float | None = None
    overlap: float | None = None
    overlays: bool = False
    thumb_size: int = 256
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSettings:
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


@dataclass(frozen=True)
class LabelJob:
    """A validated labeling job (see ``make_job``).

    Attributes:
        source: what to label (see ``seem.label.sources.list_source``).
        out: the output folder.
        model: the model every worker loads.
        settings: what changes the outputs.
        image_root: folder the ``file_name`` entries of a COCO JSON source are relative to (None: the JSON's folder).
        device: torch device of the workers.
        threads: torch threads per worker (None: the engine's default).
    """

    source: str
    out: Path
    model: ModelRef
    settings: LabelSettings
    image_root: str | None = None
    device: str = "cpu"
    threads: int | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 over the layout version, the model's fingerprint and the settings."""
        doc = {"format": FORMAT, "model": self.model.fingerprint, "settings": self.settings.to_dict()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()

    def worker_spec(self) -> dict[str, Any]:
        """Plain, picklable description a worker builds its predictor from (model, settings, device, threads)."""
        return {
            "model": asdict(self.model),
            "settings": self.settings.to_dict(),
            "device": self.device,
            "threads": self.threads,
            "fingerprint": self.fingerprint,
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the manifest."""
        return {
            "fingerprint": self.fingerprint,
            "model": asdict(self.model),
            "settings": self.settings.to_dict(),
        }


# ------------------------------------------------------------------------------------------------------ validation


def _names(values: Sequence[str] | str | None, what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    out = tuple(str(v).strip() for v in values if str(v).strip())
    if not out:
        raise LabelJobError(f"{what}: no name given")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise LabelJobError(f"{what}: names given twice: {dup}")
    return out


def _number(name: str, v: Any, lo: float | None = None, hi: float | None = None, integer: bool = False) -> Any:
    ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok_type or (not integer and math.isnan(float(v))):
        raise LabelJobError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise LabelJobError(f"{name} must lie in {rng}, got {v!r}")
    return v


def make_job(
    source: str | Path,
    out: str | Path,
    *,
    task: str = "everything",
    model: str | Path | None = None,
    config: str | Path | None = None,
    classes: Sequence[str] | str | None = None,
    stuff: Sequence[str] | str | None = None,
    phrases: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    size: int | None = None,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    min_mask_region_area: int = 0,
    crop_n_layers: int = 0,
    threshold: float | None = None,
    overlap: float | None = None,
    overlays: bool = False,
    thumb_size: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    image_root: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> LabelJob:
    """Validate a labeling job and fingerprint its model (the model is not built).

    Raises:
        LabelJobError: an unknown task, options that do not apply to the task or the model family (e.g. phrases for
            panoptic, levels for a SEEM model, granularity with a SEEM model), numbers out of range, a missing model.
    """
    if not isinstance(task, str) or task not in TASKS:
        raise LabelJobError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    cls_names = _names(classes, "--classes")
    stuff_names = _names(stuff, "--stuff")
    if isinstance(phrases, str):
        raise LabelJobError("--phrases must be a list of phrases, not one string")
    phr = _names(list(phrases), "--phrases") if phrases is not None else None
    if phr is not None and task != "text":
        raise LabelJobError(f"--phrases apply to --task text only (this is --task {task})")
    if task == "text" and phr is None:
        raise LabelJobError("--task text needs --phrases (one mask per phrase, e.g. --phrases 'a dog' 'the sky')")
    if task == "text" and cls_names is not None:
        raise LabelJobError("--classes do not apply to --task text: each mask is labelled with its phrase")
    if stuff_names is not None:
        if task != "panoptic":
            raise LabelJobError("--stuff applies to --task panoptic only")
        if cls_names is None:
            raise LabelJobError("--stuff needs --classes")
        unknown = sorted(set(stuff_names) - set(cls_names))
        if unknown:
            raise LabelJobError(f"--stuff names {unknown} that are not in --classes")
    if cls_names is not None and "background" in cls_names:
        raise LabelJobError("--classes must not contain 'background' (it is always the no-object column)")
    lv: tuple[int, ...] | None = None
    if levels is not None:
        if task not in ("everything", "granularity"):
            raise LabelJobError(f"--levels apply to --task everything / granularity only (this is --task {task})")
        from seem.granularity import check_levels

        try:
            lv = check_levels(list(levels))
        except (TypeError, ValueError) as e:
            raise LabelJobError(f"--levels: {e}") from e
    if size is not None:
        _number("--size", size, 32, None, integer=True)
    _number("--points-per-side", points_per_side, 1, 1024, integer=True)
    _number("--points-per-batch", points_per_batch, 1, None, integer=True)
    for name, v in (
        ("--pred-iou-thresh", pred_iou_thresh),
        ("--stability-score-thresh", stability_score_thresh),
        ("--box-nms-thresh", box_nms_thresh),
    ):
        _number(name, v)
    _number("--min-mask-region-area", min_mask_region_area, 0, None, integer=True)
    _number("--crop-n-layers", crop_n_layers, 0, 4, integer=True)
    if threshold is not None:
        _number("--threshold", threshold, 0.0, 1.0)
    if overlap is not None:
        _number("--overlap", overlap, 0.0, 1.0)
    if (threshold is not None or overlap is not None) and task != "panoptic":
        raise LabelJobError("--threshold / --overlap apply to --task panoptic only")
    _number("--thumb-size", thumb_size, 16, 4096, integer=True)
    if max_pixels is not None:
        _number("--max-pixels", max_pixels, 1, None, integer=True)
    if threads is not None:
        _number("--threads", threads, 1, 1024, integer=True)
    ref = resolve_model_ref(model, config)
    if task in ("panoptic", "text") and ref.family != "seem":
        raise LabelJobError(f"--task {task} needs a SEEM model; {ref.spec or 'the default model'} is Semantic-SAM")
    if task == "granularity" and ref.family != "semantic_sam":
        raise LabelJobError(
            "--task granularity needs a Semantic-SAM model (granularity levels); "
            f"{ref.spec or 'the default model'} is a SEEM model (use --task everything)"
        )
    if task == "everything" and ref.family == "seem" and lv is not None:
        raise LabelJobError("--levels apply to Semantic-SAM models only: a SEEM model answers each click with one mask")
    if task in ("everything", "granularity") and ref.family == "semantic_sam" and lv is None:
        from seem.granularity import ALL_LEVELS

        lv = ALL_LEVELS
    settings = LabelSettings(
        task=task,
        classes=cls_names,
        stuff=stuff_names,
        phrases=phr,
        levels=lv,
        size=size,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=float(pred_iou_thresh),
        stability_score_thresh=float(stability_score_thresh),
        box_nms_thresh=float(box_nms_thresh),
        min_mask_region_area=min_mask_region_area,
        crop_n_layers=crop_n_layers,
        threshold=None if threshold is None else float(threshold),
        overlap=None if overlap is None else float(overlap),
        overlays=bool(overlays),
        thumb_size=thumb_size,
        max_pixels=max_pixels,
    )
    return LabelJob(
        source=str(source),
        out=Path(out).expanduser(),
        model=ref,
        settings=settings,
        image_root=None if image_root is None else str(image_root),
        device=device or "cpu",
        threads=threads,
    )


def categories_for(settings: LabelSettings, labels_seen: Sequence[str] = ()) -> list[dict[str, Any]]:
    """COCO categories of the merged files.

    - ``panoptic``: the vocabulary (COCO-panoptic ids and ``isthing`` for the default / the COCO names; otherwise
      ids ``1..K`` in ``classes`` order, stuff as given), as ``seem.predictor.Segmenter`` numbers them;
    - ``text``: one category per phrase, ids ``1..P``;
    - ``everything`` / ``granularity``: id 1 ``"object"`` for masks without a label, then the classes (``classes``
      order, else the labels the model gave, ``labels_seen``, in order of first appearance) from id 2.
    """
    from seem.vocabulary import coco_panoptic_categories

    if settings.task == "panoptic":
        coco = coco_panoptic_categories()
        names = settings.classes
        stuff = set(settings.stuff or ())
        if names is None or names == tuple(c["name"] for c in coco):
            return [
                {
                    "id": c["id"],
                    "name": c["name"],
                    "isthing": int(bool(c["isthing"]) if settings.stuff is None else c["name"] not in stuff),
                }
                for c in coco
            ]
        return [{"id": i + 1, "name": n, "isthing": int(n not in stuff)} for i, n in enumerate(names)]
    if settings.task == "text":
        return [{"id": i + 1, "name": p} for i, p in enumerate(settings.phrases or ())]
    labels = list(settings.classes) if settings.classes is not None else list(dict.fromkeys(labels_seen))
    return [{"id": 1, "name": "object"}] + [{"id": i + 2, "name": n} for i, n in enumerate(labels)]
