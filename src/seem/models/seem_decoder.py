"""The SEEM decoder: masked-attention transformer decoder with object, text, spatial and memory prompts.

One module serves both official flavours (``SEEMDecoderConfig.variant``):

* ``"v1"`` (``seem_focal{t,l}_v1.pt``): object queries; per referring-text call a copy of the object
  queries (grounding queries) plus the text tokens; per spatial prompt ``queries_per_prompt`` copies of
  object queries (spatial queries) plus the prompt tokens; memory slots masked by the previous round's
  mask. Object queries ignore every prompt.
* ``"demo"`` (what the official Gradio demo runs, with the v0 checkpoints): object queries only; text,
  stroke and referring-image tokens join the self-attention and condition the object queries directly.

The flavours differ only in their bookkeeping (``seem_attention.V1_RULES`` / ``DEMO_RULES``), in how prompt
pixels are drawn and pooled (``visual_sampler``) and in how the output is selected; the layers, heads and
the layer loop below are shared.

Weights: the parameter names equal the official ones after removing ``sem_seg_head.predictor.`` from a
SEEM checkpoint key; the text encoder (``sem_seg_head.predictor.lang_encoder.*``) is not part of this
module, and its ``logit_scale`` is passed in (``DecoderInputs.logit_scale``).

Each layer ``i`` (attending to level ``i % 3``; levels are strides 32, 16, 8):
cross-attention (queries and memories → image, masked by the previous prediction) → self-attention over
all groups (masked by the flavour's rules) → FFN → prediction heads (whose masks give the next
cross-attention mask). Post-norm layers (``pre_norm=False``) in every released model.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SEEMDecoderConfig
from .layers import MLP, PositionEmbeddingSine
from .seem_attention import (
    MEMORIES_SPATIAL,
    QUERIES_GROUNDING,
    QUERIES_OBJECT,
    QUERIES_SPATIAL,
    REBUILT_EACH_LAYER,
    TOKENS_GROUNDING,
    TOKENS_SPATIAL,
    TOKENS_VISUAL,
    AttentionRules,
    GroupLayout,
    cross_attention_mask,
    default_memory_slots,
    default_spatial_query_indices,
    logits_to_blocked,
    mask_logits_to_blocked,
    rules_for,
)
from .seem_types import (
    DecoderDraws,
    DecoderInputs,
    DecoderOutput,
    DemoSelection,
    GroundingSelection,
    GroupPrediction,
    ImageFeatures,
    LayerPrediction,
    ReferenceTokens,
    SpatialPrompts,
    SpatialSelection,
    mask_logits_from_embeddings,
)
from .visual_sampler import (
    SampledPixels,
    level_prompt_tokens,
    pooled_prompt_embeddings,
    sample_prompt_pixels,
)

__all__ = [
    "AttentionWeights",
    "CrossAttentionLayer",
    "FFNLayer",
    "LayerWeights",
    "MultiheadAttention",
    "Projection",
    "SEEMDecoder",
    "SelfAttentionLayer",
    "normalize",
    "vl_similarity",
]

Trace = dict[str, Any]


def normalize(v: Tensor) -> Tensor:
    """``v / (‖v‖ + 1e-7)`` along the last dim (the official normalisation of captions and text)."""
    return v / (v.norm(dim=-1, keepdim=True) + 1e-7)


def vl_similarity(visual: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Official ``vl_similarity``: ``min(exp(logit_scale), 100) · visual @ text.T`` (inputs normalised)."""
    return logit_scale.exp().clamp(max=100) * (visual @ text.t())


class Projection(NamedTuple):
    """Weight ``[out, in]`` and bias ``[out]`` of one linear projection (``F.linear(x, weight, bias)``).

    ``packed``: optionally the same weight re-laid out once for oneDNN (``pack_projection``); ``linear`` then
    skips the layout conversion that a plain bfloat16 matmul repeats on every call (same result bit for bit).
    """

    weight: Tensor
    bias: Tensor
    packed: Tensor | None = None


def _can_pack(weight: Tensor) -> bool:
    """Whether ``weight`` can be pre-packed for oneDNN: a bfloat16 CPU tensor with oneDNN's bfloat16 kernels."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


def pack_projection(p: Projection) -> Projection:
    """``p`` with its weight pre-packed for oneDNN when that is possible (bfloat16 on a CPU with oneDNN's
    bfloat16 kernels), else ``p`` unchanged. The packed copy costs as much memory as the weight."""
    if not _can_pack(p.weight):
        return p
    return Projection(p.weight, p.bias, torch.ops.mkldnn._reorder_linear_weight(p.weight, 16))


def linear(x: Tensor, p: Projection, relu: bool = False) -> Tensor:
    """``F.linear(x, p.weight, p.bias)`` (then ReLU when ``relu``) on ``x [..., in]``; through the packed weight
    when ``p`` has one and ``x`` has the weight's dtype, or is float32 under an autocast to that dtype (cast as
    autocast would): equal to ``F.linear`` bit for bit, the same oneDNN kernel without the re-layout."""
    if p.packed is not None and x.device.type == "cpu":
        if x.dtype == torch.float32 and _autocast_dtype(x.device) == p.weight.dtype:
            x = x.to(p.weight.dtype)
        if x.dtype == p.weight.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, p.packed, p.bias, "relu" if relu else "none", [], "")
    y = F.linear(x, p.weight, p.bias)
    return F.relu(y) if relu else y


class AttentionWeights(NamedTuple):
    """The four projections of a ``MultiheadAttention``: query, key, value (the thirds of ``in_proj_*``) and
    ``out_proj``."""

    q: Projection
    k: Projection
    v: Projection
    out: Projection


class LayerWeights(NamedTuple):
    """The per-call weights of one decoder layer, in the dtype the layer's matmuls run in.

    ``cross``: the cross-attention's query and output projections (its keys / values are per-image cached);
    ``self_attn``: the self-attention's four projections; ``ffn``: ``linear1``, ``linear2``. Without autocast
    these are (views of) the parameters; under low-precision autocast, copies in the autocast dtype made once
    (``SEEMDecoder`` keeps them until a weight changes), so autocast does not cast them again on every call.
    """

    cross: AttentionWeights
    self_attn: AttentionWeights
    ffn: tuple[Projection, Projection]


class LowPrecisionWeights(NamedTuple):
    """The decoder's per-call matmul weights in a low-precision autocast dtype, cast (and, on a CPU with
    oneDNN's bfloat16 kernels, packed) once: ``layers`` per decoder layer, ``mask_embed`` the mask-embedding
    MLP's linear layers (used by the attention-mask-only steps of ``final_only``)."""

    layers: list[LayerWeights]
    mask_embed: list[Projection]


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), sequence-first.

    ``forward(query [L, B, C], key [S, B, C], value [S, B, C], blocked: bool [B, L, S] | None) -> [L, B, C]``.
    Blocked entries get ``-inf`` before the softmax, and the softmax is followed by ``nan_to_num``, so a fully
    blocked row attends to nothing and outputs ``out_proj.bias`` (the official SEEM ``MultiheadAttention``
    behaviour; the cross-attention never has such rows because the caller unblocks them first, which makes
    this equal to ``torch.nn.MultiheadAttention`` there).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        blocked: Tensor | None = None,
        weights: AttentionWeights | None = None,
    ) -> Tensor:
        """``weights``: the projections to use instead of the parameters (``weights()`` or a cast copy)."""
        k, v = self.project_key_value(key, value, weights)
        return self.attend(query, k, v, blocked, weights)

    def weights(self) -> AttentionWeights:
        """The projections as views of the parameters."""
        c = self.embed_dim
        w_q, w_k, w_v = self.in_proj_weight.split(c)
        b_q, b_k, b_v = self.in_proj_bias.split(c)
        out = Projection(self.out_proj.weight, self.out_proj.bias)
        return AttentionWeights(Projection(w_q, b_q), Projection(w_k, b_k), Projection(w_v, b_v), out)

    def project_key_value(
        self, key: Tensor, value: Tensor, weights: AttentionWeights | None = None
    ) -> tuple[Tensor, Tensor]:
        """Key / value projections, ``[S, B, C]`` each → contiguous ``[B, H, S, d]`` each.

        Inputs are made contiguous first: ``F.linear`` on a permuted 3-D input falls back to a batched matmul
        against a broadcast weight, which materialises ``S`` copies of the weight under bfloat16 autocast.
        """
        c, h = self.embed_dim, self.num_heads
        if weights is None:
            weights = self.weights()
        ls, b, _ = key.shape
        d = c // h
        k = linear(key.contiguous(), weights.k)
        v = linear(value.contiguous(), weights.v)
        k = k.reshape(ls, b, h, d).permute(1, 2, 0, 3).contiguous()
        v = v.reshape(ls, b, h, d).permute(1, 2, 0, 3).contiguous()
        return k, v

    def attend(
        self,
        query: Tensor,
        k: Tensor,
        v: Tensor,
        blocked: Tensor | None = None,
        weights: AttentionWeights | None = None,
        sparse: bool = False,
    ) -> Tensor:
        """Attention of ``query [L, B, C]`` to projected ``k, v [B, H, S, d]`` (``project_key_value``).

        ``sparse``: rows that may attend to few keys attend to those keys only (``sparse_masked_attention``;
        equal up to rounding, used by the decoder's fast path)."""
        c, h = self.embed_dim, self.num_heads
        if weights is None:
            weights = self.weights()
        lq, b, _ = query.shape
        d = c // h
        q = linear(query.contiguous(), weights.q) * (d**-0.5)
        q = q.reshape(lq, b, h, d).permute(1, 2, 0, 3)  # [B, H, L, d]
        if sparse and blocked is not None:
            out = sparse_masked_attention(q, k, v, blocked)
        else:
            out = masked_attention(q, k, v, blocked)
        return linear(out.permute(2, 0, 1, 3).reshape(lq, b, c), weights.out)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, blocked: Tensor | None) -> Tensor:
    """``softmax(q kᵀ, blocked → -inf) v`` for ``q [B, H, L, d]``, ``k, v [B, H, S, d]``, ``blocked`` bool
    ``[B, L, S]`` (True = may not attend) → ``[B, H, L, d]``. A fully blocked row outputs zeros (the softmax is
    followed by ``nan_to_num``). ``q`` carries the ``d**-0.5`` scale already."""
    scores = q @ k.transpose(-2, -1).to(q.dtype)
    if blocked is not None:
        scores.masked_fill_(blocked[:, None], float("-inf"))  # scores is a fresh tensor
    attn = scores.softmax(dim=-1)
    # in place where no autograd graph needs the softmax output
    attn = attn.nan_to_num() if attn.requires_grad else attn.nan_to_num_()
    return attn.to(v.dtype) @ v


SPARSE_ROW_FRACTION = 0.25  # rows free to attend to at most this fraction of the keys take the gathered path
# Below this much work (rows × key elements B·H·S·d) gathering costs more than it saves. Measured on this CPU: SEEM
# Focal-T's stride-8 level (3 rows × 2 M) and its 35 rows with memories at stride 16 (35 × 0.5 M) gain; one click's
# 3 rows at stride 16 (1.5 M) and the 128-wide default model's 6 rows at stride 8 (3 M) do not.
SPARSE_MIN_WORK = 1 << 22


def sparse_masked_attention(
    q: Tensor, k: Tensor, v: Tensor, blocked: Tensor, min_work: int = SPARSE_MIN_WORK
) -> Tensor:
    """``masked_attention`` computed over fewer keys: the rows whose free keys are at most
    ``SPARSE_ROW_FRACTION`` of ``S`` (in every batch item) attend to the union of their free keys only,
    gathered from ``k`` / ``v``; the other rows attend to all keys. Mathematically the same (a blocked key adds
    an exact zero to the softmax and to the weighted sum), equal up to the order of the sums. Plain
    ``masked_attention`` when the call is small (rows × ``k.numel()`` below ``min_work``) or when gathering would
    not at least halve the row × key pairs computed.

    Masked-attention rows are usually like that: the official attention mask leaves a query only its
    predicted region (a few per cent of the image for a click; SEEM's 32 memory rows all share the previous
    mask's region), so this reads a small part of the per-image keys and values instead of all of them.
    """
    n_rows, n_keys = blocked.shape[-2:]
    if n_rows * k.numel() < min_work:
        return masked_attention(q, k, v, blocked)
    free = ~blocked  # [B, L, S]
    few = (free.sum(-1) <= SPARSE_ROW_FRACTION * n_keys).all(0)  # [L]
    n_few = int(few.sum())
    if n_few == 0:
        return masked_attention(q, k, v, blocked)
    rows = few.nonzero().squeeze(1)
    keys = free.index_select(1, rows).any(1).any(0).nonzero().squeeze(1)  # union of the rows' free keys
    if n_few * keys.numel() + (n_rows - n_few) * n_keys > 0.5 * n_rows * n_keys:
        return masked_attention(q, k, v, blocked)
    part = masked_attention(
        q.index_select(2, rows),
        k.index_select(2, keys),
        v.index_select(2, keys),
        blocked.index_select(1, rows).index_select(2, keys),
    )
    if rows.numel() == few.numel():
        return part
    rest = (~few).nonzero().squeeze(1)
    dense = masked_attention(q.index_select(2, rest), k, v, blocked.index_select(1, rest))
    out = dense.new_empty((*dense.shape[:2], few.numel(), dense.shape[-1]))
    out.index_copy_(2, rows, part.to(dense.dtype))
    return out.index_copy_(2, rest, dense)


class SelfAttentionLayer(nn.Module):
    """Official ``SelfAttentionLayer``: ``norm(x + attn(q=k=x+pos, v=x))`` (post-norm) or pre-norm."""

    def __init__(self, d_model: int, nhead: int, pre_norm: bool = False) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(
        self,
        x: Tensor,
        blocked: Tensor | None,
        pos: Tensor,
        weights: AttentionWeights | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """``x, pos [L, B, C]``, ``blocked`` bool ``[B, L, L]`` → ``[L, B, C]``; with ``rows`` (long ``[K]``) only
        those rows' outputs, ``[K, B, C]`` (every row still serves as a key and value)."""
        if self.pre_norm:
            y = self.norm(x)
            if rows is None:
                return x + self.self_attn(y + pos, y + pos, y, blocked, weights)
            yp = y + pos
            sel = None if blocked is None else blocked.index_select(1, rows)
            return x.index_select(0, rows) + self.self_attn(yp.index_select(0, rows), yp, y, sel, weights)
        if rows is None:
            return self.norm(x + self.self_attn(x + pos, x + pos, x, blocked, weights))
        xp = x + pos
        sel = None if blocked is None else blocked.index_select(1, rows)
        return self.norm(x.index_select(0, rows) + self.self_attn(xp.index_select(0, rows), xp, x, sel, weights))


class CrossAttentionLayer(nn.Module):
    """Official ``CrossAttentionLayer``: ``norm(x + attn(q=x+query_pos, k=mem+pos, v=mem))`` (post-norm)."""

    def __init__(self, d_model: int, nhead: int, pre_norm: bool = False) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, memory: Tensor, blocked: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        k, v = self.project_memory(memory, pos)
        return self.forward_projected(x, k, v, blocked, query_pos)

    def project_memory(self, memory: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Projected keys (of ``memory + pos``) and values (of ``memory``), ``[B, H, S, d]`` each.

        They depend only on the image, so the decoder computes them once per image and layer.
        """
        return self.multihead_attn.project_key_value(memory + pos, memory)

    def forward_projected(
        self,
        x: Tensor,
        k: Tensor,
        v: Tensor,
        blocked: Tensor,
        query_pos: Tensor,
        weights: AttentionWeights | None = None,
        sparse: bool = False,
    ) -> Tensor:
        """``forward`` with the keys / values of ``project_memory`` (``weights``, ``sparse``: see
        ``MultiheadAttention.attend``)."""
        if self.pre_norm:
            y = self.norm(x)
            return x + self.multihead_attn.attend(y + query_pos, k, v, blocked, weights, sparse)
        return self.norm(x + self.multihead_attn.attend(x + query_pos, k, v, blocked, weights, sparse))


class FFNLayer(nn.Module):
    """Official ``FFNLayer``: ``norm(x + linear2(relu(linear1(x))))`` (post-norm) or the pre-norm form."""

    def __init__(self, d_model: int, dim_feedforward: int, pre_norm: bool = False) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, weights: tuple[Projection, Projection] | None = None) -> Tensor:
        """``weights``: ``(linear1, linear2)`` projections to use instead of the parameters."""
        if weights is None:
            if self.pre_norm:
                return x + self.linear2(F.relu(self.linear1(self.norm(x))))
            return self.norm(x + self.linear2(F.relu(self.linear1(x))))
        w1, w2 = weights
        if self.pre_norm:
            return x + linear(linear(self.norm(x), w1, relu=True), w2)
        return self.norm(x + linear(linear(x, w1, relu=True), w2))


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None when autocast is off there."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _version(t: Tensor) -> int:
    """In-place version counter of ``t`` (-1 for inference tensors, which have none)."""
    try:
        return int(t._version)
    except RuntimeError:
        return -1


_CACHE_TOKENS = itertools.count()


class _ImageCache:
    """Prompt-independent tensors of one image for one decoder (internal; lives in ``ImageFeatures.decoder_cache``).

    Built from the features and the decoder weights named in ``SEEMDecoder._cache_signature``; the per-layer
    keys / values and the resized mask features are computed on first use.

    Attributes:
        sizes: level sizes ``(h_l, w_l)`` (strides 32, 16, 8).
        level_maps: ``multi_scale[l] + level_embed[l]``, ``[B, C, h_l, w_l]``.
        src / pos: the level maps and their sine position embeddings as contiguous ``[h_l·w_l, B, C]``.
        feature_dtype: dtype of the level maps and prompt tokens (the decoder's weight dtype without autocast).
        head_dtype: dtype of the prediction heads and mask logits (at least float32 under autocast, else the
            decoder's weight dtype).
        mask_features: ``ImageFeatures.mask_features`` in ``head_dtype``, ``[B, mask_dim, H4, W4]``.
    """

    def __init__(self, dec: SEEMDecoder, feats: ImageFeatures, signature: tuple[Any, ...]) -> None:
        self.decoder_signature = signature
        self.sources = (*feats.multi_scale, feats.mask_features)
        self.source_versions = tuple(_version(t) for t in self.sources)
        self.autocast = _autocast_dtype(feats.mask_features.device)
        self.sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in feats.multi_scale]
        mf = feats.mask_features
        weights = dec.decoder_norm.weight.dtype
        if self.autocast is None:
            # the decoder's own precision (e.g. features encoded under autocast, decoded in float32)
            self.feature_dtype = self.head_dtype = weights
        else:
            self.feature_dtype = mf.dtype
            self.head_dtype = torch.promote_types(weights, torch.float32)
        ms = [x.to(self.feature_dtype) for x in feats.multi_scale]
        self.level_maps = dec._level_maps(ms)
        self.src = [x.flatten(2).permute(2, 0, 1).contiguous() for x in self.level_maps]
        self.pos = [dec.pe_layer(x).flatten(2).permute(2, 0, 1).contiguous() for x in ms]
        self.mask_features = mf.to(self.head_dtype)
        self._kv: dict[int, tuple[Tensor, Tensor]] = {}
        self._mf_levels: dict[tuple[int, torch.dtype], Tensor] = {}
        self._mf_packed: dict[tuple[int, torch.dtype], Projection | None] = {}
        self._sampling_maps: dict[int, Tensor] = {}

    def matches(self, feats: ImageFeatures, signature: tuple[Any, ...]) -> bool:
        sources = (*feats.multi_scale, feats.mask_features)
        return (
            signature == self.decoder_signature
            and len(sources) == len(self.sources)
            and all(a is b for a, b in zip(sources, self.sources, strict=True))
            and tuple(_version(t) for t in sources) == self.source_versions
        )

    def key_value(self, dec: SEEMDecoder, layer: int) -> tuple[Tensor, Tensor]:
        """Projected cross-attention keys and values of ``dec``'s layer ``layer``: ``[B, H, h·w, d]`` each.

        (The decoder is passed in rather than stored, so the cache holds tensors only.)
        """
        if layer not in self._kv:
            lvl = layer % len(self.sizes)
            self._kv[layer] = dec.cross_attention_layer(layer).project_memory(self.src[lvl], self.pos[lvl])
        return self._kv[layer]

    def mask_features_at(self, level: int, dtype: torch.dtype | None = None) -> Tensor:
        """``mask_features`` bilinearly resized (``align_corners=False``) to level ``level``'s size, in ``dtype``
        (default ``head_dtype``; the resize itself always runs in ``head_dtype``).

        Resizing is linear per channel, so ``einsum(e, resize(F)) == resize(einsum(e, F))`` up to rounding: the
        attention masks of the fast path are taken from these maps.
        """
        dtype = dtype or self.head_dtype
        if (level, dtype) not in self._mf_levels:
            if (level, self.head_dtype) not in self._mf_levels:
                with torch.autocast(self.mask_features.device.type, enabled=False):
                    self._mf_levels[level, self.head_dtype] = F.interpolate(
                        self.mask_features, size=self.sizes[level], mode="bilinear", align_corners=False
                    )
            self._mf_levels[level, dtype] = self._mf_levels[level, self.head_dtype].to(dtype)
        return self._mf_levels[level, dtype]

    def sampling_map(self, level: int) -> Tensor:
        """``level_maps[level]`` as prompt points are sampled from it: at least float32 (``sample_features``
        samples half-precision maps in float32; converted once per image here instead of on every prompt)."""
        if level not in self._sampling_maps:
            m = self.level_maps[level]
            self._sampling_maps[level] = m.float() if m.dtype in (torch.float16, torch.bfloat16) else m
        return self._sampling_maps[level]

    def mask_projection_at(self, level: int, dtype: torch.dtype) -> Projection | None:
        """``mask_features_at(level, dtype)`` of a one-image batch as a packed linear projection (weight
        ``[h·w, mask_dim]``, no bias) so that ``linear(embeddings [1, Q, mask_dim], p)`` gives the flattened
        attention-mask logits ``[1, Q, h·w]`` bit for bit as the batched matmul does, without oneDNN re-laying
        the features out on every call; None when packing is not possible (see ``pack_projection``)."""
        if (level, dtype) not in self._mf_packed:
            mf = self.mask_features_at(level, dtype)
            proj = None
            if mf.shape[0] == 1 and _can_pack(mf):
                weight = mf[0].flatten(1).t().contiguous()
                proj = pack_projection(Projection(weight, torch.zeros(weight.shape[0], dtype=dtype)))
            self._mf_packed[level, dtype] = proj
        return self._mf_packed[level, dtype]

    def prepare(self, dec: SEEMDecoder) -> None:
        """Compute every lazily built tensor now."""
        for i in range(dec.cfg.num_layers):
            self.key_value(dec, i)
        for lvl in range(len(self.sizes)):
            self.mask_features_at(lvl)
            self.sampling_map(lvl)
            if self.autocast is not None:
                self.mask_features_at(lvl, self.autocast)
                self.mask_projection_at(lvl, self.autocast)


class _Heads:
    """Prediction-head outputs for the predicted rows of one prediction step (internal)."""

    def __init__(
        self,
        captions: Tensor | None,
        maskembs: Tensor,
        masks: Tensor | None,
        logits: Tensor | None,
        blocked: Tensor | None,
        mask_features: Tensor,
    ) -> None:
        self.captions = captions  # [B, Q, D]; None for an attention-mask-only step (``final_only``)
        self.maskembs = maskembs  # [B, Q, mask_dim]
        self.masks = masks  # [B, Q, H4, W4] (exact path) or None (computed lazily per group)
        self.logits = logits  # [B, Q, K+1] or None
        self.blocked = blocked  # [B, Q, h*w] for the next cross-attention, or None after the last layer
        self.mask_features = mask_features  # [B, mask_dim, H4, W4]

    def group(self, rows: slice) -> GroupPrediction:
        assert self.captions is not None, "an attention-mask-only prediction step has no outputs"
        return GroupPrediction(
            captions=self.captions[:, rows],
            mask_embeddings=self.maskembs[:, rows],
            mask_logits=None if self.masks is None else self.masks[:, rows],
            class_logits=None if self.logits is None else self.logits[:, rows],
            mask_features=self.mask_features,
        )


class SEEMDecoder(nn.Module):
    """SEEM masked-attention decoder (official ``SEEMDecoder`` of ``seem_v1.py`` / ``seem_demo.py``).

    Args:
        cfg: ``SEEMDecoderConfig`` (``variant`` picks the flavour).

    ``forward(inputs: DecoderInputs, trace: dict | None = None) -> DecoderOutput``. ``trace``, when a dict,
    is filled with intermediates under the official fixture names (``init/query``, ``L{j}/head_input``,
    ``layer{i}/cross_attn_mask``, ``layer{i}/self_in``, ``spatial/points/{role}``, …) in the official
    layouts (sequence-first ``[rows, B, C]`` for decoder states, ``[B, rows, …]`` for head outputs, one
    head of the attention masks); when None nothing is recorded. With a trace the exact path runs unless
    ``DecoderInputs.exact`` is False (then the per-prediction stride-4 ``L{j}/masks`` are not recorded and the
    head entries omit memory rows).

    Speed (``DecoderInputs.exact`` / ``object_queries``): per image, the keys and values of every layer's
    cross-attention and ``mask_features`` at the three level sizes are computed once and kept in
    ``ImageFeatures.decoder_cache`` (calls without gradients only); per call, the fast path takes the
    attention masks from those resized maps (``einsum(e, resize(F))`` instead of ``resize(einsum(e, F))``),
    skips the heads of memory rows, computes stride-4 logits only where they are read (the selected masks,
    or ``GroupPrediction.mask_logits`` on access), and in v1 skips the object queries when the prompts do not
    need them. Under ``torch.autocast`` the prediction heads, mask logits, attention-mask thresholds and
    prompt-point sampling run in float32; the attention and FFN matmuls follow autocast. Under a bfloat16 /
    float16 autocast without gradients, the layers' attention and FFN weights are cast once and the copies kept
    on the decoder (``_low_precision``, about half the float32 size of those weights: 76 MB for Focal-T) until a
    weight changes; results are identical to autocast casting them on every call. Copies and pickles of the
    decoder leave them out.
    """

    num_levels = 3

    def __init__(self, cfg: SEEMDecoderConfig) -> None:
        super().__init__()
        if cfg.num_levels != self.num_levels:
            raise ValueError(f"the SEEM decoder always uses 3 feature levels, got num_levels={cfg.num_levels}")
        if len(cfg.max_spatial_len) < self.num_levels + 1:
            raise ValueError(f"max_spatial_len needs {self.num_levels + 1} entries, got {cfg.max_spatial_len}")
        self.cfg = cfg
        self.rules: AttentionRules = rules_for(cfg.variant)
        c = cfg.hidden_dim
        self.pe_layer = PositionEmbeddingSine(c // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(c, cfg.num_heads, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(c, cfg.num_heads, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(c, cfg.ffn_dim, cfg.pre_norm) for _ in range(cfg.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(c)
        self.query_feat = nn.Embedding(cfg.num_queries, c)
        self.query_embed = nn.Embedding(cfg.num_queries, c)
        self.level_embed = nn.Embedding(self.num_levels, c)
        self.mask_embed = MLP(c, c, cfg.mask_dim, 3)
        self.class_embed = nn.Parameter(torch.empty(c, cfg.dim_proj))
        self.mask_sptial_embed = nn.ParameterList(nn.Parameter(torch.empty(c, c)) for _ in range(self.num_levels))
        self.spatial_embed = nn.Embedding(cfg.spatial_memories, c)
        self.spatial_featured = nn.Embedding(cfg.spatial_memories, c)
        self.pn_indicator = nn.Embedding(2, c)
        self._reset_parameters()
        self._cache_token = next(_CACHE_TOKENS)
        # (dtype, device) -> (weight signature, weights in that dtype); see _low_precision_weights
        self._low_precision: dict[tuple[torch.dtype, torch.device], tuple[tuple[Any, ...], LowPrecisionWeights]] = {}

    def _reset_parameters(self) -> None:
        for layers in (
            self.transformer_self_attention_layers,
            self.transformer_cross_attention_layers,
            self.transformer_ffn_layers,
        ):
            for p in layers.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        for p in self.mask_sptial_embed:
            nn.init.trunc_normal_(p, std=0.02)

    # ------------------------------------------------------------------------------------------------
    # input checks

    def _check_features(self, feats: ImageFeatures) -> None:
        cfg = self.cfg
        if not isinstance(feats, ImageFeatures):
            raise TypeError(f"features must be an ImageFeatures, got {type(feats).__name__}")
        if len(feats.multi_scale) != self.num_levels:
            raise ValueError(f"multi_scale must hold 3 maps (strides 32, 16, 8), got {len(feats.multi_scale)}")
        mf = feats.mask_features
        if not isinstance(mf, Tensor) or mf.dim() != 4 or not mf.is_floating_point():
            raise TypeError("mask_features must be a floating-point [B, mask_dim, H4, W4] tensor")
        if mf.shape[1] != cfg.mask_dim:
            raise ValueError(f"mask_features has {mf.shape[1]} channels, expected mask_dim={cfg.mask_dim}")
        b = mf.shape[0]
        for i, x in enumerate(feats.multi_scale):
            if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
                raise TypeError(f"multi_scale[{i}] must be a floating-point [B, C, h, w] tensor")
            if x.shape[0] != b or x.shape[1] != cfg.hidden_dim:
                raise ValueError(
                    f"multi_scale[{i}] has shape {tuple(x.shape)}; expected [B={b}, C={cfg.hidden_dim}, h, w]"
                )
        hp, wp = feats.padded_size
        if (hp, wp) != (4 * mf.shape[2], 4 * mf.shape[3]):
            raise ValueError(f"padded_size {(hp, wp)} does not match mask_features {tuple(mf.shape[2:])} at stride 4")

    def _check_inputs(self, inputs: DecoderInputs) -> None:
        cfg = self.cfg
        if not isinstance(inputs, DecoderInputs):
            raise TypeError(f"inputs must be a DecoderInputs, got {type(inputs).__name__}")
        feats = inputs.features
        self._check_features(feats)
        b = feats.mask_features.shape[0]
        if inputs.class_embeddings is not None and inputs.logit_scale is None:
            raise ValueError("class_embeddings need logit_scale (the text encoder's logit_scale parameter)")
        if inputs.class_embeddings is not None:
            ce = inputs.class_embeddings
            if ce.dim() != 2 or ce.shape[1] != cfg.dim_proj or not ce.is_floating_point():
                raise ValueError(
                    f"class_embeddings must be a float [K + 1, {cfg.dim_proj}] tensor, got {tuple(ce.shape)}"
                )
        if inputs.logit_scale is not None and inputs.logit_scale.numel() != 1:
            raise ValueError("logit_scale must be a scalar tensor")
        layers = inputs.layers
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int)):
            raise TypeError(f"layers must be an int or None, got {type(layers).__name__}")
        if layers is not None and not 0 <= layers <= cfg.num_layers:
            raise ValueError(f"layers must lie in [0, {cfg.num_layers}] (the decoder's layers), got {layers}")
        has_prompt = any(p is not None for p in (inputs.spatial, inputs.grounding, inputs.reference, inputs.prev_mask))
        if has_prompt and b != 1:
            raise ValueError(f"prompts describe one image: a prompted call needs batch size 1, got {b}")
        if inputs.spatial is not None:
            self._check_spatial(inputs.spatial, feats.padded_size)
        if inputs.grounding is not None:
            g = inputs.grounding
            if g.tokens.dim() != 2 or g.tokens.shape[0] == 0 or g.tokens.shape[1] != cfg.hidden_dim:
                raise ValueError(
                    f"grounding tokens must be [T >= 1, {cfg.hidden_dim}] (non-padding token embeddings), "
                    f"got {tuple(g.tokens.shape)}"
                )
            if not g.tokens.is_floating_point():
                raise TypeError(f"grounding tokens must be floating point, got {g.tokens.dtype}")
            pe = g.phrase_embeddings
            if pe is not None and (pe.dim() != 2 or pe.shape[0] == 0 or pe.shape[1] != cfg.dim_proj):
                raise ValueError(f"phrase_embeddings must be [P >= 1, {cfg.dim_proj}], got {tuple(pe.shape)}")
            if pe is not None and inputs.logit_scale is None:
                raise ValueError("grounding selection needs logit_scale")
        if inputs.reference is not None:
            self._check_reference(inputs.reference)
        for name in ("object_queries", "exact"):
            flag = getattr(inputs, name)
            if flag is not None and not isinstance(flag, bool):
                raise TypeError(f"DecoderInputs.{name} must be True, False or None, got {flag!r}")
        if inputs.object_queries is False:
            if cfg.variant != "v1":
                raise ValueError("object_queries=False: the demo decoder's object queries carry all its outputs")
            if not any(p is not None for p in (inputs.spatial, inputs.grounding, inputs.reference)):
                raise ValueError("object_queries=False without any prompt leaves nothing to decode")
        n = self._num_prompts(inputs)
        if cfg.variant == "v1":
            if inputs.spatial is not None and inputs.reference is not None:
                raise ValueError("v1: reference tokens replace the spatial prompts; give one or the other")
            if inputs.prev_mask is not None:
                if n == 0:
                    raise ValueError("prev_mask (memory prompt) needs spatial prompts or reference tokens")
                pm = inputs.prev_mask
                h4, w4 = feats.mask_features.shape[2:]
                if pm.dim() != 3 or tuple(pm.shape) != (n, h4, w4) or not pm.is_floating_point():
                    raise ValueError(
                        f"prev_mask must be float logits [n_prompts={n}, H4={h4}, W4={w4}], got "
                        f"{pm.dtype} {tuple(pm.shape)}"
                    )
        else:
            if inputs.prev_mask is not None:
                raise ValueError("the demo decoder has no memory prompts; prev_mask is not supported")
            if inputs.spatial is not None and inputs.spatial.pos_masks.shape[0] != 1:
                raise ValueError("the demo decoder takes exactly one spatial prompt (one stroke)")
            if inputs.reference is not None and inputs.reference.pooled_pos.shape[0] != 1:
                raise ValueError("the demo decoder takes exactly one reference prompt")

    def _check_spatial(self, sp: SpatialPrompts, padded: tuple[int, int]) -> None:
        if not isinstance(sp, SpatialPrompts):
            raise TypeError(f"spatial must be a SpatialPrompts, got {type(sp).__name__}")
        for name, m in (("pos_masks", sp.pos_masks), ("neg_masks", sp.neg_masks)):
            if m is None:
                continue
            if not isinstance(m, Tensor) or m.dtype != torch.bool:
                raise TypeError(f"spatial.{name} must be a bool tensor, got {getattr(m, 'dtype', type(m))}")
            if m.dim() != 3 or tuple(m.shape[1:]) != tuple(padded):
                raise ValueError(
                    f"spatial.{name} must be [n_prompts, Hp, Wp] at the padded size {tuple(padded)}, "
                    f"got {tuple(m.shape)}"
                )
        if sp.pos_masks.shape[0] == 0:
            raise ValueError("spatial prompts: the prompt stack is empty (n_prompts = 0)")
        if sp.neg_masks is not None and sp.neg_masks.shape[0] != sp.pos_masks.shape[0]:
            raise ValueError(
                f"spatial.neg_masks has {sp.neg_masks.shape[0]} prompts, pos_masks {sp.pos_masks.shape[0]}"
            )

    def _check_reference(self, ref: ReferenceTokens) -> None:
        c = self.cfg.hidden_dim
        if not isinstance(ref, ReferenceTokens):
            raise TypeError(f"reference must be a ReferenceTokens, got {type(ref).__name__}")
        if ref.pooled_pos.dim() != 2 or ref.pooled_pos.shape[0] == 0 or ref.pooled_pos.shape[1] != self.cfg.mask_dim:
            raise ValueError(f"reference.pooled_pos must be [n >= 1, {self.cfg.mask_dim}]")
        if len(ref.level_tokens) != self.num_levels or len(ref.level_prompt_index) != self.num_levels:
            raise ValueError("reference tokens must hold one token set per level (3)")
        for t, p in zip(ref.level_tokens, ref.level_prompt_index, strict=True):
            if t.dim() != 2 or t.shape[1] != c or p.shape != t.shape[:1]:
                raise ValueError(f"reference level tokens must be [L, {c}] with a [L] prompt index")

    @staticmethod
    def _num_prompts(inputs: DecoderInputs) -> int:
        if inputs.spatial is not None:
            return int(inputs.spatial.pos_masks.shape[0])
        if inputs.reference is not None:
            return int(inputs.reference.pooled_pos.shape[0])
        return 0

    # ------------------------------------------------------------------------------------------------
    # features and prompts

    def _level_maps(self, multi_scale: list[Tensor]) -> list[Tensor]:
        """``multi_scale[l] + level_embed[l]`` as ``[B, C, h, w]`` (input projection is the identity)."""
        return [x + self.level_embed.weight[i][None, :, None, None] for i, x in enumerate(multi_scale)]

    def cross_attention_layer(self, i: int) -> CrossAttentionLayer:
        """Decoder layer ``i``'s cross-attention (typed access to ``transformer_cross_attention_layers``)."""
        return cast(CrossAttentionLayer, self.transformer_cross_attention_layers[i])

    def _cache_signature(self) -> tuple[Any, ...]:
        """Identity and in-place version of every weight the per-image cache depends on."""
        params = [self.level_embed.weight]
        for i in range(self.cfg.num_layers):
            attn = self.cross_attention_layer(i).multihead_attn
            params += [attn.in_proj_weight, attn.in_proj_bias]
        return tuple((p.data_ptr(), p.dtype, p.device, _version(p)) for p in params)

    def _layer_params(self, i: int) -> tuple[AttentionWeights, AttentionWeights, tuple[Projection, Projection]]:
        ffn = cast(FFNLayer, self.transformer_ffn_layers[i])
        return (
            self.cross_attention_layer(i).multihead_attn.weights(),
            cast(SelfAttentionLayer, self.transformer_self_attention_layers[i]).self_attn.weights(),
            (Projection(ffn.linear1.weight, ffn.linear1.bias), Projection(ffn.linear2.weight, ffn.linear2.bias)),
        )

    def _matmul_params(self) -> list[Tensor]:
        """The parameters of every layer's attention and FFN matmuls and of the mask-embedding MLP (what
        ``_low_precision_weights`` casts).

        Read through the module dicts directly: this runs on every call under autocast, and the usual attribute
        access costs more than the whole lookup.
        """
        params: list[Any] = []
        mods: Any = self._modules
        for group, child in (
            ("transformer_cross_attention_layers", "multihead_attn"),
            ("transformer_self_attention_layers", "self_attn"),
        ):
            for layer in mods[group]._modules.values():
                attn = layer._modules[child]
                ap = attn._parameters
                op = attn._modules["out_proj"]._parameters
                params += (ap["in_proj_weight"], ap["in_proj_bias"], op["weight"], op["bias"])
        for ffn in mods["transformer_ffn_layers"]._modules.values():
            for lin in ("linear1", "linear2"):
                lp = ffn._modules[lin]._parameters
                params += (lp["weight"], lp["bias"])
        for lin in mods["mask_embed"]._modules["layers"]._modules.values():
            params += (lin._parameters["weight"], lin._parameters["bias"])
        return params

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the low-precision weight copies out (they are rebuilt on demand)."""
        state = dict(self.__dict__)
        state["_low_precision"] = {}
        return state

    def _low_precision_weights(self, device: torch.device) -> LowPrecisionWeights | None:
        """The matmul weights in the active low-precision autocast dtype, cast once and kept; None otherwise.

        Under ``torch.autocast`` with a lower-precision dtype (bfloat16 / float16) and without gradients, the
        attention and FFN matmuls of every call would cast their float32 weights again (autocast caches the
        casts of whole leaf parameters only, not of the ``in_proj_weight`` thirds, and a fresh autocast context
        casts everything again). Casting once gives identical results: ``F.linear`` of two low-precision
        tensors is what autocast runs anyway. On a CPU with oneDNN's bfloat16 kernels the bfloat16 copies are
        also packed for oneDNN (``pack_projection``): a plain bfloat16 ``F.linear`` re-lays its weight out on
        every call, which cost about 40 % of a click's decoder time on full-size SEEM (results bit-identical).
        The copies are rebuilt when a weight is replaced or modified in place (identity and version check, as for
        the per-image cache). None without autocast, with a float32 autocast dtype, or with gradients on: the
        layers then use their parameters directly.
        """
        dtype = _autocast_dtype(device)
        if dtype is None or dtype not in (torch.bfloat16, torch.float16) or torch.is_grad_enabled():
            return None
        params = self._matmul_params()
        if any(p.device != device or p.dtype != torch.float32 for p in params):
            return None
        signature = tuple((p.data_ptr(), _version(p)) for p in params)
        key = (dtype, device)
        entry = self._low_precision.get(key)
        if entry is not None and entry[0] == signature:
            return entry[1]

        def low(t: Tensor) -> Tensor:
            return t.detach().to(dtype).contiguous()

        def proj(pr: Projection) -> Projection:
            return pack_projection(Projection(low(pr.weight), low(pr.bias)))

        def attn(a: AttentionWeights) -> AttentionWeights:
            return AttentionWeights(proj(a.q), proj(a.k), proj(a.v), proj(a.out))

        layers = []
        for i in range(self.cfg.num_layers):
            cross, self_attn, ffn = self._layer_params(i)
            layers.append(LayerWeights(attn(cross), attn(self_attn), (proj(ffn[0]), proj(ffn[1]))))
        mlp = [proj(Projection(lin.weight, lin.bias)) for lin in cast(Any, self.mask_embed.layers)]
        weights = LowPrecisionWeights(layers, mlp)
        self._low_precision[key] = (signature, weights)
        return weights

    def _image_cache(self, feats: ImageFeatures) -> _ImageCache:
        """The per-image cache of ``feats`` for this decoder and the active autocast dtype.

        Stored in ``feats.decoder_cache`` only when gradients are off (so no autograd graph is kept alive or
        reused); rebuilt when the weights or the feature tensors changed.
        """
        key = ("seem_decoder", self._cache_token, _autocast_dtype(feats.mask_features.device))
        signature = self._cache_signature()
        store = not torch.is_grad_enabled()
        if store:
            entry = feats.decoder_cache.get(key)
            if isinstance(entry, _ImageCache) and entry.matches(feats, signature):
                return entry
        entry = _ImageCache(self, feats, signature)
        if store:
            feats.decoder_cache[key] = entry
        return entry

    def prepare(self, features: ImageFeatures) -> ImageFeatures:
        """Fill ``features.decoder_cache`` now (every layer's cross-attention keys / values, resized mask
        features) so that the first prompt on this image is as fast as the later ones. Runs without gradients,
        under the caller's autocast setting (a cache entry is kept per autocast dtype). Returns ``features``."""
        self._check_features(features)
        with torch.no_grad():
            self._image_cache(features).prepare(self)
        return features

    def encode_reference(
        self,
        features: ImageFeatures,
        prompts: SpatialPrompts,
        draws: DecoderDraws | None = None,
        trace: Trace | None = None,
    ) -> ReferenceTokens:
        """Stage 1 of a referring-image prompt: pooled embeddings and per-level tokens of ``prompts``.

        Official ``task='refimg'`` (no decoder layer runs). The same encoding is used internally for the
        spatial prompts of a ``forward`` call. Pixel sampling follows the official call order
        ``pooled_pos, pooled_neg, level0_pos, level0_neg, …`` (``seem_types.SAMPLE_ROLES``); explicit draws
        are taken from ``draws.prompt_pixels[role]``; with a ``trace`` dict, the draws actually used are
        stored under ``trace["draws"]`` (a ``DecoderDraws``). Requires batch size 1.
        """
        self._check_features(features)
        if features.mask_features.shape[0] != 1:
            raise ValueError("encode_reference needs batch size 1 (prompts describe one image)")
        self._check_spatial(prompts, features.padded_size)
        if self.cfg.variant == "demo" and prompts.pos_masks.shape[0] != 1:
            raise ValueError("the demo decoder takes exactly one reference prompt")
        used = DecoderDraws()
        ref = self._encode_spatial(self._image_cache(features), prompts, draws, used, trace)
        if trace is not None:
            trace["draws"] = used
        return ref

    def _encode_spatial(
        self,
        img: _ImageCache,
        prompts: SpatialPrompts,
        draws: DecoderDraws | None,
        used: DecoderDraws,
        trace: Trace | None,
    ) -> ReferenceTokens:
        demo = self.cfg.variant == "demo"
        given = draws.prompt_pixels if draws is not None else {}
        max_len = self.cfg.max_spatial_len
        mf = img.mask_features
        pos_m = prompts.pos_masks.to(mf.device)
        neg_m = None if prompts.neg_masks is None else prompts.neg_masks.to(mf.device)
        n = pos_m.shape[0]
        # Each mask stack is sampled up to 4 times (pooled + 3 levels): its nonzero list is computed once and a
        # default (deterministic) selection for the same budget is reused.
        nonzero: dict[int, Tensor] = {}
        defaults: dict[tuple[int, int], SampledPixels] = {}

        def sample(role: str, masks: Tensor | None, budget: int) -> SampledPixels | None:
            if masks is None:
                return None
            explicit = given.get(role)
            key = (id(masks), budget)
            if explicit is None and key in defaults:
                px = defaults[key]
            else:
                if id(masks) not in nonzero:
                    nonzero[id(masks)] = masks.nonzero()
                px = sample_prompt_pixels(masks, budget, explicit, sort=not demo, nonzero=nonzero[id(masks)])
                if explicit is None:
                    defaults[key] = px
            if len(px):
                used.prompt_pixels[role] = px.indices
            if trace is not None:
                trace[f"spatial/points/{role}"] = px.coords
                trace[f"spatial/prompt_index/{role}"] = px.prompt_index
            return px

        empty = 0.0 if demo else -1.0
        pooled = []
        for role, masks in (("pooled_pos", pos_m), ("pooled_neg", neg_m)):
            px = sample(role, masks, max_len[-1])
            if px is None:
                pooled.append(mf.new_full((n, mf.shape[1]), empty))
            else:
                pooled.append(pooled_prompt_embeddings(mf, px, n, empty))
        tokens, indices = [], []
        for lvl in range(self.num_levels):
            pos_px = sample(f"level{lvl}_pos", pos_m, max_len[lvl])
            neg_px = sample(f"level{lvl}_neg", neg_m, max_len[lvl])
            assert pos_px is not None
            tok, idx = level_prompt_tokens(
                img.sampling_map(lvl), self.mask_sptial_embed[lvl], self.pn_indicator.weight, pos_px, neg_px
            )
            tokens.append(tok)
            indices.append(idx)
        return ReferenceTokens(
            pooled_pos=pooled[0], pooled_neg=pooled[1], level_tokens=tokens, level_prompt_index=indices
        )

    # ------------------------------------------------------------------------------------------------
    # heads

    def _attention_heads(
        self, h: Tensor, img: _ImageCache, next_level: int, mlp: list[Projection] | None = None
    ) -> _Heads:
        """The fast path's heads of a step whose only use is the next cross-attention (``final_only``): mask
        embeddings and the blocked attention mask at level ``next_level``, in the autocast dtype when autocast
        is on (only the sign of these logits is used), else in ``img.head_dtype``. ``mlp``: the mask-embedding
        MLP's layers already in the autocast dtype (``LowPrecisionWeights.mask_embed``)."""
        dtype = img.autocast or img.head_dtype
        # under autocast the MLP's matmuls run in the autocast dtype (the caller's autocast region is still on)
        x = self.decoder_norm(h if img.autocast is not None else h.to(dtype)).transpose(0, 1)  # [B, Q, C]
        if mlp is None:
            maskembs = self.mask_embed(x).to(dtype)
        else:
            maskembs = x.to(mlp[0].weight.dtype)
            for j, p in enumerate(mlp):
                maskembs = linear(maskembs, p, relu=j < len(mlp) - 1)
            maskembs = maskembs.to(dtype)
        packed = img.mask_projection_at(next_level, dtype) if img.autocast is not None else None
        if packed is not None:
            h_l, w_l = img.sizes[next_level]
            logits = linear(maskembs, packed).unflatten(-1, (h_l, w_l))
        else:
            logits = mask_logits_from_embeddings(maskembs, img.mask_features_at(next_level, dtype))
        blocked = logits_to_blocked(logits)
        return _Heads(None, maskembs, None, None, blocked, img.mask_features)

    def _heads(
        self,
        h: Tensor,
        img: _ImageCache,
        class_embeddings: Tensor | None,
        logit_scale: Tensor | None,
        next_level: int | None,
        exact: bool,
    ) -> _Heads:
        """Prediction heads of the rows ``h [Q, B, C]``; ``next_level`` is the level the next cross-attention
        reads (None after the last layer: no attention mask needed).

        Exact: stride-4 logits of every row, resized to the next level for the attention mask (official).
        Fast: the attention mask from ``mask_features`` resized to the next level (equal up to rounding, since
        bilinear resizing is linear per channel); the stride-4 logits are left to ``GroupPrediction``.
        Runs in ``img.head_dtype`` outside autocast.
        """
        dtype = img.head_dtype
        with torch.autocast(h.device.type, enabled=False):
            x = self.decoder_norm(h.to(dtype)).transpose(0, 1)  # [B, Q, C]
            captions = x @ self.class_embed.to(dtype)
            logits = None
            if class_embeddings is not None and logit_scale is not None:
                logits = (logit_scale.exp() * normalize(captions)) @ class_embeddings.to(dtype).t()
            maskembs = self.mask_embed(x)
        masks = blocked = None
        if exact:
            masks = mask_logits_from_embeddings(maskembs, img.mask_features)
            if next_level is not None:
                blocked = mask_logits_to_blocked(masks, img.sizes[next_level])
        elif next_level is not None:
            blocked = logits_to_blocked(mask_logits_from_embeddings(maskembs, img.mask_features_at(next_level)))
        return _Heads(captions, maskembs, masks, logits, blocked, img.mask_features)

    def _with_object_queries(self, inputs: DecoderInputs) -> bool:
        """Whether this call decodes the object queries (see ``DecoderInputs.object_queries``)."""
        if self.cfg.variant != "v1":
            return True
        if inputs.object_queries is not None:
            return inputs.object_queries
        has_prompt = any(p is not None for p in (inputs.spatial, inputs.grounding, inputs.reference))
        return not has_prompt or inputs.class_embeddings is not None

    # ------------------------------------------------------------------------------------------------
    # forward

    def forward(self, inputs: DecoderInputs, trace: Trace | None = None) -> DecoderOutput:
        self._check_inputs(inputs)
        cfg = self.cfg
        feats = inputs.features
        mf = feats.mask_features
        b = mf.shape[0]
        device = mf.device
        draws = inputs.draws or DecoderDraws()
        used = DecoderDraws()
        v1 = cfg.variant == "v1"
        exact = trace is not None if inputs.exact is None else inputs.exact

        img = self._image_cache(feats)
        if trace is not None:
            for i, p in enumerate(img.pos):
                trace[f"level_pos/{i}"] = p

        # ---- groups: content [rows, B, C] and positional embedding
        content: dict[str, Tensor] = {}
        pos_emb: dict[str, Tensor] = {}
        prompt_index: dict[str, Tensor] = {}
        q_feat = self.query_feat.weight[:, None].repeat(1, b, 1)
        q_pos = self.query_embed.weight[:, None].repeat(1, b, 1)
        if self._with_object_queries(inputs):
            content[QUERIES_OBJECT], pos_emb[QUERIES_OBJECT] = q_feat, q_pos

        spatial_ref: ReferenceTokens | None = None  # tokens of the spatial prompts (v1: or the reference)
        visual_ref: ReferenceTokens | None = None  # demo: referring-image tokens
        if inputs.spatial is not None:
            spatial_ref = self._encode_spatial(img, inputs.spatial, draws, used, trace)
        if inputs.reference is not None:
            r = inputs.reference
            moved = ReferenceTokens(
                pooled_pos=r.pooled_pos.to(device=device, dtype=img.head_dtype),
                pooled_neg=r.pooled_neg.to(device=device, dtype=img.head_dtype),
                level_tokens=[t.to(device=device, dtype=img.feature_dtype) for t in r.level_tokens],
                level_prompt_index=[p.to(device=device, dtype=torch.long) for p in r.level_prompt_index],
            )
            if v1:
                spatial_ref = moved
            else:
                visual_ref = moved
        n_prompts = 0 if spatial_ref is None else int(spatial_ref.pooled_pos.shape[0])

        memory_blocked: dict[int, Tensor] = {}  # level -> bool [1, n_prompts, h*w] from prev_mask
        if v1 and spatial_ref is not None:
            k = cfg.queries_per_prompt
            idx = draws.spatial_query_indices
            if idx is None:
                idx = default_spatial_query_indices(cfg.num_queries, n_prompts, k)
            else:
                idx = torch.as_tensor(idx)
                if idx.dim() != 1 or idx.numel() != k * n_prompts or idx.is_floating_point():
                    raise ValueError(f"spatial_query_indices must be a long [{k * n_prompts}] tensor")
                if int(idx.min()) < 0 or int(idx.max()) >= cfg.num_queries:
                    raise ValueError(f"spatial_query_indices must lie in [0, {cfg.num_queries})")
            idx = idx.long().to(device)
            used.spatial_query_indices = idx
            content[QUERIES_SPATIAL], pos_emb[QUERIES_SPATIAL] = q_feat[idx], q_pos[idx]
            prompt_index[QUERIES_SPATIAL] = torch.arange(n_prompts, device=device).repeat_interleave(k)
            if inputs.prev_mask is not None:
                content[MEMORIES_SPATIAL] = self.spatial_featured.weight[:, None].repeat(1, b, 1)
                pos_emb[MEMORIES_SPATIAL] = self.spatial_embed.weight[:, None].repeat(1, b, 1)
                prev = inputs.prev_mask[None].to(device=device, dtype=img.head_dtype)
                # prev_mask is fixed across layers: one attention mask per level, not per layer.
                for lvl in sorted({i % self.num_levels for i in range(cfg.num_layers)}):
                    memory_blocked[lvl] = mask_logits_to_blocked(prev, img.sizes[lvl])
                used.memory_slots = []
        if inputs.grounding is not None:
            tokens = inputs.grounding.tokens[:, None].to(device=device, dtype=img.feature_dtype)  # [T, 1, C]
            content[TOKENS_GROUNDING], pos_emb[TOKENS_GROUNDING] = tokens, tokens.detach().clone()
            if v1:
                content[QUERIES_GROUNDING], pos_emb[QUERIES_GROUNDING] = q_feat.clone(), q_pos.clone()

        rules = self.rules

        def cat(layout: GroupLayout, d: dict[str, Tensor]) -> Tensor:
            return torch.cat([d[n] for n in layout.names])

        c_layout = GroupLayout.build(rules.cross_order, {n: content[n].shape[0] for n in content})
        h = cat(c_layout, content)
        h_pos = cat(c_layout, pos_emb)
        if trace is not None:
            trace["init/query"], trace["init/query_pos"] = h, h_pos
            trace["layout/cross"] = dict(c_layout.ranges)
        # Memory rows (the last cross-attention rows) get their attention mask from prev_mask, never from their
        # own prediction, and are not reported: the fast path gives them no heads.
        n_heads = c_layout.total
        if not exact and MEMORIES_SPATIAL in c_layout:
            assert c_layout.ranges[MEMORIES_SPATIAL][1] == c_layout.total
            n_heads = c_layout.ranges[MEMORIES_SPATIAL][0]

        ce, ls = inputs.class_embeddings, inputs.logit_scale
        nl = cfg.num_layers if inputs.layers is None else inputs.layers  # an early exit runs fewer
        low_precision = self._low_precision_weights(device)
        layer_weights = None if low_precision is None else low_precision.layers
        self_masks: dict[tuple[int, tuple[int, ...] | None], Tensor] = {}
        masks_only = inputs.final_only and not exact  # earlier steps only feed the next cross-attention
        # the fast path without gradients attends to the few free keys of a masked row only
        sparse = not exact and not torch.is_grad_enabled()

        def step_heads(rows: Tensor, nxt: int | None) -> _Heads:
            if masks_only and nxt is not None:
                return self._attention_heads(
                    rows, img, nxt, None if low_precision is None else low_precision.mask_embed
                )
            return self._heads(rows, img, ce, ls, nxt, exact)

        heads = [step_heads(h[:n_heads], 0 if nl else None)]
        self._trace_heads(trace, 0, h, heads[-1])

        for i in range(nl):
            lvl = i % self.num_levels
            # ---- cross-attention (queries and memories -> image level lvl)
            mem_blocked = slots = None
            if MEMORIES_SPATIAL in c_layout:
                assert used.memory_slots is not None
                slots = self._memory_slots(draws, i, n_prompts, nl).to(device)
                used.memory_slots.append(slots)
                mem_blocked = memory_blocked[lvl]
                prompt_index[MEMORIES_SPATIAL] = slots
            blocked = heads[-1].blocked
            assert blocked is not None
            blocked = cross_attention_mask(blocked, c_layout, mem_blocked, slots)
            k_proj, v_proj = img.key_value(self, i)
            lw = None if layer_weights is None else layer_weights[i]
            h = self.cross_attention_layer(i).forward_projected(
                h, k_proj, v_proj, blocked, h_pos, None if lw is None else lw.cross, sparse
            )
            for n in c_layout.names:
                content[n] = h[c_layout.rows(n)]
            if trace is not None:
                trace[f"layer{i}/cross_attn_mask"] = blocked
                trace[f"layer{i}/cross_out"] = h
                if slots is not None:
                    trace[f"layer{i}/memory_indices"] = slots

            # ---- self-attention over every group, then FFN
            for name, ref in ((TOKENS_SPATIAL, spatial_ref), (TOKENS_VISUAL, visual_ref)):
                if ref is None:
                    continue
                tok = ref.level_tokens[lvl][:, None]
                content[name], pos_emb[name] = tok, tok.detach().clone()
                prompt_index[name] = ref.level_prompt_index[lvl]
            s_layout = GroupLayout.build(rules.self_order, {n: content[n].shape[0] for n in content}, prompt_index)
            x = cat(s_layout, content)
            x_pos = cat(s_layout, pos_emb)
            # the self-attention mask depends on the layer only through its level and memory slots
            mask_key = (lvl, None if slots is None else tuple(slots.tolist()))
            s_mask = self_masks.get(mask_key)
            if s_mask is None:
                s_mask = self_masks[mask_key] = rules.self_attn_mask(s_layout, device=device)
            # Prompt tokens are rebuilt at every layer: their own outputs are never read, only their keys and
            # values. The fast path computes the query side, the residual and the FFN for the kept rows only.
            kept_names = [n for n in s_layout.names if n not in REBUILT_EACH_LAYER]
            kept = torch.cat([torch.arange(*s_layout.ranges[n], device=device) for n in kept_names])
            rows_only = not exact and len(kept_names) < len(s_layout.names)
            x_self = self.transformer_self_attention_layers[i](
                x,
                s_mask[None].expand(b, -1, -1),
                x_pos,
                None if lw is None else lw.self_attn,
                rows=kept if rows_only else None,
            )
            x_out = self.transformer_ffn_layers[i](x_self, None if lw is None else lw.ffn)
            if rows_only:
                start = 0
                for n in kept_names:
                    size = s_layout.ranges[n][1] - s_layout.ranges[n][0]
                    content[n] = x_out[start : start + size]
                    start += size
            else:
                for n in s_layout.names:
                    content[n] = x_out[s_layout.rows(n)]
            if trace is not None:
                trace[f"layer{i}/self_layout"] = dict(s_layout.ranges)
                trace[f"layer{i}/kept_rows"] = kept.tolist()
                trace[f"layer{i}/self_in"] = x
                trace[f"layer{i}/self_attn_mask"] = s_mask[None].expand(b, -1, -1)
                trace[f"layer{i}/self_out"] = x_self if rows_only else x_self[kept]
                trace[f"layer{i}/ffn_out"] = x_out if rows_only else x_out[kept]

            # ---- prediction heads; their masks drive the next cross-attention
            h = cat(c_layout, content)
            nxt = (i + 1) % self.num_levels if i + 1 < nl else None
            heads.append(step_heads(h[:n_heads], nxt))
            self._trace_heads(trace, i + 1, h, heads[-1])

        return self._organize(inputs, c_layout, heads, spatial_ref, visual_ref, used)

    def _memory_slots(self, draws: DecoderDraws, layer: int, n_prompts: int, layers_run: int) -> Tensor:
        s = self.cfg.spatial_memories
        if draws.memory_slots is None:
            return default_memory_slots(s, n_prompts)
        if len(draws.memory_slots) not in (self.cfg.num_layers, layers_run):  # an early exit records fewer
            raise ValueError(
                f"memory_slots needs one [{s}] tensor per decoder layer ({self.cfg.num_layers}, or the {layers_run} "
                "layers this call runs)"
            )
        slots = torch.as_tensor(draws.memory_slots[layer])
        if slots.shape != (s,) or slots.is_floating_point():
            raise ValueError(f"memory_slots[{layer}] must be a long [{s}] tensor, got {tuple(slots.shape)}")
        if int(slots.min()) < 0 or int(slots.max()) >= n_prompts:
            raise ValueError(f"memory_slots[{layer}] must name prompts in [0, {n_prompts})")
        return slots.long()

    @staticmethod
    def _trace_heads(trace: Trace | None, j: int, h: Tensor, heads: _Heads) -> None:
        if trace is None:
            return
        trace[f"L{j}/head_input"] = h
        if heads.captions is not None:
            trace[f"L{j}/caption"] = heads.captions
        trace[f"L{j}/maskemb"] = heads.maskembs
        if heads.masks is not None:
            trace[f"L{j}/masks"] = heads.masks
        if heads.logits is not None:
            trace[f"L{j}/class_logits"] = heads.logits

    # ------------------------------------------------------------------------------------------------
    # outputs and selections

    def _organize(
        self,
        inputs: DecoderInputs,
        layout: GroupLayout,
        heads: list[_Heads],
        spatial_ref: ReferenceTokens | None,
        visual_ref: ReferenceTokens | None,
        used: DecoderDraws,
    ) -> DecoderOutput:
        preds = []
        for hd in heads[-1:] if inputs.final_only and heads[0].captions is None else heads:
            preds.append(
                LayerPrediction(
                    object=hd.group(layout.rows(QUERIES_OBJECT)) if QUERIES_OBJECT in layout else None,
                    grounding=hd.group(layout.rows(QUERIES_GROUNDING)) if QUERIES_GROUNDING in layout else None,
                    spatial=hd.group(layout.rows(QUERIES_SPATIAL)) if QUERIES_SPATIAL in layout else None,
                )
            )
        out = DecoderOutput(predictions=preds, draws=used)
        final = preds[-1]
        if spatial_ref is not None:
            out.pooled_pos_spatial = spatial_ref.pooled_pos[None]
            out.pooled_neg_spatial = spatial_ref.pooled_neg[None]
        if visual_ref is not None:
            out.pooled_pos_visual = visual_ref.pooled_pos[None]
            out.pooled_neg_visual = visual_ref.pooled_neg[None]
        g = inputs.grounding
        if self.cfg.variant == "v1":
            if final.spatial is not None and spatial_ref is not None:
                out.spatial_selection = self._select_spatial(final.spatial, spatial_ref.pooled_pos)
            if final.grounding is not None and g is not None and g.phrase_embeddings is not None:
                assert inputs.logit_scale is not None
                scores = vl_similarity(
                    normalize(final.grounding.captions[0]), normalize(g.phrase_embeddings), inputs.logit_scale
                )
                q = scores.max(dim=0).indices
                out.grounding_selection = GroundingSelection(
                    scores=scores, query_index=q, mask_logits=final.grounding.mask_logits_of(0, q)
                )
        else:
            assert final.object is not None
            out.demo_selection = self._select_demo(inputs, final.object, spatial_ref, visual_ref)
        return out

    def _select_spatial(self, spatial: GroupPrediction, pooled_pos: Tensor) -> SpatialSelection:
        k = self.cfg.queries_per_prompt
        n = pooled_pos.shape[0]
        own = torch.arange(n, device=pooled_pos.device).repeat_interleave(k)
        offset = torch.zeros(k * n, n, device=pooled_pos.device, dtype=pooled_pos.dtype)
        offset[own[:, None] != torch.arange(n, device=pooled_pos.device)[None, :]] = float("-inf")
        scores = spatial.mask_embeddings[0] @ pooled_pos.t() + offset
        q = scores.max(dim=0).indices
        return SpatialSelection(scores=scores, query_index=q, prev_mask=spatial.mask_logits_of(0, q))

    def _select_demo(
        self,
        inputs: DecoderInputs,
        obj: GroupPrediction,
        spatial_ref: ReferenceTokens | None,
        visual_ref: ReferenceTokens | None,
    ) -> DemoSelection | None:
        g = inputs.grounding
        if spatial_ref is not None:
            source, scores = "stroke", obj.mask_embeddings[0] @ spatial_ref.pooled_pos[0]
        elif visual_ref is not None:
            source, scores = "example", obj.mask_embeddings[0] @ visual_ref.pooled_pos[0]
        elif g is not None and g.phrase_embeddings is not None:
            if g.phrase_embeddings.shape[0] != 1:
                raise ValueError("the demo text rule takes exactly one phrase embedding")
            assert inputs.logit_scale is not None
            source = "text"
            scores = vl_similarity(normalize(obj.captions[0]), normalize(g.phrase_embeddings), inputs.logit_scale)[:, 0]
        else:
            return None
        q = int(scores.argmax())
        cls = None if obj.class_logits is None else int(obj.class_logits[0, q].argmax())
        return DemoSelection(
            source=source,  # type: ignore[arg-type]
            scores=scores,
            query_index=q,
            class_index=cls,
            mask_logits=obj.mask_logits_of(0, q),
        )
