"""The training forward of one batch: ``SEEMTrainStep`` (SEEM v1 recipe) and ``GranularityTrainStep``
(Semantic-SAM many-to-many recipe), each returning ``(total, losses, info)``; ``StepContext`` carries a step's
seeded randomness and ``step_seed`` derives seeds from integer keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM
from seem.train.config import TrainConfig
from seem.train.data import Batch, Sample
from seem.train.distributed import all_reduce_mean
from seem.train.iterative import random_decoder_draws, run_corrective_rounds
from seem.train.losses import GranularityCriterion, GranularityTargets, SEEMCriterion, SeemTargets, text_keys
from seem.train.matcher import HungarianMatcher, ManyToManyMatcher
from seem.train.optim import trainable_parameters
from seem.train.simulate import (
    ShapeSampler,
    ShapeSamplerConfig,
    click_anchor_boxes,
    jitter_anchor_boxes,
    sample_granularity_clicks,
)

__all__ = ["GranularityTrainStep", "SEEMTrainStep", "StepContext", "step_seed"]


# ---------------------------------------------------------------------------------------------------------------
# one training step
# ---------------------------------------------------------------------------------------------------------------


def step_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class StepContext:
    """Per-step randomness and settings handed to a step module.

    Attributes:
        rng: numpy generator of prompt simulation (seeded by ``(seed, step, rank)``).
        generator: CPU ``torch.Generator`` of point sampling, box noise and decoder draws.
        device: the training device.
        n_rounds: SEEM corrective rounds before the gradient pass.
    """

    rng: np.random.Generator
    generator: torch.Generator
    device: torch.device
    n_rounds: int = 0


def _on_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with its images on ``device`` (samples stay on the CPU for prompt simulation)."""
    return Batch(batch.images.to(device), list(batch.image_sizes), batch.samples)


def _part_frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def _zero_loss(module: nn.Module) -> Tensor:
    """A zero connected to every trainable parameter (a step without any target still runs backward)."""
    ps = trainable_parameters(module)
    return sum((p.sum() * 0.0 for p in ps), torch.zeros((), device=ps[0].device))


def enclosing_targets(s: Sample, instance_ids: Tensor, limit: int, device: torch.device) -> list[Tensor]:
    """Per prompt, the masks that enclose its target instance: its ancestors in ``s.granularity_groups`` (chains
    root → leaf), nearest first, at most ``limit``; bool ``[m, H, W]`` each (``m`` may be 0)."""
    out: list[Tensor] = []
    for i in instance_ids.tolist():
        anc: list[int] = []
        for chain in s.granularity_groups:
            if i in chain:
                for a in reversed(chain[: chain.index(i)]):
                    if a not in anc:
                        anc.append(a)
        idx = torch.as_tensor(anc[:limit], dtype=torch.long)
        out.append(s.masks[idx].to(device) if len(idx) else s.masks[:0].to(device))
    return out


def granularity_targets(
    s: Sample, instance_ids: Tensor, pos_masks: Tensor, q: int, device: torch.device
) -> tuple[list[Tensor], Tensor]:
    """Per prompt, one target region per spatial query, coarse → fine: the prompt's granularity chain.

    The chain of prompt ``p`` (target instance ``i``) is every region of ``s.granularity_groups`` (chains
    root → leaf) that encloses ``i`` (its ancestors), then ``i``, then the regions inside ``i`` that still contain all
    of the prompt's positive pixels ``pos_masks[p]``, ordered by decreasing area. Query ``j`` of ``q`` gets chain
    element ``⌊j · (m − 1) / (q − 1) + ½⌋`` (``m`` regions; short chains repeat elements, long ones are sampled
    evenly, the target always among them).

    Returns:
        ``(levels, level_query)``: per prompt a bool ``[q, H, W]`` stack and long ``[n]``, the query holding the
        prompt's own target (see ``SeemTargets.spatial_levels``).
    """
    masks = s.masks
    areas = masks.flatten(1).sum(1).tolist()
    levels: list[Tensor] = []
    which: list[int] = []
    for p, i in enumerate(instance_ids.tolist()):
        anc: set[int] = set()
        desc: set[int] = set()
        pos = pos_masks[p].to(masks.device)
        for chain in s.granularity_groups:
            if i in chain:
                k = chain.index(i)
                anc.update(chain[:k])
                desc.update(d for d in chain[k + 1 :] if bool(pos.any()) and not bool((pos & ~masks[d]).any()))
        order = [*sorted(anc, key=lambda a: -areas[a]), i, *sorted(desc - anc - {i}, key=lambda d: -areas[d])]
        t = len(anc)
        m = len(order)
        pick = [int(j * (m - 1) / max(q - 1, 1) + 0.5) for j in range(q)]  # round half up
        if t not in pick:  # long chain: put the target on the nearest query
            j = min(range(q), key=lambda j: abs(pick[j] - t))
            pick[j] = t
        which.append(pick.index(t))
        levels.append(masks[torch.as_tensor([order[k] for k in pick])].to(device))
    return levels, torch.as_tensor(which, dtype=torch.long, device=device)


class SEEMTrainStep(nn.Module):
    """SEEM's training forward for one batch (see the module docstring); returns ``(total, losses, info)``.

    Args:
        model: a v1 ``SEEMModel``.
        cfg: the finalized run config (prompts, tasks, losses).
        class_names: the training vocabulary (merged sources); empty = no class logits / class-name grounding.
    """

    model: SEEMModel

    def __init__(self, model: SEEMModel, cfg: TrainConfig, class_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        lc, pc = cfg.losses, cfg.prompts
        dec = model.config.decoder
        if dec.variant != "v1":
            raise ValueError("training implements the SEEM v1 recipe; the model has demo decoder rules")
        self.criterion = SEEMCriterion(
            HungarianMatcher(lc.cost_class, lc.cost_mask, lc.cost_dice, lc.num_points),
            lc.weights,
            no_object_weight=lc.no_object_weight,
            num_points=lc.num_points,
            oversample_ratio=lc.oversample_ratio,
            importance_sample_ratio=lc.importance_sample_ratio,
            queries_per_prompt=dec.queries_per_prompt,
        )
        self.sampler = ShapeSampler(
            ShapeSamplerConfig(
                kinds=tuple(pc.kinds), probs=tuple(pc.probs), max_candidates=pc.max_candidates, min_area=pc.min_area
            )
        )
        self.class_names = list(class_names)
        self._vocab: Tensor | None = None

    # -- text -------------------------------------------------------------------------------------------------
    def _text_trainable(self) -> bool:
        return not _part_frozen(self.model.text_encoder)

    def class_embeddings(self, rng: np.random.Generator) -> Tensor | None:
        """``[K + 1, D]`` vocabulary: the 81-template average (cached) when the text encoder is frozen; one random
        template per class (with gradient) when it trains (official ``get_text_embeddings(is_eval=False)``)."""
        if not self.class_names:
            return None
        m = self.model
        if not self._text_trainable():
            if self._vocab is None:
                with torch.autocast(m.device.type, enabled=False):
                    self._vocab = m.class_embeddings(self.class_names).detach()
            return self._vocab
        from seem.models.text.templates import PROMPT_TEMPLATES, strip_class_name

        names = [*self.class_names, "background"]
        texts = [PROMPT_TEMPLATES[int(rng.integers(len(PROMPT_TEMPLATES)))].format(strip_class_name(n)) for n in names]
        pooled = m.text_encoder.encode_text(texts).pooled
        return pooled / pooled.norm(dim=-1, keepdim=True)

    def _phrases(self, s: Sample, rng: np.random.Generator) -> tuple[list[int], list[str], float] | None:
        """Referring phrases of one image: its sentences (weight ``grounding_text_weight``), else class names of
        its labelled masks with one random template per class (``grounding_class_weight``)."""
        from seem.models.text.templates import PROMPT_TEMPLATES, strip_class_name

        lc, pc = self.cfg.losses, self.cfg.prompts
        limit = min(pc.max_phrases, self.model.config.decoder.num_queries)
        areas = s.areas()
        if s.sentences:
            ok = [(i, t) for i, t in s.sentences if int(areas[i]) > 0]
            if ok:
                pick = rng.permutation(len(ok))[:limit]
                return [ok[j][0] for j in pick], [ok[j][1] for j in pick], lc.grounding_text_weight
        if not self.class_names:
            return None
        known = np.flatnonzero(((s.class_ids >= 0) & (areas > 0)).numpy())
        if known.size == 0:
            return None
        pick = rng.permutation(known)[:limit]
        template: dict[int, str] = {}
        texts = []
        for i in pick:
            c = int(s.class_ids[i])
            if c not in template:
                template[c] = PROMPT_TEMPLATES[int(rng.integers(len(PROMPT_TEMPLATES)))]
            texts.append(template[c].format(strip_class_name(self.class_names[c])))
        return [int(i) for i in pick], texts, lc.grounding_class_weight

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        from seem.models.seem_types import DecoderInputs, ImageFeatures

        m = self.model
        cfg = self.cfg
        dev = ctx.device
        tasks, pc = cfg.tasks, cfg.prompts
        b = _on_device(batch, dev)
        x = b.normalized(m.config.pixel_mean, m.config.pixel_std)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not _part_frozen(m.backbone)):
            res = m.backbone(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not _part_frozen(m.pixel_decoder)):
            pix = m.pixel_decoder(res)
        ms, mf = pix.multi_scale_features, pix.mask_features
        canvas = b.canvas_size
        vocab = self.class_embeddings(ctx.rng) if tasks.object else None
        text_grad = self._text_trainable()
        outputs: list[Any] = []
        targets: list[SeemTargets] = []
        info = {"rounds": float(ctx.n_rounds), "prompts": 0.0, "phrases": 0.0, "clicks": 0.0}
        dcfg = m.config.decoder
        # with granularity levels, level j must be the same query in every step (and at inference)
        fixed = pc.fixed_queries if pc.fixed_queries is not None else pc.level_targets is not None
        for i, s in enumerate(b.samples):
            feats = ImageFeatures([t[i : i + 1] for t in ms], mf[i : i + 1], canvas)
            masks = s.masks.to(dev)
            spatial = prev = sp_gt = sp_levels = sp_level_q = sp_extra = None
            if tasks.spatial and s.num_masks:
                cands = None if pc.candidates == "all" else np.flatnonzero(s.is_thing.numpy()).tolist()
                prompts = self.sampler(s.masks, ctx.rng, cands)
                if bool(prompts.valid.any()):

                    def draws(sp: Any, mem: bool) -> Any:
                        return random_decoder_draws(
                            dcfg, sp, with_memory=mem, generator=ctx.generator, fixed_queries=fixed
                        )

                    rounds = run_corrective_rounds(
                        m.decode, feats, prompts, ctx.n_rounds, draws=draws if pc.random_draws else None
                    )
                    prompts, prev = rounds.prompts, rounds.prev_mask
                    spatial = prompts.spatial_prompts(dev)
                    sp_gt = prompts.gt_masks.to(dev)
                    if pc.level_targets == "ordered":
                        sp_levels, sp_level_q = granularity_targets(
                            s, prompts.instance_ids, prompts.pos_masks, dcfg.queries_per_prompt, dev
                        )
                    elif pc.level_targets == "matched":
                        sp_extra = enclosing_targets(s, prompts.instance_ids, dcfg.queries_per_prompt - 1, dev)
                    info["prompts"] += float(prompts.valid.sum())
                    info["clicks"] += float(sum(len(c) for c in prompts.clicks))
            grounding = g_masks = g_emb = g_keys = None
            g_weight = 1.0
            if tasks.grounding:
                ph = self._phrases(s, ctx.rng)
                if ph is not None:
                    idx, texts, g_weight = ph
                    with torch.set_grad_enabled(torch.is_grad_enabled() and text_grad):
                        grounding = m.encode_phrases(texts)
                    g_masks = masks[torch.as_tensor(idx, device=dev)]
                    g_emb = grounding.phrase_embeddings
                    g_keys = text_keys(texts)
                    info["phrases"] += len(texts)
            if not tasks.object and spatial is None and grounding is None:
                continue
            draws_now = None
            if spatial is not None and pc.random_draws:
                draws_now = random_decoder_draws(
                    dcfg, spatial, with_memory=prev is not None, generator=ctx.generator, fixed_queries=fixed
                )
            out = m.decode(
                DecoderInputs(
                    feats,
                    class_embeddings=vocab,
                    logit_scale=m.logit_scale,
                    spatial=spatial,
                    grounding=grounding,
                    prev_mask=prev,
                    object_queries=bool(tasks.object),
                    draws=draws_now,
                )
            )
            class_ids = s.class_ids if vocab is not None else torch.full_like(s.class_ids, -1)
            outputs.append(out)
            targets.append(
                SeemTargets(
                    masks=masks,
                    class_ids=class_ids.to(dev),
                    grounding_masks=g_masks,
                    grounding_embeddings=g_emb,
                    grounding_keys=g_keys,
                    grounding_weight=g_weight,
                    spatial_masks=sp_gt,
                    spatial_levels=sp_levels,
                    spatial_level_query=sp_level_q,
                    spatial_extra=sp_extra,
                )
            )
        if not outputs:
            return _zero_loss(m), {}, info
        local = torch.tensor(float(self.criterion.count_masks(targets)), device=dev)
        num_masks = float(all_reduce_mean(local).clamp(min=1.0))
        losses = self.criterion(
            outputs, targets, logit_scale=m.logit_scale, num_masks=num_masks, generator=ctx.generator
        )
        info["num_masks"] = num_masks
        return self.criterion.total(losses), losses, info


class GranularityTrainStep(nn.Module):
    """Semantic-SAM's many-to-many training forward for one batch; returns ``(total, losses, info)``.

    Clicks: ``sample_granularity_clicks`` per image (``n_clicks``, ≤ ``max_targets`` nested targets each; an image
    without masks gets ``n_clicks`` target-less clicks at its centre), anchor boxes ±``click_box_half_size`` px
    around each click with Semantic-SAM's box noise, point/box index ``point_pb``; every decoder layer's masks are
    computed and ``GranularityCriterion`` reuses the last layer's match on the earlier ones.
    """

    model: SemanticSAM

    def __init__(self, model: SemanticSAM, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        lc = cfg.losses
        self.criterion = GranularityCriterion(
            ManyToManyMatcher(lc.cost_mask, lc.cost_dice, lc.cost_box, lc.cost_giou, lc.num_points),
            lc.weights,
            num_points=lc.num_points,
            oversample_ratio=lc.oversample_ratio,
            importance_sample_ratio=lc.importance_sample_ratio,
            iou_target_grad=lc.iou_target_grad,
        )

    def forward(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        from seem.models.granularity_decoder import DecoderMemory

        m = self.model
        pc = self.cfg.prompts
        dev = ctx.device
        b = _on_device(batch, dev)
        x = b.normalized(m.cfg.pixel_mean, m.cfg.pixel_std)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not _part_frozen(m.backbone)):
            res = m.backbone(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not _part_frozen(m.pixel_decoder)):
            enc = m.pixel_decoder(res)
        memory = DecoderMemory.from_multi_scale(enc.multi_scale, enc.mask_features)
        canvas = b.canvas_size
        anchors, targets = [], []
        n_targets = 0
        for s in b.samples:
            clicks = sample_granularity_clicks(s.masks, ctx.rng, pc.n_clicks, pc.max_targets)
            if len(clicks):
                pts, tl = clicks.points_xy, clicks.targets
            else:
                pts = np.tile(np.array([[canvas[1] // 2, canvas[0] // 2]], np.float32), (pc.n_clicks, 1))
                tl = [[] for _ in range(pc.n_clicks)]
            n_targets += sum(len(t) for t in tl)
            anchors.append(click_anchor_boxes(pts, canvas, pc.click_box_half_size))
            targets.append(GranularityTargets(masks=s.masks.to(dev), click_targets=tl))
        a = jitter_anchor_boxes(
            torch.stack(anchors), ctx.generator, noise_scale=pc.box_noise, is_point=True, point_scale=pc.point_box_noise
        )
        pb = torch.full(a.shape[:2], pc.point_pb, dtype=torch.long, device=dev)
        out = m.predictor(memory, a.to(dev), pb, all_layer_masks=True)
        local = torch.tensor(float(self.criterion.count_masks(targets)), device=dev)
        num_masks = float(all_reduce_mean(local).clamp(min=1.0))
        losses = self.criterion(out, targets, num_masks=num_masks, generator=ctx.generator)
        info = {"clicks": float(a.shape[0] * a.shape[1]), "targets": float(n_targets), "num_masks": num_masks}
        return self.criterion.total(losses), losses, info
