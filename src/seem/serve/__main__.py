"""``python -m seem.serve [--model ...] [--host 127.0.0.1] [--port 8000]``: the same as ``seem serve``."""

from seem.serve.cli import main

raise SystemExit(main())
