"""``seem export onnx [MODEL] --out DIR``: write a SAM-compatible ONNX encoder + prompt decoder (``docs/onnx.md``).

Exports the Semantic-SAM family (``seem.export.onnx``) and SEEM models with the v1 decoder rules: the official
``seem_focal{t,l}_v1.pt`` checkpoints and the default model (``seem.export.seem_onnx``). SEEM models run with the
demo rules (``*_v0.pt``) are refused with a clear message.
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
    o.add_argument(
        "--config",
        default=None,
        help="official YAML (SEEM or Semantic-SAM, told apart by MODEL.DECODER.NAME) for an official checkpoint of a "
        "non-standard size",
    )
    o.add_argument("--image-size", type=int, default=1024, help="square encoder input side S (default 1024, SAM's)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    o.add_argument(
        "--quantize",
        action="store_true",
        help="also write prompt_int8.onnx: the decoder, int8 dynamic weights (SamOnnxPredictor.from_dir skips it)",
    )
    o.set_defaults(func=run_export_onnx)
    return p


def _is_seem_yaml(config: Path) -> bool:
    """Whether an official YAML describes a SEEM model (``MODEL.DECODER.NAME`` ``seem_v1`` / ``seem_demo``)."""
    import yaml

    with open(config) as f:
        cfg = yaml.safe_load(f)
    try:
        name = str(cfg["MODEL"]["DECODER"]["NAME"])
    except (KeyError, TypeError):
        return False
    return name.startswith("seem")


def _load(model: str | None, config: str | None) -> Any:
    if config is not None:
        if model is None:
            raise ValueError("--config needs an official checkpoint path as MODEL")
        if _is_seem_yaml(Path(config)):
            from seem.models.seem_model import SEEMModel

            return SEEMModel.from_official(Path(model), config=Path(config))[0]
        from seem.models.semantic_sam import semantic_sam_from_official

        return semantic_sam_from_official(Path(model), config=Path(config))[0]
    from seem.loading import load

    return load(model)


def run_export_onnx(args: argparse.Namespace) -> int:
    """Load the model, export it, print the written paths as JSON; returns the exit code."""
    from seem.export.onnx import export_semantic_sam_onnx, quantize_decoder_int8
    from seem.export.seem_onnx import check_exportable, export_seem_onnx
    from seem.models.seem_model import SEEMModel
    from seem.models.semantic_sam import SemanticSAM

    if args.opset < 17:
        raise SystemExit(f"--opset must be >= 17, got {args.opset}")
    model = _load(args.model, args.config)
    if isinstance(model, SEEMModel):
        try:
            check_exportable(model, args.image_size)
        except (TypeError, ValueError) as e:
            raise SystemExit(f"seem export onnx: {e}") from None
        paths = export_seem_onnx(model, args.out, image_size=args.image_size, opset=args.opset)
    elif isinstance(model, SemanticSAM):
        paths = export_semantic_sam_onnx(model, args.out, image_size=args.image_size, opset=args.opset)
    else:  # pragma: no cover - seem.load returns one of the two
        raise SystemExit(f"seem export onnx: cannot export a {type(model).__name__}")
    if args.quantize:
        paths["decoder_int8"] = quantize_decoder_int8(paths["decoder"], Path(args.out) / "prompt_int8.onnx")
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
