"""Train a ``ClickRefiner`` (``seem.models.click_refiner``) from masks alone, with simulated coarse masks and clicks.

The refiner corrects a decoder's mask where the user clicked, so it needs examples of (image, wrong mask, clicks on
the errors) → right mask. Those are made here from any annotated images (the trainer's data sources, e.g. the
default model's ``configs/default_model.yaml``) without running the decoder:

- **pool**: every image of the sources resized to a short side (the model's input scale), its masks between
  ``min_frac`` and ``max_frac`` of the image kept (at most ``max_masks``, bit-packed in memory);
- **coarse mask** (``simulate_coarse``): the target mask damaged the way a small decoder errs — a part of it missing
  (another annotation's region cut out), a neighbouring region added, eroded / dilated, blurred to stride 4..16,
  replaced by a wrong region or nothing — then read as logits of random confidence;
- **clicks** (``simulate_clicks``): a first positive click deep inside the object, then clicks at the centres of the
  largest error regions (positive on missed pixels, negative on wrong ones), as the RITM protocol places them, plus a
  few clicks on already-right pixels.

Loss: binary cross-entropy + soft IoU on the refiner's logits against the target. CPU training uses bf16 autocast.
With a ``--teacher`` (a trained refiner, e.g. the shipped one) a smaller refiner (``--widths``, ``--blocks``,
``--context``), cut out of the teacher's weights (``ClickRefiner.narrowed``), also learns the teacher's output on every
example (``distill_loss``): a cheaper net that inherits what the teacher learned over many recorded rounds.

    seem train-refiner --data configs/default_model.yaml --out runs/refiner --steps 5000
    (or: python -m seem.train.refiner ...)

writes ``refiner.safetensors`` (state dict of ``ClickRefiner``, its config in the metadata) every ``--save-every``
steps; ``scripts/make_default_model.py --refiner runs/refiner/refiner.safetensors`` puts it into a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seem.models.click_refiner import (
    MODEL_RUN_SETTINGS,
    ClickRefiner,
    ClickRefinerConfig,
    SimilarityHead,
    click_maps,
    stride8_features,
)
from seem.models.config import PIXEL_MEAN, PIXEL_STD

if TYPE_CHECKING:
    from seem.predictor import Segmenter

REFINER_FILE = "refiner.safetensors"


@dataclass
class PoolImage:
    """One pool entry: ``image [H, W, 3]`` uint8 RGB and its masks bit-packed (``np.packbits`` of ``[N, H, W]``)."""

    image: np.ndarray
    packed: np.ndarray
    count: int

    def masks(self) -> np.ndarray:
        """``[N, H, W]`` bool."""
        h, w = self.image.shape[:2]
        return np.unpackbits(self.packed, count=self.count * h * w).reshape(self.count, h, w).astype(bool)

    def mask(self, k: int) -> np.ndarray:
        """Mask ``k`` alone, ``[H, W]`` bool (unpacks only its bytes)."""
        h, w = self.image.shape[:2]
        start, n = k * h * w, h * w
        bits = np.unpackbits(self.packed[start // 8 : (start + n + 7) // 8 + 1])
        return bits[start % 8 : start % 8 + n].reshape(h, w).astype(bool)


def build_pool(
    samples: Sequence[object] | object,
    short_side: int = 384,
    min_frac: float = 0.005,
    max_frac: float = 0.85,
    max_masks: int = 24,
    seed: int = 0,
    progress: bool = True,
) -> list[PoolImage]:
    """Resize each ``seem.train.data.Sample`` of ``samples`` (a sequence or a ``MergedSource``) to ``short_side``
    and keep the masks covering ``[min_frac, max_frac]`` of it (a random ``max_masks`` of them); images left with no
    mask are skipped."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    pool: list[PoolImage] = []
    n = len(samples)  # type: ignore[arg-type]
    for i in tqdm(range(n), desc="refiner pool", disable=not progress):
        s = samples[i]  # type: ignore[index]
        img = s.image.permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
        scale = short_side / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        masks = s.masks.numpy()
        if masks.shape[0] == 0:
            continue
        frac = masks.reshape(masks.shape[0], -1).mean(1)
        keep = np.flatnonzero((frac >= min_frac) & (frac <= max_frac))
        if keep.size == 0:
            continue
        if keep.size > max_masks:
            keep = np.sort(rng.choice(keep, max_masks, replace=False))
        small = np.stack(
            [cv2.resize(masks[k].astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) for k in keep]
        )
        small = small.astype(bool)
        small = small[small.reshape(small.shape[0], -1).any(1)]
        if small.shape[0]:
            pool.append(PoolImage(np.ascontiguousarray(img), np.packbits(small), int(small.shape[0])))
    if not pool:
        raise ValueError("the data sources gave no usable mask for the refiner pool")
    return pool


def _blob(rng: np.random.Generator, shape: tuple[int, int], frac: float) -> np.ndarray:
    """A smooth random region covering about ``frac`` of ``shape``."""
    h, w = shape
    g = cv2.resize(rng.standard_normal((max(2, h // 32), max(2, w // 32))).astype(np.float32), (w, h))
    return np.asarray(g > np.quantile(g, 1.0 - frac))


def _morph(m: np.ndarray, r: int, grow: bool) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    op = cv2.dilate if grow else cv2.erode
    return op(m.astype(np.uint8), k).astype(bool)


def simulate_coarse(rng: np.random.Generator, gt: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Coarse logits ``[H, W]`` float32 for the target ``gt [H, W]`` bool, damaged with the help of the image's
    other masks ``others [N, H, W]`` (see the module docstring)."""
    h, w = gt.shape
    area = max(1, int(gt.sum()))
    m = gt.copy()
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.choice(["missing", "extra", "morph", "wrong", "keep"], p=[0.35, 0.3, 0.15, 0.1, 0.1])
        if kind == "missing":
            inter = (others & m).reshape(len(others), -1).sum(1) if len(others) else np.zeros(0)
            ok = np.flatnonzero((inter > 0.05 * area) & (inter < 0.7 * area))
            cut = (
                others[rng.choice(ok)] if ok.size and rng.random() < 0.7 else _blob(rng, (h, w), rng.uniform(0.1, 0.5))
            )
            m = m & ~cut
        elif kind == "extra":
            ring = _morph(m, 9, True) & ~m
            touch = (others & ring).reshape(len(others), -1).any(1) if len(others) else np.zeros(0, bool)
            outside = (others & ~m).reshape(len(others), -1).sum(1) if len(others) else np.zeros(0)
            ok = np.flatnonzero(touch & (outside > 0.05 * area) & (outside < 2.0 * area))
            if ok.size and rng.random() < 0.7:
                m = m | others[rng.choice(ok)]
            else:
                m = m | (_blob(rng, (h, w), rng.uniform(0.05, 0.3)) & _morph(m, int(rng.integers(10, 40)), True))
        elif kind == "morph":
            m = _morph(m, int(rng.integers(2, 12)), bool(rng.random() < 0.5))
        elif kind == "wrong":
            m = others[rng.integers(len(others))].copy() if len(others) and rng.random() < 0.6 else np.zeros_like(m)
    # a decoder's stride-4..16 logits, upsampled, and its confidence
    f = int(rng.choice([4, 4, 8, 16]))
    p = cv2.resize(m.astype(np.float32), (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
    scale = rng.uniform(2.0, 10.0)
    noise = cv2.resize(rng.standard_normal((max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h))
    return ((2.0 * p - 1.0) * scale + noise * rng.uniform(0.0, 2.0)).astype(np.float32)


def _inner_point(rng: np.random.Generator, region: np.ndarray, jitter: float) -> tuple[float, float] | None:
    """A point deep inside ``region``: among the pixels whose distance to its border is ≥ ``(1 - jitter)`` × the
    largest → ``(x, y)``, or None for an empty region."""
    if not region.any():
        return None
    d = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(region & (d >= (1.0 - jitter) * d.max()))
    i = int(rng.integers(len(ys)))
    return float(xs[i]), float(ys[i])


def simulate_clicks(rng: np.random.Generator, gt: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clicks for the target ``gt`` and coarse logits → ``(coords [N, 2] (x, y) pixels, labels [N] 1 / 0)``."""
    pts: list[tuple[float, float]] = []
    labs: list[int] = []
    first = _inner_point(rng, gt, rng.uniform(0.0, 0.6))
    if first is not None:
        pts.append(first)
        labs.append(1)
    pred = coarse > 0
    n_err = int(rng.choice([0, 1, 2, 3, 4], p=[0.15, 0.4, 0.2, 0.15, 0.1]))
    if n_err:
        comps = []
        for lab, err in ((1, gt & ~pred), (0, pred & ~gt)):
            n, cc, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
            comps += [(int(stats[i, cv2.CC_STAT_AREA]), lab, cc == i) for i in range(1, n)]
        comps.sort(key=lambda c: -c[0])
        for area, lab, region in comps[:n_err]:
            if area < 16:
                break
            p = _inner_point(rng, region, rng.uniform(0.0, 0.3))
            if p is not None:
                pts.append(p)
                labs.append(lab)
    for _ in range(int(rng.choice([0, 0, 1, 2]))):  # clicks on pixels already right
        lab = int(rng.random() < 0.5)
        p = _inner_point(rng, (gt & pred) if lab else (~gt & ~pred), 1.0)
        if p is not None:
            pts.append(p)
            labs.append(lab)
    order = rng.permutation(len(pts)) if len(pts) > 1 else np.arange(len(pts))
    return np.array(pts, np.float32).reshape(-1, 2)[order], np.array(labs, np.int64)[order]


def _crop(
    rng: np.random.Generator, item: PoolImage, size: int, feats: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None] | None:
    """A ``size``² crop (scale jitter, flip) of a pool image around one of its masks → (image, masks, index,
    features). With the image's stride-8 ``feats [D, H8, W8]`` the crop starts on multiples of 8 and the features
    are resized and cropped with it (``[D, size / 8, size / 8]``), else the last item is None."""
    masks = item.masks()
    k = int(rng.integers(masks.shape[0]))
    s = rng.uniform(0.7, 1.3)
    img = item.image
    h, w = img.shape[:2]
    nh, nw = max(size // 2, round(h * s)), max(size // 2, round(w * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    masks = np.stack([cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) for m in masks]) > 0
    ys, xs = np.nonzero(masks[k])
    if ys.size == 0:
        return None
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    top = int(np.clip(cy - size / 2 + rng.uniform(-0.25, 0.25) * size, 0, max(0, nh - size)))
    left = int(np.clip(cx - size / 2 + rng.uniform(-0.25, 0.25) * size, 0, max(0, nw - size)))
    f = None
    if feats is not None:
        top, left = top // 8 * 8, left // 8 * 8
        f = _resize_features(feats, (-(-nh // 8), -(-nw // 8)))
        f = _crop_features(f, top // 8, left // 8, size // 8)
    img = img[top : top + size, left : left + size]
    masks = masks[:, top : top + size, left : left + size]
    ph, pw = size - img.shape[0], size - img.shape[1]
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        masks = np.pad(masks, ((0, 0), (0, ph), (0, pw)))
    if rng.random() < 0.5:
        img, masks = img[:, ::-1], masks[:, :, ::-1]
        f = None if f is None else f[:, :, ::-1]
    if masks[k].sum() < 64:
        return None
    return np.ascontiguousarray(img), np.ascontiguousarray(masks), k, None if f is None else np.ascontiguousarray(f)


def _resize_features(feats: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[D, h, w]`` → ``[D, *size]`` (bilinear)."""
    if tuple(feats.shape[1:]) == size:
        return feats
    t = torch.from_numpy(feats.astype(np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy().astype(feats.dtype)


def _crop_features(feats: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``feats[:, top : top + size, left : left + size]`` zero-padded to ``[D, size, size]``."""
    f = feats[:, top : top + size, left : left + size]
    return np.pad(f, ((0, 0), (0, size - f.shape[1]), (0, size - f.shape[2])))


def pool_features(
    model: object, pool: Sequence[PoolImage], refiner: ClickRefiner | None = None, progress: bool = True
) -> list[np.ndarray]:
    """The features a refiner with ``feature_dim`` reads, for every pool image as ``model`` (a ``SEEMModel``)
    encodes it at the pool's scale: ``ImageFeatures.mask_features`` pooled to stride 8 by ``stride8_features``
    (as ``SEEMModel.refine_clicks`` pools them), followed by ``refiner``'s similarity embedding of them when it has
    a similarity head (``ClickRefiner.image_features``, of the whole canvas as at inference), cut to the image
    (``[D (+ S), ceil(H / 8), ceil(W / 8)]``, float16)."""
    from tqdm import tqdm

    seg = _pool_segmenter(model, pool)
    out: list[np.ndarray] = []
    for item in tqdm(pool, desc="refiner features", disable=not progress):
        seg.set_image(item.image)
        f8 = stride8_features(seg.features.mask_features)
        if refiner is not None and refiner.similarity is not None:
            with torch.no_grad():
                f8 = refiner.image_features(f8.to(next(refiner.parameters()).device)).cpu()
        h, w = item.image.shape[:2]
        out.append(f8[0, :, : -(-h // 8), : -(-w // 8)].numpy().astype(np.float16))
    return out


@dataclass
class Rollout:
    """One round of a real interaction on a pool image (``collect_rollouts``): the decoder's stride-4 logits
    ``logits4 [H4, W4]`` (float16, padded canvas) for the clicks so far, ``coords [N, 2]`` (x, y) pixels of the pool
    image and ``labels [N]``, for the target ``pool[image].masks()[mask]``; ``memory [H4, W4]`` (float16): the
    previous round's refined mask at stride 4 that the decoder got as its memory prompt (None in round 1)."""

    image: int
    mask: int
    logits4: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    memory: np.ndarray | None = None


def _pool_segmenter(model: object, pool: Sequence[PoolImage]) -> Segmenter:
    """A ``Segmenter`` of ``model`` (a ``SEEMModel``) at the pool's scale, without the click refiner: pool images
    go in unresized, so clicks and boxes stay in pool pixels."""
    from seem.predictor import Segmenter

    short = min(pool[0].image.shape[:2])
    return Segmenter(model, short_side=short, progress=False, cache_dir=False, refine_clicks=False)  # type: ignore[arg-type]


def _pool_targets(
    seg: Segmenter, pool: Sequence[PoolImage], objects: int, rng: np.random.Generator, desc: str, progress: bool
) -> Iterator[tuple[int, int, bool]]:
    """``objects`` random pool masks, in image order: yields ``(image, mask, new image?)`` with that pool image set
    on ``seg`` (once per image)."""
    from tqdm import tqdm

    picks = sorted((int(rng.integers(len(pool))), int(rng.integers(1 << 30))) for _ in range(objects))
    current = -1
    for i, r in tqdm(picks, desc=desc, disable=not progress):
        fresh = i != current
        if fresh:
            seg.set_image(pool[i].image)
            current = i
        yield i, r % pool[i].count, fresh


def collect_rollouts(
    model: object,
    pool: Sequence[PoolImage],
    objects: int,
    rounds: int = 8,
    seed: int = 0,
    progress: bool = True,
    min_first_iou: float = 0.0,
) -> list[Rollout]:
    """Run the RITM click protocol with ``model`` (a ``SEEMModel`` with a click refiner) on ``objects`` random pool
    masks for ``rounds`` clicks each: every round records the decoder's own mask (before the refiner) and the
    clicks, and the next click goes where the *refined* mask is wrong — the errors the refiner meets in use.
    Pool images are read at their own scale (``build_pool``'s short side, the model's input scale for the
    default model).

    ``min_first_iou``: first rounds whose decoder mask has a lower IoU with the target are not recorded (the
    interaction goes on). One click does not say which region is meant; the decoder picks the level (its coarsest
    for a click, ``segment_levels`` for the others) and the refiner, trained on such rounds, learns to switch to
    the pool's (often finer) targets instead of correcting the decoder's mask."""
    from seem.eval.clickers import RITMClicker
    from seem.eval.metrics import mask_iou

    seg = _pool_segmenter(model, pool)
    rng = np.random.default_rng(seed)
    out: list[Rollout] = []
    canvas = None
    for i, k, fresh in _pool_targets(seg, pool, objects, rng, "refiner rollouts", progress):
        if fresh:
            x = torch.from_numpy(pool[i].image).permute(2, 0, 1).contiguous()
            canvas = model.preprocess(x)[0]  # type: ignore[attr-defined]
        gt = pool[i].mask(k)
        h, w = gt.shape
        clicker = RITMClicker()
        pred = np.zeros_like(gt)
        coords: list[tuple[float, float]] = []
        labels: list[int] = []
        memory = None
        for _ in range(rounds):
            click = clicker.next_click(gt, pred)
            if click is None:
                break
            coords.append((float(click.x), float(click.y)))
            labels.append(int(click.is_positive))
            c, lab = np.array(coords, np.float32), np.array(labels, np.int64)
            _, _, low = seg.predict(c, lab, mask_input=memory, multimask_output=False)
            mem16 = None if memory is None else memory[0].astype(np.float16)
            record = len(lab) > 1 or min_first_iou <= 0
            if record or mask_iou(gt, _upsample4(low[0], h, w) > 0, empty=1.0) >= min_first_iou:
                out.append(Rollout(i, k, low[0].astype(np.float16), c, lab, mem16))
            with torch.no_grad():
                refined = model.refine_clicks(  # type: ignore[attr-defined]
                    canvas,
                    torch.from_numpy(low),
                    torch.from_numpy(c),
                    torch.from_numpy(lab),
                    None if memory is None else torch.from_numpy(memory),
                    seg.features.mask_features,
                )
            pred = (refined[0, :h, :w] > 0).numpy()
            memory = F.avg_pool2d(refined[:, None], 4)[:, 0].numpy()
    return out


def box_rollout_box(rng: np.random.Generator, gt: np.ndarray, jitter: float) -> tuple[int, int, int, int] | None:
    """A box ``(x0, y0, x1, y1)`` (pixels, right / bottom exclusive) for the target ``gt [H, W]`` bool: its tight
    box, each side moved by up to ``jitter`` × the box's side (in or out, clipped to the image), or None for an
    empty target."""
    ys, xs = np.nonzero(gt)
    if not len(ys):
        return None
    h, w = gt.shape
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if jitter > 0:
        bw, bh = x1 - x0, y1 - y0
        dx = np.rint(rng.uniform(-jitter, jitter, 2) * bw).astype(int)
        dy = np.rint(rng.uniform(-jitter, jitter, 2) * bh).astype(int)
        x0, x1 = int(np.clip(x0 + dx[0], 0, w - 1)), int(np.clip(x1 + dx[1], 1, w))
        y0, y1 = int(np.clip(y0 + dy[0], 0, h - 1)), int(np.clip(y1 + dy[1], 1, h))
        if x1 <= x0 or y1 <= y0:
            return None
    return x0, y0, x1, y1


def collect_box_rollouts(
    model: object,
    pool: Sequence[PoolImage],
    objects: int,
    seed: int = 0,
    jitter: float = 0.05,
    progress: bool = True,
) -> list[Rollout]:
    """Box prompts on ``objects`` random pool masks, read as ``model`` reads them before its click refiner
    (``InferenceConfig.box_rule``, e.g. GrabCut's mask in the box): one ``Rollout`` each, whose ``logits4`` is that
    mask (``seem.predictor.hard_mask_logits`` at stride 4, as the predictor hands it to the refiner) and whose
    clicks are its inside (``mask_core_clicks`` with ``BOX_CLICK_MARGIN`` and ``InferenceConfig.stroke_clicks``),
    all positive. Half of the boxes are tight, half jittered by up to ``jitter`` of their sides
    (``box_rollout_box``). Masks whose box mask has no such inside are skipped (the predictor does not refine them
    either)."""
    from seem.predictor import BOX_CLICK_MARGIN, hard_mask_logits
    from seem.prompts import Box, PromptSet, mask_core_clicks

    inference = model.config.inference  # type: ignore[attr-defined]
    if inference.box_rule != "grabcut":
        raise ValueError(f"the model's refiner reads no box (config.inference.box_rule is {inference.box_rule!r})")
    spacing = float(inference.stroke_clicks)
    if not spacing > 0:
        raise ValueError("the model reads no box mask as clicks (config.inference.stroke_clicks is 0)")
    seg = _pool_segmenter(model, pool)
    rng = np.random.default_rng(seed)
    out: list[Rollout] = []
    for i, k, _ in _pool_targets(seg, pool, objects, rng, "refiner box rollouts", progress):
        gt = pool[i].mask(k)
        box = box_rollout_box(rng, gt, jitter if rng.random() < 0.5 else 0.0)
        if box is None:
            continue
        mask = seg.segment(PromptSet(boxes=[Box(*(float(v) for v in box))]), labels=False)[0].mask
        pos = mask_core_clicks(mask, BOX_CLICK_MARGIN, spacing)
        if not len(pos):
            continue
        hard = hard_mask_logits(mask, seg.geometry.padded_size)
        logits4 = F.avg_pool2d(hard[None, None], 4)[0, 0].numpy().astype(np.float16)
        out.append(Rollout(i, k, logits4, pos.astype(np.float32), np.ones(len(pos), np.int64)))
    return out


NO_PREV = -1e4
"""Previous-mask logits that stand for "no previous mask" in a batch (sigmoid 0, as the refiner reads None)."""


def _upsample4(logits4: np.ndarray, h: int, w: int) -> np.ndarray:
    """Stride-4 canvas logits ``[H4, W4]`` → ``[h, w]`` (bilinear ×4, as ``SEEMModel.refine_clicks`` reads them)."""
    lg = torch.from_numpy(logits4.astype(np.float32))[None, None]
    return F.interpolate(lg, scale_factor=4, mode="bilinear", align_corners=False)[0, 0, :h, :w].numpy()


def _simulated_prev(rng: np.random.Generator, coarse: np.ndarray) -> np.ndarray:
    """A previous mask for a simulated example: none (first round) or the coarse mask at stride 4 (the decoder's
    output follows its memory prompt), half each."""
    if rng.random() < 0.5:
        return np.full_like(coarse, NO_PREV)
    h, w = coarse.shape
    t = torch.from_numpy(np.ascontiguousarray(coarse))[None, None]
    t = F.avg_pool2d(F.pad(t, (0, -w % 4, 0, -h % 4), value=-8.0), 4)
    return _upsample4(t[0, 0].numpy(), h, w)


def _rollout_example(
    rng: np.random.Generator, pool: Sequence[PoolImage], ro: Rollout, size: int, feats: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A ``size``² crop (flip) of a recorded round → (image, target, coarse logits, previous-mask logits, coords,
    labels, features): with the image's stride-8 ``feats`` the crop starts on multiples of 8 and the last item is
    their ``[D, size / 8, size / 8]`` crop, else None."""
    item = pool[ro.image]
    img, gt = item.image, item.mask(ro.mask)
    h, w = gt.shape
    coarse = _upsample4(ro.logits4, h, w)
    prev = np.full_like(coarse, NO_PREV) if ro.memory is None else _upsample4(ro.memory, h, w)
    ys, xs = np.nonzero(gt | (coarse > 0))
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    top = int(np.clip(cy - size / 2 + rng.uniform(-0.25, 0.25) * size, 0, max(0, h - size)))
    left = int(np.clip(cx - size / 2 + rng.uniform(-0.25, 0.25) * size, 0, max(0, w - size)))
    f = None
    if feats is not None:
        top, left = top // 8 * 8, left // 8 * 8
        f = _crop_features(feats, top // 8, left // 8, size // 8)
    crop = (slice(top, top + size), slice(left, left + size))
    img, gt, coarse, prev = img[crop], gt[crop], coarse[crop], prev[crop]
    ph, pw = size - gt.shape[0], size - gt.shape[1]
    img, gt = np.pad(img, ((0, ph), (0, pw), (0, 0))), np.pad(gt, ((0, ph), (0, pw)))
    coarse = np.pad(coarse, ((0, ph), (0, pw)), constant_values=-8.0)
    prev = np.pad(prev, ((0, ph), (0, pw)), constant_values=-8.0 if ro.memory is not None else NO_PREV)
    coords = ro.coords - np.array([left, top], np.float32)
    if rng.random() < 0.5:
        img, gt, coarse, prev = img[:, ::-1], gt[:, ::-1], coarse[:, ::-1], prev[:, ::-1]
        f = None if f is None else f[:, :, ::-1]
        coords = coords.copy()
        coords[:, 0] = size - 1 - coords[:, 0]
    inside = (coords[:, 0] >= 0) & (coords[:, 0] < size) & (coords[:, 1] >= 0) & (coords[:, 1] < size)
    return (
        np.ascontiguousarray(img),
        np.ascontiguousarray(gt),
        np.ascontiguousarray(coarse, dtype=np.float32),
        np.ascontiguousarray(prev, dtype=np.float32),
        coords[inside],
        ro.labels[inside],
        None if f is None else np.ascontiguousarray(f),
    )


def make_batch(
    rng: np.random.Generator,
    pool: Sequence[PoolImage],
    batch: int,
    size: int,
    radius: int,
    rollouts: Sequence[Rollout] = (),
    real_frac: float = 0.5,
    prev_mask: bool = False,
    features: Sequence[np.ndarray] | None = None,
    correct_previous: bool = False,
    box_rollouts: Sequence[Rollout] = (),
    box_frac: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """``(image [B, 3, S, S] normalised, coarse [B, 1, S, S], clicks [B, 2, S, S], target [B, 1, S, S], prev
    [B, 1, S, S], feats [B, D, S / 8, S / 8] or None)``: a ``real_frac`` share from recorded ``rollouts`` (if any),
    the rest simulated. ``coarse`` and ``prev`` are logits (``prev = NO_PREV`` where there is no previous mask;
    simulated examples get one only with ``prev_mask``, which leaves the random draws of a refiner without that
    input as they were). ``features``: the pool's stride-8 features (``pool_features``) for a refiner with
    ``feature_dim``; crops then start on multiples of 8. ``correct_previous``: where an example has a previous
    mask, it becomes ``coarse`` and the decoder's mask ``prev`` (as ``refine_clicks`` swaps them for such a
    refiner). ``box_rollouts`` (``collect_box_rollouts``) give a ``box_frac`` share of the examples (before the
    others are drawn)."""
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    ims: list[Tensor] = []
    coarses: list[Tensor] = []
    clicks: list[Tensor] = []
    targets: list[Tensor] = []
    prevs: list[Tensor] = []
    feats: list[Tensor] = []
    while len(ims) < batch:
        ro = None
        if box_rollouts and rng.random() < box_frac:
            ro = box_rollouts[int(rng.integers(len(box_rollouts)))]
        elif rollouts and rng.random() < real_frac:
            ro = rollouts[int(rng.integers(len(rollouts)))]
        if ro is not None:
            img, gt, coarse, prev, coords, labels, f = _rollout_example(
                rng, pool, ro, size, None if features is None else features[ro.image]
            )
        else:
            i = int(rng.integers(len(pool)))
            got = _crop(rng, pool[i], size, None if features is None else features[i])
            if got is None:
                continue
            img, masks, k, f = got
            gt = masks[k]
            others = np.delete(masks, k, axis=0)
            coarse = simulate_coarse(rng, gt, others)
            coords, labels = simulate_clicks(rng, gt, coarse)
            prev = _simulated_prev(rng, coarse) if prev_mask else np.full_like(coarse, NO_PREV)
        if correct_previous and float(prev.max()) > NO_PREV / 2:
            coarse, prev = prev, coarse
        ims.append((torch.from_numpy(img).permute(2, 0, 1).float() - mean) / std)
        coarses.append(torch.from_numpy(coarse)[None])
        clicks.append(click_maps(torch.from_numpy(coords), torch.from_numpy(labels), (size, size), radius))
        targets.append(torch.from_numpy(gt.astype(np.float32))[None])
        prevs.append(torch.from_numpy(prev)[None])
        if f is not None:
            feats.append(torch.from_numpy(f).float())
    return (
        torch.stack(ims),
        torch.stack(coarses),
        torch.stack(clicks),
        torch.stack(targets),
        torch.stack(prevs),
        torch.stack(feats) if feats else None,
    )


def refiner_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy + (1 - soft IoU), averaged over the batch; ``logits``, ``target [B, 1, H, W]``."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    iou = (inter + 1.0) / (p.sum(1) + t.sum(1) - inter + 1.0)
    return bce + (1.0 - iou).mean()


def distill_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Binary cross-entropy of ``logits`` against the teacher's probabilities ``sigmoid(teacher_logits)``, minus
    that of the teacher against itself (its entropy), so 0 when the two agree; ``[B, 1, H, W]`` each."""
    p = teacher_logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, p) - F.binary_cross_entropy_with_logits(teacher_logits, p)


def write_weights(module: torch.nn.Module, path: Path, metadata: dict[str, object]) -> None:
    """``module``'s state dict as float32 safetensors at ``path`` (written to a temporary file, then moved), each
    ``metadata`` value as JSON."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})
    tmp.replace(path)


def read_weights(path: str | Path, key: str, what: str) -> tuple[dict[str, Tensor], dict[str, object]]:
    """``(state dict, metadata)`` of a ``write_weights`` file (the metadata's ``key`` decoded from JSON, the rest as
    stored); ``ValueError`` naming the file when it is unreadable or its metadata has no JSON ``key`` (then it is
    not ``what``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    except (OSError, SafetensorError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    if key not in meta:
        raise ValueError(f"{path}: not {what} (no {key!r} in its metadata)")
    try:
        return sd, {key: json.loads(meta[key]), **{k: v for k, v in meta.items() if k != key}}
    except json.JSONDecodeError:
        raise ValueError(f"{path}: not {what} (its {key!r} is not JSON)") from None


def save_refiner(model: ClickRefiner, path: Path, meta: dict[str, object] | None = None) -> None:
    """``model``'s state dict as safetensors, its config (and ``meta``) in the metadata."""
    write_weights(model, path, {"config": asdict(model.cfg), "meta": meta or {}})


def load_refiner(path: str | Path) -> ClickRefiner:
    """Inverse of ``save_refiner`` (strict)."""
    from seem.models.config import dataclass_from_dict

    sd, meta = read_weights(path, "config", "a refiner file")
    model = ClickRefiner(dataclass_from_dict(ClickRefinerConfig, meta["config"]))  # type: ignore[arg-type]
    missing, unexpected = set(model.state_dict()) - set(sd), set(sd) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}")
    model.load_state_dict(sd, strict=True)
    return model.eval()


INFERENCE_SETTINGS = (*MODEL_RUN_SETTINGS, "min_region", "enabled")
"""``ClickRefinerConfig`` fields that only say how a trained net is run (not its weights' meaning)."""


def average_refiners(paths: Sequence[str | Path]) -> ClickRefiner:
    """The uniform average of the weights of the refiner files ``paths`` (a weight soup, e.g. of consecutive
    ``--init`` rounds): floating-point tensors averaged (BatchNorm's running statistics too), integer buffers
    (BatchNorm's step counters) taken from the first file; the first file's config. ``ValueError`` naming the file
    when fewer than two are given or one's architecture or inputs differ from the first's (its config outside
    ``INFERENCE_SETTINGS``)."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two refiner files, got {len(paths)}")
    nets = [load_refiner(p) for p in paths]
    first = asdict(nets[0].cfg)
    for p, net in zip(paths[1:], nets[1:], strict=True):
        cfg = asdict(net.cfg)
        diff = [f"{k} {cfg[k]} vs {first[k]}" for k in first if k not in INFERENCE_SETTINGS and cfg[k] != first[k]]
        if diff:
            raise ValueError(
                f"{p}: another architecture than {paths[0]} ({', '.join(diff)}); only same-shaped "
                "refiners can be averaged"
            )
    sds = [net.state_dict() for net in nets]
    avg = {
        k: torch.stack([sd[k].float() for sd in sds]).mean(0).to(v.dtype) if v.is_floating_point() else v
        for k, v in sds[0].items()
    }
    nets[0].load_state_dict(avg, strict=True)
    return nets[0].eval()


def run_average_refiners(args: argparse.Namespace) -> int:
    """``seem average-refiners``: ``args.refiners`` averaged (``average_refiners``) into ``args.out``."""
    try:
        net = average_refiners(args.refiners)
    except ValueError as e:
        print(f"seem average-refiners: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    save_refiner(net, out, {"averaged": [str(p) for p in args.refiners]})
    print(f"wrote {out}: the average of {len(args.refiners)} refiners")
    return 0


def train_refiner(
    pool: Sequence[PoolImage],
    out: Path,
    *,
    steps: int,
    batch: int = 16,
    size: int = 256,
    lr: float = 2e-3,
    cfg: ClickRefinerConfig | None = None,
    seed: int = 0,
    save_every: int = 500,
    bf16: bool = True,
    init: ClickRefiner | None = None,
    log_every: int = 50,
    rollouts: Sequence[Rollout] = (),
    real_frac: float = 0.5,
    features: Sequence[np.ndarray] | None = None,
    teacher: ClickRefiner | None = None,
    distill: float = 1.0,
    box_rollouts: Sequence[Rollout] = (),
    box_frac: float = 0.0,
) -> ClickRefiner:
    """Train (cosine learning rate, AdamW) and save to ``out / REFINER_FILE``; returns the model in eval mode.
    ``features``: the pool's stride-8 model features (``pool_features``), required by a refiner with
    ``feature_dim``. ``teacher``: a trained refiner with the same inputs (previous mask, features, click radius,
    clamp) whose output the model also learns, weighted by ``distill`` (``distill_loss``). ``box_rollouts``: box
    prompts read as the predictor reads them (``collect_box_rollouts``), a ``box_frac`` share of every batch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = init if init is not None else ClickRefiner(cfg or ClickRefinerConfig(enabled=True))
    if model.cfg.feature_dim and features is None:
        raise ValueError("this refiner reads model features: give the pool's features (pool_features)")
    if teacher is not None:
        check_teacher(teacher, model.cfg)
        teacher = teacher.eval().requires_grad_(False)
    model.train()
    if model.similarity is not None:  # trained apart (seem.train.similarity); the features carry its output
        model.similarity.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=lr, weight_decay=1e-4)
    warm = min(200, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warm)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    t0, run = time.time(), 0.0
    log = (out / "log.jsonl").open("a")
    for step in range(1, steps + 1):
        image, coarse, clicks, target, prev, feats = make_batch(
            rng,
            pool,
            batch,
            size,
            model.cfg.click_radius,
            rollouts,
            real_frac,
            model.cfg.prev_mask,
            features if model.cfg.feature_dim else None,
            model.cfg.correct_previous,
            box_rollouts,
            box_frac,
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(image, coarse, clicks, prev, feats)
        loss = refiner_loss(logits.float(), target)
        if teacher is not None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                taught = teacher(image, coarse, clicks, prev, feats)
            loss = loss + distill * distill_loss(logits.float(), taught.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
        if step % log_every == 0 or step == steps:
            rec = {"step": step, "loss": round(run, 4), "lr": sched.get_last_lr()[0], "s": round(time.time() - t0)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % save_every == 0 or step == steps:
            save_refiner(model, out / REFINER_FILE, {"step": step, "steps": steps, "batch": batch, "size": size})
    log.close()
    return model.eval()


def check_teacher(teacher: ClickRefiner, cfg: ClickRefinerConfig) -> None:
    """``ValueError`` unless ``teacher`` reads the same inputs the same way as a refiner of config ``cfg`` (the
    architecture may differ: widths, blocks, expansion, context stage)."""
    same = ("prev_mask", "feature_dim", "similarity_dim", "click_radius", "coarse_clamp", "correct_previous")
    diff = [
        f"{k} {getattr(teacher.cfg, k)} vs {getattr(cfg, k)}"
        for k in same
        if getattr(teacher.cfg, k) != getattr(cfg, k)
    ]
    if diff:
        raise ValueError(f"the teacher refiner reads other inputs than the one trained: {', '.join(diff)}")


def student_config(
    teacher: ClickRefinerConfig, widths: Sequence[int] | None, blocks: Sequence[int] | None, context: int
) -> ClickRefinerConfig:
    """The config of a new refiner taught by ``teacher``: its inputs and inference settings, with ``widths``
    (strides 2, 4, 8), ``blocks`` (strides 4, 8) and ``context`` blocks where given (else the teacher's)."""
    if widths is not None and (len(widths) != 3 or min(widths) <= 0):
        raise ValueError(f"--widths takes 3 positive channel counts (strides 2, 4, 8), got {list(widths)}")
    if blocks is not None and (len(blocks) != 2 or min(blocks) < 0):
        raise ValueError(f"--blocks takes 2 block counts >= 0 (strides 4, 8), got {list(blocks)}")
    return dataclasses.replace(
        teacher,
        enabled=True,
        widths=teacher.widths if widths is None else (int(widths[0]), int(widths[1]), int(widths[2])),
        blocks=teacher.blocks if blocks is None else (int(blocks[0]), int(blocks[1])),
        context_blocks=context if context else teacher.context_blocks,
    )


def add_refiner_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``seem train-refiner`` / ``python -m seem.train.refiner``."""
    p.add_argument("--data", required=True, help="a training config (YAML) whose data.sources give the images")
    p.add_argument("--out", required=True, type=Path, help="output folder (refiner.safetensors, log.jsonl)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="crop side (pixels)")
    p.add_argument("--short-side", type=int, default=384, help="pool images are resized to this short side")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--fp32", action="store_true", help="train without bf16 autocast")
    p.add_argument("--init", type=Path, help="start from this refiner.safetensors")
    p.add_argument(
        "--rollouts",
        type=int,
        default=0,
        help="also learn from N real interactions (RITM clicks) of --model with the --init refiner on the pool",
    )
    p.add_argument(
        "--box-rollouts",
        type=int,
        default=0,
        metavar="N",
        help="also learn from box prompts on N pool masks, read as --model reads a box before its refiner",
    )
    p.add_argument("--box-frac", type=float, default=0.25, help="share of batch examples from the box rollouts")
    p.add_argument("--model", default=None, help="the model of --rollouts (default: the shipped default model)")
    p.add_argument("--real-frac", type=float, default=0.5, help="share of batch examples from the rollouts")
    p.add_argument(
        "--min-first-iou",
        type=float,
        default=0.0,
        help="leave out first rounds whose decoder mask has a lower IoU with the target (another granularity)",
    )
    p.add_argument(
        "--prev-mask",
        action="store_true",
        help="the refiner also reads the previous round's mask (added to an --init refiner as a zero-weight channel)",
    )
    p.add_argument(
        "--features",
        action="store_true",
        help="the refiner also reads --model's per-pixel features (added to an --init refiner with zero weights)",
    )
    p.add_argument(
        "--similarity",
        type=Path,
        metavar="HEAD",
        help="give the --init refiner this similarity head (seem train-similarity): its similarity maps read the "
        "head's embedding of the features from then on (needs a refiner that reads features)",
    )
    p.add_argument(
        "--correct-previous",
        action="store_true",
        help="from the second round on, correct the previous round's mask and read the decoder's (needs --prev-mask)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="N",
        help="give the refiner a stride-16 context stage of N blocks (added to an --init refiner with a zero output)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        help="train a smaller refiner, narrowed from this refiner.safetensors (--widths, --blocks, --context; "
        "ClickRefiner.narrowed), that also learns its output; --rollouts then run with the teacher",
    )
    p.add_argument("--distill", type=float, default=1.0, help="weight of the teacher's term in the loss")
    p.add_argument("--widths", type=int, nargs=3, metavar="C", help="channels at strides 2, 4, 8 (with --teacher)")
    p.add_argument("--blocks", type=int, nargs=2, metavar="N", help="blocks at strides 4 and 8 (with --teacher)")


def run_refiner(args: argparse.Namespace) -> int:
    """Build the pool (and rollouts), train, save; returns the exit code."""
    from seem.train.build import build_sources
    from seem.train.config import load_config
    from seem.train.similarity import load_similarity_head

    try:
        cfg = load_config(args.data)
        init = load_refiner(args.init) if args.init else None
        teacher = load_refiner(args.teacher) if args.teacher else None
        if teacher is None and (args.widths or args.blocks):
            raise ValueError("--widths and --blocks shape a new refiner taught by a --teacher")
        head = None
        if args.similarity:
            if init is None or teacher is not None:
                raise ValueError("--similarity gives a head to the --init refiner (without --teacher)")
            head = load_similarity_head(args.similarity)
        student = None
        if teacher is not None:
            layout = student_config(teacher.cfg, args.widths, args.blocks, args.context)
            student = (
                init.train()
                if init is not None
                else teacher.narrowed(layout.widths, layout.blocks, layout.context_blocks).train()
            )
            check_teacher(teacher, student.cfg)
    except (OSError, ValueError) as e:
        print(f"seem train-refiner: {e}", file=sys.stderr)
        return 2
    runner = teacher if teacher is not None else init  # the refiner the recorded interactions run with
    if args.rollouts and runner is None:
        print(
            "seem train-refiner: --rollouts needs --init or --teacher (the refiner the interactions run with)",
            file=sys.stderr,
        )
        return 2
    fix = args.correct_previous or (init is not None and init.cfg.correct_previous)
    if fix and not (args.prev_mask or (init is not None and init.cfg.prev_mask)):
        print("seem train-refiner: --correct-previous needs --prev-mask", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    pool = build_pool(build_sources(cfg), short_side=args.short_side, seed=args.seed)
    print(f"pool: {len(pool)} images, {sum(x.count for x in pool)} masks", flush=True)
    rollouts: list[Rollout] = []
    features = None
    dim = 0
    reads_features = head is not None or any(r is not None and r.cfg.feature_dim for r in (init, teacher))
    box_rollouts: list[Rollout] = []
    if args.rollouts or args.box_rollouts or args.features or reads_features:  # these need the model
        from seem.loading import load
        from seem.models.seem_model import SEEMModel

        model = load(args.model)
        if not isinstance(model, SEEMModel):
            print(f"seem train-refiner: --model {args.model}: not a SEEM-family model", file=sys.stderr)
            return 2
        dim = model.config.pixel_decoder.mask_dim if args.features else 0
        if student is None and init is not None:  # go on from --init, grown by what the options add
            try:
                student = _trainable(load_refiner(args.init), args.prev_mask, dim, args.context, fix, head)
            except ValueError as e:
                print(f"seem train-refiner: {e}", file=sys.stderr)
                return 2
        if args.features or reads_features:
            features = pool_features(model, pool, student)
        if args.rollouts and runner is not None:
            model.set_refiner(runner)
            rollouts = collect_rollouts(model, pool, args.rollouts, seed=args.seed, min_first_iou=args.min_first_iou)
            print(f"rollouts: {len(rollouts)} rounds", flush=True)
        if args.box_rollouts:
            try:
                box_rollouts = collect_box_rollouts(model, pool, args.box_rollouts, seed=args.seed)
            except ValueError as e:
                print(f"seem train-refiner: {e}", file=sys.stderr)
                return 2
            print(f"box rollouts: {len(box_rollouts)} boxes", flush=True)
    if student is None and init is not None:  # go on from --init, grown by what the options add
        student = _trainable(load_refiner(args.init), args.prev_mask, dim, args.context, fix)
    train_refiner(
        pool,
        args.out,
        steps=args.steps,
        batch=args.batch,
        size=args.size,
        lr=args.lr,
        seed=args.seed,
        save_every=args.save_every,
        bf16=not args.fp32,
        init=student,
        cfg=ClickRefinerConfig(
            enabled=True,
            prev_mask=args.prev_mask,
            feature_dim=dim,
            context_blocks=args.context,
            correct_previous=fix,
        ),
        rollouts=rollouts,
        real_frac=args.real_frac,
        features=features,
        teacher=teacher,
        distill=args.distill,
        box_rollouts=box_rollouts,
        box_frac=args.box_frac,
    )
    return 0


def _trainable(
    refiner: ClickRefiner,
    prev_mask: bool,
    feature_dim: int = 0,
    context: int = 0,
    correct_previous: bool = False,
    similarity: SimilarityHead | None = None,
) -> ClickRefiner:
    """``refiner`` in training mode, given the previous-mask channel if ``prev_mask`` asks for it, the feature
    input if ``feature_dim`` does, a context stage of ``context`` blocks if it has none, set to correct the
    previous round's mask if ``correct_previous`` asks for it, and given the ``similarity`` head if one is given."""
    if prev_mask and not refiner.cfg.prev_mask:
        refiner = refiner.with_prev_mask()
    if feature_dim and not refiner.cfg.feature_dim:
        refiner = refiner.with_features(feature_dim)
    if context and not refiner.cfg.context_blocks:
        refiner = refiner.with_context(context)
    if correct_previous and not refiner.cfg.correct_previous:
        refiner.cfg = dataclasses.replace(refiner.cfg, correct_previous=True)
    if similarity is not None:
        refiner = refiner.with_similarity(similarity)
    return refiner.train()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seem.train.refiner", description=__doc__.split("\n\n")[0])
    add_refiner_arguments(p)
    return run_refiner(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
