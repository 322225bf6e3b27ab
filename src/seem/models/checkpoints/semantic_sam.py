"""Official Semantic-SAM checkpoints → ``SemanticSAM`` (strict key map and loader).

Files: ``swint_only_sam_many2many.pth`` (Swin-T) and ``swinl_only_sam_many2many.pth`` (Swin-L).

Container: ``{'model': {'model.<key>': tensor}, ...}`` as written by the official trainer (other top-level entries,
e.g. optimizer state, are not weights and are skipped); a bare ``{'model.<key>': tensor}`` mapping is accepted too.

Prefixes (no other renaming, except the box MLP):

=====================================================  =========================
official                                               ours
=====================================================  =========================
``model.backbone.``                                    ``backbone.``
``model.sem_seg_head.pixel_decoder.``                  ``pixel_decoder.``
``model.sem_seg_head.predictor._bbox_embed.``          ``predictor.bbox_embed.``
``model.sem_seg_head.predictor.lang_encoder.lang_encoder.``  ``text_encoder.transformer.``
``model.sem_seg_head.predictor.lang_encoder.``         ``text_encoder.``
``model.sem_seg_head.predictor.``                      ``predictor.``
=====================================================  =========================

The class heads ``predictor.class_embed`` (objects, official "whole") and ``predictor.class_embed_part`` (parts) are
mapped like every other decoder key. The released files hold them untrained (``TEXT.ARCH: noencoder``): their
configs get ``labels.heads = "none"`` and the model labels nothing (see ``seem.models.semantic_sam``). The
``lang_encoder.*`` rules only matter for checkpoints trained with a language encoder (none has been released).

Ignored official keys, each with its reason in the ``ConversionReport``:

- aliases (the official model stores one tensor under several names): ``predictor.decoder.norm.*`` is
  ``predictor.decoder_norm.*``; ``predictor.bbox_embed.{i}.*`` and ``predictor.decoder.bbox_embed.{i}.*`` are
  ``predictor._bbox_embed.*``. When the values are real (not on the meta device) each alias is checked to equal
  its canonical tensor, and a difference raises ``CheckpointError``;
- ``backbone...attn.relative_position_index``: a constant, recomputed by the model; checked equal when real;
- ``predictor.lang_mapper``: maps a class-text embedding to a content query, read only by the object-query
  label-denoising path (``prepare_for_dn``), which the interactive-only decoder never runs (official outputs only
  add ``0.0 *`` its sum).

Our keys that no official file holds (``LABEL_EXTRAS``: the stored class tables ``object_class_embeddings`` /
``part_class_embeddings`` and the model's own ``logit_scale``, plus ``text_encoder.*`` when the file has no language
encoder) make a strict load fail; ``load_official_semantic_sam(..., init_missing_labels=True)`` keeps their current
values instead (fine-tuning label heads from the released weights).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seem.models.checkpoints.common import CheckpointError, ConversionReport, KeyMap, convert_state_dict
from seem.models.semantic_sam import SemanticSAM

__all__ = [
    "LABEL_EXTRAS",
    "SEMANTIC_SAM_KEYMAP",
    "load_official_semantic_sam",
    "official_key",
    "official_state_dict",
]

_P = "model.sem_seg_head.predictor."
_PRE = re.escape(_P)
_BOX_ALIAS = re.compile(_PRE + r"(?:decoder\.)?bbox_embed\.\d+\.layers\.(\d+)\.(weight|bias)")
_NORM_ALIAS = re.compile(_PRE + r"decoder\.norm\.(weight|bias)")
_REL_INDEX = re.compile(r"model\.backbone\.(layers\.\d+\.blocks\.\d+\.attn\.relative_position_index)")


def _alias_rules() -> tuple[tuple[str, str], ...]:
    rules = []
    for j in range(3):
        for p in ("weight", "bias"):
            canonical = f"{_P}_bbox_embed.layers.{j}.{p}"
            rules.append(
                (
                    _PRE + rf"(?:decoder\.)?bbox_embed\.\d+\.layers\.{j}\.{p}",
                    f"alias of {canonical} (the box MLP shared by all decoder layers; checked equal)",
                )
            )
    for p in ("weight", "bias"):
        rules.append((_PRE + rf"decoder\.norm\.{p}", f"alias of {_P}decoder_norm.{p} (same LayerNorm; checked equal)"))
    return tuple(rules)


SEMANTIC_SAM_KEYMAP = KeyMap(
    renames=(
        (r"model\.backbone\.", "backbone."),
        (r"model\.sem_seg_head\.pixel_decoder\.", "pixel_decoder."),
        (_PRE + r"_bbox_embed\.", "predictor.bbox_embed."),
        (_PRE + r"lang_encoder\.lang_encoder\.", "text_encoder.transformer."),
        (_PRE + r"lang_encoder\.", "text_encoder."),
        (_PRE, "predictor."),
    ),
    ignore=(
        *_alias_rules(),
        (
            r"model\.backbone\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index",
            "constant buffer, recomputed by the model (checked equal to the stored copy)",
        ),
        (
            _PRE + r"lang_mapper",
            "text embedding -> content query of the object-query label-denoising path (prepare_for_dn), which the "
            "interactive-only decoder never runs (official outputs only add 0.0 * its sum)",
        ),
    ),
)
"""Strict key map of the official Semantic-SAM layout (see the module docstring)."""


def official_state_dict(path_or_state: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """The flat ``{'model.<key>': tensor}`` dict of an official checkpoint (file path or already-loaded object)."""
    obj: Any = path_or_state
    what = "checkpoint"
    if isinstance(path_or_state, str | Path):
        what = str(path_or_state)
        try:
            obj = torch.load(path_or_state, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # unpickling refused or corrupt file
            raise CheckpointError(f"{what}: cannot be read as a weights-only torch checkpoint ({e})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: expected a mapping, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{what}: entries that are not named tensors: {bad[:10]}")
    return dict(obj)


_OURS_TO_OFFICIAL = (
    ("backbone.", "model.backbone."),
    ("pixel_decoder.", "model.sem_seg_head.pixel_decoder."),
    ("predictor.bbox_embed.", _P + "_bbox_embed."),
    ("text_encoder.transformer.", _P + "lang_encoder.lang_encoder."),
    ("text_encoder.", _P + "lang_encoder."),
    ("predictor.", _P),
)

LABEL_EXTRAS = ("object_class_embeddings", "part_class_embeddings", "logit_scale")
"""Our keys that have no official counterpart (stored class tables, the scale of a model without text encoder)."""


def official_key(ours: str) -> str:
    """The official checkpoint key that ``SEMANTIC_SAM_KEYMAP`` maps onto our key ``ours`` (``KeyError`` for
    ``LABEL_EXTRAS``, which no official file holds)."""
    for mine, official in _OURS_TO_OFFICIAL:
        if ours.startswith(mine):
            return official + ours[len(mine) :]
    raise KeyError(ours)


def _is_label_extra(ours: str) -> bool:
    return ours in LABEL_EXTRAS or ours.startswith("text_encoder.")


def _real(t: Tensor) -> bool:
    return t.device.type != "meta"


def _check_constants(state: Mapping[str, Tensor], model: SemanticSAM, what: str) -> None:
    """Aliases must equal their canonical tensor; stored relative position indices must equal ours."""
    errors = []
    for key, value in state.items():
        canonical = None
        if m := _BOX_ALIAS.fullmatch(key):
            canonical = f"{_P}_bbox_embed.layers.{m.group(1)}.{m.group(2)}"
        elif m := _NORM_ALIAS.fullmatch(key):
            canonical = f"{_P}decoder_norm.{m.group(1)}"
        if canonical is not None:
            ref = state.get(canonical)
            if ref is None:
                errors.append(f"{key} is an alias of {canonical}, which is missing")
            elif tuple(ref.shape) != tuple(value.shape):
                errors.append(f"{key} {tuple(value.shape)} differs in shape from its canonical {canonical}")
            elif _real(ref) and _real(value) and not torch.equal(ref, value):
                errors.append(f"{key} differs from {canonical} (aliases of one tensor must be equal)")
            continue
        if m := _REL_INDEX.fullmatch(key):
            name = "backbone." + m.group(1)
            try:
                ours = model.get_buffer(name)
            except AttributeError:
                errors.append(f"{key}: no such Swin block in the model (unexpected key)")
                continue
            if tuple(ours.shape) != tuple(value.shape):
                errors.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(ours.shape)} (window size?)")
            elif _real(value) and _real(ours) and not torch.equal(value.to(ours.device, ours.dtype), ours):
                errors.append(f"{key} does not equal the recomputed relative position index")
    if errors:
        raise CheckpointError(f"{what} does not fit the model:\n  " + "\n  ".join(errors))


def load_official_semantic_sam(
    path_or_state: str | Path | Mapping[str, Any],
    model: SemanticSAM,
    *,
    what: str | None = None,
    init_missing_labels: bool = False,
) -> ConversionReport:
    """Load an official Semantic-SAM checkpoint into ``model``, strictly.

    Args:
        path_or_state: a ``.pth`` path, the loaded container ``{'model': {...}}`` or the flat ``{'model.<key>':
            tensor}`` dict. Tensors may be on the meta device (shapes are then checked, values are not).
        model: a ``SemanticSAM`` built from the matching config (``swin_t()``, ``swin_l()`` or
            ``from_official_yaml``); it may live on any device, including meta.
        what: name used in error messages (default: the path, or "checkpoint").
        init_missing_labels: label parts of ``model`` that the file lacks (``LABEL_EXTRAS``, ``text_encoder.*``)
            keep their current values instead of failing (e.g. a label-enabled config fine-tuned from the released
            weights); every other key stays strict.

    Returns:
        The ``ConversionReport``: every official key is mapped or ignored with a reason.

    Raises:
        CheckpointError: unexpected, missing or mis-shaped keys, aliases that differ from their canonical tensor,
            or a stored ``relative_position_index`` that differs from the recomputed one.
    """
    name = what or (str(path_or_state) if isinstance(path_or_state, str | Path) else "checkpoint")
    state = official_state_dict(path_or_state)
    _check_constants(state, model, name)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    in_file = {k for k in expected if k not in LABEL_EXTRAS and official_key(k) in state}
    kept = sorted(k for k in expected if k not in in_file and _is_label_extra(k)) if init_missing_labels else []
    missing = sorted(k for k in expected if k not in in_file and k not in kept)
    if missing:  # name the official keys (the engine below would name ours)
        shown_keys = [k if k in LABEL_EXTRAS else official_key(k) for k in missing]
        shown = ", ".join(shown_keys[:20]) + (f", … ({len(missing) - 20} more)" if len(missing) > 20 else "")
        hint = ""
        if any(_is_label_extra(k) for k in missing):
            hint = (
                "\n  (label parts no official file holds: pass init_missing_labels=True to keep their initial values)"
            )
        raise CheckpointError(f"{name} does not fit the model:\n  {len(missing)} missing key(s): {shown}{hint}")
    ours, report = convert_state_dict(state, SEMANTIC_SAM_KEYMAP, {k: expected[k] for k in in_file}, what=name)
    if kept:
        current = model.state_dict()
        ours.update({k: current[k] for k in kept})
    model.load_state_dict(ours, strict=True)
    return report
