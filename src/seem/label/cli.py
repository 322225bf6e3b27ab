"""``seem label SOURCE --out DIR``: label a whole dataset on this machine or on a Ray cluster.

The lead registers the command with ``add_label_parser(subparsers)`` in ``seem.cli``; ``python -m seem.label.cli``
runs it on its own. Exit status: 0 when the run finished (also when some images failed: they are listed in
``manifest.json``; ``--strict`` makes that 1), 2 for a job that cannot run (reported before any work starts), 130
when interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from seem.io import DEFAULT_MAX_PIXELS

__all__ = ["add_label_parser", "main", "run_label"]

DESCRIPTION = """Label every image of SOURCE and write the results into --out: one SA-1B-style JSON per image
(COCO RLE masks, boxes, scores, labels, level) under labels/, a merged COCO instances file (instances.json; for
--task panoptic also COCO-panoptic PNGs + panoptic.json), optional overlay thumbnails, and manifest.json (model,
settings, versions, counts, errors). SOURCE: a folder (recursive), a glob ('photos/**/*.jpg'), a text file of paths,
a COCO JSON (its image list), one image, or an object-storage URI (s3://bucket/prefix; needs seem[ray]).
Rerunning the same command resumes: finished images are skipped. See docs/labeling.md."""


def _levels(text: str | None) -> tuple[int, ...] | None:
    from seem.automatic_cli import parse_levels

    return parse_levels(text)


def run_label(args: argparse.Namespace) -> int:
    """The ``seem label`` command; returns the exit status."""
    from seem.label.engines import run_job
    from seem.label.job import LabelJobError, make_job

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    try:
        job = make_job(
            args.source,
            args.out,
            task=args.task,
            model=args.model,
            config=args.config,
            classes=args.classes,
            stuff=args.stuff,
            phrases=args.phrases,
            levels=_levels(args.levels),
            size=args.size,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            box_nms_thresh=args.box_nms_thresh,
            min_mask_region_area=args.min_mask_region_area,
            crop_n_layers=args.crop_n_layers,
            threshold=args.threshold,
            overlap=args.overlap,
            overlays=args.overlays,
            thumb_size=args.thumb_size,
            max_pixels=args.max_pixels if args.max_pixels > 0 else None,
            image_root=args.image_root,
            device=args.device,
            threads=args.threads,
        )
        summary = run_job(
            job,
            args.engine,
            address=args.address,
            num_workers=args.num_workers,
            batch_size=args.batch_size,
            cpus_per_worker=args.cpus_per_worker,
            progress=not args.quiet,
            log=log,
        )
    except (LabelJobError, ValueError, TypeError) as e:
        print(f"seem label: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seem label: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    rate = f", {summary.images_per_minute:.1f} images/min" if summary.processed else ""
    print(
        f"{summary.labelled}/{summary.images} images labelled ({summary.processed} this run, {summary.skipped} "
        f"already done{rate}), {summary.annotations} masks, {len(summary.errors)} errors; wrote {summary.out}"
    )
    for err in summary.errors[:20]:
        print(f"  error: {err['key']}: {err['reason']}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"  ... and {len(summary.errors) - 20} more (see {summary.out / 'manifest.json'})", file=sys.stderr)
    return 1 if (args.strict and summary.errors) else 0


def add_label_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seem label`` on an ``argparse`` subparsers object; returns the new parser."""
    from seem.label.job import TASKS

    p = subparsers.add_parser(
        "label", help="label a whole dataset (folder, glob, list, COCO JSON) locally or on a Ray cluster",
        description=DESCRIPTION,
    )  # fmt: skip
    p.add_argument("source", help="folder, glob, text file of paths, COCO JSON, image, or object-storage URI")
    p.add_argument("--out", required=True, help="output folder (created; rerun to resume)")
    p.add_argument(
        "--task",
        choices=TASKS,
        default="everything",
        help="panoptic (SEEM, --classes), everything (SEEM or Semantic-SAM, all masks), text (SEEM, --phrases), "
        "granularity (Semantic-SAM, one mask set per --levels level); default everything",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="official checkpoint, a directory written by `seem convert`, or a registered name (`seem models`); "
        "with --engine ray every worker must be able to load it (a path on every node, or a registered name)",
    )
    g.add_argument("--config", default=None, help="official SEEM YAML for a .pt whose architecture is not inferable")
    g.add_argument("--device", default=None, help="torch device of the workers (default cpu)")
    g.add_argument("--size", type=int, default=None, help="short side of the model input (default 512 SEEM, 640 SSAM)")
    g = p.add_argument_group("task")
    g.add_argument("--classes", default=None, help="vocabulary 'a,b,c' (panoptic default: the 133 COCO classes)")
    g.add_argument("--stuff", default=None, help="panoptic: which --classes are stuff, 'a,b'")
    g.add_argument("--phrases", nargs="+", default=None, metavar="PHRASE", help="text: referring phrases")
    g.add_argument("--levels", default=None, help="Semantic-SAM granularity levels '1,3' (1 coarsest .. 6 finest)")
    g.add_argument("--threshold", type=float, default=None, help="panoptic object score threshold (default: model's)")
    g.add_argument("--overlap", type=float, default=None, help="panoptic overlap threshold (default: model's, 0.8)")
    g = p.add_argument_group("everything / granularity (the automatic mask generator)")
    g.add_argument("--points-per-side", type=int, default=32, help="grid clicks per side (default 32)")
    g.add_argument("--points-per-batch", type=int, default=64, help="clicks per model call (default 64)")
    g.add_argument("--pred-iou-thresh", type=float, default=0.88, help="default 0.88")
    g.add_argument("--stability-score-thresh", type=float, default=0.95, help="default 0.95")
    g.add_argument("--box-nms-thresh", type=float, default=0.7, help="default 0.7")
    g.add_argument("--min-mask-region-area", type=int, default=0, help="remove holes/islands below this (default 0)")
    g.add_argument("--crop-n-layers", type=int, default=0, help="extra crop layers (default 0)")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--image-root", default=None, help="COCO JSON source: folder of its file_name entries")
    g.add_argument("--overlays", action="store_true", help="also write overlay thumbnails (overlays/)")
    g.add_argument("--thumb-size", type=int, default=256, help="long side of the overlay thumbnails (default 256)")
    g.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images are recorded as errors (0: no limit)"
    )
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    g.add_argument("--address", default=None, help="ray: cluster to join: auto, HOST:PORT or ray://HOST:PORT")
    g.add_argument("--num-workers", type=int, default=None, help="ray: model actors (default: cluster CPUs - 1)")
    g.add_argument("--batch-size", type=int, default=4, help="ray: images per task (default 4)")
    g.add_argument("--cpus-per-worker", type=float, default=None, help="ray: CPUs per actor (default 1 or a share)")
    g.add_argument("--threads", type=int, default=None, help="torch threads per worker (ray default: its CPUs)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any image failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    p.set_defaults(func=run_label)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m seem.label.cli SOURCE --out DIR ...`` (the same arguments as ``seem label``)."""
    parser = argparse.ArgumentParser(prog="seem")
    sub = parser.add_subparsers(dest="command", required=True)
    add_label_parser(sub)
    args = parser.parse_args(["label", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
