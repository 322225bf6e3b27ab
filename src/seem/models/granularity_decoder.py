"""Semantic-SAM's interactive granularity decoder (official ``IMaskDINODecoder``, DINO-style), plain PyTorch.

Every prompt (a click or a box) becomes ``num_tokens`` (6) queries, one per granularity token ``k``:

- content: ``label_enc[0] + pb_embedding[pb] + mask_tokens[k]``; queries are prompt-major, token-minor
  (query ``6 * c + k`` is prompt ``c``, token ``k``);
- anchor: the prompt box ``(cx, cy, w, h)`` normalised to the **padded** canvas, shared by the 6 tokens, stored as
  ``inverse_sigmoid`` (clamped, eps 1e-5) and turned back with ``sigmoid`` by the decoder. A click is the box
  ``(x, y, 0.005, 0.005)`` in unpadded-image fractions, rescaled to the padded canvas (see ``SemanticSAM``).

Each of the ``num_layers`` layers: self-attention over the queries (``q = k = tgt + pos``, ``v = tgt``) → ``norm2``
→ MSDA cross-attention to the 4-level memory (s64, s32, s16, s8; 8 heads, 4 points, box reference) → ``norm1`` →
ReLU FFN → ``norm3``. The query position is ``ref_point_head(sine(ref))`` with the sine embedding in the order
**(y, x, w, h)** (128 frequencies each for a 256-d model, temperature 10000, scale 2π). After each layer the
reference box is refined: ``ref = sigmoid(bbox_embed(out) + inverse_sigmoid(ref))`` (detached), from the **raw**
layer output.

Heads (official ``interactive_forward_prediction_heads``), per layer ``i``: ``hs_i = decoder_norm(out_i)`` (what the
official decoder returns) and the heads see ``decoder_norm(hs_i)`` — LayerNorm applied **twice** with the same
module, as in the released models. On that: ``iou_prediction_head`` (no sigmoid; values above 1 are normal),
``mask_embed · mask_features`` (stride-4 logits) and boxes ``sigmoid(bbox_embed(·) + inverse_sigmoid(ref_i))``,
which therefore differ from the decoder's internal ``ref_{i+1}``.

Self-attention between prompts (``exact_batching``):

- ``exact_batching=False`` (default): each prompt's 6 queries attend only to each other, so a prompt's result never
  depends on which other prompts share the call. This equals the official result of calling the model with that
  prompt alone (and the block-diagonal mask used in official training).
- ``exact_batching=True``: every query attends to every other query of the same image, as the official inference
  code does (``attn_mask=None``): batching then changes each prompt's result. Use it to reproduce official batched
  outputs (e.g. the automatic mask generator's 200-point batches).

Class heads (official "whole" / "part" switches, decoupled classification): ``class_embed`` (objects) and
``class_embed_part`` (parts), two ``[C, dim_proj]`` matrices applied to the same twice-normalised head input,
``emb = decoder_norm(hs_i) @ class_embed``; logits against a class-embedding table ``[N, dim_proj]`` (unit rows) by
SEEM's / the official ``compute_similarity`` rule ``exp(logit_scale) · (emb / (‖emb‖ + 1e-7)) @ tableᵀ``, computed
for every layer (deep supervision) when a table is given. They are sigmoid (focal-loss) logits over exactly the
given classes; "no object" is every class scoring low, not a background column (official criterion). The released
checkpoints store these heads untrained (``TEXT.ARCH: noencoder``, switches off); they never change the masks.

Parameter names equal the official ones after removing ``model.sem_seg_head.predictor.``, except the box MLP, which
is ``bbox_embed`` here (official ``_bbox_embed``, aliased as ``bbox_embed.{i}`` and ``decoder.bbox_embed.{i}``), and
``decoder.norm`` (an alias of ``decoder_norm``), which is not a separate module here. The official ``lang_mapper``
(``[dim_proj, C]``, text embedding → content query) is not built: only the object-query label-denoising path
(``prepare_for_dn``) reads it, and the interactive-only decoder never runs that path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.layers import MLP
from seem.models.pixel_decoders.ms_deform_attn import MSDeformAttn
from seem.models.semantic_sam_config import GranularityDecoderConfig
from seem.models.text.encoder import class_logits

__all__ = [
    "DecoderMemory",
    "GranularityDecoder",
    "GranularityDecoderOutput",
    "gen_sineembed_for_position",
    "inverse_sigmoid",
]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Official ``inverse_sigmoid``: ``log(x / (1 - x))``, ``x`` clamped to ``[0, 1]``, both terms to ``>= eps``."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def gen_sineembed_for_position(pos: Tensor, dim: int) -> Tensor:
    """Sine embedding of boxes ``[..., 4]`` (``cx, cy, w, h`` in [0, 1]) → ``[..., 4 * dim]`` in order (y, x, w, h)."""
    scale = 2 * math.pi
    dim_t = torch.arange(dim, dtype=torch.float32, device=pos.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / dim)

    def embed(v: Tensor) -> Tensor:
        p = (v * scale)[..., None] / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    if pos.shape[-1] != 4:
        raise ValueError(f"expected boxes [..., 4], got {tuple(pos.shape)}")
    return torch.cat((embed(pos[..., 1]), embed(pos[..., 0]), embed(pos[..., 2]), embed(pos[..., 3])), dim=-1)


@dataclass
class DecoderMemory:
    """The image side of the decoder, computed once per image batch.

    Attributes:
        memory: ``[B, S, C]`` encoder maps flattened in decoder order **s64, s32, s16, s8**.
        spatial_shapes: ``(H, W)`` of those 4 levels, same order.
        mask_features: ``[B, mask_dim, Hp/4, Wp/4]``.
        value_cache: per-layer projected MSDA values, filled lazily by ``GranularityDecoder`` when gradients are
            off (so repeated prompt batches on one image skip the value projections).
    """

    memory: Tensor
    spatial_shapes: list[tuple[int, int]]
    mask_features: Tensor
    value_cache: dict[int, Tensor] = field(default_factory=dict)

    @classmethod
    def from_multi_scale(cls, multi_scale: list[Tensor], mask_features: Tensor) -> DecoderMemory:
        """Build from the encoder's ``[s8, s16, s32, s64]`` maps (reversed here, as the official decoder does)."""
        maps = list(reversed(multi_scale))
        shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        memory = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        return cls(memory=memory, spatial_shapes=shapes, mask_features=mask_features)


@dataclass
class GranularityDecoderOutput:
    """Decoder outputs for ``Q`` prompts per image (``K = num_tokens``).

    Attributes:
        masks: ``[B, Q, K, Hp/4, Wp/4]`` final-layer mask logits at stride 4 of the padded canvas
            (None when masks were not requested).
        ious: ``[B, Q, K]`` final-layer IoU predictions (raw, no sigmoid).
        boxes: ``[B, Q, K, 4]`` final-layer boxes ``(cx, cy, w, h)`` normalised to the padded canvas.
        aux_ious, aux_boxes: the same heads for layers ``0 .. num_layers - 2``.
        aux_masks: masks of the earlier layers (only when ``all_layer_masks=True``).
        intermediates: with ``return_intermediates=True``: ``tgt_init`` ``[B, Q*K, C]``,
            ``refpoints_unsigmoid_init`` ``[B, Q*K, 4]``, ``layer_out_{i}`` / ``hs_{i}`` ``[B, Q*K, C]`` and
            ``ref_{i}`` ``[B, Q*K, 4]`` (``ref_0`` the input anchor, ``ref_{i+1}`` after layer ``i``).
        object_logits: ``[B, Q, K, No]`` final-layer object-class logits (sigmoid / focal logits over the ``No``
            classes of the object table), None when no object table was given.
        part_logits: ``[B, Q, K, Np]`` final-layer part-class logits, None when no part table was given.
        aux_object_logits, aux_part_logits: the same for layers ``0 .. num_layers - 2`` (empty when None).
    """

    masks: Tensor | None
    ious: Tensor
    boxes: Tensor
    aux_ious: list[Tensor] = field(default_factory=list)
    aux_boxes: list[Tensor] = field(default_factory=list)
    aux_masks: list[Tensor] = field(default_factory=list)
    intermediates: dict[str, Tensor] = field(default_factory=dict)
    object_logits: Tensor | None = None
    part_logits: Tensor | None = None
    aux_object_logits: list[Tensor] = field(default_factory=list)
    aux_part_logits: list[Tensor] = field(default_factory=list)

    @property
    def layer_object_logits(self) -> list[Tensor] | None:
        """Object logits of every layer, first to final (``granularity_layers(out, object_logits=...)``)."""
        return None if self.object_logits is None else [*self.aux_object_logits, self.object_logits]

    @property
    def layer_part_logits(self) -> list[Tensor] | None:
        """Part logits of every layer, first to final (``granularity_layers(out, part_logits=...)``)."""
        return None if self.part_logits is None else [*self.aux_part_logits, self.part_logits]


class DecoderLayer(nn.Module):
    """Official ``DeformableTransformerDecoderLayer`` (self-attn → norm2 → MSDA → norm1 → FFN → norm3)."""

    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: DecoderMemory,
        value: Tensor,
        group_size: int | None,
    ) -> Tensor:
        """``tgt``/``query_pos``: ``[B, Nq, C]``; ``reference_boxes``: ``[B, Nq, 4]``; ``value``: projected memory.

        ``group_size``: None → all queries of an image attend to each other; an int ``g`` → only within
        consecutive groups of ``g`` queries (one prompt's tokens).
        """
        b, nq, c = tgt.shape
        q = tgt + query_pos
        if group_size is None:
            sa = self.self_attn(q, q, tgt, need_weights=False)[0]
        else:
            g = group_size
            qg = q.reshape(b * nq // g, g, c)
            sa = self.self_attn(qg, qg, tgt.reshape(b * nq // g, g, c), need_weights=False)[0].reshape(b, nq, c)
        tgt = self.norm2(tgt + sa)
        ref = reference_boxes[:, :, None].expand(-1, -1, len(memory.spatial_shapes), -1)
        ca = self.cross_attn(tgt + query_pos, ref, None, memory.spatial_shapes, value=value)
        tgt = self.norm1(tgt + ca)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class _Decoder(nn.Module):
    """Holds ``layers`` and ``ref_point_head`` under the official ``decoder.`` key layout."""

    def __init__(self, cfg: GranularityDecoderConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.ffn_dim, cfg.num_levels, cfg.num_heads, cfg.num_points) for _ in range(cfg.num_layers)
        )
        self.ref_point_head = MLP(2 * d, d, d, 2)


class GranularityDecoder(nn.Module):
    """Prompt boxes → ``num_tokens`` granularity queries → masks, IoU scores and boxes (see the module docstring)."""

    def __init__(self, cfg: GranularityDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.num_tokens = cfg.num_tokens
        self.mask_tokens = nn.Embedding(cfg.num_tokens, d)
        self.pb_embedding = nn.Embedding(2, d)
        self.label_enc = nn.Embedding(2, d)
        self.decoder = _Decoder(cfg)
        self.decoder_norm = nn.LayerNorm(d)
        self.mask_embed = MLP(d, d, cfg.mask_dim, 3)
        self.iou_prediction_head = MLP(d, d, 1, 3)
        self.bbox_embed = MLP(d, d, 4, 3)
        last = self.bbox_embed.layers[-1]
        assert isinstance(last, nn.Linear)
        nn.init.constant_(last.weight, 0)
        nn.init.constant_(last.bias, 0)
        self._reset_decoder()
        # decoupled class heads (official "whole" and "part"), created last so the other inits are unchanged
        self.class_embed = nn.Parameter(torch.empty(d, cfg.dim_proj))
        self.class_embed_part = nn.Parameter(torch.empty(d, cfg.dim_proj))
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        nn.init.trunc_normal_(self.class_embed_part, std=0.02)

    def _reset_decoder(self) -> None:
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.decoder.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()

    def make_queries(self, boxes: Tensor, pb: Tensor) -> tuple[Tensor, Tensor]:
        """Prompt boxes → initial queries.

        Args:
            boxes: ``[B, Q, 4]`` ``(cx, cy, w, h)`` normalised to the padded canvas.
            pb: ``[B, Q]`` int64 point/box type index into ``pb_embedding`` (official inference: 0).

        Returns:
            ``(tgt [B, Q*K, C], refpoints_unsigmoid [B, Q*K, 4])``, prompt-major, token-minor.
        """
        k = self.num_tokens
        content = self.label_enc(torch.zeros_like(pb)) + self.pb_embedding(pb)  # [B, Q, C]
        tgt = content.repeat_interleave(k, 1) + self.mask_tokens.weight.repeat(boxes.shape[0], boxes.shape[1], 1)
        return tgt, inverse_sigmoid(boxes).repeat_interleave(k, 1)

    def classify(
        self,
        head_in: Tensor,
        object_embeddings: Tensor | None,
        part_embeddings: Tensor | None,
        logit_scale: Tensor | float = 0.0,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Class logits of head inputs (``decoder_norm(hs)``, ``[..., C]``) → ``([..., No] | None, [..., Np] | None)``.

        ``object_embeddings`` / ``part_embeddings``: unit-norm class tables ``[N, dim_proj]`` (None skips that head);
        ``logit_scale``: the log scale (``exp`` is applied; 0 → scale 1).
        """
        obj = part = None
        if object_embeddings is not None:
            obj = class_logits(head_in @ self.class_embed.to(head_in.dtype), object_embeddings.to(head_in), logit_scale)
        if part_embeddings is not None:
            emb = head_in @ self.class_embed_part.to(head_in.dtype)
            part = class_logits(emb, part_embeddings.to(head_in), logit_scale)
        return obj, part

    def _value(self, layer_id: int, layer: nn.Module, memory: DecoderMemory) -> Tensor:
        cached = memory.value_cache.get(layer_id)
        if cached is not None:
            return cached
        assert isinstance(layer, DecoderLayer)
        value = layer.cross_attn.project_value(memory.memory)
        if not torch.is_grad_enabled():
            memory.value_cache[layer_id] = value
        return value

    def forward(
        self,
        memory: DecoderMemory,
        boxes: Tensor,
        pb: Tensor,
        *,
        exact_batching: bool = False,
        compute_masks: bool = True,
        all_layer_masks: bool = False,
        return_intermediates: bool = False,
        object_embeddings: Tensor | None = None,
        part_embeddings: Tensor | None = None,
        logit_scale: Tensor | float = 0.0,
    ) -> GranularityDecoderOutput:
        """Decode ``Q`` prompt boxes per image.

        Args:
            memory: ``DecoderMemory`` of ``B`` images.
            boxes: ``[B, Q, 4]`` prompt boxes ``(cx, cy, w, h)`` normalised to the padded canvas (``Q >= 1``).
            pb: ``[B, Q]`` int64 point/box type (0 at official inference).
            exact_batching: let all prompts of an image attend to each other (official inference); default False
                isolates each prompt's tokens (see the module docstring).
            compute_masks: compute the final-layer mask logits.
            all_layer_masks: also compute masks for the earlier layers (``aux_masks``).
            return_intermediates: fill ``intermediates`` (for tests and debugging).
            object_embeddings, part_embeddings: class tables ``[N, dim_proj]`` (unit rows); when given, every
                layer's object / part logits are returned (see ``classify``).
            logit_scale: log scale of the class logits.
        """
        for name, table in (("object_embeddings", object_embeddings), ("part_embeddings", part_embeddings)):
            if table is not None and (table.dim() != 2 or table.shape[-1] != self.cfg.dim_proj or not len(table)):
                raise ValueError(
                    f"{name} must be a non-empty [N, {self.cfg.dim_proj}] class table, got {tuple(table.shape)}"
                )
        b, q, _ = boxes.shape
        k = self.num_tokens
        tgt, ref_unsig = self.make_queries(boxes, pb)
        inter: dict[str, Tensor] = {}
        if return_intermediates:
            inter["tgt_init"] = tgt
            inter["refpoints_unsigmoid_init"] = ref_unsig
        ref = ref_unsig.sigmoid()
        refs = [ref]
        outs = []
        group = None if exact_batching else k
        d = self.cfg.hidden_dim
        for i, layer in enumerate(self.decoder.layers):
            query_pos = self.decoder.ref_point_head(gen_sineembed_for_position(ref, d // 2))
            tgt = layer(tgt, query_pos, ref, memory, self._value(i, layer, memory), group)
            ref = (self.bbox_embed(tgt) + inverse_sigmoid(ref)).sigmoid().detach()
            refs.append(ref)
            outs.append(tgt)
        n = len(outs)
        ious, boxes_out, masks = [], [], []
        obj_logits: list[Tensor] = []
        part_logits: list[Tensor] = []
        for i, out in enumerate(outs):
            hs = self.decoder_norm(out)
            head_in = self.decoder_norm(hs)  # official double LayerNorm
            if return_intermediates:
                inter[f"layer_out_{i}"] = out
                inter[f"hs_{i}"] = hs
            ious.append(self.iou_prediction_head(head_in).view(b, q, k))
            boxes_out.append((self.bbox_embed(head_in) + inverse_sigmoid(refs[i])).sigmoid().view(b, q, k, 4))
            if (compute_masks and i == n - 1) or (all_layer_masks and i < n - 1):
                m = torch.einsum("bqc,bchw->bqhw", self.mask_embed(head_in), memory.mask_features)
                masks.append(m.view(b, q, k, *m.shape[-2:]))
            if object_embeddings is not None or part_embeddings is not None:
                lo, lp = self.classify(head_in, object_embeddings, part_embeddings, logit_scale)
                if lo is not None:
                    obj_logits.append(lo.view(b, q, k, -1))
                if lp is not None:
                    part_logits.append(lp.view(b, q, k, -1))
        if return_intermediates:
            for i, r in enumerate(refs):
                inter[f"ref_{i}"] = r
        final_masks = masks.pop() if compute_masks else None
        return GranularityDecoderOutput(
            masks=final_masks,
            ious=ious[-1],
            boxes=boxes_out[-1],
            aux_ious=ious[:-1],
            aux_boxes=boxes_out[:-1],
            aux_masks=masks,
            intermediates=inter,
            object_logits=obj_logits[-1] if obj_logits else None,
            part_logits=part_logits[-1] if part_logits else None,
            aux_object_logits=obj_logits[:-1],
            aux_part_logits=part_logits[:-1],
        )
