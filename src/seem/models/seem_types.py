"""Typed inputs and outputs of the SEEM decoder (``seem.models.seem_decoder.SEEMDecoder``).

Conventions used throughout:

* ``B`` is the image batch, ``C`` the decoder width (``hidden_dim``), ``D`` the text projection width
  (``dim_proj``, equal to ``C`` in every released model), ``N`` the number of object queries.
* ``(Hp, Wp)`` is the **padded** input size (the normalised image zero-padded bottom/right to a multiple of
  32); ``(H4, W4) = (Hp / 4, Wp / 4)`` is the size of the stride-4 ``mask_features`` and of every mask
  logit map the decoder returns. The decoder never resizes to the image size; post-processing does.
* Prompt pixels are given as boolean masks on the padded canvas. Sampled prompt points are stored as
  ``(y / Hp, x / Wp)`` fractions of the padded size (row, column order), exactly as the official code
  computes them; they are sampled from feature maps with ``grid_sample(align_corners=True)``.
* Prompts (spatial masks, grounding tokens, reference tokens, memory) describe **one** image, so a
  decoder call with any prompt requires ``B == 1``. The prompt-free path (panoptic / semantic / instance)
  accepts any ``B``.

Fast and exact decoding (``DecoderInputs.exact``): the exact path follows the official order of operations
(every prediction's stride-4 mask logits, resized to the next level for the attention mask); the fast path,
the default without a trace, uses algebraically equal rewrites (attention masks from ``mask_features``
resized once per image, stride-4 logits only when read, per-image cached attention keys/values, no heads for
memory rows, and, in v1, no object queries when the prompts do not need them). The two agree up to float
rounding; only an attention-mask entry whose logit is within rounding of 0 can differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor

SampleRole = Literal[
    "pooled_pos",
    "pooled_neg",
    "level0_pos",
    "level0_neg",
    "level1_pos",
    "level1_neg",
    "level2_pos",
    "level2_neg",
]
"""Names of the prompt-pixel sampling calls of one decoder call, in the official call order.

``pooled_*`` feed the pooled prompt embedding (``pred_pspatials`` / ``pred_nspatials``); ``level{i}_*`` the
spatial tokens of feature level ``i`` (strides 32, 16, 8).
"""

SAMPLE_ROLES: tuple[SampleRole, ...] = get_args(SampleRole)


@dataclass
class ImageFeatures:
    """Pixel-decoder outputs of one (batch of) padded image(s).

    Attributes:
        multi_scale: three maps ``[B, C, h_l, w_l]`` at strides 32, 16, 8, **in that order** (the official
            ``multi_scale_features``); ``C`` must equal the decoder's ``hidden_dim``.
        mask_features: ``[B, mask_dim, H4, W4]``, stride 4.
        padded_size: ``(Hp, Wp)``, the padded input size (``= 4 * (H4, W4)``).
        decoder_cache: per-image tensors a decoder derives from these features and its weights (level maps,
            position embeddings, every layer's projected cross-attention keys and values, ``mask_features``
            resized to the level sizes). Filled on the first decoder call made without gradients (or by
            ``SEEMDecoder.prepare``) and reused by every later prompt on this image; an entry is rebuilt when
            the decoder's weights or the feature tensors were replaced or modified in place. Clear it
            (``decoder_cache.clear()``) to free the memory (full-size model, 512×768 image: about 100 MB in
            fp32). Not part of equality or ``repr``.
    """

    multi_scale: list[Tensor]
    mask_features: Tensor
    padded_size: tuple[int, int]
    decoder_cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (``torch.save``, copies) leaves the decoder cache out; it is rebuilt on the next call."""
        state = dict(self.__dict__)
        state["decoder_cache"] = {}
        return state


@dataclass
class SpatialPrompts:
    """Spatial prompts (clicks, scribbles, strokes, boxes, masks) of one image.

    Rasterising is the caller's job: a click is a 3×3 square, a stroke a polyline of width 5, a box a
    filled rectangle (the official conventions).

    Attributes:
        pos_masks: bool ``[n_prompts, Hp, Wp]``: positive pixels of each prompt, on the padded canvas.
        neg_masks: bool ``[n_prompts, Hp, Wp]`` or None (no negative pixel anywhere).
    """

    pos_masks: Tensor
    neg_masks: Tensor | None = None


@dataclass
class GroundingPrompt:
    """Referring-text prompt: the text encoder's projected token states.

    Attributes:
        tokens: ``[T, D]``: the non-padding token embeddings (``last_hidden_state @ lang_proj``, SOT and EOT
            included, no normalisation) of **all** phrases concatenated; they form one token group, as in
            the official evaluation, so each phrase's result depends on the others. Their positional
            embedding is a detached copy of these initial tokens, kept fixed across layers.
        phrase_embeddings: ``[P, D]`` or None: one pooled projected embedding per phrase (the state at the
            first EOT, ``class_emb`` officially). Needed only for the selections (v1 grounding: one query
            per phrase; demo text rule).
    """

    tokens: Tensor
    phrase_embeddings: Tensor | None = None


@dataclass
class ReferenceTokens:
    """Stage-1 output of a referring-image ("Example") prompt (``SEEMDecoder.encode_reference``).

    Computed on the *reference* image from its spatial prompts; injected into the decoder call on the
    *target* image (v1: they replace the spatial prompts, official ``extra['refimg_tokens']``; demo: they
    become the ``tokens_visual`` group and ``pred_pvisuals``).

    Attributes:
        pooled_pos: ``[n_prompts, mask_dim]``: pooled positive prompt embedding per prompt (mean of
            ``mask_features`` at the sampled positive points; v1: ``-1`` for a prompt without points,
            demo: ``0``).
        pooled_neg: ``[n_prompts, mask_dim]``: same for the negative points.
        level_tokens: three ``[L_l, C]``: per-level prompt tokens (positive then negative points, each the
            level feature ``+ level_embed[l]`` sampled at the point, ``@ mask_sptial_embed[l]``, ``+
            pn_indicator[0 or 1]``).
        level_prompt_index: three long ``[L_l]``: the prompt each token belongs to (official
            ``src_spatial_indices``).
    """

    pooled_pos: Tensor
    pooled_neg: Tensor
    level_tokens: list[Tensor]
    level_prompt_index: list[Tensor]


@dataclass
class DecoderDraws:
    """The random choices of the official decoder, made explicit.

    Every field is optional; a missing choice is made by the documented deterministic default rule
    (``visual_sampler.default_pixel_selection``, ``seem_attention.default_spatial_query_indices``,
    ``seem_attention.default_memory_slots``). Parity tests pass the recorded official draws here.

    Attributes:
        prompt_pixels: ``{role: long [K]}``: for a sampling call (``SAMPLE_ROLES``), the selected indices
            into the row-major list of nonzero pixels ``(prompt, y, x)`` of that mask stack. v1 sorts them
            (as the official ``multinomial(...).sort()``); the demo keeps their order (its ``randperm``
            prefix). ``K`` must be ``min(max_spatial_len, n_pixels)``.
        spatial_query_indices: long ``[queries_per_prompt * n_prompts]`` (v1): the object queries whose
            *initial* content and position are copied into the spatial queries; rows ``3k..3k+2`` belong to
            prompt ``k`` (official ``torch.randint``).
        memory_slots: per decoder layer a long ``[spatial_memories]`` (v1, only with ``prev_mask``): the
            prompt each memory slot serves in that layer (official sorted ``multinomial`` draw).
    """

    prompt_pixels: dict[str, Tensor] = field(default_factory=dict)
    spatial_query_indices: Tensor | None = None
    memory_slots: list[Tensor] | None = None


@dataclass
class DecoderInputs:
    """Everything one ``SEEMDecoder.forward`` call consumes.

    Attributes:
        features: the pixel-decoder outputs (``ImageFeatures``).
        class_embeddings: ``[K + 1, D]`` or None: the vocabulary (normalised text embeddings, ``background``
            last). When None no class logits are computed. (The official decoder always demands a
            vocabulary, even for click-only prompts; here it is optional.)
        logit_scale: scalar tensor (the text encoder's ``logit_scale`` parameter; ``exp`` is applied here).
            Required with ``class_embeddings`` and for the text/grounding selections.
        spatial: spatial prompts (``SpatialPrompts``) or None.
        grounding: referring-text prompt (``GroundingPrompt``) or None.
        prev_mask: ``[n_prompts, H4, W4]`` logits of the previous interaction round (v1 memory prompts; the
            ``prev_mask`` output of the previous call). Memories are active only when it is given.
        reference: stage-1 referring-image tokens (``ReferenceTokens``) or None.
        draws: explicit random choices (``DecoderDraws``) or None for the deterministic defaults.
        object_queries: (v1) whether the ``N`` object queries are decoded. In v1 they never see a prompt and
            no prompt row sees them, so a prompted call does not need them: they only give the prompt-free
            outputs (``LayerPrediction.object``: panoptic / semantic / instance). None (default) computes them
            when the call has no prompt or a vocabulary (``class_embeddings``) is given, i.e. when the
            vocabulary-based outputs can be wanted; False skips them (then every ``LayerPrediction.object`` is
            None; a click-only call then costs a small fraction); True always computes them. The demo
            decoder always computes them (they carry all its outputs); False is an error there.
        exact: follow the official order of operations (attention masks from every prediction's stride-4
            logits, heads for memory rows, all stride-4 logits computed eagerly; slower) instead of the
            fast algebraic rewrites. None (default): exact only when a ``trace`` dict is passed (the trace
            records the official intermediates). Both give the same results up to float rounding.
        final_only: only the last prediction is wanted (inference): earlier layers compute just what the next
            cross-attention needs (their mask embeddings and attention masks; no captions or class logits) and
            ``DecoderOutput.predictions`` holds the final ``LayerPrediction`` alone. Under autocast those
            attention masks are computed in the autocast dtype (the final heads stay in float32): only their
            sign is used, and reading the mask features in half the bytes is most of a click's saving. Ignored
            on the exact path. Default False (training needs every layer's predictions).
        layers: run only the first ``layers`` decoder layers (0 … ``num_layers``; None = all): the prediction
            after layer ``layers`` (made by the same heads that supervise every layer in training) is the final
            one. An early exit for callers that only need a coarse mask: the default model's clicks, whose mask
            the click refiner corrects (``InferenceConfig.click_decoder_layers``).
    """

    features: ImageFeatures
    class_embeddings: Tensor | None = None
    logit_scale: Tensor | None = None
    spatial: SpatialPrompts | None = None
    grounding: GroundingPrompt | None = None
    prev_mask: Tensor | None = None
    reference: ReferenceTokens | None = None
    draws: DecoderDraws | None = None
    object_queries: bool | None = None
    exact: bool | None = None
    final_only: bool = False
    layers: int | None = None


def mask_logits_from_embeddings(mask_embeddings: Tensor, mask_features: Tensor) -> Tensor:
    """``einsum("bqc,bchw->bqhw")``: ``[B, Q, C]`` embeddings × ``[B, C, H, W]`` features → ``[B, Q, H, W]``.

    Runs outside autocast in the promoted dtype of the two inputs (float32 for the decoder's outputs), so a
    mask is never rounded to bfloat16 before its sign is taken.
    """
    b, q, _ = mask_embeddings.shape
    h, w = mask_features.shape[-2:]
    dtype = torch.promote_types(mask_embeddings.dtype, mask_features.dtype)
    with torch.autocast(mask_features.device.type, enabled=False):
        out = torch.bmm(mask_embeddings.to(dtype), mask_features.to(dtype).flatten(2))
    return out.view(b, q, h, w)


class GroupPrediction:
    """Prediction-head outputs of one query group after one decoder layer.

    Attributes:
        captions: ``[B, Q, D]``: ``decoder_norm(h) @ class_embed`` (official ``pred_captions`` /
            ``pred_gtexts`` / ``pred_stexts``).
        mask_embeddings: ``[B, Q, mask_dim]``: ``mask_embed`` MLP output.
        mask_logits: ``[B, Q, H4, W4]``: ``einsum(mask_embeddings, mask_features)``, stride 4. Given
            eagerly or computed on first access from ``mask_features`` (then kept); ``mask_logits_of``
            computes only some rows.
        class_logits: ``[B, Q, K + 1]`` or None: ``exp(logit_scale) · normalize(caption) @ vocab.T``
            (no clamp), when a vocabulary was given.

    ``GroupPrediction(captions, mask_embeddings, mask_logits, class_logits, mask_features=None)``: pass
    ``mask_logits=None`` with the stride-4 ``mask_features [B, mask_dim, H4, W4]`` for lazy logits.
    """

    def __init__(
        self,
        captions: Tensor,
        mask_embeddings: Tensor,
        mask_logits: Tensor | None,
        class_logits: Tensor | None,
        mask_features: Tensor | None = None,
    ) -> None:
        if mask_logits is None and mask_features is None:
            raise ValueError("GroupPrediction needs mask_logits or the mask_features to compute them from")
        self.captions = captions
        self.mask_embeddings = mask_embeddings
        self.class_logits = class_logits
        self._mask_logits = mask_logits
        self._mask_features = mask_features

    @property
    def mask_logits(self) -> Tensor:
        if self._mask_logits is None:
            assert self._mask_features is not None
            self._mask_logits = mask_logits_from_embeddings(self.mask_embeddings, self._mask_features)
        return self._mask_logits

    @property
    def mask_logits_computed(self) -> bool:
        """Whether the stride-4 logits of all rows exist already (reading ``mask_logits`` computes them)."""
        return self._mask_logits is not None

    def mask_logits_of(self, batch: int, rows: Tensor | int) -> Tensor:
        """``mask_logits[batch, rows]`` (``[len(rows), H4, W4]`` or ``[H4, W4]`` for an int), computing only
        those rows when the full logits were not computed yet."""
        if self._mask_logits is not None:
            return self._mask_logits[batch, rows]
        assert self._mask_features is not None
        emb = self.mask_embeddings[batch : batch + 1, rows]
        if emb.dim() == 2:
            return mask_logits_from_embeddings(emb[:, None], self._mask_features[batch : batch + 1])[0, 0]
        return mask_logits_from_embeddings(emb, self._mask_features[batch : batch + 1])[0]

    def __repr__(self) -> str:
        return (
            f"GroupPrediction(captions={tuple(self.captions.shape)}, "
            f"mask_embeddings={tuple(self.mask_embeddings.shape)}, mask_logits_computed={self.mask_logits_computed}, "
            f"class_logits={None if self.class_logits is None else tuple(self.class_logits.shape)})"
        )


@dataclass
class LayerPrediction:
    """Predictions ``j`` (0 = from the initial queries, ``k + 1`` = after decoder layer ``k``).

    ``object`` is None only when the object queries were skipped (v1, ``DecoderInputs.object_queries``);
    ``grounding`` (v1, with a grounding prompt) and ``spatial`` (v1, with spatial or reference prompts;
    ``3 * n_prompts`` queries, prompt ``k`` owns rows ``3k..3k+2``) are None when the group does not exist.
    Memory rows are not reported.
    """

    object: GroupPrediction | None
    grounding: GroupPrediction | None = None
    spatial: GroupPrediction | None = None


@dataclass
class SpatialSelection:
    """v1 per-prompt mask selection (official ``update_spatial_results``).

    Attributes:
        scores: ``[3n, n]``: ``spatial_mask_embeddings @ pooled_pos.T``, ``-inf`` where the query belongs to
            another prompt.
        query_index: long ``[n]``: the chosen row of the spatial group for each prompt (``argmax`` over rows).
        prev_mask: ``[n, H4, W4]``: the chosen stride-4 logits; the interactive output and next round's
            ``prev_mask``.
    """

    scores: Tensor
    query_index: Tensor
    prev_mask: Tensor


@dataclass
class GroundingSelection:
    """v1 per-phrase selection (official ``evaluate_grounding``).

    Attributes:
        scores: ``[N, P]``: ``vl_similarity`` = ``min(exp(logit_scale), 100) · normalize(grounding
            captions) @ normalize(phrase embeddings).T`` (normalisation ``v / (‖v‖ + 1e-7)``).
        query_index: long ``[P]``: the chosen grounding query per phrase.
        mask_logits: ``[P, H4, W4]``: its stride-4 logits.
    """

    scores: Tensor
    query_index: Tensor
    mask_logits: Tensor


@dataclass
class DemoSelection:
    """The demo's single output (official ``demo/seem/tasks/interactive.py``).

    Priority Stroke > Example > Text: only the first prompt kind present picks the mask.

    Attributes:
        source: ``"stroke"`` (spatial prompt), ``"example"`` (reference tokens) or ``"text"``.
        scores: ``[N]``: stroke/example: raw dot products ``mask_embeddings @ pooled_pos``; text:
            ``vl_similarity`` of the object captions with the phrase embedding.
        query_index: the chosen object query (``argmax``).
        class_index: ``argmax`` of that query's class logits over all ``K + 1`` columns (so it can be the
            background), or None without a vocabulary.
        mask_logits: ``[H4, W4]``: its stride-4 logits.
    """

    source: Literal["stroke", "example", "text"]
    scores: Tensor
    query_index: int
    class_index: int | None
    mask_logits: Tensor


@dataclass
class DecoderOutput:
    """What ``SEEMDecoder.forward`` returns.

    Attributes:
        predictions: ``num_layers + 1`` ``LayerPrediction`` (the last one is the final prediction; the
            earlier ones are the official ``aux_outputs``). On the fast path their stride-4 ``mask_logits`` are
            computed when first read; ``object`` is None when the object queries were skipped.
        pooled_pos_spatial / pooled_neg_spatial: ``[B, n, mask_dim]`` (official ``pred_pspatials`` /
            ``pred_nspatials``) with spatial or (v1) reference prompts, else None.
        pooled_pos_visual / pooled_neg_visual: ``[B, 1, mask_dim]`` (demo ``pred_pvisuals`` /
            ``pred_nvisuals``) with a reference prompt, else None.
        spatial_selection: v1 spatial/reference prompts: ``SpatialSelection``.
        grounding_selection: v1 grounding with phrase embeddings: ``GroundingSelection``.
        demo_selection: demo variant with any prompt: ``DemoSelection``.
        draws: the random choices actually used (recorded or default), so a call can be replayed.
    """

    predictions: list[LayerPrediction]
    pooled_pos_spatial: Tensor | None = None
    pooled_neg_spatial: Tensor | None = None
    pooled_pos_visual: Tensor | None = None
    pooled_neg_visual: Tensor | None = None
    spatial_selection: SpatialSelection | None = None
    grounding_selection: GroundingSelection | None = None
    demo_selection: DemoSelection | None = None
    draws: DecoderDraws = field(default_factory=DecoderDraws)

    @property
    def final(self) -> LayerPrediction:
        """The last prediction (after the last decoder layer)."""
        return self.predictions[-1]
