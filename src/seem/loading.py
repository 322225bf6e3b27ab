"""``seem.load``: one entry point for every way a user names a model.

Accepted:
- nothing: the project's default model (shipped with the package once it exists);
- a registered name (``seem.hub.REGISTRY``, e.g. ``"seem-focalt-v1"``): downloaded once into the cache;
- a directory in our format (``config.json`` + ``model.safetensors``, any family);
- an official checkpoint file: SEEM (``seem_focal{t,l}_v{0,1}.pt``) or Semantic-SAM
  (``swin{t,l}_only_sam_many2many.pth``), converted on the fly with strict key checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seem.hub import REGISTRY, fetch
from seem.models.checkpoints.common import CheckpointError
from seem.models.checkpoints.native import CONFIG_FILE, is_native_dir, load_native
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM, load_semantic_sam, semantic_sam_from_official

Model = SEEMModel | SemanticSAM

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"
"""Where the project's own default model ships inside the package (``config.json`` + ``model.safetensors``)."""


def default_model_dir() -> Path | None:
    """The shipped default model's directory, or None while the package has none."""
    return DEFAULT_MODEL_DIR if is_native_dir(DEFAULT_MODEL_DIR) else None


def load(model: str | Path | None = None, *, device: str | torch.device = "cpu", variant: str | None = None) -> Model:
    """Load a model by name, directory or official checkpoint path; see the module docstring.

    Args:
        model: None (default model), a registered name, a directory in our format, or an official checkpoint file.
        device: where to put the model.
        variant: SEEM decoder rules for official SEEM files (``"v1"`` / ``"demo"``); default from the file name.

    Returns:
        A ``SEEMModel`` or ``SemanticSAM`` in eval mode.

    Raises:
        ValueError: nothing to load (no default model yet, unknown name); ``CheckpointError`` for files that are not
        a checkpoint of a supported model; ``FileNotFoundError`` for missing paths.
    """
    if model is None:
        d = default_model_dir()
        if d is None:
            raise ValueError(
                "seem has no default model in this installation yet; pass an official checkpoint "
                "(e.g. seem_focalt_v1.pt), a directory written by `seem convert`, or a registered name: "
                + ", ".join(sorted(REGISTRY))
            )
        return _load_native(d, device)
    if isinstance(model, str) and model in REGISTRY:
        entry = REGISTRY[model]
        return _load_file(fetch(model), device, variant or entry.variant)
    path = Path(model)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path}: a directory but not a seem model (no {CONFIG_FILE})")
        return _load_native(path, device)
    if path.is_file():
        return _load_file(path, device, variant)
    hint = f"; registered names: {', '.join(sorted(REGISTRY))}" if not path.suffix else ""
    raise FileNotFoundError(f"model not found: {model!r} is not a file, a directory or a registered name{hint}")


def _load_native(path: Path, device: str | torch.device) -> Model:
    family, _, _ = load_native(path)  # validates the folder; cheap next to building the model
    if family == "seem":
        return SEEMModel.from_pretrained(path, device=device)
    if family == "semantic_sam":
        return load_semantic_sam(path, device=device)
    raise CheckpointError(f"{path}: unknown model family {family!r}")


def _load_file(path: Path, device: str | torch.device, variant: str | None) -> Model:
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    inner = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if isinstance(inner, dict) and any(str(k).startswith("model.") for k in inner):
        return semantic_sam_from_official(obj)[0].to(device)
    seem_model, _ = SEEMModel.from_official(obj, variant=variant or _variant_from(path))  # type: ignore[arg-type]
    return seem_model.to(device)


def _variant_from(path: Path) -> str:
    from seem.models.checkpoints.seem import variant_from_filename

    return variant_from_filename(path)
