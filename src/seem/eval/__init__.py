"""Evaluation layer: metrics of the SEEM / Semantic-SAM papers, click simulators of the RITM and SEEM
protocols, simulated single prompts, and readers of the benchmark data formats.

Needs the ``eval`` extra (``pip install seem[eval]``: scipy, opencv-python-headless, pycocotools); those are
imported inside the functions that use them, so importing this package only needs numpy.

Conventions: masks are boolean ``[H, W]`` / ``[N, H, W]`` arrays (numpy or torch); single pixels and clicks
are ``(y, x)`` = (row, column) in ``metrics`` and ``clickers`` (``Click.xy`` converts); simulated prompts and
readers return points as pixel ``(x, y)`` and boxes as XYXY pixels with an exclusive right/bottom edge.
"""

from seem.eval.clickers import Click, Clicker, ClickProposal, RITMClicker, SEEMClicker
from seem.eval.metrics import (
    PanopticQuality,
    all_granularity_iou,
    boundary_f_measure,
    coco_mask_ap,
    iou_curve,
    jf_sequence,
    mask_iou,
    miou_at_k,
    noc_metrics,
    point_max_oracle,
    referring_metrics,
    region_similarity,
    semantic_confusion,
    semantic_scores,
    single_prompt_miou,
)
from seem.eval.simulate import SimulatedPrompt, simulate_prompt

__all__ = [
    "Click",
    "ClickProposal",
    "Clicker",
    "PanopticQuality",
    "RITMClicker",
    "SEEMClicker",
    "SimulatedPrompt",
    "all_granularity_iou",
    "boundary_f_measure",
    "coco_mask_ap",
    "iou_curve",
    "jf_sequence",
    "mask_iou",
    "miou_at_k",
    "noc_metrics",
    "point_max_oracle",
    "referring_metrics",
    "region_similarity",
    "semantic_confusion",
    "semantic_scores",
    "simulate_prompt",
    "single_prompt_miou",
]
