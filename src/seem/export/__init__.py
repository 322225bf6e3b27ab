"""Model export (ONNX): ``seem export onnx`` and ``seem.export.onnx`` (see ``docs/onnx.md``)."""

from seem.export.onnx import export_semantic_sam_onnx, quantize_decoder_int8, torch_sam_predictor

__all__ = ["export_semantic_sam_onnx", "quantize_decoder_int8", "torch_sam_predictor"]
