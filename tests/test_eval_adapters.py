"""seem's own models through ``seem eval``: every prompt kind, referring text, panoptic and granularity.

The small parity models have random weights, so the numbers mean nothing; these tests prove the plumbing: a model
directory named on the command line is loaded, adapted, and every task it supports runs instead of being skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, SSAM_PARITY_DIR, require

from seem.eval.adapters import GranularityAdapter, SegmenterAdapter, adapt
from seem.eval.cli import main
from seem.eval.simulate import PROMPT_KINDS, simulate_prompt
from seem.models.seem_model import SEEMModel


@pytest.fixture(scope="module")
def seem_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    model, _ = SEEMModel.from_official(
        SEEM_PARITY_DIR / "seem_v1_small.pt", config=SEEM_PARITY_DIR / "seem_v1_small.yaml"
    )
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "seem-small")


@pytest.fixture(scope="module")
def ssam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seem.models.semantic_sam import save_semantic_sam, semantic_sam_from_official

    require(SSAM_PARITY_DIR / "ssam_small.pth", "Semantic-SAM parity checkpoint")
    model, _ = semantic_sam_from_official(
        SSAM_PARITY_DIR / "ssam_small.pth", config=SSAM_PARITY_DIR / "ssam_small.yaml"
    )
    return save_semantic_sam(model, tmp_path_factory.mktemp("models") / "ssam-small")


def _grabcut() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    root = require(DATA_DIR / "grabcut", "GrabCut sample")
    index = json.loads((root / "index.json").read_text())
    item = index["items"][0]
    image = np.asarray(Image.open(root / item["image"]).convert("RGB"))
    gt = np.asarray(Image.open(root / item["gt"]))
    return image, gt == 255


def test_segmenter_adapter_answers_every_prompt_kind(seem_dir: Path) -> None:
    from seem.loading import load

    pred = adapt(load(seem_dir))
    assert isinstance(pred, SegmenterAdapter)
    image, gt = _grabcut()
    pred.set_image(image)
    for kind in PROMPT_KINDS:
        prompt = simulate_prompt(kind, gt, seed=0)
        masks, scores, logits = pred.predict_prompt(prompt)
        assert masks.shape == (1, *gt.shape) and masks.dtype == bool, kind
        assert scores.shape == (1,) and np.isfinite(scores).all(), kind
        assert logits.ndim == 3, kind
    seg = pred.referring("the flower")
    assert seg.mask.shape == gt.shape


def test_eval_prompts_with_a_seem_model_directory(tmp_path: Path, seem_dir: Path) -> None:
    grabcut = require(DATA_DIR / "grabcut", "GrabCut sample")
    out = tmp_path / "prompts"
    argv = ["eval", "prompts", "--data", str(grabcut), "--model", str(seem_dir), "--out", str(out)]
    assert main([*argv, "--limit", "1", "--no-progress"]) == 0
    doc = json.loads((out / "prompts.json").read_text())
    assert doc["predictor"] == "Segmenter(SEEMModel, short_side=512, precision='fp32', refine_clicks=True)"
    miou = doc["result"]["miou"]
    assert set(PROMPT_KINDS) <= set(miou), "every prompt kind is supported by SEEM models"
    assert all(np.isfinite(miou[k]) and 0 <= miou[k] <= 1 for k in PROMPT_KINDS)


def test_eval_granularity_with_a_semantic_sam_directory(tmp_path: Path, ssam_dir: Path) -> None:
    from seem.loading import load

    assert isinstance(adapt(load(ssam_dir)), GranularityAdapter)
    bsds = require(DATA_DIR / "bsds500", "BSDS500 sample")
    out = tmp_path / "gran"
    argv = ["eval", "granularity", "--data", str(bsds), "--model", str(ssam_dir), "--out", str(out)]
    assert main([*argv, "--limit", "2", "--no-progress"]) == 0
    doc = json.loads((out / "granularity.json").read_text())
    assert doc["predictor"].startswith("GranularityPredictor(SemanticSAM, short_side=")
    result = doc["result"]
    assert not result.get("skipped"), result
