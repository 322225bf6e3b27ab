"""Model export (ONNX): ``seem export onnx``, ``seem.export.onnx`` (Semantic-SAM) and ``seem.export.seem_onnx``
(SEEM v1); see ``docs/onnx.md``."""

from seem.export.onnx import export_semantic_sam_onnx, quantize_decoder_int8, torch_sam_predictor
from seem.export.seem_onnx import export_seem_onnx, torch_seem_sam_predictor

__all__ = [
    "export_seem_onnx",
    "export_semantic_sam_onnx",
    "quantize_decoder_int8",
    "torch_sam_predictor",
    "torch_seem_sam_predictor",
]
