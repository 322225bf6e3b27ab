"""The assembled Semantic-SAM model: Swin → deformable encoder → interactive granularity decoder.

Usage (what a predictor does)::

    model = SemanticSAM(swin_t()).eval()
    load_official_semantic_sam("swint_only_sam_many2many.pth", model)
    x = model.preprocess(image_uint8_chw)                       # [1, 3, Hp, Wp], normalised, zero-padded
    feats = model.encode_image(x, image_size=(H, W))            # once per image
    out = model.decode_clicks(feats, torch.tensor([[x_px, y_px]]))  # any number of times
    masks = model.upscale_masks(out.masks, feats)               # [B, Q, 6, H, W] logits; > 0 is the mask

Coordinates (the rule the official code uses, kept exactly):

- ``decode_clicks`` takes clicks as **pixel** ``(x, y)`` in the unpadded input image (the image given to
  ``preprocess``, i.e. after any resizing): ``x`` is the column, ``y`` the row. They are converted to fractions of
  the unpadded image, ``(x / W, y / H)`` (no +0.5: the official demo passes ``column / W``), then each click
  becomes the box ``(x / W, y / H, 0.005, 0.005)`` and the whole box is rescaled to the padded canvas by
  ``(W / Wp, H / Hp, W / Wp, H / Hp)`` — the 0.005 size included, as in ``evaluate_demo``. With
  ``relative=True`` clicks are given directly as fractions ``(x / W, y / H)`` (the official API's convention).
- Boxes are XYXY pixels in the unpadded image, converted to ``(cx, cy, w, h) / (W, H, W, H)`` and rescaled to the
  padded canvas the same way (``relative=True``: already divided by ``(W, H, W, H)``).
- Output boxes are ``(cx, cy, w, h)`` normalised to the **padded** canvas (official ``pred_boxes``);
  ``boxes_to_xyxy_pixels`` converts them to XYXY pixels.
- Output masks are stride-4 logits of the padded canvas; ``upscale_masks`` upsamples them bilinearly
  (``align_corners=False``) to the padded size and crops the unpadded ``H x W``, as ``evaluate_demo`` does.

Each prompt yields ``num_tokens`` (6) masks, IoU predictions and boxes, in granularity-token order 0..5 (the
automatic generator's user levels 1..6 map to tokens 3, 2, 0, 4, 1, 5). ``exact_batching`` is explained in
``seem.models.granularity_decoder``; ``pb`` (point/box type) defaults to 0, what every official inference path
feeds (training used 1 for points; with real boxes the official results are reported to be poor).

Labels (object and part classes, official "whole" / "part" heads): the decoder's ``class_embed`` /
``class_embed_part`` project every query into a text space (``GranularityDecoder.classify``); logits are computed
against a class table, a ``LabelVocabulary``. Where the class names come from (``cfg.labels``, ``LabelConfig``):

- an optional ``text_encoder`` (SEEM's CLIP-style ``TextEncoder``): ``build_vocabulary(object_classes,
  part_classes)`` embeds any names (SEEM's rule: 81 prompt templates averaged, **no** background row);
- a stored class table (buffers ``object_class_embeddings`` / ``part_class_embeddings``, names in
  ``cfg.labels.object_classes`` / ``part_classes``; ``store_vocabulary`` fills them), the default vocabulary.

``label_reasons`` says why labels are unavailable: the released checkpoints (``labels.heads = "none"``) hold the
heads untrained, so their masks carry no label (``NO_LABEL_REASON``). ``decode_clicks(..., return_class_logits=True)``
or ``vocabulary=...`` adds per-layer ``object_logits`` / ``part_logits`` to the output (for training and labelling).

Official checkpoint prefixes: ``model.backbone.`` → ``backbone.``, ``model.sem_seg_head.pixel_decoder.`` →
``pixel_decoder.``, ``model.sem_seg_head.predictor.lang_encoder.`` → ``text_encoder.`` (only in checkpoints trained
with a language encoder), ``model.sem_seg_head.predictor.`` → ``predictor.`` (see
``seem.models.checkpoints.semantic_sam``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.backbones.swin import SwinTransformer
from seem.models.checkpoints.common import CheckpointError, ConversionReport
from seem.models.granularity_decoder import DecoderMemory, GranularityDecoder, GranularityDecoderOutput
from seem.models.pixel_decoders.deformable import DeformableEncoder
from seem.models.pixel_decoders.ms_deform_attn import MSDAImpl, MSDeformAttn
from seem.models.preprocess import normalize_and_pad
from seem.models.semantic_sam_config import SemanticSAMConfig
from seem.models.text.encoder import TextEncoder

__all__ = [
    "CLICK_BOX_SIZE",
    "NO_LABEL_REASON",
    "NO_PART_HEAD_REASON",
    "NO_VOCABULARY_REASON",
    "LabelVocabulary",
    "SemanticSAM",
    "SemanticSAMFeatures",
    "boxes_to_xyxy_pixels",
    "combine_label_reasons",
]

CLICK_BOX_SIZE = 0.005
"""Width and height of the anchor box of a click, as a fraction of the unpadded image (official value)."""

NO_LABEL_REASON = (
    "the released Semantic-SAM weights were trained without semantic labels (TEXT.ARCH noencoder): the class heads "
    "of this model are untrained (labels.heads = 'none'), so masks carry no label"
)
NO_PART_HEAD_REASON = "this model's part head is not trained (labels.heads = 'object'), so masks carry no part label"
NO_VOCABULARY_REASON = (
    "no vocabulary: the model stores no class table for this head; call set_vocabulary(object_classes, part_classes)"
)


@dataclass(frozen=True)
class LabelVocabulary:
    """Class tables the label heads are scored against (``SemanticSAM.build_vocabulary``).

    Attributes:
        object_names, object_embeddings: object classes and their unit-norm embeddings ``[No, dim_proj]`` (None:
            no object labels).
        part_names, part_embeddings: the same for parts.

    No background row: the heads give independent sigmoid (focal-loss) logits per class, as officially trained.
    """

    object_names: tuple[str, ...] = ()
    object_embeddings: Tensor | None = None
    part_names: tuple[str, ...] = ()
    part_embeddings: Tensor | None = None

    def __post_init__(self) -> None:
        for kind in ("object", "part"):
            names, emb = getattr(self, f"{kind}_names"), getattr(self, f"{kind}_embeddings")
            if emb is None:
                continue
            if not isinstance(emb, Tensor) or emb.dim() != 2:
                raise ValueError(f"{kind}_embeddings must be a [N, dim_proj] tensor, got {getattr(emb, 'shape', emb)}")
            if names and len(names) != emb.shape[0]:
                raise ValueError(f"{len(names)} {kind} names for {emb.shape[0]} {kind} embeddings")

    def name(self, kind: str, index: int) -> str:
        """Class name of row ``index`` of the ``kind`` (``"object"`` / ``"part"``) table (``"class_{i}"`` unnamed)."""
        names = self.object_names if kind == "object" else self.part_names
        return names[index] if names else f"class_{index}"


@dataclass
class SemanticSAMFeatures:
    """Image features, computed once per image batch by ``SemanticSAM.encode_image``.

    Attributes:
        image_size: ``(H, W)`` of the unpadded input (same for every image of the batch).
        padded_size: ``(Hp, Wp)`` of the padded input.
        multi_scale: encoder maps ``[s8, s16, s32, s64]``, ``[B, C, Hp/s, Wp/s]``.
        mask_features: ``[B, mask_dim, Hp/4, Wp/4]``.
        memory: the decoder's view (flattened s64..s8 memory, projected-value cache).
        backbone: the Swin outputs ``res2..res5`` (kept only with ``keep_backbone=True``).
    """

    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    multi_scale: list[Tensor]
    mask_features: Tensor
    memory: DecoderMemory
    backbone: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.mask_features.shape[0])


def boxes_to_xyxy_pixels(boxes: Tensor, padded_size: tuple[int, int]) -> Tensor:
    """``(cx, cy, w, h)`` normalised to the padded canvas → XYXY pixels (same origin as the unpadded image)."""
    hp, wp = padded_size
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack(((cx - w / 2) * wp, (cy - h / 2) * hp, (cx + w / 2) * wp, (cy + h / 2) * hp), -1)


class SemanticSAM(nn.Module):
    """Semantic-SAM (see the module docstring for the API and coordinate rules).

    Submodules: ``backbone`` (``SwinTransformer``), ``pixel_decoder`` (``DeformableEncoder``), ``predictor``
    (``GranularityDecoder``, with the class heads ``class_embed`` / ``class_embed_part``) and, with
    ``cfg.labels.text``, ``text_encoder`` (``TextEncoder``; else None). ``pixel_mean`` / ``pixel_std`` are
    non-persistent buffers (``[3]``, 0..255 scale). Label extras, present only when configured: buffers
    ``object_class_embeddings`` / ``part_class_embeddings`` (stored class tables) and the parameter ``logit_scale``
    (trained heads without a text encoder; otherwise the text encoder's scale is used).
    """

    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(self, cfg: SemanticSAMConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = SwinTransformer(cfg.backbone)
        self.pixel_decoder = DeformableEncoder(cfg.encoder)
        self.predictor = GranularityDecoder(cfg.decoder)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std, dtype=torch.float32), persistent=False)
        labels = cfg.labels
        self.text_encoder: TextEncoder | None = TextEncoder(labels.text) if labels.text is not None else None
        if labels.heads != "none" and labels.text is None:  # the text encoder holds the scale when there is one
            self.logit_scale: nn.Parameter | None = nn.Parameter(torch.ones([]))
        else:
            self.register_parameter("logit_scale", None)
        p = cfg.decoder.dim_proj
        for kind, names in (("object", labels.object_classes), ("part", labels.part_classes)):
            self.register_buffer(f"{kind}_class_embeddings", torch.zeros(len(names), p) if names else None)

    @property
    def num_tokens(self) -> int:
        return self.cfg.decoder.num_tokens

    # ------------------------------------------------------------------------------------------------ labels

    @property
    def label_logit_scale(self) -> Tensor | float:
        """Log scale of the class logits: the text encoder's ``logit_scale``, else the model's own, else 0."""
        if self.text_encoder is not None:
            return self.text_encoder.logit_scale
        return self.logit_scale if self.logit_scale is not None else 0.0

    def _stored(self, kind: str) -> tuple[tuple[str, ...], Tensor | None]:
        names = self.cfg.labels.object_classes if kind == "object" else self.cfg.labels.part_classes
        return tuple(names), getattr(self, f"{kind}_class_embeddings")

    def _head_enabled(self, kind: str) -> bool:
        return self.cfg.labels.object_head if kind == "object" else self.cfg.labels.part_head

    def build_vocabulary(
        self, object_classes: Sequence[str] | None = None, part_classes: Sequence[str] | None = None
    ) -> LabelVocabulary:
        """The class tables for ``object_classes`` / ``part_classes``.

        Names are embedded with the text encoder when the model has one; otherwise they must be in the stored class
        table (rows are selected by name). None takes the whole stored table of that head (none when nothing is
        stored). Raises ``ValueError`` when names are given for a head the model does not have (with the reason),
        a name is not in the stored table of a model without text encoder, or names are empty / repeated.
        """
        out: dict[str, Any] = {}
        for kind, names in (("object", object_classes), ("part", part_classes)):
            stored_names, stored = self._stored(kind)
            if names is None:
                if self._head_enabled(kind) and stored is not None:
                    out[f"{kind}_names"], out[f"{kind}_embeddings"] = stored_names, stored
                continue
            if not self._head_enabled(kind):
                why = NO_LABEL_REASON if self.cfg.labels.heads == "none" else NO_PART_HEAD_REASON
                raise ValueError(f"{kind}_classes given, but {why}")
            names = _check_names(names, f"{kind}_classes")
            if self.text_encoder is not None:
                with torch.no_grad():
                    emb = self.text_encoder.class_embeddings(list(names), add_background=False)
            else:
                unknown = [n for n in names if n not in stored_names]
                if unknown:
                    raise ValueError(
                        f"{kind} classes {unknown} are not in the model's stored class table "
                        f"{list(stored_names)} and the model has no text encoder to embed new names"
                    )
                assert stored is not None
                emb = stored[[stored_names.index(n) for n in names]]
            out[f"{kind}_names"], out[f"{kind}_embeddings"] = names, emb
        return LabelVocabulary(**out)

    def label_reasons(self, vocabulary: LabelVocabulary | None = None) -> tuple[str | None, str | None]:
        """Why object / part labels are unavailable with ``vocabulary`` (default: the stored one); None = available."""
        vocab = self.build_vocabulary() if vocabulary is None else vocabulary
        if self.cfg.labels.heads == "none":
            return NO_LABEL_REASON, NO_LABEL_REASON
        obj = None if vocab.object_embeddings is not None else NO_VOCABULARY_REASON
        if not self.cfg.labels.part_head:
            part: str | None = NO_PART_HEAD_REASON
        else:
            part = None if vocab.part_embeddings is not None else NO_VOCABULARY_REASON
        return obj, part

    def label_reason(self, vocabulary: LabelVocabulary | None = None) -> str | None:
        """One sentence for records: why ``label`` and/or ``part_label`` are None (None when both are available)."""
        return combine_label_reasons(*self.label_reasons(vocabulary))

    def usable_vocabulary(self, vocabulary: LabelVocabulary | None = None) -> LabelVocabulary:
        """``vocabulary`` (default: the stored one) without the tables of heads that are not trained."""
        vocab = self.build_vocabulary() if vocabulary is None else vocabulary
        obj_ok, part_ok = self.cfg.labels.object_head, self.cfg.labels.part_head
        return LabelVocabulary(
            object_names=vocab.object_names if obj_ok else (),
            object_embeddings=vocab.object_embeddings if obj_ok else None,
            part_names=vocab.part_names if part_ok else (),
            part_embeddings=vocab.part_embeddings if part_ok else None,
        )

    def classify(self, head_in: Tensor, vocabulary: LabelVocabulary) -> tuple[Tensor | None, Tensor | None]:
        """Object / part logits of head inputs ``decoder_norm(hs)`` ``[..., C]`` against ``vocabulary``'s tables."""
        return self.predictor.classify(
            head_in, vocabulary.object_embeddings, vocabulary.part_embeddings, self.label_logit_scale
        )

    @torch.no_grad()
    def store_vocabulary(
        self,
        object_classes: Sequence[str] | None = None,
        part_classes: Sequence[str] | None = None,
        *,
        object_embeddings: Tensor | None = None,
        part_embeddings: Tensor | None = None,
    ) -> None:
        """Store class tables with the model (buffers + names in ``cfg.labels``), replacing the stored ones.

        Embeddings are computed with the text encoder unless given (``[N, dim_proj]``, normalised here). None keeps
        that head's stored table, empty names remove it. A model saved afterwards (``save_semantic_sam``) labels
        from these tables by default (``without_text_encoder`` drops the text encoder).
        """
        p = self.cfg.decoder.dim_proj
        dev = self.pixel_mean.device
        for kind, names, emb in (
            ("object", object_classes, object_embeddings),
            ("part", part_classes, part_embeddings),
        ):
            if names is None:
                if emb is not None:
                    raise ValueError(f"{kind}_embeddings given without {kind}_classes")
                continue
            names = tuple(names)
            if not names:
                if emb is not None:
                    raise ValueError(f"{kind}_embeddings given without {kind}_classes")
                self.register_buffer(f"{kind}_class_embeddings", None)
                setattr(self.cfg.labels, f"{kind}_classes", ())
                continue
            names = _check_names(names, f"{kind}_classes")
            if emb is None:
                if self.text_encoder is None:
                    raise ValueError(f"{kind}_embeddings are needed: the model has no text encoder to embed names")
                emb = self.text_encoder.class_embeddings(list(names), add_background=False)
            if not isinstance(emb, Tensor) or tuple(emb.shape) != (len(names), p):
                raise ValueError(f"{kind}_embeddings must be [{len(names)}, {p}], got {getattr(emb, 'shape', emb)}")
            emb = emb.to(device=dev, dtype=torch.float32)
            self.register_buffer(f"{kind}_class_embeddings", emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12))
            setattr(self.cfg.labels, f"{kind}_classes", names)
        self.cfg.validate()

    def without_text_encoder(self) -> SemanticSAM:
        """A copy that labels from the stored class tables only: no text encoder (its ``logit_scale`` becomes the
        model's own); ``store_vocabulary`` first. Lighter to ship; new names can then no longer be embedded."""
        import copy

        if self.text_encoder is None:
            raise ValueError("the model has no text encoder")
        cfg = copy.deepcopy(self.cfg)
        cfg.labels.text = None
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}
        model = SemanticSAM(cfg).to(self.pixel_mean.device)
        if model.logit_scale is not None:
            sd["logit_scale"] = self.text_encoder.logit_scale.detach().clone()
        model.load_state_dict(sd, strict=True)
        return model.train(self.training)

    def set_msda_impl(self, impl: MSDAImpl) -> None:
        """Choose the MSDA core of every encoder and decoder layer: ``"auto"`` (default: ``"gather"`` on CPU/CUDA,
        ``"grid_sample"`` elsewhere), ``"gather"`` or ``"grid_sample"`` (the official formulation). Features encoded
        before the switch keep their cached decoder values, which do not depend on the choice."""
        if impl not in ("auto", "gather", "grid_sample"):
            raise ValueError(f"unknown MSDA implementation {impl!r}; expected 'auto', 'gather' or 'grid_sample'")
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.impl = impl

    def preprocess(self, image: Tensor) -> Tensor:
        """uint8 RGB ``[3, H, W]`` or ``[B, 3, H, W]`` → normalised, zero-padded ``[B, 3, Hp, Wp]`` float32."""
        if not isinstance(image, Tensor):
            raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
        return normalize_and_pad(
            image.to(self.pixel_mean.device), self.pixel_mean, self.pixel_std, self.cfg.size_divisibility
        )

    def encode_image(
        self, images: Tensor, image_size: tuple[int, int] | None = None, *, keep_backbone: bool = False
    ) -> SemanticSAMFeatures:
        """Backbone + encoder on normalised, padded images.

        Args:
            images: ``[B, 3, Hp, Wp]`` float, from ``preprocess`` (sides multiples of ``size_divisibility``).
            image_size: ``(H, W)`` of the unpadded content (default: the padded size, i.e. no padding).
            keep_backbone: also keep the Swin outputs in ``features.backbone``.
        """
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a [B, 3, Hp, Wp] tensor, got {getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"images must be normalised floats (see preprocess), got dtype {images.dtype}")
        hp, wp = int(images.shape[-2]), int(images.shape[-1])
        div = self.cfg.size_divisibility
        if hp % div or wp % div:
            raise ValueError(f"padded size {(hp, wp)} is not a multiple of {div}; use preprocess()")
        if image_size is None:
            image_size = (hp, wp)
        h, w = int(image_size[0]), int(image_size[1])
        if not (0 < h <= hp and 0 < w <= wp):
            raise ValueError(f"image_size {(h, w)} must be positive and fit in the padded size {(hp, wp)}")
        feats = self.backbone(images)
        enc = self.pixel_decoder(feats)
        return SemanticSAMFeatures(
            image_size=(h, w),
            padded_size=(hp, wp),
            multi_scale=enc.multi_scale,
            mask_features=enc.mask_features,
            memory=DecoderMemory.from_multi_scale(enc.multi_scale, enc.mask_features),
            backbone=feats if keep_backbone else {},
        )

    def prompt_boxes(
        self,
        features: SemanticSAMFeatures,
        points: Tensor | None = None,
        boxes: Tensor | None = None,
        *,
        relative: bool = False,
    ) -> Tensor:
        """Clicks and/or boxes → anchor boxes ``[B, Q, 4]`` ``(cx, cy, w, h)`` on the padded canvas (clicks first).

        ``points``: ``[Q, 2]`` or ``[B, Q, 2]`` ``(x, y)``; ``boxes``: ``[Q, 4]`` or ``[B, Q, 4]`` XYXY. Pixels of the
        unpadded image, or fractions of it with ``relative=True`` (see the module docstring).
        """
        h, w = features.image_size
        hp, wp = features.padded_size
        b = features.batch_size
        dev = features.mask_features.device
        parts = []
        if points is not None:
            pts = self._as_prompts(points, 2, "points", b, dev)
            if not relative:
                pts = pts / torch.tensor([w, h], dtype=torch.float32, device=dev)
            size = torch.full_like(pts, CLICK_BOX_SIZE)
            parts.append(torch.cat([pts, size], -1))
        if boxes is not None:
            bx = self._as_prompts(boxes, 4, "boxes", b, dev)
            if bool(((bx[..., 2:] - bx[..., :2]) < 0).any()):
                raise ValueError("boxes must be XYXY with x2 >= x1 and y2 >= y1")
            if not relative:
                bx = bx / torch.tensor([w, h, w, h], dtype=torch.float32, device=dev)
            parts.append(torch.cat([(bx[..., :2] + bx[..., 2:]) / 2, bx[..., 2:] - bx[..., :2]], -1))
        if not parts:
            raise ValueError("give at least one click (points) or box")
        anchors = torch.cat(parts, 1)
        if anchors.shape[1] == 0:
            raise ValueError("give at least one click (points) or box; got zero prompts")
        # official evaluate_demo: points * [W, H, W, H] / [Wp, Hp, Wp, Hp] (float32, this operation order)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=dev)
        padded = torch.tensor([wp, hp, wp, hp], dtype=torch.float32, device=dev)
        return anchors * scale / padded

    @staticmethod
    def _as_prompts(x: Tensor | Sequence[float], n: int, name: str, b: int, dev: torch.device) -> Tensor:
        t = torch.as_tensor(x, dtype=torch.float32, device=dev)
        if t.dim() == 2:
            t = t.unsqueeze(0).expand(b, -1, -1)
        if t.dim() != 3 or t.shape[-1] != n or t.shape[0] != b:
            raise ValueError(f"{name} must be [Q, {n}] or [{b}, Q, {n}], got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} must be finite")
        return t

    def decode_clicks(
        self,
        features: SemanticSAMFeatures,
        points: Tensor | None = None,
        boxes: Tensor | None = None,
        *,
        relative: bool = False,
        exact_batching: bool = False,
        pb: int | Tensor = 0,
        compute_masks: bool = True,
        all_layer_masks: bool = False,
        return_intermediates: bool = False,
        return_class_logits: bool = False,
        vocabulary: LabelVocabulary | None = None,
    ) -> GranularityDecoderOutput:
        """Decode clicks and/or boxes into ``num_tokens`` masks, IoU scores and boxes each.

        Args:
            features: from ``encode_image``.
            points: clicks ``[Q, 2]`` / ``[B, Q, 2]`` ``(x, y)`` (pixels, or fractions with ``relative=True``).
            boxes: boxes ``[Q, 4]`` / ``[B, Q, 4]`` XYXY (pixels, or fractions with ``relative=True``).
            relative: coordinates are fractions of the unpadded image instead of pixels.
            exact_batching: all prompts of an image attend to each other (official batched inference); default
                False: each prompt is decoded as if alone.
            pb: point/box type index, an int for every prompt or a ``[Q]`` / ``[B, Q]`` tensor (official: 0).
            compute_masks: compute the final-layer stride-4 mask logits.
            all_layer_masks, return_intermediates: see ``GranularityDecoder.forward``.
            return_class_logits: also return every layer's class logits for the stored vocabulary, for the heads
                the model has (``cfg.labels.heads``); ``ValueError`` (with the reason) when neither head can.
            vocabulary: class tables to score instead (implies class logits for each table it holds, whatever
                ``cfg.labels.heads`` says: e.g. training the heads of released weights).

        Returns:
            ``GranularityDecoderOutput`` with prompts in order (clicks, then boxes): ``masks`` ``[B, Q, K, Hp/4,
            Wp/4]``, ``ious`` ``[B, Q, K]``, ``boxes`` ``[B, Q, K, 4]`` (cxcywh on the padded canvas); with class
            logits also ``object_logits`` / ``part_logits`` ``[B, Q, K, N]`` (+ ``aux_*`` per earlier layer).
        """
        anchors = self.prompt_boxes(features, points, boxes, relative=relative)
        b, q, _ = anchors.shape
        pb_t = torch.as_tensor(pb, dtype=torch.long, device=anchors.device)
        if pb_t.dim() == 0:
            pb_t = pb_t.expand(b, q)
        elif pb_t.dim() == 1:
            pb_t = pb_t.unsqueeze(0).expand(b, -1)
        if tuple(pb_t.shape) != (b, q):
            raise ValueError(f"pb must be an int, [Q] or [B, Q] with Q={q}, got shape {tuple(pb_t.shape)}")
        if bool(((pb_t < 0) | (pb_t > 1)).any()):
            raise ValueError("pb values must be 0 or 1")
        if vocabulary is None and return_class_logits:
            vocabulary = self.usable_vocabulary()
            if vocabulary.object_embeddings is None and vocabulary.part_embeddings is None:
                obj_why, part_why = self.label_reasons()
                raise ValueError(f"return_class_logits=True, but {obj_why or part_why}")
        if vocabulary is not None and not isinstance(vocabulary, LabelVocabulary):
            raise TypeError(f"vocabulary must be a LabelVocabulary, got {type(vocabulary).__name__}")
        return self.predictor(
            features.memory,
            anchors,
            pb_t,
            exact_batching=exact_batching,
            compute_masks=compute_masks,
            all_layer_masks=all_layer_masks,
            return_intermediates=return_intermediates,
            object_embeddings=None if vocabulary is None else vocabulary.object_embeddings,
            part_embeddings=None if vocabulary is None else vocabulary.part_embeddings,
            logit_scale=self.label_logit_scale,
        )

    @staticmethod
    def upscale_masks(masks: Tensor, features: SemanticSAMFeatures) -> Tensor:
        """Stride-4 logits ``[..., Hp/4, Wp/4]`` → logits ``[..., H, W]`` of the unpadded image (official rule:
        bilinear, ``align_corners=False``, to the padded size, then crop)."""
        lead = masks.shape[:-2]
        hp, wp = features.padded_size
        h, w = features.image_size
        up = F.interpolate(masks.reshape(-1, 1, *masks.shape[-2:]), size=(hp, wp), mode="bilinear", align_corners=False)
        return up[..., :h, :w].reshape(*lead, h, w)

    def forward(self, image: Tensor, points: Tensor, **kwargs: object) -> GranularityDecoderOutput:
        """One-shot convenience: uint8 image ``[3, H, W]`` + pixel clicks ``[Q, 2]`` → decoder outputs."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        feats = self.encode_image(self.preprocess(image), (h, w))
        return self.decode_clicks(feats, points, **kwargs)  # type: ignore[arg-type]


def combine_label_reasons(object_reason: str | None, part_reason: str | None) -> str | None:
    """Why ``label`` / ``part_label`` are None, as one string (None when neither is missing)."""
    if object_reason and part_reason:
        return object_reason if object_reason == part_reason else f"label: {object_reason}; part_label: {part_reason}"
    if object_reason:
        return f"label: {object_reason}"
    if part_reason:
        return f"part_label: {part_reason}"
    return None


def _check_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence | tuple):
        raise TypeError(f"{what} must be a list of class names, got {type(names).__name__}")
    out = tuple(names)
    if not out:
        raise ValueError(f"{what} is empty")
    bad = [n for n in out if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"{what} must hold non-empty strings, got {bad[:3]}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} names a class twice: {sorted({n for n in out if out.count(n) > 1})}")
    return out


FAMILY = "semantic_sam"


def semantic_sam_from_official(
    checkpoint: str | Path | Mapping[str, Any], config: SemanticSAMConfig | str | Path | None = None
) -> tuple[SemanticSAM, ConversionReport]:
    """Build a Semantic-SAM from an official ``.pth`` (path or loaded object), strictly; returns (model, report).

    ``config``: a ``SemanticSAMConfig``, an official YAML path, or None to pick Swin-T / Swin-L from the backbone's
    width (96 / 192), the only two released models.
    """
    from seem.models.checkpoints.semantic_sam import load_official_semantic_sam, official_state_dict
    from seem.models.semantic_sam_config import from_official_yaml, swin_l, swin_t

    state = official_state_dict(checkpoint)
    if isinstance(config, str | Path):
        config = from_official_yaml(config)
    if config is None:
        w = state.get("model.backbone.patch_embed.proj.weight")
        widths = {96: swin_t, 192: swin_l}
        if w is None or int(w.shape[0]) not in widths:
            raise CheckpointError(
                "cannot tell the Semantic-SAM size from 'model.backbone.patch_embed.proj.weight' "
                f"({None if w is None else tuple(w.shape)}); pass config= (an official YAML or SemanticSAMConfig)"
            )
        config = widths[int(w.shape[0])]()
    model = SemanticSAM(config)
    what = str(checkpoint) if isinstance(checkpoint, str | Path) else "checkpoint"
    report = load_official_semantic_sam(state, model, what=what)
    return model.eval(), report


def save_semantic_sam(model: SemanticSAM, out_dir: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (our format)."""
    from seem.models.checkpoints.native import save_native

    return save_native(out_dir, FAMILY, model.cfg.to_dict(), model.state_dict())


def load_semantic_sam(path: str | Path, device: str | torch.device = "cpu") -> SemanticSAM:
    """Load a directory written by ``save_semantic_sam`` (strict)."""
    from seem.models.checkpoints.native import load_native

    family, cfg, sd = load_native(path, device=device)
    if family != FAMILY:
        raise CheckpointError(f"{path}: holds a {family!r} model, not Semantic-SAM")
    model = SemanticSAM(SemanticSAMConfig.from_dict(cfg)).to(device)
    if "labels" not in cfg:  # written before the class heads were built: they were untrained, keep the init
        for key in ("predictor.class_embed", "predictor.class_embed_part"):
            sd.setdefault(key, model.state_dict()[key])
    model.load_state_dict(sd, strict=True)
    return model.eval()
