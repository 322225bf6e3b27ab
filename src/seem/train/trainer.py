"""The trainer: one ``TrainConfig`` → a model trained with the official SEEM or Semantic-SAM recipe, on one CPU or
under ``torchrun`` on many GPUs.

Usage::

    from seem.train.config import load_config
    from seem.train.trainer import Trainer

    trainer = Trainer(load_config("configs/tiny_grabcut.yaml"), resume=False)
    result = trainer.fit()             # result.final_dir holds config.json + model.safetensors (seem.load reads it)

What one optimizer step does (``Trainer.train_step``):

- **SEEM** (``SEEMTrainStep``): backbone + pixel decoder on the batch (without gradient when frozen, the official
  recipe), then per image (prompts describe one image): ``ShapeSampler`` prompts, ``0 .. max_iter − 1`` corrective
  rounds without gradient (``seem.train.iterative``), referring phrases (sentences, else class names with a random
  template), and **one** decoder call with gradient that computes the object, grounding and spatial query groups
  together; ``SEEMCriterion`` on every layer; ``num_masks`` averaged over ranks.
- **Semantic-SAM** (``GranularityTrainStep``): ``sample_granularity_clicks`` (60 clicks, ≤ 6 targets each), noisy
  click anchor boxes, all decoder layers' masks, ``GranularityCriterion`` (last-layer many-to-many match reused on
  every layer).
- AdamW with per-part learning-rate factors and no weight decay on norms / embeddings, the warmup + multistep
  schedule, full-model gradient clipping, optional bf16 / fp16 autocast (fp16 with a gradient scaler).

Determinism: every random choice of a step comes from generators seeded by ``(seed, step, rank)`` (numpy for data
prompts, a CPU ``torch.Generator`` for point sampling and decoder draws; the global torch RNG — e.g. stochastic
depth — is reseeded from the same key each step), and image ``i`` of epoch ``e`` is augmented with ``(seed, e, i)``.
So a run resumed from a checkpoint continues exactly as the uninterrupted run (bit-identical weights on the same
machine and thread count). Checkpoints also hold the optimizer, schedule, scaler, step, data position and each
rank's python / numpy / torch RNG state.

Outputs (rank 0) in ``output_dir``: ``config.yaml`` (the resolved run config), ``metrics.csv`` (one row per
``log_every`` steps: weighted loss terms summed over layers, lr, grad norm, timing), ``loss_curve.png``,
``eval.csv`` + ``eval/step_*.json``, ``checkpoints/step_XXXXXXX/`` (``model/`` in our format, ``trainer.pt``,
``rng_rank*.pt``; ``checkpoints/latest`` names the newest) and ``final/`` (the trained model).
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM
from seem.train.config import (
    SourceConfig,
    TrainConfig,
    config_to_dict,
    save_config,
    tiny_seem_config,
    tiny_semantic_sam_config,
)
from seem.train.data import Batch, Collate, LargeScaleJitter, LSJConfig, Sample, TrainDataset
from seem.train.distributed import (
    DistInfo,
    ShardedSampler,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    is_distributed,
    resolve_device,
)
from seem.train.iterative import draw_num_rounds, random_decoder_draws, run_corrective_rounds
from seem.train.losses import (
    GranularityCriterion,
    GranularityTargets,
    SEEMCriterion,
    SeemTargets,
    text_keys,
)
from seem.train.matcher import HungarianMatcher, ManyToManyMatcher
from seem.train.optim import (
    WarmupMultiStepSchedule,
    build_optimizer,
    clip_gradients,
    freeze_modules,
    set_frozen_eval,
    trainable_parameters,
)
from seem.train.simulate import (
    ShapeSampler,
    ShapeSamplerConfig,
    click_anchor_boxes,
    jitter_anchor_boxes,
    sample_granularity_clicks,
)

__all__ = [
    "GranularityTrainStep",
    "MergedSource",
    "MetricsLog",
    "SEEMTrainStep",
    "StepContext",
    "TrainResult",
    "Trainer",
    "build_model",
    "build_source",
    "build_sources",
    "evaluate_model",
    "latest_checkpoint",
    "model_family",
    "plot_lines",
    "step_seed",
]


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------


def model_family(model: nn.Module) -> str:
    """``"seem"`` for a ``SEEMModel``, ``"semantic_sam"`` for a ``SemanticSAM``."""
    from seem.models.seem_model import SEEMModel
    from seem.models.semantic_sam import SemanticSAM

    if isinstance(model, SEEMModel):
        return "seem"
    if isinstance(model, SemanticSAM):
        return "semantic_sam"
    raise TypeError(f"the trainer trains SEEMModel or SemanticSAM models, got {type(model).__name__}")


def _seem_arch(spec: str | dict[str, Any] | None) -> Any:
    from seem.models.config import NAMED_CONFIGS, SEEMConfig, from_official_yaml, named_config

    if spec is None or spec == "tiny":
        return tiny_seem_config() if spec == "tiny" else named_config("seem-focalt-v1")
    if isinstance(spec, dict):
        return SEEMConfig.from_dict(spec)
    if spec in NAMED_CONFIGS:
        return named_config(spec)
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        return from_official_yaml(p)
    if p.suffix == ".json" or p.is_dir():
        return SEEMConfig.from_dict(_native_config(p, "seem"))
    raise ValueError(f"model.config {spec!r}: not a named SEEM config ({sorted(NAMED_CONFIGS)}, tiny), YAML or JSON")


def _ssam_arch(spec: str | dict[str, Any] | None) -> Any:
    from seem.models.semantic_sam_config import SemanticSAMConfig, from_official_yaml, swin_l, swin_t

    named: dict[str, Callable[[], Any]] = {
        "swin_t": swin_t,
        "semantic-sam-swint": swin_t,
        "swin_l": swin_l,
        "semantic-sam-swinl": swin_l,
        "tiny": tiny_semantic_sam_config,
    }
    if spec is None:
        return swin_t()
    if isinstance(spec, dict):
        return SemanticSAMConfig.from_dict(spec)
    if spec in named:
        return named[spec]()
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        return from_official_yaml(p)
    if p.suffix == ".json" or p.is_dir():
        return SemanticSAMConfig.from_dict(_native_config(p, "semantic_sam"))
    raise ValueError(f"model.config {spec!r}: not a named Semantic-SAM config ({sorted(named)}), YAML or JSON")


def _native_config(path: Path, family: str) -> dict[str, Any]:
    import json

    p = path / "config.json" if path.is_dir() else path
    meta = json.loads(p.read_text())
    if "config" in meta and "family" in meta:
        if meta["family"] != family:
            raise ValueError(f"{p}: a {meta['family']} config, not {family}")
        return dict(meta["config"])
    return dict(meta)


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model a run starts from: ``model.from`` through ``seem.load`` (registered name, our directory or an
    official checkpoint), else a fresh model of ``model.config`` (``model.family``, default SEEM)."""
    mc = cfg.model
    if mc.from_:
        from seem.loading import load

        model = load(mc.from_)
        fam = model_family(model)
        if mc.family is not None and mc.family != fam:
            raise ValueError(f"model.family is {mc.family!r} but {mc.from_} holds a {fam} model")
        return model
    if (mc.family or "seem") == "seem":
        from seem.models.seem_model import SEEMModel

        arch = _seem_arch(mc.config)
        if arch.decoder.variant != "v1":
            raise ValueError("training implements the SEEM v1 recipe; use a v1 config (decoder variant 'v1')")
        return SEEMModel(arch)
    from seem.models.semantic_sam import SemanticSAM

    return SemanticSAM(_ssam_arch(mc.config))


def save_model(model: nn.Module, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``model`` in our format (``config.json`` + ``model.safetensors``; ``seem.load`` reads it)."""
    if model_family(model) == "seem":
        return model.save_pretrained(out_dir)  # type: ignore[operator]
    from seem.models.semantic_sam import save_semantic_sam

    return save_semantic_sam(model, out_dir)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------------------------


def _under(root: str | None, value: Any) -> Any:
    """A relative path option resolved against the source ``root`` when that file exists there."""
    if root is None or not isinstance(value, str) or os.path.isabs(value):
        return value
    cand = Path(root) / value
    return str(cand) if cand.exists() else value


def build_source(sc: SourceConfig) -> Any:
    """The ``seem.train.datasets`` adapter a ``SourceConfig`` names (options checked against its signature)."""
    from seem.train.datasets import BsdsSource, CocoPanopticSource, FolderSource, PartSource, RefCocoSource, Sa1bSource

    opts = {k: _under(sc.root, v) for k, v in sc.options.items()}
    t = sc.type
    try:
        if t in ("folder", "grabcut", "sa1b", "bsds") and sc.root is None:
            raise ValueError("needs root: the dataset folder")
        if t == "folder":
            return FolderSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "grabcut":
            opts.setdefault("masks", "gt")
            opts.setdefault("void_value", 128)
            return FolderSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "sa1b":
            return Sa1bSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "bsds":
            return BsdsSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "coco_panoptic":
            ref = opts.pop("refcoco", None)
            if isinstance(ref, dict):
                from seem.eval.readers import RefCoco

                ref = RefCoco(
                    _under(sc.root, ref["refs"]),
                    _under(sc.root, ref["instances"]),
                    split=ref.get("split", "train"),
                    image_root=_under(sc.root, ref.get("image_root")),
                )
            return CocoPanopticSource(refcoco=ref, **opts)
        if t == "refcoco":
            from seem.eval.readers import RefCoco

            refs, inst = opts.pop("refs"), opts.pop("instances")
            reader = RefCoco(refs, inst, split=opts.pop("split", None), image_root=opts.get("image_root"))
            return RefCocoSource(reader, **opts)
        if t == "parts":
            return PartSource(**opts)
    except TypeError as e:
        raise ValueError(f"data source {t!r}: {e}") from None
    except KeyError as e:
        raise ValueError(f"data source {t!r}: missing option {e}") from None
    raise ValueError(f"data source type {t!r} is unknown")


class MergedSource:
    """Several sources as one ``SampleSource``: items listed source by source (after ``limit`` / ``indices`` /
    ``repeat``); class and part vocabularies merged by name (first appearance order), ids remapped."""

    def __init__(self, sources: Sequence[Any], configs: Sequence[SourceConfig] | None = None) -> None:
        if not sources:
            raise ValueError("no data source")
        self.sources = list(sources)
        self.class_names: list[str] = []
        self.part_names: list[str] = []
        self._class_maps: list[Tensor] = []
        self._part_maps: list[Tensor] = []
        for s in self.sources:
            self._class_maps.append(self._merge(self.class_names, list(getattr(s, "class_names", []))))
            self._part_maps.append(self._merge(self.part_names, list(getattr(s, "part_names", []))))
        self.items: list[tuple[int, int]] = []
        for si, s in enumerate(self.sources):
            c = configs[si] if configs is not None else SourceConfig()
            idx = list(range(len(s)))
            if c.limit is not None:
                idx = idx[: c.limit]
            if c.indices is not None:
                bad = [i for i in c.indices if not 0 <= i < len(idx)]
                if bad:
                    raise ValueError(f"data source {si}: indices {bad} outside [0, {len(idx)})")
                idx = [idx[i] for i in c.indices]
            self.items.extend((si, i) for _ in range(c.repeat) for i in idx)
        if not self.items:
            raise ValueError("the data sources hold no image")

    @staticmethod
    def _merge(vocab: list[str], names: list[str]) -> Tensor:
        out = []
        for n in names:
            if n not in vocab:
                vocab.append(n)
            out.append(vocab.index(n))
        return torch.tensor([*out, -1], dtype=torch.long)  # index -1 → -1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        si, i = self.items[index]
        s = self.sources[si][i]
        cm, pm = self._class_maps[si], self._part_maps[si]
        return replace(s, class_ids=cm[s.class_ids], part_ids=pm[s.part_ids])


def build_sources(cfg: TrainConfig) -> MergedSource:
    """Every ``data.sources`` entry built and merged."""
    return MergedSource([build_source(sc) for sc in cfg.data.sources], cfg.data.sources)


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
        for i, s in enumerate(b.samples):
            feats = ImageFeatures([t[i : i + 1] for t in ms], mf[i : i + 1], canvas)
            masks = s.masks.to(dev)
            spatial = prev = sp_gt = None
            if tasks.spatial and s.num_masks:
                cands = None if pc.candidates == "all" else np.flatnonzero(s.is_thing.numpy()).tolist()
                prompts = self.sampler(s.masks, ctx.rng, cands)
                if bool(prompts.valid.any()):

                    def draws(sp: Any, mem: bool) -> Any:
                        return random_decoder_draws(dcfg, sp, with_memory=mem, generator=ctx.generator)

                    rounds = run_corrective_rounds(
                        m.decode, feats, prompts, ctx.n_rounds, draws=draws if pc.random_draws else None
                    )
                    prompts, prev = rounds.prompts, rounds.prev_mask
                    spatial = prompts.spatial_prompts(dev)
                    sp_gt = prompts.gt_masks.to(dev)
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
                draws_now = random_decoder_draws(dcfg, spatial, with_memory=prev is not None, generator=ctx.generator)
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


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------


class _LevelsPredictor:
    """``predict_levels`` for ``seem.eval.runner.evaluate_granularity`` on a ``SemanticSAM``: one click → every
    granularity token's mask at the original size (``GranularityPredictor``'s resizing) and its IoU score."""

    def __init__(self, model: nn.Module, short_side: int, pb: int) -> None:
        from seem.granularity import GranularityPredictor

        self.inner = GranularityPredictor(model, short_side=short_side)  # type: ignore[arg-type]
        self.pb = int(pb)

    def set_image(self, image: np.ndarray) -> None:
        self.inner.set_image(image)

    @torch.no_grad()
    def predict_levels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.inner
        assert p.features is not None and p.original_size is not None
        h0, w0 = p.original_size
        rel = torch.from_numpy(np.asarray(points, np.float64).reshape(1, 2) / np.array([w0, h0])).float()
        model = p.model
        out = model.decode_clicks(p.features, rel.to(p.device), relative=True, pb=self.pb)
        assert out.masks is not None
        logits = model.upscale_masks(out.masks[0, 0], p.features)  # [K, H', W']
        logits = F.interpolate(logits[:, None].float(), size=(h0, w0), mode="bilinear", align_corners=False)[:, 0]
        return (logits > 0).cpu().numpy(), out.ious[0, 0].float().cpu().numpy()


def evaluate_model(model: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """Evaluate ``model`` on ``cfg.eval.data`` with the evaluation module (SEEM: ``evaluate_interactive`` with a
    ``Segmenter``; Semantic-SAM: ``evaluate_granularity``). Returns flat metrics (``miou@k``, ``noc@t``,
    ``final_iou``; or ``point_max``, ``point_oracle``, ``all_granularity_iou``). The model is left in eval mode."""
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_granularity, evaluate_interactive

    ec = cfg.eval
    if ec.data is None:
        raise ValueError("eval.data is not set: name a held-out dataset folder")
    dataset, _ = open_dataset(ec.data, ec.format, split=ec.split, image_root=ec.images)
    if model_family(model) == "semantic_sam":
        levels = _LevelsPredictor(model, ec.short_side, cfg.prompts.point_pb)
        res = evaluate_granularity(levels, dataset, limit=ec.limit)
        return {k: float(v) for k, v in res.metrics.items()}  # type: ignore[union-attr]
    from seem.predictor import Segmenter

    seg = Segmenter(model, short_side=ec.short_side, cache_dir=False, progress=False)  # type: ignore[arg-type]
    ks = tuple(k for k in (1, 2, 3, 5, 10, 20) if k <= ec.max_clicks) or (1,)
    r = evaluate_interactive(
        seg, dataset, ec.protocol, ec.max_clicks, ec.thresholds, limit=ec.limit, ks=ks, keep_worst=0
    )
    out = {f"miou@{k}": float(v) for k, v in r.miou_at_k.items()}
    out.update({f"noc@{t:g}": float(n.noc) for t, n in r.noc.items()})
    out["final_iou"] = float(np.nanmean([it.final_iou for it in r.items]))
    out["mean_iou_curve"] = float(np.nanmean(r.curve))
    return out


# ---------------------------------------------------------------------------------------------------------------
# metrics log and plot
# ---------------------------------------------------------------------------------------------------------------

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "training loss",
    xlabel: str = "step",
    ylabel: str = "loss",
    size: tuple[int, int] = (900, 520),
) -> np.ndarray:
    """A line plot (OpenCV) of ``{name: (xs, ys)}``; non-finite values are skipped. Returns RGB uint8 ``[H, W, 3]``."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 80, w - 180, 40, h - 55
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    ys_all = [float(y) for _, ys in series.values() for y in ys if math.isfinite(float(y))]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y0, y1 = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    pad = (y1 - y0) * 0.05 or max(abs(y1) * 0.05, 1e-3)
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            round(left + (x - x0) / (x1 - x0) * (right - left)),
            round(bottom - (y - y0) / (y1 - y0) * (bottom - top)),
        )

    grey, dark = (225, 225, 225), (40, 40, 40)
    for k in range(6):
        yv = y0 + (y1 - y0) * k / 5
        _, yy = px(x0, yv)
        cv2.line(img, (left, yy), (right, yy), grey, 1)
        cv2.putText(img, f"{yv:.3g}", (8, yy + 4), 0, 0.42, dark, 1, cv2.LINE_AA)
        xv = x0 + (x1 - x0) * k / 5
        xx, _ = px(xv, y0)
        cv2.line(img, (xx, top), (xx, bottom), grey, 1)
        cv2.putText(img, f"{xv:.4g}", (xx - 12, bottom + 18), 0, 0.42, dark, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), dark, 1)
    cv2.putText(img, title, (left, 25), 0, 0.6, dark, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((left + right) // 2 - 15, h - 12), 0, 0.45, dark, 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, top - 12), 0, 0.45, dark, 1, cv2.LINE_AA)
    for j, (name, (xs, ys)) in enumerate(series.items()):
        color = _PALETTE[j % len(_PALETTE)]
        pts = [px(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
        elif pts:
            cv2.circle(img, pts[0], 3, color, -1)
        ly = top + 18 + 20 * j
        cv2.line(img, (right + 12, ly - 4), (right + 34, ly - 4), color, 2)
        cv2.putText(img, name[:20], (right + 40, ly), 0, 0.42, dark, 1, cv2.LINE_AA)
    return img


class MetricsLog:
    """Append-only CSV with a fixed header (``metrics.csv`` / ``eval.csv``). On resume, rows after the resumed step
    are dropped so the file matches the checkpoint."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)

    def truncate_after(self, step: int) -> None:
        rows = self.rows()
        if not rows:
            return
        header = list(rows[0].keys())
        keep = [r for r in rows if float(r.get("step", 0) or 0) <= step]
        with open(self.path, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=header)
            wr.writeheader()
            wr.writerows(keep)
        self.columns = header

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                wr.writeheader()
            wr.writerow({k: _fmt(row.get(k, "")) for k in self.columns})

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------

_CKPT = re.compile(r"^step_(\d{7,})$")


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``output_dir/checkpoints`` (``latest`` file, else highest step)."""
    root = Path(output_dir) / "checkpoints"
    marker = root / "latest"
    if marker.is_file():
        p = root / marker.read_text().strip()
        if (p / "trainer.pt").is_file():
            return p
    found = sorted(d for d in root.glob("step_*") if _CKPT.match(d.name) and (d / "trainer.pt").is_file())
    return found[-1] if found else None


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns: the step reached, the final model directory (None when stopped early with
    ``until``), the last logged metrics and every evaluation ``(step, metrics)``."""

    step: int
    final_dir: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class Trainer:
    """Train one model from a ``TrainConfig`` (see the module docstring).

    Args:
        cfg: the run config (finalized here with the model's family defaults).
        resume: False; True = continue from the latest checkpoint in ``output_dir`` (none → start fresh); or a
            checkpoint directory.
        model: train this model instead of building one from ``cfg.model``.
        log: where progress lines go (rank 0), default ``print``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool | str | os.PathLike[str] = False,
        model: nn.Module | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(cfg.device, local_rank)
        self.dist: DistInfo = init_distributed(self.device)
        self._log = log or print
        self._bar: Any = None
        if model is None:
            torch.manual_seed(step_seed(cfg.seed, 0x5EED))  # fresh weights depend on the run seed only
            model = build_model(cfg)
        self.model = model
        self.family = model_family(self.model)
        self.cfg = cfg.finalize(self.family)  # type: ignore[arg-type]
        cfg.validate()
        self.out = Path(cfg.output_dir)
        self.model.to(self.device)
        self.model.train()
        self.frozen = freeze_modules(self.model, cfg.freeze or [])
        # data
        self.source = build_sources(cfg)
        d = cfg.data
        lsj = LSJConfig(
            image_size=d.image_size,
            min_scale=d.min_scale,
            max_scale=d.max_scale,
            flip_prob=d.flip_prob,
            min_mask_area=d.min_mask_area,
        )
        self.dataset = TrainDataset(self.source, LargeScaleJitter(lsj), seed=cfg.seed)
        self.sampler = ShardedSampler(
            len(self.dataset),
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            seed=cfg.seed,
            shuffle=d.shuffle,
        )
        self.steps_per_epoch = self.sampler.per_rank // d.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{len(self.dataset)} training images over {self.dist.world_size} process(es) give "
                f"{self.sampler.per_rank} per process, fewer than data.batch_size={d.batch_size}"
            )
        # step module, optimizer, schedule
        if isinstance(self.model, SEEMModel):
            self.step_module: nn.Module = SEEMTrainStep(self.model, cfg, self.source.class_names)
        else:
            assert isinstance(self.model, SemanticSAM)
            self.step_module = GranularityTrainStep(self.model, cfg)
        sc = cfg.solver
        self.optimizer = build_optimizer(
            self.model,
            lr=sc.lr,
            weight_decay=sc.weight_decay,
            betas=sc.betas,
            eps=sc.eps,
            lr_multipliers=sc.lr_multipliers,
            weight_decay_norm=sc.weight_decay_norm,
            weight_decay_embedding=sc.weight_decay_embedding,
        )
        sch = cfg.schedule
        self.scheduler = WarmupMultiStepSchedule(
            self.optimizer, sch.max_steps, sch.milestones, sch.gamma, sch.warmup_steps, sch.warmup_factor
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.step = 0
        self.params = trainable_parameters(self.model)
        self.loss_names = list(cfg.losses.weights or {})
        self.metrics = MetricsLog(
            self.out / "metrics.csv",
            [
                "step",
                "epoch",
                "lr",
                "loss",
                *self.loss_names,
                "grad_norm",
                "rounds",
                "sec_per_step",
                "images_per_sec",
            ],
        )
        self.eval_log: MetricsLog | None = None
        self.evals: list[tuple[int, dict[str, float]]] = []
        if resume:
            ckpt = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(self.out)
            if ckpt is not None:
                self.load_checkpoint(ckpt)
            elif self.is_main:
                self._log(f"no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
        self.ddp: nn.Module | None = None
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.step_module, find_unused_parameters=True)

    # -- helpers ----------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def info(self, msg: str) -> None:
        if not self.is_main:
            return
        if self._bar is not None and self._log is print:
            self._bar.write(msg)  # keep the progress bar intact
        else:
            self._log(msg)

    def _autocast(self) -> Any:
        p = self.cfg.precision
        if p == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _loader(self, epoch: int, start_batch: int) -> torch.utils.data.DataLoader[Any]:
        d = self.cfg.data
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start_batch * d.batch_size)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=d.batch_size,
            sampler=self.sampler,
            collate_fn=Collate(size_divisibility=32, pad_to=d.image_size),
            num_workers=d.num_workers,
            drop_last=True,
        )

    def context(self, step: int) -> StepContext:
        """The seeded randomness of optimizer step ``step`` on this rank (and the global torch RNG reseeded)."""
        seed, rank = self.cfg.seed, self.dist.rank
        rng = np.random.default_rng([seed, step, rank])
        gen = torch.Generator().manual_seed(step_seed(seed, step, rank, 1))
        torch.manual_seed(step_seed(seed, step, rank, 2))
        n_rounds = draw_num_rounds(rng, self.cfg.prompts.max_iter) if self.family == "seem" else 0
        return StepContext(rng=rng, generator=gen, device=self.device, n_rounds=n_rounds)

    # -- one step ---------------------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on ``batch``; returns this rank's loss terms (weighted, summed over layers), the
        total and the gradient norm (averaged over ranks)."""
        ctx = self.context(self.step)
        module = self.ddp if self.ddp is not None else self.step_module
        with self._autocast():
            total, losses, info = module(batch, ctx)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.cfg.solver.clip_grad_norm
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            gnorm = clip_gradients(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            gnorm = clip_gradients(self.params, clip)
            if math.isfinite(gnorm):
                self.optimizer.step()
            else:
                self.info(f"step {self.step}: non-finite gradient norm; the update is skipped")
        self.scheduler.step()
        self.step += 1
        weights = self.cfg.losses.weights or {}
        terms = dict.fromkeys(self.loss_names, 0.0)
        for k, v in losses.items():
            base = re.sub(r"_\d+$", "", k)
            if base in terms:
                terms[base] += weights[base] * float(v.detach())
        vals = [float(total.detach()), *terms.values(), gnorm, info.get("rounds", 0.0)]
        vec = torch.tensor(vals, dtype=torch.float64)
        if is_distributed():
            vec = all_reduce_mean(vec.to(self.device)).cpu()
        out = {"loss": float(vec[0])}
        out.update({k: float(vec[1 + j]) for j, k in enumerate(self.loss_names)})
        out["grad_norm"] = float(vec[-2])
        out["rounds"] = float(vec[-1])
        return out

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train up to ``schedule.max_steps`` (or stop after step ``until``, writing a checkpoint: an interruption
        that ``resume`` continues). Returns a ``TrainResult``."""
        cfg = self.cfg
        max_steps = cfg.schedule.max_steps if until is None else min(int(until), cfg.schedule.max_steps)
        lc = cfg.logging
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            self.info(self.describe())
        if cfg.eval.data is not None and cfg.eval.at_start and self.step == 0:
            self.evaluate()
        bar = None
        if self.is_main and lc.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.schedule.max_steps, initial=self.step, desc=cfg.name, unit="step", dynamic_ncols=True)
            self._bar = bar
        acc: dict[str, float] = {}
        n_acc = 0
        busy = 0.0  # seconds of data loading + training in the current log interval (no eval / checkpoints)
        t_prev = time.perf_counter()
        last: dict[str, float] = {}
        try:
            while self.step < max_steps:
                epoch, pos = divmod(self.step, self.steps_per_epoch)
                for batch in self._loader(epoch, pos):
                    m = self.train_step(batch)
                    busy += time.perf_counter() - t_prev
                    for k, v in m.items():
                        acc[k] = acc.get(k, 0.0) + v
                    n_acc += 1
                    if bar is not None:
                        bar.update(1)
                        lr = cfg.solver.lr * self.scheduler.factor(self.step - 1)
                        bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{lr:.2e}")
                    end = self.step >= max_steps
                    if self.step % max(lc.log_every, 1) == 0 or end:
                        last = {k: v / n_acc for k, v in acc.items()}
                        self._write_metrics(epoch, last, busy / n_acc)
                        acc, n_acc, busy = {}, 0, 0.0
                    if cfg.eval.data is not None and cfg.eval.every > 0 and self.step % cfg.eval.every == 0:
                        self.evaluate()
                    if lc.checkpoint_every > 0 and self.step % lc.checkpoint_every == 0 and not end:
                        self.save_checkpoint()
                    if end:
                        break
                    t_prev = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            self._bar = None
        self.save_checkpoint()
        final = None
        if self.step >= cfg.schedule.max_steps:
            if cfg.eval.data is not None and cfg.eval.at_end and (cfg.eval.every <= 0 or self.step % cfg.eval.every):
                self.evaluate()
            if self.is_main:
                final = save_model(self.model, self.out / "final")
                self.info(f"done: {self.step} steps; model in {final}")
            barrier()
        return TrainResult(self.step, final, last, list(self.evals))

    def describe(self) -> str:
        """A short summary of the run (model, data, trainable parameters, world)."""
        n_all = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.params)
        return (
            f"{self.cfg.name}: {self.family} ({n_train / 1e6:.2f} M of {n_all / 1e6:.2f} M parameters trained; "
            f"frozen: {', '.join(self.cfg.freeze or []) or 'nothing'}), {len(self.dataset)} images, "
            f"{self.dist.world_size} process(es) × batch {self.cfg.data.batch_size} on {self.device}, "
            f"{self.cfg.precision}, step {self.step} of {self.cfg.schedule.max_steps}"
        )

    def _write_metrics(self, epoch: int, m: dict[str, float], sec_per_step: float) -> None:
        if not self.is_main:
            return
        lr = self.cfg.solver.lr * self.scheduler.factor(self.step - 1)
        row = {"step": self.step, "epoch": epoch, "lr": lr, **m, "sec_per_step": sec_per_step}
        row["images_per_sec"] = self.cfg.data.batch_size * self.dist.world_size / max(sec_per_step, 1e-9)
        self.metrics.append(row)
        self._plot()

    def _plot(self) -> None:
        from seem.eval.plots import save_png

        rows = self.metrics.rows()
        if not rows:
            return
        steps = [float(r["step"]) for r in rows]
        series: dict[str, tuple[Sequence[float], Sequence[float]]] = {"total": (steps, [_num(r["loss"]) for r in rows])}
        for name in self.loss_names:
            if name not in rows[0]:
                continue
            vals = [_num(r[name]) for r in rows]
            if any(v != 0 for v in vals if math.isfinite(v)):
                series[name.removeprefix("loss_")] = (steps, vals)
        save_png(self.out / "loss_curve.png", plot_lines(series, title=f"{self.cfg.name}: weighted training loss"))

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        """Run ``evaluate_model`` on rank 0 (others wait), log ``eval.csv`` and ``eval/step_*.json``."""
        metrics = None
        if self.is_main:
            import json

            t0 = time.perf_counter()
            try:
                metrics = evaluate_model(self.model, self.cfg)
            finally:
                self.model.train()
                set_frozen_eval(self.model, self.cfg.freeze or [])
            metrics["eval_seconds"] = time.perf_counter() - t0
            if self.eval_log is None:
                self.eval_log = MetricsLog(self.out / "eval.csv", ["step", *metrics])
            self.eval_log.append({"step": self.step, **metrics})
            (self.out / "eval").mkdir(parents=True, exist_ok=True)
            (self.out / "eval" / f"step_{self.step:07d}.json").write_text(json.dumps(metrics, indent=2) + "\n")
            self.evals.append((self.step, metrics))
            self.info(f"eval at step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        barrier()
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXX`` (model, optimizer, schedule, scaler, step, data position, each rank's
        RNG state) atomically and prune old ones (``keep_checkpoints``)."""
        root = self.out / "checkpoints"
        name = f"step_{self.step:07d}"
        tmp = root / (name + ".tmp")
        final = root / name
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_model(self.model, tmp / "model")
            epoch, pos = divmod(self.step, self.steps_per_epoch)
            state = {
                "step": self.step,
                "family": self.family,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "data": {
                    "epoch": epoch,
                    "batch_in_epoch": pos,
                    "steps_per_epoch": self.steps_per_epoch,
                    "dataset_len": len(self.dataset),
                    "world_size": self.dist.world_size,
                    "batch_size": self.cfg.data.batch_size,
                    "seed": self.cfg.seed,
                },
                "config": config_to_dict(self.cfg),
            }
            torch.save(state, tmp / "trainer.pt")
        barrier()
        tmp.mkdir(parents=True, exist_ok=True)  # (a node without the shared output folder writes a local copy)
        torch.save(_rng_state(), tmp / f"rng_rank{self.dist.rank}.pt")
        barrier()
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            (root / "latest").write_text(name + "\n")
            keep = self.cfg.logging.keep_checkpoints
            if keep > 0:
                old = sorted(d for d in root.glob("step_*") if _CKPT.match(d.name))
                for d in old[:-keep]:
                    shutil.rmtree(d, ignore_errors=True)
        barrier()
        return final

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by ``save_checkpoint`` (model weights strictly)."""
        from seem.models.checkpoints.native import load_native

        p = Path(path)
        if not (p / "trainer.pt").is_file():
            raise FileNotFoundError(f"{p}: not a trainer checkpoint (no trainer.pt)")
        family, _, sd = load_native(p / "model", device=self.device)
        if family != self.family:
            raise ValueError(f"{p}: a {family} checkpoint, but this run trains {self.family}")
        self.model.load_state_dict(sd, strict=True)
        state = torch.load(p / "trainer.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        data = state["data"]
        now = {"dataset_len": len(self.dataset), "world_size": self.dist.world_size}
        now["batch_size"] = self.cfg.data.batch_size
        changed = {k: (data.get(k), v) for k, v in now.items() if data.get(k) != v}
        if changed:
            self.info(f"resume: data settings changed since the checkpoint {changed}; the data order differs")
        rng_file = p / f"rng_rank{self.dist.rank}.pt"
        if not rng_file.is_file():
            rng_file = p / "rng_rank0.pt"
        if rng_file.is_file():
            _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
        if self.is_main:
            self.metrics.truncate_after(self.step)
            ev = self.out / "eval.csv"
            if ev.is_file():
                self.eval_log = MetricsLog(ev, [])
                self.eval_log.truncate_after(self.step)
        self.info(f"resumed from {p} at step {self.step}")

    def close(self) -> None:
        """Leave the process group (multi-process runs)."""
        cleanup_distributed()


def _num(s: str) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan
