"""Pixel decoders. ``TransformerEncoderPixelDecoder`` is SEEM-Focal's FPN + transformer-encoder decoder."""

from .fpn_transformer import PixelDecoderOutput, TransformerEncoderPixelDecoder

__all__ = ["PixelDecoderOutput", "TransformerEncoderPixelDecoder"]
