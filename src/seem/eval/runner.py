"""Evaluation loops that drive any model implementing ``seem.eval.protocol`` over the dataset readers.

- ``evaluate_interactive``: click after click (RITM or SEEM protocol, ``seem.eval.clickers``), the previous
  round's low-resolution logits passed back as ``mask_input``, IoU per click, NoC / failures / mIoU@k /
  IoU-vs-clicks (``seem.eval.metrics``), per-click timing of the model and of the evaluation's own work.
- ``evaluate_prompts``: one simulated prompt (point, box, stroke, scribble, polygon; ``seem.eval.simulate``),
  one mask, its IoU ("1-IoU" per prompt type).
- ``evaluate_panoptic`` / ``evaluate_referring`` / ``evaluate_video`` / ``evaluate_granularity``: thin loops over
  the readers and metrics that need an optional predictor method; without it they return a ``Skipped``.

Conventions: images uint8 ``[H, W, 3]`` RGB, masks bool ``[H, W]``, clicks ``(y, x)`` in results and
``(x, y)`` pixel points when sent to the predictor (``Click.xy``), IoU with void pixels left out.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seem.eval.clickers import Click, Clicker, RITMClicker, SEEMClicker
from seem.eval.datasets import GranularityItem, MaskItem, granularity_items, mask_items, read_image
from seem.eval.metrics import (
    NocResult,
    PanopticQuality,
    PQResult,
    all_granularity_iou,
    as_mask,
    clicks_to_reach,
    intersection_union,
    iou_curve,
    jf_sequence,
    mask_iou,
    miou_at_k,
    noc_metrics,
    pad_ious,
    point_max_oracle,
    single_prompt_miou,
)
from seem.eval.protocol import missing_method_message, supports
from seem.eval.simulate import PROMPT_KINDS, SimulatedPrompt, simulate_prompt

__all__ = [
    "PROTOCOLS",
    "GranularityResult",
    "InteractiveItemResult",
    "InteractiveResult",
    "PanopticResult",
    "PromptItemResult",
    "PromptResult",
    "ReferringResult",
    "Skipped",
    "VideoResult",
    "WorstCase",
    "evaluate_granularity",
    "evaluate_interactive",
    "evaluate_panoptic",
    "evaluate_prompts",
    "evaluate_referring",
    "evaluate_video",
    "make_clicker",
    "select_output",
]

PROTOCOLS = ("ritm", "seem")

SEEM_STOP_IOU = 0.9
"""SEEM's ``evaluate_interactive`` stops once IoU > 0.9 (strictly) and pads the list to ``max_clicks``."""


# ----------------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A task the predictor cannot run (an optional protocol method is missing)."""

    task: str
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "skipped": True, "reason": self.reason}


def _progress(it: Iterable[Any], enabled: bool, desc: str, total: int | None) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, unit="item", dynamic_ncols=True)


def _limited(it: Iterable[Any], limit: int | None) -> Iterator[Any]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    for i, x in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield x


def _item_total(dataset: Any, limit: int | None) -> int | None:
    """Progress-bar total for ``mask_items``: known only where one sample is one object."""
    from seem.eval.readers import BinaryMaskDataset

    return _total(dataset, limit) if isinstance(dataset, (BinaryMaskDataset, list)) else limit


def _total(dataset: Any, limit: int | None) -> int | None:
    try:
        n = len(dataset)
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


def _objects(
    dataset: Any, min_area: int, skipped: list[str]
) -> Iterator[tuple[MaskItem, np.ndarray, np.ndarray | None]]:
    """``(item, gt, void)`` of every object with at least ``min_area`` GT pixels outside void; the ids of the
    others are appended to ``skipped``."""
    for item in mask_items(dataset, min_area=0):
        gt, void = item.masks()
        area = int((gt & ~void).sum()) if void is not None else int(gt.sum())
        if area < min_area:
            skipped.append(item.id)
            continue
        yield item, gt, void


class _ImageCache:
    """Calls ``predictor.set_image`` only when the image changes (items of one image share an encoding)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.key: str | None = None
        self.shape: tuple[int, int] | None = None
        self.times: list[float] = []

    def set(self, key: str, load: Callable[[], np.ndarray]) -> tuple[int, int]:
        if key != self.key:
            image = load()
            t0 = time.perf_counter()
            self.predictor.set_image(image)
            self.times.append(time.perf_counter() - t0)
            self.key = key
            self.shape = (int(image.shape[0]), int(image.shape[1]))
        assert self.shape is not None
        return self.shape


def select_output(out: Any, hw: tuple[int, int], who: str = "predict") -> tuple[np.ndarray, np.ndarray, float]:
    """Validate a SAM-style ``(masks [C, H, W], scores [C], low_res_logits [C, h, w])`` triple and pick the
    candidate with the highest score (the first on ties; the only one when ``C == 1``).

    Returns ``(mask bool [H, W], logits float32 [1, h, w] to pass back as mask_input, score)``.

    Raises:
        TypeError / ValueError: naming what is wrong with the predictor's output.
    """
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"{who}() must return (masks, scores, low_res_logits), got {type(out).__name__}")
    masks_raw, scores_raw, logits_raw = out
    masks = as_mask(masks_raw, f"{who}() masks", ndim=3)
    if masks.shape[1:] != tuple(hw):
        raise ValueError(f"{who}() masks are {masks.shape[1:]} but the image is {tuple(hw)}; return original size")
    c = masks.shape[0]
    if c == 0:
        raise ValueError(f"{who}() returned no mask")
    scores = np.asarray(_np(scores_raw), np.float64).reshape(-1)
    if scores.size != c:
        raise ValueError(f"{who}() returned {c} masks but {scores.size} scores")
    logits = np.asarray(_np(logits_raw), np.float32)
    if logits.ndim != 3 or logits.shape[0] != c:
        raise ValueError(f"{who}() low_res_logits must be [C={c}, h, w], got shape {logits.shape}")
    i = int(np.argmax(scores)) if c > 1 else 0
    return masks[i], logits[i : i + 1], float(scores[i])


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        return a.detach().cpu().float().numpy() if a.dtype.is_floating_point else a.detach().cpu().numpy()
    return np.asarray(a)


def _nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else math.nan


def _ms_stats(seconds: Sequence[float]) -> dict[str, float]:
    a = np.asarray(seconds, np.float64) * 1000.0
    if a.size == 0:
        return {"mean": math.nan, "median": math.nan, "p95": math.nan, "n": 0}
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "n": int(a.size),
    }


def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


# ----------------------------------------------------------------------------------------------------------------
# interactive
# ----------------------------------------------------------------------------------------------------------------


def make_clicker(protocol: str) -> Clicker:
    """The clicker of a protocol: ``"ritm"`` → ``RITMClicker()``, ``"seem"`` → ``SEEMClicker()`` (mode 'best')."""
    if protocol == "ritm":
        return RITMClicker()
    if protocol == "seem":
        return SEEMClicker()
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


@dataclass
class InteractiveItemResult:
    """One object of an interactive run.

    Attributes:
        id: the item id; image: its image path (or key).
        ious: IoU after each model call, click 1 first (before SEEM's padding; RITM without a stop: max_clicks).
        clicks: the clicks placed, ``(y, x, is_positive)``.
        noc: threshold → clicks needed (``max_clicks`` when never reached).
        model_calls: how many times ``predict`` ran.
        model_seconds: time inside ``predict``; clicker_seconds / metric_seconds: the evaluation's own work.
    """

    id: str
    image: str
    ious: list[float]
    clicks: list[tuple[int, int, bool]]
    noc: dict[float, int]
    model_calls: int
    model_seconds: float
    clicker_seconds: float
    metric_seconds: float

    @property
    def final_iou(self) -> float:
        return self.ious[-1] if self.ious else math.nan


@dataclass
class WorstCase:
    """What the overlay of a bad item needs: its image, masks, the clicks and the IoUs."""

    id: str
    image_key: str
    load_image: Callable[[], np.ndarray] = field(repr=False)
    gt: np.ndarray = field(repr=False)
    void: np.ndarray | None = field(repr=False)
    pred: np.ndarray = field(repr=False)
    clicks: list[tuple[int, int, bool]]
    ious: list[float]
    score: tuple[float, ...]
    label: str = ""


class _WorstKeeper:
    """Keeps the ``n`` items with the largest ``score`` tuples (masks included), for overlays."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cases: list[WorstCase] = []

    def wants(self, score: tuple[float, ...]) -> bool:
        """True when an item with this score would be kept (build its ``WorstCase`` only then)."""
        return self.n > 0 and (len(self.cases) < self.n or score > self.cases[-1].score)

    def add(self, case: WorstCase) -> None:
        self.cases.append(case)
        self.cases.sort(key=lambda c: c.score, reverse=True)
        del self.cases[self.n :]


@dataclass
class InteractiveResult:
    """Result of ``evaluate_interactive``.

    Attributes:
        protocol, max_clicks, thresholds, stop_iou: the settings.
        items: per-object results.
        noc: threshold → ``NocResult`` (NoC, over-max, failures, per-sample).
        miou_at_k: k → mean IoU at click k; curve: mean IoU after each click (lists padded with their last
            value to ``max_clicks``, SEEM's rule; RITM runs all clicks unless ``stop_iou`` is set).
        failures: threshold → ids of the objects that never reach it.
        timing: milliseconds per click of the model (``model_ms``), of the clicker, of the IoU, and their
            sum ``overhead_ms`` (clicker + metric), plus ``set_image_ms`` per image.
        worst: the worst items (highest NoC at the largest threshold, then lowest final IoU), with masks.
    """

    protocol: str
    max_clicks: int
    thresholds: tuple[float, ...]
    stop_iou: float | None
    items: list[InteractiveItemResult]
    noc: dict[float, NocResult]
    miou_at_k: dict[int, float]
    curve: np.ndarray
    failures: dict[float, list[str]]
    timing: dict[str, Any]
    worst: list[WorstCase] = field(default_factory=list, repr=False)
    skipped_small: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Every number as JSON-able Python values (NaN → None)."""
        return {
            "task": "interactive",
            "protocol": self.protocol,
            "max_clicks": self.max_clicks,
            "thresholds": list(self.thresholds),
            "stop_iou": self.stop_iou,
            "n_items": len(self.items),
            "skipped_small_objects": self.skipped_small,
            "noc": {
                f"{t:g}": {
                    "noc": r.noc,
                    "over_max": r.over_max,
                    "failures": r.failures,
                    "failure_ids": self.failures[t],
                }
                for t, r in self.noc.items()
            },
            "miou_at_k": {str(k): _json_float(v) for k, v in self.miou_at_k.items()},
            "iou_curve": [_json_float(v) for v in self.curve.tolist()],
            "timing": self.timing,
            "items": [
                {
                    "id": it.id,
                    "image": it.image,
                    "ious": [_json_float(v) for v in it.ious],
                    "clicks_yx_positive": [[y, x, p] for y, x, p in it.clicks],
                    "noc": {f"{t:g}": n for t, n in it.noc.items()},
                    "model_calls": it.model_calls,
                }
                for it in self.items
            ],
        }


def evaluate_interactive(
    predictor: Any,
    dataset: Any,
    protocol: str = "ritm",
    max_clicks: int = 20,
    thresholds: Sequence[float] = (0.85, 0.9),
    *,
    stop_iou: float | None = None,
    limit: int | None = None,
    min_area: int = 1,
    ks: Sequence[int] = (1, 2, 3, 5, 10, 20),
    keep_worst: int = 5,
    progress: bool = False,
    clicker_factory: Callable[[], Clicker] | None = None,
) -> InteractiveResult:
    """Run the interactive protocol on every object of ``dataset`` and score it.

    Per object: ``set_image`` (once per image), then up to ``max_clicks`` rounds of: the clicker places the
    next click from the GT and the current prediction (an empty mask before the first click); ``predict`` gets
    all clicks so far as pixel ``(x, y)`` points with labels 1/0, ``mask_input`` = the low-res logits it returned
    in the previous round (None in round 1) and ``multimask_output=False``; the highest-scoring mask is the
    prediction; its IoU with the GT (void left out) is recorded.

    Protocols:
        ``"ritm"``: ``RITMClicker``; by default all ``max_clicks`` rounds run (RITM's IoU-analysis mode; NoC is
        the same as with RITM's default stop at the target IoU). ``stop_iou`` = t stops once IoU ≥ t.
        ``"seem"``: ``SEEMClicker`` (first click from the GT alone, no click at IoU ≥ 0.925); stops once
        IoU > ``stop_iou`` (default 0.9, SEEM's loop) or when the clicker places no click, and the list is then
        padded with its last value to ``max_clicks``, as SEEM's ``evaluate_interactive`` does.

    Deviation from SEEM's pipeline: SEEM's mapper resizes image and GT to the test size (short side 800)
    before simulating clicks; here clicks are simulated at the original size for every model (the IoU is at the
    original size in both).

    Args:
        predictor: implements ``seem.eval.protocol.InteractivePredictor``.
        dataset: a reader or an iterable of ``MaskItem`` (see ``seem.eval.datasets.mask_items``).
        thresholds: IoU thresholds of NoC / failures.
        limit: evaluate only the first ``limit`` objects.
        min_area: skip objects with fewer GT pixels.
        ks: clicks at which mIoU@k is reported.
        keep_worst: how many worst objects to keep with their masks (for overlays).
        progress: show a tqdm progress bar.
        clicker_factory: overrides the protocol's clicker (e.g. ``lambda: SEEMClicker("best_random")``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if not thresholds:
        raise ValueError("give at least one IoU threshold")
    if not supports(predictor, "predict") or not supports(predictor, "set_image"):
        raise TypeError(f"{type(predictor).__name__} must implement set_image() and predict() (seem.eval.protocol)")
    thr = tuple(float(t) for t in thresholds)
    if protocol == "seem" and stop_iou is None:
        stop_iou = SEEM_STOP_IOU
    cache = _ImageCache(predictor)
    items: list[InteractiveItemResult] = []
    worst = _WorstKeeper(keep_worst)
    model_s: list[float] = []
    clicker_s: list[float] = []
    metric_s: list[float] = []
    t_start = time.perf_counter()
    skipped: list[str] = []
    src = _limited(_objects(dataset, min_area, skipped), limit)
    for item, gt, void in _progress(src, progress, f"interactive ({protocol})", _item_total(dataset, limit)):
        hw = cache.set(item.image_key, item.image)
        if gt.shape != hw:
            raise ValueError(f"{item.id}: GT is {gt.shape} but the image is {hw}")
        clicker = clicker_factory() if clicker_factory is not None else make_clicker(protocol)
        res, pred = _run_object(predictor, item, gt, void, clicker, protocol, max_clicks, stop_iou, thr, hw)
        model_s.extend(res.pop_times("model"))
        clicker_s.extend(res.pop_times("clicker"))
        metric_s.extend(res.pop_times("metric"))
        r = res.result
        r.noc = {t: clicks_to_reach(r.ious, t, max_clicks) for t in thr}  # padding does not change it
        items.append(r)
        top = max(thr)
        score = (float(r.noc[top]), -(r.final_iou if math.isfinite(r.final_iou) else -1.0))
        if worst.wants(score):
            label = f"NoC@{top:g}={r.noc[top]}  final IoU {r.final_iou:.3f}"
            worst.add(WorstCase(r.id, item.image_key, item.image, gt, void, pred, r.clicks, r.ious, score, label))
    if not items:
        raise ValueError("the dataset gave no objects to evaluate")
    lists = [pad_ious(np.asarray(it.ious, np.float64), max_clicks) if protocol == "seem" else it.ious for it in items]
    noc = noc_metrics(lists, thr, max_clicks)
    for i, it in enumerate(items):
        it.noc = {t: int(noc[t].per_sample[i]) for t in thr}
    failures = {t: [it.id for it in items if not np.any(np.asarray(it.ious) >= t)] for t in thr}
    curve = iou_curve(lists, max_clicks=max_clicks, mode="pad")
    overhead = [c + m for c, m in zip(clicker_s, metric_s, strict=True)]
    timing = {
        "model_ms_per_click": _ms_stats(model_s),
        "clicker_ms_per_click": _ms_stats(clicker_s),
        "metric_ms_per_click": _ms_stats(metric_s),
        "overhead_ms_per_click": _ms_stats(overhead),
        "set_image_ms": _ms_stats(cache.times),
        "set_image_calls": len(cache.times),
        "total_seconds": time.perf_counter() - t_start,
    }
    return InteractiveResult(
        protocol=protocol,
        max_clicks=max_clicks,
        thresholds=thr,
        stop_iou=stop_iou,
        items=items,
        noc=noc,
        miou_at_k=miou_at_k(lists, ks=ks, max_clicks=max_clicks, mode="pad"),
        curve=curve,
        failures=failures,
        timing=timing,
        worst=worst.cases,
        skipped_small=skipped,
    )


@dataclass
class _ObjectRun:
    result: InteractiveItemResult
    times: dict[str, list[float]]

    def pop_times(self, key: str) -> list[float]:
        return self.times.pop(key)


def _run_object(
    predictor: Any,
    item: MaskItem,
    gt: np.ndarray,
    void: np.ndarray | None,
    clicker: Clicker,
    protocol: str,
    max_clicks: int,
    stop_iou: float | None,
    thr: tuple[float, ...],
    hw: tuple[int, int],
) -> tuple[_ObjectRun, np.ndarray]:
    pred = np.zeros(hw, bool)
    logits: np.ndarray | None = None
    ious: list[float] = []
    t_model: list[float] = []
    t_click: list[float] = []
    t_metric: list[float] = []
    for _ in range(max_clicks):
        t0 = time.perf_counter()
        click = clicker.next_click(gt, pred, void)
        t1 = time.perf_counter()
        if click is None:  # SEEM: IoU >= 0.925, no click; the list is padded
            t_click.append(t1 - t0)
            t_metric.append(0.0)
            break
        placed: list[Click] = clicker.clicks
        coords = np.array([c.xy for c in placed], np.float32).reshape(-1, 2)
        labels = np.array([1 if c.is_positive else 0 for c in placed], np.int64)
        out = predictor.predict(
            point_coords=coords, point_labels=labels, box=None, mask_input=logits, multimask_output=False
        )
        t2 = time.perf_counter()
        pred, logits, _ = select_output(out, hw)
        iou = float(mask_iou(gt, pred, void))
        t3 = time.perf_counter()
        ious.append(iou)
        t_click.append(t1 - t0)
        t_model.append(t2 - t1)
        t_metric.append(t3 - t2)
        if stop_iou is not None and (iou > stop_iou if protocol == "seem" else iou >= stop_iou):
            break
    r = InteractiveItemResult(
        id=item.id,
        image=str(item.image_path) if item.image_path is not None else item.image_key,
        ious=ious,
        clicks=[(c.y, c.x, c.is_positive) for c in clicker.clicks],
        noc={},
        model_calls=len(ious),
        model_seconds=float(sum(t_model)),
        clicker_seconds=float(sum(t_click)),
        metric_seconds=float(sum(t_metric)),
    )
    return _ObjectRun(r, {"model": t_model, "clicker": t_click, "metric": t_metric}), pred


# ----------------------------------------------------------------------------------------------------------------
# single prompts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PromptItemResult:
    """One object × prompt type: ``iou`` (NaN when the predictor does not support the type) and the prompt."""

    id: str
    image: str
    kind: str
    iou: float
    supported: bool
    prompt: SimulatedPrompt | None = field(default=None, repr=False)


@dataclass
class PromptResult:
    """Result of ``evaluate_prompts``: per-type mean IoU (``miou``, with ``"all"``), the unsupported types
    and why, per-object results, and the worst (lowest IoU) objects per type with their masks."""

    kinds: tuple[str, ...]
    seed: int
    miou: dict[str, float]
    unsupported: dict[str, str]
    items: list[PromptItemResult]
    timing: dict[str, Any]
    worst: list[WorstCase] = field(default_factory=list, repr=False)
    skipped_small: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "task": "prompts",
            "kinds": list(self.kinds),
            "seed": self.seed,
            "n_items": len({it.id for it in self.items}),
            "skipped_small_objects": self.skipped_small,
            "miou": {k: _json_float(v) for k, v in self.miou.items()},
            "unsupported": self.unsupported,
            "timing": self.timing,
            "items": [
                {"id": it.id, "image": it.image, "kind": it.kind, "iou": _json_float(it.iou), "supported": it.supported}
                for it in self.items
            ],
        }


def evaluate_prompts(
    predictor: Any,
    dataset: Any,
    kinds: Sequence[str] = PROMPT_KINDS,
    *,
    seed: int = 0,
    limit: int | None = None,
    min_area: int = 1,
    multimask_output: bool = False,
    prompt_kwargs: dict[str, dict[str, Any]] | None = None,
    keep_worst: int = 3,
    progress: bool = False,
) -> PromptResult:
    """Single-prompt "1-IoU" per prompt type: one simulated prompt per object and type, one mask, its IoU.

    How prompts reach the predictor: ``point`` → ``predict(point_coords=[[x, y]], point_labels=[1])``; ``box``
    → ``predict(box=[x0, y0, x1, y1])`` (tight box, exclusive right/bottom edge); ``stroke`` / ``scribble`` /
    ``polygon`` → ``predict_prompt(prompt)`` (the ``SimulatedPrompt``), reported as unsupported when the
    predictor has no such method. The prompt of object ``i`` is drawn with seed ``seed + i``
    (``simulate_prompt``), so runs are reproducible; ``prompt_kwargs[kind]`` are passed to the simulator.
    With ``multimask_output`` the highest-scoring candidate is scored.
    """
    for k in kinds:
        if k not in PROMPT_KINDS:
            raise ValueError(f"prompt kinds must be among {PROMPT_KINDS}, got {k!r}")
    if not kinds:
        raise ValueError("give at least one prompt kind")
    kinds = tuple(kinds)
    prompt_kwargs = prompt_kwargs or {}
    unsupported: dict[str, str] = {}
    has_free = supports(predictor, "predict_prompt")
    for k in kinds:
        if k in ("stroke", "scribble", "polygon") and not has_free:
            unsupported[k] = missing_method_message(predictor, "predict_prompt", f"{k}-prompt")
    cache = _ImageCache(predictor)
    items: list[PromptItemResult] = []
    worst = {k: _WorstKeeper(keep_worst) for k in kinds}
    model_s: list[float] = []
    t_start = time.perf_counter()
    skipped: list[str] = []
    src = _limited(_objects(dataset, min_area, skipped), limit)
    for idx, (item, gt, void) in enumerate(_progress(src, progress, "prompts", _item_total(dataset, limit))):
        hw = cache.set(item.image_key, item.image)
        if gt.shape != hw:
            raise ValueError(f"{item.id}: GT is {gt.shape} but the image is {hw}")
        for kind in kinds:
            image_ref = str(item.image_path) if item.image_path is not None else item.image_key
            if kind in unsupported:
                items.append(PromptItemResult(item.id, image_ref, kind, math.nan, False))
                continue
            prompt = simulate_prompt(kind, gt, seed=seed + idx, **prompt_kwargs.get(kind, {}))
            t0 = time.perf_counter()
            if kind == "point":
                out = predictor.predict(
                    point_coords=prompt.points_xy.astype(np.float32),
                    point_labels=np.ones(len(prompt.points_xy), np.int64),
                    multimask_output=multimask_output,
                )
            elif kind == "box":
                assert prompt.box_xyxy is not None
                out = predictor.predict(box=np.asarray(prompt.box_xyxy, np.float32), multimask_output=multimask_output)
            else:
                out = predictor.predict_prompt(prompt)
            model_s.append(time.perf_counter() - t0)
            pred, _, _ = select_output(out, hw, "predict_prompt" if kind not in ("point", "box") else "predict")
            iou = float(mask_iou(gt, pred, void))
            items.append(PromptItemResult(item.id, image_ref, kind, iou, True, prompt))
            score = (-iou if math.isfinite(iou) else 1.0,)
            if worst[kind].wants(score):
                pts = (
                    []
                    if kind == "box"
                    else [(int(np.rint(y)), int(np.rint(x)), True) for x, y in prompt.points_xy[:64]]
                )
                case = WorstCase(
                    f"{kind}/{item.id}", item.image_key, item.image, gt, void, pred, pts, [iou], score,
                    f"{kind} IoU={iou:.3f}",
                )  # fmt: skip
                worst[kind].add(case)
    if not items:
        raise ValueError("the dataset gave no objects to evaluate")
    done = [it for it in items if it.supported]
    by_kind = single_prompt_miou([it.iou for it in done], [it.kind for it in done]) if done else {"all": math.nan}
    miou = {k: by_kind.get(k, math.nan) for k in kinds}  # prompt-type order, NaN = unsupported
    miou["all"] = by_kind["all"]
    timing = {"model_ms_per_prompt": _ms_stats(model_s), "total_seconds": time.perf_counter() - t_start}
    cases = [c for k in kinds for c in worst[k].cases]
    return PromptResult(kinds, seed, miou, unsupported, items, timing, cases, skipped)


# ----------------------------------------------------------------------------------------------------------------
# panoptic
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PanopticResult:
    """Result of ``evaluate_panoptic``: the ``PQResult`` (All / Things / Stuff, per class) and per-image counts."""

    pq: PQResult
    n_images: int
    items: list[dict[str, Any]]
    timing: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "task": "panoptic",
            "n_images": self.n_images,
            "pq": {k: {kk: _json_float(vv) for kk, vv in v.items()} for k, v in self.pq.summary.items()},
            "per_class": {str(c): {kk: _json_float(vv) for kk, vv in v.items()} for c, v in self.pq.per_class.items()},
            "timing": self.timing,
            "items": self.items,
        }


def evaluate_panoptic(
    predictor: Any,
    dataset: Any,
    *,
    class_names: Sequence[str] | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> PanopticResult | Skipped:
    """PQ over a ``CocoPanoptic`` dataset with ``predictor.panoptic(class_names)`` per image.

    ``class_names`` defaults to the dataset's category names in ascending category-id order; the predictor's
    ``"class"`` indices are mapped back to those category ids.
    """
    if not supports(predictor, "panoptic"):
        return Skipped("panoptic", missing_method_message(predictor, "panoptic", "panoptic"))
    cats = sorted(dataset.categories)
    if not cats:
        raise ValueError("the panoptic dataset has no categories")
    names = list(class_names) if class_names is not None else [str(dataset.categories[c]["name"]) for c in cats]
    if len(names) != len(cats):
        raise ValueError(f"{len(names)} class names for {len(cats)} categories")
    pq = PanopticQuality()
    per_image: list[dict[str, Any]] = []
    model_s: list[float] = []
    t_start = time.perf_counter()
    for s in _progress(_limited(dataset, limit), progress, "panoptic", _total(dataset, limit)):
        if s.image_path is None:
            raise ValueError(f"panoptic image {s.image_id} has no image path: give the reader an image root")
        image = read_image(s.image_path)
        predictor.set_image(image)
        t0 = time.perf_counter()
        out = predictor.panoptic(names)
        model_s.append(time.perf_counter() - t0)
        ids, raw = _panoptic_output(out)
        if ids.shape != image.shape[:2] or ids.dtype.kind not in "ui":
            raise ValueError(
                f"panoptic() segment ids must be int [H, W] = {image.shape[:2]}, got {ids.dtype} {ids.shape}"
            )
        segs = []
        for sid, k in raw:
            if not 0 <= k < len(cats):
                raise ValueError(f"panoptic() segment {sid} has class {k} outside 0..{len(cats) - 1}")
            segs.append({"id": sid, "category_id": cats[k]})
        pq.update(s.id_map(), s.segments, ids, segs)
        per_image.append({"image_id": s.image_id, "n_pred_segments": len(segs), "n_gt_segments": len(s.segments)})
    res = pq.compute(dataset.isthing)
    timing = {"model_ms_per_image": _ms_stats(model_s), "total_seconds": time.perf_counter() - t_start}
    return PanopticResult(res, len(per_image), per_image, timing)


def _panoptic_output(out: Any) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``(ids [H, W], [(segment id, class index)])`` from ``(ids, [{"id", "class"}])`` or from an object with
    ``panoptic_seg`` and ``segments`` whose entries have ``id`` and ``label_id`` (``seem.results``)."""
    if hasattr(out, "panoptic_seg") and hasattr(out, "segments"):
        return np.asarray(_np(out.panoptic_seg)), [(int(g.id), int(g.label_id)) for g in out.segments]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("panoptic() must return (segment_ids [H, W], segments) or an object with panoptic_seg/segments")
    return np.asarray(_np(out[0])), [(int(g["id"]), int(g["class"])) for g in out[1]]


# ----------------------------------------------------------------------------------------------------------------
# referring
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ReferringResult:
    """Result of ``evaluate_referring``: cIoU, mIoU and prec@t over all (object, sentence) pairs, per pair IoU."""

    metrics: dict[str, float]
    items: list[dict[str, Any]]
    timing: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "task": "referring",
            "n_pairs": len(self.items),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "timing": self.timing,
            "items": self.items,
        }


def evaluate_referring(
    predictor: Any,
    dataset: Any,
    *,
    thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
    limit: int | None = None,
    progress: bool = False,
) -> ReferringResult | Skipped:
    """Referring segmentation over a ``RefCoco`` reader (or an iterable of ``RefSample``): every sentence of
    every referred object → ``predictor.referring(sentence)`` → scored as ``metrics.referring_metrics`` (cIoU =
    ΣI/ΣU, mIoU = mean I/(U + 1e-6), prec@t), accumulated per pair so no mask is kept. ``limit``: objects."""
    if not supports(predictor, "referring"):
        return Skipped("referring", missing_method_message(predictor, "referring", "referring"))
    inter: list[int] = []
    union: list[int] = []
    rows: list[dict[str, Any]] = []
    cache = _ImageCache(predictor)
    model_s: list[float] = []
    t_start = time.perf_counter()
    for s in _progress(_limited(dataset, limit), progress, "referring", _total(dataset, limit)):
        if s.image_path is None:
            raise ValueError(f"ref {s.ref_id} has no image path: give the reader an image root")
        hw = cache.set(str(s.image_path), functools.partial(read_image, s.image_path))
        gt = s.mask()
        for sent in s.sentences:
            t0 = time.perf_counter()
            got = predictor.referring(sent)
            got = got.mask if hasattr(got, "mask") else got  # a seem.results.Segment
            pred = as_mask(_np(got), "referring() mask", shape=hw)
            model_s.append(time.perf_counter() - t0)
            i, u = intersection_union(gt, pred)
            inter.append(int(i))
            union.append(int(u))
            rows.append({"ref_id": s.ref_id, "sentence": sent, "iou": _json_float(int(i) / (int(u) + 1e-6))})
    if not rows:
        raise ValueError("the dataset gave no referring expressions")
    ia, ua = np.asarray(inter, np.int64), np.asarray(union, np.int64)
    iou = ia / (ua + 1e-6)  # the formulas of metrics.referring_metrics, on accumulated counts
    metrics = {"cIoU": float(ia.sum() / ua.sum()) if ua.sum() else math.nan, "mIoU": float(iou.mean())}
    for t in thresholds:
        metrics[f"prec@{t:g}"] = float((iou >= t).mean())
    timing = {"model_ms_per_sentence": _ms_stats(model_s), "total_seconds": time.perf_counter() - t_start}
    return ReferringResult(metrics, rows, timing)


# ----------------------------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VideoResult:
    """Result of ``evaluate_video``: per (sequence, object) J / F statistics and their means (``JF`` = mean of
    J-mean and F-mean over objects, the DAVIS global score)."""

    metrics: dict[str, float]
    items: list[dict[str, Any]]
    timing: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "task": "video",
            "n_objects": len(self.items),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "timing": self.timing,
            "items": self.items,
        }


def evaluate_video(
    predictor: Any,
    dataset: Any,
    *,
    limit: int | None = None,
    max_frames: int | None = None,
    drop_first_last: bool = True,
    progress: bool = False,
) -> VideoResult | Skipped:
    """Semi-supervised VOS over a ``DavisDataset``: per sequence and per object present in the first frame,
    ``predictor.track(frames, first_mask)``, scored with ``metrics.jf_sequence`` on the annotated frames
    (DAVIS rules: void = 255 left out, first and last scored frames dropped unless ``drop_first_last=False``).
    ``limit``: sequences; ``max_frames``: frames per sequence (from the start)."""
    if not supports(predictor, "track"):
        return Skipped("video", missing_method_message(predictor, "track", "video"))
    rows: list[dict[str, Any]] = []
    model_s: list[float] = []
    t_start = time.perf_counter()
    seqs = list(dataset.sequences)
    for seq in _progress(_limited(seqs, limit), progress, "video", min(len(seqs), limit or len(seqs))):
        names = dataset.frames(seq)
        if max_frames is not None:
            names = names[:max_frames]
        annotated = set(dataset.annotated_frames(seq))
        if not names or names[0] not in annotated:
            continue
        try:
            frames = [read_image(dataset.image_path(seq, f)) for f in names]
        except FileNotFoundError:
            continue
        scored = [i for i, f in enumerate(names) if f in annotated]
        labels = {i: dataset.labels(seq, names[i]) for i in scored}
        first, obj_ids, _ = dataset.objects(seq, names[0])
        k_max = int(obj_ids.max(initial=0))
        for k in range(first.shape[0]):
            if not first[k].any():
                continue
            t0 = time.perf_counter()
            pred = as_mask(_np(predictor.track(frames, first[k])), "track() masks", ndim=3)
            model_s.append(time.perf_counter() - t0)
            if pred.shape != (len(frames), *frames[0].shape[:2]):
                raise ValueError(f"track() returned {pred.shape}, expected {(len(frames), *frames[0].shape[:2])}")
            from seem.eval.readers import split_objects

            gts, voids = [], []
            for i in scored:
                m, _, v = split_objects(labels[i], single_object=dataset.single_object, num_objects=k_max)
                gts.append(m[k])
                voids.append(v if v is not None else np.zeros(m.shape[1:], bool))
            r = jf_sequence(np.stack(gts), pred[scored], np.stack(voids), drop_first_last=drop_first_last)
            rows.append(
                {
                    "sequence": seq,
                    "object": int(obj_ids[k]),
                    "n_frames": len(frames),
                    "n_scored": len(scored),
                    "J": {kk: _json_float(v) for kk, v in r["J"].items()},
                    "F": {kk: _json_float(v) for kk, v in r["F"].items()},
                    "JF": _json_float(r["JF"]),
                }
            )
    if not rows:
        raise ValueError("the dataset gave no sequence with an annotated first frame")
    jm = _nanmean([r["J"]["M"] if r["J"]["M"] is not None else math.nan for r in rows])
    fm = _nanmean([r["F"]["M"] if r["F"]["M"] is not None else math.nan for r in rows])
    metrics = {"J_mean": jm, "F_mean": fm, "JF": (jm + fm) / 2}
    timing = {"model_ms_per_object": _ms_stats(model_s), "total_seconds": time.perf_counter() - t_start}
    return VideoResult(metrics, rows, timing)


# ----------------------------------------------------------------------------------------------------------------
# granularity
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GranularityResult:
    """Result of ``evaluate_granularity``: mean Point (Max), Point (Oracle) and 1-IoU@all-granularity."""

    metrics: dict[str, float]
    items: list[dict[str, Any]]
    timing: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "task": "granularity",
            "n_clicks": len(self.items),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "timing": self.timing,
            "items": self.items,
        }


def evaluate_granularity(
    predictor: Any,
    dataset: Any,
    *,
    clicks_per_image: int = 3,
    limit: int | None = None,
    progress: bool = False,
) -> GranularityResult | Skipped:
    """Multi-granularity one-click scores with ``predictor.predict_levels([[x, y]])`` per click
    (``datasets.granularity_items``: BSDS500 annotators as levels, or every COCO / SA-1B mask containing the
    click): Point (Max) / Point (Oracle) against the clicked mask (``metrics.point_max_oracle``) and
    1-IoU@all-granularity over every GT mask containing the click (``metrics.all_granularity_iou``).
    ``limit``: clicks."""
    if not supports(predictor, "predict_levels"):
        return Skipped("granularity", missing_method_message(predictor, "predict_levels", "granularity"))
    cache = _ImageCache(predictor)
    rows: list[dict[str, Any]] = []
    model_s: list[float] = []
    t_start = time.perf_counter()
    src: Iterable[GranularityItem] = _limited(granularity_items(dataset, clicks_per_image=clicks_per_image), limit)
    for it in _progress(src, progress, "granularity", limit):
        hw = cache.set(it.image_key, it.image)
        y, x = it.click_yx
        t0 = time.perf_counter()
        out = predictor.predict_levels(np.array([[x, y]], np.float32))
        model_s.append(time.perf_counter() - t0)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("predict_levels() must return (masks [K, H, W], ious [K])")
        masks = as_mask(_np(out[0]), "predict_levels() masks", ndim=3)
        if masks.shape[1:] != hw:
            raise ValueError(f"predict_levels() masks are {masks.shape[1:]}, the image is {hw}")
        pmax, oracle = point_max_oracle(it.gt, masks, _np(out[1]))
        ag = all_granularity_iou(it.all_masks, masks, it.click_yx)
        rows.append(
            {
                "id": it.id,
                "click_yx": [y, x],
                "point_max": _json_float(pmax),
                "point_oracle": _json_float(oracle),
                "all_granularity_iou": _json_float(ag.mean_iou),
                "n_targets": int(ag.target_index.size),
            }
        )
    if not rows:
        raise ValueError("the dataset gave no clicks")

    def col(k: str) -> float:
        return _nanmean([math.nan if r[k] is None else r[k] for r in rows])

    metrics = {
        "point_max": col("point_max"),
        "point_oracle": col("point_oracle"),
        "all_granularity_iou": col("all_granularity_iou"),
    }
    timing = {"model_ms_per_click": _ms_stats(model_s), "total_seconds": time.perf_counter() - t_start}
    return GranularityResult(metrics, rows, timing)
