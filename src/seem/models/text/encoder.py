"""SEEM's language encoder: a CLIP-style causal text transformer plus a projection.

Official modules: ``modeling/language/LangEncoder/transformer.py`` (the transformer) wrapped by
``modeling/language/vlpencoder.py`` (``lang_proj``, ``logit_scale``, tokenizer calls, class-name
embeddings).

Checkpoint mapping (official → ours, prefix only):

- ``sem_seg_head.predictor.lang_encoder.lang_encoder.*`` → ``TextEncoder.transformer.*``
- ``sem_seg_head.predictor.lang_encoder.{lang_proj, logit_scale}`` → ``TextEncoder.{lang_proj, logit_scale}``

No key is renamed below those prefixes. The causal mask is built on the fly and is not in the state dict
(official: a plain attribute).

Shapes: ``N`` sequences, ``L`` tokens (``≤ context_length``, 77), ``W`` transformer width, ``P`` projection
dim (``DIM_PROJ``). Everything is batch-first at the public boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from seem.models.config import TextEncoderConfig
from seem.models.text.templates import PROMPT_TEMPLATES, strip_class_name
from seem.models.text.tokenizer import ClipTokenizer

NORM_EPS = 1e-7
"""Epsilon of SEEM's ``v / (‖v‖ + eps)`` normalisations (class logits, grounding, per-template embeddings)."""
VL_SCALE_MAX = 100.0
"""``vl_similarity`` clamps ``exp(logit_scale)`` to this; ``class_logits`` does not clamp."""
BACKGROUND = "background"


# ----------------------------------------------------------------------------------------------- layers
class TFLayerNorm(nn.Module):
    """TF-style LayerNorm (eps inside the square root, 1e-12), normalised in float32, affine in input dtype.

    ``y = weight * ((x - mean) / sqrt(var + eps)).to(x.dtype) + bias`` over the last dim (biased variance).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        xf = x.float()
        mean = xf.mean(-1, keepdim=True)
        var = (xf - mean).pow(2).mean(-1, keepdim=True)
        xf = (xf - mean) / torch.sqrt(var + self.variance_epsilon)
        return self.weight * xf.to(dtype) + self.bias


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class TextMLP(nn.Module):
    """``c_proj(QuickGELU(c_fc(x)))`` with hidden size ``4 * width`` (official ``mlp`` Sequential keys)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    Sequence-first internally (``x``: ``[L, N, W]``), as the official block, so ``nn.MultiheadAttention``
    runs exactly the same code path.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = TFLayerNorm(width)
        self.mlp = TextMLP(width)
        self.ln_2 = TFLayerNorm(width)

    def forward(self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """Token + learned position embeddings, ``layers`` pre-LN blocks, ``ln_final`` (official ``Transformer``).

    With ``causal`` (SEEM: ``AUTOGRESSIVE: True``) every position attends to itself and earlier positions
    only and the padding mask is ignored; otherwise padding keys (``attention_mask == 0``) are masked.
    """

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.causal = cfg.causal
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln_final = TFLayerNorm(cfg.width)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Official init (weights are normally loaded from a checkpoint): truncated normal std 0.02 for the
        # embeddings and every Linear, zero Linear biases; MHA's in_proj keeps PyTorch's xavier init.
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> Tensor:
        """``input_ids`` ``[N, L]`` (validated by the caller) → last hidden state ``[N, L, W]`` after ``ln_final``.

        ``trace``, when given, receives ``hidden/{i}`` (output of block i, ``[N, L, W]``) and ``ln_final``.
        """
        n_tok = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:n_tok]
        x = x.transpose(0, 1)  # [L, N, W]
        attn_mask = key_padding_mask = None
        if self.causal:
            attn_mask = torch.full((n_tok, n_tok), float("-inf"), dtype=x.dtype, device=x.device).triu_(1)
        elif attention_mask is not None:
            key_padding_mask = attention_mask == 0
        for i, block in enumerate(self.resblocks):
            x = block(x, attn_mask, key_padding_mask)
            if trace is not None:
                trace[f"hidden/{i}"] = x.transpose(0, 1)
        x = self.ln_final(x.transpose(0, 1))
        if trace is not None:
            trace["ln_final"] = x
        return x


# --------------------------------------------------------------------------------------- similarities
def _normalize(v: Tensor) -> Tensor:
    return v / (v.norm(dim=-1, keepdim=True) + NORM_EPS)


def class_logits(emb: Tensor, class_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """SEEM's ``compute_similarity``: ``exp(logit_scale) · normalize(emb) @ class_embᵀ``, NOT clamped.

    Args:
        emb: ``[..., P]`` query embeddings (e.g. decoder captions ``[B, Q, P]``); normalised here with
            ``v / (‖v‖ + 1e-7)``.
        class_emb: ``[K, P]`` class embeddings, already unit norm (``TextEncoder.class_embeddings``).
        logit_scale: the *log* scale (the ``logit_scale`` parameter); ``exp`` is applied here.

    Returns:
        ``[..., K]`` logits.
    """
    if emb.shape[-1] != class_emb.shape[-1] or class_emb.dim() != 2:
        raise ValueError(f"class_logits: emb {tuple(emb.shape)} and class_emb {tuple(class_emb.shape)} mismatch")
    scale = torch.as_tensor(logit_scale, dtype=emb.dtype, device=emb.device).exp()
    return (scale * _normalize(emb)) @ class_emb.transpose(0, 1)


def vl_similarity(a: Tensor, b: Tensor, logit_scale: Tensor | float, normalize: bool = True) -> Tensor:
    """Grounding similarity: ``min(exp(logit_scale), 100) · â @ b̂ᵀ``.

    Args:
        a: ``[M, P]`` (e.g. grounding-query captions ``pred_gtexts``).
        b: ``[T, P]`` (e.g. the pooled ``class_emb`` of T phrases).
        logit_scale: the log scale; ``exp`` is applied and clamped to 100 here.
        normalize: normalise both inputs with ``v / (‖v‖ + 1e-7)`` first, as SEEM's grounding evaluation
            does before calling ``vl_similarity`` (set False if they are already normalised).

    Returns:
        ``[M, T]``; the best query of phrase t is ``argmax`` over dim 0.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"vl_similarity: expected [M, P] and [T, P], got {tuple(a.shape)} and {tuple(b.shape)}")
    if normalize:
        a, b = _normalize(a), _normalize(b)
    scale = torch.as_tensor(logit_scale, dtype=a.dtype, device=a.device).exp().clamp(max=VL_SCALE_MAX)
    return scale * (a @ b.transpose(0, 1))


# ------------------------------------------------------------------------------------------- encoder
def check_token_ids(
    who: str, input_ids: Tensor, attention_mask: Tensor | None, context_length: int, vocab_size: int
) -> None:
    """Raise ``TypeError`` / ``ValueError`` (prefixed with ``who``) unless ``input_ids`` is an int ``[N ≥ 1, L]``
    tensor with ``1 ≤ L ≤ context_length`` and ids in ``[0, vocab_size)``, and ``attention_mask`` (if given) has its
    shape."""
    if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        what = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise TypeError(f"{who}: input_ids must be an int64/int32 tensor, got {what}")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or not 1 <= input_ids.shape[1] <= context_length:
        raise ValueError(
            f"{who}: input_ids must be [N>=1, L] with 1 <= L <= {context_length}, got {tuple(input_ids.shape)}"
        )
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{who}: token ids must lie in [0, {vocab_size}), got [{lo}, {hi}]")
    if attention_mask is not None and (
        not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape
    ):
        got = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"{who}: attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {got}")


def check_class_names(class_names: Sequence[str], chunk_size: int) -> None:
    """``class_embeddings``' argument checks: a non-empty list of str and ``chunk_size >= 1``."""
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_embeddings: class_names must be a list of str, got {type(class_names).__name__}")
    if len(class_names) == 0:
        raise ValueError("class_embeddings: class_names is empty")
    bad = [i for i, n in enumerate(class_names) if not isinstance(n, str)]
    if bad:
        raise TypeError(f"class_embeddings: class name {bad[0]} is {type(class_names[bad[0]]).__name__}, not str")
    if chunk_size < 1:
        raise ValueError(f"class_embeddings: chunk_size must be >= 1, got {chunk_size}")


class TextEncoding(NamedTuple):
    """Result of ``TextEncoder.encode_text``."""

    input_ids: Tensor
    """``int64 [N, L]``."""
    attention_mask: Tensor
    """``int64 [N, L]``, 1 on SOT..EOT."""
    token_emb: Tensor
    """``[N, L, P]`` projected last hidden states (not normalised)."""
    pooled: Tensor
    """``[N, P]`` projected state at ``input_ids.argmax(-1)`` (the first EOT), not normalised."""


class TextEncoder(nn.Module):
    """SEEM's language encoder (official ``LanguageEncoder`` in ``vlpencoder.py``).

    Parameters: ``transformer`` (``TextTransformer``), ``lang_proj`` ``[W, P]`` (used as ``x @ lang_proj``),
    ``logit_scale`` (scalar, log of the logit multiplier). The tokenizer is ``ClipTokenizer.default()``.
    """

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = TextTransformer(cfg)
        self.lang_proj = nn.Parameter(torch.empty(cfg.width, cfg.proj_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)

    @property
    def tokenizer(self) -> ClipTokenizer:
        """The shared ``ClipTokenizer.default()`` (not stored on the module, so copies and pickles stay light)."""
        return ClipTokenizer.default()

    # ----------------------------------------------------------------------------------- validation
    def _check_tokens(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        check_token_ids("TextEncoder", input_ids, attention_mask, self.cfg.context_length, self.cfg.vocab_size)

    # -------------------------------------------------------------------------------------- forward
    def encode_tokens(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Official ``forward_language_token(..., norm=False)``.

        Args:
            input_ids: ``int64 [N, L]``, ``L ≤ context_length`` (SEEM always feeds 77; a shorter ``L`` gives
                the same values on its positions because attention is causal).
            attention_mask: ``[N, L]``; only used when the config is not causal (SEEM is causal).
            trace: optional dict receiving ``hidden/{i}`` (``[N, L, W]`` after block i) and ``ln_final``.

        Returns:
            ``(token_emb [N, L, P], pooled [N, P])``: ``last_hidden @ lang_proj`` and the projected hidden
            state at ``input_ids.argmax(-1)`` (the first EOT id). Neither is normalised.
        """
        self._check_tokens(input_ids, attention_mask)
        device = self.lang_proj.device
        input_ids = input_ids.to(device=device, dtype=torch.long)
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
        hidden = self.transformer(input_ids, attention_mask, trace)
        pooled_hidden = hidden[torch.arange(hidden.shape[0], device=device), input_ids.argmax(dim=-1)]
        return hidden @ self.lang_proj, pooled_hidden @ self.lang_proj

    forward = encode_tokens

    def encode_text(self, texts: str | Sequence[str]) -> TextEncoding:
        """Tokenize (SEEM's rules, 77 tokens) and encode; official ``get_text_token_embeddings(norm=False)``."""
        input_ids, attention_mask = self.tokenizer(texts, context_length=self.cfg.context_length)
        token_emb, pooled = self.encode_tokens(input_ids, attention_mask)
        dev = token_emb.device
        return TextEncoding(input_ids.to(dev), attention_mask.to(dev), token_emb, pooled)

    @torch.no_grad()
    def class_embeddings(
        self, class_names: Sequence[str], add_background: bool = True, chunk_size: int = 512
    ) -> Tensor:
        """Official ``get_text_embeddings(class_names + ["background"], is_eval=True)``.

        Each name is cleaned (``strip_class_name``: ``-other``/``-merged``/``-stuff`` removed), put in all
        81 ``PROMPT_TEMPLATES``; every template's pooled projected embedding is normalised with
        ``v / (‖v‖ + 1e-7)``, the 81 are averaged and the mean is renormalised with ``v / ‖v‖`` (no epsilon).

        The prompts of all classes are encoded together in chunks of ``chunk_size`` sequences, each chunk
        trimmed to its longest prompt (exact: attention is causal and pooling reads the first EOT); prompts are
        sorted by length first so chunks carry little padding.

        Returns:
            ``[K + 1, P]`` unit-norm class embeddings, ``"background"`` last (``[K, P]`` without it).
        """
        check_class_names(class_names, chunk_size)
        names = [strip_class_name(n) for n in class_names] + ([BACKGROUND] if add_background else [])
        prompts = [t.format(n) for n in names for t in PROMPT_TEMPLATES]
        input_ids, attention_mask = self.tokenizer(prompts, context_length=self.cfg.context_length)
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)  # similar lengths share a chunk: less padding
        pooled = torch.empty(len(prompts), self.cfg.proj_dim, dtype=self.lang_proj.dtype, device=self.lang_proj.device)
        for start in range(0, len(prompts), chunk_size):
            rows = order[start : start + chunk_size]
            n_tok = int(lengths[rows].max())
            _, chunk = self.encode_tokens(input_ids[rows, :n_tok], attention_mask[rows, :n_tok])
            pooled[rows.to(pooled.device)] = _normalize(chunk).to(pooled.dtype)  # autocast may give bf16
        per_template = pooled.view(len(names), len(PROMPT_TEMPLATES), -1)
        mean = per_template.mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)

    def class_logits(self, emb: Tensor, class_emb: Tensor) -> Tensor:
        """``class_logits(emb, class_emb, self.logit_scale)`` (unclamped scale)."""
        return class_logits(emb, class_emb, self.logit_scale)

    def vl_similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """``vl_similarity(a, b, self.logit_scale)`` (scale clamped to 100, inputs normalised)."""
        return vl_similarity(a, b, self.logit_scale)
