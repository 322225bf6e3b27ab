"""Command-line interface: ``seem <command> ...``.

Commands:
    convert   official SEEM checkpoint (.pt) → our format (config.json + model.safetensors), strictly checked
    models    list the registered model names and their configs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    from seem.models.config import NAMED_CONFIGS

    for name in sorted(NAMED_CONFIGS):
        cfg = NAMED_CONFIGS[name]()
        bb = cfg.backbone
        arch = f"FocalNet {bb.flavour} embed {bb.embed_dim} depths {list(bb.depths)}"
        print(f"{name}: {arch}, decoder {cfg.decoder.variant}")
    return 0


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

    p = sub.add_parser("models", help="list registered model names")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
