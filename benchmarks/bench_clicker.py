"""Per-click overhead of the evaluation loop (clicker + IoU) on a real 480p DAVIS mask, CPU.

Usage: ``python benchmarks/bench_clicker.py [--mask PATH] [--rounds N]`` (default mask:
``../shared/data/davis2016/Annotations/breakdance/00020.png``, 854x480). For each protocol it times, per
click, ``clicker.next_click(gt, pred)`` plus ``mask_iou(gt, pred)`` (what a runner adds to each model call)
over a 20-click session driven by a scripted predictor (the GT eroded, with an FP blob and FN holes that
shrink as clicks arrive), and prints the median and the 90th percentile in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from seem.eval.clickers import Click, RITMClicker, SEEMClicker
from seem.eval.metrics import mask_iou

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEEM_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_MASK = SHARED / "data" / "davis2016" / "Annotations" / "breakdance" / "00020.png"


def scripted_predictions(gt: np.ndarray, rounds: int) -> list[np.ndarray]:
    """Predictions that improve with the clicks: GT eroded by r, plus a blob outside, r shrinking."""
    import cv2

    ys, xs = np.nonzero(gt)
    cy, cx = int(ys.mean()), int(xs.mean())
    out = [np.zeros_like(gt)]
    for t in range(1, rounds):
        r = max(1, 12 - t)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        pred = cv2.erode(gt.astype(np.uint8), k) > 0
        blob = np.zeros(gt.shape, np.uint8)
        cv2.circle(blob, (min(cx + 200, gt.shape[1] - 1), cy), max(2, 30 - 2 * t), 1, -1)
        pred |= blob.astype(bool) & ~gt
        hole = np.zeros(gt.shape, np.uint8)
        cv2.circle(hole, (cx, cy), max(1, 20 - t), 1, -1)
        pred &= ~hole.astype(bool)
        out.append(pred)
    return out


def bench(make_clicker, gt: np.ndarray, void: np.ndarray | None, preds: list[np.ndarray], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        clicker = make_clicker()
        for pred in preds:
            t0 = time.perf_counter()
            click: Click | None = clicker.next_click(gt, pred, void)
            mask_iou(gt, pred, void)
            times.append((time.perf_counter() - t0) * 1000)
            del click
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mask", type=Path, default=DEFAULT_MASK)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from PIL import Image

    if not args.mask.exists():
        raise SystemExit(f"mask not found: {args.mask} (pass --mask or provide ../shared)")
    raw = np.array(Image.open(args.mask))
    if raw.ndim == 3:
        raw = raw[..., 0]
    void = raw == 128 if (raw == 128).any() else None  # GrabCut's void band
    gt = (raw > 0) & (raw != 128)
    preds = scripted_predictions(gt, args.rounds)
    print(f"mask {args.mask.name}: {gt.shape[1]}x{gt.shape[0]}, {int(gt.sum())} object px, {args.rounds} clicks")
    for name, make in (("RITM", RITMClicker), ("SEEM", SEEMClicker)):
        bench(make, gt, void, preds, 1)  # warm-up (imports, caches)
        t = bench(make, gt, void, preds, args.repeats)
        q = statistics.quantiles(t, n=10)
        print(
            f"{name:5s} clicker + IoU per click: median {statistics.median(t):.2f} ms, p90 {q[-1]:.2f} ms, "
            f"max {max(t):.2f} ms"
        )


if __name__ == "__main__":
    main()
