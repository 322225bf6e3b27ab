"""Semantic-SAM object and part labels: class heads, checkpoints, vocabularies, training signal, records.

Covers: the official ``class_embed`` / ``class_embed_part`` keys are now mapped (``lang_mapper`` stays ignored with
its reason) in the full-size manifests and the reduced parity checkpoint; label heads never change masks, IoUs or
boxes (parity unchanged) and their logits follow the official rule on the twice-normalised query; released-style
weights give ``label=None`` with the reason; a tiny label model (tiny text encoder, or a stored class table) round-
trips through our format with identical labels; a few optimisation steps of the criterion's object / part focal
losses on real COCO-panoptic masks make the right object and part class win on the trained clicks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_DIR, SSAM_PARITY_DIR, assert_parity, require

from seem.automatic import AutomaticMaskGenerator
from seem.granularity import PROMPT_SWITCH, GranularityPredictor
from seem.models.checkpoints.common import CheckpointError
from seem.models.checkpoints.semantic_sam import load_official_semantic_sam
from seem.models.config import TextEncoderConfig
from seem.models.semantic_sam import (
    NO_LABEL_REASON,
    NO_PART_HEAD_REASON,
    NO_VOCABULARY_REASON,
    LabelVocabulary,
    SemanticSAM,
    load_semantic_sam,
    save_semantic_sam,
    semantic_sam_from_official,
)
from seem.models.semantic_sam_config import LabelConfig, SemanticSAMConfig, from_official_yaml, swin_l, swin_t
from seem.train.losses import GranularityCriterion, GranularityTargets, granularity_layers

TINY_TEXT = TextEncoderConfig(width=32, heads=2, layers=1, proj_dim=64)
"""A tiny CLIP-style text encoder for the reduced model (``DIM_PROJ`` 64)."""


@pytest.fixture(scope="module")
def root() -> Path:
    return require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures (SSAM_PARITY_DIR)")


@pytest.fixture(scope="module")
def official(root: Path) -> SemanticSAM:
    return semantic_sam_from_official(root / "ssam_small.pth", config=root / "ssam_small.yaml")[0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _label_model(root: Path, labels: LabelConfig) -> SemanticSAM:
    """The reduced official weights in a label-enabled config (label parts the file lacks keep their init)."""
    cfg = from_official_yaml(root / "ssam_small.yaml")
    cfg.labels = labels
    cfg.validate()
    torch.manual_seed(0)
    m = SemanticSAM(cfg).eval()
    load_official_semantic_sam(root / "ssam_small.pth", m, init_missing_labels=True)
    return m


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=-1, keepdim=True)


# -------------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(("manifest", "make"), [("manifest_swint.json", swin_t), ("manifest_swinl.json", swin_l)])
def test_full_size_manifests_map_the_class_heads(manifest: str, make) -> None:
    man = json.loads(require(SSAM_PARITY_DIR / manifest, "Semantic-SAM manifests").read_text())
    dt = {"float32": torch.float32, "int64": torch.int64}
    state = {e["key"]: torch.empty(e["shape"], dtype=dt[e["dtype"]], device="meta") for e in man["entries"]}
    with torch.device("meta"):
        model = SemanticSAM(make())
    report = load_official_semantic_sam({"model": state}, model, what=manifest)
    assert set(report.mapped) | set(report.ignored) == set(state)  # 100 % accounted for
    p = "model.sem_seg_head.predictor."
    assert report.mapped[p + "class_embed"] == "predictor.class_embed"
    assert report.mapped[p + "class_embed_part"] == "predictor.class_embed_part"
    assert tuple(model.predictor.class_embed.shape) == tuple(state[p + "class_embed"].shape) == (256, 512)
    assert "prepare_for_dn" in report.ignored[p + "lang_mapper"]
    assert not any("class_embed" in k for k in report.ignored)
    assert model.cfg.labels.heads == "none" and model.text_encoder is None and model.logit_scale is None

    # a label-enabled config: the text encoder is not in the file → strict failure naming the official keys ...
    cfg = make()
    cfg.labels = LabelConfig(heads="object+part", text=TextEncoderConfig(width=64, heads=2, layers=1))
    with torch.device("meta"):
        labelled = SemanticSAM(cfg)
    with pytest.raises(CheckpointError, match=r"lang_encoder\.lang_proj[\s\S]*init_missing_labels"):
        load_official_semantic_sam({"model": state}, labelled)
    # ... or keeps its init on request, with the same report for the official keys
    again = load_official_semantic_sam({"model": state}, labelled, init_missing_labels=True)
    assert again.mapped == report.mapped and again.ignored == report.ignored


def test_small_checkpoint_heads_land_and_never_change_masks(official: SemanticSAM, root: Path) -> None:
    state = torch.load(root / "ssam_small.pth", map_location="cpu", weights_only=True)["model"]
    p = "model.sem_seg_head.predictor."
    assert torch.equal(official.predictor.class_embed, state[p + "class_embed"])
    assert torch.equal(official.predictor.class_embed_part, state[p + "class_embed_part"])

    npz = np.load(root / "case_a_astronaut_3clicks.npz")
    from PIL import Image

    img = torch.from_numpy(np.array(Image.open(root / "images" / "astronaut_resized640.png").convert("RGB")))
    img = img.permute(2, 0, 1).contiguous()
    with torch.no_grad():
        f = official.encode_image(official.preprocess(img), tuple(img.shape[-2:]))
        clicks = torch.from_numpy(npz["clicks_xy_rel"])
        plain = official.decode_clicks(f, clicks, relative=True, exact_batching=True)
        vocab = LabelVocabulary(("a", "b", "c"), _unit(3, 64, 1), ("p", "q"), _unit(2, 64, 2))
        out = official.decode_clicks(
            f, clicks, relative=True, exact_batching=True, vocabulary=vocab, return_intermediates=True
        )
    # the heads only add outputs: masks, IoUs and boxes are bit-identical and still match the official tensors
    assert torch.equal(out.masks, plain.masks) and torch.equal(out.ious, plain.ious)
    assert torch.equal(out.boxes, plain.boxes)
    assert plain.object_logits is None and plain.part_logits is None and plain.layer_object_logits is None
    assert_parity(out.ious, npz["pred_ious"], "pred_ious")
    assert_parity(out.masks.reshape(1, -1, *out.masks.shape[-2:]), npz["pred_masks_lowres"], "pred_masks_lowres")
    # every layer: exp(logit_scale) · normalize(decoder_norm(hs_i) @ W) @ tableᵀ (official compute_similarity on the
    # twice-normalised query); released weights have no logit scale → 1
    n = official.cfg.decoder.num_layers
    obj_layers, part_layers = out.layer_object_logits, out.layer_part_logits
    assert obj_layers is not None and part_layers is not None
    assert len(obj_layers) == len(part_layers) == n and len(out.aux_object_logits) == n - 1
    for i in range(n):
        head_in = official.predictor.decoder_norm(out.intermediates[f"hs_{i}"])
        for w, table, got in (
            (official.predictor.class_embed, vocab.object_embeddings, obj_layers[i]),
            (official.predictor.class_embed_part, vocab.part_embeddings, part_layers[i]),
        ):
            e = head_in @ w
            want = (e / (e.norm(dim=-1, keepdim=True) + 1e-7)) @ table.T
            assert got.shape == (1, 3, 6, table.shape[0])
            torch.testing.assert_close(got.reshape(1, 18, -1), want, rtol=1e-5, atol=1e-6)


def test_released_style_weights_give_no_label_with_the_reason(official: SemanticSAM, root: Path) -> None:
    assert "TEXT.ARCH noencoder" in NO_LABEL_REASON
    pred = GranularityPredictor(official, short_side=128)
    pred.set_image(root / "images" / "coffee.png")
    results = pred.predict([[300.0, 200.0]])
    assert results
    for r in results:
        assert r.label is None and r.part_label is None and r.label_score is None and r.part_label_score is None
        assert r.label_reason == NO_LABEL_REASON
    assert pred.label_reason == NO_LABEL_REASON and official.label_reasons() == (NO_LABEL_REASON, NO_LABEL_REASON)
    with pytest.raises(ValueError, match=r"TEXT\.ARCH noencoder"):
        pred.set_vocabulary(["cup"])
    with pytest.raises(ValueError, match=r"TEXT\.ARCH noencoder"):
        official.decode_clicks(pred.features, torch.tensor([[10.0, 10.0]]), return_class_logits=True)
    with pytest.raises(ValueError, match=r"TEXT\.ARCH noencoder"):
        AutomaticMaskGenerator(official, class_names=["cup"])


# --------------------------------------------------------------------------------------------- config / API


def test_label_config_roundtrip_validation_and_yaml(root: Path, tmp_path: Path) -> None:
    cfg = swin_t()
    cfg.labels = LabelConfig(heads="object", text=TextEncoderConfig(), object_classes=("cat", "dog"))
    assert SemanticSAMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = swin_t().to_dict()
    del old["labels"], old["decoder"]["dim_proj"]  # a config written before label heads existed
    assert SemanticSAMConfig.from_dict(old) == swin_t()
    for bad, needle in (
        ({"heads": "whole"}, "labels.heads"),
        ({"heads": "object", "text": {"proj_dim": 256}}, "proj_dim"),
        ({"object_classes": ["cat", "cat"]}, "twice"),
        ({"part_classes": [""]}, "non-empty"),
    ):
        d = swin_t().to_dict()
        d["labels"].update(bad)
        with pytest.raises(ValueError, match=needle):
            SemanticSAMConfig.from_dict(d)
    # the released YAML (TEXT.ARCH noencoder) → no labels; a language-encoder YAML → trained object + part heads
    small = from_official_yaml(root / "ssam_small.yaml")
    assert small.labels == LabelConfig() and small.decoder.dim_proj == 64
    text = (root / "ssam_small.yaml").read_text().replace("ARCH: noencoder", "ARCH: vlpencoder")
    (tmp_path / "lang.yaml").write_text(text)
    lang = from_official_yaml(tmp_path / "lang.yaml")
    assert lang.labels.heads == "object+part" and lang.labels.text is not None
    assert (lang.labels.text.proj_dim, lang.labels.text.context_length, lang.labels.text.causal) == (64, 18, True)


def test_vocabulary_rules_and_reasons(root: Path) -> None:
    table_model = _label_model(root, LabelConfig(heads="object", object_classes=("cup", "table", "spoon")))
    table_model.store_vocabulary(("cup", "table", "spoon"), object_embeddings=_unit(3, 64, 3) * 5)
    stored = table_model.build_vocabulary()
    assert stored.object_names == ("cup", "table", "spoon") and stored.part_embeddings is None
    torch.testing.assert_close(stored.object_embeddings.norm(dim=-1), torch.ones(3))  # normalised when stored
    sub = table_model.build_vocabulary(["spoon", "cup"])
    torch.testing.assert_close(sub.object_embeddings, stored.object_embeddings[[2, 0]])
    with pytest.raises(ValueError, match=r"\['fork'\] are not in the model's stored class table"):
        table_model.build_vocabulary(["fork"])
    with pytest.raises(ValueError, match="part head is not trained"):
        table_model.build_vocabulary(part_classes=["handle"])
    with pytest.raises(ValueError, match="twice"):
        table_model.build_vocabulary(["cup", "cup"])
    assert table_model.label_reasons() == (None, NO_PART_HEAD_REASON)
    assert table_model.label_reason() == f"part_label: {NO_PART_HEAD_REASON}"
    assert table_model.logit_scale is not None and table_model.label_logit_scale is table_model.logit_scale

    bare = _label_model(root, LabelConfig(heads="object+part"))  # trained heads, nothing to name classes with
    assert bare.label_reasons() == (NO_VOCABULARY_REASON, NO_VOCABULARY_REASON)
    x = bare.preprocess(torch.zeros(3, 64, 96, dtype=torch.uint8))
    with torch.no_grad():
        f = bare.encode_image(x)
        with pytest.raises(ValueError, match="no vocabulary"):
            bare.decode_clicks(f, torch.tensor([[10.0, 10.0]]), return_class_logits=True)
        with pytest.raises(TypeError, match="LabelVocabulary"):
            bare.decode_clicks(f, torch.tensor([[10.0, 10.0]]), vocabulary={"cup": 0})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"\[N, 64\] class table"):
            bare.decode_clicks(
                f, torch.tensor([[10.0, 10.0]]), vocabulary=LabelVocabulary(object_embeddings=torch.ones(2, 32))
            )
        f2 = table_model.encode_image(x)
        out = table_model.decode_clicks(f2, torch.tensor([[10.0, 10.0], [50.0, 30.0]]), return_class_logits=True)
    assert out.object_logits is not None and out.object_logits.shape == (1, 2, 6, 3) and out.part_logits is None
    assert len(out.aux_object_logits) == table_model.cfg.decoder.num_layers - 1 and not out.aux_part_logits
    with pytest.raises(ValueError, match="no text encoder"):
        table_model.store_vocabulary(("fork",))


# ------------------------------------------------------------------------------------------------ save / load


def test_native_dirs_written_before_the_label_heads_still_load(official: SemanticSAM, tmp_path: Path) -> None:
    from seem.models.checkpoints.native import save_native

    cfg = official.cfg.to_dict()
    del cfg["labels"], cfg["decoder"]["dim_proj"]
    sd = {k: v for k, v in official.state_dict().items() if not k.startswith("predictor.class_embed")}
    loaded = load_semantic_sam(save_native(tmp_path / "old", "semantic_sam", cfg, sd))
    assert loaded.cfg.backbone == official.cfg.backbone and loaded.cfg.labels == LabelConfig()
    assert loaded.cfg.decoder.dim_proj == 512  # the default: such dirs never held class heads (kept at init)
    assert loaded.label_reasons() == (NO_LABEL_REASON, NO_LABEL_REASON)
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def _labels_of(pred: GranularityPredictor) -> list[tuple]:
    out = pred.predict([[300.0, 200.0], [120.0, 80.0]], min_iou=-1e9, dedup_iou=1.0, sort="level")
    return [(r.level, r.label, r.label_score, r.part_label, r.part_label_score, r.label_reason) for r in out]


def test_tiny_label_model_saves_and_loads_with_labels(root: Path, tmp_path: Path) -> None:
    model = _label_model(root, LabelConfig(heads="object+part", text=TINY_TEXT))
    assert model.text_encoder is not None and model.logit_scale is None
    objects, parts = ["cup", "saucer", "table", "spoon"], ["handle", "rim"]
    pred = GranularityPredictor(model, short_side=128)
    pred.set_image(root / "images" / "coffee.png")
    assert pred.label_reason == NO_VOCABULARY_REASON  # a text encoder but no vocabulary yet
    pred.set_vocabulary(objects, parts)
    assert pred.label_reason is None
    before = _labels_of(pred)
    assert len(before) == 6
    for _, label, score, part, pscore, reason in before:
        assert label in objects and part in parts and reason is None
        assert 0.0 < score < 1.0 and 0.0 < pscore < 1.0

    # our format, with the text encoder: same config, same weights, same labels
    loaded = load_semantic_sam(save_semantic_sam(model, tmp_path / "text"))
    assert loaded.cfg == model.cfg and loaded.text_encoder is not None
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    pred2 = GranularityPredictor(loaded, short_side=128)
    pred2.set_image(root / "images" / "coffee.png")
    pred2.set_vocabulary(objects, parts)
    assert _labels_of(pred2) == before

    # a stored class table instead of the text encoder: labels without any text model
    model.store_vocabulary(objects, parts)
    light = model.without_text_encoder()
    assert light.text_encoder is None and light.logit_scale is not None
    assert not any(k.startswith("text_encoder.") for k in light.state_dict())
    table = load_semantic_sam(save_semantic_sam(light, tmp_path / "table"))
    assert table.cfg.labels.object_classes == tuple(objects) and table.cfg.labels.part_classes == tuple(parts)
    pred3 = GranularityPredictor(table, short_side=128)  # default vocabulary: the stored table
    pred3.set_image(root / "images" / "coffee.png")
    got = _labels_of(pred3)
    assert [g[:2] + g[3:4] + g[5:] for g in got] == [b[:2] + b[3:4] + b[5:] for b in before]
    np.testing.assert_allclose([g[2] for g in got], [b[2] for b in before], rtol=1e-5)
    np.testing.assert_allclose([g[4] for g in got], [b[4] for b in before], rtol=1e-5)


# -------------------------------------------------------------------------------------------------- training


def _halves(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.nonzero(mask)[0]
    cut = int(np.median(rows))
    upper = mask.copy()
    upper[cut:] = False
    return upper, mask & ~upper


def _inside(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    i = len(ys) // 2
    return int(xs[i]), int(ys[i])


def test_heads_learn_object_and_part_labels_on_real_coco_masks(root: Path) -> None:
    from seem.train.datasets import CocoPanopticSource

    pan = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    src = CocoPanopticSource(pan / "panoptic_examples.json", pan / "panoptic", pan / "images")
    sample = next(src[i] for i in range(len(src)) if src[i].image_id == "439180")
    names = [src.class_names[int(c)] for c in sample.class_ids]
    area = sample.masks.flatten(1).sum(1)

    def largest(name: str) -> int:
        return max((i for i, n in enumerate(names) if n == name), key=lambda i: int(area[i]))

    objects = ["person", "truck", "horse", "tree-merged", "grass-merged", "dog", "car"]  # 2 distractors
    parts = ["person:upper half", "truck:lower half", "horse:upper half", "dog:head"]  # 1 distractor
    model = _label_model(
        root, LabelConfig(heads="object+part", object_classes=tuple(objects), part_classes=tuple(parts))
    )
    model.store_vocabulary(objects, parts, object_embeddings=_unit(7, 64, 10), part_embeddings=_unit(4, 64, 11))

    pred = GranularityPredictor(model, short_side=160)
    pred.set_image(sample.image)  # uint8 CHW
    assert pred.features is not None and pred.input_size is not None
    h0, w0 = pred.original_size
    hi, wi = pred.input_size
    hp, wp = pred.features.padded_size
    # targets on the padded model canvas: wholes (object class) and their upper / lower halves (part class)
    masks, class_ids, part_ids, clicks, click_targets = [], [], [], [], []
    small = F.interpolate(sample.masks[None].float(), size=(hi, wi), mode="nearest")[0].bool().numpy()
    # clicks: the upper person half, the lower truck half and the upper horse half (parts named "object:part", as in
    # PACO), and one click on each stuff region (its whole region only)
    for name, half in (("person", 0), ("truck", 1), ("horse", 0), ("tree-merged", None), ("grass-merged", None)):
        whole = small[largest(name)]
        masks.append(whole)
        class_ids.append(objects.index(name))
        part_ids.append(-1)
        if half is None:
            clicks.append(_inside(whole))
            click_targets.append([len(masks) - 1])
            continue
        masks.append(_halves(whole)[half])
        class_ids.append(-1)
        part_ids.append(parts.index(f"{name}:{('upper', 'lower')[half]} half"))
        clicks.append(_inside(masks[-1]))
        click_targets.append([len(masks) - 2, len(masks) - 1])
    canvas = np.zeros((len(masks), hp, wp), dtype=bool)
    canvas[:, :hi, :wi] = np.stack(masks)
    targets = [
        GranularityTargets(
            masks=torch.from_numpy(canvas),
            click_targets=click_targets,
            class_ids=torch.tensor(class_ids),
            part_ids=torch.tensor(part_ids),
        )
    ]
    # clicks in original pixels, decoded exactly as the predictor does (relative to the original size)
    clicks_orig = np.array(clicks, dtype=np.float64) * np.array([w0 / wi, h0 / hi])
    rel = torch.from_numpy(clicks_orig / np.array([w0, h0])).float()

    # the image encoder stays frozen (features computed once); the decoder and its class heads train (with frozen
    # random decoder weights the 6 tokens of a click are ~0.98 cosine-similar, which no linear head can separate)
    for prm in model.parameters():
        prm.requires_grad_(False)
    heads = [model.predictor.class_embed, model.predictor.class_embed_part, model.logit_scale]
    decoder = [prm for n, prm in model.predictor.named_parameters() if not n.startswith("class_embed")]
    for prm in [*heads, *decoder]:
        assert prm is not None
        prm.requires_grad_(True)
    crit = GranularityCriterion(num_points=2048)
    opt = torch.optim.Adam([{"params": heads, "lr": 0.05}, {"params": decoder, "lr": 0.003}])
    first = last = None
    model.train()
    for _ in range(150):
        out = model.decode_clicks(pred.features, rel, relative=True, return_class_logits=True)
        layers = granularity_layers(out, out.layer_object_logits, out.layer_part_logits)
        losses = crit(layers, targets, generator=torch.Generator().manual_seed(0))
        cls = sum(v for k, v in losses.items() if "_cls_" in k)
        first = float(cls.detach()) if first is None else first
        last = float(cls.detach())
        opt.zero_grad()
        crit.total(losses).backward()
        opt.step()
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    assert last is not None and first is not None and last < 0.3 * first
    # the trained clicks: the token matched to each target now names its class
    with torch.no_grad():
        out = model.decode_clicks(pred.features, rel, relative=True, return_class_logits=True)
    match = crit.match(granularity_layers(out)[-1], targets, torch.Generator().manual_seed(0))[0]
    assert out.object_logits is not None and out.part_logits is not None
    obj = out.object_logits[0].flatten(0, 1)
    part = out.part_logits[0].flatten(0, 1)
    checked = 0
    level_of = {tok: lv for lv, tok in PROMPT_SWITCH.items()}
    for q, c, tok, t in zip(match.query, match.click, match.token, match.target, strict=True):
        if class_ids[int(t)] >= 0:
            assert int(obj[int(q)].argmax()) == class_ids[int(t)]
            # the predictor's record at that level carries the label (mean sigmoid over the one positive click)
            recs = pred.predict(clicks_orig[int(c)], levels=[level_of[int(tok)]], min_iou=-1e9)
            assert recs[0].label == objects[class_ids[int(t)]]
            assert recs[0].label_score == pytest.approx(float(obj[int(q)].max().sigmoid()), rel=1e-4)
            checked += 1
        if part_ids[int(t)] >= 0:
            assert int(part[int(q)].argmax()) == part_ids[int(t)]
            recs = pred.predict(clicks_orig[int(c)], levels=[level_of[int(tok)]], min_iou=-1e9)
            assert recs[0].part_label == parts[part_ids[int(t)]]
            checked += 1
    assert checked == sum(len(t) for t in click_targets)

    # segment everything with the trained model: records carry labels from the (sub-)vocabulary, with scores
    gen = AutomaticMaskGenerator(
        model, points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0, levels=(1, 4), short_side=160
    )
    recs = gen.generate(sample.image)
    assert recs and gen.label_reason is None
    for r in recs:
        assert r["label"] in objects and r["part_label"] in parts and r["label_reason"] is None
        assert 0.0 < r["label_score"] < 1.0 and 0.0 < r["part_label_score"] < 1.0
    gen.set_vocabulary(["person", "horse"], ["truck:lower half"])
    assert {r["label"] for r in gen.generate(sample.image)} <= {"person", "horse"}
