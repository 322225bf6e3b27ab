"""CLIP byte-level BPE tokenizer, producing exactly the ids SEEM's text path feeds its text encoder.

SEEM tokenizes with Hugging Face's slow ``CLIPTokenizer`` (``openai/clip-vit-base-patch32`` files, ftfy
installed), called as ``tok(texts, padding="max_length", truncation=True, max_length=77)``. This module
reimplements that behaviour from the BPE merge list shipped with the package
(``bpe_simple_vocab_16e6.txt.gz``, the MIT-licensed file of OpenAI's CLIP); nothing is downloaded.

Pipeline for one string:

1. Split out literal special tokens ``<|startoftext|>`` / ``<|endoftext|>`` (exact, case-sensitive match);
   they become their ids directly. This is the HF behaviour: a literal ``<|endoftext|>`` inside the text
   yields an EOT id (49407) early in the sequence, which then becomes the pooled position.
2. For each remaining chunk: ``ftfy.fix_text``, collapse every run of whitespace to one space, strip,
   lowercase.
3. Split into words with CLIP's regex (contractions, letter runs, single digits, punctuation runs; the
   special tokens again, case-insensitively).
4. Map each word's UTF-8 bytes to printable unicode symbols (GPT-2 byte mapping) and apply the BPE merges;
   the last symbol of a word carries the ``</w>`` end-of-word marker.
5. Keep at most ``context_length - 2`` BPE tokens, add SOT (49406) in front and EOT (49407) after, pad
   with 49407 to ``context_length``. ``attention_mask`` is 1 on SOT..EOT and 0 on the padding.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import itertools
from collections.abc import Sequence

import ftfy
import regex
import torch
from torch import Tensor

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
"""Id of ``<|startoftext|>``."""
EOT_ID = 49407
"""Id of ``<|endoftext|>``; also the padding id in SEEM (``pad_token = eos``)."""
PAD_ID = EOT_ID
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2
"""Merges used by CLIP: the first 48,894 lines after the header of the merge file."""
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_END_OF_WORD = "</w>"

# Literal special tokens, contractions, runs of letters, single digits, runs of other non-space symbols.
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_SPECIAL_SPLIT = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")
_WHITESPACE = regex.compile(r"\s+")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to themselves; the remaining 68
    bytes map, in increasing byte order, to code points 256, 257, ... so no symbol is whitespace or a
    control character. The dict's insertion order (printable bytes first, then the others) is the order of
    the first 256 vocabulary entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """HF slow ``CLIPTokenizer`` cleaning: ``ftfy.fix_text``, whitespace runs → one space, strip, lowercase."""
    return _WHITESPACE.sub(" ", ftfy.fix_text(text)).strip().lower()


class ClipTokenizer:
    """CLIP BPE tokenizer matching SEEM's ``CLIPTokenizer(...)(texts, padding="max_length", truncation=True)``.

    ``tokenizer(texts, context_length=77)`` returns ``(input_ids, attention_mask)``, both ``int64``
    ``[N, context_length]`` CPU tensors; a single string gives ``N = 1``.

    Use ``ClipTokenizer.default()`` for a shared, lazily built instance (loading the merge file takes a
    fraction of a second).
    """

    def __init__(self) -> None:
        raw = importlib.resources.files(__package__).joinpath(_VOCAB_FILE).read_bytes()
        lines = gzip.decompress(raw).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise RuntimeError(f"{_VOCAB_FILE}: unexpected merge list (got {len(merges)} entries)")
        self._byte_encoder = byte_to_unicode()
        self._byte_decoder = {s: b for b, s in self._byte_encoder.items()}
        symbols = list(self._byte_encoder.values())
        vocab = symbols + [s + _END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self._ranks: dict[tuple[str, str], int] = {(a, b): i for i, (a, b) in enumerate(merges)}
        assert self.encoder[SOT_TOKEN] == SOT_ID and self.encoder[EOT_TOKEN] == EOT_ID
        # One cache per instance (functools.lru_cache on a method would pin ``self``).
        self._bpe_cached = functools.lru_cache(maxsize=65536)(self._bpe)

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def default() -> ClipTokenizer:
        """Process-wide shared tokenizer."""
        return ClipTokenizer()

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    # ----------------------------------------------------------------------------------------------- BPE
    def _bpe(self, word: str) -> tuple[str, ...]:
        """Merge the byte-symbols of one word (already byte-mapped) into BPE tokens, ``</w>`` on the last."""
        if word in (SOT_TOKEN, EOT_TOKEN):
            return (word,)
        parts = [*word[:-1], word[-1] + _END_OF_WORD]
        while len(parts) > 1:
            # Lowest-ranked adjacent pair present in the word.
            best_rank, best = None, None
            for pair in itertools.pairwise(parts):
                rank = self._ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every non-overlapping occurrence, left to right
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def tokenize(self, text: str) -> list[str]:
        """BPE token strings of ``text`` (no SOT/EOT added, no truncation)."""
        if not isinstance(text, str):
            raise TypeError(f"ClipTokenizer: expected a str, got {type(text).__name__}")
        tokens: list[str] = []
        for chunk in _SPECIAL_SPLIT.split(text):
            if chunk in (SOT_TOKEN, EOT_TOKEN):
                tokens.append(chunk)
                continue
            for word in _WORD_PATTERN.findall(clean_text(chunk)):
                mapped = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
                tokens.extend(self._bpe_cached(mapped))
        return tokens

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (no SOT/EOT added, no truncation)."""
        return [self.encoder[t] for t in self.tokenize(text)]

    def decode(self, ids: Sequence[int] | Tensor, skip_special: bool = True) -> str:
        """Text of ``ids``: words separated by single spaces (``</w>`` → space), lowercase as tokenized.

        Special ids (SOT, EOT / padding) are dropped when ``skip_special``. Decoding is lossy (case and
        the spacing around punctuation are not recoverable).
        """
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = bytearray()
        for i in ids:
            i = int(i)
            if i not in self.decoder:
                raise ValueError(f"ClipTokenizer.decode: id {i} outside the vocabulary [0, {self.vocab_size})")
            token = self.decoder[i]
            if i in (SOT_ID, EOT_ID):
                if not skip_special:
                    out.extend(token.encode("utf-8") + b" ")
                continue
            end_of_word = token.endswith(_END_OF_WORD)
            if end_of_word:
                token = token[: -len(_END_OF_WORD)]
            out.extend(self._byte_decoder[c] for c in token)
            if end_of_word:
                out.extend(b" ")
        return out.decode("utf-8", errors="replace").strip()

    # ---------------------------------------------------------------------------------------- batching
    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> tuple[Tensor, Tensor]:
        """Tokenize, truncate and pad as SEEM does.

        Args:
            texts: one string or a non-empty sequence of strings.
            context_length: output length (77 in every SEEM model); at least 2.

        Returns:
            ``(input_ids, attention_mask)``: ``int64 [N, context_length]``. Ids are ``SOT, ≤ context_length-2
            BPE ids, EOT`` then ``EOT`` padding; the mask is 1 on SOT..EOT (inclusive) and 0 on padding.
        """
        if isinstance(texts, str):
            batch = [texts]
        elif isinstance(texts, Sequence) and not isinstance(texts, (bytes, bytearray)):
            batch = list(texts)
            if not batch:
                raise ValueError("ClipTokenizer: got an empty list of texts")
            bad = [i for i, t in enumerate(batch) if not isinstance(t, str)]
            if bad:
                raise TypeError(
                    f"ClipTokenizer: every text must be a str; item {bad[0]} is {type(batch[bad[0]]).__name__}"
                )
        else:
            raise TypeError(f"ClipTokenizer: texts must be a str or a list of str, got {type(texts).__name__}")
        if not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"ClipTokenizer: context_length must be an int >= 2, got {context_length!r}")
        input_ids = torch.full((len(batch), context_length), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), context_length), dtype=torch.long)
        for row, text in enumerate(batch):
            ids = [SOT_ID, *self.encode(text)[: context_length - 2], EOT_ID]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask
