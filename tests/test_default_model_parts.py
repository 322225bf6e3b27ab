"""The pieces of the project's default model (``seem-mobilenetv2``) and its training data, on real inputs.

- config: ``seem_mobilenetv2()`` / ``named_config``, dict round trips (backbone ``kind``, older files without it,
  ``vocabulary``), ``MobileNetV2Config.out_channels`` = what ``build_backbone`` really outputs;
- ``MobileNetV2`` frozen BatchNorm;
- ``SEEMModel(seem_mobilenetv2())``: no BERT in the state dict, exact ``save_pretrained`` / ``from_pretrained``,
  shipped class embeddings (``class_embeddings.safetensors``) used by ``VocabularyCache`` without the text encoder,
  malformed files, ``Segmenter``'s default vocabulary;
- training sources on ``../shared/data``: ``IndexedInstancesSource`` (COCO128-seg), ``FolderSource`` (Weizmann
  horses, ``single_class``), ``BsdsSource(exclude=...)``;
- granularity-level targets: ``granularity_targets`` and ``SeemTargets.spatial_levels``;
- ``seem.samples`` photos, ``draw_levels`` and ``Segmenter.segment_levels`` on the small SEEM parity model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_DIR, SEEM_PARITY_DIR, require
from PIL import Image
from torch import nn

from seem.models.backbones import MobileNetV2, build_backbone
from seem.models.checkpoints.common import CheckpointError
from seem.models.config import (
    FocalNetConfig,
    MobileNetV2Config,
    SEEMConfig,
    TextEncoderConfig,
    named_config,
    seem_focalt,
    seem_mobilenetv2,
)
from seem.models.seem_model import CLASS_EMBEDDINGS_FILE, SEEMModel, save_class_embeddings
from seem.models.seem_types import DecoderOutput, GroupPrediction, LayerPrediction
from seem.predictor import Segmenter
from seem.prompts import Points, PromptError, PromptSet
from seem.results import Segment, color_for, draw_levels
from seem.samples import SAMPLES, sample_image
from seem.train.data import Sample
from seem.train.datasets import BsdsSource, FolderSource, IndexedInstancesSource
from seem.train.losses import SEEMCriterion, SeemTargets, _level_pairs
from seem.train.steps import enclosing_targets, granularity_targets
from seem.vocabulary import VocabularyCache, coco_panoptic_categories

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------
# helpers


def _nested(h: int = 64, w: int = 64) -> torch.Tensor:
    """bool ``[3, h, w]``: 0 big square ⊃ 1 medium square ⊃ 2 small square (whole → part)."""
    m = torch.zeros(3, h, w, dtype=torch.bool)
    m[0, 4:60, 4:60] = True
    m[1, 12:44, 12:44] = True
    m[2, 20:32, 20:32] = True
    return m


def _logits(masks: torch.Tensor, size: tuple[int, int], scale: float = 20.0) -> torch.Tensor:
    """Mask logits at ``size`` that reproduce the binary ``masks`` ``[N, H, W]`` (area-downsampled, ±scale)."""
    small = F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]
    return scale * (2 * small - 1)


def _mobilenet_model(vocabulary: tuple[str, ...] = ()) -> SEEMModel:
    cfg = seem_mobilenetv2()
    cfg.vocabulary = vocabulary
    return SEEMModel(cfg).eval()


def _no_text_encoder(monkeypatch: pytest.MonkeyPatch, model: SEEMModel) -> None:
    """Make every text-encoder path of ``model`` raise, so a test proves it is not used."""

    def boom(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the text encoder must not be called")

    monkeypatch.setattr(model.text_encoder, "class_embeddings", boom)
    monkeypatch.setattr(model, "class_embeddings", boom)


# ----------------------------------------------------------------------------------------------------------
# 1. config


def test_seem_mobilenetv2_is_a_named_config() -> None:
    cfg = seem_mobilenetv2()
    assert cfg == named_config("seem-mobilenetv2")
    assert cfg.name == "seem-mobilenetv2"
    assert isinstance(cfg.backbone, MobileNetV2Config) and cfg.backbone.kind == "mobilenet_v2"
    assert cfg.text.kind == "minilm"
    assert cfg.pixel_decoder.in_channels == cfg.backbone.out_channels
    assert cfg.pixel_decoder.conv_dim == cfg.decoder.hidden_dim
    assert cfg.text.proj_dim == cfg.decoder.dim_proj


def test_config_dict_round_trip_keeps_kinds_and_vocabulary() -> None:
    cfg = seem_mobilenetv2()
    cfg.vocabulary = ("horse", "cat", "dog")
    d = cfg.to_dict()
    assert d["backbone"]["kind"] == "mobilenet_v2" and d["text"]["kind"] == "minilm"
    back = SEEMConfig.from_dict(json.loads(json.dumps(d)))  # through JSON, as config.json is stored
    assert back == cfg
    assert isinstance(back.backbone, MobileNetV2Config)
    assert back.vocabulary == ("horse", "cat", "dog") and isinstance(back.vocabulary, tuple)
    assert back.backbone.out_features == ("res2", "res3", "res4", "res5")
    # a FocalNet config keeps its kind too
    ft = seem_focalt()
    assert SEEMConfig.from_dict(json.loads(json.dumps(ft.to_dict()))) == ft


def test_config_fields_are_all_round_tripped() -> None:
    """Every field of every part survives ``to_dict`` / ``from_dict`` (a field added later is covered too)."""
    cfg = seem_mobilenetv2()
    cfg = dataclasses.replace(
        cfg,
        backbone=MobileNetV2Config(keep_last_conv=True, frozen_bn=False, out_features=("res3",)),
        text=TextEncoderConfig(**{**dataclasses.asdict(cfg.text), "context_length": 32}),
        vocabulary=("a", "b"),
    )
    back = SEEMConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.backbone.out_channels == (24, 32, 96, 1280)


def test_backbone_dict_without_kind_is_focalnet() -> None:
    """config.json files written before backbone kinds existed have no ``kind`` key: they are FocalNet."""
    d = seem_focalt().to_dict()
    del d["backbone"]["kind"]
    del d["text"]["kind"]
    del d["vocabulary"]
    cfg = SEEMConfig.from_dict(d)
    assert type(cfg.backbone) is FocalNetConfig
    assert cfg.backbone == seem_focalt().backbone
    assert cfg.text.kind == "clip" and cfg.vocabulary == ()
    with pytest.raises(ValueError, match="unknown config keys"):
        SEEMConfig.from_dict({**d, "backbone": {**d["backbone"], "width_mult": 1.0}})


def test_unknown_backbone_kind_is_rejected() -> None:
    d = seem_mobilenetv2().to_dict()
    d["backbone"] = {"kind": "resnet50"}
    with pytest.raises(ValueError, match="resnet50"):
        SEEMConfig.from_dict(d)


def test_unknown_text_kind_is_rejected() -> None:
    d = seem_mobilenetv2().to_dict()
    d["text"]["kind"] = "t5"
    with pytest.raises(ValueError, match="t5"):
        SEEMModel(SEEMConfig.from_dict(d))


def test_mobilenet_out_channels_match_the_built_backbone() -> None:
    cfg = MobileNetV2Config()
    assert cfg.out_channels == (24, 32, 96, 320)
    bb = build_backbone(cfg).eval()
    assert isinstance(bb, MobileNetV2)
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 64))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    assert tuple(out[k].shape[1] for k in out) == cfg.out_channels
    for name, stride in zip(out, (4, 8, 16, 32), strict=True):
        assert tuple(out[name].shape[2:]) == (64 // stride, 64 // stride), name
    # the default model's pixel decoder is built for exactly these channels
    assert seem_mobilenetv2().pixel_decoder.in_channels == tuple(out[k].shape[1] for k in out)


# ----------------------------------------------------------------------------------------------------------
# 2. frozen BatchNorm


def _bns(m: nn.Module) -> list[nn.BatchNorm2d]:
    return [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]


def _running_means(bns: list[nn.BatchNorm2d]) -> list[torch.Tensor]:
    out = [b.running_mean for b in bns]
    assert all(t is not None for t in out)
    return [t.clone() for t in out if t is not None]


def test_mobilenet_frozen_bn_stays_in_eval_mode() -> None:
    bb = MobileNetV2(MobileNetV2Config())  # frozen_bn=True by default
    assert bb.cfg.frozen_bn
    bb.train()
    assert bb.training and bb.features.training
    bns = _bns(bb)
    assert len(bns) > 30 and all(not b.training for b in bns)
    before = _running_means(bns)
    bb(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert all(torch.equal(a, b) for a, b in zip(before, _running_means(bns), strict=True))


def test_mobilenet_unfrozen_bn_trains() -> None:
    bb = MobileNetV2(MobileNetV2Config(frozen_bn=False))
    bb.train()
    bns = _bns(bb)
    assert all(b.training for b in bns)
    before = _running_means(bns)
    bb(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(before[0], _running_means(bns)[0])
    bb.eval()
    assert all(not b.training for b in bns)


# ----------------------------------------------------------------------------------------------------------
# 3. the default model: weights, shipped class embeddings, default vocabulary


def test_default_model_state_dict_has_no_bert_and_round_trips(tmp_path: Path) -> None:
    model = _mobilenet_model(("cat", "dog"))
    sd = model.state_dict()
    text_keys = sorted(k for k in sd if k.startswith("text_encoder."))
    assert text_keys == ["text_encoder.lang_proj", "text_encoder.logit_scale"]
    assert not any("bert" in k.lower() or "word_embeddings" in k for k in sd)
    assert sd["text_encoder.lang_proj"].shape == (384, 128)
    emb = torch.randn(3, 128)
    model.builtin_class_embeddings = {("cat", "dog"): emb}
    model.save_pretrained(tmp_path)
    assert (tmp_path / CLASS_EMBEDDINGS_FILE).is_file()
    loaded = SEEMModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert isinstance(loaded.config.backbone, MobileNetV2Config) and loaded.config.vocabulary == ("cat", "dog")
    sd2 = loaded.state_dict()
    assert sorted(sd2) == sorted(sd)
    for k, v in sd.items():
        assert v.dtype == sd2[k].dtype and torch.equal(v, sd2[k]), k
    assert list(loaded.builtin_class_embeddings) == [("cat", "dog")]
    assert torch.equal(loaded.builtin_class_embeddings[("cat", "dog")], emb)


def test_no_class_embeddings_file_without_builtin_vocabularies(tmp_path: Path) -> None:
    model = _mobilenet_model()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / CLASS_EMBEDDINGS_FILE).exists()
    assert SEEMModel.from_pretrained(tmp_path).builtin_class_embeddings == {}


def test_vocabulary_cache_uses_shipped_embeddings_without_the_text_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _mobilenet_model()
    emb = torch.randn(3, 128)
    model.builtin_class_embeddings = {("cat", "dog"): emb}
    model.builtin_text_state = model.text_state_hash()
    model.save_pretrained(tmp_path)
    loaded = SEEMModel.from_pretrained(tmp_path)
    assert loaded.builtin_text_state == model.text_state_hash()
    _no_text_encoder(monkeypatch, loaded)
    cache = VocabularyCache(loaded, cache_dir=False)
    got = cache.get(["cat", "dog"])
    assert torch.equal(got, emb)
    assert torch.equal(cache.get(("cat", "dog")), emb)
    # another vocabulary (even the same names in another order) is not shipped: it needs the text encoder
    with pytest.raises(AssertionError, match="must not be called"):
        cache.get(["dog", "cat"])
    # a trained text projection makes the shipped embeddings stale: they are not used any more
    with torch.no_grad():
        loaded.text_encoder.lang_proj.add_(0.01)
    with pytest.raises(AssertionError, match="must not be called"):
        VocabularyCache(loaded, cache_dir=False).get(["cat", "dog"])


def test_segmenter_defaults_to_the_models_own_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _mobilenet_model(("cat", "dog"))
    emb = torch.randn(3, 128)
    model.builtin_class_embeddings = {("cat", "dog"): emb}
    model.builtin_text_state = model.text_state_hash()
    _no_text_encoder(monkeypatch, model)
    seg = Segmenter(model, cache_dir=False, progress=False)
    assert seg.vocabulary == ["cat", "dog"]
    assert torch.equal(seg.class_embeddings(seg.vocabulary), emb)
    # without a vocabulary of its own: the 133 COCO-panoptic classes
    plain = Segmenter(_mobilenet_model(), cache_dir=False, progress=False)
    assert plain.vocabulary == [c["name"] for c in coco_panoptic_categories()]
    # an explicit vocabulary wins over the model's own
    assert Segmenter(model, vocabulary=["cow"], cache_dir=False).vocabulary == ["cow"]


def test_malformed_class_embeddings_file_raises_checkpoint_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = _mobilenet_model()
    model.save_pretrained(tmp_path)
    path = tmp_path / CLASS_EMBEDDINGS_FILE
    # 2 classes need [3, D]; [5, D] is wrong
    save_class_embeddings(path, {("cat", "dog"): torch.randn(5, 128)})
    with pytest.raises(CheckpointError, match=CLASS_EMBEDDINGS_FILE) as err:
        SEEMModel.from_pretrained(tmp_path)
    assert str(path) in str(err.value) and "[3, D]" in str(err.value)
    # a safetensors file without the names metadata
    save_file({"embeddings_0": torch.randn(3, 128)}, str(path))
    with pytest.raises(CheckpointError, match=CLASS_EMBEDDINGS_FILE):
        SEEMModel.from_pretrained(tmp_path)


def test_save_pretrained_replaces_stale_class_embeddings(tmp_path: Path) -> None:
    first = _mobilenet_model()
    first.builtin_class_embeddings = {("cat", "dog"): torch.randn(3, 128)}
    first.save_pretrained(tmp_path)
    second = _mobilenet_model()  # other weights, no shipped vocabulary, saved over the same directory
    second.save_pretrained(tmp_path)
    assert list(SEEMModel.from_pretrained(tmp_path).builtin_class_embeddings) == []


def test_class_embeddings_of_the_wrong_width_raise_checkpoint_error(tmp_path: Path) -> None:
    model = _mobilenet_model()
    model.builtin_class_embeddings = {("cat", "dog"): torch.randn(3, 64)}  # the model's embeddings are 128 wide
    model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=CLASS_EMBEDDINGS_FILE):
        SEEMModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# 4-6. training sources on the shared data


def test_indexed_instances_source_on_coco128() -> None:
    root = require(DATA_DIR / "coco128_seg", "COCO128-seg data")
    meta = json.loads((root / "index.json").read_text())
    src = IndexedInstancesSource(root)
    assert src.class_names == meta["classes"]
    assert len(src) == sum(1 for it in meta["items"] if it.get("image") and it.get("instances_png"))
    it = src.items[0]
    s = src[0]
    ids = np.array(Image.open(root / it["instances_png"]))
    assert s.image.shape == (3, *ids.shape)
    visible = [inst for inst in it["instances"] if (ids == inst["instance_id"]).any()]
    assert len(visible) >= 2 and s.num_masks == len(visible)
    for k, inst in enumerate(visible):
        assert np.array_equal(s.masks[k].numpy(), ids == inst["instance_id"]), inst["instance_id"]
        assert int(s.class_ids[k]) == meta["classes"].index(inst["class_name"])
    assert bool(s.is_thing.all())
    assert s.image_id == str(it["id"])
    for g in s.granularity_groups:  # chains nest whole → part
        for a, b in itertools.pairwise(g):
            inside = (s.masks[b] & s.masks[a]).sum() / s.masks[b].sum()
            assert float(inside) >= src.containment


def test_folder_source_single_class_on_weizmann_horses() -> None:
    root = require(DATA_DIR / "weizmann_horses", "Weizmann horses data")
    src = FolderSource(root, single_class="horse")
    n_images = len(list((root / "images").glob("*.jpg")))
    assert len(src) == n_images
    assert src.class_names == ["horse"]
    for i in (0, len(src) - 1):
        s = src[i]
        assert s.num_masks >= 1 and s.class_ids.tolist() == [0] * s.num_masks
        mask = np.array(Image.open(root / "masks" / f"{s.image_id}.png")) > 0
        assert np.array_equal(s.masks.any(0).numpy(), mask)
    # a masks path that already includes root is the same folder
    same = FolderSource(root, masks=str(root / "masks"), single_class="horse")
    assert [it[0] for it in same.items] == [it[0] for it in src.items]
    a, b = src[3], same[3]
    assert a.image_id == b.image_id and torch.equal(a.masks, b.masks) and torch.equal(a.class_ids, b.class_ids)
    with pytest.raises(ValueError, match="single_class"):
        FolderSource(root, class_names=["horse"], single_class="horse")
    # without single_class and class names: unknown class
    assert FolderSource(root)[0].class_ids.tolist() == [-1] * src[0].num_masks


def test_folder_source_relative_names_ignore_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = require(DATA_DIR / "weizmann_horses", "Weizmann horses data").resolve()
    (tmp_path / "masks").mkdir()  # an unrelated, empty masks/ folder where the user happens to run
    monkeypatch.chdir(tmp_path)
    src = FolderSource(root, single_class="horse")
    assert len(src) == len(list((root / "images").glob("*.jpg")))


def test_bsds_source_exclude() -> None:
    root = require(DATA_DIR / "bsds500", "BSDS500 data")
    full = BsdsSource(root, split="train")
    ids = [str(full.reader[i].id) for i in range(len(full))]
    drop = [ids[1], ids[4]]
    src = BsdsSource(root, split="train", exclude=drop)
    assert len(src) == len(full) - 2
    kept = [i for i in ids if i not in drop]
    # the samples around the excluded positions shift by one and two
    for pos in (0, 1, 2, 3, len(src) - 1):
        assert src[pos].image_id == kept[pos]
        assert src[pos].image_id not in drop
    # unknown ids are ignored; excluding everything leaves nothing to train on
    assert len(BsdsSource(root, split="train", exclude=["no-such-image"])) == len(full)
    with pytest.raises(FileNotFoundError):
        BsdsSource(root, split="train", exclude=ids)


# ----------------------------------------------------------------------------------------------------------
# 7-8. granularity-level targets and their loss


def _nested_sample() -> Sample:
    masks = _nested()
    image = np.full((64, 64, 3), 128, np.uint8)
    return Sample.create(image, masks, granularity_groups=[[0, 1, 2]], is_thing=np.ones(3, bool))


def test_enclosing_targets_nearest_first() -> None:
    s = _nested_sample()
    cpu = torch.device("cpu")
    small, medium, big = enclosing_targets(s, torch.tensor([2, 1, 0]), 5, cpu)
    assert small.dtype == torch.bool and small.shape == (2, 64, 64)
    assert torch.equal(small, torch.stack([s.masks[1], s.masks[0]]))  # medium, then big
    assert torch.equal(medium, s.masks[0:1])
    assert big.shape == (0, 64, 64)
    (capped,) = enclosing_targets(s, torch.tensor([2]), 1, cpu)
    assert torch.equal(capped, s.masks[1:2])
    # two chains sharing the root: ancestors come from the chain(s) holding the instance, without duplicates
    four = torch.cat([s.masks, torch.zeros(1, 64, 64, dtype=torch.bool)])
    four[3, 40:56, 40:56] = True
    s2 = Sample.create(s.image, four, granularity_groups=[[0, 1, 2], [0, 3]])
    a, b = enclosing_targets(s2, torch.tensor([3, 2]), 5, cpu)
    assert torch.equal(a, four[0:1]) and torch.equal(b, torch.stack([four[1], four[0]]))


def test_level_pairs_match_free_queries_by_dice() -> None:
    t = _nested()
    big, medium = t[0], t[1]
    q = 3
    logits = torch.full((q, 16, 16), -20.0)
    logits[0] = _logits(t[2:3], (16, 16))[0]  # the matched query: the small square
    logits[2] = _logits(big[None], (16, 16))[0]  # query 2 reproduces A = big
    logits[1] = _logits(medium[None], (16, 16))[0]  # query 1 reproduces B = medium
    levels = [torch.stack([big, medium])]
    rows, tgts = _level_pairs(logits, torch.tensor([0]), torch.tensor([True]), levels, q)
    pairs = {r: tg for r, tg in zip(rows, tgts, strict=True)}
    assert sorted(pairs) == [1, 2]
    assert torch.equal(pairs[2], big[None]) and torch.equal(pairs[1], medium[None])
    # swapped predictions swap the pairs
    rows, tgts = _level_pairs(logits[[0, 2, 1]], torch.tensor([0]), torch.tensor([True]), levels, q)
    pairs = {r: tg for r, tg in zip(rows, tgts, strict=True)}
    assert torch.equal(pairs[1], big[None]) and torch.equal(pairs[2], medium[None])
    # a prompt without a drawable target, or without further levels, gets no pairs
    assert _level_pairs(logits, torch.tensor([0]), torch.tensor([False]), levels, q) == ([], [])
    assert _level_pairs(logits, torch.tensor([0]), torch.tensor([True]), [t[:0]], q) == ([], [])
    # second prompt: rows 3..5, matched row 4; more levels than free queries are cut to the free ones
    two = torch.cat([logits, logits[[1, 0, 2]]])
    rows, tgts = _level_pairs(
        two, torch.tensor([0, 4]), torch.tensor([True, True]), [t[:0], torch.stack([big, medium, t[2]])], q
    )
    assert sorted(rows) == [3, 5] and len(tgts) == 2
    pairs = {r: tg for r, tg in zip(rows, tgts, strict=True)}
    assert torch.equal(pairs[3], medium[None]) and torch.equal(pairs[5], big[None])


def test_granularity_targets_coarse_to_fine() -> None:
    s = _nested_sample()  # big ⊃ medium ⊃ small, one chain
    cpu = torch.device("cpu")
    big, medium, small = s.masks
    inside_small = torch.zeros(3, 64, 64, dtype=torch.bool)
    inside_small[:, 30, 30] = True  # a click inside all three squares
    levels, which = granularity_targets(s, torch.tensor([2, 1, 0]), inside_small, 3, cpu)
    for lv in levels:
        assert lv.dtype == torch.bool and lv.shape == (3, 64, 64)
    # targeting small: the chain is big, medium, small; query 2 holds the target
    assert torch.equal(levels[0], s.masks) and int(which[0]) == 2
    # targeting big with a click inside small: big, then the regions inside it that contain the click
    assert torch.equal(levels[2], s.masks) and int(which[2]) == 0
    # a prompt that is not inside small stops the chain at medium: queries 1 and 2 both get medium
    in_medium_only = torch.zeros(1, 64, 64, dtype=torch.bool)
    in_medium_only[0] = medium & ~small
    (lv,), w = granularity_targets(s, torch.tensor([1]), in_medium_only, 3, cpu)
    assert torch.equal(lv, torch.stack([big, medium, medium])) and int(w[0]) == 1
    # six queries on a three-region chain repeat regions in order; a one-region chain fills every query
    (six,), w6 = granularity_targets(s, torch.tensor([2]), inside_small[:1], 6, cpu)
    assert [int(r.sum()) for r in six] == sorted((int(r.sum()) for r in six), reverse=True)
    assert torch.equal(six[0], big) and torch.equal(six[-1], small) and torch.equal(six[int(w6[0])], small)
    lone = Sample.create(s.image, s.masks[:1], granularity_groups=[[0]])
    (one,), w1 = granularity_targets(lone, torch.tensor([0]), inside_small[:1], 6, cpu)
    assert torch.equal(one, big[None].expand(6, -1, -1)) and int(w1[0]) == 0


def _spatial_output(mask_logits: torch.Tensor) -> DecoderOutput:
    """One image, one prompt, ``q`` spatial queries; query 0 has the highest selection score."""
    q, d = mask_logits.shape[0], 4
    emb = torch.zeros(1, q, d)
    emb[0, 0, 0] = 10.0
    spatial = GroupPrediction(
        captions=torch.zeros(1, q, d), mask_embeddings=emb, mask_logits=mask_logits[None], class_logits=None
    )
    return DecoderOutput(
        predictions=[LayerPrediction(object=None, spatial=spatial)], pooled_pos_spatial=torch.eye(d)[None, :1]
    )


def test_criterion_spatial_levels_train_every_query_on_its_level() -> None:
    t = _nested()  # big, medium, small
    q = 3
    logits = torch.full((q, 16, 16), -20.0)
    logits[0] = _logits(t[2:3], (16, 16))[0]  # query 0 (highest selection score) predicts the small target
    crit = SEEMCriterion(num_points=2000, importance_sample_ratio=0.0, queries_per_prompt=q)

    def run(lg: torch.Tensor, levels: list[torch.Tensor] | None, which: int = 2) -> dict[str, torch.Tensor]:
        tg = SeemTargets(
            masks=t[2:3],
            class_ids=torch.tensor([-1]),
            spatial_masks=t[2:3],
            spatial_levels=levels,
            spatial_level_query=None if levels is None else torch.tensor([which]),
        )
        return crit(_spatial_output(lg), [tg], generator=torch.Generator().manual_seed(0))

    levels = [t.clone()]  # query 0 → big, 1 → medium, 2 → small (the target)
    plain = run(logits, None)  # Hungarian: query 0 matches the small target
    assert plain["loss_spatial_dice_0"].item() < 0.1 and plain["loss_spatial_bce_0"].item() < 0.1
    fixed = run(logits, levels)  # fixed levels: every query is wrong
    assert fixed["loss_spatial_dice_0"].item() > 0.6
    # the selection CE now points at query 2 (the target's level), which has a low selection score
    assert fixed["loss_spatial_ce_0"].item() > plain["loss_spatial_ce_0"].item() + 1.0
    good = torch.stack([_logits(t[k : k + 1], (16, 16))[0] for k in range(3)])
    right = run(good, levels)
    assert right["loss_spatial_dice_0"].item() < 0.1 and right["loss_spatial_bce_0"].item() < 0.1
    g = logits.clone().requires_grad_(True)
    crit.total(run(g, levels)).backward()
    assert g.grad is not None and all(g.grad[k].abs().sum() > 0 for k in range(3))
    with pytest.raises(ValueError, match="spatial_levels"):
        SeemTargets(masks=t[2:3], class_ids=torch.tensor([-1]), spatial_masks=t[2:3], spatial_levels=levels * 2)
    with pytest.raises(ValueError, match="spatial_level_query"):
        SeemTargets(masks=t[2:3], class_ids=torch.tensor([-1]), spatial_masks=t[2:3], spatial_levels=levels)


def test_criterion_matched_levels_add_mask_losses_for_enclosing_regions() -> None:
    t = _nested()  # big, medium, small; the prompt's target is small, predicted by query 0
    q = 3
    logits = torch.full((q, 16, 16), -20.0)
    logits[0] = _logits(t[2:3], (16, 16))[0]
    crit = SEEMCriterion(num_points=2000, importance_sample_ratio=0.0, queries_per_prompt=q)

    def run(lg: torch.Tensor, extra: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
        tg = SeemTargets(masks=t[2:3], class_ids=torch.tensor([-1]), spatial_masks=t[2:3], spatial_extra=extra)
        return crit(_spatial_output(lg), [tg], generator=torch.Generator().manual_seed(0))

    extra = [torch.stack([t[1], t[0]])]  # medium, big: matched to queries 1 and 2, which predict nothing
    plain, matched = run(logits, None), run(logits, extra)
    assert plain["loss_spatial_dice_0"].item() < 0.1
    assert matched["loss_spatial_dice_0"].item() > 0.6
    assert matched["loss_spatial_ce_0"].item() == pytest.approx(plain["loss_spatial_ce_0"].item())
    good = logits.clone()
    good[1], good[2] = _logits(t[0:1], (16, 16))[0], _logits(t[1:2], (16, 16))[0]
    assert run(good, extra)["loss_spatial_dice_0"].item() < 0.1


# ----------------------------------------------------------------------------------------------------------
# 9. sample photos and level panels


@pytest.mark.parametrize(("name", "size"), [("chelsea", (451, 300)), ("coffee", (600, 400))])
def test_sample_images_load_as_rgb(name: str, size: tuple[int, int]) -> None:
    path = sample_image(name)
    assert name in SAMPLES and path.is_file()
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == size
        arr = np.array(im)
    assert arr.std() > 20  # a real photo, not a blank


def test_sample_image_unknown_name() -> None:
    assert sample_image() == sample_image("chelsea")
    with pytest.raises(ValueError, match="chelsea") as err:
        sample_image("astronaut")
    assert "coffee" in str(err.value) and "astronaut" in str(err.value)


def test_draw_levels_panels_side_by_side() -> None:
    image = np.array(Image.open(sample_image("chelsea")))
    h, w = image.shape[:2]
    masks = [np.zeros((h, w), bool) for _ in range(3)]
    masks[0][100:290, 100:440] = True
    masks[1][150:250, 200:350] = True
    masks[2][180:220, 250:300] = True
    segs = [Segment(mask=m, score=1.0 - 0.1 * i) for i, m in enumerate(masks)]
    out = draw_levels(image, segs)
    assert out.dtype == np.uint8 and out.shape == (h, 3 * w, 3)
    for i, m in enumerate(masks):
        panel = out[:, i * w : (i + 1) * w].astype(np.float64)
        ys, xs = np.nonzero(m)
        cy, cx = int(ys.mean()), int(xs.mean())  # well inside the mask: the fill colour blended with alpha 0.55
        want = np.rint(0.45 * image[cy, cx] + 0.55 * np.array(color_for(i)))
        assert np.abs(panel[cy, cx] - want).max() <= 1, i
        assert np.array_equal(panel[h - 5, w // 2], image[h - 5, w // 2])  # outside every mask: unchanged
        assert not np.array_equal(panel[:40, :120], image[:40, :120])  # the "level i" title
    assert draw_levels(image, segs[:1]).shape == (h, w, 3)
    with pytest.raises(ValueError):
        draw_levels(image, [])


# ----------------------------------------------------------------------------------------------------------
# 10. Segmenter.segment_levels on the small SEEM parity model


@pytest.fixture(scope="module")
def parity_segmenter() -> Segmenter:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures (SEEM_PARITY_DIR)")
    require(d / "seem_v1_small.pt", "small SEEM parity checkpoint")
    model, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    seg = Segmenter(model, short_side=256, vocabulary=["cup", "table", "wall"], cache_dir=False, progress=False)
    seg.set_image(sample_image("coffee"))
    return seg


def test_segment_levels_lists_every_query_by_area(parity_segmenter: Segmenter) -> None:
    seg = parity_segmenter
    q = seg.model.config.decoder.queries_per_prompt
    prompt = PromptSet(points=Points([[300, 190]]))
    levels = seg.segment_levels(prompt, labels=False)
    assert len(levels) == q == 3
    areas = [int(s.mask.sum()) for s in levels]
    assert areas == sorted(areas, reverse=True)
    for s in levels:
        assert s.mask.shape == (400, 600) and s.mask.dtype == bool
        assert s.source == "visual" and s.low_res_logits is not None
    # the distinct queries give distinct answers on a real photo
    assert len({s.mask.tobytes() for s in levels}) >= 2
    (chosen,) = seg.segment(prompt, labels=False)
    best = max(levels, key=lambda s: s.score)
    assert np.array_equal(best.mask, chosen.mask) and best.score == pytest.approx(chosen.score)
    assert any(np.array_equal(s.mask, chosen.mask) for s in levels)
    # labelled: every level gets a label from the vocabulary; the selected one the label segment() gives
    labelled = seg.segment_levels(prompt)
    assert [int(s.mask.sum()) for s in labelled] == areas
    assert all(s.label in ("cup", "table", "wall", "background") for s in labelled)
    (chosen_l,) = seg.segment(prompt)
    best_l = max(labelled, key=lambda s: s.score)
    assert (best_l.label, best_l.label_score) == (chosen_l.label, pytest.approx(chosen_l.label_score))


def test_segment_levels_rejects_text_and_lists(parity_segmenter: Segmenter) -> None:
    with pytest.raises(PromptError, match="visual prompts only"):
        parity_segmenter.segment_levels(PromptSet(text="a coffee cup"))
    with pytest.raises(PromptError):
        parity_segmenter.segment_levels([PromptSet(points=Points([[300, 190]]))])  # type: ignore[arg-type]


def test_fixed_queries_keep_each_level_on_the_same_object_query() -> None:
    from seem.models.config import seem_mobilenetv2
    from seem.models.seem_attention import default_spatial_query_indices
    from seem.models.seem_types import SpatialPrompts
    from seem.train.iterative import random_decoder_draws

    dcfg = seem_mobilenetv2().decoder
    pos = torch.zeros(2, 32, 32, dtype=torch.bool)
    pos[:, 10:14, 10:14] = True
    sp = SpatialPrompts(pos_masks=pos)
    g = torch.Generator().manual_seed(0)
    drawn = [random_decoder_draws(dcfg, sp, with_memory=False, generator=g).spatial_query_indices for _ in range(3)]
    assert not all(torch.equal(drawn[0], d) for d in drawn[1:])  # the official draw: random object queries
    fixed = random_decoder_draws(dcfg, sp, with_memory=True, generator=g, fixed_queries=True)
    assert torch.equal(fixed.spatial_query_indices, default_spatial_query_indices(dcfg.num_queries, 2, 6))
    assert fixed.memory_slots is not None and "pooled_pos" in (fixed.prompt_pixels or {})  # the rest stays random
