"""Copy-paste twins (seem.train.copy_paste) on real COCO panoptic and BSDS500 samples from shared/data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require

from seem.train.config import config_from_dict
from seem.train.copy_paste import CopyPaste, CopyPasteConfig
from seem.train.data import LargeScaleJitter, LSJConfig, Sample, Sequential, TrainDataset
from seem.train.datasets import BsdsSource, CocoPanopticSource


@pytest.fixture(scope="module")
def coco() -> CocoPanopticSource:
    d = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    return CocoPanopticSource(d / "panoptic_examples.json", d / "panoptic", d / "images")


def _exact() -> CopyPaste:
    return CopyPaste(CopyPasteConfig(prob=1.0, max_copies=1, scale=(1.0, 1.0), flip_prob=0.0))


def test_twin_is_a_translated_copy_that_occludes_what_was_there(coco: CocoPanopticSource) -> None:
    pasted = 0
    for k in range(len(coco)):
        s = coco[k]
        out = _exact()(s, np.random.default_rng(k))
        if out.num_masks == s.num_masks and torch.equal(out.image, s.image):
            continue  # nothing eligible / no free place on this image
        pasted += 1
        twin = out.masks[-1]
        # its pixels are those of one of the image's things, in the same raster order (a pure translation)
        src = [
            j
            for j in range(s.num_masks)
            if int(s.masks[j].sum()) == int(twin.sum()) and torch.equal(s.image[:, s.masks[j]], out.image[:, twin])
        ]
        assert src and bool(s.is_thing[src[0]]) and int(out.class_ids[-1]) == int(s.class_ids[src[0]])
        assert out.granularity_groups[-1] == [out.num_masks - 1] and not out.sentences
        # the twin occludes: no other mask keeps a pixel under it; pixels outside it are untouched
        assert not (out.masks[:-1] & twin).any()
        assert torch.equal(out.image[:, ~twin], s.image[:, ~twin])
        # panoptic masks stay disjoint
        assert int(out.masks.sum(0).max()) <= 1
    assert pasted >= 2


def test_seeded_and_off_cases(coco: CocoPanopticSource) -> None:
    s = coco[0]
    cp = CopyPaste(CopyPasteConfig(prob=1.0, max_copies=3))
    a, b = cp(s, np.random.default_rng(7)), cp(s, np.random.default_rng(7))
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
    assert CopyPaste(CopyPasteConfig(prob=0.0))(s, np.random.default_rng(0)) is s
    with_sentence = Sample.create(s.image, s.masks, sentences=[(0, "the thing on the left")])
    assert _exact()(with_sentence, np.random.default_rng(0)) is with_sentence  # would become ambiguous
    with pytest.raises(ValueError, match="probabilities"):
        CopyPasteConfig(prob=1.5)
    with pytest.raises(ValueError, match="copy_paste"):
        config_from_dict({"data": {"sources": [{"type": "folder", "root": "x"}], "copy_paste": 2}}).validate()


def test_nested_bsds_chains_keep_their_structure_after_pasting() -> None:
    """After the jitter (same seed, same crop) a twin only takes its pixels from every region: chains unchanged."""
    src = BsdsSource(require(DATA_DIR / "bsds500", "BSDS500 sample"), "val")
    lsj = LargeScaleJitter(LSJConfig(image_size=256, min_scale=0.5, max_scale=1.0))
    ds = TrainDataset(src, Sequential(lsj, CopyPaste(CopyPasteConfig(prob=1.0, max_copies=1))), seed=3)
    checked = 0
    for i in range(8):
        before, after = lsj(src[i], ds.rng(i)), ds[i]
        n = before.num_masks
        if after.num_masks != n + 1:
            continue  # no twin, or a region fully hidden and dropped
        twin = after.masks[-1]
        assert torch.equal(after.masks[:n], before.masks & ~twin)
        assert after.granularity_groups == [*before.granularity_groups, [n]]
        assert torch.equal(after.image[:, ~twin], before.image[:, ~twin]) and twin.any()
        checked += 1
    assert checked >= 3
