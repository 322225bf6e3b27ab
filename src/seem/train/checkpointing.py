"""Trainer checkpoint helpers: the checkpoint folder names (``checkpoints/step_XXXXXXX``), finding the newest one
(``latest_checkpoint``) and each rank's python / numpy / torch (/ CUDA) RNG state (``rng_state``,
``set_rng_state``)."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_NAME", "latest_checkpoint", "rng_state", "set_rng_state"]


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------

CHECKPOINT_NAME = re.compile(r"^step_(\d{7,})$")


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``output_dir/checkpoints`` (``latest`` file, else highest step)."""
    root = Path(output_dir) / "checkpoints"
    marker = root / "latest"
    if marker.is_file():
        p = root / marker.read_text().strip()
        if (p / "trainer.pt").is_file():
            return p
    found = sorted(d for d in root.glob("step_*") if CHECKPOINT_NAME.match(d.name) and (d / "trainer.pt").is_file())
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
