"""Configs of the Semantic-SAM model family, as small typed dataclasses.

A Semantic-SAM model is a Swin backbone, a MaskDINO-style deformable encoder ("pixel decoder") and the
interactive granularity decoder. Each part has its own config; ``SemanticSAMConfig`` groups them.

Full-size configs: ``swin_t()`` (``swint_only_sam_many2many.pth``) and ``swin_l()``
(``swinl_only_sam_many2many.pth``). ``from_official_yaml(path)`` reads an official Semantic-SAM YAML
(``configs/semantic_sam_only_sa-1b_swin{T,L}.yaml`` layout), e.g. the reduced parity model
``ssam_small.yaml``. Configs round-trip through plain dicts (``to_dict`` / ``from_dict``).

Official config knobs that are easy to misread (see ``official-code.md``):

- ``MODEL.DECODER.NHEADS`` sets the heads of the **encoder** only; the decoder layers hard-code 8 heads and
  4 sampling points (``GranularityDecoderConfig.num_heads`` / ``num_points``).
- ``MODEL.DECODER.DIM_FEEDFORWARD`` sets **both** the encoder and the decoder FFN width.
- ``MODEL.DECODER.HIDDEN_DIM`` must equal ``MODEL.ENCODER.CONVS_DIM`` (the decoder's ``input_proj`` is then the
  identity, as in every released model); other combinations are rejected.
- ``MODEL.DIM_PROJ`` is the width of the class-embedding (text) space: the object / part class heads
  ``class_embed`` / ``class_embed_part`` are ``[HIDDEN_DIM, DIM_PROJ]``. ``MODEL.TEXT.ARCH: noencoder`` (every
  released model) means no language encoder was built and the class heads were never trained: such configs get
  ``labels.heads = "none"`` (see ``LabelConfig``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seem.models.config import PIXEL_MEAN, PIXEL_STD, TextEncoderConfig, dataclass_from_dict

__all__ = [
    "LABEL_HEADS",
    "DeformableEncoderConfig",
    "GranularityDecoderConfig",
    "LabelConfig",
    "LabelHeads",
    "SemanticSAMConfig",
    "SwinConfig",
    "from_official_yaml",
    "swin_l",
    "swin_t",
]


@dataclass
class SwinConfig:
    """Swin Transformer backbone (Mask2Former's ``D2SwinTransformer``), outputs res2..res5 (strides 4..32)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_path_rate: float = 0.3
    """Stochastic depth (training only; identity in eval mode)."""

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of res2..res5."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass
class DeformableEncoderConfig:
    """MaskDINO deformable encoder: 4 MSDA levels (s8, s16, s32 from res3..res5, s64 from a stride-2 conv on res5),
    one FPN step to stride 4 and a 1x1 ``mask_features`` conv."""

    in_channels: tuple[int, ...] = (96, 192, 384, 768)
    """Channels of res2..res5."""
    conv_dim: int = 256
    mask_dim: int = 256
    num_layers: int = 6
    num_heads: int = 8
    """Official ``MODEL.DECODER.NHEADS`` (read by the encoder only)."""
    num_points: int = 4
    ffn_dim: int = 2048
    num_groups: int = 32
    """GroupNorm groups of the input projections and the FPN convs."""


@dataclass
class GranularityDecoderConfig:
    """Interactive DINO-style decoder with ``num_tokens`` granularity queries per prompt."""

    hidden_dim: int = 256
    num_layers: int = 9
    num_heads: int = 8
    """Hard-coded 8 in the official decoder layers, whatever ``MODEL.DECODER.NHEADS`` says."""
    num_points: int = 4
    ffn_dim: int = 2048
    num_levels: int = 4
    num_tokens: int = 6
    """``NUM_INTERACTIVE_TOKENS``: one query per granularity token per prompt."""
    mask_dim: int = 256
    dim_proj: int = 512
    """``MODEL.DIM_PROJ``: width of the class-embedding space (``class_embed`` / ``class_embed_part`` are
    ``[hidden_dim, dim_proj]``)."""


LabelHeads = Literal["none", "object", "object+part"]
LABEL_HEADS: tuple[str, ...] = ("none", "object", "object+part")


@dataclass
class LabelConfig:
    """Semantic labels of a Semantic-SAM model: which class heads are meaningful and where class names come from.

    Attributes:
        heads: ``"none"`` (the class heads exist, as in every official checkpoint, but were never trained: the
            released weights come from SA-1B-only training with ``TEXT.ARCH: noencoder``), ``"object"`` (the
            object head ``class_embed`` is trained) or ``"object+part"`` (also the part head ``class_embed_part``).
        text: an optional CLIP-style text encoder (SEEM's ``TextEncoder``; ``proj_dim`` must equal
            ``decoder.dim_proj``): any class name can then be embedded. None: no text encoder (official).
        object_classes, part_classes: names of a stored, precomputed class-embedding table (model buffers
            ``object_class_embeddings`` ``[len(object_classes), dim_proj]`` / ``part_class_embeddings``): the default
            vocabulary, and the only one a model without a text encoder can use.
    """

    heads: LabelHeads = "none"
    text: TextEncoderConfig | None = None
    object_classes: tuple[str, ...] = ()
    part_classes: tuple[str, ...] = ()

    @property
    def object_head(self) -> bool:
        """The object (whole) head is trained."""
        return self.heads in ("object", "object+part")

    @property
    def part_head(self) -> bool:
        """The part head is trained."""
        return self.heads == "object+part"

    def validate(self, dim_proj: int) -> None:
        """Raise ``ValueError`` naming the first inconsistent knob."""
        if self.heads not in LABEL_HEADS:
            raise ValueError(f"labels.heads must be one of {LABEL_HEADS}, got {self.heads!r}")
        if self.text is not None:
            if not isinstance(self.text, TextEncoderConfig):
                raise TypeError(f"labels.text must be a TextEncoderConfig or None, got {type(self.text).__name__}")
            if self.text.proj_dim != dim_proj:
                raise ValueError(
                    f"labels.text.proj_dim ({self.text.proj_dim}) must equal decoder.dim_proj ({dim_proj}): the class "
                    "heads project queries into the text space"
                )
        for name in ("object_classes", "part_classes"):
            names = getattr(self, name)
            if isinstance(names, str) or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"labels.{name} must be a list of non-empty class names, got {names!r}")
            if len(set(names)) != len(names):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"labels.{name} names a class twice: {dup}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelConfig:
        """Inverse of ``dataclasses.asdict``; ``text`` may be None or a dict; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"LabelConfig: expected a mapping, got {type(d).__name__}")
        d = dict(d)
        text = d.pop("text", None)
        out = dataclass_from_dict(cls, d)
        out.text = None if text is None else dataclass_from_dict(TextEncoderConfig, text)
        return out


@dataclass
class SemanticSAMConfig:
    """A whole Semantic-SAM model."""

    name: str = "semantic-sam-swint"
    backbone: SwinConfig = field(default_factory=SwinConfig)
    encoder: DeformableEncoderConfig = field(default_factory=DeformableEncoderConfig)
    decoder: GranularityDecoderConfig = field(default_factory=GranularityDecoderConfig)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    size_divisibility: int = 32
    labels: LabelConfig = field(default_factory=LabelConfig)
    """Semantic labels (official checkpoints: ``heads="none"``, no text encoder, no class table)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent knob."""
        bb, enc, dec = self.backbone, self.encoder, self.decoder
        if len(bb.depths) != 4 or len(bb.num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages, got depths={bb.depths} num_heads={bb.num_heads}")
        if tuple(enc.in_channels) != bb.out_channels:
            raise ValueError(f"encoder.in_channels {enc.in_channels} != backbone channels {bb.out_channels}")
        if dec.hidden_dim != enc.conv_dim:
            raise ValueError(
                f"decoder.hidden_dim ({dec.hidden_dim}) must equal encoder.conv_dim ({enc.conv_dim}); the official "
                "input_proj is then the identity (other combinations are not supported)"
            )
        if dec.mask_dim != enc.mask_dim:
            raise ValueError(f"decoder.mask_dim ({dec.mask_dim}) != encoder.mask_dim ({enc.mask_dim})")
        if dec.num_levels != 4:
            raise ValueError(f"the encoder produces 4 levels; decoder.num_levels is {dec.num_levels}")
        for name, dim, heads in (
            ("encoder", enc.conv_dim, enc.num_heads),
            ("decoder", dec.hidden_dim, dec.num_heads),
        ):
            if dim % heads:
                raise ValueError(f"{name}: width {dim} is not divisible by {heads} heads")
        if enc.conv_dim % enc.num_groups or enc.conv_dim % 2:
            raise ValueError(f"encoder.conv_dim {enc.conv_dim} must be even and divisible by {enc.num_groups} groups")
        if dec.num_tokens < 1:
            raise ValueError(f"decoder.num_tokens must be >= 1, got {dec.num_tokens}")
        if self.size_divisibility % 32:
            raise ValueError(
                f"size_divisibility must be a multiple of 32 (Swin + s64 level), got {self.size_divisibility}"
            )
        if dec.dim_proj < 1:
            raise ValueError(f"decoder.dim_proj must be >= 1, got {dec.dim_proj}")
        self.labels.validate(dec.dim_proj)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SemanticSAMConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` naming them. Missing keys take their defaults
        (dicts written before label heads existed load as ``labels.heads = "none"``)."""
        if not isinstance(d, dict):
            raise ValueError(f"SemanticSAMConfig: expected a mapping, got {type(d).__name__}")
        d = dict(d)
        labels = d.pop("labels", None)
        cfg = dataclass_from_dict(cls, d)
        if labels is not None:
            cfg.labels = LabelConfig.from_dict(labels)
            cfg.validate()
        return cfg


def _make(name: str, bb: SwinConfig) -> SemanticSAMConfig:
    return SemanticSAMConfig(
        name=name,
        backbone=bb,
        encoder=DeformableEncoderConfig(in_channels=bb.out_channels),
        decoder=GranularityDecoderConfig(),
    )


def swin_t() -> SemanticSAMConfig:
    """Full-size Semantic-SAM Swin-T (``swint_only_sam_many2many.pth``)."""
    return _make(
        "semantic-sam-swint", SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
    )


def swin_l() -> SemanticSAMConfig:
    """Full-size Semantic-SAM Swin-L (``swinl_only_sam_many2many.pth``)."""
    return _make(
        "semantic-sam-swinl", SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
    )


def _expect(path: str | Path, what: str, value: Any, allowed: Any) -> None:
    if value != allowed:
        raise ValueError(f"{path}: {what} = {value!r} is not supported (expected {allowed!r})")


def from_official_yaml(path: str | Path) -> SemanticSAMConfig:
    """Read an official Semantic-SAM YAML (``configs/semantic_sam_only_sa-1b_swin{T,L}.yaml`` layout).

    Only architecture knobs are read; training, dataset and solver sections are ignored. Structural switches
    that the released models never change (APE, patch norm, feature order, 4 levels, GN, ...) are checked and
    anything else raises ``ValueError`` naming the knob.
    """
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    m = cfg["MODEL"]
    _expect(path, "MODEL.BACKBONE.NAME", m["BACKBONE"]["NAME"], "swin")
    _expect(path, "MODEL.ENCODER.NAME", m["ENCODER"]["NAME"], "encoder_deform")
    _expect(path, "MODEL.DECODER.NAME", m["DECODER"]["NAME"], "interactive_mask_dino")
    s = m["BACKBONE"]["SWIN"]
    _expect(path, "SWIN.APE", bool(s.get("APE", False)), False)
    _expect(path, "SWIN.PATCH_NORM", bool(s.get("PATCH_NORM", True)), True)
    bb = SwinConfig(
        embed_dim=int(s["EMBED_DIM"]),
        depths=tuple(int(v) for v in s["DEPTHS"]),
        num_heads=tuple(int(v) for v in s["NUM_HEADS"]),
        window_size=int(s["WINDOW_SIZE"]),
        patch_size=int(s.get("PATCH_SIZE", 4)),
        mlp_ratio=float(s.get("MLP_RATIO", 4.0)),
        qkv_bias=bool(s.get("QKV_BIAS", True)),
        qk_scale=None if s.get("QK_SCALE") is None else float(s["QK_SCALE"]),
        drop_path_rate=float(s.get("DROP_PATH_RATE", 0.3)),
    )
    enc, dec = m["ENCODER"], m["DECODER"]
    _expect(path, "ENCODER.NORM", enc.get("NORM", "GN"), "GN")
    _expect(path, "ENCODER.FEATURE_ORDER", enc.get("FEATURE_ORDER", "low2high"), "low2high")
    _expect(path, "ENCODER.TOTAL_NUM_FEATURE_LEVELS", int(enc.get("TOTAL_NUM_FEATURE_LEVELS", 4)), 4)
    _expect(path, "DECODER.TOTAL_NUM_FEATURE_LEVELS", int(dec.get("TOTAL_NUM_FEATURE_LEVELS", 4)), 4)
    _expect(
        path,
        "ENCODER.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
        list(enc.get("DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"])),
        ["res3", "res4", "res5"],
    )
    _expect(path, "ENCODER.COMMON_STRIDE", int(enc.get("COMMON_STRIDE", 4)), 4)
    _expect(path, "DECODER.TWO_STAGE", bool(dec.get("TWO_STAGE", False)), False)
    _expect(path, "DECODER.ENFORCE_INPUT_PROJ", bool(dec.get("ENFORCE_INPUT_PROJ", False)), False)
    encoder = DeformableEncoderConfig(
        in_channels=bb.out_channels,
        conv_dim=int(enc["CONVS_DIM"]),
        mask_dim=int(enc["MASK_DIM"]),
        num_layers=int(enc["TRANSFORMER_ENC_LAYERS"]),
        num_heads=int(dec["NHEADS"]),
        ffn_dim=int(dec["DIM_FEEDFORWARD"]),
    )
    decoder = GranularityDecoderConfig(
        hidden_dim=int(dec["HIDDEN_DIM"]),
        num_layers=int(dec["DEC_LAYERS"]),
        ffn_dim=int(dec["DIM_FEEDFORWARD"]),
        num_tokens=int(dec.get("NUM_INTERACTIVE_TOKENS", 3)),
        mask_dim=int(enc["MASK_DIM"]),
        dim_proj=int(m.get("DIM_PROJ", 512)),
    )
    labels = _labels_from_yaml(m, decoder.dim_proj)
    inp = cfg.get("INPUT", {})
    return SemanticSAMConfig(
        name=Path(path).stem,
        backbone=bb,
        encoder=encoder,
        decoder=decoder,
        pixel_mean=tuple(float(v) for v in inp.get("PIXEL_MEAN", PIXEL_MEAN)),  # type: ignore[arg-type]
        pixel_std=tuple(float(v) for v in inp.get("PIXEL_STD", PIXEL_STD)),  # type: ignore[arg-type]
        size_divisibility=int(dec.get("SIZE_DIVISIBILITY", 32)),
        labels=labels,
    )


def _labels_from_yaml(m: dict[str, Any], dim_proj: int) -> LabelConfig:
    """``MODEL.TEXT``: ``ARCH: noencoder`` (every released model) → no labels; a language encoder (``vlpencoder``)
    → a causal CLIP-style ``TextEncoderConfig`` and trained object heads (+ part heads with ``DECODER.PART``)."""
    text = m.get("TEXT", {}) or {}
    if str(text.get("ARCH", "noencoder")) == "noencoder":
        return LabelConfig()
    tcfg = TextEncoderConfig(
        vocab_size=49408,
        context_length=int(text.get("CONTEXT_LENGTH", 77)),
        width=int(text.get("WIDTH", 512)),
        heads=int(text.get("HEADS", 8)),
        layers=int(text.get("LAYERS", 12)),
        proj_dim=dim_proj,
        causal=bool(text.get("AUTOGRESSIVE", True)),
    )
    part = bool(m.get("DECODER", {}).get("PART", False))
    return LabelConfig(heads="object+part" if part else "object", text=tcfg)
