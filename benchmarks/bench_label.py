"""Dataset labeling throughput: ``seem label --task everything`` with the local engine vs Ray with 2 workers.

Labels the same folder of real photos (Kodak24, or ``--images``) twice into fresh folders, first with the local
engine (one process, ``--threads`` torch threads, default all cores), then with the Ray engine (a local Ray started
with all cores, ``--workers`` actors, each with a share of the CPUs and one torch thread per whole CPU, at least one),
and prints for each: images per minute (labelling only: from the first image to the last, model loading and Ray
start-up excluded, they are printed apart), the wall time of the whole run, and the peak resident memory of each
worker process (``ru_maxrss``, which includes the model and torch).

Model: by default the full-size SEEM Focal-T layout with random weights (the speed of ``seem_focalt_v1.pt``; the
masks are meaningless), saved to a temporary folder so the Ray workers can load it by path; ``--model`` labels with
any model ``seem label`` accepts. The script compares the two outputs: with equal torch threads per worker they are
byte-identical; here the local run uses all cores and each Ray worker one thread, so scores may differ in the last
float digits (float sums in another order), which it reports.

Random weights score every mask low, so with the default thresholds few masks survive; ``--keep-all`` keeps every
mask (pred_iou_thresh -1, stability 0), the worst case for post-processing and writing.

Usage: ``python benchmarks/bench_label.py [--images DIR] [--n 8] [--points-per-side 16] [--workers 2] [--keep-all]``.
Needs Ray for the second half (``pip install 'seem[ray]'``); without it only the local engine is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24" / "images"


def _prepare_images(src: Path, dst: Path, n: int) -> Path:
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    if not files:
        raise SystemExit(f"no images in {src} (pass --images DIR)")
    dst.mkdir(parents=True)
    for f in files:
        shutil.copy(f, dst / f.name)
    return dst


def _tree(out: Path) -> dict[str, bytes]:
    skip = {"manifest.json", "journal.jsonl", ".lock"}
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in skip}


def _compare(a: Path, b: Path) -> str:
    """Byte-identical files, or: same masks (RLE), boxes and labels, and the largest score difference."""
    if _tree(a) == _tree(b):
        return "identical files"
    same, worst = True, 0.0
    for f in sorted((a / "labels").rglob("*.json")):
        da = json.loads(f.read_text())["annotations"]
        g = b / "labels" / f.relative_to(a / "labels")
        db = json.loads(g.read_text())["annotations"] if g.is_file() else []
        same &= len(da) == len(db)
        for x, y in zip(da, db, strict=False):
            same &= all(x[k] == y[k] for k in ("segmentation", "bbox", "label", "level"))
            worst = max(worst, abs(x["score"] - y["score"]))
    return f"{'same' if same else 'DIFFERENT'} masks, boxes and labels; scores differ by up to {worst:.1e} (threads)"


def _report(name: str, summary: object, wall: float, setup: float) -> None:
    s = summary  # a seem.label.LabelSummary
    print(
        f"{name:<16} {s.images_per_minute:8.2f} images/min   labelling {s.seconds:7.1f} s   "  # type: ignore[attr-defined]
        f"set-up {setup:5.1f} s   whole run {wall:7.1f} s   {s.annotations} masks"  # type: ignore[attr-defined]
    )
    for w, info in sorted(s.workers.items()):  # type: ignore[attr-defined]
        print(
            f"{'':16}   worker {w:<16} {info['images']:3d} images   {info['seconds']:7.1f} s busy   "
            f"peak memory {info['peak_rss_mb']:7.0f} MiB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos (default: Kodak24)")
    ap.add_argument("--n", type=int, default=8, help="how many of its images to label (default 8)")
    ap.add_argument("--model", default=None, help="model for `seem label` (default: random-weight SEEM Focal-T)")
    ap.add_argument("--points-per-side", type=int, default=16, help="generator grid (default 16)")
    ap.add_argument("--size", type=int, default=None, help="short side of the model input (default: official)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="local engine torch threads")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    ap.add_argument("--batch-size", type=int, default=1, help="Ray images per task (default 1)")
    ap.add_argument(
        "--keep-all",
        action="store_true",
        help="no IoU / stability filtering (random weights score low): every mask is post-processed and written",
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from seem.label import make_job, run_job

    tmp = Path(tempfile.mkdtemp(prefix="bench_label_"))
    try:
        images = _prepare_images(args.images, tmp / "images", args.n)
        model = args.model
        if model is None:
            from seem.models.config import seem_focalt
            from seem.models.seem_model import SEEMModel

            torch.manual_seed(0)
            model = str(SEEMModel(seem_focalt("v1")).eval().save_pretrained(tmp / "seem-focalt-random"))
        kw = {"task": "everything", "model": model, "points_per_side": args.points_per_side, "size": args.size}
        if args.keep_all:
            kw.update(pred_iou_thresh=-1.0, stability_score_thresh=0.0)
        cpus = os.cpu_count() or 1
        print(
            f"{len(list(images.iterdir()))} images from {args.images}, model {args.model or 'SEEM Focal-T (random)'}, "
            f"{args.points_per_side}x{args.points_per_side} clicks, {cpus} CPUs, torch {torch.__version__}"
        )

        t0 = time.perf_counter()
        local = run_job(make_job(images, tmp / "local", threads=args.threads, **kw), "local", progress=False)
        wall = time.perf_counter() - t0
        _report(f"local ({args.threads} thr)", local, wall, wall - local.seconds)

        try:
            import ray
        except ImportError:
            print("ray engine: skipped (pip install 'seem[ray]')")
            return
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            dist = run_job(
                make_job(images, tmp / "ray", **kw),
                "ray",
                num_workers=args.workers,
                batch_size=args.batch_size,
                progress=False,
            )
            wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
        _report(f"ray ({args.workers} workers)", dist, wall + started, wall - dist.seconds + started)
        print(f"ray start-up {started:.1f} s; local vs ray outputs: {_compare(tmp / 'local', tmp / 'ray')}")
        if local.images_per_minute > 0:
            print(f"speed-up of ray over local: {dist.images_per_minute / local.images_per_minute:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
