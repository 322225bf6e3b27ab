"""Pictures of evaluation results drawn with OpenCV (no matplotlib): IoU-vs-clicks curves, bar charts and
error overlays. Every function returns an RGB uint8 image ``[H, W, 3]``; ``save_png`` writes one.

Overlay colours: true positive green, false positive red, false negative blue, void grey, GT outline yellow;
clicks are filled circles (green positive, red negative) numbered in order. Clicks are ``(y, x)`` pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["bar_chart", "curve_plot", "error_overlay", "save_png"]

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (creating the folder)."""
    import cv2

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {p}")
    return p


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.45, color=(40, 40, 40), thick: int = 1):
    import cv2

    cv2.putText(img, s, org, _FONT, scale, color, thick, cv2.LINE_AA)


def _text_size(s: str, scale: float = 0.45, thick: int = 1) -> tuple[int, int]:
    import cv2

    (w, h), _ = cv2.getTextSize(s, _FONT, scale, thick)
    return w, h


def _dashed_hline(img: np.ndarray, y: int, x0: int, x1: int, color, dash: int = 6) -> None:
    import cv2

    for x in range(x0, x1, 2 * dash):
        cv2.line(img, (x, y), (min(x + dash, x1), y), color, 1, cv2.LINE_AA)


def curve_plot(
    curves: Mapping[str, Sequence[float]],
    *,
    title: str = "IoU vs. number of clicks",
    thresholds: Sequence[float] = (),
    xlabel: str = "number of clicks",
    ylabel: str = "mean IoU",
    size: tuple[int, int] = (900, 560),
) -> np.ndarray:
    """Line plot of one or more curves (value ``k - 1`` at x = k, i.e. click 1 first) with dashed horizontal
    lines at ``thresholds``. NaN values are skipped. ``size``: ``(width, height)``."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 70, w - 25, 45, h - 60
    vals = [np.asarray(v, np.float64) for v in curves.values()]
    n = max((v.size for v in vals), default=1)
    finite = np.concatenate([v[np.isfinite(v)] for v in vals] + [np.array(list(thresholds), np.float64)])
    lo = math.floor((finite.min() if finite.size else 0.0) * 10) / 10
    lo = max(0.0, min(lo, 0.9))
    hi = 1.0

    def px(k: float, v: float) -> tuple[int, int]:
        x = left + (k - 1) / max(n - 1, 1) * (right - left)
        y = bottom - (v - lo) / (hi - lo) * (bottom - top)
        return round(x), round(y)

    # grid and ticks
    step = 0.1 if hi - lo > 0.3 else 0.05
    for i in range(round((hi - lo) / step) + 1):
        v = lo + i * step
        _, y = px(1, v)
        cv2.line(img, (left, y), (right, y), (228, 228, 228), 1)
        lab = f"{v:.2f}"
        tw, th = _text_size(lab, 0.4)
        _text(img, lab, (left - tw - 6, y + th // 2), 0.4)
    xstep = 1 if n <= 20 else 5
    for k in range(1, n + 1):
        if k != 1 and k % xstep:
            continue
        x, _ = px(k, lo)
        cv2.line(img, (x, top), (x, bottom), (236, 236, 236), 1)
        tw, th = _text_size(str(k), 0.4)
        _text(img, str(k), (x - tw // 2, bottom + th + 8), 0.4)
    cv2.rectangle(img, (left, top), (right, bottom), (90, 90, 90), 1)
    for t in thresholds:
        if lo <= t <= hi:
            _, y = px(1, t)
            _dashed_hline(img, y, left, right, (150, 150, 150))
            _text(img, f"{t:g}", (right - 34, y - 4), 0.4, (120, 120, 120))
    # curves
    for ci, (name, v) in enumerate(zip(curves, vals, strict=True)):
        color = _PALETTE[ci % len(_PALETTE)]
        pts = [px(k + 1, float(x)) for k, x in enumerate(v) if math.isfinite(x)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, color, -1, cv2.LINE_AA)
        # legend, bottom right inside the plot
        ly = bottom - 12 - 20 * (len(vals) - 1 - ci)
        lab = str(name)
        tw, _ = _text_size(lab, 0.45)
        lx = right - tw - 40
        cv2.line(img, (lx, ly - 4), (lx + 24, ly - 4), color, 2, cv2.LINE_AA)
        _text(img, lab, (lx + 30, ly), 0.45)
    tw, _ = _text_size(title, 0.6)
    _text(img, title, ((w - tw) // 2, 28), 0.6, (20, 20, 20), 1)
    tw, _ = _text_size(xlabel, 0.45)
    _text(img, xlabel, ((left + right - tw) // 2, h - 15), 0.45)
    # vertical y label: draw horizontally then rotate
    tw, th = _text_size(ylabel, 0.45)
    lab_img = np.full((th + 8, tw + 4, 3), 255, np.uint8)
    _text(lab_img, ylabel, (2, th + 2), 0.45)
    rot = np.ascontiguousarray(np.rot90(lab_img))
    y0 = max((top + bottom - rot.shape[0]) // 2, 0)
    img[y0 : y0 + rot.shape[0], 8 : 8 + rot.shape[1]] = rot[: h - y0]
    return img


def bar_chart(
    values: Mapping[str, float], *, title: str = "", ylabel: str = "mean IoU", size: tuple[int, int] = (700, 420)
) -> np.ndarray:
    """Vertical bars in 0..1 with the value printed above each bar; NaN bars are drawn as "n/a"."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, w - 20, 45, h - 50
    for i in range(11):
        y = round(bottom - i / 10 * (bottom - top))
        cv2.line(img, (left, y), (right, y), (232, 232, 232), 1)
        lab = f"{i / 10:.1f}"
        tw, th = _text_size(lab, 0.4)
        _text(img, lab, (left - tw - 6, y + th // 2), 0.4)
    n = max(len(values), 1)
    slot = (right - left) / n
    for i, (name, v) in enumerate(values.items()):
        x0 = int(left + i * slot + slot * 0.2)
        x1 = int(left + (i + 1) * slot - slot * 0.2)
        ok = v is not None and math.isfinite(v)
        if ok:
            y = round(bottom - max(0.0, min(1.0, v)) * (bottom - top))
            cv2.rectangle(img, (x0, y), (x1, bottom), _PALETTE[i % len(_PALETTE)], -1)
        lab = f"{v:.3f}" if ok else "n/a"
        tw, _ = _text_size(lab, 0.45)
        _text(img, lab, ((x0 + x1 - tw) // 2, (y - 6) if ok else bottom - 6), 0.45)
        tw, th = _text_size(name, 0.45)
        _text(img, name, ((x0 + x1 - tw) // 2, bottom + th + 10), 0.45)
    cv2.rectangle(img, (left, top), (right, bottom), (90, 90, 90), 1)
    tw, _ = _text_size(title, 0.6)
    _text(img, title, ((w - tw) // 2, 28), 0.6, (20, 20, 20))
    _text(img, ylabel, (8, top - 10), 0.4)
    return img


def error_overlay(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    void: np.ndarray | None = None,
    clicks: Sequence[tuple[int, int, bool]] = (),
    *,
    title: str = "",
    alpha: float = 0.45,
    max_side: int = 900,
) -> np.ndarray:
    """The image with TP / FP / FN / void tinted, the GT outline and numbered clicks, under a title bar.
    Images larger than ``max_side`` are shrunk (masks and clicks with them)."""
    import cv2

    img = np.asarray(image, np.uint8)
    h, w = img.shape[:2]
    g, p = np.asarray(gt, bool), np.asarray(pred, bool)
    if g.shape != (h, w) or p.shape != (h, w):
        raise ValueError(f"gt {g.shape} / pred {p.shape} must match the image {(h, w)}")
    v = np.zeros((h, w), bool) if void is None else np.asarray(void, bool)
    out = img.astype(np.float32)
    for region, color in (
        (g & p & ~v, (0, 200, 0)),
        (~g & p & ~v, (230, 0, 0)),
        (g & ~p & ~v, (0, 90, 255)),
        (v, (128, 128, 128)),
    ):
        out[region] = (1 - alpha) * out[region] + alpha * np.asarray(color, np.float32)
    out_u8: np.ndarray = out.clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(g.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out_u8, contours, -1, (255, 230, 0), 1, cv2.LINE_AA)
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        out_u8 = cv2.resize(out_u8, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    for i, (y, x, pos) in enumerate(clicks, start=1):
        c = (round(x * scale), round(y * scale))
        cv2.circle(out_u8, c, 6, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out_u8, c, 4, (0, 170, 0) if pos else (220, 0, 0), -1, cv2.LINE_AA)
        if len(clicks) > 1:
            _text(out_u8, str(i), (c[0] + 6, c[1] - 6), 0.4, (255, 255, 255), 2)
            _text(out_u8, str(i), (c[0] + 6, c[1] - 6), 0.4, (0, 0, 0), 1)
    bar_h = 26
    canvas = np.full((out_u8.shape[0] + bar_h, out_u8.shape[1], 3), 255, np.uint8)
    canvas[bar_h:] = out_u8
    _text(canvas, title, (6, 18), 0.45, (20, 20, 20))
    legend = "TP green  FP red  FN blue"
    tw, _ = _text_size(legend, 0.4)
    if tw + _text_size(title, 0.45)[0] + 30 < canvas.shape[1]:
        _text(canvas, legend, (canvas.shape[1] - tw - 6, 18), 0.4, (110, 110, 110))
    return canvas
