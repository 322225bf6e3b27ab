"""Training foundation for SEEM and Semantic-SAM: one sample format with dataset adapters and augmentation
(``data``, ``datasets``), training-time prompt simulation (``simulate``), Hungarian matchers (``matcher``) and the
set criteria with their losses (``losses``).

Everything is device-agnostic and deterministic given the generators passed in (``numpy.random.Generator`` for
data and prompts, ``torch.Generator`` for point sampling).
"""

from seem.train.data import (
    Batch,
    Collate,
    LargeScaleJitter,
    LSJConfig,
    Sample,
    SampleSource,
    TrainDataset,
    collate,
    containment_groups,
)
from seem.train.losses import (
    GRANULARITY_LOSS_WEIGHTS,
    GROUNDING_TASK_WEIGHTS,
    SEEM_LOSS_WEIGHTS,
    GranularityCriterion,
    GranularityLayer,
    GranularityTargets,
    SEEMCriterion,
    SeemTargets,
    granularity_layers,
    text_keys,
    weighted_total,
)
from seem.train.matcher import HungarianMatcher, ManyToManyMatch, ManyToManyMatcher, Match, point_sample
from seem.train.simulate import (
    GranularityClicks,
    ShapeSampler,
    ShapeSamplerConfig,
    TrainPrompts,
    add_corrective_clicks,
    click_anchor_boxes,
    corrective_click,
    sample_granularity_clicks,
)

__all__ = [
    "GRANULARITY_LOSS_WEIGHTS",
    "GROUNDING_TASK_WEIGHTS",
    "SEEM_LOSS_WEIGHTS",
    "Batch",
    "Collate",
    "GranularityClicks",
    "GranularityCriterion",
    "GranularityLayer",
    "GranularityTargets",
    "HungarianMatcher",
    "LSJConfig",
    "LargeScaleJitter",
    "ManyToManyMatch",
    "ManyToManyMatcher",
    "Match",
    "SEEMCriterion",
    "Sample",
    "SampleSource",
    "SeemTargets",
    "ShapeSampler",
    "ShapeSamplerConfig",
    "TrainDataset",
    "TrainPrompts",
    "add_corrective_clicks",
    "click_anchor_boxes",
    "collate",
    "containment_groups",
    "corrective_click",
    "granularity_layers",
    "point_sample",
    "sample_granularity_clicks",
    "text_keys",
    "weighted_total",
]
