"""Semantic-SAM's multi-granularity predictor: one image, a few clicks (and/or a box) → up to six masks, one per level.

Usage::

    model = seem.load("swint_only_sam_many2many.pth")  # a SemanticSAM
    predictor = GranularityPredictor(model)
    predictor.set_image("photo.jpg")                 # numpy HWC uint8 RGB, PIL image or path; encoded once
    results = predictor.predict([[320, 200]])        # pixel (x, y) in the ORIGINAL image
    for r in results:                                # sorted by predicted IoU, best first
        r.mask, r.level, r.predicted_iou, r.area, r.bbox

Levels: Semantic-SAM answers every prompt with six granularity tokens. ``level`` 1..6 is the user-facing number (1 =
whole object or larger region ... 6 = finest part), mapped to decoder tokens by the official ``prompt_switch``
(``PROMPT_SWITCH`` = {1: 3, 2: 2, 3: 0, 4: 4, 5: 1, 6: 5}), as the official automatic mask generator does.

Image preparation (official ``prepare_image``): PIL bicubic resize so that the short side is 640 and the long side is
``int(640 * long / short)`` (truncated; no resize when the image already has that size). The model sees the resized
image; by default masks are brought back to the **original** image size (stride-4 logits → bilinear to the padded
input → crop → bilinear to the original size → ``> 0``).

Prompts (the model was trained with exactly one click or one box per object; everything beyond that is defined
here):

- Every prompt (each click, positive or negative, and the box) is decoded **independently**: its six token queries
  attend only to each other (``exact_batching=False``, the block-diagonal rule of official training), so adding a
  click never changes another click's masks. ``exact_batching=True`` lets all prompts' queries attend to each other,
  as the official batched inference does.
- **Positive clicks and the box** are the prompts that define the object. At each level the result is the **union**
  of their masks for that level's token; its ``predicted_iou`` is the **mean** of their IoU predictions at that
  token. Several positive clicks therefore grow the region (each click contributes the part it sees at that level).
- **A box** is one more positive prompt (a box query, ``pb = 0`` like the official inference paths) and also a hard
  limit: every level's mask is clipped to the box.
- **A negative click** removes a region: its own six masks are decoded and the **largest** one that covers no positive
  click pixel (nor the box centre, with a box) is subtracted from every level's mask. When each of its six masks
  covers one of those, it removes nothing (there is no region around it that excludes what the positive prompts asked
  for). Negative clicks do not change ``predicted_iou``.
- At least one positive click or a box is required.

Per-level candidates are then ranked like the official ``SemanticSAMPredictor``: sorted by predicted IoU, those below
``min_iou`` dropped unless nothing would remain (then the best one is kept), a mask dropped when its pixel IoU with an
already kept mask exceeds ``dedup_iou`` (compared before clean-up), then holes and islands smaller than
``min_region`` pixels are removed with SAM's ``remove_small_regions`` (holes first).

``official=True`` reproduces ``SemanticSAMPredictor.predict`` + ``process_multi_mask`` exactly (one positive click,
all six tokens): results at the **resized** size, IoUs rounded to 2 decimals before the ``min_iou`` test, the
**last** (lowest-IoU) mask kept when every mask fails, and ``sort="area"`` ordering by the area *before* clean-up.

Labels: a model with trained class heads (``cfg.labels.heads``) labels every mask with its object class (``label``)
and part class (``part_label``), each with a ``*_score``: the per-class sigmoid of the token's class logits (the heads
are trained with a sigmoid focal loss), averaged over the positive prompts (clicks and box) of the level, argmax over
the vocabulary. The vocabulary is the model's stored class table, or ``set_vocabulary(object_classes, part_classes)``
(any names with a text encoder, a subset of the stored table without). The released checkpoints hold the heads
untrained (``TEXT.ARCH: noencoder``): ``label`` and ``part_label`` are then None and ``label_reason`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from seem.models.semantic_sam import NO_LABEL_REASON, LabelVocabulary, SemanticSAM, SemanticSAMFeatures

__all__ = [
    "ALL_LEVELS",
    "DEFAULT_SHORT_SIDE",
    "NO_LABEL_REASON",
    "PROMPT_SWITCH",
    "GranularityMask",
    "GranularityPredictor",
    "check_levels",
    "load_rgb",
    "mask_to_xywh",
    "pick_labels",
    "remove_small_regions",
    "resize_short_side",
    "resized_size",
]

PROMPT_SWITCH: dict[int, int] = {1: 3, 2: 2, 3: 0, 4: 4, 5: 1, 6: 5}
"""User granularity level (1 = coarsest ... 6 = finest) → decoder token index (official ``prompt_switch``)."""

ALL_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

DEFAULT_SHORT_SIDE = 640
"""Short side of the model input (official ``prepare_image``: ``Resize(640, BICUBIC)``)."""

SortKey = Literal["iou", "area", "level"]


# ------------------------------------------------------------------------------------------------------------ inputs


def check_levels(levels: Sequence[int] | int | None) -> tuple[int, ...]:
    """Validate granularity levels: a non-empty sequence of distinct ints in 1..6 (None → all six), order kept."""
    if levels is None:
        return ALL_LEVELS
    if isinstance(levels, int | np.integer) and not isinstance(levels, bool):
        levels = [int(levels)]
    if isinstance(levels, str) or not isinstance(levels, Sequence | np.ndarray):
        raise TypeError(f"levels must be a sequence of ints in 1..6, got {type(levels).__name__}")
    out: list[int] = []
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, int | np.integer):
            raise TypeError(f"levels must be ints in 1..6, got {lv!r}")
        if int(lv) not in PROMPT_SWITCH:
            raise ValueError(f"granularity level {int(lv)} is outside 1..6 (1 = coarsest, 6 = finest)")
        if int(lv) in out:
            raise ValueError(f"granularity level {int(lv)} is given twice")
        out.append(int(lv))
    if not out:
        raise ValueError("levels must name at least one granularity level in 1..6")
    return tuple(out)


def load_rgb(image: Any) -> np.ndarray:
    """An image as a contiguous HWC uint8 RGB array.

    Accepts a numpy array (``[H, W, 3]`` RGB or ``[H, W]`` grey, uint8), a PIL image (any mode, converted to RGB), a
    path (str / Path, opened with PIL) or a uint8 torch tensor ``[3, H, W]`` (CHW, as the official code passes).
    """
    if isinstance(image, str | Path):
        p = Path(image)
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
        with Image.open(p) as im:
            return np.array(im.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"a tensor image must be uint8 [3, H, W] (CHW RGB), got {image.dtype} {tuple(image.shape)}"
            )
        image = image.permute(1, 2, 0).cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, PIL image, path or uint8 tensor, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image array must be uint8 RGB (0..255), got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image array must be [H, W, 3] RGB (or [H, W] grey), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def resized_size(height: int, width: int, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[int, int]:
    """``(H', W')`` of the official resize rule: short side → ``short_side``, long ``int(short_side * long / short)``.

    Examples: 400x600 → 640x960; 300x451 → 640x962 (truncated).
    """
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def resize_short_side(image: np.ndarray, short_side: int = DEFAULT_SHORT_SIDE) -> np.ndarray:
    """Official ``transforms.Resize(short_side, BICUBIC)`` on a PIL image: HWC uint8 RGB → resized HWC uint8 RGB.

    Returns the input unchanged when it already has the target size.
    """
    h, w = image.shape[:2]
    nh, nw = resized_size(h, w, short_side)
    if (nh, nw) == (h, w):
        return image
    out = Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC)
    return np.array(out)


# ---------------------------------------------------------------------------------------------------- mask helpers


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """SAM's clean-up: fill holes (``mode="holes"``) or remove islands (``"islands"``) smaller than ``area_thresh``.

    Components are found with OpenCV, 8-connectivity. Islands: when every island is small the largest is kept.
    Returns ``(bool mask [H, W], changed)``.
    """
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask.astype(bool)).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[:, -1][1:]  # label 0 is the background of ``working``
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask.astype(bool), False
    fill = np.zeros(n_labels, dtype=bool)  # labels that end up True
    fill[0] = True
    fill[small] = True
    if not holes:
        fill = ~fill
        if not fill.any():  # every island is small: keep the largest
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[regions], True


def mask_to_xywh(mask: np.ndarray) -> list[int]:
    """SAM's box of a bool mask ``[H, W]``: ``[x0, y0, x1 - x0, y1 - y0]`` with inclusive max indices ``x1, y1``
    (so a one-pixel mask has width 0); ``[0, 0, 0, 0]`` for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0]), int(ys[-1] - ys[0])]


def _mask_iou(a: np.ndarray, b: np.ndarray, empty: float) -> float:
    union = np.logical_or(a, b).sum()
    if union == 0:
        return empty
    return float(np.logical_and(a, b).sum() / union)


# --------------------------------------------------------------------------------------------------------- results


@dataclass
class GranularityMask:
    """One predicted mask.

    Attributes:
        mask: bool ``[H, W]``: the original image size (``official=True``: the resized model input size).
        level: granularity level 1..6 (1 = coarsest).
        token: the decoder token of that level (``PROMPT_SWITCH[level]``).
        predicted_iou: the model's IoU prediction (raw IoU head, no sigmoid: values above 1 occur); the mean over the
            positive prompts.
        area: pixels of ``mask``.
        bbox: SAM's XYWH box of ``mask`` (see ``mask_to_xywh``).
        raw_area: pixels before hole filling / island removal.
        label, part_label: object and part class names (None when unavailable, see ``label_reason``).
        label_reason: why ``label`` and/or ``part_label`` are None (None when both are set).
        label_score, part_label_score: sigmoid score of ``label`` / ``part_label`` in 0..1 (None with them).
    """

    mask: np.ndarray
    level: int
    token: int
    predicted_iou: float
    area: int
    bbox: list[int]
    raw_area: int
    label: str | None = None
    part_label: str | None = None
    label_reason: str | None = NO_LABEL_REASON
    label_score: float | None = None
    part_label_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidate:
    level: int
    token: int
    iou: float
    mask: np.ndarray
    label: str | None = None
    label_score: float | None = None
    part_label: str | None = None
    part_label_score: float | None = None


def pick_labels(prob: Tensor, vocabulary: LabelVocabulary, kind: str) -> tuple[list[str | None], list[float | None]]:
    """Per-class probabilities ``[M, N]`` (sigmoid of the class logits) → per row the argmax class name of the
    ``kind`` (``"object"`` / ``"part"``) table and its probability."""
    score, idx = prob.float().max(-1)
    return [vocabulary.name(kind, int(i)) for i in idx.tolist()], [float(v) for v in score.tolist()]


# ------------------------------------------------------------------------------------------------------- predictor


class GranularityPredictor:
    """Click / box prompts → multi-granularity masks with a ``SemanticSAM`` (see the module docstring).

    Args:
        model: a ``SemanticSAM`` (eval mode is set here).
        short_side: short side of the model input (official 640).
    """

    def __init__(self, model: SemanticSAM, *, short_side: int = DEFAULT_SHORT_SIDE) -> None:
        if not isinstance(model, SemanticSAM):
            kind = type(model).__name__
            raise TypeError(
                f"GranularityPredictor needs a Semantic-SAM model (seem.SemanticSAM, e.g. loaded from "
                f"swint_only_sam_many2many.pth), got a {kind}; SEEM checkpoints have no granularity tokens"
            )
        if short_side < 32:
            raise ValueError(f"short_side must be >= 32, got {short_side}")
        self.model = model.eval()
        self.short_side = int(short_side)
        self.features: SemanticSAMFeatures | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.input_image: np.ndarray | None = None
        self.vocabulary: LabelVocabulary = model.usable_vocabulary()

    # ----------------------------------------------------------------------------------------------- labels

    def set_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> None:
        """Label masks with these object / part classes (None: the model's stored table for that head).

        Raises ``ValueError`` (with the reason) when the model has no trained head for classes given, or cannot
        embed a name (no text encoder and not in the stored table).
        """
        self.vocabulary = self.model.usable_vocabulary(self.model.build_vocabulary(object_classes, part_classes))

    @property
    def label_reason(self) -> str | None:
        """Why results carry no ``label`` and/or ``part_label`` (None when both are given)."""
        return self.model.label_reason(self.vocabulary)

    # ---------------------------------------------------------------------------------------------------- image

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def set_image(self, image: Any) -> None:
        """Resize (official rule) and encode ``image`` once; later ``predict`` calls reuse the features.

        ``image``: numpy HWC uint8 RGB, PIL image, path, or uint8 CHW tensor (see ``load_rgb``).
        """
        rgb = load_rgb(image)
        resized = resize_short_side(rgb, self.short_side)
        t = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            x = self.model.preprocess(t)
            self.features = self.model.encode_image(x, (int(t.shape[1]), int(t.shape[2])))
        self.original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))
        self.input_image = resized

    def reset_image(self) -> None:
        self.features = self.original_size = self.input_size = self.input_image = None

    # -------------------------------------------------------------------------------------------------- predict

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        *,
        levels: Sequence[int] | None = ALL_LEVELS,
        sort: SortKey = "iou",
        dedup_iou: float = 0.95,
        min_iou: float = 0.5,
        exact_batching: bool = False,
        min_region: int = 100,
        official: bool = False,
    ) -> list[GranularityMask]:
        """Masks for the prompts, one candidate per level, ranked and de-duplicated (see the module docstring).

        Args:
            point_coords: ``[N, 2]`` pixel ``(x, y)`` in the ORIGINAL image (x = column, y = row), ``0 <= x <= W``,
                ``0 <= y <= H``; None for a box-only prompt.
            point_labels: ``[N]`` 1 (positive) / 0 (negative); None = all positive.
            box: XYXY pixels in the original image (``[4]`` or ``[1, 4]``), ``x0 < x1``, ``y0 < y1``, inside it.
            levels: granularity levels 1..6 to return (1 = coarsest).
            sort: ``"iou"`` (predicted IoU, best first), ``"area"`` (smallest first) or ``"level"`` (1 first).
            dedup_iou: drop a mask whose pixel IoU with an already kept mask is above this (before clean-up).
            min_iou: drop masks whose predicted IoU is below this, unless none would remain.
            exact_batching: let all prompts attend to each other (official batched inference); default independent.
            min_region: fill holes and remove islands smaller than this many pixels (0 disables).
            official: reproduce the official ``SemanticSAMPredictor`` exactly (one positive click, all six levels,
                results at the resized size; see the module docstring).

        Returns:
            ``GranularityMask`` records in ``sort`` order.
        """
        if self.features is None or self.original_size is None or self.input_size is None:
            raise RuntimeError("call set_image(image) before predict()")
        lv = check_levels(levels)
        if sort not in ("iou", "area", "level"):
            raise ValueError(f"sort must be 'iou', 'area' or 'level', got {sort!r}")
        if not 0.0 <= float(dedup_iou) <= 1.0:
            raise ValueError(f"dedup_iou must lie in [0, 1], got {dedup_iou}")
        if min_region < 0:
            raise ValueError(f"min_region must be >= 0, got {min_region}")
        h0, w0 = self.original_size
        pts, labels = self._check_points(point_coords, point_labels, (h0, w0))
        bx = self._check_box(box, (h0, w0))
        pos = pts[labels == 1]
        neg = pts[labels == 0]
        if len(pos) == 0 and bx is None:
            raise ValueError(
                "give at least one positive click (label 1) or a box; negative clicks alone select nothing"
            )
        if official:
            if len(pos) != 1 or len(neg) or bx is not None:
                raise ValueError("official=True reproduces the official predictor: exactly one positive click, no box")
            if set(lv) != set(ALL_LEVELS):
                raise ValueError("official=True evaluates all six levels, as the official predictor does")

        out_size = self.input_size if official else self.original_size
        # prompts in decode order: positive clicks, negative clicks, then the box
        clicks = np.concatenate([pos, neg]) if len(pts) else None
        rel_pts = None if clicks is None else torch.from_numpy(clicks / np.array([w0, h0], dtype=np.float64)).float()
        rel_box = None if bx is None else torch.from_numpy(bx / np.array([w0, h0, w0, h0], dtype=np.float64)).float()
        vocab = self.vocabulary
        labelled = vocab.object_embeddings is not None or vocab.part_embeddings is not None
        with torch.no_grad():
            out = self.model.decode_clicks(
                self.features,
                None if rel_pts is None else rel_pts.to(self.device),
                None if rel_box is None else rel_box[None].to(self.device),
                relative=True,
                exact_batching=exact_batching,
                vocabulary=vocab if labelled else None,
            )
        assert out.masks is not None
        masks = out.masks[0]  # [Q, 6, h4, w4]
        ious = out.ious[0].float().cpu()  # [Q, 6]
        n_pos, n_neg = len(pos), len(neg)
        pos_idx = list(range(n_pos)) + ([n_pos + n_neg] if bx is not None else [])
        neg_idx = list(range(n_pos, n_pos + n_neg))

        def binary(q: int, tokens: Sequence[int]) -> np.ndarray:
            return self._to_frame(masks[q, list(tokens)], out_size)

        anchors = pos if bx is None else np.concatenate([pos, [[(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2]]])
        pos_pixels = self._pixels(anchors, (h0, w0), out_size)  # what a negative click must not remove
        removal = np.zeros(out_size, dtype=bool)
        for q in neg_idx:
            own = binary(q, range(masks.shape[1]))  # [6, H, W]
            ok = [k for k in range(own.shape[0]) if not own[k][pos_pixels[:, 1], pos_pixels[:, 0]].any()]
            if ok:
                best = max(ok, key=lambda k: int(own[k].sum()))
                removal |= own[best]
        box_region = None
        if bx is not None:
            box_region = np.zeros(out_size, dtype=bool)
            sy, sx = out_size[0] / h0, out_size[1] / w0
            x0, y0 = int(np.floor(bx[0] * sx)), int(np.floor(bx[1] * sy))
            x1, y1 = int(np.ceil(bx[2] * sx)), int(np.ceil(bx[3] * sy))
            box_region[y0:y1, x0:x1] = True

        tokens = [PROMPT_SWITCH[level] for level in lv]
        per_prompt = {q: binary(q, tokens) for q in pos_idx}  # q -> [L, H, W]
        names: dict[str, tuple[list[str | None], list[float | None]]] = {}
        for kind, logits in (("object", out.object_logits), ("part", out.part_logits)):
            if logits is None:
                names[kind] = ([None] * len(tokens), [None] * len(tokens))
                continue
            # mean per-class probability over the positive prompts of each level's token → argmax
            prob = logits[0][pos_idx][:, tokens].float().sigmoid().mean(0)  # [L, N]
            names[kind] = pick_labels(prob, vocab, kind)
        cands = []
        for j, (level, tok) in enumerate(zip(lv, tokens, strict=True)):
            m = np.logical_or.reduce([per_prompt[q][j] for q in pos_idx])
            m &= ~removal
            if box_region is not None:
                m &= box_region
            iou = float(ious[pos_idx, tok].mean()) if len(pos_idx) > 1 else float(ious[pos_idx[0], tok])
            cands.append(
                _Candidate(
                    level,
                    tok,
                    iou,
                    m,
                    label=names["object"][0][j],
                    label_score=names["object"][1][j],
                    part_label=names["part"][0][j],
                    part_label_score=names["part"][1][j],
                )
            )
        results = self._rank(cands, sort, dedup_iou, min_iou, min_region, official)
        reason = self.label_reason
        for r in results:
            r.label_reason = reason
        return results

    # ------------------------------------------------------------------------------------------------- internals

    def _to_frame(self, lowres: Tensor, size: tuple[int, int]) -> np.ndarray:
        """Stride-4 logits ``[K, h4, w4]`` → bool ``[K, *size]`` (upscale to the input, then resize to ``size``)."""
        assert self.features is not None and self.input_size is not None
        out = np.zeros((lowres.shape[0], *size), dtype=bool)
        for k in range(lowres.shape[0]):  # one at a time: large originals need H * W * 4 bytes per mask
            logits = self.model.upscale_masks(lowres[k : k + 1], self.features)  # [1, H', W']
            if tuple(size) != tuple(self.input_size):
                logits = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            out[k] = (logits[0] > 0).cpu().numpy()
        return out

    @staticmethod
    def _pixels(points: np.ndarray, orig: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Original-image pixel ``(x, y)`` → integer ``(col, row)`` in a frame of ``size``, clipped inside it."""
        if len(points) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        scale = np.array([size[1] / orig[1], size[0] / orig[0]])
        px = np.floor(points * scale).astype(np.int64)
        px[:, 0] = px[:, 0].clip(0, size[1] - 1)
        px[:, 1] = px[:, 1].clip(0, size[0] - 1)
        return px

    @staticmethod
    def _check_points(coords: Any, labels: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        h, w = size
        if coords is None:
            if labels is not None and len(np.asarray(labels).reshape(-1)):
                raise ValueError("point_labels given without point_coords")
            return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        pts = np.asarray(coords.cpu() if isinstance(coords, Tensor) else coords, dtype=np.float64)
        if pts.ndim == 1 and pts.shape == (2,):
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"point_coords must be [N, 2] pixel (x, y), got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("point_coords must be finite")
        bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"click {i} at (x={pts[i, 0]:g}, y={pts[i, 1]:g}) is outside the image (width {w}, height {h}); "
                "clicks are pixel (x, y) in the original image"
            )
        if labels is None:
            lab = np.ones(len(pts), dtype=np.int64)
        else:
            lab = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
            if lab.shape[0] != len(pts):
                raise ValueError(f"point_labels must have one label per click ({len(pts)}), got {lab.shape[0]}")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(lab).tolist()}")
            lab = lab.astype(np.int64)
        return pts, lab

    @staticmethod
    def _check_box(box: Any, size: tuple[int, int]) -> np.ndarray | None:
        if box is None:
            return None
        b = np.asarray(box.cpu() if isinstance(box, Tensor) else box, dtype=np.float64).reshape(-1)
        if b.shape != (4,):
            raise ValueError(f"box must be one XYXY box ([4] or [1, 4]), got {b.size} values")
        if not np.isfinite(b).all():
            raise ValueError("box must be finite")
        x0, y0, x1, y1 = b.tolist()
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box must be XYXY with x1 > x0 and y1 > y0, got {b.tolist()}")
        h, w = size
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"box {b.tolist()} is not inside the image (width {w}, height {h})")
        return b

    @staticmethod
    def _rank(
        cands: list[_Candidate], sort: SortKey, dedup_iou: float, min_iou: float, min_region: int, official: bool
    ) -> list[GranularityMask]:
        if official:  # official: torch.argsort(ious, descending=True)
            order = torch.argsort(torch.tensor([c.iou for c in cands], dtype=torch.float32), descending=True).tolist()
        else:
            order = sorted(range(len(cands)), key=lambda i: -cands[i].iou)
        ranked = [cands[i] for i in order]
        kept: list[_Candidate] = []
        for i, c in enumerate(ranked):
            score = round(c.iou, 2) if official else c.iou
            drop = score < min_iou
            if not drop:
                empty_iou = float("nan") if official else 1.0
                drop = any(_mask_iou(c.mask, k.mask, empty_iou) > dedup_iou for k in kept)
            if official and i == len(ranked) - 1 and not kept:
                drop = False  # official: the last (lowest IoU) mask is kept when nothing else was
            if not drop:
                kept.append(c)
        if not kept and ranked:
            kept.append(ranked[0])  # ours: keep the best one when every mask fails min_iou
        results = []
        for c in kept:
            m = c.mask
            if min_region > 0:
                m, _ = remove_small_regions(m, min_region, mode="holes")
                m, _ = remove_small_regions(m, min_region, mode="islands")
            results.append(
                GranularityMask(
                    mask=m,
                    level=c.level,
                    token=c.token,
                    predicted_iou=c.iou,
                    area=int(m.sum()),
                    bbox=mask_to_xywh(m),
                    raw_area=int(c.mask.sum()),
                    label=c.label,
                    part_label=c.part_label,
                    label_score=c.label_score,
                    part_label_score=c.part_label_score,
                )
            )
        if sort == "area":
            if official:  # official: sorted by the area before clean-up
                idx = torch.argsort(torch.tensor([r.raw_area for r in results]), descending=False).tolist()
            else:
                idx = sorted(range(len(results)), key=lambda i: results[i].area)
            results = [results[i] for i in idx]
        elif sort == "level":
            results.sort(key=lambda r: r.level)
        return results
