"""Query / token / memory bookkeeping of the SEEM decoder and its two attention-mask rule sets.

The decoder state is a set of named *groups* of rows (official "variables"):

==========================  ===================================================================  ======
group                       content                                                              kind
==========================  ===================================================================  ======
``queries_object``          the ``N`` learnt object queries                                      query
``queries_grounding``       (v1) a copy of the initial object queries, for referring text        query
``queries_spatial``         (v1) ``queries_per_prompt`` copies of initial object queries/prompt  query
``memories_spatial``        (v1) the ``spatial_memories`` memory slots, with ``prev_mask``       memory
``tokens_grounding``        text token embeddings (persist, updated by every layer)              token
``tokens_spatial``          spatial prompt tokens of the layer's level (rebuilt every layer)     token
``tokens_visual``           (demo) referring-image tokens of the layer's level (rebuilt)         token
==========================  ===================================================================  ======

Queries and memories cross-attend to the image (in ``AttentionRules.cross_order``) and get predictions;
every group takes part in self-attention (in ``AttentionRules.self_order``). Which row may attend to
which is the only difference between the official ``seem_v1`` and ``seem_demo`` decoders; it is data here
(``V1_RULES``, ``DEMO_RULES``), applied by one function (``AttentionRules.self_attn_mask``).

All boolean masks use the official convention: **True = blocked**.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEMO_RULES",
    "V1_RULES",
    "AttentionRules",
    "GroupLayout",
    "cross_attention_mask",
    "default_memory_slots",
    "default_spatial_query_indices",
    "logits_to_blocked",
    "mask_logits_to_blocked",
    "rules_for",
]

QUERIES_OBJECT = "queries_object"
QUERIES_GROUNDING = "queries_grounding"
QUERIES_SPATIAL = "queries_spatial"
MEMORIES_SPATIAL = "memories_spatial"
TOKENS_GROUNDING = "tokens_grounding"
TOKENS_SPATIAL = "tokens_spatial"
TOKENS_VISUAL = "tokens_visual"

REBUILT_EACH_LAYER = frozenset({TOKENS_SPATIAL, TOKENS_VISUAL})
"""Token groups replaced at every layer from that layer's level; their self-attention output is dropped."""


@dataclass
class GroupLayout:
    """Row ranges of the groups present in one attention call, in rule order.

    Attributes:
        names: present group names, in order.
        ranges: ``name -> (start, end)`` rows.
        prompt_index: ``name -> long [rows]``: the prompt each row serves, for the groups whose attention is
            restricted to rows of the same prompt (v1 spatial queries, spatial tokens, memories).
    """

    names: list[str]
    ranges: dict[str, tuple[int, int]]
    prompt_index: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        order: tuple[str, ...],
        sizes: Mapping[str, int],
        prompt_index: Mapping[str, Tensor] | None = None,
    ) -> GroupLayout:
        """Layout of the groups of ``sizes`` that appear in ``order`` (others are ignored), in that order."""
        names = [n for n in order if n in sizes]
        ranges = {}
        start = 0
        for n in names:
            ranges[n] = (start, start + sizes[n])
            start += sizes[n]
        pidx = {k: v for k, v in (prompt_index or {}).items() if k in ranges}
        return cls(names=names, ranges=ranges, prompt_index=pidx)

    @property
    def total(self) -> int:
        return self.ranges[self.names[-1]][1] if self.names else 0

    def rows(self, name: str) -> slice:
        s, e = self.ranges[name]
        return slice(s, e)

    def __contains__(self, name: object) -> bool:
        return name in self.ranges


@dataclass(frozen=True)
class AttentionRules:
    """One decoder flavour's bookkeeping.

    Attributes:
        name: ``"v1"`` or ``"demo"``.
        cross_order: groups that cross-attend to the image and get predictions, in row order.
        self_order: groups in self-attention, in row order (the official config's dict order).
        allowed: ``row group -> column groups`` it may attend to (everything else is blocked).
        prompt_matched: groups whose mutual attention (where ``allowed``) is further restricted to rows of
            the same prompt.
    """

    name: str
    cross_order: tuple[str, ...]
    self_order: tuple[str, ...]
    allowed: Mapping[str, tuple[str, ...]]
    prompt_matched: frozenset[str] = frozenset()

    def self_attn_mask(self, layout: GroupLayout, device: torch.device | None = None) -> Tensor:
        """Boolean ``[M, M]`` self-attention mask (True = blocked) for ``layout``.

        Padding is never present: prompts describe one image, so no group is padded (the official padding
        masks only act on batches of several images).
        """
        m = layout.total
        mask = torch.ones(m, m, dtype=torch.bool, device=device)
        for a in layout.names:
            for b in self.allowed.get(a, ()):
                if b not in layout:
                    continue
                ra, rb = layout.rows(a), layout.rows(b)
                if a in self.prompt_matched and b in self.prompt_matched:
                    pa = layout.prompt_index[a].to(device)
                    pb = layout.prompt_index[b].to(device)
                    mask[ra, rb] = pa[:, None] != pb[None, :]
                else:
                    mask[ra, rb] = False
        return mask


V1_RULES = AttentionRules(
    name="v1",
    cross_order=(QUERIES_OBJECT, QUERIES_GROUNDING, QUERIES_SPATIAL, MEMORIES_SPATIAL),
    self_order=(
        QUERIES_OBJECT,
        QUERIES_GROUNDING,
        QUERIES_SPATIAL,
        TOKENS_GROUNDING,
        TOKENS_SPATIAL,
        MEMORIES_SPATIAL,
    ),
    allowed={
        # Object queries ignore every prompt in v1.
        QUERIES_OBJECT: (QUERIES_OBJECT,),
        QUERIES_GROUNDING: (QUERIES_GROUNDING, TOKENS_GROUNDING),
        QUERIES_SPATIAL: (QUERIES_SPATIAL, TOKENS_SPATIAL, MEMORIES_SPATIAL),
        TOKENS_GROUNDING: (QUERIES_GROUNDING, TOKENS_GROUNDING),
        TOKENS_SPATIAL: (TOKENS_SPATIAL,),
        MEMORIES_SPATIAL: (MEMORIES_SPATIAL,),
    },
    prompt_matched=frozenset({QUERIES_SPATIAL, TOKENS_SPATIAL, MEMORIES_SPATIAL}),
)
"""``seem_v1`` (official ``attention_data_struct_seemv1.py`` with the v1 ``ATTENTION_ARCH``)."""

DEMO_RULES = AttentionRules(
    name="demo",
    cross_order=(QUERIES_OBJECT,),
    self_order=(QUERIES_OBJECT, TOKENS_GROUNDING, TOKENS_SPATIAL, TOKENS_VISUAL),
    allowed={
        # Prompts condition the object queries directly in the demo.
        QUERIES_OBJECT: (QUERIES_OBJECT, TOKENS_GROUNDING, TOKENS_SPATIAL, TOKENS_VISUAL),
        TOKENS_GROUNDING: (QUERIES_OBJECT, TOKENS_GROUNDING),
        TOKENS_SPATIAL: (TOKENS_SPATIAL,),
        TOKENS_VISUAL: (TOKENS_VISUAL,),
    },
)
"""``seem_demo`` (official ``attention_data_struct_seemdemo.py`` with the demo ``ATTENTION_ARCH``)."""


def rules_for(variant: str) -> AttentionRules:
    """``V1_RULES`` for ``"v1"``, ``DEMO_RULES`` for ``"demo"``."""
    if variant == "v1":
        return V1_RULES
    if variant == "demo":
        return DEMO_RULES
    raise ValueError(f"unknown decoder variant {variant!r}; expected 'v1' or 'demo'")


def logits_to_blocked(logits: Tensor) -> Tensor:
    """``[B, Q, h, w]`` logits already at the level size → bool ``[B, Q, h·w]``, True = blocked.

    ``sigmoid < 0.5`` (kept literally rather than ``logit < 0`` so that borderline values round exactly as
    officially). Computed in float32 or wider.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.sigmoid().flatten(2) < 0.5


def mask_logits_to_blocked(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Mask2Former attention mask: ``[B, Q, H, W]`` logits → bool ``[B, Q, h·w]``, True = blocked.

    Bilinear resize (``align_corners=False``) to ``size``, then ``sigmoid < 0.5`` (``logits_to_blocked``).
    """
    if mask_logits.dtype in (torch.float16, torch.bfloat16):
        mask_logits = mask_logits.float()
    with torch.autocast(mask_logits.device.type, enabled=False):
        resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    return logits_to_blocked(resized)


def cross_attention_mask(
    blocked: Tensor,
    layout: GroupLayout,
    memory_blocked: Tensor | None = None,
    memory_slots: Tensor | None = None,
) -> Tensor:
    """The mask used by cross-attention.

    Args:
        blocked: bool ``[B, Q, h·w]`` from the previous prediction (``mask_logits_to_blocked``), either for
            every cross-attention row or only for the rows before the memory rows (the memory rows' own
            predictions are never used: they are replaced below).
        layout: the cross-attention layout (to find the memory rows).
        memory_blocked: bool ``[B, n_prompts, h·w]`` from ``prev_mask`` (v1 memories) or None.
        memory_slots: long ``[S]``: the prompt each memory slot serves in this layer.

    Memory rows are overwritten with their prompt's ``prev_mask`` row; then every fully blocked row is
    unblocked (attends everywhere), as Mask2Former does.
    """
    if MEMORIES_SPATIAL in layout:
        if memory_blocked is None or memory_slots is None:
            raise ValueError("memory rows present but no prev_mask / memory slots given")
        rows = layout.rows(MEMORIES_SPATIAL)
        memory = memory_blocked[:, memory_slots.to(blocked.device)]
        if blocked.shape[1] == layout.total:
            mask = blocked.clone()
            mask[:, rows] = memory
        elif blocked.shape[1] == rows.start and rows.stop == layout.total:
            mask = torch.cat([blocked, memory], dim=1)
        else:
            raise ValueError(f"blocked has {blocked.shape[1]} rows; expected {layout.total} or {rows.start}")
    else:
        mask = blocked
    full = mask.all(dim=-1, keepdim=True)
    return mask & ~full


def default_spatial_query_indices(num_queries: int, n_prompts: int, per_prompt: int) -> Tensor:
    """Deterministic replacement of the official ``torch.randint`` choice of spatial queries.

    Every prompt gets the same ``per_prompt`` object queries, evenly spaced over the ``num_queries``
    (``round(linspace(0, N − 1, per_prompt))``, half-up; for N = 101 and 3: 0, 50, 100), so a prompt's
    result never depends on the other prompts of the call. Returns long ``[per_prompt * n_prompts]``.
    """
    from .visual_sampler import evenly_spaced

    return evenly_spaced(num_queries, per_prompt).repeat(n_prompts)


def default_memory_slots(num_slots: int, n_prompts: int) -> Tensor:
    """Deterministic replacement of the official per-layer ``multinomial`` memory assignment.

    Slot ``s`` serves prompt ``floor(s · n / S)``: contiguous, as equal as possible groups (the official
    draw is sorted, so its groups are contiguous too). Returns long ``[num_slots]``.
    """
    return torch.arange(num_slots, dtype=torch.long) * n_prompts // num_slots
