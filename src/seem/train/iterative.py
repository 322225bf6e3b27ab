"""SEEM's iterative interactive training (SEEM supplementary; official ``seem_model_v1.forward_seg``).

Before each gradient step, ``randint(0, max_iter)`` rounds run **without gradient**: each decodes the current
spatial prompts (spatial queries only, ``object_queries=False``), takes the official selection's mask
(``SpatialSelection.prev_mask``, stride-4 logits), adds one corrective click per drawable prompt from the error
between that mask (upsampled to the canvas, ``> 0``) and the GT (``seem.train.simulate.add_corrective_clicks``) and
passes the mask on as the next round's memory prompt (``prev_mask``). The gradient step then sees every accumulated
click and the last memory (``run_corrective_rounds`` returns both).

``random_decoder_draws``: the official decoder draws its spatial queries (``randint`` over the object queries),
prompt pixels (``multinomial`` without replacement) and memory slots at random during training; this gives those
draws from a seeded ``torch.Generator`` in the ``DecoderDraws`` format the decoder accepts, so training is random
as official but reproducible. Without it the decoder uses its deterministic inference rules.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seem.models.config import SEEMDecoderConfig
from seem.models.seem_attention import default_spatial_query_indices
from seem.models.seem_types import DecoderDraws, DecoderInputs, ImageFeatures, SpatialPrompts
from seem.train.simulate import TrainPrompts, add_corrective_clicks

__all__ = [
    "CorrectiveRounds",
    "draw_num_rounds",
    "logits_to_canvas",
    "random_decoder_draws",
    "run_corrective_rounds",
]


def draw_num_rounds(rng: np.random.Generator, max_iter: int) -> int:
    """Number of no-gradient rounds before a gradient step: uniform in ``0 .. max_iter − 1`` (official
    ``randint(0, MAX_ITER)``; ``max_iter`` 1 → always 0)."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    return int(rng.integers(0, max_iter))


def logits_to_canvas(logits: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Stride-4 logits ``[n, h4, w4]`` → bool ``[n, H, W]`` on the padded canvas (bilinear,
    ``align_corners=False``, ``> 0``; the official ``prepare_next_spaital_mask`` rule)."""
    up = F.interpolate(logits[:, None].float(), size=tuple(canvas), mode="bilinear", align_corners=False)[:, 0]
    return up > 0


def random_decoder_draws(
    cfg: SEEMDecoderConfig,
    spatial: SpatialPrompts,
    *,
    with_memory: bool,
    generator: torch.Generator,
    fixed_queries: bool = False,
) -> DecoderDraws:
    """The official training draws of one v1 decoder call, from ``generator``.

    - ``spatial_query_indices``: ``queries_per_prompt · n`` object queries drawn uniformly with replacement
      (official ``torch.randint``);
    - ``prompt_pixels``: for each sampling role, ``min(budget, pixels)`` distinct pixels of the whole mask stack,
      uniformly, sorted (official ``multinomial(...).sort()``; budgets ``max_spatial_len``: the pooled roles use the
      last, level ``l`` uses entry ``l``);
      ``fixed_queries``: the inference rule instead (``default_spatial_query_indices``: query ``j`` of every prompt
      is the same object query), which a model whose queries are granularity levels needs to learn them;
    - ``memory_slots`` (only ``with_memory``): per layer, ``spatial_memories`` prompt indices drawn uniformly with
      replacement, sorted.
    """
    pos = spatial.pos_masks
    neg = spatial.neg_masks
    n = int(pos.shape[0])
    k = cfg.queries_per_prompt
    g = generator
    sqi = torch.randint(0, cfg.num_queries, (k * n,), generator=g, device=g.device).cpu()
    if fixed_queries:  # query j of every prompt is the same object query, as at inference (granularity levels)
        sqi = default_spatial_query_indices(cfg.num_queries, n, k)
    counts = {"pos": int(pos.sum()), "neg": 0 if neg is None else int(neg.sum())}
    budgets = {"pooled": cfg.max_spatial_len[-1], **{f"level{i}": cfg.max_spatial_len[i] for i in range(3)}}
    pixels: dict[str, Tensor] = {}
    for stem, budget in budgets.items():
        for sign in ("pos", "neg"):
            total = counts[sign]
            if sign == "neg" and neg is None:
                continue
            take = min(int(budget), total)
            if take == 0:
                continue
            if take == total:
                pixels[f"{stem}_{sign}"] = torch.arange(total)
            else:
                perm = torch.randperm(total, generator=g, device=g.device)
                pixels[f"{stem}_{sign}"] = perm[:take].sort().values.cpu()
    slots = None
    if with_memory:
        s = cfg.spatial_memories
        slots = [
            torch.randint(0, n, (s,), generator=g, device=g.device).sort().values.cpu() for _ in range(cfg.num_layers)
        ]
    return DecoderDraws(prompt_pixels=pixels, spatial_query_indices=sqi, memory_slots=slots)


class CorrectiveRounds:
    """Result of ``run_corrective_rounds``: the prompts with every added click, the last round's selected
    stride-4 logits (``prev_mask`` for the gradient step; None after 0 rounds) and the rounds run."""

    def __init__(self, prompts: TrainPrompts, prev_mask: Tensor | None, rounds: int) -> None:
        self.prompts = prompts
        self.prev_mask = prev_mask
        self.rounds = rounds


DecodeFn = Callable[[DecoderInputs], object]


@torch.no_grad()
def run_corrective_rounds(
    decode: DecodeFn,
    features: ImageFeatures,
    prompts: TrainPrompts,
    n_rounds: int,
    *,
    draws: Callable[[SpatialPrompts, bool], DecoderDraws | None] | None = None,
) -> CorrectiveRounds:
    """Run ``n_rounds`` no-gradient interaction rounds on one image (see the module docstring).

    Args:
        decode: the model's ``decode`` (``SEEMModel.decode``), called with spatial prompts only.
        features: the image's ``ImageFeatures`` (batch 1; ``padded_size`` = the prompts' canvas).
        prompts: the simulated prompts on the padded canvas.
        n_rounds: rounds to run (``draw_num_rounds``).
        draws: ``(spatial, with_memory) → DecoderDraws`` for random decoder choices (``random_decoder_draws``),
            or None for the deterministic rules.

    Returns:
        ``CorrectiveRounds``. Rounds stop early when no prompt is drawable.
    """
    canvas = tuple(features.padded_size)
    if tuple(prompts.pos_masks.shape[-2:]) != canvas:
        raise ValueError(f"prompts are {tuple(prompts.pos_masks.shape[-2:])} but the padded canvas is {canvas}")
    prev: Tensor | None = None
    done = 0
    dev = features.mask_features.device
    for _ in range(n_rounds):
        if not bool(prompts.valid.any()):
            break
        spatial = prompts.spatial_prompts(dev)
        out = decode(
            DecoderInputs(
                features,
                spatial=spatial,
                prev_mask=prev,
                object_queries=False,
                draws=None if draws is None else draws(spatial, prev is not None),
            )
        )
        sel = getattr(out, "spatial_selection", None)
        if sel is None:
            raise RuntimeError("the decoder returned no spatial selection (iterative training needs a v1 decoder)")
        prev = sel.prev_mask.detach().float()
        pred = logits_to_canvas(prev, canvas).cpu()  # type: ignore[arg-type]
        prompts = add_corrective_clicks(prompts, pred)
        done += 1
    return CorrectiveRounds(prompts, prev, done)
