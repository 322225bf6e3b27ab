"""``seem serve``: an HTTP API and a web page for promptable segmentation (needs ``pip install seem[serve]``).

    from seem.serve import ServeConfig, create_app
    app = create_app(seem_model, granularity_model=ssam, config=ServeConfig(api_key="..."))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

See ``seem.serve.app`` for the routes and ``docs/serve.md`` for examples.
"""

from __future__ import annotations

from typing import Any

from seem.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """``seem.serve.app.create_app`` (imported lazily so ``seem.serve.config`` works without FastAPI)."""
    from seem.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
