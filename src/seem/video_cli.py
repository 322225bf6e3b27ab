"""``seem video VIDEO --frame N --point X,Y --model PATH --out DIR``: follow objects through a video.

VIDEO is a video file (.mp4, .avi, ... read with OpenCV) or a folder of frame images. Prompts are given on
frame --frame (default 0), in that frame's pixels (x right, y down). Several objects: prefix a prompt with
ID: (--point 1:320,240 --point 2:100,80 --text "3:the dog"); prompts without a prefix belong to
--object-id (default 1). --mask [ID:]PNG gives an object's mask on that frame, taken as is.

Writes into --out (named after the video):

- <stem>_masks/<object>/<frame>.png: 0/255 mask per object and frame (unless --no-png);
- <stem>.json: COCO RLE masks, boxes and scores per frame and object (unless --no-json);
- <stem>.overlay.mp4: the video with the objects drawn (mp4v; unless --no-video);
- <stem>.jf.json with --gt DIR: DAVIS J&F against the ground-truth PNGs in DIR (<frame>.png).

Nothing is written unless the whole run succeeds. The lead registers the command with
``add_video_parser(subparsers)`` in ``seem.cli``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_video_parser", "build_prompts", "run_video"]

_ID = re.compile(r"^([A-Za-z0-9_.-]+):(.*)$")
_MODEL_HELP = (
    "official SEEM checkpoint (.pt, converted on the fly), a directory written by `seem convert`, or a registered "
    "name (`seem models`); default: the model shipped with seem, when there is one"
)


def _split_id(value: str, default: str, numeric_body: bool) -> tuple[str, str]:
    """``"2:10,20"`` → ``("2", "10,20")``; no prefix → ``(default, value)``. For numeric prompts the prefix is
    only an id when the rest still parses as numbers."""
    m = _ID.match(value.strip())
    if m is None:
        return default, value
    if numeric_body and not re.fullmatch(r"[\d\s.,;+-]+", m.group(2)):
        return default, value
    return m.group(1), m.group(2)


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"{what}: expected numbers separated by commas, got {text!r}") from None
    if len(vals) not in n:
        raise ValueError(f"{what}: expected {' or '.join(map(str, n))} comma-separated numbers, got {text!r}")
    return vals


def build_prompts(args: argparse.Namespace, image_size: tuple[int, int]) -> dict[str, Any]:
    """``{object_id: PromptSet}`` from ``--point/--box/--scribble/--mask/--text`` (validated against the prompt
    frame's ``(H, W)``). Raises ValueError (``PromptError``) naming the bad argument."""
    from seem.io import read_mask
    from seem.prompts import Box, MaskPrompt, Points, PromptError, PromptSet, Scribble

    default = str(args.object_id)
    parts: dict[str, dict[str, list[Any]]] = {}

    def bucket(oid: str) -> dict[str, list[Any]]:
        return parts.setdefault(oid, {"pts": [], "labels": [], "boxes": [], "scribbles": [], "masks": [], "text": []})

    for v in args.point or []:
        oid, body = _split_id(v, default, True)
        f = _floats(body, (2, 3), "--point")
        lab = f[2] if len(f) == 3 else 1.0
        if lab not in (0.0, 1.0):
            raise ValueError(f"--point: label must be 1 (positive) or 0 (negative), got {v!r}")
        bucket(oid)["pts"].append(f[:2])
        bucket(oid)["labels"].append(int(lab))
    for v in args.box or []:
        oid, body = _split_id(v, default, True)
        bucket(oid)["boxes"].append(Box(_floats(body, (4,), "--box")))
    for v in args.scribble or []:
        oid, body = _split_id(v, default, True)
        pts = [_floats(p, (2,), "--scribble") for p in body.split(";") if p.strip()]
        if not pts:
            raise ValueError(f"--scribble: expected 'x,y;x,y;...', got {v!r}")
        bucket(oid)["scribbles"].append(Scribble(pts, width=args.width))
    for v in args.mask or []:
        oid, body = _split_id(v, default, False)
        if not Path(body).expanduser().is_file() and Path(v).expanduser().is_file():
            oid, body = default, v  # a file name that merely looks like "ID:path"
        bucket(oid)["masks"].append(MaskPrompt(read_mask(Path(body).expanduser(), image_size)))
    for v in args.text or []:
        oid, body = _split_id(v, default, False)
        bucket(oid)["text"].append(body)
    prompts: dict[str, Any] = {}
    for oid, b in parts.items():
        if len(b["text"]) > 1:
            raise ValueError(f"object {oid}: give at most one --text")
        ps = PromptSet(
            points=Points(b["pts"], b["labels"]) if b["pts"] else None,
            boxes=b["boxes"],
            scribbles=b["scribbles"],
            masks=b["masks"],
            text=b["text"][0] if b["text"] else None,
        )
        try:
            ps.validate(image_size)
        except PromptError as e:
            raise type(e)(f"object {oid}: {e}") from None
        prompts[oid] = ps
    if not prompts:
        raise ValueError("give at least one prompt on the prompt frame: --point, --box, --scribble, --mask or --text")
    return prompts


def _load_segmenter(args: argparse.Namespace) -> Any:
    from seem.predictor import Segmenter, resolve_model

    model = resolve_model(args.model, config=args.config, device=args.device)
    seg = Segmenter(model, short_side=args.size, progress=not args.quiet, precision=args.precision)
    if args.classes:
        if not args.labels:
            raise ValueError("--classes is the vocabulary of --labels; add --labels")
        seg.set_vocabulary([c.strip() for c in args.classes.split(",") if c.strip()])
    return seg


def run_video(args: argparse.Namespace) -> int:
    """The ``seem video`` command (raises on errors; ``_cmd_video`` reports them)."""
    from seem.video import DEFAULT_FPS, JFAccumulator, TrackingWriter, VideoTracker, open_frames

    source = open_frames(args.video, fps=args.fps)
    if args.frame < 0:
        raise ValueError(f"--frame must be >= 0, got {args.frame}")
    if args.end is not None and args.end <= args.frame:
        raise ValueError(f"--end ({args.end}) must be after --frame ({args.frame})")
    if args.no_png and args.no_json and args.no_video and args.gt is None:
        raise ValueError("--no-png, --no-json and --no-video together leave nothing to write")
    first = source.read(args.frame)
    prompts = build_prompts(args, first.image.shape[:2])
    jf = JFAccumulator(args.gt) if args.gt is not None else None
    seg = _load_segmenter(args)
    tracker = VideoTracker(seg, reference=args.reference, refine=args.refine, labels=args.labels)
    src = Path(args.video)
    stem = src.stem if src.is_file() else (src.resolve().name or "video")
    info = {
        "source": str(args.video),
        "prompt_frame": args.frame,
        "reference": args.reference,
        "refine": args.refine,
        "model_variant": seg.variant,
        "prompts": {k: p.describe() for k, p in prompts.items()},
    }
    writer = TrackingWriter(
        args.out,
        stem,
        fps=source.fps or DEFAULT_FPS,
        png=not args.no_png,
        rle_json=not args.no_json,
        overlay=not args.no_video,
        alpha=args.alpha,
        info=info,
    )
    areas: dict[str, list[int]] = {}
    n = 0
    with writer:
        for r in tracker.track(source, prompts, args.frame, end_frame=args.end, progress=not args.quiet):
            writer.write(r)
            if jf is not None:
                jf.add(r)
            for k, s in r.segments.items():
                areas.setdefault(str(k), []).append(s.area)
            n += 1
        summary = None
        if jf is not None:
            summary = jf.summary()
            writer.attach(f"{writer.stem}.jf.json", (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    for k, a in areas.items():
        lost = sum(1 for v in a if v == 0)
        print(f"object {k}: {len(a)} frames, mean area {sum(a) / len(a):.0f} px, empty on {lost} frame(s)")
    if summary is not None:
        print(f"J&F {summary['JF']:.4f} (J {summary['J_mean']:.4f}, F {summary['F_mean']:.4f}) against {args.gt}")
        for k, o in summary["objects"].items():
            print(f"  object {k}: J {o['J']['M']:.4f}, F {o['F']['M']:.4f} over {o['n_scored']} scored frame(s)")
    outs = []
    if not args.no_png:
        outs.append(str(writer.masks_dir))
    if not args.no_json:
        outs.append(str(writer.json_path))
    if not args.no_video:
        outs.append(str(writer.video_path))
    if summary is not None:
        outs.append(str(writer.out_dir / f"{writer.stem}.jf.json"))
    print(f"{n} frames tracked; wrote {', '.join(outs)}")
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    from seem.models.checkpoints.common import CheckpointError
    from seem.video import TrackingCancelled

    try:
        return run_video(args)
    except (CheckpointError, ValueError, TypeError, FileNotFoundError, RuntimeError, OSError) as e:
        if isinstance(e, TrackingCancelled):
            raise
        print(f"seem video: error: {e}", file=sys.stderr)
        return 2


def add_video_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seem video`` on the ``seem`` command's subparsers; returns the new parser."""
    from seem import cli  # the ``seem`` command calls this, so the module is loaded (no cycle at import time)

    p = subparsers.add_parser(
        "video",
        help="follow objects through a video from prompts on one frame",
        description=__doc__.split("\n\n", 1)[1].split("The lead registers")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="video file (.mp4, .avi, ...) or folder of frame images")
    p.add_argument("--frame", type=int, default=0, help="the frame the prompts are on (0-based, default 0)")
    p.add_argument("--end", type=int, default=None, help="stop before this frame (default: the end)")
    p.add_argument("--object-id", default="1", help="object of the prompts without an ID: prefix (default 1)")
    p.add_argument("--point", action="append", metavar="[ID:]X,Y[,L]", help="click (L: 1 positive, 0 negative)")
    p.add_argument("--box", action="append", metavar="[ID:]X0,Y0,X1,Y1", help="box (XYXY pixel edges)")
    p.add_argument("--scribble", action="append", metavar="[ID:]X,Y;X,Y;...", help="positive stroke")
    p.add_argument("--mask", action="append", metavar="[ID:]PNG", help="the object's mask PNG on the frame (as is)")
    p.add_argument("--text", action="append", metavar="[ID:]PHRASE", help="referring text for the object")
    p.add_argument("--width", type=int, default=5, help="stroke width on the model canvas (default 5, official)")
    p.add_argument(
        "--reference",
        choices=["previous", "first", "both"],
        default="previous",
        help="reference frame(s) for the next frame: previous (default, SEEM's video mode), the prompt frame, or both",
    )
    p.add_argument("--refine", action="store_true", help="re-prompt each frame with its propagated mask")
    p.add_argument("--model", default=None, help=_MODEL_HELP)
    p.add_argument("--config", default=None, help="official SEEM YAML for a .pt whose architecture is not inferable")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument(
        "--size", type=int, default=None, help="model input short side in pixels (default: the model's; 512 official)"
    )
    p.add_argument("--precision", choices=cli.PRECISIONS, default="fp32", help=cli.PRECISION_HELP)
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--fps", type=float, default=None, help="overlay frame rate (default: the video's, or 24)")
    p.add_argument("--gt", default=None, metavar="DIR", help="ground-truth mask PNGs (<frame>.png): report J&F")
    p.add_argument("--labels", action="store_true", help="label the masks (encodes the vocabulary once)")
    p.add_argument("--classes", default=None, help="vocabulary for --labels, 'a,b,c' (default: COCO-panoptic)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default 0.5)")
    p.add_argument("--no-png", action="store_true", help="do not write the per-frame mask PNGs")
    p.add_argument("--no-json", action="store_true", help="do not write the RLE JSON")
    p.add_argument("--no-video", action="store_true", help="do not write the overlay video")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_video)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m seem.video_cli VIDEO ...`` (the same as ``seem video``)."""
    parser = argparse.ArgumentParser(prog="seem")
    add_video_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["video", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
