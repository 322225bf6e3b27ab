"""``seem everything IMAGE --model PATH [--levels 1,3] [--points-per-side 32] --out DIR``: segment everything.

Writes two files into ``--out`` (created if needed), named after the image:

- ``<stem>_everything.png``: the image with every mask drawn in a random colour (alpha 0.5, largest masks first so
  small ones stay visible, 1-px outlines); colours come from ``--seed``, so reruns give the same picture;
- ``<stem>_everything.json``: SA-1B-style annotations: ``{"image": {image_id, file_name, width, height},
  "annotations": [{id, segmentation (COCO RLE), bbox (XYWH), area, predicted_iou, stability_score, point_coords,
  crop_box, level, label, part_label}], "info": {...}}``.

The lead registers the command with ``add_everything_parser(subparsers)`` in ``seem.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_everything_parser", "parse_levels", "render_overlay", "run_everything", "to_sa1b_json"]


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    """``"1,3"`` → ``(1, 3)``; None stays None. Raises ValueError naming the bad entry."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(f"--levels: {part!r} is not an integer (expected e.g. 1,3)") from None
    if not out:
        raise ValueError("--levels: no level given (expected e.g. 1,3)")
    return tuple(out)


def render_overlay(image: np.ndarray, masks: list[np.ndarray], seed: int = 0, alpha: float = 0.5) -> np.ndarray:
    """HWC uint8 RGB image + bool ``[H, W]`` masks → HWC uint8 RGB overlay (random colour per mask, outlines)."""
    import cv2

    out = image.astype(np.float32).copy()
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(len(masks), 3)).astype(np.float32)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i]
        out[m] = (1 - alpha) * out[m] + alpha * colours[i]
    img = np.clip(out, 0, 255).astype(np.uint8)
    for i in order:
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, tuple(int(c) for c in colours[i]), 1)
    return img


def to_sa1b_json(records: list[dict[str, Any]], file_name: str, size: tuple[int, int], info: dict[str, Any]) -> dict:
    """Generator records (binary masks) → an SA-1B-style dict with COCO RLE segmentations."""
    from seem.automatic import coco_encode_mask

    h, w = size
    anns = []
    for i, r in enumerate(records):
        seg = r["segmentation"]
        if isinstance(seg, np.ndarray):
            seg = coco_encode_mask(seg)
        anns.append(
            {
                "id": i,
                "segmentation": seg,
                "bbox": [int(v) for v in r["bbox"]],
                "area": int(r["area"]),
                "predicted_iou": float(r["predicted_iou"]),
                "stability_score": float(r["stability_score"]),
                "point_coords": [[float(v) for v in p] for p in r["point_coords"]],
                "crop_box": [int(v) for v in r["crop_box"]],
                "level": r["level"],
                "label": r["label"],
                "part_label": r["part_label"],
            }
        )
    return {
        "image": {"image_id": 0, "file_name": file_name, "width": w, "height": h},
        "annotations": anns,
        "info": info,
    }


def run_everything(args: argparse.Namespace) -> int:
    """The ``seem everything`` command; returns the exit status (2 for bad input)."""
    import cv2

    from seem.automatic import AutomaticMaskGenerator
    from seem.granularity import load_rgb, resize_short_side
    from seem.loading import load
    from seem.models.checkpoints.common import CheckpointError

    try:
        levels = parse_levels(args.levels)
        image_path = Path(args.image)
        rgb = load_rgb(image_path)
        model = load(args.model, device=args.device)
        kw: dict[str, Any] = {
            "points_per_side": args.points_per_side,
            "pred_iou_thresh": args.pred_iou_thresh,
            "box_nms_thresh": args.box_nms_thresh,
            "progress": not args.no_progress,
        }
        if levels is not None:
            kw["levels"] = levels
        for name in ("points_per_batch", "stability_score_thresh", "min_mask_region_area", "crop_n_layers"):
            if getattr(args, name) is not None:
                kw[name] = getattr(args, name)
        if args.official:
            gen = AutomaticMaskGenerator.official_semantic_sam(model, **kw)
        else:
            gen = AutomaticMaskGenerator(model, **kw)
        records = gen.generate(rgb)
    except (CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"seem everything: {e}", file=sys.stderr)
        return 2
    frame = resize_short_side(rgb, gen.short_side) if args.official else rgb
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = image_path.stem
    overlay = render_overlay(frame, [r["segmentation"] for r in records], seed=args.seed)
    png = out_dir / f"{stem}_everything.png"
    if not cv2.imwrite(str(png), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        print(f"seem everything: could not write {png}", file=sys.stderr)
        return 2
    info = {
        "model": str(args.model) if args.model is not None else "default",
        "family": gen.adapter.family,
        "levels": list(getattr(gen.adapter, "levels", None) or []) or None,
        "points_per_side": args.points_per_side,
        "official": bool(args.official),
        "label_reason": gen.label_reason,
        "timings_s": {k: round(v, 3) for k, v in gen.timings.items()},
    }
    doc = to_sa1b_json(records, image_path.name, frame.shape[:2], info)
    js = out_dir / f"{stem}_everything.json"
    js.write_text(json.dumps(doc))
    print(f"{image_path.name}: {len(records)} masks in {gen.timings.get('total', 0.0):.1f}s; wrote {png} and {js}")
    return 0


def add_everything_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seem everything`` on an ``argparse`` subparsers object; returns the new parser."""
    p = subparsers.add_parser(
        "everything",
        help="segment everything: masks for a grid of clicks (SAM-style), overlay PNG + SA-1B-style JSON",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("image", help="input image (any format PIL reads)")
    p.add_argument(
        "--model",
        default=None,
        help="official checkpoint file, a directory in seem's format or a registered name (default: bundled model)",
    )
    p.add_argument(
        "--levels",
        default=None,
        help="granularity levels, comma-separated, 1 = coarsest ... 6 = finest. Semantic-SAM: default all six; the "
        "default model (6 levels per click): default the mask it selects per click, or the levels given here; "
        "official SEEM checkpoints answer each click with one mask",
    )
    p.add_argument("--points-per-side", type=int, default=32, help="grid clicks per side (default 32)")
    p.add_argument("--points-per-batch", type=int, default=None, help="clicks per model call (default 64)")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88)
    p.add_argument("--stability-score-thresh", type=float, default=None, help="default 0.95 (official mode 0.92)")
    p.add_argument("--box-nms-thresh", type=float, default=0.7)
    p.add_argument("--min-mask-region-area", type=int, default=None, help="default 0 (official mode 10)")
    p.add_argument("--crop-n-layers", type=int, default=None, help="extra crop layers (default 0)")
    p.add_argument(
        "--official",
        action="store_true",
        help="reproduce the official Semantic-SAM generator (its defaults; masks at the 640-px resized size)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default="everything", help="output directory (default ./everything)")
    p.add_argument("--seed", type=int, default=0, help="seed of the overlay colours")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_everything)
    return p
