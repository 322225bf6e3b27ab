"""ONNX export of Semantic-SAM as a SAM-compatible encoder / prompt-decoder pair (see ``docs/onnx.md``).

Two graphs, the split of segment-anything's ONNX export:

- **encoder** ``image [1, 3, S, S]`` (normalised RGB — mean ``(123.675, 116.28, 103.53)``, std ``(58.395, 57.12,
  57.375)`` on 0..255 — the image resized so its longest side is ``S`` and zero-padded bottom/right after
  normalising) → ``image_embeddings [1, C, T]``: everything the decoder needs from the image, packed along the last
  axis: the stride-4 mask features ``[C, (S/4)²]`` (row-major), then for each decoder layer ``i`` its projected
  MSDA values ``[C, M]`` (``M`` memory tokens in decoder order s64, s32, s16, s8; channel ``c`` = head
  ``c // D``, channel ``c % D``). ``T = (S/4)² + num_layers · M``.
- **decoder** with SAM's names: ``image_embeddings``, ``point_coords [1, N, 2]`` (pixel ``(x, y)`` in the resized
  ``S`` frame), ``point_labels [1, N]`` (1 positive, 0 negative, 2 / 3 box corners, −1 padding), ``mask_input
  [1, 1, S/4, S/4]`` and ``has_mask_input [1]`` (accepted, unused: Semantic-SAM has no mask prompt),
  ``orig_im_size [2]`` (``H, W``) → ``masks [1, 6, H, W]`` (logits at the original size), ``iou_predictions
  [1, 6]``, ``low_res_masks [1, 6, S/4, S/4]`` (stride-4 logits of the padded canvas), one per granularity token.

Prompt rule (traceable form of ``seem.granularity.GranularityPredictor`` at the stride-4 grid): every click and
the box are decoded independently (``exact_batching=False``); per token the result is the union (max of logits)
of the positive prompts (label-1 clicks and the box), its IoU the mean of theirs; each negative click removes its
largest token mask that covers no positive click's stride-4 cell (nothing when all six do), by ``min(result,
-removal)``. See ``docs/onnx.md`` for the deviations from the PyTorch predictor.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.eval.sam_onnx import SamOnnxPredictor
from seem.models.granularity_decoder import (
    DecoderMemory,
    GranularityDecoder,
    gen_sineembed_for_position,
    inverse_sigmoid,
)
from seem.models.pixel_decoders.ms_deform_attn import MSDeformAttn
from seem.models.semantic_sam import CLICK_BOX_SIZE, SemanticSAM

__all__ = [
    "DECODER_FILE",
    "DECODER_INPUT_NAMES",
    "DECODER_OUTPUT_NAMES",
    "ENCODER_FILE",
    "METADATA_FILE",
    "SemanticSAMOnnxDecoder",
    "SemanticSAMOnnxEncoder",
    "TorchSamPredictor",
    "export_semantic_sam_onnx",
    "load_metadata",
    "quantize_decoder_int8",
    "torch_sam_predictor",
]

DECODER_INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
METADATA_FILE = "seem_onnx.json"
_NEG_BIG = -1.0e4  # "no removal" logit


def sam_input_size(orig_im_size: Tensor, image_size: int) -> Tensor:
    """SAM's resize rule, traceable: ``orig_im_size`` ``(H, W)`` scaled so the long side is ``image_size``, rounded
    → long ``[2]``."""
    scale = image_size / orig_im_size.max()
    return torch.floor(0.5 + orig_im_size * scale).to(torch.int64)


def sam_masks_to_original(low: Tensor, image_size: int, input_hw: Tensor, orig_im_size: Tensor) -> Tensor:
    """SAM's mask post-processing, traceable: stride-4 logits ``[1, K, S/4, S/4]`` on the padded square input →
    bilinear to ``S``, crop to the resized image ``input_hw``, bilinear to ``orig_im_size`` → ``[1, K, H, W]``."""
    masks = F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_hw[0], : input_hw[1]]
    return F.interpolate(
        masks,
        size=(orig_im_size[0].to(torch.int64), orig_im_size[1].to(torch.int64)),  # type: ignore[arg-type]
        mode="bilinear",
        align_corners=False,
    )


def _level_shapes(image_size: int, num_levels: int) -> list[tuple[int, int]]:
    """Decoder-order (coarsest first) ``(H, W)`` of the ``num_levels`` memory levels: strides 8 · 2^i, reversed."""
    shapes = []
    for i in range(num_levels):
        side = image_size
        for _ in range(3 + i):  # stride-2 convs with padding 1 (Swin patch merges / the extra s64 conv): ceil halving
            side = (side + 1) // 2
        shapes.append((side, side))
    return list(reversed(shapes))


def _cross_attn(layer: nn.Module) -> MSDeformAttn:
    ca = layer.cross_attn
    assert isinstance(ca, MSDeformAttn)
    return ca


class SemanticSAMOnnxEncoder(nn.Module):
    """``image [1, 3, S, S]`` → packed ``image_embeddings [1, C, T]`` (see the module docstring)."""

    def __init__(self, model: SemanticSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        feats = self.model.backbone(image)
        enc = self.model.pixel_decoder(feats)
        mem = DecoderMemory.from_multi_scale(enc.multi_scale, enc.mask_features)
        parts = [enc.mask_features.flatten(2)]
        for layer in self.model.predictor.decoder.layers:
            v = _cross_attn(layer).project_value(mem.memory)  # [1, M, heads, D]
            parts.append(v.flatten(2).transpose(1, 2))
        return torch.cat(parts, 2)


class SemanticSAMOnnxDecoder(nn.Module):
    """SAM-named prompt decoder over the packed embedding (see the module docstring for inputs and outputs).

    Args:
        model: the Semantic-SAM.
        image_size: ``S``, the square encoder input side (a multiple of the model's size divisibility).
    """

    def __init__(self, model: SemanticSAM, image_size: int) -> None:
        super().__init__()
        dec: GranularityDecoder = model.predictor
        if model.cfg.decoder.mask_dim != model.cfg.decoder.hidden_dim:
            raise ValueError("ONNX export packs mask features and values in one tensor: needs mask_dim == hidden_dim")
        self.model = model
        self.dec = dec
        self.image_size = int(image_size)
        self.h4 = self.image_size // 4
        self.shapes = _level_shapes(self.image_size, dec.cfg.num_levels)
        self.n_tokens_mem = sum(h * w for h, w in self.shapes)

    def unpack(self, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``[1, C, T]`` → ``(mask_features [1, C, S/4, S/4], per-layer values [1, M, heads, D])``."""
        c = emb.shape[1]
        n4 = self.h4 * self.h4
        mf = emb[:, :, :n4].reshape(1, c, self.h4, self.h4)
        values = []
        for i, layer in enumerate(self.dec.decoder.layers):
            heads = _cross_attn(layer).n_heads
            v = emb[:, :, n4 + i * self.n_tokens_mem : n4 + (i + 1) * self.n_tokens_mem]
            values.append(v.transpose(1, 2).reshape(1, self.n_tokens_mem, heads, c // heads))
        return mf, values

    def anchors(self, point_coords: Tensor, point_labels: Tensor, input_hw: Tensor) -> tuple[Tensor, Tensor]:
        """Clicks + box → anchor boxes ``[1, N + 1, 4]`` (cxcywh on the padded canvas, clicks then the box) and the
        box's presence ``[1]`` (1.0 when labels 2 and 3 are given). Same arithmetic as ``SemanticSAM.prompt_boxes``.
        """
        s = float(self.image_size)
        hw = input_hw.to(torch.float32)
        wh = torch.stack([hw[1], hw[0]])  # (w, h) of the resized image
        scale = torch.cat([wh, wh])  # (w, h, w, h)
        rel = point_coords[0] / wh  # [N, 2] fractions of the resized image
        clicks = torch.cat([rel, torch.full_like(rel, CLICK_BOX_SIZE)], -1)
        tl_w = (point_labels[0] == 2).to(torch.float32)
        br_w = (point_labels[0] == 3).to(torch.float32)
        has_box = (tl_w.sum() > 0).to(torch.float32) * (br_w.sum() > 0).to(torch.float32)
        tl = (rel * tl_w[:, None]).sum(0) / tl_w.sum().clamp(min=1.0)
        br = (rel * br_w[:, None]).sum(0) / br_w.sum().clamp(min=1.0)
        box = torch.cat([(tl + br) / 2, br - tl]).clamp(min=0.0)
        anchors = torch.cat([clicks, box[None]], 0)
        return (anchors * scale / s)[None], has_box.reshape(1)

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        input_hw = sam_input_size(orig_im_size, self.image_size)
        mf, values = self.unpack(image_embeddings)
        anchors, has_box = self.anchors(point_coords, point_labels, input_hw)
        q = anchors.shape[1]
        k = self.dec.num_tokens
        pb = torch.zeros(anchors.shape[:2], dtype=torch.int64)
        lowres, ious = self._decode(anchors, pb, mf, values)  # [Q, K, h4, h4], [Q, K]
        labels = point_labels[0]
        pos_w = torch.cat([(labels == 1).to(torch.float32), has_box])  # [Q]
        neg_w = torch.cat([(labels == 0).to(torch.float32), torch.zeros_like(has_box)])
        big = torch.full_like(lowres, _NEG_BIG)
        pos_logits = torch.where(pos_w[:, None, None, None] > 0, lowres, big).max(0).values  # [K, h4, h4]
        iou = (ious * pos_w[:, None]).sum(0) / pos_w.sum().clamp(min=1.0)  # [K]
        # negative clicks: the largest own token mask that covers no positive click cell
        cell = torch.floor(point_coords[0] / 4.0).clamp(0, self.h4 - 1).to(torch.int64)  # [N, 2] (col, row)
        flat_idx = cell[:, 1] * self.h4 + cell[:, 0]  # [N]
        flat = lowres.reshape(q, k, self.h4 * self.h4)
        at_pts = flat[:, :, flat_idx]  # [Q, K, N]
        click_pos = (labels == 1).to(torch.float32)
        covers = ((at_pts > 0).to(torch.float32) * click_pos).sum(-1) > 0  # [Q, K]
        area = (flat > 0).to(torch.float32).sum(-1)  # [Q, K]
        score = torch.where(covers, torch.full_like(area, -1.0), area)
        best = score.argmax(-1)  # [Q]
        valid = (score.max(-1).values >= 0).to(torch.float32) * neg_w  # [Q]
        chosen = torch.gather(lowres, 1, best[:, None, None, None].expand(q, 1, self.h4, self.h4))[:, 0]  # [Q, h4, h4]
        removal = torch.where(valid[:, None, None] > 0, chosen, torch.full_like(chosen, _NEG_BIG)).max(0).values
        low = torch.minimum(pos_logits, -removal[None])[None]  # [1, K, h4, h4]
        masks = sam_masks_to_original(low, self.image_size, input_hw, orig_im_size)
        # SAM's mask prompt has no Semantic-SAM counterpart: the inputs stay in the graph (SAM's interface) but
        # contribute exactly 0 (one element read, times 0).
        unused = (mask_input[0, 0, 0, 0] * has_mask_input[0]) * 0.0
        return masks, iou[None] + unused, low

    def _decode(self, anchors: Tensor, pb: Tensor, mf: Tensor, values: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Traceable copy of ``GranularityDecoder.forward`` (final layer, ``exact_batching=False``)."""
        dec = self.dec
        k = dec.num_tokens
        d = dec.cfg.hidden_dim
        tgt, ref_unsig = dec.make_queries(anchors, pb)
        ref = ref_unsig.sigmoid()
        mem = DecoderMemory(memory=mf.new_zeros(1, 1, d), spatial_shapes=self.shapes, mask_features=mf)
        for layer, value in zip(dec.decoder.layers, values, strict=True):
            query_pos = dec.decoder.ref_point_head(gen_sineembed_for_position(ref, d // 2))
            tgt = layer(tgt, query_pos, ref, mem, value, k)
            ref = (dec.bbox_embed(tgt) + inverse_sigmoid(ref)).sigmoid()
        head_in = dec.decoder_norm(dec.decoder_norm(tgt))
        ious = dec.iou_prediction_head(head_in).reshape(-1, k)
        m = torch.einsum("bqc,bchw->bqhw", dec.mask_embed(head_in), mf)
        return m.reshape(-1, k, self.h4, self.h4), ious


@contextlib.contextmanager
def _constant_swin_masks() -> Iterator[None]:
    """Build Swin's shifted-window masks as constants while tracing (the image size is fixed per export).

    Traced through the legacy exporter, the in-place slice assignments of ``shifted_window_mask`` produce a graph
    whose window count is wrong at run time; computing the mask eagerly (numpy) makes it a plain initializer.
    """
    from seem.models.backbones import swin

    original = swin.shifted_window_mask

    def constant(h: int, w: int, window: int, shift: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        m = original(int(h), int(w), window, shift, torch.device("cpu"), torch.float32).numpy().copy()
        return torch.from_numpy(m).to(device=device, dtype=dtype)  # a constant of the trace

    swin.shifted_window_mask = constant
    try:
        yield
    finally:
        swin.shifted_window_mask = original


def _dummy_decoder_inputs(image_size: int, emb: Tensor, n_points: int = 2) -> tuple[Tensor, ...]:
    h4 = image_size // 4
    pts = torch.tensor([[[image_size * 0.4, image_size * 0.3], [image_size * 0.6, image_size * 0.5]]])[:, :n_points]
    labels = torch.tensor([[1.0, 0.0]])[:, :n_points]
    return (
        emb,
        pts.float(),
        labels,
        torch.zeros(1, 1, h4, h4),
        torch.zeros(1),
        torch.tensor([float(image_size), float(image_size)]),
    )


def export_encoder_decoder(
    enc: nn.Module,
    dec: nn.Module,
    image: Tensor,
    decoder_inputs: tuple[Tensor, ...],
    enc_path: Path,
    dec_path: Path,
    opset: int,
) -> None:
    """``torch.onnx.export`` of an encoder (``image`` → ``image_embeddings``) and a prompt decoder with SAM's names
    (``DECODER_INPUT_NAMES`` → ``DECODER_OUTPUT_NAMES``; the number of points and the output size dynamic), traced
    with the TorchScript exporter. Call under ``torch.no_grad()``."""
    torch.onnx.export(
        enc,
        (image,),
        str(enc_path),
        input_names=["image"],
        output_names=["image_embeddings"],
        opset_version=opset,
        dynamo=False,
    )
    torch.onnx.export(
        dec,
        decoder_inputs,
        str(dec_path),
        input_names=list(DECODER_INPUT_NAMES),
        output_names=list(DECODER_OUTPUT_NAMES),
        dynamic_axes={
            "point_coords": {1: "num_points"},
            "point_labels": {1: "num_points"},
            "masks": {2: "height", 3: "width"},
        },
        opset_version=opset,
        dynamo=False,
    )


def export_semantic_sam_onnx(
    model: SemanticSAM, out_dir: str | os.PathLike[str], *, image_size: int = 1024, opset: int = 17
) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``seem_onnx.json`` (metadata) for ``model`` into ``out_dir``.

    The model is switched to the ``grid_sample`` MSDA core (exports to ONNX ``GridSample``; results equal).
    Returns ``{"encoder": path, "decoder": path, "metadata": path}``.
    """
    if not isinstance(model, SemanticSAM):
        raise TypeError(f"expected a SemanticSAM, got {type(model).__name__}")
    div = model.cfg.size_divisibility
    if image_size <= 0 or image_size % max(div, 4):
        raise ValueError(f"image_size must be a positive multiple of {max(div, 4)}, got {image_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    model.set_msda_impl("grid_sample")
    enc = SemanticSAMOnnxEncoder(model).eval()
    dec = SemanticSAMOnnxDecoder(model, image_size).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        emb = enc(x)
    enc_path, dec_path = out / ENCODER_FILE, out / DECODER_FILE
    import warnings

    with warnings.catch_warnings(), torch.no_grad(), _constant_swin_masks():
        warnings.simplefilter("ignore")
        export_encoder_decoder(enc, dec, x, _dummy_decoder_inputs(image_size, emb), enc_path, dec_path, opset)
    meta = {
        "family": "semantic_sam",
        "image_size": image_size,
        "resize": "longest_side",
        "pixel_mean": list(model.cfg.pixel_mean),
        "pixel_std": list(model.cfg.pixel_std),
        "num_masks": model.num_tokens,
        "mask_input_size": [image_size // 4, image_size // 4],
        "embedding_shape": list(emb.shape),
        "opset": opset,
    }
    meta_path = out / METADATA_FILE
    meta_path.write_text(json.dumps(meta, indent=2))
    return {"encoder": enc_path, "decoder": dec_path, "metadata": meta_path}


def quantize_decoder_int8(decoder_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """onnxruntime dynamic int8 quantisation (weights int8, activations quantised at run time) of a decoder."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(decoder_path), str(out_path), weight_type=QuantType.QInt8)
    return Path(out_path)


def load_metadata(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``seem_onnx.json`` of an export folder."""
    return json.loads((Path(folder) / METADATA_FILE).read_text())


class _TorchSession:
    """An ``onnxruntime.InferenceSession``-like ``run(None, feeds)`` over an export wrapper module (PyTorch)."""

    def __init__(self, module: nn.Module, input_names: tuple[str, ...]) -> None:
        self.module = module
        self.input_names = input_names

    def run(self, output_names: Any, feeds: dict[str, Any]) -> list[Any]:
        with torch.no_grad():
            out = self.module(*[torch.from_numpy(feeds[n]) for n in self.input_names])
        outs = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in outs]


class TorchSamPredictor(SamOnnxPredictor):
    """``SamOnnxPredictor`` whose sessions run the PyTorch export wrappers (built by ``torch_sam_predictor``)."""

    def __repr__(self) -> str:
        return f"TorchSamPredictor(semantic_sam, image_size={self.image_size})"


def torch_sam_predictor(model: SemanticSAM, image_size: int = 1024) -> TorchSamPredictor:
    """A ``SamOnnxPredictor`` whose two sessions run the PyTorch export wrappers instead of onnxruntime.

    Same preprocessing, prompt encoding and output selection as the ONNX path, so comparing the two measures
    the export alone (``tests/test_export_onnx.py``, ``benchmarks/bench_onnx.py``).
    """
    model = model.eval()
    model.set_msda_impl("grid_sample")
    p = TorchSamPredictor.__new__(TorchSamPredictor)
    p._enc = _TorchSession(SemanticSAMOnnxEncoder(model).eval(), ("image",))
    p._dec = _TorchSession(SemanticSAMOnnxDecoder(model, image_size).eval(), DECODER_INPUT_NAMES)
    p._enc_input = "image"
    p.image_size = int(image_size)
    p._out_names = list(DECODER_OUTPUT_NAMES)
    p.mask_input_size = (image_size // 4, image_size // 4)
    p.mask_threshold = 0.0
    p._embedding = p._orig_hw = p._input_hw = None
    p.encoder_path = p.decoder_path = Path("<torch>")
    return p
