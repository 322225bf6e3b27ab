"""``seem export onnx [MODEL] --out DIR``: write a SAM-compatible ONNX encoder + prompt decoder (``docs/onnx.md``).

Only the Semantic-SAM family is exported so far; a SEEM model is refused with a clear message.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_export_parser", "run_export_onnx"]


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seem export`` (with the ``onnx`` sub-command) on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("export", help="export a model to another runtime (ONNX)")
    sub = p.add_subparsers(dest="export_format", required=True)
    o = sub.add_parser(
        "onnx",
        help="ONNX image encoder + SAM-named prompt decoder (run with onnxruntime or SAM-ONNX tools)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    o.add_argument(
        "model",
        nargs="?",
        default=None,
        help="official checkpoint, a directory in seem's format or a registered name (default: bundled model)",
    )
    o.add_argument("--out", required=True, help="output directory (encoder.onnx, decoder.onnx, seem_onnx.json)")
    o.add_argument("--config", default=None, help="official YAML for an official checkpoint of a non-standard size")
    o.add_argument("--image-size", type=int, default=1024, help="square encoder input side S (default 1024, SAM's)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    o.add_argument(
        "--quantize",
        action="store_true",
        help="also write prompt_int8.onnx: the decoder, int8 dynamic weights (SamOnnxPredictor.from_dir skips it)",
    )
    o.set_defaults(func=run_export_onnx)
    return p


def _load(model: str | None, config: str | None) -> Any:
    if config is not None:
        if model is None:
            raise ValueError("--config needs an official checkpoint path as MODEL")
        from seem.models.semantic_sam import semantic_sam_from_official

        return semantic_sam_from_official(Path(model), config=Path(config))[0]
    from seem.loading import load

    return load(model)


def run_export_onnx(args: argparse.Namespace) -> int:
    """Load the model, export it, print the written paths as JSON; returns the exit code."""
    from seem.export.onnx import export_semantic_sam_onnx, quantize_decoder_int8
    from seem.models.semantic_sam import SemanticSAM

    if args.opset < 17:
        raise SystemExit(f"--opset must be >= 17, got {args.opset}")
    model = _load(args.model, args.config)
    if not isinstance(model, SemanticSAM):
        raise SystemExit(
            f"ONNX export supports Semantic-SAM models so far; {type(model).__name__} (SEEM) export is not "
            "implemented yet (see docs/onnx.md)"
        )
    paths = export_semantic_sam_onnx(model, args.out, image_size=args.image_size, opset=args.opset)
    if args.quantize:
        paths["decoder_int8"] = quantize_decoder_int8(paths["decoder"], Path(args.out) / "prompt_int8.onnx")
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
