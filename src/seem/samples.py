"""Small real photos shipped with the package, for demos, docs and tests that must run on a fresh machine.

Both come from scikit-image's sample data (``skimage/data`` in its wheel), where their photographers released them
without copyright restrictions (CC0); re-encoded here as JPEG at their original size:

- ``chelsea``: Chelsea the cat, 451 × 300, photo by Stéfan van der Walt (CC0);
- ``coffee``: a coffee cup on a saucer, 600 × 400, photo by Rachel Michetti, courtesy of Pikolo Espresso Bar (CC0).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SAMPLES", "sample_image"]

SAMPLES: dict[str, str] = {
    "chelsea": "Chelsea the cat (451 × 300), photo by Stéfan van der Walt, CC0, from scikit-image's sample data",
    "coffee": "a coffee cup (600 × 400), photo by Rachel Michetti / Pikolo Espresso Bar, CC0, from scikit-image",
}
"""Name → description (size, photographer, licence) of each shipped photo."""


def sample_image(name: str = "chelsea") -> Path:
    """Path of a shipped photo (``SAMPLES``); pass it to ``Segmenter.set_image`` or any CLI command."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample image {name!r}; choose from {sorted(SAMPLES)}")
    return Path(str(resources.files("seem").joinpath(f"data/{name}.jpg")))
