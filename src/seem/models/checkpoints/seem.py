"""Official SEEM checkpoints (``seem_focal{t,l}_v{0,1}.pt``) → our ``SEEMModel``.

Official layout: a flat ``state_dict`` saved with ``torch.save`` whose keys start with ``backbone.``,
``sem_seg_head.pixel_decoder.``, ``sem_seg_head.predictor.`` (decoder) and ``sem_seg_head.predictor.lang_encoder.``
(text encoder), plus two buffers. Our parts keep the official names inside each part, so the map only rewrites
prefixes; the two buffers are ignored with the reasons below.

The architecture is read from the tensors themselves (``infer_seem_config``): FocalNet flavour, widths, depths and
focal levels, text width/depth, decoder width/depth/queries/memories. The decoder *variant* is not visible in the
weights (v0, v1 and demo share one key set); by convention ``*_v0*`` files are paired with the demo attention rules,
which is what the official demo does, and everything else with v1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from seem.models.checkpoints.common import CheckpointError, ConversionReport, KeyMap, convert_state_dict
from seem.models.config import (
    DecoderVariant,
    FocalNetConfig,
    InferenceConfig,
    PixelDecoderConfig,
    SEEMConfig,
    SEEMDecoderConfig,
    TextEncoderConfig,
)

SEEM_KEYMAP = KeyMap(
    renames=(
        (r"backbone\.", "backbone."),
        (r"sem_seg_head\.pixel_decoder\.", "pixel_decoder."),
        (r"sem_seg_head\.predictor\.lang_encoder\.lang_encoder\.", "text_encoder.transformer."),
        (r"sem_seg_head\.predictor\.lang_encoder\.", "text_encoder."),
        (r"sem_seg_head\.predictor\.", "decoder."),
    ),
    ignore=(
        (
            r"criterion\.empty_weight",
            "training-loss class weights (1 per class, 0.1 for no-object); not used at inference, the trainer "
            "builds its own",
        ),
        (
            r"dilation_kernel",
            "constant 3x3 ones the official model uses to dilate clicks into 3x3 squares; our prompt rasteriser "
            "draws the same squares (its value is checked to be all ones)",
        ),
    ),
)

_OFFICIAL_PREFIXES = ("backbone.", "sem_seg_head.")


def read_official_seem(path: str | Path) -> dict[str, Tensor]:
    """Read an official SEEM ``.pt`` file into a flat state_dict (CPU tensors), with clear errors.

    Accepts the flat official layout and, leniently, ``{'model': state_dict}`` / ``{'state_dict': ...}`` wrappers.
    Raises ``CheckpointError`` when the file is not a SEEM checkpoint (e.g. a Semantic-SAM or SAM file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, truncated files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return official_state_dict(obj, what=str(path))


def official_state_dict(obj: object, what: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap a loaded official object into a flat SEEM state_dict, or raise ``CheckpointError``."""
    if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what}: expected a state_dict (mapping of names to tensors), got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if any(k.startswith("model.") for k in sd):
        raise CheckpointError(
            f"{what}: keys start with 'model.' — this looks like a Semantic-SAM checkpoint, not SEEM; "
            "load it with the Semantic-SAM loader"
        )
    if not any(k.startswith(_OFFICIAL_PREFIXES) for k in sd):
        raise CheckpointError(
            f"{what}: no key starts with {_OFFICIAL_PREFIXES}; not an official SEEM checkpoint "
            f"(first keys: {list(sd)[:5]})"
        )
    if "sem_seg_head.predictor.mask_sptial_embed.0" not in sd:
        raise CheckpointError(
            f"{what}: no 'sem_seg_head.predictor.mask_sptial_embed.0' — an X-Decoder checkpoint without SEEM's "
            "spatial-prompt parameters is not supported"
        )
    return sd


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def infer_seem_config(sd: Mapping[str, Tensor], variant: DecoderVariant = "v1", name: str = "seem") -> SEEMConfig:
    """Work out the architecture of an official SEEM state_dict from its tensor shapes.

    Only FocalNet backbones (``focal`` / ``focal_dw``) with the FPN pixel decoder are supported; others raise
    ``CheckpointError`` naming what was found. Head counts are not visible in weights: like every official SEEM
    model, attention heads are taken to be 64-d (``width // 64``); pass a config from the official YAML
    (``from_official_yaml``) for models that differ.
    """
    try:
        embed = sd["backbone.patch_embed.proj.weight"].shape[0]
    except KeyError:
        raise CheckpointError(
            "backbone.patch_embed.proj.weight missing: only FocalNet backbones are supported "
            f"(found backbone keys like {[k for k in sd if k.startswith('backbone.')][:3]})"
        ) from None
    n_stages = _count(sd, r"backbone\.layers\.(\d+)\.")
    depths = tuple(_count(sd, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(n_stages))
    levels = tuple(
        _count(sd, rf"backbone\.layers\.{i}\.blocks\.0\.modulation\.focal_layers\.(\d+)\.") for i in range(n_stages)
    )
    windows = tuple(
        int(sd[f"backbone.layers.{i}.blocks.0.modulation.focal_layers.0.0.weight"].shape[-1]) for i in range(n_stages)
    )
    flavour: Literal["focal", "focal_dw"] = "focal_dw" if "backbone.layers.0.blocks.0.dw1.weight" in sd else "focal"
    backbone = FocalNetConfig(
        flavour=flavour,
        embed_dim=int(embed),
        depths=depths,
        focal_levels=levels,
        focal_windows=windows,
        mlp_ratio=sd["backbone.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed,
    )
    pd = "sem_seg_head.pixel_decoder."
    conv_dim = int(sd[pd + "input_proj.weight"].shape[0])
    ffn = int(sd[pd + "transformer.encoder.layers.0.linear1.weight"].shape[0]) if conv_dim else 2048
    dec = "sem_seg_head.predictor."
    hidden = int(sd[dec + "query_feat.weight"].shape[1])
    lang = dec + "lang_encoder."
    width = int(sd[lang + "lang_encoder.positional_embedding"].shape[1])
    text = TextEncoderConfig(
        vocab_size=int(sd[lang + "lang_encoder.token_embedding.weight"].shape[0]),
        context_length=int(sd[lang + "lang_encoder.positional_embedding"].shape[0]),
        width=width,
        heads=max(1, width // 64),
        layers=_count(sd, re.escape(lang) + r"lang_encoder\.resblocks\.(\d+)\."),
        proj_dim=int(sd[lang + "lang_proj"].shape[1]),
    )
    heads = max(1, hidden // 64)
    return SEEMConfig(
        name=name,
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(
            in_channels=backbone.out_channels,
            conv_dim=conv_dim,
            mask_dim=int(sd[pd + "mask_features.weight"].shape[0]),
            transformer_layers=_count(sd, re.escape(pd) + r"transformer\.encoder\.layers\.(\d+)\."),
            transformer_heads=heads,
            transformer_ffn_dim=ffn,
        ),
        text=text,
        decoder=SEEMDecoderConfig(
            variant=variant,
            hidden_dim=hidden,
            num_heads=heads,
            ffn_dim=int(sd[dec + "transformer_ffn_layers.0.linear1.weight"].shape[0]),
            num_layers=_count(sd, re.escape(dec) + r"transformer_ffn_layers\.(\d+)\."),
            num_queries=int(sd[dec + "query_feat.weight"].shape[0]),
            mask_dim=int(sd[dec + "mask_embed.layers.2.weight"].shape[0]),
            dim_proj=int(sd[dec + "class_embed"].shape[1]),
            num_levels=int(sd[dec + "level_embed.weight"].shape[0]),
            spatial_memories=int(sd[dec + "spatial_embed.weight"].shape[0]),
        ),
        inference=InferenceConfig(object_mask_threshold=0.4 if variant == "demo" else 0.8),
    )


def variant_from_filename(path: str | Path) -> DecoderVariant:
    """``*_v0*`` files were released with (and are run by) the demo decoder; everything else uses v1."""
    return "demo" if re.search(r"_v0(\b|_|\.)", Path(path).name) else "v1"


def convert_official_seem(
    official: Mapping[str, Tensor],
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    what: str = "checkpoint",
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Strictly map an official SEEM state_dict onto our key names (see ``SEEM_KEYMAP``).

    ``expected`` is our model's ``{key: shape}``. Raises ``CheckpointError`` naming missing, unexpected and
    mis-shaped keys, or a ``dilation_kernel`` that is not the 3x3 ones kernel our click rasteriser assumes.
    """
    dk = official.get("dilation_kernel")
    if dk is not None and not dk.is_meta and (tuple(dk.shape) != (1, 1, 3, 3) or not bool((dk == 1).all())):
        raise CheckpointError(f"{what}: dilation_kernel is not a 3x3 kernel of ones; clicks would be drawn differently")
    return convert_state_dict(official, SEEM_KEYMAP, expected, what=what)
