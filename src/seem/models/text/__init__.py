"""SEEM's text path: CLIP BPE tokenizer, CLIP-style causal text encoder, class-name prompt templates."""

from seem.models.text.encoder import TextEncoder, class_logits, vl_similarity
from seem.models.text.templates import PROMPT_TEMPLATES, strip_class_name
from seem.models.text.tokenizer import EOT_ID, PAD_ID, SOT_ID, ClipTokenizer

__all__ = [
    "EOT_ID",
    "PAD_ID",
    "PROMPT_TEMPLATES",
    "SOT_ID",
    "ClipTokenizer",
    "TextEncoder",
    "class_logits",
    "strip_class_name",
    "vl_similarity",
]
