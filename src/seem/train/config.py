"""Run configuration of the trainer: one YAML file per run, read into typed dataclasses.

A run file has these sections (every key is optional except ``data.sources``; see ``configs/*.yaml`` and
``docs/training.md`` for complete examples)::

    name: tiny_grabcut              # run name (progress bar, logs)
    output_dir: runs/tiny_grabcut   # checkpoints/, metrics.csv, loss_curve.png, eval.csv, final/
    seed: 0
    device: auto                    # auto | cpu | cuda | cuda:1 | mps (torchrun: cuda:LOCAL_RANK)
    precision: fp32                 # fp32 | bf16 | fp16 (autocast; fp16 adds a gradient scaler)
    freeze: [backbone, text_encoder, pixel_decoder]   # module-name prefixes; default: the family's recipe
    model:    {family, from, config}                  # ModelConfig
    data:     {sources: [...], image_size, ...}       # DataConfig / SourceConfig
    prompts:  {kinds, probs, max_iter, ...}           # PromptConfig
    tasks:    {object, grounding, spatial}            # TaskConfig (SEEM)
    losses:   {weights, num_points, ...}              # LossConfig
    solver:   {lr, weight_decay, lr_multipliers, clip_grad_norm, ...}  # SolverConfig
    schedule: {max_steps, warmup_steps, milestones, gamma}            # ScheduleConfig
    eval:     {data, format, every, limit, max_clicks, ...}          # EvalConfig
    logging:  {log_every, checkpoint_every, keep_checkpoints, progress}  # LogConfig

Values left out (or ``null``) that depend on the model family (``freeze``, ``losses.weights``,
``solver.lr_multipliers``, ``solver.clip_grad_norm``) are filled by ``TrainConfig.finalize`` with the official
recipe of that family (SEEM: ``configs/seem/focalt_unicl_lang_v1.yaml``; Semantic-SAM: §6.2 of the design notes).

Paths: ``~`` and ``$VARS`` are expanded; relative paths are relative to the working directory.
Unknown keys raise ``ValueError`` naming the key (``data.sources[0].rooot``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

__all__ = [
    "FAMILIES",
    "SOURCE_TYPES",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "PromptConfig",
    "ScheduleConfig",
    "SolverConfig",
    "SourceConfig",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
    "tiny_seem_config",
    "tiny_semantic_sam_config",
]

FAMILIES = ("seem", "semantic_sam")
SOURCE_TYPES = ("folder", "grabcut", "coco_panoptic", "refcoco", "sa1b", "bsds", "parts", "indexed")
"""Dataset adapters a source can name (``seem.train.datasets``); ``grabcut`` is a ``folder`` with ``gt/`` masks
and void value 128."""

Family = Literal["seem", "semantic_sam"]
Precision = Literal["fp32", "bf16", "fp16"]

SEEM_FREEZE = ("backbone", "text_encoder", "pixel_decoder")
"""The official SEEM recipe freezes the backbone, the language encoder and the pixel decoder (``FIX_PARAM``)."""
SEEM_LR_MULTIPLIERS = {"backbone": 0.1, "text_encoder": 0.1}
"""Official ``LR_MULTIPLIER`` (backbone, lang_encoder 0.1; they only matter when those parts are unfrozen)."""
SEEM_CLIP = 5.0
SSAM_LR_MULTIPLIERS = {"backbone": 0.1}
SSAM_CLIP = 0.01
"""Semantic-SAM's full-model gradient clip (official ``CLIP_VALUE`` 0.01)."""


# ---------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """What to train.

    Attributes:
        family: ``"seem"`` or ``"semantic_sam"``; None = taken from ``from`` (a loaded model), else ``"seem"``.
        from_: (YAML key ``from``) a model to start from: a registered name (``seem models``), a directory in our
            format, or an official checkpoint file (anything ``seem.load`` accepts). None = build from ``config``
            with fresh weights.
        config: the architecture when building from scratch: a named config (SEEM: ``seem-focalt-v1``,
            ``seem-focall-v1``, ``tiny``; Semantic-SAM: ``swin_t``, ``swin_l``, ``tiny``), an official YAML, one of
            our ``config.json`` files, or an inline mapping (``SEEMConfig.to_dict()`` / ``SemanticSAMConfig`` layout).
    """

    family: Family | None = None
    from_: str | None = None
    config: str | dict[str, Any] | None = None
    backbone_weights: str | None = None


@dataclass
class SourceConfig:
    """One dataset (a ``seem.train.datasets`` adapter).

    Attributes:
        type: one of ``SOURCE_TYPES``.
        root: the dataset folder (folder / grabcut / sa1b / bsds; optional elsewhere).
        limit: use only the first ``limit`` images; indices: use only these images (after ``limit``).
        repeat: list the source this many times per epoch (to weight sources).
        options: the adapter's other keyword arguments, written as flat keys in YAML (e.g. ``void_value``,
            ``split``, ``annotations``, ``png_root``, ``image_root``, ``class_names``); checked against the
            adapter's signature when the dataset is built.
    """

    type: str = "folder"
    root: str | None = None
    limit: int | None = None
    indices: list[int] | None = None
    repeat: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"data source type {self.type!r} is unknown; choose from {SOURCE_TYPES}")
        if self.repeat < 1:
            raise ValueError(f"data source repeat must be >= 1, got {self.repeat}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data source limit must be >= 1, got {self.limit}")


@dataclass
class DataConfig:
    """Training data and augmentation (large-scale jitter, ``seem.train.data.LSJConfig``).

    Attributes:
        sources: the datasets (concatenated; class vocabularies merged by name).
        image_size: LSJ target and crop size (official 1024); batches are padded to it.
        min_scale, max_scale, flip_prob: LSJ (official 0.1, 2.0, 0.5).
        min_mask_area: masks smaller than this after the crop are dropped.
        copy_paste: chance per image of pasting twins of its own objects into it (``seem.train.copy_paste``; 0 =
            off, the official recipe): teaches a click to keep to one of two look-alike objects.
        batch_size: images per process and step (official SEEM: 2 per GPU × 8; Semantic-SAM: 1 per GPU).
        num_workers: ``DataLoader`` worker processes (0 = load in the training process).
        shuffle: shuffle every epoch (seeded; the order is part of the checkpoint).
    """

    sources: list[SourceConfig] = field(default_factory=list)
    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip_prob: float = 0.5
    min_mask_area: int = 1
    copy_paste: float = 0.0
    batch_size: int = 2
    num_workers: int = 0
    shuffle: bool = True


@dataclass
class PromptConfig:
    """Simulated prompts.

    SEEM (``seem.train.simulate.ShapeSampler`` and ``seem.train.iterative``):
        kinds, probs: visual prompt kinds and their probabilities (official: point, polygon, scribble, circle, 0.25
            each; ``stroke``, ``box`` and ``click`` — one 3×3 click as
            the predictor gives it, ``seem.train.simulate.draw_click`` — are also available).
        max_candidates: prompted instances per image (official 10); min_area: smaller instances get no prompt.
        candidates: ``"all"`` masks or only ``"things"``.
        max_iter: iterative training: each step first runs ``randint(0, max_iter)`` rounds without gradient that
            add one corrective click per prompt and pass the previous mask as memory (SEEM supplementary: 5;
            1 = no extra rounds).
        random_draws: draw the decoder's random choices (spatial query subset, prompt pixels, memory slots) at
            random, as official training does; False uses the deterministic inference rules.
        max_phrases: grounding phrases per image (sentences, or class names when the image has none).
        level_targets: train a prompt's spatial queries as granularity levels (the default model; None, the
            official recipe, trains only the query matched to the prompt's target). ``"ordered"``: query 0 on the
            coarsest region that contains the prompt ... the last on the finest (``seem.train.steps.
            granularity_targets``), the selection CE on the query holding the prompt's own target; ``"matched"``:
            after the usual Hungarian selection, the regions enclosing the target are Hungarian-matched to the
            other queries (``enclosing_targets``): the recipe of a model
            whose queries per prompt are granularity levels (the default model). Off in the official recipe.
        fixed_queries: give every prompt the same spatial queries in every step (the inference rule) even with
            ``random_draws``; None = whenever ``level_targets`` is set (a query must keep its level).

    Semantic-SAM (``sample_granularity_clicks``):
        n_clicks: clicks per image (official ``MAX_NUM_INSTANCE`` 60); max_targets: masks per click (6).
        click_box_half_size: a click's training anchor box is ±this many px around it.
        box_noise: anchor-box noise scale (0.4); point_box_noise: its extra factor for clicks (0.01).
        point_pb: point/box type index of clicks (official training 1; the official inference feeds 0, which
            never saw a click in training — set 0 to train the index the predictors use).
    """

    kinds: tuple[str, ...] = ("point", "polygon", "scribble", "circle")
    probs: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    max_candidates: int = 10
    min_area: int = 10
    candidates: Literal["all", "things"] = "all"
    max_iter: int = 5
    random_draws: bool = True
    max_phrases: int = 10
    level_targets: Literal["matched", "ordered"] | None = None
    fixed_queries: bool | None = None
    n_clicks: int = 60
    max_targets: int = 6
    click_box_half_size: float = 3.0
    box_noise: float = 0.4
    point_box_noise: float = 0.01
    point_pb: int = 1

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ValueError(f"prompts.max_iter must be >= 1 (1 = no corrective rounds), got {self.max_iter}")
        if self.candidates not in ("all", "things"):
            raise ValueError(f"prompts.candidates must be 'all' or 'things', got {self.candidates!r}")
        if self.point_pb not in (0, 1):
            raise ValueError(f"prompts.point_pb must be 0 or 1, got {self.point_pb}")
        if self.n_clicks < 1 or self.max_targets < 1 or self.max_phrases < 1:
            raise ValueError("prompts.n_clicks, max_targets and max_phrases must be >= 1")


@dataclass
class TaskConfig:
    """SEEM query groups trained each step (one decoder call per image computes all of them, as official)."""

    object: bool = True
    grounding: bool = True
    spatial: bool = True


@dataclass
class LossConfig:
    """Losses (``seem.train.losses``).

    Attributes:
        weights: ``{loss_<group>_<term>: weight}``; None = the family's official weights (``SEEM_LOSS_WEIGHTS`` /
            ``GRANULARITY_LOSS_WEIGHTS``); given keys replace those defaults one by one.
        num_points, oversample_ratio, importance_sample_ratio: point sampling of matching and mask losses
            (12544, 3, 0.75).
        no_object_weight: CE weight of SEEM's background class (0.1).
        grounding_text_weight, grounding_class_weight: grounding CE factor of sentences (2.0) / class names (0.5).
        cost_class, cost_mask, cost_dice: SEEM matcher (2 / 5 / 5); cost_box, cost_giou: Semantic-SAM (5 / 2).
        iou_target_grad: Semantic-SAM IoU loss reaches the masks through its target (official True).
    """

    weights: dict[str, float] | None = None
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    no_object_weight: float = 0.1
    grounding_text_weight: float = 2.0
    grounding_class_weight: float = 0.5
    cost_class: float = 2.0
    cost_mask: float = 5.0
    cost_dice: float = 5.0
    cost_box: float = 5.0
    cost_giou: float = 2.0
    iou_target_grad: bool = False


@dataclass
class SolverConfig:
    """AdamW and gradient clipping (``seem.train.optim``).

    Attributes:
        lr, weight_decay, betas, eps: AdamW (official 1e-4, 0.05).
        lr_multipliers: ``{key: factor}``; a parameter whose full name contains ``key`` gets ``lr · factor``
            (official: backbone 0.1); None = the family's recipe.
        weight_decay_norm, weight_decay_embedding: weight decay of normalisation layers and embeddings (0).
        clip_grad_norm: full-model L2 gradient-norm clip (SEEM 5.0, Semantic-SAM 0.01; 0 = off; None = recipe).
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_multipliers: dict[str, float] | None = None
    weight_decay_norm: float = 0.0
    weight_decay_embedding: float = 0.0
    clip_grad_norm: float | None = None


@dataclass
class ScheduleConfig:
    """Step schedule (detectron2 ``WarmupMultiStepLR``): ``lr · γ^(milestones passed) · warmup``.

    Attributes:
        max_steps: optimizer steps of the run.
        warmup_steps: linear warmup length (official 10); the factor rises from ``warmup_factor`` to 1
            (the official ``WARMUP_FACTOR`` is 1.0, i.e. no warmup in effect; lower it to warm up).
        milestones: decay points, fractions of ``max_steps`` (< 1) or step numbers (official 0.88889, 0.96296).
        gamma: decay factor per milestone (0.1).
    """

    max_steps: int = 1000
    warmup_steps: int = 10
    warmup_factor: float = 1.0
    milestones: tuple[float, ...] = (0.88889, 0.96296)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"schedule.max_steps must be >= 1, got {self.max_steps}")
        if self.warmup_steps < 0 or not 0 <= self.warmup_factor <= 1:
            raise ValueError("schedule.warmup_steps must be >= 0 and warmup_factor in [0, 1]")


@dataclass
class EvalConfig:
    """Periodic evaluation on a held-out set with ``seem.eval.runner`` (rank 0).

    SEEM: ``evaluate_interactive`` with ``seem.predictor.Segmenter`` (``protocol`` clicks, ``max_clicks``);
    Semantic-SAM: ``evaluate_granularity`` (one click, every level; BSDS500 / COCO / SA-1B data).

    Attributes:
        data: dataset folder (``seem eval`` formats, auto-detected) or None for no evaluation.
        format, split, images: as ``seem eval --format / --split / --images``.
        every: evaluate every this many steps (0 = only ``at_start`` / ``at_end``).
        at_start, at_end: also evaluate before the first and after the last step.
        limit: objects (clicks for granularity) evaluated.
        max_clicks, protocol, thresholds: interactive protocol (``ritm`` / ``seem``).
        short_side: the predictor's input short side (SEEM 512; use the training scale for small models).
    """

    data: str | None = None
    format: str | None = None
    split: str | None = None
    images: str | None = None
    every: int = 0
    at_start: bool = False
    at_end: bool = True
    limit: int | None = None
    max_clicks: int = 5
    protocol: Literal["ritm", "seem"] = "ritm"
    thresholds: tuple[float, ...] = (0.85, 0.9)
    short_side: int = 512


@dataclass
class LogConfig:
    """Logging and checkpoints (rank 0).

    Attributes:
        log_every: write a ``metrics.csv`` row (losses averaged over the interval) every this many steps and
            redraw ``loss_curve.png``.
        checkpoint_every: write ``checkpoints/step_XXXXXXX`` every this many steps (0 = only at the end).
        keep_checkpoints: how many recent checkpoints to keep (0 = all).
        progress: tqdm progress bar.
    """

    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    progress: bool = True


@dataclass
class TrainConfig:
    """A whole run (see the module docstring)."""

    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 0
    device: str = "auto"
    precision: Precision = "fp32"
    freeze: list[str] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.model.family is not None and self.model.family not in FAMILIES:
            raise ValueError(f"model.family must be one of {FAMILIES}, got {self.model.family!r}")

    @property
    def family(self) -> Family:
        """The model family (``finalize`` sets it; before that ``"seem"`` when unknown)."""
        return self.model.family or "seem"

    def finalize(self, family: Family | None = None) -> TrainConfig:
        """Fill the family-dependent defaults in place (``family`` overrides ``model.family``; use the loaded
        model's family). Returns ``self``."""
        from seem.train.losses import GRANULARITY_LOSS_WEIGHTS, SEEM_LOSS_WEIGHTS

        if family is not None:
            if self.model.family is not None and self.model.family != family:
                raise ValueError(f"model.family is {self.model.family!r} but the model to start from is a {family}")
            self.model.family = family
        fam = self.family
        if self.freeze is None:
            self.freeze = list(SEEM_FREEZE) if fam == "seem" else []
        base = dict(SEEM_LOSS_WEIGHTS if fam == "seem" else GRANULARITY_LOSS_WEIGHTS)
        if self.losses.weights is not None:
            unknown = sorted(set(self.losses.weights) - set(base))
            if unknown:
                raise ValueError(f"losses.weights: unknown keys {unknown} for {fam}; known: {sorted(base)}")
            base.update({k: float(v) for k, v in self.losses.weights.items()})
        self.losses.weights = base
        if self.solver.lr_multipliers is None:
            self.solver.lr_multipliers = dict(SEEM_LR_MULTIPLIERS if fam == "seem" else SSAM_LR_MULTIPLIERS)
        if self.solver.clip_grad_norm is None:
            self.solver.clip_grad_norm = SEEM_CLIP if fam == "seem" else SSAM_CLIP
        return self

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot run (called by the trainer)."""
        if not self.data.sources:
            raise ValueError("data.sources is empty: name at least one dataset to train on")
        if self.data.batch_size < 1 or self.data.image_size < 32:
            raise ValueError("data.batch_size must be >= 1 and data.image_size >= 32")
        if not 0.0 <= self.data.copy_paste <= 1.0:
            raise ValueError(f"data.copy_paste is a probability in [0, 1], got {self.data.copy_paste}")
        if self.family == "seem" and not (self.tasks.object or self.tasks.grounding or self.tasks.spatial):
            raise ValueError("tasks: enable at least one of object, grounding, spatial")
        if self.eval.protocol not in ("ritm", "seem"):
            raise ValueError(f"eval.protocol must be 'ritm' or 'seem', got {self.eval.protocol!r}")


# ---------------------------------------------------------------------------------------------------------------
# dict <-> dataclass
# ---------------------------------------------------------------------------------------------------------------

_RENAMES = {"from": "from_"}  # YAML key -> field name (``from`` is a Python keyword)
_RENAMES_BACK = {v: k for k, v in _RENAMES.items()}


def _expand(v: Any) -> Any:
    """``~`` and ``$VARS`` expanded in strings (recursively in lists and mappings)."""
    if isinstance(v, str):
        return os.path.expanduser(os.path.expandvars(v))
    if isinstance(v, list):
        return [_expand(x) for x in v]
    if isinstance(v, dict):
        return {k: _expand(x) for k, x in v.items()}
    return v


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a plain YAML value to the annotated type ``tp`` (nested dataclasses, lists, tuples, dicts,
    optionals, literals), raising ``ValueError`` naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {value!r} does not fit {tp} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if dataclasses.is_dataclass(tp):
        return _dataclass_from(tp, value, where)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, f"{where}.{k}"): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return _expand(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return _expand(value)
    return value


def _dataclass_from(cls: type, d: Any, where: str) -> Any:
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in d.items():
        name = _RENAMES.get(str(key), str(key))
        if name not in names:
            extra[str(key)] = value
            continue
        kwargs[name] = _convert(hints[name], value, f"{where}.{key}" if where else str(key))
    if extra:
        if cls is SourceConfig:  # flat adapter options
            opts = dict(kwargs.get("options", {}))
            opts.update({k: _expand(v) for k, v in extra.items()})
            kwargs["options"] = opts
        else:
            keys = sorted(f"{where}.{k}" if where else k for k in extra)
            known = sorted(_RENAMES_BACK.get(n, n) for n in names)
            raise ValueError(f"unknown config keys {keys}; known here: {known}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where or 'config'}: {e}") from None


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a ``TrainConfig`` from a plain mapping (the YAML document); unknown keys raise ``ValueError``."""
    return _dataclass_from(TrainConfig, d, "")


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(v):
            val = getattr(v, f.name)
            if isinstance(v, SourceConfig) and f.name == "options":
                out.update({k: _plain(x) for k, x in val.items()})
                continue
            out[_RENAMES_BACK.get(f.name, f.name)] = _plain(val)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain, YAML-serialisable dict (inverse of ``config_from_dict``)."""
    return _plain(cfg)


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur: Any = d
    for i, p in enumerate(parts[:-1]):
        if isinstance(cur, list):
            cur = cur[int(p)]
            continue
        nxt = cur.get(p)
        if nxt is None:
            nxt = [] if parts[i + 1].isdigit() else {}
            cur[p] = nxt
        cur = nxt
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def apply_overrides(d: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, list indices as numbers; values parsed as YAML) in place,
    e.g. ``solver.lr=1e-5``, ``data.sources.0.limit=4``, ``freeze=[backbone]``."""
    import yaml

    for o in overrides:
        if "=" not in o:
            raise ValueError(f"override {o!r} must look like KEY=VALUE (e.g. solver.lr=1e-5)")
        key, raw = o.split("=", 1)
        if not key.strip():
            raise ValueError(f"override {o!r} has an empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"override {o!r}: the value is not valid YAML ({e})") from None
        try:
            _set_dotted(d, key.strip(), value)
        except (IndexError, ValueError, TypeError, AttributeError):
            raise ValueError(f"override {o!r}: {key.strip()!r} does not name a config entry") from None
    return d


def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a run YAML (plus ``KEY=VALUE`` overrides) into a ``TrainConfig`` (family defaults not yet filled;
    the trainer calls ``finalize`` once it knows the model)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"run config not found: {p}")
    try:
        with open(p) as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a run config must be a YAML mapping, got {type(d).__name__}")
    return config_from_dict(apply_overrides(d, list(overrides)))


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML (the ``config.yaml`` next to a run's outputs)."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    return p


# ---------------------------------------------------------------------------------------------------------------
# tiny architectures (smoke runs, tests, CPU examples)
# ---------------------------------------------------------------------------------------------------------------


def tiny_seem_config() -> Any:
    """A very small SEEM v1 (``model.config: tiny``): FocalNet embed 16, depths (1, 1, 1, 1), width 32, 3 decoder
    layers, 8 queries, 4 memories, a 1-layer 32-wide text encoder (~0.4 M parameters; trains on a CPU)."""
    from seem.models.config import FocalNetConfig, PixelDecoderConfig, SEEMConfig, SEEMDecoderConfig, TextEncoderConfig

    bb = FocalNetConfig(embed_dim=16, depths=(1, 1, 1, 1))
    return SEEMConfig(
        name="seem-tiny",
        backbone=bb,
        pixel_decoder=PixelDecoderConfig(
            in_channels=bb.out_channels,
            conv_dim=32,
            mask_dim=32,
            transformer_layers=1,
            transformer_heads=2,
            transformer_ffn_dim=64,
        ),
        text=TextEncoderConfig(width=32, heads=2, layers=1, proj_dim=32),
        decoder=SEEMDecoderConfig(
            hidden_dim=32,
            num_heads=2,
            ffn_dim=64,
            num_layers=3,
            num_queries=8,
            mask_dim=32,
            dim_proj=32,
            spatial_memories=4,
        ),
    )


def tiny_semantic_sam_config() -> Any:
    """A very small Semantic-SAM (``model.config: tiny``): Swin embed 16, depths (1, 1, 1, 1), window 4, a 1-layer
    32-wide encoder, a 3-layer 32-wide decoder with 6 granularity tokens (~0.5 M parameters)."""
    from seem.models.semantic_sam_config import (
        DeformableEncoderConfig,
        GranularityDecoderConfig,
        SemanticSAMConfig,
        SwinConfig,
    )

    bb = SwinConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.0)
    return SemanticSAMConfig(
        name="semantic-sam-tiny",
        backbone=bb,
        encoder=DeformableEncoderConfig(
            in_channels=bb.out_channels, conv_dim=32, mask_dim=32, num_layers=1, num_heads=8, ffn_dim=64
        ),
        decoder=GranularityDecoderConfig(hidden_dim=32, num_layers=3, ffn_dim=64, mask_dim=32),
    )
