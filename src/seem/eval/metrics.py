"""Evaluation metrics of the SEEM / Semantic-SAM papers as small, vectorised, pure functions.

Conventions (all functions):

- Masks are boolean-like arrays ``[..., H, W]`` (numpy or torch; torch tensors are moved to the CPU and
  converted). ``void`` is an optional boolean map of the same shape whose pixels count neither in the
  intersection nor in the union (GrabCut's 128 band, DAVIS' 255, ...).
- Image coordinates are ``(y, x)`` = (row, column), 0-based, origin at the top-left pixel, wherever a function
  takes a single pixel (``click_yx``). Boxes are not used here.
- IoU lists of the interactive protocols are per sample, one value per click, click 1 first.

What each metric reproduces (and from which reference code) is stated in its docstring; the parity tests in
``tests/test_eval_metrics.py`` compare them with the values the peers' own code computes
(``shared/parity/eval``). Optional dependencies (scipy, OpenCV, pycocotools) are imported inside the
functions that need them (``pip install seem[eval]``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "COCO_STAT_NAMES",
    "PQ_OFFSET",
    "GranularityMatch",
    "MaskAPResult",
    "NocResult",
    "PQResult",
    "PanopticQuality",
    "all_granularity_iou",
    "as_mask",
    "boundary_f_measure",
    "clicks_to_reach",
    "coco_mask_ap",
    "davis_statistics",
    "encode_mask_results",
    "intersection_union",
    "iou_curve",
    "jf_objects",
    "jf_sequence",
    "mask_iou",
    "miou_at_k",
    "noc_metrics",
    "pad_ious",
    "point_max_oracle",
    "referring_metrics",
    "region_similarity",
    "seg_to_boundary",
    "semantic_confusion",
    "semantic_scores",
    "single_prompt_miou",
]


# ----------------------------------------------------------------------------------------------------------------
# array helpers
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch.Tensor without importing torch here
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(a).__name__}") from e
    return a


def as_mask(a: Any, name: str = "mask", *, ndim: int | None = 2, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a binary mask and return it as a numpy ``bool`` array.

    Accepts numpy arrays and torch tensors of dtype bool, any integer type or float, provided the values are
    0/1 (so a probability map is rejected: threshold it first). ``ndim`` (None = any) and ``shape`` are checked.

    Raises:
        TypeError: not an array / unsupported dtype.
        ValueError: wrong number of dimensions, wrong shape or values other than 0 and 1.
    """
    arr = _to_numpy(a, name)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype {arr.dtype}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
        raise ValueError(f"{name} must be binary (0/1 or bool); found values {bad.tolist()} (threshold it first)")
    return arr != 0


def _void_or_none(void: Any, shape: tuple[int, ...], name: str = "void") -> np.ndarray | None:
    if void is None:
        return None
    return as_mask(void, name, ndim=len(shape), shape=shape)


# ----------------------------------------------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------------------------------------------


def intersection_union(gt: Any, pred: Any, void: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts ``(|gt ∧ pred ∧ ¬void|, |(gt ∨ pred) ∧ ¬void|)`` over the last two axes.

    ``gt``, ``pred`` (and ``void``): boolean ``[..., H, W]`` of equal shape (``void`` may also be ``[H, W]`` and is
    then broadcast). Returns two int64 arrays of shape ``[...]`` (0-d for single masks).
    """
    g = as_mask(gt, "gt", ndim=None)
    p = as_mask(pred, "pred", ndim=None, shape=g.shape)
    if g.ndim < 2:
        raise ValueError(f"gt must be [..., H, W], got shape {g.shape}")
    inter = g & p
    union = g | p
    if void is not None:
        v = as_mask(void, "void", ndim=None)
        if v.shape != g.shape and v.shape != g.shape[-2:]:
            raise ValueError(f"void has shape {v.shape}, expected {g.shape} or {g.shape[-2:]}")
        keep = ~v
        inter &= keep
        union &= keep
    return inter.sum(axis=(-2, -1), dtype=np.int64), union.sum(axis=(-2, -1), dtype=np.int64)


def mask_iou(gt: Any, pred: Any, void: Any = None, *, empty: float = math.nan) -> float | np.ndarray:
    """IoU of boolean masks ``[..., H, W]`` with void pixels left out of intersection and union.

    This is RITM's ``get_iou`` (ignore label −1 ↔ ``void``) and SEEM's ``get_iou``. When the union is empty
    (empty GT and empty prediction outside void) the result is ``empty``: NaN by default, as both peers
    compute 0/0; DAVIS' J uses 1 (see ``region_similarity``). Returns a float for 2-D inputs, else float64
    ``[...]``.
    """
    inter, union = intersection_union(gt, pred, void)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), empty)
    return float(iou) if iou.ndim == 0 else iou


# ----------------------------------------------------------------------------------------------------------------
# interactive: NoC, failures, mIoU@k, IoU-vs-clicks
# ----------------------------------------------------------------------------------------------------------------


def _as_iou_list(ious: Any) -> np.ndarray:
    a = _to_numpy(ious, "ious")
    if a.ndim != 1:
        raise ValueError(f"a per-sample IoU list must be 1-D (one value per click), got shape {a.shape}")
    if a.dtype.kind not in "f":
        a = a.astype(np.float64)
    return a


def clicks_to_reach(ious: Any, threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks (1-based) until the IoU first reaches ``threshold`` (``>=``); ``max_clicks`` if never.

    Only the first ``max_clicks`` values count (NoC with a cap of 5/10/20 clicks). NaN never reaches a
    threshold. The comparison is made **in the dtype of the list** (the threshold is cast to it), as RITM's
    ``compute_noc_metric`` does with numpy: a float32 IoU of exactly 0.9 reaches ``0.9000000000000001``
    (RITM's ``np.arange`` threshold), a float64 0.9 does not.
    """
    a = _as_iou_list(ious)[:max_clicks]
    reached = a >= a.dtype.type(threshold)
    return int(np.argmax(reached)) + 1 if reached.any() else int(max_clicks)


@dataclass(frozen=True)
class NocResult:
    """NoC at one IoU threshold over a set of samples.

    Attributes:
        threshold: the IoU threshold.
        max_clicks: the cap.
        noc: mean number of clicks (a sample that never reaches the threshold counts ``max_clicks``).
        over_max: samples whose NoC equals ``max_clicks`` (RITM's ``over_max``; includes a sample that
            reaches the threshold exactly at the last click).
        failures: samples that never reach the threshold within ``max_clicks`` clicks (NoF).
        per_sample: int64 ``[N]`` NoC of each sample.
    """

    threshold: float
    max_clicks: int
    noc: float
    over_max: int
    failures: int
    per_sample: np.ndarray


def noc_metrics(
    all_ious: Sequence[Any], thresholds: Sequence[float] = (0.85, 0.9), max_clicks: int = 20
) -> dict[float, NocResult]:
    """NoC@threshold, over-max count and failures for every threshold (RITM ``compute_noc_metric`` and SEEM
    ``InteractiveEvaluator.compute_noc``; both give the same numbers on the same lists).

    ``all_ious``: one IoU list per sample (lists may differ in length, e.g. RITM stops at the target IoU;
    SEEM pads to ``max_clicks`` with the last value). Use ``max_clicks`` 5/10/20 for the capped variants.
    """
    if len(all_ious) == 0:
        raise ValueError("noc_metrics needs at least one sample")
    lists = [_as_iou_list(x) for x in all_ious]
    out: dict[float, NocResult] = {}
    for thr in thresholds:
        per = np.array([clicks_to_reach(a, thr, max_clicks) for a in lists], dtype=np.int64)
        fail = sum(1 for a in lists if not np.any(a[:max_clicks] >= a.dtype.type(thr)))
        out[thr] = NocResult(
            threshold=float(thr),
            max_clicks=int(max_clicks),
            noc=float(per.mean()),
            over_max=int((per == max_clicks).sum()),
            failures=int(fail),
            per_sample=per,
        )
    return out


def pad_ious(ious: Any, max_clicks: int = 20) -> np.ndarray:
    """Extend a per-sample IoU list to ``max_clicks`` values by repeating its last value (SEEM's
    ``evaluate_interactive`` after the stop rule); longer lists are cut. Keeps the dtype."""
    a = _as_iou_list(ious)
    if a.size == 0:
        raise ValueError("cannot pad an empty IoU list")
    if a.size >= max_clicks:
        return a[:max_clicks].copy()
    return np.concatenate([a, np.full(max_clicks - a.size, a[-1], dtype=a.dtype)])


def iou_curve(all_ious: Sequence[Any], max_clicks: int = 20, mode: str = "pad") -> np.ndarray:
    """Mean IoU after each click (the IoU-vs-clicks curve), float64 ``[K]``.

    ``mode="pad"``: every list is padded with its last value to ``max_clicks`` (SEEM; a sample that stopped
    early keeps its final IoU), ``K = max_clicks``. ``mode="truncate"``: every list is cut to the shortest
    one (RITM ``evaluate_model.py --print-ious``), ``K = min(len)``. NaN IoUs propagate (an empty-GT sample
    makes the curve NaN, as in both peers).
    """
    if len(all_ious) == 0:
        raise ValueError("iou_curve needs at least one sample")
    lists = [_as_iou_list(x) for x in all_ious]
    if mode == "pad":
        stack = np.stack([pad_ious(a, max_clicks).astype(np.float64) for a in lists])
    elif mode == "truncate":
        k = min(len(a) for a in lists)
        stack = np.stack([a[:k].astype(np.float64) for a in lists])
    else:
        raise ValueError(f"mode must be 'pad' or 'truncate', got {mode!r}")
    return stack.mean(axis=0)


def miou_at_k(
    all_ious: Sequence[Any], ks: Iterable[int] = (1, 2, 3, 5, 10, 20), max_clicks: int = 20, mode: str = "pad"
) -> dict[int, float]:
    """mIoU@k = mean IoU at click k (``iou_curve`` read at ``k - 1``); k beyond the curve is left out.

    SEEM's ``miou@iter1`` is ``mode="pad"`` at k = 1; RITM's ``mIoU@k`` is ``mode="truncate"``.
    """
    curve = iou_curve(all_ious, max_clicks=max_clicks, mode=mode)
    return {int(k): float(curve[k - 1]) for k in ks if 1 <= k <= curve.size}


def single_prompt_miou(ious: Sequence[float], prompt_types: Sequence[str]) -> dict[str, float]:
    """Mean IoU per prompt type for the single-prompt table ("1-IoU": one prompt, one mask, its IoU).

    ``ious[i]`` is the IoU obtained with a prompt of type ``prompt_types[i]`` (e.g. ``"point"``, ``"box"``,
    ``"scribble"``, ``"polygon"``, ``"stroke"``). NaN IoUs (empty GT) are skipped. Also returns ``"all"``.
    """
    v = np.asarray(ious, dtype=np.float64)
    t = np.asarray(prompt_types, dtype=object)
    if v.shape != t.shape or v.ndim != 1:
        raise ValueError(f"ious and prompt_types must be 1-D of equal length, got {v.shape} and {t.shape}")
    out = {str(k): float(np.nanmean(v[t == k])) for k in dict.fromkeys(t.tolist())}
    out["all"] = float(np.nanmean(v)) if v.size else math.nan
    return out


def point_max_oracle(gt: Any, candidates: Any, scores: Any, void: Any = None) -> tuple[float, float]:
    """Semantic-SAM's one-click scores: ``(Point (Max), Point (Oracle))``.

    ``gt``: ``[H, W]``; ``candidates``: ``[K, H, W]`` binary masks output for one click (K = 6 granularity
    levels); ``scores``: ``[K]`` predicted IoUs. Max = IoU of the candidate with the highest score (first one
    on ties, as ``torch.max``); Oracle = the best IoU of all candidates (``evaluate_interactive``).
    """
    g = as_mask(gt, "gt")
    c = as_mask(candidates, "candidates", ndim=3)
    if c.shape[1:] != g.shape:
        raise ValueError(f"candidates are {c.shape[1:]}, gt is {g.shape}")
    s = _to_numpy(scores, "scores").astype(np.float64).reshape(-1)
    if s.size != c.shape[0]:
        raise ValueError(f"scores has {s.size} entries for {c.shape[0]} candidates")
    ious = np.asarray(mask_iou(np.broadcast_to(g, c.shape), c, void))
    return float(ious[int(np.argmax(s))]), float(np.nanmax(ious)) if not np.all(np.isnan(ious)) else math.nan


@dataclass(frozen=True)
class GranularityMatch:
    """Result of ``all_granularity_iou`` for one click.

    Attributes:
        target_index: int64 ``[M]`` indices (into the given GT stack) of the targets: every GT mask containing
            the click (all GT masks when no click is given).
        pred_index: int64 ``[M]`` the prediction matched to each target (−1 when there were more targets than
            predictions and the target stayed unmatched).
        ious: float64 ``[M]`` IoU of each target with its match (0 when unmatched).
        mean_iou: mean of ``ious`` (NaN without targets).
    """

    target_index: np.ndarray
    pred_index: np.ndarray
    ious: np.ndarray
    mean_iou: float


def all_granularity_iou(
    gt_masks: Any, pred_masks: Any, click_yx: tuple[int, int] | None = None, void: Any = None
) -> GranularityMatch:
    """1-IoU@all-granularity of one click: Hungarian matching of the predictions to every GT mask that
    contains the click, scored by the IoU of the matched pairs.

    ``gt_masks``: ``[M, H, W]`` (e.g. every annotated mask of an SA-1B image, or each BSDS annotator's segment
    map); ``pred_masks``: ``[K, H, W]`` (the K = 6 level outputs of one click); ``click_yx``: the click as
    ``(y, x)``; None uses every GT mask. The assignment maximises the summed IoU (``scipy.optimize.
    linear_sum_assignment``); each target gets at most one prediction and vice versa.

    Deviation: the official ``evaluate_interactive_granularity`` matches with its training matcher (BCE +
    dice + box costs on sampled points); matching by IoU is the metric's definition in the paper and gives
    the highest IoU sum, so it is never lower than the official matching.
    """
    from scipy.optimize import linear_sum_assignment

    g = as_mask(gt_masks, "gt_masks", ndim=3)
    p = as_mask(pred_masks, "pred_masks", ndim=3)
    if g.shape[1:] != p.shape[1:]:
        raise ValueError(f"gt_masks are {g.shape[1:]}, pred_masks are {p.shape[1:]}")
    if click_yx is not None:
        y, x = (int(v) for v in click_yx)
        if not (0 <= y < g.shape[1] and 0 <= x < g.shape[2]):
            raise ValueError(f"click_yx {click_yx} lies outside the {g.shape[1:]} image")
        targets = np.nonzero(g[:, y, x])[0]
    else:
        targets = np.arange(g.shape[0])
    if targets.size == 0:
        e = np.zeros(0, np.int64)
        return GranularityMatch(e, e, np.zeros(0), math.nan)
    gt = g[targets]
    if void is not None:
        v = as_mask(void, "void", shape=g.shape[1:])
        gt = gt & ~v
        p = p & ~v
    gf = gt.reshape(gt.shape[0], -1).astype(np.float32)
    pf = p.reshape(p.shape[0], -1).astype(np.float32)
    inter = gf @ pf.T
    union = gf.sum(1)[:, None] + pf.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    pred_index = np.full(targets.size, -1, np.int64)
    pred_index[rows] = cols
    ious = np.zeros(targets.size)
    ious[rows] = iou[rows, cols]
    return GranularityMatch(targets.astype(np.int64), pred_index, ious, float(ious.mean()))


# ----------------------------------------------------------------------------------------------------------------
# panoptic quality (panopticapi rules)
# ----------------------------------------------------------------------------------------------------------------

PQ_OFFSET = 256 * 256 * 256
"""Segment ids are < 256³ (RGB encoding), so ``gt_id * PQ_OFFSET + pred_id`` is a unique pair key."""


@dataclass
class _PQStat:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass(frozen=True)
class PQResult:
    """PQ / SQ / RQ in 0..1 for ``All``, ``Things`` and ``Stuff`` (keys of ``summary``: ``pq``, ``sq``, ``rq``,
    ``n`` = categories counted) plus ``per_class`` (category id → pq/sq/rq) and raw ``counts`` (category id →
    tp/fp/fn/iou_sum). Categories with no GT and no prediction are not counted (panopticapi)."""

    summary: dict[str, dict[str, float]]
    per_class: dict[int, dict[str, float]]
    counts: dict[int, dict[str, float]]

    def __getitem__(self, key: str) -> dict[str, float]:
        return self.summary[key]


class PanopticQuality:
    """Accumulates PQ statistics image by image, with the rules of ``panopticapi.evaluation.pq_compute``.

    Per image: a GT/prediction pair of the same category matches when IoU > 0.5, with the union reduced by
    the prediction's pixels on GT void (id 0); GT crowd segments never match and are not false negatives; an
    unmatched predicted segment is not a false positive when more than half of it lies on void or on the
    (last listed) crowd region of its category. GT segment areas come from the segment info when given
    (``area``, as panopticapi reads them from the JSON), else from the id map.

    Usage::

        pq = PanopticQuality()
        pq.update(gt_ids, gt_segments, pred_ids, pred_segments)   # per image
        result = pq.compute(categories)                           # {category_id: isthing}
    """

    def __init__(self) -> None:
        self.stats: dict[int, _PQStat] = {}

    def _stat(self, cat: int) -> _PQStat:
        s = self.stats.get(cat)
        if s is None:
            s = self.stats[cat] = _PQStat()
        return s

    def update(
        self,
        gt_ids: Any,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_ids: Any,
        pred_segments: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image.

        ``gt_ids`` / ``pred_ids``: integer segment-id maps ``[H, W]`` (0 = void / unlabelled; e.g. from
        ``readers.coco_panoptic.rgb_to_id``). ``*_segments``: dicts with ``id`` and ``category_id``; GT
        segments may carry ``iscrowd`` (default 0) and ``area``.

        Raises:
            ValueError: shapes differ, or a predicted id map and its segment list disagree (panopticapi
                raises KeyError there).
        """
        g = _to_numpy(gt_ids, "gt_ids")
        p = _to_numpy(pred_ids, "pred_ids")
        if g.ndim != 2 or g.shape != p.shape:
            raise ValueError(f"gt_ids {g.shape} and pred_ids {p.shape} must be equal 2-D maps")
        if g.dtype.kind not in "ui" or p.dtype.kind not in "ui":
            raise TypeError(f"id maps must be integer arrays, got {g.dtype} and {p.dtype}")
        gt_segms = {int(s["id"]): s for s in gt_segments}
        pred_segms = {int(s["id"]): s for s in pred_segments}

        key = g.astype(np.uint64) * np.uint64(PQ_OFFSET) + p.astype(np.uint64)
        keys, counts = np.unique(key.ravel(), return_counts=True)
        gid = (keys // np.uint64(PQ_OFFSET)).astype(np.int64)
        pid = (keys % np.uint64(PQ_OFFSET)).astype(np.int64)
        pairs = {(int(a), int(b)): int(c) for a, b, c in zip(gid.tolist(), pid.tolist(), counts.tolist(), strict=True)}

        pred_area: dict[int, int] = {}
        for b, c in zip(pid.tolist(), counts.tolist(), strict=True):
            pred_area[b] = pred_area.get(b, 0) + c
        unknown = [b for b in pred_area if b not in pred_segms and b != 0]
        if unknown:
            raise ValueError(f"pred_ids holds segment ids {unknown[:5]} that pred_segments does not list")
        missing = [b for b in pred_segms if b not in pred_area]
        if missing:
            raise ValueError(f"pred_segments lists ids {missing[:5]} that do not occur in pred_ids")
        gt_area: dict[int, int] = {}
        for a, c in zip(gid.tolist(), counts.tolist(), strict=True):
            gt_area[a] = gt_area.get(a, 0) + c

        def g_area(i: int) -> int:
            s = gt_segms[i]
            return int(s["area"]) if "area" in s else gt_area.get(i, 0)

        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        for (a, b), inter in pairs.items():
            if a not in gt_segms or b not in pred_segms:
                continue
            gs, ps = gt_segms[a], pred_segms[b]
            if int(gs.get("iscrowd", 0)) == 1 or int(gs["category_id"]) != int(ps["category_id"]):
                continue
            union = pred_area[b] + g_area(a) - inter - pairs.get((0, b), 0)
            iou = inter / union
            if iou > 0.5:
                st = self._stat(int(gs["category_id"]))
                st.tp += 1
                st.iou += iou
                gt_matched.add(a)
                pred_matched.add(b)

        crowd_by_cat: dict[int, int] = {}
        for a, gs in gt_segms.items():
            if a in gt_matched:
                continue
            if int(gs.get("iscrowd", 0)) == 1:
                crowd_by_cat[int(gs["category_id"])] = a
                continue
            self._stat(int(gs["category_id"])).fn += 1

        for b, ps in pred_segms.items():
            if b in pred_matched:
                continue
            inter = pairs.get((0, b), 0)
            cat = int(ps["category_id"])
            if cat in crowd_by_cat:
                inter += pairs.get((crowd_by_cat[cat], b), 0)
            if inter / pred_area[b] > 0.5:
                continue
            self._stat(cat).fp += 1

    def compute(self, categories: Mapping[int, bool | int]) -> PQResult:
        """PQ/SQ/RQ over ``categories`` (category id → isthing). ``n = 0`` gives NaN (panopticapi divides
        by zero there)."""
        per_class: dict[int, dict[str, float]] = {}
        counts: dict[int, dict[str, float]] = {}
        summary: dict[str, dict[str, float]] = {}
        for name, want in (("All", None), ("Things", True), ("Stuff", False)):
            pq = sq = rq = 0.0
            n = 0
            for cat, isthing in categories.items():
                if want is not None and bool(isthing) != want:
                    continue
                st = self.stats.get(int(cat), _PQStat())
                if st.tp + st.fp + st.fn == 0:
                    continue
                n += 1
                denom = st.tp + 0.5 * st.fp + 0.5 * st.fn
                pc, sc, rc = st.iou / denom, (st.iou / st.tp if st.tp else 0.0), st.tp / denom
                if want is None:
                    per_class[int(cat)] = {"pq": pc, "sq": sc, "rq": rc}
                    counts[int(cat)] = {"tp": st.tp, "fp": st.fp, "fn": st.fn, "iou_sum": st.iou}
                pq, sq, rq = pq + pc, sq + sc, rq + rc
            summary[name] = {
                "pq": pq / n if n else math.nan,
                "sq": sq / n if n else math.nan,
                "rq": rq / n if n else math.nan,
                "n": n,
            }
        return PQResult(summary=summary, per_class=per_class, counts=counts)


# ----------------------------------------------------------------------------------------------------------------
# mask AP (pycocotools)
# ----------------------------------------------------------------------------------------------------------------

COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


@dataclass(frozen=True)
class MaskAPResult:
    """COCOeval(segm) output: ``stats`` float64 ``[12]`` in pycocotools order (``COCO_STAT_NAMES``; −1 where an
    area range has no GT), ``per_category`` (category id → AP, AP50, AP75 at area all / maxDets 100, means
    over the precision entries > −1) and the ``summary`` lines ``summarize()`` prints."""

    stats: np.ndarray
    per_category: dict[int, dict[str, float]]
    summary: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(COCO_STAT_NAMES, self.stats.tolist(), strict=True))


def encode_mask_results(
    masks: Any, image_id: int, category_ids: Sequence[int], scores: Sequence[float]
) -> list[dict[str, Any]]:
    """COCO results entries ``{image_id, category_id, segmentation (RLE, counts as str), score}`` for binary
    masks ``[N, H, W]``."""
    from pycocotools import mask as mask_utils

    m = as_mask(masks, "masks", ndim=3)
    if not (len(category_ids) == len(scores) == m.shape[0]):
        raise ValueError(f"{m.shape[0]} masks but {len(category_ids)} category ids and {len(scores)} scores")
    rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for rle, c, s in zip(rles, category_ids, scores, strict=True):
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": int(image_id), "category_id": int(c), "segmentation": rle, "score": float(s)})
    return out


def coco_mask_ap(gt: Any, detections: Any, *, fix_zero_ann_ids: bool = True, verbose: bool = False) -> MaskAPResult:
    """Mask AP with pycocotools' own ``COCOeval(iouType='segm')``: evaluate, accumulate, summarize.

    ``gt``: a COCO instances dict, a JSON path or a ``pycocotools.coco.COCO``; ``detections``: a list of
    results entries (see ``encode_mask_results``) or a JSON path.

    Trap handled: COCOeval treats a matched GT annotation id 0 as "no match", so a detection matched to
    annotation 0 counts as a false positive. With ``fix_zero_ann_ids`` (default) GT annotation ids are
    renumbered 1..N (file order) when an id 0 is present, with a warning; with False a ValueError is raised.
    An empty detection list gives stats of −1/0 as pycocotools does not accept it, so it raises ValueError.
    """
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(gt, COCO):
        gt_dict = copy.deepcopy(gt.dataset)
    elif isinstance(gt, Mapping):
        gt_dict = copy.deepcopy(dict(gt))
    else:
        with open(gt) as f:
            gt_dict = json.load(f)
    anns = gt_dict.get("annotations", [])
    if any(int(a["id"]) == 0 for a in anns):
        if not fix_zero_ann_ids:
            raise ValueError("GT annotation id 0 found: COCOeval treats it as 'no match'; ids must start at 1")
        warnings.warn("GT annotation ids renumbered 1..N (an id 0 breaks COCOeval matching)", stacklevel=2)
        for i, a in enumerate(anns, start=1):
            a["id"] = i
    if not isinstance(detections, list):
        with open(detections) as f:
            detections = json.load(f)
    if len(detections) == 0:
        raise ValueError("no detections: pycocotools cannot evaluate an empty result list")

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if not verbose else contextlib.nullcontext():
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        summary_sink = io.StringIO()
        with contextlib.redirect_stdout(summary_sink):
            ev.summarize()
    lines = summary_sink.getvalue().splitlines()
    if verbose:
        print("\n".join(lines))

    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_cat: dict[int, dict[str, float]] = {}
    a_all = list(ev.params.areaRngLbl).index("all")
    m_100 = list(ev.params.maxDets).index(100) if 100 in ev.params.maxDets else -1

    def _mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    for k, cat in enumerate(ev.params.catIds):
        pk = precision[:, :, k, a_all, m_100]
        per_cat[int(cat)] = {"AP": _mean(pk), "AP50": _mean(pk[0]), "AP75": _mean(pk[5])}
    return MaskAPResult(stats=np.asarray(ev.stats, dtype=np.float64), per_category=per_cat, summary=lines)


# ----------------------------------------------------------------------------------------------------------------
# semantic segmentation (detectron2 SemSegEvaluator rules)
# ----------------------------------------------------------------------------------------------------------------


def semantic_confusion(gt: Any, pred: Any, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Confusion matrix int64 ``[C, C]`` (rows = GT class, columns = predicted class) of label maps ``[..., H, W]``.

    GT pixels equal to ``ignore_index`` are skipped; other GT values must lie in ``0..C-1``. Predictions outside
    ``0..C-1`` raise ValueError. Sum these over images, then call ``semantic_scores``.
    """
    g = _to_numpy(gt, "gt")
    p = _to_numpy(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} must have the same shape")
    if g.dtype.kind not in "ui" or p.dtype.kind not in "ui":
        raise TypeError(f"label maps must be integer arrays, got {g.dtype} and {p.dtype}")
    g = g.ravel().astype(np.int64)
    p = p.ravel().astype(np.int64)
    keep = g != ignore_index if ignore_index is not None else np.ones_like(g, dtype=bool)
    g, p = g[keep], p[keep]
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        raise ValueError(f"gt labels must be in 0..{num_classes - 1} (or {ignore_index}), got {g.min()}..{g.max()}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"pred labels must be in 0..{num_classes - 1}, got {p.min()}..{p.max()}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def semantic_scores(conf: Any) -> dict[str, Any]:
    """mIoU, fwIoU, mACC, pACC (fractions) and per-class ``IoU`` / ``ACC`` (NaN for classes without GT and
    prediction / without GT) from a confusion matrix, as detectron2's ``SemSegEvaluator``: mIoU averages the
    classes present in GT or prediction, mACC the classes present in GT."""
    c = _to_numpy(conf, "conf").astype(np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"conf must be a square matrix, got {c.shape}")
    tp = np.diag(c)
    pos_gt = c.sum(1)
    pos_pred = c.sum(0)
    iou_valid = (pos_gt + pos_pred) > 0
    acc_valid = pos_gt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(iou_valid, tp / (pos_gt + pos_pred - tp), math.nan)
        acc = np.where(acc_valid, tp / pos_gt, math.nan)
    total = pos_gt.sum()
    class_w = pos_gt / total if total else pos_gt
    return {
        "mIoU": float(np.nanmean(iou)) if iou_valid.any() else math.nan,
        "fwIoU": float(np.nansum(iou * class_w)) if total else math.nan,
        "mACC": float(np.nanmean(acc)) if acc_valid.any() else math.nan,
        "pACC": float(tp.sum() / total) if total else math.nan,
        "IoU": iou,
        "ACC": acc,
    }


# ----------------------------------------------------------------------------------------------------------------
# referring segmentation (SEEM grounding_evaluation)
# ----------------------------------------------------------------------------------------------------------------


def referring_metrics(
    gts: Sequence[Any], preds: Sequence[Any], thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9)
) -> dict[str, float]:
    """Referring segmentation scores over (GT, prediction) mask pairs, as SEEM's ``GroundingEvaluator``:

    - ``cIoU`` = ΣI / ΣU over all pairs (cumulative IoU),
    - ``mIoU`` = mean of per-pair I / (U + 1e-6),
    - ``prec@t`` = fraction of pairs with that IoU ≥ t, for each threshold.

    Fractions in 0..1 (the official code multiplies by 100). Masks: boolean ``[H, W]`` per pair (sizes may
    differ between pairs).
    """
    if len(gts) != len(preds) or len(gts) == 0:
        raise ValueError(f"need equal, non-zero numbers of GT and predicted masks, got {len(gts)} and {len(preds)}")
    inter = np.empty(len(gts), np.int64)
    union = np.empty(len(gts), np.int64)
    for i, (g, p) in enumerate(zip(gts, preds, strict=True)):
        inter[i], union[i] = intersection_union(g, p)
    iou = inter / (union + 1e-6)
    out = {"cIoU": float(inter.sum() / union.sum()) if union.sum() else math.nan, "mIoU": float(iou.mean())}
    for t in thresholds:
        out[f"prec@{t:g}"] = float((iou >= t).mean())
    return out


# ----------------------------------------------------------------------------------------------------------------
# video: J (region similarity) and F (boundary measure), DAVIS rules
# ----------------------------------------------------------------------------------------------------------------


def region_similarity(gt: Any, pred: Any, void: Any = None) -> float | np.ndarray:
    """DAVIS J (``davis2017.metrics.db_eval_iou``): IoU with void removed; 1 when the union is empty.

    ``gt``/``pred``: ``[H, W]`` or ``[T, H, W]`` (per-frame values returned)."""
    return mask_iou(gt, pred, void, empty=1.0)


def seg_to_boundary(mask: Any) -> np.ndarray:
    """One-pixel boundary map of a binary mask ``[H, W]`` (DAVIS ``_seg2bmap`` at the mask's own size): a pixel
    is on the boundary when it differs from its right, bottom or bottom-right neighbour (last row / column:
    right / bottom neighbour only; the bottom-right pixel never)."""
    seg = as_mask(mask, "mask")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: float) -> np.ndarray:
    """skimage ``disk(radius)``: ``x² + y² <= r²`` on the integer grid ``-r..r`` (uint8)."""
    r = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(r, r)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def _f_measure_2d(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None, bound_th: float) -> float:
    import cv2

    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    if void is not None:
        pred = pred & ~void
        gt = gt & ~void
    fg_b = seg_to_boundary(pred)
    gt_b = seg_to_boundary(gt)
    kernel = _disk(bound_pix)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    n_fg = int(fg_b.sum())
    n_gt = int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = int((fg_b & gt_dil).sum()) / n_fg
        recall = int((gt_b & fg_dil).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f_measure(gt: Any, pred: Any, void: Any = None, bound_th: float = 0.008) -> float | np.ndarray:
    """DAVIS F (``davis2017.metrics.db_eval_boundary``): boundary precision/recall F-measure.

    Void pixels are removed from both masks before the boundaries are taken. A boundary pixel matches when a
    boundary pixel of the other mask lies within ``bound_pix``: ``bound_th`` itself when ≥ 1, else
    ``ceil(bound_th · ‖(H, W)‖)`` (8 px at 480×854), as a disk (skimage ``disk``) dilation. Empty-mask rules:
    empty prediction → P = 1, R = 0; empty GT → P = 0, R = 1; both empty → 1; F = 0 when P + R = 0.
    ``gt``/``pred``: ``[H, W]`` or ``[T, H, W]`` (per-frame values returned).
    """
    g = as_mask(gt, "gt", ndim=None)
    p = as_mask(pred, "pred", ndim=None, shape=g.shape)
    v = _void_or_none(void, g.shape)
    if g.ndim == 2:
        return _f_measure_2d(p, g, v, bound_th)
    if g.ndim != 3:
        raise ValueError(f"gt must be [H, W] or [T, H, W], got {g.shape}")
    return np.array([_f_measure_2d(p[t], g[t], None if v is None else v[t], bound_th) for t in range(g.shape[0])])


def jf_objects(gt: Any, pred: Any, void: Any = None, *, bound_th: float = 0.008) -> dict[str, np.ndarray]:
    """J and F per object and frame, as ``DAVISEvaluation`` scores a multi-object sequence.

    ``gt``/``pred``: bool ``[K, T, H, W]`` (object k's mask in frame t; e.g. from ``readers.split_objects`` per
    frame); ``void``: ``[T, H, W]`` or None (DAVIS-2017's 255). Returns ``{"J": float64 [K, T], "F": [K, T]}``.
    """
    g = as_mask(gt, "gt", ndim=4)
    p = as_mask(pred, "pred", ndim=4, shape=g.shape)
    v = _void_or_none(void, g.shape[1:])
    j = np.stack([np.asarray(region_similarity(g[k], p[k], v), np.float64) for k in range(g.shape[0])])
    f = np.stack([np.asarray(boundary_f_measure(g[k], p[k], v, bound_th), np.float64) for k in range(g.shape[0])])
    return {"J": j.reshape(g.shape[:2]), "F": f.reshape(g.shape[:2])}


def davis_statistics(per_frame: Any) -> tuple[float, float, float]:
    """DAVIS sequence statistics ``(M, R, D)`` (``davis2017.utils.db_statistics``): mean, recall (fraction
    > 0.5) and decay (mean of the first quarter minus the last quarter, bins from
    ``round(linspace(1, N, 5)) - 1``), NaN-aware. The official code casts the bin indices to uint8, which wraps
    for sequences over 255 frames; int64 here."""
    v = np.asarray(_to_numpy(per_frame, "per_frame"), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        m = float(np.nanmean(v))
        r = float(np.nanmean(v > 0.5))
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        d = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return m, r, d


def jf_sequence(
    gt: Any, pred: Any, void: Any = None, *, bound_th: float = 0.008, drop_first_last: bool = True
) -> dict[str, Any]:
    """J and F of one object over a sequence ``[T, H, W]``: per-frame values and (M, R, D) statistics.

    ``drop_first_last``: score frames 1..T-2 only, as ``DAVISEvaluation`` does for the semi-supervised task
    (the first frame is given, the last is not annotated in DAVIS-2017 test). Returns ``J``/``F`` dicts with
    ``M``, ``R``, ``D``, the arrays ``J_per_frame``/``F_per_frame`` (all T frames) and ``JF`` = (J_M + F_M) / 2.
    """
    g = as_mask(gt, "gt", ndim=3)
    j = np.asarray(region_similarity(g, pred, void), dtype=np.float64)
    f = np.asarray(boundary_f_measure(g, pred, void, bound_th=bound_th), dtype=np.float64)
    sel = slice(1, -1) if drop_first_last else slice(None)
    jm, jr, jd = davis_statistics(j[sel])
    fm, fr, fd = davis_statistics(f[sel])
    return {
        "J": {"M": jm, "R": jr, "D": jd},
        "F": {"M": fm, "R": fr, "D": fd},
        "JF": (jm + fm) / 2,
        "J_per_frame": j,
        "F_per_frame": f,
    }
