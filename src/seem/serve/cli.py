"""``seem serve``: start the HTTP API and the web page (``pip install seem[serve]``).

    seem serve --model seem_focalt_v1.pt                       # http://127.0.0.1:8000
    seem serve --model seem_focall_v1.pt --granularity-model swinl_only_sam_many2many.pth --port 8080
    seem serve --model DIR --host 0.0.0.0 --api-key "$KEY"     # reachable from the network: use a key

Loopback only unless ``--host`` says otherwise. Without ``--model`` the default model is used; when the
installation has none, the command fails with ``seem.load``'s message. The lead registers the command with
``add_serve_parser(subparsers)`` in ``seem.cli``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

__all__ = ["add_serve_parser", "build_config", "load_models", "run_serve"]

API_KEY_ENV = "SEEM_API_KEY"


def build_config(args: argparse.Namespace) -> Any:
    """``ServeConfig`` from the command-line arguments."""
    from seem.serve.config import MiB, ServeConfig

    return ServeConfig(
        max_upload_bytes=int(args.max_upload_mb * MiB),
        max_pixels=int(args.max_pixels),
        max_video_bytes=int(args.max_video_mb * MiB),
        max_video_frames=int(args.max_video_frames),
        cache_bytes=int(args.cache_mb * MiB),
        max_sessions=int(args.max_sessions),
        session_ttl_s=float(args.session_ttl),
        workers=int(args.workers),
        max_pending=int(args.max_pending),
        request_timeout_s=float(args.request_timeout),
        max_jobs=int(args.max_jobs),
        max_points_per_side=int(args.max_points_per_side),
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        cors_origins=tuple(args.cors_origin or ()),
        short_side=None if args.size is None else int(args.size),
    )


def load_models(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(model, granularity_model)`` named by ``--model`` / ``--config`` / ``--granularity-model``."""
    from seem.loading import load
    from seem.models.semantic_sam import SemanticSAM, semantic_sam_from_official
    from seem.predictor import resolve_model

    device = args.device or "cpu"
    if args.config is not None:
        if args.model is None:
            raise ValueError("--config needs --model (an official SEEM checkpoint)")
        model: Any = resolve_model(args.model, config=args.config, device=device)
    else:
        model = load(args.model, device=device)
    gran: Any = None
    if args.granularity_model is not None:
        if args.granularity_config is not None:
            built, _ = semantic_sam_from_official(args.granularity_model, config=args.granularity_config)
            gran = built.to(device)
        else:
            gran = load(args.granularity_model, device=device)
        if not isinstance(gran, SemanticSAM):
            raise ValueError(f"--granularity-model {args.granularity_model}: not a Semantic-SAM model")
    elif args.granularity_config is not None:
        raise ValueError("--granularity-config needs --granularity-model")
    return model, gran


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    """The ``seem serve`` command; returns the exit status (2 for bad arguments or no model)."""
    try:
        import uvicorn

        from seem.serve.app import create_app
    except ImportError as e:
        print(f"seem serve: {e.name or e} is not installed; run: pip install 'seem[serve]'", file=sys.stderr)
        return 2
    from seem.models.checkpoints.common import CheckpointError

    try:
        config = build_config(args)
        model, gran = load_models(args)
        app = create_app(model, gran, config=config)
    except (CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"seem serve: {e}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and config.api_key is None:
        print(
            f"seem serve: warning: listening on {args.host} without an API key; anyone who reaches this port can "
            f"use the model (set --api-key or ${API_KEY_ENV})",
            file=sys.stderr,
        )
    if not args.no_warm:
        print("seem serve: preparing the vocabulary (cached on disk after the first run)...", file=sys.stderr)
        app.state.service.warm()
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"seem serve: page at {url}  API docs at {url}docs", file=sys.stderr)
    if args.open:
        import threading
        import webbrowser

        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=config.max_pending + 64,
        timeout_keep_alive=10,
    )
    return 0


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``seem serve`` on an ``argparse`` subparsers object; returns the new parser."""
    from seem.serve.config import ServeConfig

    d = ServeConfig()
    p = subparsers.add_parser(
        "serve",
        help="HTTP API + web page: upload an image once, click to segment (needs seem[serve])",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument(
        "--model",
        default=None,
        help="SEEM model: official checkpoint (.pt), a directory written by `seem convert` or a registered name "
        "(default: the bundled model); a Semantic-SAM model here serves granularity only",
    )
    p.add_argument("--config", default=None, help="official SEEM YAML for a .pt whose architecture is not inferable")
    p.add_argument("--granularity-model", default=None, help="Semantic-SAM model for the granularity levels")
    p.add_argument("--granularity-config", default=None, help="official Semantic-SAM YAML for --granularity-model")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help=f"require this key on /v1 (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--cors-origin", action="append", help="allow this origin cross-site (repeatable; default: none)")
    p.add_argument("--workers", type=int, default=d.workers, help=f"model calls at once (default {d.workers})")
    p.add_argument(
        "--max-pending",
        type=int,
        default=d.max_pending,
        help=f"model requests running or waiting before 503 (default {d.max_pending})",
    )
    p.add_argument(
        "--request-timeout", type=float, default=d.request_timeout_s, help="seconds per request before 504 (60)"
    )
    p.add_argument("--session-ttl", type=float, default=d.session_ttl_s, help="idle seconds before a session expires")
    p.add_argument("--cache-mb", type=float, default=d.cache_bytes / 2**20, help="session cache budget in MiB (2048)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help=f"sessions kept (default {d.max_sessions})")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20, help="largest upload (20 MiB)")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help=f"largest image (default {d.max_pixels:,})")
    p.add_argument("--max-video-mb", type=float, default=d.max_video_bytes / 2**20, help="largest video job (200)")
    p.add_argument("--max-video-frames", type=int, default=d.max_video_frames, help="most frames of a video job (300)")
    p.add_argument("--max-jobs", type=int, default=d.max_jobs, help=f"video jobs kept (default {d.max_jobs})")
    p.add_argument(
        "--max-points-per-side", type=int, default=d.max_points_per_side, help="segment-everything grid limit (32)"
    )
    p.add_argument("--size", type=int, default=None, help="SEEM input short side (default: the model's; official 512)")
    p.add_argument("--no-warm", action="store_true", help="do not encode the vocabulary at start")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m seem.serve ...`` (the same options as ``seem serve``)."""
    parser = argparse.ArgumentParser(prog="python -m seem.serve")
    sub = parser.add_subparsers(dest="command")
    add_serve_parser(sub)
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))
