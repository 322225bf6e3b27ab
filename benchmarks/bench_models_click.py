"""Per-click latency of several models on one image, measured click by click in turn (A, B, A, B, ...).

On a shared machine the speed of the cores drifts by tens of percent from one minute to the next (and between
sessions); timing models one after another then compares the machine, not the models. Here every click position is
sent to each model in turn, so a slow spell slows all of them alike, and the ratios to the first model are what to
read. Each model gets its own ``Segmenter`` (fp32, as ``seem.load`` gives it) with the image encoded once; a click
is ``segment(PromptSet(points=...))`` with the model's own vocabulary for the label (the refiner, if the model has
one, included), at the same spread of positions as ``bench_predictor.py``. ``--round K`` times the K-th click of
an ``InteractiveSession`` instead (a positive click, then clicks alternating negative / positive, each round with
the previous mask as memory, as ``bench_predictor.py``'s ``5th round`` row; the earlier rounds are not timed).

    python benchmarks/bench_models_click.py default path/to/other_model [--threads 2] [--clicks 200] [--round 5]

``default``: the shipped default model; anything else: what ``seem.load`` takes (a model directory, a name).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_predictor import DEFAULT_IMAGE, GOAL_MS, clicks

from seem.io import read_image
from seem.loading import load
from seem.predictor import Segmenter
from seem.prompts import Points, PromptSet
from seem.session import InteractiveSession


def timed_round(seg: Segmenter, pos: list[tuple[float, float]], i: int, k: int) -> float:
    """Seconds of click ``k`` (1-based) of the ``i``-th interaction: one ``segment`` call for ``k = 1``, else an
    ``InteractiveSession`` whose clicks (positions ``i, i + 7, ...``) alternate positive / negative."""
    if k == 1:
        x, y = pos[i % len(pos)]
        t = time.perf_counter()
        seg.segment(PromptSet(points=Points([[x, y]])))
        return time.perf_counter() - t
    s = InteractiveSession(seg)
    for j in range(k):
        x, y = pos[(i + 7 * j) % len(pos)]
        t = time.perf_counter()
        s.click(x, y, positive=j % 2 == 0)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="models to compare ('default' = the shipped default model)")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="any RGB photo (default: Kodak kodim05)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--clicks", type=int, default=200, help="clicks per model (default 200)")
    ap.add_argument("--round", type=int, default=1, help="time the K-th click of an interactive session (default 1)")
    args = ap.parse_args()
    if args.round < 1:
        raise SystemExit(f"--round must be >= 1, got {args.round}")
    if not args.image.is_file():
        raise SystemExit(f"image not found: {args.image} (pass --image PATH)")
    torch.set_num_threads(args.threads)
    image = read_image(args.image)
    segs = []
    for name in args.models:
        seg = Segmenter(load(None if name == "default" else name), cache_dir=False, progress=False)
        seg.set_image(image)
        seg.segment(PromptSet(points=Points([[10, 10]])))  # warm-up (first-call allocations)
        segs.append(seg)
    pos = clicks(image)
    times: list[list[float]] = [[] for _ in segs]
    for i in range(args.clicks):
        for k, seg in enumerate(segs):
            times[k].append(1000 * timed_round(seg, pos, i, args.round))
    h, w = image.shape[:2]
    what = "clicks" if args.round == 1 else f"sessions (round {args.round} timed)"
    print(f"{args.image.name} {w}×{h}, {args.threads} thread(s), {args.clicks} {what} per model, interleaved")
    base = statistics.median(times[0])
    for name, ts in zip(args.models, times, strict=True):
        q = np.percentile(ts, [10, 50, 90])
        print(
            f"  {name:<40} click median {q[1]:6.1f} ms (p10 {q[0]:6.1f}, p90 {q[2]:6.1f})   "
            f"× {q[1] / base:.2f} of {args.models[0]}   {'meets' if q[1] <= GOAL_MS else 'misses'} ≤ {GOAL_MS:.0f} ms"
        )


if __name__ == "__main__":
    main()
