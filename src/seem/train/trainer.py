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

This module holds the ``Trainer`` loop, ``TrainResult`` and ``evaluate_model``; its parts live in
``seem.train.build`` (model and data sources), ``seem.train.steps`` (the step modules), ``seem.train.metrics_log``
(CSV logs, loss plot) and ``seem.train.checkpointing`` (checkpoint discovery, RNG state). Their public names are
re-exported here.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM
from seem.train.build import MergedSource, build_model, build_source, build_sources, model_family, save_model
from seem.train.checkpointing import CHECKPOINT_NAME, latest_checkpoint, rng_state, set_rng_state
from seem.train.config import TrainConfig, config_to_dict, save_config
from seem.train.data import Batch, Collate, LargeScaleJitter, LSJConfig, Sequential, TrainDataset
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
from seem.train.iterative import draw_num_rounds
from seem.train.metrics_log import MetricsLog, csv_float, plot_lines
from seem.train.optim import (
    WarmupMultiStepSchedule,
    build_optimizer,
    clip_gradients,
    freeze_modules,
    set_frozen_eval,
    trainable_parameters,
)
from seem.train.steps import GranularityTrainStep, SEEMTrainStep, StepContext, step_seed

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
    "save_model",
    "step_seed",
]


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
        transform: Any = LargeScaleJitter(lsj)
        if d.copy_paste > 0:
            from seem.train.copy_paste import CopyPaste, CopyPasteConfig

            cp = CopyPaste(CopyPasteConfig(prob=d.copy_paste, min_mask_area=d.min_mask_area))
            transform = Sequential(transform, cp)
        self.dataset = TrainDataset(self.source, transform, seed=cfg.seed)
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
        series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
            "total": (steps, [csv_float(r["loss"]) for r in rows])
        }
        for name in self.loss_names:
            if name not in rows[0]:
                continue
            vals = [csv_float(r[name]) for r in rows]
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
        torch.save(rng_state(), tmp / f"rng_rank{self.dist.rank}.pt")
        barrier()
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            (root / "latest").write_text(name + "\n")
            keep = self.cfg.logging.keep_checkpoints
            if keep > 0:
                old = sorted(d for d in root.glob("step_*") if CHECKPOINT_NAME.match(d.name))
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
            set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
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
