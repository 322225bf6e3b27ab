"""Official checkpoint layouts → our modules (strict key maps) and our own safetensors format."""

from seem.models.checkpoints.common import CheckpointError, ConversionReport, KeyMap, convert_state_dict

__all__ = ["CheckpointError", "ConversionReport", "KeyMap", "convert_state_dict"]
