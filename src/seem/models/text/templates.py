"""SEEM's prompt templates for turning class names into text embeddings.

``PROMPT_TEMPLATES`` is SEEM's ``get_prompt_templates()`` list (``utils/prompt_engineering.py``) in SEEM's
order: SEEM's own ``'{}.'`` first, then the 80 ImageNet prompt templates of OpenAI's CLIP (MIT licence,
in the order SEEM lists them). The strings were reconstructed from the parity fixture (the token ids SEEM
fed for each class in ``case_a_panoptic.npz``, decoded with our tokenizer and the known class name; the
spelling "close-up" is CLIP's), and re-tokenising them reproduces those ids exactly for every class.
"""

from __future__ import annotations

PROMPT_TEMPLATES: tuple[str, ...] = (
    "{}.",
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
"""81 templates with one ``{}`` placeholder each, SEEM's eval-time order."""

_STRIPPED_SUFFIXES = ("-other", "-merged", "-stuff")


def strip_class_name(name: str) -> str:
    """SEEM's class-name cleanup before templating: remove every ``-other``, ``-merged`` and ``-stuff``.

    Like the official ``str.replace`` chain, occurrences anywhere in the name are removed (COCO names such
    as ``"wall-other-merged"`` → ``"wall"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"class name must be a str, got {type(name).__name__}")
    for suffix in _STRIPPED_SUFFIXES:
        name = name.replace(suffix, "")
    return name


def fill_templates(name: str) -> list[str]:
    """The 81 prompts for one (already stripped) class name, in ``PROMPT_TEMPLATES`` order."""
    return [t.format(name) for t in PROMPT_TEMPLATES]
