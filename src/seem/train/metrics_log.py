"""The trainer's CSV logs (``MetricsLog``: ``metrics.csv``, ``eval.csv``) and the loss-curve line plot
(``plot_lines``, OpenCV)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricsLog", "csv_float", "plot_lines"]


# ---------------------------------------------------------------------------------------------------------------
# metrics log and plot
# ---------------------------------------------------------------------------------------------------------------

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "training loss",
    xlabel: str = "step",
    ylabel: str = "loss",
    size: tuple[int, int] = (900, 520),
) -> np.ndarray:
    """A line plot (OpenCV) of ``{name: (xs, ys)}``; non-finite values are skipped. Returns RGB uint8 ``[H, W, 3]``."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 80, w - 180, 40, h - 55
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    ys_all = [float(y) for _, ys in series.values() for y in ys if math.isfinite(float(y))]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y0, y1 = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    pad = (y1 - y0) * 0.05 or max(abs(y1) * 0.05, 1e-3)
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            round(left + (x - x0) / (x1 - x0) * (right - left)),
            round(bottom - (y - y0) / (y1 - y0) * (bottom - top)),
        )

    grey, dark = (225, 225, 225), (40, 40, 40)
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        _, yy = px(x0, yv)
        cv2.line(img, (left, yy), (right, yy), grey, 1)
        cv2.putText(img, f"{yv:.3g}", (8, yy + 4), 0, 0.42, dark, 1, cv2.LINE_AA)
        xv = x0 + (x1 - x0) * k / 5
        xx, _ = px(xv, y0)
        cv2.line(img, (xx, top), (xx, bottom), grey, 1)
        cv2.putText(img, f"{xv:.4g}", (xx - 12, bottom + 18), 0, 0.42, dark, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), dark, 1)
    cv2.putText(img, title, (left, 25), 0, 0.6, dark, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((left + right) // 2 - 15, h - 12), 0, 0.45, dark, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, top - 12), 0, 0.45, dark, 1, cv2.LINE_AA)
    for j, (name, (xs, ys)) in enumerate(series.items()):
        color = _PALETTE[j % len(_PALETTE)]
        pts = [px(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
        elif pts:
            cv2.circle(img, pts[0], 3, color, -1)
        ly = top + 18 + 20 * j
        cv2.line(img, (right + 12, ly - 4), (right + 34, ly - 4), color, 2)
        cv2.putText(img, name[:20], (right + 40, ly), 0, 0.42, dark, 1, cv2.LINE_AA)
    return img


class MetricsLog:
    """Append-only CSV with a fixed header (``metrics.csv`` / ``eval.csv``). On resume, rows after the resumed step
    are dropped so the file matches the checkpoint."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)

    def truncate_after(self, step: int) -> None:
        rows = self.rows()
        if not rows:
            return
        header = list(rows[0].keys())
        keep = [r for r in rows if float(r.get("step", 0) or 0) <= step]
        with open(self.path, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=header)
            wr.writeheader()
            wr.writerows(keep)
        self.columns = header

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                wr.writeheader()
            wr.writerow({k: _fmt(row.get(k, "")) for k in self.columns})

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def csv_float(s: str) -> float:
    """A CSV cell as a float (NaN when empty or not a number)."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan
