"""ONNX export of SEEM v1 models as a SAM-compatible encoder / prompt-decoder pair (see ``docs/onnx.md``).

Covers every ``SEEMModel`` with the ``"v1"`` decoder rules: the official ``seem_focal{t,l}_v1.pt`` checkpoints and
the project's default model (``seem-mobilenetv2``). The split and the I/O names are segment-anything's, as for the
Semantic-SAM export (``seem.export.onnx``), so ``seem.eval.sam_onnx.SamOnnxPredictor`` runs the pair unchanged.

- **encoder** ``image [1, 3, S, S]`` (SAM's preprocessing: longest side resized to ``S``, normalised with the
  ImageNet mean / std on 0..255, zero-padded bottom/right) → ``image_embeddings [1, C, T]``: every per-image tensor
  of the decoder's fast path (``seem.models.seem_decoder._ImageCache``), packed along the last axis in the order
  of ``SEEMEmbeddingLayout``: the stride-4 mask features, the mask features resized to the three level sizes, the
  three level maps (``multi_scale[l] + level_embed[l]``, read by the prompt tokens), then each layer's projected
  cross-attention keys and values.
- **decoder** with SAM's names (``point_coords [1, N, 2]``, ``point_labels [1, N]`` with 1 / 0 / 2 / 3 / -1,
  ``mask_input [1, 1, S/4, S/4]`` + ``has_mask_input [1]`` = SEEM's memory prompt, ``orig_im_size [2]``) →
  ``masks [1, K, H, W]`` (logits at the original size), ``iou_predictions [1, K]`` (the official selection
  score, **not** an IoU estimate), ``low_res_masks [1, K, S/4, S/4]``; ``K = queries_per_prompt``, sorted by the
  selection score, so index 0 is the query the official rule selects.

Inside the decoder, the clicks and the box are drawn on the ``S x S`` canvas exactly as ``seem.prompts.rasterize``
draws them (3 x 3 click squares, the box's pixel centres), the prompt pixels are taken with ``NonZero`` and the
deterministic evenly spaced rule of ``seem.models.visual_sampler.default_pixel_selection`` (one prompt), and the
v1 decoder runs its fast path on the spatial queries (and the memory rows). See ``docs/onnx.md`` for the (few)
differences from ``Segmenter.predict``.

- **text decoder** (``text_prompt.onnx``, optional referring text; ``decoder.onnx`` is unchanged):
  ``image_embeddings [1, C, T]``, ``text_tokens [1, L, D]`` (one phrase's token embeddings, L dynamic),
  ``text_embedding [1, P]`` (its pooled embedding), ``orig_im_size [2]`` → ``masks [1, 1, H, W]`` (logits at the
  original size, the official grounding post-processing), ``scores [1, 1]`` (the grounding selection score,
  ``vl_similarity``), ``low_res_masks [1, 1, S/4, S/4]``: the v1 grounding queries with the text tokens, and the
  selected query (``SEEMModel.decode`` with a ``GroundingPrompt``; ``Segmenter.segment_text`` for one phrase).
  Text encoding stays in Python: ``text_inputs(model, phrase)``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.eval.sam_onnx import PIXEL_MEAN, PIXEL_STD, SamOnnxPredictor
from seem.export.onnx import (
    DECODER_FILE,
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_FILE,
    METADATA_FILE,
    _TorchSession,
    export_encoder_decoder,
    sam_input_size,
    sam_masks_to_original,
)
from seem.models.seem_attention import default_spatial_query_indices
from seem.models.seem_decoder import (
    CrossAttentionLayer,
    FFNLayer,
    MultiheadAttention,
    SEEMDecoder,
    SelfAttentionLayer,
)
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import ImageFeatures

__all__ = [
    "BOX_EDGE_EPS",
    "TEXT_DECODER_FILE",
    "TEXT_DECODER_INPUT_NAMES",
    "TEXT_DECODER_OUTPUT_NAMES",
    "SEEMEmbeddingLayout",
    "SEEMOnnxDecoder",
    "SEEMOnnxEncoder",
    "SEEMOnnxTextDecoder",
    "TorchSeemSamPredictor",
    "check_exportable",
    "export_seem_onnx",
    "image_tensors",
    "layout_for",
    "text_inputs",
    "torch_seem_sam_predictor",
]

TEXT_DECODER_FILE = "text_prompt.onnx"
TEXT_DECODER_INPUT_NAMES = ("image_embeddings", "text_tokens", "text_embedding", "orig_im_size")
TEXT_DECODER_OUTPUT_NAMES = ("masks", "scores", "low_res_masks")

BOX_EDGE_EPS = 1e-4
"""Box edges: canvas pixel ``u`` is inside when its centre lies in the box, ``ceil(edge - 0.5 - eps)`` (pixel units;
``seem.prompts`` uses 1e-9 in float64, the graph computes in float32)."""


def check_exportable(model: Any, image_size: int) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming what prevents ``model`` from being exported at ``image_size``."""
    if not isinstance(model, SEEMModel):
        raise TypeError(f"expected a SEEMModel, got {type(model).__name__}")
    cfg = model.config
    if cfg.decoder.variant != "v1":
        raise ValueError(
            f"ONNX export of SEEM needs the v1 decoder rules (per-prompt spatial queries); this model uses "
            f"{cfg.decoder.variant!r} (an official *_v0 checkpoint run with the demo rules), which has no SAM-style "
            "prompt decoder"
        )
    if cfg.decoder.mask_dim != cfg.decoder.hidden_dim:
        raise ValueError(
            f"ONNX export packs mask features and decoder tensors in one [1, C, T] embedding: needs mask_dim "
            f"({cfg.decoder.mask_dim}) == hidden_dim ({cfg.decoder.hidden_dim})"
        )
    if tuple(cfg.pixel_mean) != PIXEL_MEAN or tuple(cfg.pixel_std) != PIXEL_STD:
        raise ValueError(
            f"the model normalises with mean {tuple(cfg.pixel_mean)} / std {tuple(cfg.pixel_std)}; the SAM ONNX "
            f"interface (SamOnnxPredictor) feeds SAM's {PIXEL_MEAN} / {PIXEL_STD}"
        )
    div = max(32, cfg.inference.size_divisibility)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % div:
        raise ValueError(f"image_size must be a positive multiple of {div}, got {image_size!r}")


# --------------------------------------------------------------------------------------------------------------------
# the packed embedding


@dataclass(frozen=True)
class SEEMEmbeddingLayout:
    """Where each per-image tensor lies along ``T`` of ``image_embeddings [1, C, T]``.

    Segments, in order (each a ``[C, n]`` block, maps row-major):

    - ``mask_features``: ``[C, (S/4)^2]``;
    - ``mask_features_level{l}``, l = 0, 1, 2: the mask features bilinearly resized (``align_corners=False``) to
      level ``l``'s size ``h_l x w_l`` (strides 32, 16, 8), for the attention masks;
    - ``level_map{l}``: ``multi_scale[l] + level_embed[l]``, ``h_l x w_l``, sampled at the prompt pixels;
    - ``key{i}``, ``value{i}`` for each decoder layer ``i``: the cross-attention's projected keys (of level map +
      sine position) and values of level ``i % 3``, ``h_l * w_l`` columns; channel ``c`` = head ``c // d``,
      channel ``c % d`` (``d = C / heads``).
    """

    image_size: int
    channels: int
    num_heads: int
    num_layers: int
    level_sizes: tuple[tuple[int, int], ...]

    @property
    def side4(self) -> int:
        return self.image_size // 4

    def segments(self) -> list[tuple[str, int]]:
        """``(name, columns)`` in packing order."""
        segs = [("mask_features", self.side4 * self.side4)]
        segs += [(f"mask_features_level{lvl}", h * w) for lvl, (h, w) in enumerate(self.level_sizes)]
        segs += [(f"level_map{lvl}", h * w) for lvl, (h, w) in enumerate(self.level_sizes)]
        for i in range(self.num_layers):
            h, w = self.level_sizes[i % len(self.level_sizes)]
            segs += [(f"key{i}", h * w), (f"value{i}", h * w)]
        return segs

    @property
    def total(self) -> int:
        """``T``."""
        return sum(n for _, n in self.segments())

    def shape_of(self, name: str) -> tuple[int, int]:
        """``(h, w)`` of a map segment."""
        if name == "mask_features":
            return self.side4, self.side4
        return self.level_sizes[int(name[-1])]

    def pack(self, parts: dict[str, Tensor]) -> Tensor:
        """Maps ``[1, C, h, w]`` and keys / values ``[1, heads, h*w, d]`` → ``[1, C, T]``."""
        cols = []
        for name, n in self.segments():
            t = parts[name]
            if name.startswith(("key", "value")):
                t = t.transpose(-1, -2).reshape(1, self.channels, n)  # [1, heads, d, n] → [1, C, n]
            else:
                t = t.reshape(1, self.channels, n)
            cols.append(t)
        return torch.cat(cols, 2)

    def unpack(self, emb: Tensor) -> dict[str, Tensor]:
        """``[1, C, T]`` → maps ``[1, C, h, w]`` and **transposed** keys / values ``[heads, d, h*w]`` (the inverse of
        ``pack`` up to that transpose; reshapes of slices only, so onnxruntime copies each segment once)."""
        out: dict[str, Tensor] = {}
        start = 0
        c, heads = self.channels, self.num_heads
        for name, n in self.segments():
            block = emb[:, :, start : start + n]
            start += n
            if name.startswith(("key", "value")):
                out[name] = block.reshape(heads, c // heads, n)
            else:
                h, w = self.shape_of(name)
                out[name] = block.reshape(1, c, h, w)
        return out

    @classmethod
    def for_model(cls, model: SEEMModel, image_size: int, level_sizes: list[tuple[int, int]]) -> SEEMEmbeddingLayout:
        cfg = model.config.decoder
        return cls(image_size, cfg.hidden_dim, cfg.num_heads, cfg.num_layers, tuple(level_sizes))


def _features(model: SEEMModel, image: Tensor) -> ImageFeatures:
    pix = model.pixel_decoder(model.backbone(image))
    return ImageFeatures(
        multi_scale=list(pix.multi_scale_features),
        mask_features=pix.mask_features,
        padded_size=(int(image.shape[-2]), int(image.shape[-1])),
    )


def image_tensors(model: SEEMModel, features: ImageFeatures) -> dict[str, Tensor]:
    """The per-image decoder tensors of ``features`` by name (``SEEMEmbeddingLayout``), computed from the decoder's
    weights the way its per-image cache computes them."""
    dec: SEEMDecoder = model.decoder
    mf = features.mask_features
    parts: dict[str, Tensor] = {"mask_features": mf}
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in features.multi_scale]
    for lvl, size in enumerate(sizes):
        parts[f"mask_features_level{lvl}"] = F.interpolate(mf, size=size, mode="bilinear", align_corners=False)
    src, pos = [], []
    for lvl, x in enumerate(features.multi_scale):
        level_map = x + dec.level_embed.weight[lvl][None, :, None, None]
        parts[f"level_map{lvl}"] = level_map
        src.append(level_map.flatten(2).permute(2, 0, 1))
        pos.append(dec.pe_layer(x).flatten(2).permute(2, 0, 1))
    for i in range(dec.cfg.num_layers):
        lvl = i % len(sizes)
        parts[f"key{i}"], parts[f"value{i}"] = dec.cross_attention_layer(i).project_memory(src[lvl], pos[lvl])
    return parts


class SEEMOnnxEncoder(nn.Module):
    """``image [1, 3, S, S]`` (SAM-normalised, padded) → ``image_embeddings [1, C, T]`` (``SEEMEmbeddingLayout``)."""

    def __init__(self, model: SEEMModel, layout: SEEMEmbeddingLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, image: Tensor) -> Tensor:
        return self.layout.pack(image_tensors(self.model, _features(self.model, image)))


# --------------------------------------------------------------------------------------------------------------------
# the prompt decoder


def _attend(attn: MultiheadAttention, q_in: Tensor, k_t: Tensor, v_t: Tensor, blocked: Tensor | None) -> Tensor:
    """``MultiheadAttention.attend`` for one image without the batch axis: ``q_in [L, C]``, projected keys / values
    **transposed** ``k_t, v_t [heads, d, S]`` (the packed layout, so onnxruntime transposes nothing large),
    ``blocked`` bool ``[L, S]`` (True = blocked, never a full row) → ``[L, C]``."""
    c, h = attn.embed_dim, attn.num_heads
    d = c // h
    q = F.linear(q_in, attn.in_proj_weight[:c], attn.in_proj_bias[:c]) * (d**-0.5)
    q = q.reshape(-1, h, d).transpose(0, 1)  # [heads, L, d]
    scores = q @ k_t
    if blocked is not None:
        scores = scores.masked_fill(blocked[None], float("-inf"))
    out = (scores.softmax(-1) @ v_t.transpose(-2, -1)).transpose(0, 1).reshape(-1, c)
    return attn.out_proj(out)


def _project_kv(attn: MultiheadAttention, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Key / value projections of ``[S, C]`` rows → transposed ``[heads, d, S]`` each (as ``_attend`` takes them)."""
    c, h = attn.embed_dim, attn.num_heads
    k = F.linear(key, attn.in_proj_weight[c : 2 * c], attn.in_proj_bias[c : 2 * c])
    v = F.linear(value, attn.in_proj_weight[2 * c :], attn.in_proj_bias[2 * c :])
    return k.t().reshape(h, c // h, -1), v.t().reshape(h, c // h, -1)


def _cross_layer(
    layer: CrossAttentionLayer, h: Tensor, h_pos: Tensor, k_t: Tensor, v_t: Tensor, blocked: Tensor | None
) -> Tensor:
    """One decoder cross-attention layer (pre- or post-norm) of rows ``h [L, C]`` over cached keys / values."""
    if layer.pre_norm:
        return h + _attend(layer.multihead_attn, layer.norm(h) + h_pos, k_t, v_t, blocked)
    return layer.norm(h + _attend(layer.multihead_attn, h + h_pos, k_t, v_t, blocked))


def _self_layer(
    layer: SelfAttentionLayer, rows: Tensor, rows_pos: Tensor, keys: Tensor, keys_pos: Tensor, blocked: Tensor | None
) -> Tensor:
    """One decoder self-attention layer (pre- or post-norm): ``rows [L, C]`` attend to ``keys [S, C]`` (the rows
    themselves, or the rows with extra tokens) → the updated rows."""
    if layer.pre_norm:
        y_rows = layer.norm(rows)
        y_keys = y_rows if keys is rows else layer.norm(keys)
        kp, vp = _project_kv(layer.self_attn, y_keys + keys_pos, y_keys)
        return rows + _attend(layer.self_attn, y_rows + rows_pos, kp, vp, blocked)
    kp, vp = _project_kv(layer.self_attn, keys + keys_pos, keys)
    return layer.norm(rows + _attend(layer.self_attn, rows + rows_pos, kp, vp, blocked))


class SEEMOnnxDecoder(nn.Module):
    """SAM-named prompt decoder of a SEEM v1 model over the packed embedding (inputs / outputs: module docstring).

    Args:
        model: the SEEM v1 model.
        layout: the embedding layout its encoder writes.
    """

    query_index: Tensor

    def __init__(self, model: SEEMModel, layout: SEEMEmbeddingLayout) -> None:
        super().__init__()
        check_exportable(model, layout.image_size)
        dec: SEEMDecoder = model.decoder
        cfg = dec.cfg
        self.dec = dec
        self.layout = layout
        self.image_size = layout.image_size
        self.k = cfg.queries_per_prompt
        self.register_buffer(
            "query_index", default_spatial_query_indices(cfg.num_queries, 1, cfg.queries_per_prompt), persistent=False
        )
        self.budgets = tuple(int(b) for b in cfg.max_spatial_len)

    # ---- prompts -----------------------------------------------------------------------------------------------

    def prompt_masks(
        self, point_coords: Tensor, point_labels: Tensor, orig_hw: Tensor, input_hw: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Clicks and the box → bool positive / negative prompt masks ``[S, S]`` on the padded canvas.

        ``seem.prompts.rasterize`` for an image resized to ``input_hw``: a click at original pixel ``x`` lands in
        canvas pixel ``floor((x + 0.5) * w / W)`` (here ``floor(p + 0.5 * w / W)`` with ``p = x * w / W`` the
        SAM-frame coordinate the caller passes), clipped to the image, and covers the 3 x 3 square around it; the
        box (mean of the label-2 points, mean of the label-3 points) covers the pixels whose centres it contains,
        at least the pixel of its centre.
        """
        s = self.image_size
        hw = input_hw.to(torch.float32)
        nh, nw = hw[0], hw[1]
        scale = torch.stack([nw / orig_hw[1], nh / orig_hw[0]])  # (sx, sy): canvas pixels per original pixel
        pts = point_coords[0]  # [N, 2] (x, y) in the resized frame
        labels = point_labels[0]
        uv = torch.floor(pts + 0.5 * scale)
        lim = torch.stack([nw, nh]) - 1.0
        uv = torch.minimum(torch.maximum(uv, torch.zeros_like(uv)), lim)
        grid = torch.arange(s, dtype=torch.float32)
        in_rows = grid < nh
        in_cols = grid < nw
        click_r = ((grid[None] - uv[:, 1:2]).abs() <= 1.0) & in_rows[None]  # [N, S]
        click_c = ((grid[None] - uv[:, 0:1]).abs() <= 1.0) & in_cols[None]
        pos_w = (labels == 1).to(torch.float32)
        neg_w = (labels == 0).to(torch.float32)
        # the box
        tl_w = (labels == 2).to(torch.float32)
        br_w = (labels == 3).to(torch.float32)
        has_box = (tl_w.sum() > 0).to(torch.float32) * (br_w.sum() > 0).to(torch.float32)
        tl = (pts * tl_w[:, None]).sum(0) / tl_w.sum().clamp(min=1.0)
        br = (pts * br_w[:, None]).sum(0) / br_w.sum().clamp(min=1.0)
        lo = torch.maximum(torch.ceil(tl - 0.5 - BOX_EDGE_EPS), torch.zeros_like(tl))
        hi = torch.minimum(torch.ceil(br - 0.5 - BOX_EDGE_EPS), lim + 1.0)
        centre = torch.minimum(torch.maximum(torch.floor((tl + br) / 2), torch.zeros_like(tl)), lim)
        thin = hi <= lo
        lo = torch.where(thin, centre, lo)
        hi = torch.where(thin, centre + 1.0, hi)
        box_r = (grid >= lo[1]) & (grid < hi[1])
        box_c = (grid >= lo[0]) & (grid < hi[0])
        rows = torch.cat([click_r.to(torch.float32) * pos_w[:, None], box_r[None].to(torch.float32) * has_box])
        cols = torch.cat([click_c.to(torch.float32), box_c[None].to(torch.float32)])
        pos = (rows.t() @ cols) > 0.5
        neg = ((click_r.to(torch.float32) * neg_w[:, None]).t() @ click_c.to(torch.float32)) > 0.5
        return pos, neg

    def select_pixels(self, mask: Tensor, budget: int) -> Tensor:
        """``default_pixel_selection`` for one prompt: bool ``[S, S]`` → ``(y / S, x / S)`` float ``[k, 2]`` of
        ``k = min(budget, pixels)`` evenly spaced entries (``round(j (P - 1) / (k - 1))``, half up) of the row-major
        pixel list (all of them when they fit the budget)."""
        nz = mask.nonzero()  # [P, 2] row-major (y, x)
        count = torch.ones_like(nz[:, 0]).sum()  # P, traced (a reduction over the P pixels only)
        k = torch.minimum(count, torch.tensor(budget, dtype=torch.int64))
        j = torch.arange(k, dtype=torch.int64)  # type: ignore[call-overload]  # 0-d tensor end: ONNX Range
        den = torch.clamp(2 * (k - 1), min=1)
        idx = torch.div(2 * j * (count - 1) + (k - 1), den, rounding_mode="floor")
        return nz[idx].to(torch.float32) / float(self.image_size)

    @staticmethod
    def sample(features: Tensor, coords: Tensor) -> Tensor:
        """``visual_sampler.sample_features`` for one image: ``[1, C, h, w]`` at ``(y, x)`` fractions → ``[k, C]``."""
        grid = 2.0 * coords.flip(-1) - 1.0
        out = F.grid_sample(features, grid[None, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[0, :, :, 0].t()

    # ---- decoder -----------------------------------------------------------------------------------------------

    def _heads(self, h: Tensor) -> Tensor:
        """Rows ``[Q, C]`` → mask embeddings ``[Q, C]`` (decoder norm + mask MLP)."""
        return self.dec.mask_embed(self.dec.decoder_norm(h))

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        dec, cfg = self.dec, self.dec.cfg
        s = self.image_size
        n_lv = len(self.layout.level_sizes)
        input_hw = sam_input_size(orig_im_size, s)
        parts = self.layout.unpack(image_embeddings)
        mf = parts["mask_features"]

        # ---- spatial prompt: pixels → pooled embedding and per-level tokens
        pos_m, neg_m = self.prompt_masks(point_coords, point_labels, orig_im_size, input_hw)
        chosen: dict[tuple[int, int], Tensor] = {}

        def pixels(which: int, budget: int) -> Tensor:
            if (which, budget) not in chosen:
                chosen[(which, budget)] = self.select_pixels(pos_m if which == 0 else neg_m, budget)
            return chosen[(which, budget)]

        feats = self.sample(mf, pixels(0, self.budgets[-1]))  # [P, C]
        n_pooled = torch.ones_like(feats[:, 0]).sum()  # traced count (an empty positive mask gives 0)
        pooled = feats.sum(0) / torch.clamp(n_pooled, min=1.0)
        pooled = torch.where(n_pooled > 0, pooled, torch.full_like(pooled, -1.0))  # official empty value (v1)
        tokens = []
        for lvl in range(n_lv):
            pos_px, neg_px = pixels(0, self.budgets[lvl]), pixels(1, self.budgets[lvl])
            lm = parts[f"level_map{lvl}"]
            proj = dec.mask_sptial_embed[lvl]
            pn = dec.pn_indicator.weight
            t_pos = self.sample(lm, pos_px) @ proj + pn[0]
            t_neg = self.sample(lm, neg_px) @ proj + pn[1]
            tokens.append(torch.cat([t_pos, t_neg]))

        # ---- rows: K spatial queries, then the memory slots (used only with has_mask_input = 1)
        k = self.k
        q_feat = dec.query_feat.weight[self.query_index]
        q_pos = dec.query_embed.weight[self.query_index]
        m = cfg.spatial_memories
        h = torch.cat([q_feat, dec.spatial_featured.weight])  # [K + M, C]
        h_pos = torch.cat([q_pos, dec.spatial_embed.weight])
        use_mem = has_mask_input.reshape(()) > 0.5
        # memory rows' cross-attention masks: prev_mask at each level size (mask_logits_to_blocked)
        mem_blocked = [
            F.interpolate(mask_input, size=self.layout.level_sizes[lvl], mode="bilinear", align_corners=False)
            .sigmoid()
            .reshape(1, -1)
            < 0.5
            for lvl in range(n_lv)
        ]  # [1, h*w] each
        # initial prediction → level-0 attention mask of the queries
        maskembs = self._heads(h[:k])
        c = cfg.hidden_dim
        q_blocked = (maskembs @ parts["mask_features_level0"].reshape(c, -1)).sigmoid() < 0.5  # [K, h*w]
        for i in range(cfg.num_layers):
            lvl = i % n_lv
            # cross-attention: queries (masked by their previous prediction) and memories (by prev_mask)
            blocked = torch.cat([q_blocked, mem_blocked[lvl].expand(m, -1)])
            blocked = blocked & ~blocked.all(-1, keepdim=True)
            h = _cross_layer(dec.cross_attention_layer(i), h, h_pos, parts[f"key{i}"], parts[f"value{i}"], blocked)
            # self-attention: rows = queries + memories; keys = queries, prompt tokens, memories
            tok = tokens[lvl]
            keys = torch.cat([h[:k], tok, h[k:]])
            keys_pos = torch.cat([h_pos[:k], tok, h_pos[k:]])
            zeros_tok = torch.zeros_like(tok[:, 0])
            mem_col = torch.cat([torch.zeros(k), zeros_tok, torch.ones(m)]) > 0.5  # [K + T + M]
            q_rows = mem_col[None].expand(k, -1) & ~use_mem  # queries: memories only with a mask input
            m_rows = (~mem_col)[None].expand(m, -1)  # memories: memories only
            s_blocked = torch.cat([q_rows, m_rows])
            sa = cast(SelfAttentionLayer, dec.transformer_self_attention_layers[i])
            h = _self_layer(sa, h, h_pos, keys, keys_pos, s_blocked)
            h = cast(FFNLayer, dec.transformer_ffn_layers[i])(h)
            maskembs = self._heads(h[:k])
            if i + 1 < cfg.num_layers:
                nxt = parts[f"mask_features_level{(i + 1) % n_lv}"].reshape(c, -1)
                q_blocked = (maskembs @ nxt).sigmoid() < 0.5

        # ---- official selection score, candidates sorted by it (index 0 = the selected query)
        scores = maskembs @ pooled  # [K]
        top, order = torch.topk(scores, k)
        s4 = self.layout.side4
        low = (maskembs[order] @ mf.reshape(c, -1)).reshape(1, k, s4, s4)
        return sam_masks_to_original(low, s, input_hw, orig_im_size), top[None], low


# --------------------------------------------------------------------------------------------------------------------
# the text (grounding) decoder


def _aa_bicubic_matrix(n_out: Tensor, n_in: Tensor, width: int) -> Tensor:
    """Weights ``[n_out, width]`` of PyTorch's ``interpolate(mode="bicubic", antialias=True, align_corners=False)``
    from ``n_in <= width`` input pixels (columns ``>= n_in`` get weight 0) to ``n_out`` (traceable, sizes dynamic).

    PIL-style separable filter (cubic with ``a = -0.5``, support ``2 max(1, n_in / n_out)``, window clipped to the
    input, rows normalised), as ``_upsample_bicubic2d_aa`` builds it.
    """
    scale = n_in.to(torch.float32) / n_out.to(torch.float32)
    support = 2.0 * torch.clamp(scale, min=1.0)
    inv = 1.0 / torch.clamp(scale, min=1.0)
    i = torch.arange(n_out.to(torch.int64), dtype=torch.float32)  # type: ignore[call-overload]
    centre = scale * (i + 0.5)
    j = torch.arange(width, dtype=torch.float32)
    lo = torch.clamp(torch.floor(centre - support + 0.5), min=0.0)
    hi = torch.minimum(torch.floor(centre + support + 0.5), n_in.to(torch.float32))
    x = ((j[None] - centre[:, None] + 0.5) * inv[None]).abs()  # [n_out, width]
    a = -0.5
    w = torch.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a)
    inside = (x < 2.0) & (j[None] >= lo[:, None]) & (j[None] < hi[:, None])
    w = torch.where(inside, w, torch.zeros_like(w))
    return w / w.sum(1, keepdim=True)


class SEEMOnnxTextDecoder(nn.Module):
    """Referring-text decoder of a SEEM v1 model over the packed embedding (``text_prompt.onnx``).

    ``SEEMModel.decode`` with a ``GroundingPrompt`` of one phrase and no other prompt (``Segmenter.segment_text``):
    ``N`` grounding queries (copies of the initial object queries) cross-attend to the image, masked by their
    previous prediction, and self-attend together with the phrase's tokens (which persist across layers, their
    positional embedding the initial tokens); the query with the highest ``vl_similarity`` of its caption to the
    phrase embedding is selected (official ``evaluate_grounding``).

    Inputs: ``image_embeddings [1, C, T]``, ``text_tokens [1, L, D]`` (``GroundingPrompt.tokens`` of one phrase,
    ``D = hidden_dim``), ``text_embedding [1, P]`` (``GroundingPrompt.phrase_embeddings``, ``P = dim_proj``),
    ``orig_im_size [2]``. Outputs: ``masks [1, 1, H, W]`` (logits: bilinear to ``S x S``, crop, bicubic with
    antialias to ``(H, W)``, the official grounding post-processing), ``scores [1, 1]`` (the selection score),
    ``low_res_masks [1, 1, S/4, S/4]``.
    """

    up4: Tensor

    def __init__(self, model: SEEMModel, layout: SEEMEmbeddingLayout) -> None:
        super().__init__()
        check_exportable(model, layout.image_size)
        self.dec: SEEMDecoder = model.decoder
        self.layout = layout
        self.image_size = layout.image_size
        self.hidden_dim = self.dec.cfg.hidden_dim
        self.dim_proj = self.dec.cfg.dim_proj
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=100))
        s4 = layout.side4
        # bilinear S/4 → S (align_corners=False) as a [S, S/4] matrix (linear in the logits, separable)
        eye = torch.eye(s4)[None, None]
        up = F.interpolate(eye, size=(self.image_size, s4), mode="bilinear", align_corners=False)
        self.register_buffer("up4", up[0, 0], persistent=False)

    def check_inputs(self, text_tokens: Tensor, text_embedding: Tensor) -> None:
        """``ValueError`` naming a wrong shape (PyTorch side; the ONNX graph checks its input ranks / widths)."""
        if text_tokens.dim() != 3 or text_tokens.shape[0] != 1 or text_tokens.shape[1] == 0:
            raise ValueError(f"text_tokens must be [1, L >= 1, {self.hidden_dim}], got {tuple(text_tokens.shape)}")
        if text_tokens.shape[2] != self.hidden_dim:
            raise ValueError(
                f"text_tokens must be [1, L, {self.hidden_dim}] (the decoder's hidden dim), got "
                f"{tuple(text_tokens.shape)}"
            )
        if tuple(text_embedding.shape) != (1, self.dim_proj):
            raise ValueError(f"text_embedding must be [1, {self.dim_proj}], got {tuple(text_embedding.shape)}")

    def forward(
        self, image_embeddings: Tensor, text_tokens: Tensor, text_embedding: Tensor, orig_im_size: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if not torch.jit.is_tracing():
            self.check_inputs(text_tokens, text_embedding)
        dec, cfg = self.dec, self.dec.cfg
        s = self.image_size
        n_lv = len(self.layout.level_sizes)
        c = cfg.hidden_dim
        input_hw = sam_input_size(orig_im_size, s)
        parts = self.layout.unpack(image_embeddings)
        mf = parts["mask_features"]

        tok = text_tokens[0]  # [L, D]
        tok_pos = tok  # fixed positional embedding: the initial tokens
        n = cfg.num_queries
        h = dec.query_feat.weight
        h_pos = dec.query_embed.weight
        maskembs = dec.mask_embed(dec.decoder_norm(h))
        q_blocked = (maskembs @ parts["mask_features_level0"].reshape(c, -1)).sigmoid() < 0.5  # [N, h*w]
        for i in range(cfg.num_layers):
            blocked = q_blocked & ~q_blocked.all(-1, keepdim=True)
            h = _cross_layer(dec.cross_attention_layer(i), h, h_pos, parts[f"key{i}"], parts[f"value{i}"], blocked)
            # self-attention: grounding queries and text tokens attend to each other freely
            x = torch.cat([h, tok])
            x_pos = torch.cat([h_pos, tok_pos])
            sa = cast(SelfAttentionLayer, dec.transformer_self_attention_layers[i])
            x = _self_layer(sa, x, x_pos, x, x_pos, None)
            x = cast(FFNLayer, dec.transformer_ffn_layers[i])(x)
            h, tok = x[:n], x[n:]
            hn = dec.decoder_norm(h)
            maskembs = dec.mask_embed(hn)
            if i + 1 < cfg.num_layers:
                nxt = parts[f"mask_features_level{(i + 1) % n_lv}"].reshape(c, -1)
                q_blocked = (maskembs @ nxt).sigmoid() < 0.5
        captions = dec.decoder_norm(h) @ dec.class_embed
        cap = captions / (captions.norm(dim=-1, keepdim=True) + 1e-7)
        txt = text_embedding / (text_embedding.norm(dim=-1, keepdim=True) + 1e-7)
        sims = self.logit_scale * (cap @ txt.t())[:, 0]  # [N]
        top, q = torch.topk(sims, 1)
        s4 = self.layout.side4
        low = (maskembs[q] @ mf.reshape(c, -1)).reshape(1, 1, s4, s4)
        hh, ww = orig_im_size[0].to(torch.int64), orig_im_size[1].to(torch.int64)
        ry = _aa_bicubic_matrix(hh, input_hw[0], s) @ self.up4  # [H, S/4]
        rx = _aa_bicubic_matrix(ww, input_hw[1], s) @ self.up4  # [W, S/4]
        masks = (ry @ low[0, 0] @ rx.t())[None, None]
        return masks, top.reshape(1, 1), low


def text_inputs(model: SEEMModel, phrase: str) -> dict[str, Any]:
    """``text_tokens [1, L, D]`` and ``text_embedding [1, P]`` (float32 numpy) of one ``phrase`` for
    ``text_prompt.onnx``, from ``model.encode_phrases([phrase])`` (the text encoder is not exported)."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"phrase must be a non-empty string, got {phrase!r}")
    with torch.no_grad():
        g = model.encode_phrases([phrase])
    if g.phrase_embeddings is None:  # pragma: no cover - model contract
        raise RuntimeError("the text encoder returned no phrase embedding")
    return {
        "text_tokens": g.tokens[None].float().cpu().numpy(),
        "text_embedding": g.phrase_embeddings.float().cpu().numpy(),
    }


# --------------------------------------------------------------------------------------------------------------------
# export


def layout_for(model: SEEMModel, image_size: int) -> SEEMEmbeddingLayout:
    """The embedding layout of ``model`` at ``image_size`` (level sizes from one encoder run on a zero image)."""
    check_exportable(model, image_size)
    with torch.no_grad():
        feats = _features(model.eval(), torch.zeros(1, 3, image_size, image_size, device=model.device))
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in feats.multi_scale]
    if int(feats.mask_features.shape[-1]) * 4 != image_size:  # pragma: no cover - model contract
        raise RuntimeError(f"mask features {tuple(feats.mask_features.shape)} are not at stride 4 of {image_size}")
    return SEEMEmbeddingLayout.for_model(model, image_size, sizes)


def _zero_constants_to_shapes(path: Path, min_elements: int = 4096) -> int:
    """Rewrite large all-zero ``Constant`` nodes of an ONNX file as ``ConstantOfShape`` (same values); returns how
    many bytes the file lost.

    The tracer bakes ``torch.zeros_like`` of a fixed-shape activation (FocalNet's modulation starts its context sum
    from one) into a constant holding every zero: about 120 MB of the Focal-T encoder at S = 1024.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    before = path.stat().st_size
    graph_model = onnx.load(str(path))
    nodes = []
    changed = False
    for node in graph_model.graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value" and attr.t.dims and int(np.prod(attr.t.dims)) >= min_elements:
            value = numpy_helper.to_array(attr.t)
            if not value.any():
                shape = helper.make_node(
                    "Constant",
                    [],
                    [node.output[0] + "_shape"],
                    value=numpy_helper.from_array(np.asarray(value.shape, dtype=np.int64)),
                )
                fill = numpy_helper.from_array(np.zeros(1, dtype=value.dtype))
                nodes += [shape, helper.make_node("ConstantOfShape", [shape.output[0]], list(node.output), value=fill)]
                changed = True
                continue
        nodes.append(node)
    if not changed:
        return 0
    del graph_model.graph.node[:]
    graph_model.graph.node.extend(nodes)
    onnx.save(graph_model, str(path))
    return before - path.stat().st_size


def _dummy_decoder_inputs(image_size: int, emb: Tensor) -> tuple[Tensor, ...]:
    s = float(image_size)
    pts = torch.tensor([[[0.4 * s, 0.3 * s], [0.6 * s, 0.5 * s], [0.2 * s, 0.2 * s], [0.7 * s, 0.8 * s]]])
    return (
        emb,
        pts,
        torch.tensor([[1.0, 0.0, 2.0, 3.0]]),
        torch.zeros(1, 1, image_size // 4, image_size // 4),
        torch.ones(1),
        torch.tensor([s, s]),
    )


def export_seem_onnx(
    model: SEEMModel, out_dir: str | os.PathLike[str], *, image_size: int = 1024, opset: int = 17
) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``text_prompt.onnx`` and ``seem_onnx.json`` for a SEEM v1 ``model``
    into ``out_dir`` (``text_prompt.onnx``: referring text, see ``SEEMOnnxTextDecoder``).

    Args:
        model: a ``SEEMModel`` with the v1 decoder rules (official ``*_v1`` checkpoints, the default model).
        out_dir: output folder (created).
        image_size: ``S``, the square encoder input side (a multiple of 32; 1024 gives SAM's 256 x 256
            ``mask_input``; SEEM's official input has its short side at 512).
        opset: ONNX opset (>= 17).

    Returns:
        ``{"encoder": path, "decoder": path, "text_decoder": path, "metadata": path}``.

    Raises:
        TypeError: not a ``SEEMModel``. ValueError: a demo-rules model, ``image_size`` not a positive multiple of
        32, ``mask_dim != hidden_dim``, or normalisation constants other than SAM's.
    """
    check_exportable(model, image_size)
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (GridSample with align_corners), got {opset}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    layout = layout_for(model, image_size)
    enc = SEEMOnnxEncoder(model, layout).eval()
    dec = SEEMOnnxDecoder(model, layout).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    enc_path, dec_path = out / ENCODER_FILE, out / DECODER_FILE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        emb = enc(x)
        export_encoder_decoder(enc, dec, x, _dummy_decoder_inputs(image_size, emb), enc_path, dec_path, opset)
        text_dec = SEEMOnnxTextDecoder(model, layout).eval()
        text_path = out / TEXT_DECODER_FILE
        cfg_dec = model.config.decoder
        torch.onnx.export(
            text_dec,
            (
                emb,
                torch.zeros(1, 5, cfg_dec.hidden_dim),
                torch.ones(1, cfg_dec.dim_proj),
                torch.tensor([float(image_size), float(image_size)]),
            ),
            str(text_path),
            input_names=list(TEXT_DECODER_INPUT_NAMES),
            output_names=list(TEXT_DECODER_OUTPUT_NAMES),
            dynamic_axes={"text_tokens": {1: "num_tokens"}, "masks": {2: "height", 3: "width"}},
            opset_version=opset,
            dynamo=False,
        )
    _zero_constants_to_shapes(enc_path)
    cfg = model.config
    meta = {
        "family": "seem",
        "model": cfg.name,
        "image_size": image_size,
        "resize": "longest_side",
        "pixel_mean": list(cfg.pixel_mean),
        "pixel_std": list(cfg.pixel_std),
        "num_masks": cfg.decoder.queries_per_prompt,
        "mask_input_size": [image_size // 4, image_size // 4],
        "embedding_shape": list(emb.shape),
        "opset": opset,
        "scores": "official selection score (mask embedding · pooled prompt embedding), not an IoU; sorted, "
        "index 0 = the selected query",
        "text_decoder": {
            "file": TEXT_DECODER_FILE,
            "inputs": list(TEXT_DECODER_INPUT_NAMES),
            "outputs": list(TEXT_DECODER_OUTPUT_NAMES),
            "text_token_dim": cfg.decoder.hidden_dim,
            "text_embedding_dim": cfg.decoder.dim_proj,
            "scores": "grounding selection score (vl_similarity of the selected query's caption with the phrase)",
        },
    }
    meta_path = out / METADATA_FILE
    meta_path.write_text(json.dumps(meta, indent=2))
    return {"encoder": enc_path, "decoder": dec_path, "text_decoder": text_path, "metadata": meta_path}


class TorchSeemSamPredictor(SamOnnxPredictor):
    """``SamOnnxPredictor`` whose sessions run the SEEM export wrappers in PyTorch (``torch_seem_sam_predictor``)."""

    def __repr__(self) -> str:
        return f"TorchSeemSamPredictor(image_size={self.image_size})"


def torch_seem_sam_predictor(model: SEEMModel, image_size: int = 1024) -> TorchSeemSamPredictor:
    """A ``SamOnnxPredictor`` whose two sessions run ``SEEMOnnxEncoder`` / ``SEEMOnnxDecoder`` in PyTorch.

    Same preprocessing, prompt encoding and output handling as the ONNX path, so comparing the two measures the
    export alone.
    """
    layout = layout_for(model, image_size)
    p = TorchSeemSamPredictor.__new__(TorchSeemSamPredictor)
    p._enc = _TorchSession(SEEMOnnxEncoder(model.eval(), layout).eval(), ("image",))
    p._dec = _TorchSession(SEEMOnnxDecoder(model, layout).eval(), DECODER_INPUT_NAMES)
    p._enc_input = "image"
    p.image_size = int(image_size)
    p._out_names = list(DECODER_OUTPUT_NAMES)
    p.mask_input_size = (image_size // 4, image_size // 4)
    p.mask_threshold = 0.0
    p._embedding = p._orig_hw = p._input_hw = None
    p.encoder_path = p.decoder_path = Path("<torch>")
    return p
