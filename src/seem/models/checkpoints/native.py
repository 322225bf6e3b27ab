"""Our own weight format: a directory with ``config.json`` and ``model.safetensors``.

``config.json`` holds ``{"format": "seem", "format_version": 1, "family": <model family>, "config": {...}}``;
``model.safetensors`` holds the state_dict under our key names. Saving and loading are lossless (same dtypes, same
values, same keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seem.models.checkpoints.common import CheckpointError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_native(out_dir: str | Path, family: str, config: dict[str, Any], state_dict: dict[str, Tensor]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``out_dir`` (created if needed); returns the directory.

    Tensors that share storage (aliases) are written as separate copies, as safetensors requires.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "seem", "family": family})
    tmp.replace(out / WEIGHTS_FILE)
    meta = {"format": "seem", "format_version": FORMAT_VERSION, "family": family, "config": config}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def is_native_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory in our format."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def load_native(path: str | Path, device: str | torch.device = "cpu") -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """Read a directory in our format: returns ``(family, config dict, state_dict)``.

    Raises ``CheckpointError`` when a file is missing or the metadata is not ours.
    """
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a directory in seem format (expected {CONFIG_FILE} + {WEIGHTS_FILE})")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (p / name).is_file():
            raise CheckpointError(f"{p}: missing {name}")
    try:
        meta = json.loads((p / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p / CONFIG_FILE}: invalid JSON ({e})") from e
    if meta.get("format") != "seem" or "config" not in meta or "family" not in meta:
        raise CheckpointError(f"{p / CONFIG_FILE}: not a seem config (needs format='seem', family, config)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: format_version {meta['format_version']} is newer than this seem supports ({FORMAT_VERSION})"
        )
    return str(meta["family"]), dict(meta["config"]), load_file(str(p / WEIGHTS_FILE), device=str(device))
