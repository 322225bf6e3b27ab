"""Visual sampler of the SEEM decoder: spatial prompt masks → sampled points → prompt embeddings.

The official decoder turns each prompt mask into (a) a pooled prompt embedding, the mean of
``mask_features`` at up to ``max_spatial_len[-1]`` (512) sampled prompt pixels, used only to pick the
output mask, and (b) per feature level, up to ``max_spatial_len[l]`` prompt *tokens*, the level feature
sampled at the prompt pixels and projected, which take part in self-attention.

Coordinates: a sampled pixel ``(prompt, y, x)`` of a mask stack on the padded canvas ``[n, Hp, Wp]`` is
represented by its prompt index and the fractions ``(y / Hp, x / Wp)`` (row, column order, float32,
computed exactly as the official ``nonzero() / divisor``). Features are read with
``grid_sample(align_corners=True)`` at ``grid = 2 * (x / Wp, y / Hp) - 1``, i.e. fraction 0 is the centre of
the first feature cell and fraction 1 would be the centre of the last one (the official convention; the
fraction never reaches 1 because the largest pixel index is ``Hp - 1``).

Which pixels are used when a mask stack has more than ``max_len`` pixels is a random draw officially
(v1: ``multinomial`` balanced per prompt, then sorted; demo: the first ``max_len`` entries of a
``randperm``). Here the choice is either given explicitly (``indices``) or made by the deterministic
``default_pixel_selection`` rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SampledPixels",
    "default_pixel_selection",
    "evenly_spaced",
    "level_prompt_tokens",
    "pooled_prompt_embeddings",
    "sample_features",
    "sample_prompt_pixels",
]


@dataclass
class SampledPixels:
    """Prompt pixels chosen from one mask stack.

    Attributes:
        indices: long ``[K]``: positions in the row-major list of nonzero pixels ``(prompt, y, x)``.
        prompt_index: long ``[K]``: the prompt each pixel belongs to.
        coords: float32 ``[K, 2]``: ``(y / Hp, x / Wp)``.
    """

    indices: Tensor
    prompt_index: Tensor
    coords: Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())


def evenly_spaced(count: int, k: int, device: torch.device | None = None) -> Tensor:
    """``k`` evenly spaced indices in ``[0, count)``: ``round(j · (count − 1) / (k − 1))``, j = 0..k−1.

    Rounding is half-up and done in integer arithmetic, so the result is exact, strictly increasing for
    ``k <= count``, and starts at 0 and ends at ``count − 1`` (for ``k >= 2``). ``k == 1`` gives ``[0]``.
    """
    if k < 0 or count < 0 or (k > 0 and count == 0):
        raise ValueError(f"evenly_spaced: need 0 <= k and count > 0 when k > 0, got count={count}, k={k}")
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if k == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    j = torch.arange(k, dtype=torch.long, device=device)
    return (2 * j * (count - 1) + (k - 1)) // (2 * (k - 1))


def _balanced_quotas(counts: list[int], budget: int) -> list[int]:
    """Split ``budget`` pixels among prompts with ``counts`` pixels each, as equally as possible.

    Water filling: a prompt with no more pixels than the equal share gives all of them and the rest of the
    budget is split again among the others; among the prompts that get the (floor) equal share the
    remainder goes one each to the lowest prompt indices. Empty prompts get 0.
    """
    quotas = [0] * len(counts)
    active = [p for p, c in enumerate(counts) if c > 0]
    while active:
        share, extra = divmod(budget, len(active))
        small = [p for p in active if counts[p] <= share]
        if not small:
            for rank, p in enumerate(active):
                quotas[p] = share + (1 if rank < extra else 0)
            break
        for p in small:
            quotas[p] = counts[p]
            budget -= counts[p]
        active = [p for p in active if counts[p] > share]
    return quotas


def default_pixel_selection(counts: list[int], max_len: int, device: torch.device | None = None) -> Tensor:
    """The deterministic replacement of the official random prompt-pixel draw.

    Args:
        counts: number of pixels of each prompt of the stack (in prompt order).
        max_len: the budget (``max_spatial_len``, 512), shared by all prompts of the stack.

    Returns:
        long ``[min(max_len, sum(counts))]``: sorted indices into the row-major nonzero list of the stack.

    Rule: with ``sum(counts) <= max_len`` every pixel is taken. Otherwise the budget is split equally among
    the non-empty prompts (floor; the remainder one each to the first prompts; a prompt smaller than its
    share gives all its pixels and the rest is re-split, see ``_balanced_quotas``), and each prompt takes
    ``evenly_spaced`` pixels of its own row-major pixel list. So a prompt's pixels never depend on the
    *pixels* of another prompt, only on how many prompts share the budget.
    """
    total = sum(counts)
    if total <= max_len:
        return torch.arange(total, dtype=torch.long, device=device)
    quotas = _balanced_quotas(counts, max_len)
    parts = []
    offset = 0
    for count, quota in zip(counts, quotas, strict=True):
        if quota > 0:
            parts.append(offset + evenly_spaced(count, quota, device=device))
        offset += count
    return torch.cat(parts)


def sample_prompt_pixels(
    masks: Tensor,
    max_len: int,
    indices: Tensor | None = None,
    sort: bool = True,
    nonzero: Tensor | None = None,
) -> SampledPixels:
    """Choose at most ``max_len`` pixels of a prompt-mask stack.

    Args:
        masks: bool ``[n, Hp, Wp]`` on the padded canvas.
        max_len: pixel budget shared by the whole stack.
        indices: optional explicit choice (long ``[min(max_len, n_pixels)]``, distinct, into the row-major
            nonzero list). None uses ``default_pixel_selection``.
        sort: sort explicit indices ascending (v1's ``multinomial(...).sort()``); the demo keeps the order
            of its ``randperm`` prefix (``sort=False``), which only changes token order.
        nonzero: optional precomputed ``masks.nonzero()`` (long ``[P, 3]``), to share it between the
            sampling calls of one mask stack.

    Returns:
        ``SampledPixels`` (empty when the stack has no pixel; then nothing is drawn officially either).
    """
    if masks.dtype != torch.bool or masks.dim() != 3:
        raise TypeError(f"prompt masks must be a bool [n, Hp, Wp] tensor, got {masks.dtype} {tuple(masks.shape)}")
    n, hp, wp = masks.shape
    nz = masks.nonzero() if nonzero is None else nonzero  # [P, 3] row-major (prompt, y, x)
    n_pix = nz.shape[0]
    device = masks.device
    if indices is None:
        counts = torch.bincount(nz[:, 0], minlength=n).tolist() if n_pix else [0] * n
        idx = default_pixel_selection(counts, max_len, device=device)
    else:
        idx = torch.as_tensor(indices, device=device)
        expected = min(max_len, n_pix)
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32) or idx.numel() != expected:
            raise ValueError(
                f"explicit prompt-pixel draw must be a 1-D integer tensor of length "
                f"min({max_len}, {n_pix}) = {expected}, got {idx.dtype} {tuple(idx.shape)}"
            )
        idx = idx.long()
        if expected and (int(idx.min()) < 0 or int(idx.max()) >= n_pix or idx.unique().numel() != expected):
            raise ValueError(f"explicit prompt-pixel draw must hold distinct indices in [0, {n_pix})")
        if sort:
            idx = idx.sort().values
    chosen = nz[idx]
    divisor = torch.tensor([hp, wp], dtype=torch.float32, device=device)
    coords = chosen[:, 1:].to(torch.float32) / divisor
    return SampledPixels(indices=idx, prompt_index=chosen[:, 0], coords=coords)


def sample_features(features: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample ``features [B, C, h, w]`` at ``coords [K, 2]`` = ``(y/Hp, x/Wp)`` → ``[B, K, C]``.

    ``grid_sample(align_corners=True)`` with ``grid = 2 * (x, y) - 1``, as the official ``point_sample``.
    Runs outside autocast (sampling is cheap and positions must not be rounded to bfloat16); half-precision
    features are sampled in float32.
    """
    b = features.shape[0]
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    if coords.numel() == 0:
        return features.new_zeros(b, 0, features.shape[1])
    grid = 2.0 * coords.flip(-1).to(features.dtype) - 1.0  # (x, y)
    grid = grid[None, :, None, :].expand(b, -1, -1, -1)
    with torch.autocast(features.device.type, enabled=False):
        out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[..., 0].transpose(1, 2)


def pooled_prompt_embeddings(
    mask_features: Tensor, pixels: SampledPixels, n_prompts: int, empty_value: float
) -> Tensor:
    """Per-prompt mean of ``mask_features [1, C, H4, W4]`` at the sampled pixels; returns ``[n_prompts, C]``.

    A prompt without sampled pixels gets the constant ``empty_value`` (official v1: ``-1``; demo: ``0``, from
    ``nan_to_num`` of an empty mean).
    """
    feats = sample_features(mask_features, pixels.coords)[0]  # [K, C]
    rows = []
    for p in range(n_prompts):
        sel = pixels.prompt_index == p
        if bool(sel.any()):
            rows.append(feats[sel].mean(dim=0))
        else:
            rows.append(mask_features.new_full((mask_features.shape[1],), empty_value))
    return torch.stack(rows)


def level_prompt_tokens(
    level_feature: Tensor,
    projection: Tensor,
    pn_indicator: Tensor,
    pos: SampledPixels,
    neg: SampledPixels | None,
) -> tuple[Tensor, Tensor]:
    """Prompt tokens of one feature level.

    Args:
        level_feature: ``[1, C, h, w]``, the level's multi-scale feature plus its ``level_embed``.
        projection: ``[C, C]`` (``mask_sptial_embed[l]``; applied as ``x @ projection``).
        pn_indicator: ``[2, C]``: row 0 is added to positive tokens, row 1 to negative ones.
        pos, neg: sampled positive / negative pixels (``neg`` may be None).

    Returns:
        ``(tokens [L, C], prompt_index long [L])``, positive tokens first, then negative ones.
    """
    coords = pos.coords if neg is None else torch.cat([pos.coords, neg.coords])
    prompt_index = pos.prompt_index if neg is None else torch.cat([pos.prompt_index, neg.prompt_index])
    # Sampling is linear, so sampling first and projecting the K samples equals projecting the whole map
    # and sampling it (the official order) up to float rounding, at a fraction of the cost.
    tokens = sample_features(level_feature, coords)[0] @ projection
    n_pos = len(pos)
    indicator = torch.cat([pn_indicator[0:1].expand(n_pos, -1), pn_indicator[1:2].expand(tokens.shape[0] - n_pos, -1)])
    return tokens + indicator, prompt_index
