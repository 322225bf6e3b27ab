"""Class vocabularies: the default COCO-panoptic classes and a memory + disk cache of class embeddings.

Encoding a vocabulary runs every class name through SEEM's 81 prompt templates; for the 133 COCO-panoptic classes
that is ~11k text-encoder passes, minutes on a CPU with a full-size model. ``VocabularyCache`` therefore keeps the
embeddings in memory and on disk (safetensors), keyed by a hash of the text-encoder weights, the template list and
the class names, so each vocabulary is encoded once per model.

Disk location: ``vocab/`` under seem's cache root (``seem.hub.cache_dir()``: ``$SEEM_CACHE``, else
``$XDG_CACHE_HOME/seem``, else ``~/.cache/seem``). A cache directory that cannot be written is skipped with a
warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seem.models.seem_model import SEEMModel
from seem.models.text.encoder import TextEncoder
from seem.models.text.templates import PROMPT_TEMPLATES

__all__ = [
    "CACHE_ENV",
    "Vocabulary",
    "VocabularyCache",
    "coco_panoptic_categories",
    "default_cache_dir",
    "validate_class_names",
]

CACHE_ENV = "SEEM_CACHE"
FORMAT = "seem-vocab-1"
BACKGROUND = "background"
PROGRESS_CHUNK = 16
"""Classes encoded per step when a progress bar is shown (vocabularies larger than this)."""


@lru_cache(maxsize=1)
def _coco_categories() -> tuple[tuple[int, str, bool, tuple[int, int, int]], ...]:
    text = resources.files("seem").joinpath("data/coco_panoptic_categories.json").read_text(encoding="utf-8")
    return tuple((int(c["id"]), str(c["name"]), bool(c["isthing"]), tuple(c["color"])) for c in json.loads(text))


def coco_panoptic_categories() -> list[dict[str, Any]]:
    """The 133 COCO-panoptic categories (80 things, 53 stuff), in the official contiguous order.

    Each is ``{"id": COCO category id, "name": str, "isthing": bool, "color": [r, g, b]}``; names are the official
    ones (``"wall-other-merged"``, ...): SEEM strips ``-other`` / ``-merged`` / ``-stuff`` before encoding them.
    """
    return [{"id": i, "name": n, "isthing": t, "color": list(c)} for i, n, t, c in _coco_categories()]


def validate_class_names(names: Any, what: str = "class_names") -> tuple[str, ...]:
    """Check a vocabulary: a non-empty sequence of distinct, non-empty strings (not ``"background"``)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{what} must be a list of class names (str), got {type(names).__name__}")
    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(n).__name__}")
        if not n.strip():
            raise ValueError(f"{what}[{i}] is empty")
        out.append(n.strip())
    if not out:
        raise ValueError(f"{what} is empty")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"{what} has duplicates: {dup}")
    if BACKGROUND in out:
        raise ValueError(f"{what} must not contain {BACKGROUND!r}: it is always added as the last (no-object) column")
    return tuple(out)


@dataclass(frozen=True)
class Vocabulary:
    """A class vocabulary with its embeddings.

    Attributes:
        names: the ``K`` class names.
        embeddings: ``[K + 1, D]`` unit-norm class embeddings, ``"background"`` last (``SEEMModel.class_embeddings``).
        stuff: indices of stuff classes (panoptic: merged per class, no instances); every other class is a thing.
        category_ids: exported category id per class (COCO ids for the default vocabulary, else ``index + 1``).
    """

    names: tuple[str, ...]
    embeddings: Tensor
    stuff: frozenset[int]
    category_ids: tuple[int, ...]

    @property
    def thing_ids(self) -> list[int]:
        return [i for i in range(len(self.names)) if i not in self.stuff]

    def label(self, index: int) -> str:
        """Name of column ``index`` (``"background"`` for the last column)."""
        return self.names[index] if index < len(self.names) else BACKGROUND

    def categories(self) -> list[dict[str, Any]]:
        return [
            {"id": self.category_ids[i], "name": n, "isthing": i not in self.stuff} for i, n in enumerate(self.names)
        ]


def default_cache_dir() -> Path:
    """Where vocabularies are cached: ``vocab/`` under seem's cache root (``seem.hub.cache_dir()``)."""
    from seem.hub import cache_dir

    return cache_dir() / "vocab"


_HASHES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[tuple[int, int], ...], str]] = weakref.WeakKeyDictionary()


def _version(t: Tensor) -> int:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors track no version; their data pointer still identifies them
        return -1


def text_encoder_hash(model: SEEMModel) -> str:
    """sha256 of ``model``'s text-encoder weights and the prompt templates, memoised per model and weight version.

    A text encoder whose frozen weights live outside the state dict (``MiniLMTextEncoder``) adds its
    ``fingerprint()`` (the weight file's sha256) and tokenizer settings."""
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("text_encoder.")}
    state = tuple((t.data_ptr(), _version(t)) for _, t in sorted(sd.items()))
    known = _HASHES.get(model)
    if known is not None and known[0] == state:
        return known[1]
    h = hashlib.sha256()
    h.update(("\n".join(PROMPT_TEMPLATES)).encode("utf-8"))
    te = model.text_encoder
    if not isinstance(te, TextEncoder):  # frozen weights held outside the state dict (MiniLM): name them by file hash
        h.update(f"{te.fingerprint()}|{te.tokenizer_name}\n".encode())
    for k in sorted(sd):
        t = sd[k].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(sd[k].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    _HASHES[model] = (state, h.hexdigest())
    return h.hexdigest()


class VocabularyCache:
    """Class embeddings of a model, cached in memory and on disk.

    Args:
        model: the ``SEEMModel`` whose text encoder encodes the names.
        cache_dir: a directory, ``None`` for ``default_cache_dir()`` (read when first needed, so the environment
            variable can be set late), or ``False`` to keep embeddings in memory only.
        progress: show a ``tqdm`` progress bar (stderr) while encoding vocabularies of more than
            ``PROGRESS_CHUNK`` classes.
    """

    def __init__(self, model: SEEMModel, cache_dir: str | Path | bool | None = None, progress: bool = True) -> None:
        self.model = model
        self._cache_dir = cache_dir
        self.progress = progress
        self._memory: dict[tuple[str, ...], Tensor] = {}
        self._weights_hash: str | None = None

    @property
    def cache_dir(self) -> Path | None:
        if self._cache_dir is False:
            return None
        if self._cache_dir is None or self._cache_dir is True:
            return default_cache_dir()
        return Path(self._cache_dir)

    def weights_hash(self) -> str:
        """sha256 over the text encoder's parameters (names, dtypes, shapes, bytes) and the prompt templates.

        Computed once per model and weight state (shared by every cache of the same model, e.g. one per server
        session), and again only when a text-encoder tensor is replaced or changed in place."""
        if self._weights_hash is None:
            self._weights_hash = text_encoder_hash(self.model)
        return self._weights_hash

    def _key(self, names: tuple[str, ...]) -> str:
        h = hashlib.sha256()
        h.update(FORMAT.encode())
        h.update(self.weights_hash().encode())
        h.update(json.dumps(list(names)).encode("utf-8"))
        return h.hexdigest()[:40]

    def get(self, names: Sequence[str]) -> Tensor:
        """``[K + 1, D]`` class embeddings of ``names`` (background last), from memory, disk or the text encoder."""
        key_names = validate_class_names(names)
        if key_names in self._memory:
            return self._memory[key_names]
        shipped = getattr(self.model, "builtin_class_embeddings", {}).get(key_names)
        if shipped is not None and self.model.builtin_text_state == self.model.text_state_hash():
            # precomputed with the model's own (possibly not installed) text encoder, in its current state
            self._memory[key_names] = shipped.to(self.model.device)
            return self._memory[key_names]
        emb = self._load(key_names)
        if emb is None:
            emb = self._encode(key_names)
            self._store(key_names, emb)
        dev = self.model.device
        emb = emb.to(dev)
        self._memory[key_names] = emb
        return emb

    # ------------------------------------------------------------------ encoding

    @torch.no_grad()
    def _encode(self, names: tuple[str, ...]) -> Tensor:
        # in fp32 even inside an autocast region: the cached embeddings must not depend on where they were made
        with torch.autocast(self.model.device.type, enabled=False):
            return self._encode_fp32(names)

    def _encode_fp32(self, names: tuple[str, ...]) -> Tensor:
        if len(names) <= PROGRESS_CHUNK or not self.progress:
            return self.model.class_embeddings(list(names)).detach().float().cpu()
        from tqdm.auto import tqdm

        rows: list[Tensor] = []
        background: Tensor | None = None
        with tqdm(total=len(names), desc="encoding class names", unit="class", leave=False) as bar:
            for start in range(0, len(names), PROGRESS_CHUNK):
                chunk = list(names[start : start + PROGRESS_CHUNK])
                e = self.model.class_embeddings(chunk).detach().float().cpu()
                rows.append(e[:-1])
                background = e[-1:]
                bar.update(len(chunk))
        assert background is not None
        return torch.cat([*rows, background])

    # ------------------------------------------------------------------ disk

    def _path(self, names: tuple[str, ...]) -> Path | None:
        d = self.cache_dir
        return None if d is None else d / f"{self._key(names)}.safetensors"

    def _load(self, names: tuple[str, ...]) -> Tensor | None:
        path = self._path(names)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings")
        except Exception as e:  # a corrupt file is re-encoded and overwritten
            warnings.warn(f"ignoring unreadable vocabulary cache {path}: {e}", stacklevel=3)
            return None
        if (
            meta.get("format") != FORMAT
            or meta.get("weights") != self.weights_hash()
            or json.loads(meta.get("names", "null")) != list(names)
            or emb.dim() != 2
            or emb.shape[0] != len(names) + 1
        ):
            return None
        return emb

    def _store(self, names: tuple[str, ...], emb: Tensor) -> None:
        path = self._path(names)
        if path is None:
            return
        from safetensors.torch import save

        from seem.io import write_files_atomically

        meta = {"format": FORMAT, "weights": self.weights_hash(), "names": json.dumps(list(names))}
        try:
            write_files_atomically({path: save({"embeddings": emb.contiguous()}, metadata=meta)})
        except OSError as e:
            warnings.warn(f"could not write the vocabulary cache {path}: {e}", stacklevel=3)
