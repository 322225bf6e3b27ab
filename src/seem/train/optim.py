"""Optimizer, learning-rate schedule, freezing and gradient clipping of the official recipes.

- ``freeze_modules``: parameters under the given module-name prefixes stop requiring gradients and those modules are
  kept in eval mode (official SEEM: ``backbone``, ``text_encoder`` (official ``lang_encoder``), ``pixel_decoder``).
- ``param_groups`` / ``build_optimizer``: AdamW (detectron2 / X-Decoder ``build_optimizer``): a parameter whose full
  name contains a key of ``lr_multipliers`` gets ``lr · factor`` (official ``backbone: 0.1``); normalisation-layer
  parameters get ``weight_decay_norm`` (0), embedding tables ``weight_decay_embedding`` (0), and Swin's
  ``relative_position_bias_table`` / ``absolute_pos_embed`` no weight decay.
- ``WarmupMultiStepSchedule``: detectron2's ``WarmupMultiStepLR``: ``factor(s) = γ^(number of milestones ≤ s) ·
  warmup(s)``, ``warmup(s) = warmup_factor · (1 − s / W) + s / W`` for ``s < W`` (linear), milestones given as
  fractions of the run (official 0.88889 / 0.96296) or step numbers.
- ``clip_gradients``: full-model L2 norm clip (official ``CLIP_TYPE: full_model``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "WarmupMultiStepSchedule",
    "build_optimizer",
    "clip_gradients",
    "freeze_modules",
    "is_norm_module",
    "param_groups",
    "trainable_parameters",
]

_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def is_norm_module(module: nn.Module) -> bool:
    """A normalisation layer: a torch norm type or any module class named ``*Norm`` (our text encoder's own
    ``LayerNorm``; the official code only recognises torch's types, a difference that matters only for an unfrozen
    text encoder)."""
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("Norm")


def _prefix_match(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze_modules(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Freeze every parameter whose name is ``prefix`` or starts with ``prefix.`` and put the modules named by the
    prefixes in eval mode (call again after ``model.train()``; the trainer does). Returns the frozen parameter
    names. Raises ``ValueError`` for a prefix that names no parameter."""
    frozen: list[str] = []
    names = dict(model.named_parameters())
    for prefix in prefixes:
        hit = [n for n in names if _prefix_match(n, prefix)]
        if not hit:
            top = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"freeze: {prefix!r} names no parameter of the model; top-level parts: {top}")
        for n in hit:
            names[n].requires_grad_(False)
        frozen.extend(hit)
    set_frozen_eval(model, prefixes)
    return sorted(set(frozen))


def set_frozen_eval(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Put the modules named by ``prefixes`` in eval mode (no stochastic depth / dropout in frozen parts)."""
    modules = dict(model.named_modules())
    for prefix in prefixes:
        m = modules.get(prefix)
        if m is not None:
            m.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that require gradients, in ``named_parameters`` order (each once)."""
    return [p for _, p in model.named_parameters() if p.requires_grad]


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None = None,
    weight_decay_norm: float = 0.0,
    weight_decay_embedding: float = 0.0,
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by ``(lr multiplier, weight decay)`` (see the module docstring).

    Each group: ``{"params", "lr", "weight_decay", "lr_mult", "names"}``; groups are ordered by their first
    parameter's position in the model. Shared parameters are listed once.
    """
    mults = dict(lr_multipliers or {})
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            mult = 1.0
            for key, factor in mults.items():
                if key in full:
                    mult *= float(factor)
            wd = float(weight_decay)
            if any(k in pname for k in _NO_DECAY_NAMES):
                wd = 0.0
            if is_norm_module(module):
                wd = float(weight_decay_norm)
            if isinstance(module, nn.Embedding):
                wd = float(weight_decay_embedding)
            g = groups.setdefault(
                (mult, wd), {"params": [], "lr": lr * mult, "weight_decay": wd, "lr_mult": mult, "names": []}
            )
            g["params"].append(p)
            g["names"].append(full)
    if not groups:
        raise ValueError("the model has no trainable parameter (everything is frozen)")
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_multipliers: Mapping[str, float] | None = None,
    weight_decay_norm: float = 0.0,
    weight_decay_embedding: float = 0.0,
) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` (group entries ``lr_mult`` and ``names`` are kept for logging; ``initial_lr``
    is the group's unscheduled learning rate)."""
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        lr_multipliers=lr_multipliers,
        weight_decay_norm=weight_decay_norm,
        weight_decay_embedding=weight_decay_embedding,
    )
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class WarmupMultiStepSchedule:
    """detectron2's ``WarmupMultiStepLR`` as a small stateful object (see the module docstring).

    ``step()`` after every optimizer step advances ``last_step`` and sets every group's ``lr`` to ``initial_lr ·
    factor(last_step)``; ``apply(step)`` sets them for an explicit step. State: ``{"last_step"}``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_steps: int,
        milestones: Sequence[float] = (0.88889, 0.96296),
        gamma: float = 0.1,
        warmup_steps: int = 10,
        warmup_factor: float = 1.0,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.optimizer = optimizer
        self.max_steps = int(max_steps)
        self.milestones = self.milestone_steps(milestones, max_steps)
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.last_step = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.apply(0)

    @staticmethod
    def milestone_steps(milestones: Sequence[float], max_steps: int) -> list[int]:
        """Fractions (< 1) become ``int(fraction · max_steps)`` (as X-Decoder converts ``SOLVER.STEPS``); numbers
        ≥ 1 are step numbers. Sorted."""
        out = []
        for m in milestones:
            if m < 0:
                raise ValueError(f"milestones must be >= 0, got {m}")
            out.append(int(m * max_steps) if m < 1 else int(m))
        return sorted(out)

    def factor(self, step: int) -> float:
        """Learning-rate factor at optimizer step ``step`` (0-based)."""
        f = self.gamma ** bisect.bisect_right(self.milestones, step)
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            f *= self.warmup_factor * (1 - alpha) + alpha
        return f

    def apply(self, step: int) -> None:
        f = self.factor(step)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        self.last_step += 1
        self.apply(self.last_step)

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "max_steps": self.max_steps,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.apply(self.last_step)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float | None, norm_type: float = 2.0) -> float:
    """Full-model gradient-norm clip (``max_norm`` None / ≤ 0: only measure). Returns the total norm before
    clipping (NaN / inf when a gradient is not finite)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None or max_norm <= 0:
        norms = torch.stack([p.grad.detach().float().norm(norm_type) for p in params])  # type: ignore[union-attr]
        return float(norms.norm(norm_type))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type))
