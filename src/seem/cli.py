"""Command-line interface: ``seem <command> ...``.

Commands:
    convert   official SEEM checkpoint (.pt) → our format (config.json + model.safetensors), strictly checked
    models      the default model and the registered model names
    segment     segment one object of an image from clicks, boxes, scribbles, masks, text or a reference image
    panoptic    panoptic segmentation of an image (COCO classes by default)
    video       follow prompted objects through a video
    everything  segment everything (Semantic-SAM granularity levels, or SEEM grid clicks)
    eval        interactive / prompt / panoptic / referring / video / granularity evaluation
    serve       the web app and HTTP API
    train       train from a run config; ``finetune`` on a folder of images + masks
    label       label a whole dataset (local or Ray), resumable
    export      export a model to ONNX (image encoder + SAM-compatible prompt decoder)

``segment`` and ``panoptic`` write an overlay PNG and a JSON file (COCO RLE masks, XYXY boxes, scores, labels) into
``--out``; ``panoptic`` also writes the COCO-panoptic PNG and JSON. Files appear only when everything succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cmd_convert(args: argparse.Namespace) -> int:
    from seem.models.checkpoints.common import CheckpointError
    from seem.models.seem_model import SEEMModel

    try:
        model, report = SEEMModel.from_official(args.checkpoint, variant=args.variant, config=args.config)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"seem convert: {e}", file=sys.stderr)
        return 2
    out = model.save_pretrained(args.out_dir)
    print(f"{args.checkpoint}: {report.summary()}; decoder variant {model.config.decoder.variant}")
    for key, reason in sorted(report.ignored.items()):
        print(f"  ignored {key}: {reason}")
    print(f"wrote {out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from seem.hub import REGISTRY, cache_dir
    from seem.loading import default_model_dir

    default = default_model_dir()
    print(f"default model: {default if default is not None else 'none shipped with this installation yet'}")
    print(f"registered models (downloaded once into {cache_dir()}):")
    for name, entry in sorted(REGISTRY.items()):
        cached = "cached" if (cache_dir() / entry.filename).is_file() else "not downloaded"
        rules = f", decoder rules {entry.variant}" if entry.variant else ""
        print(f"  {name:<20} {entry.family}{rules}, {cached}: {entry.url}")
    return 0


# ------------------------------------------------------------------------------------------------------------
# segment / panoptic

# seem.predictor.PRECISIONS, repeated here so that ``--help`` does not import torch (a test keeps them equal)
PRECISIONS = ("fp32", "bf16")
PRECISION_HELP = (
    "decoder precision: fp32 (default, the official numerics) or bf16 (clicks about twice as fast on a CPU with "
    "bfloat16 units; masks equal up to rounding)"
)
MODEL_HELP = (
    "official SEEM checkpoint (.pt, converted on the fly), a directory written by `seem convert`, or a registered "
    "name (`seem models`, downloaded once); default: the model shipped with seem, when there is one"
)


class CliError(ValueError):
    """A command-line argument that cannot be used (reported without a traceback)."""


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CliError(f"{what}: expected numbers separated by commas, got {text!r}") from None
    if len(vals) not in n:
        want = " or ".join(str(k) for k in n)
        raise CliError(f"{what}: expected {want} comma-separated numbers, got {text!r}")
    return vals


def _points_arg(values: list[str] | None, what: str) -> Any:
    from seem.prompts import Points

    if not values:
        return None
    coords, labels = [], []
    for v in values:
        f = _floats(v, (2, 3), what)
        coords.append(f[:2])
        lab = f[2] if len(f) == 3 else 1.0
        if lab not in (0.0, 1.0):
            raise CliError(f"{what}: label must be 1 (positive) or 0 (negative), got {v!r}")
        labels.append(int(lab))
    return Points(coords, labels)


def _polyline_arg(text: str, what: str) -> list[list[float]]:
    pts = [_floats(p, (2,), what) for p in text.split(";") if p.strip()]
    if not pts:
        raise CliError(f"{what}: expected 'x,y;x,y;...', got {text!r}")
    return pts


def _prompt_set(args: argparse.Namespace, prefix: str, image_size: tuple[int, int]) -> Any:
    from seem.io import read_mask
    from seem.prompts import Box, MaskPrompt, Polygon, PromptSet, Scribble

    def get(name: str) -> Any:
        return getattr(args, f"{prefix}{name}", None)

    flag = "--" + prefix.replace("_", "-")
    boxes = [Box(_floats(b, (4,), f"{flag}box")) for b in get("box") or []]
    scribbles = [Scribble(_polyline_arg(s, f"{flag}scribble"), width=args.width) for s in get("scribble") or []]
    scribbles += [
        Scribble(_polyline_arg(s, f"{flag}neg-scribble"), width=args.width, label=0) for s in get("neg_scribble") or []
    ]
    polygons = [Polygon(_polyline_arg(s, f"{flag}polygon")) for s in get("polygon") or []]
    masks = [MaskPrompt(read_mask(m, image_size)) for m in get("mask") or []]
    return PromptSet(
        points=_points_arg(get("point"), f"{flag}point"),
        boxes=boxes,
        scribbles=scribbles,
        polygons=polygons,
        masks=masks,
        text=get("text"),
    )


def _load_segmenter(args: argparse.Namespace) -> Any:
    from seem.predictor import Segmenter, resolve_model

    model = resolve_model(args.model, config=args.config, device=args.device)
    seg = Segmenter(model, short_side=args.size, progress=not args.quiet, precision=args.precision)
    if args.classes:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
        stuff = [c.strip() for c in (args.stuff or "").split(",") if c.strip()] or None
        seg.set_vocabulary(names, stuff)
    elif args.stuff:
        raise CliError("--stuff needs --classes")
    return seg


def _outputs(out_dir: str, image: str, suffixes: list[str]) -> list[Path]:
    stem = Path(image).stem or "image"
    return [Path(out_dir) / f"{stem}{s}" for s in suffixes]


def _cmd_segment(args: argparse.Namespace) -> int:
    import json

    from seem.audio import audio_to_text_arg
    from seem.io import read_image, write_files_atomically
    from seem.prompts import PromptSet, ReferenceImage
    from seem.results import draw_levels, draw_overlay, encode_png, segments_to_json

    audio_to_text_arg(args)  # --audio WAV → --text (offline speech recognition)
    image = read_image(args.image)
    prompts = _prompt_set(args, "", image.shape[:2])
    ref_given = any(getattr(args, f"ref_{n}") for n in ("point", "box", "scribble", "neg_scribble", "polygon", "mask"))
    if args.ref_image is not None:
        ref_img = read_image(args.ref_image)
        ref = _prompt_set(args, "ref_", ref_img.shape[:2])
        if not ref.has_visual:
            raise CliError("--ref-image needs prompts on it (--ref-point, --ref-box, --ref-scribble, ...)")
        prompts = prompts.merged(PromptSet(reference=ReferenceImage(ref_img, ref)))
    elif ref_given:
        raise CliError("--ref-point / --ref-box / ... need --ref-image")
    if prompts.is_empty:
        raise CliError("give at least one prompt: --point, --box, --scribble, --polygon, --mask, --text or --ref-image")
    prompts.validate(image.shape[:2])  # fail before loading the model
    if args.levels and (prompts.text is not None or prompts.reference is not None or not prompts.has_visual):
        raise CliError("--levels takes visual prompts only (--point, --box, --scribble, --polygon, --mask)")
    seg = _load_segmenter(args)
    seg.set_image(image)
    segments = seg.segment(prompts, labels=not args.no_labels)
    files: dict[str | os.PathLike[str], bytes] = {}
    levels = None
    if args.levels:
        levels = seg.segment_levels(prompts, labels=not args.no_labels)
        (lv_path,) = _outputs(args.out, args.image, [".levels.png"])
        files[lv_path] = encode_png(draw_levels(image, levels, alpha=args.alpha))
    overlay = draw_overlay(image, segments, alpha=args.alpha, boxes=True)
    meta: dict[str, Any] = {"command": "segment", "prompts": prompts.describe(), "model_variant": seg.variant}
    if levels is not None:
        meta["levels"] = segments_to_json(levels, image.shape[:2])["segments"]
    doc = segments_to_json(segments, image.shape[:2], file_name=Path(args.image).name, extra=meta)
    png_path, json_path = _outputs(args.out, args.image, [".overlay.png", ".json"])
    files[png_path] = encode_png(overlay)
    files[json_path] = (json.dumps(doc, indent=1) + "\n").encode("utf-8")
    write_files_atomically(files)
    for s in segments:
        print(f"segment: {_describe(s)}")
    for i, s in enumerate(levels or []):
        print(f"level {i + 1}: {_describe(s)}")
    print(f"wrote {', '.join(str(p) for p in files)}")
    return 0


def _describe(s: Any) -> str:
    label = f"{s.label} ({s.label_score:.2f})" if s.label is not None and s.label_score is not None else "-"
    return f"area {s.area} px, bbox {list(s.bbox)}, score {s.score:.3f}, label {label}"


DEMO_POINTS = {"chelsea": "172,112", "coffee": "255,215"}
"""The click of ``seem demo`` on each shipped photo: Chelsea's left eye; the cup."""


def _cmd_demo(args: argparse.Namespace) -> int:
    """``seem demo``: one click on a shipped photo with the default model → overlay, granularity levels, JSON."""
    from seem.samples import sample_image

    point = DEMO_POINTS[args.sample]
    image = str(sample_image(args.sample))
    argv = ["segment", image, "--point", point, "--levels", "--out", args.out]
    if args.model:
        argv += ["--model", args.model]
    print(f"seem {' '.join(argv)}")
    return _run_guarded(build_parser().parse_args(argv))


def _cmd_panoptic(args: argparse.Namespace) -> int:
    import json

    from seem.io import read_image, write_files_atomically
    from seem.results import draw_overlay, encode_png, segments_to_json

    image = read_image(args.image)
    seg = _load_segmenter(args)
    seg.set_image(image)
    pan = seg.panoptic(object_mask_threshold=args.threshold, overlap_threshold=args.overlap)
    overlay = draw_overlay(image, pan.segments, alpha=args.alpha)
    over_path, json_path, pan_png, pan_json = _outputs(
        args.out, args.image, [".overlay.png", ".json", ".panoptic.png", ".panoptic.json"]
    )
    doc = segments_to_json(
        pan.segments, image.shape[:2], file_name=Path(args.image).name, extra={"command": "panoptic"}
    )
    coco = pan.to_coco_json(pan_png.name, image_file=Path(args.image).name)
    write_files_atomically(
        {
            over_path: encode_png(overlay),
            json_path: (json.dumps(doc, indent=1) + "\n").encode("utf-8"),
            pan_png: encode_png(pan.to_coco_png()),
            pan_json: (json.dumps(coco, indent=1) + "\n").encode("utf-8"),
        }
    )
    for s in pan.segments:
        print(f"segment {s.id}: {s.label} ({'thing' if s.isthing else 'stuff'}), score {s.score:.3f}, area {s.area} px")
    print(f"{len(pan.segments)} segments; wrote {over_path}, {json_path}, {pan_png}, {pan_json}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--config", default=None, help="official SEEM YAML for a .pt whose architecture is not inferable")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--classes", default=None, help="vocabulary 'a,b,c' (default: the 133 COCO-panoptic classes)")
    p.add_argument("--stuff", default=None, help="which --classes are stuff, 'a,b' (panoptic merges them per class)")
    p.add_argument(
        "--size", type=int, default=None, help="model input short side in pixels (default: the model's; 512 official)"
    )
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_visual_args(p: argparse.ArgumentParser, prefix: str, where: str) -> None:
    f = "--" + prefix
    p.add_argument(f"{f}point", action="append", metavar="X,Y[,L]", help=f"click on {where} (L: 1 pos, 0 neg)")
    p.add_argument(f"{f}box", action="append", metavar="X0,Y0,X1,Y1", help=f"box on {where} (XYXY pixel edges)")
    p.add_argument(f"{f}scribble", action="append", metavar="X,Y;X,Y;...", help=f"positive stroke on {where}")
    p.add_argument(f"{f}neg-scribble", action="append", metavar="X,Y;X,Y;...", help=f"negative stroke on {where}")
    p.add_argument(f"{f}polygon", action="append", metavar="X,Y;X,Y;...", help=f"filled polygon on {where}")
    p.add_argument(f"{f}mask", action="append", metavar="PNG", help=f"binary mask PNG of {where} (nonzero = object)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seem", description="Universal promptable image segmentation (SEEM).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert an official SEEM checkpoint to seem's safetensors format")
    p.add_argument("checkpoint", help="official SEEM .pt file (e.g. seem_focalt_v1.pt)")
    p.add_argument("out_dir", help="output directory (config.json + model.safetensors)")
    p.add_argument(
        "--variant",
        choices=["v1", "demo"],
        default=None,
        help="decoder attention rules; default: 'demo' for *_v0 files (as the official demo runs them), else 'v1'",
    )
    p.add_argument("--config", default=None, help="official SEEM YAML config (default: inferred from the weights)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("models", help="show the default model and the registered model names")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "segment",
        help="segment one object from clicks, boxes, scribbles, masks, text or a reference image",
        description="Segment one object of IMAGE. All prompts describe the same object; coordinates are pixels of "
        "the original image (x right, y down). Writes IMAGE_STEM.overlay.png and IMAGE_STEM.json (COCO RLE mask, "
        "XYXY box, score, label) into --out.",
    )
    p.add_argument("image", help="image file (PNG, JPEG, GIF, BMP, TIFF, WebP)")
    _add_model_args(p)
    _add_visual_args(p, "", "the image")
    p.add_argument("--width", type=int, default=5, help="stroke width on the model canvas (default 5, official)")
    p.add_argument("--text", default=None, help="referring text, e.g. 'the white coffee cup'")
    p.add_argument("--ref-image", default=None, help="reference image: find here what the --ref-* prompts mark there")
    _add_visual_args(p, "ref-", "the reference image")
    p.add_argument("--no-labels", action="store_true", help="do not label the mask (skips the vocabulary)")
    p.add_argument(
        "--levels",
        action="store_true",
        help="also write every mask the model gives the prompt, coarse to fine (IMAGE_STEM.levels.png; the default "
        "model's 6 granularity levels)",
    )
    from seem.audio import add_audio_args

    add_audio_args(p)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser(
        "demo",
        help="click once on a shipped photo with the default model: overlay + granularity levels + JSON",
        description="Runs `seem segment PHOTO --point X,Y --levels --out OUT` on a photo shipped with the package "
        "(seem.samples): Chelsea the cat, clicked on the left eye (level 1 is the coarsest region, the last the "
        "finest), or a coffee cup.",
    )
    p.add_argument("--out", default="seem_demo", help="output directory (default: seem_demo)")
    p.add_argument("--sample", default="chelsea", choices=["chelsea", "coffee"], help="which shipped photo")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "panoptic",
        help="panoptic segmentation (COCO classes by default)",
        description="Panoptic segmentation of IMAGE. Writes IMAGE_STEM.overlay.png, IMAGE_STEM.json (segments with "
        "COCO RLE masks), IMAGE_STEM.panoptic.png and IMAGE_STEM.panoptic.json (COCO-panoptic format) into --out.",
    )
    p.add_argument("image", help="image file (PNG, JPEG, GIF, BMP, TIFF, WebP)")
    _add_model_args(p)
    p.add_argument("--threshold", type=float, default=None, help="object score threshold (default: model config)")
    p.add_argument("--overlap", type=float, default=None, help="overlap threshold (default: model config, 0.8)")
    p.set_defaults(func=_cmd_panoptic, no_labels=False)
    from seem.automatic_cli import add_everything_parser
    from seem.eval.cli import add_eval_parser
    from seem.export.cli import add_export_parser
    from seem.label.cli import add_label_parser
    from seem.serve.cli import add_serve_parser
    from seem.train.cli import add_train_parser
    from seem.video_cli import add_video_parser

    add_video_parser(sub)
    add_everything_parser(sub)
    add_eval_parser(sub)
    add_serve_parser(sub)
    add_label_parser(sub)
    add_export_parser(sub)
    add_train_parser(sub)
    return parser


def _run_guarded(args: argparse.Namespace) -> int:
    """Run a segment/panoptic command, turning user errors into one line on stderr and exit code 2."""
    from seem.models.checkpoints.common import CheckpointError

    try:
        return int(args.func(args))
    except (
        CliError,
        CheckpointError,
        ValueError,
        TypeError,
        FileNotFoundError,
        RuntimeError,
        OSError,
        ImportError,
    ) as e:
        print(f"seem {args.command}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("segment", "panoptic"):
        return _run_guarded(args)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
