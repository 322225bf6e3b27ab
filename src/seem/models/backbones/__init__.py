"""Image backbones.

``FocalNet`` covers both official SEEM flavours (``focal_dw`` Focal-T, ``focal`` Focal-L).
"""

from .focalnet import FocalNet

__all__ = ["FocalNet"]
