"""The predictor layer (``Segmenter``, ``InteractiveSession``) on the small parity model and real images.

End-to-end parity with the official code (``../shared/parity/seem``), through the public API only (images read
from PNG, resized by the predictor, prompts given in original-image pixels, official draws injected):

- case c (3 interactive rounds on astronaut, memory from round 2) and case d (two boxes at once on coffee,
  400×600 → 512×768, then a negative click for one of them) through ``InteractiveSession``: the drawn prompt
  masks, the stride-4 ``prev_mask`` and the final masks at the original size;
- case a: ``panoptic()`` (+ ``instances()``, ``semantic()``) with the 5-class vocabulary;
- case b: referring text (two phrases, one token group): ``grounding_mask``;
- case e: referring image (stroke on astronaut, segment in coffee).

Behaviour: coordinate handling in the features, cache equivalence, batch = one by one, memory, SAM-style
``predict`` = native call, labels, errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA_DIR, SEEM_DEMO_PARITY_DIR, SEEM_PARITY_DIR, assert_parity, require
from test_seem_decoder import v1_draws  # the recorded official draws of a decoder call (README §9)

from seem.models.seem_model import SEEMModel
from seem.models.seem_types import DecoderDraws, SpatialPrompts
from seem.predictor import ModelNotFoundError, Segmenter, resolve_model
from seem.prompts import (
    Box,
    ImageGeometry,
    MaskPrompt,
    Points,
    PromptError,
    PromptSet,
    ReferenceImage,
    Scribble,
    Text,
    rasterize,
)
from seem.session import InteractiveSession

VOCAB = ["person", "cup", "table", "plant", "wall"]
STUFF = ["wall"]
BINARY_FRAC = 1e-4  # README §10: thresholded maps may flip a few pixels


# ----------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def model() -> SEEMModel:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures (SEEM_PARITY_DIR)")
    require(d / "seem_v1_small.pt", "small SEEM parity checkpoint")
    m, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return m


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vocab")


def _segmenter(model: SEEMModel, image: Any, cache_dir: Path, **kw: Any) -> Segmenter:
    s = Segmenter(model, cache_dir=cache_dir, progress=False, **kw)
    s.set_image(image)
    return s


@pytest.fixture(scope="module")
def astro(model: SEEMModel, cache_dir: Path) -> Segmenter:
    s = _segmenter(model, SEEM_PARITY_DIR / "images" / "astronaut.png", cache_dir)
    s.set_vocabulary(VOCAB, STUFF)
    return s


@pytest.fixture(scope="module")
def coffee(model: SEEMModel, cache_dir: Path) -> Segmenter:
    s = _segmenter(model, SEEM_PARITY_DIR / "images" / "coffee_original.png", cache_dir)
    s.set_vocabulary(VOCAB, STUFF)
    return s


@pytest.fixture(scope="module")
def grabcut(model: SEEMModel, cache_dir: Path) -> tuple[Segmenter, dict[str, Any]]:
    d = require(DATA_DIR / "grabcut", "GrabCut data")
    item = json.loads((d / "index.json").read_text())["items"][0]
    # behaviour tests run at a smaller model input (short side 256) to stay fast; parity tests use 512
    return _segmenter(model, d / item["image"], cache_dir, short_side=256), {"dir": d, **item}


def _case(name: str) -> tuple[dict[str, Any], Any]:
    meta = json.loads((SEEM_PARITY_DIR / f"{name}.json").read_text())
    return meta, np.load(SEEM_PARITY_DIR / f"{name}.npz")


def assert_masks(ours: np.ndarray, ref: np.ndarray, name: str) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    bad = int((ours != ref).sum())
    allowed = max(2, int(BINARY_FRAC * ref.size))
    assert bad <= allowed, f"{name}: {bad} mismatching pixels > {allowed}"


def assert_label(seg: Any, class_logits: np.ndarray, name: str) -> None:
    """Label = argmax over vocabulary + background of the chosen query's class logits; score = softmax prob."""
    probs = torch.softmax(torch.from_numpy(class_logits).double(), -1)
    k = int(probs.argmax())
    assert seg.label_id == k, name
    assert seg.label == [*VOCAB, "background"][k], name
    assert seg.label_score == pytest.approx(float(probs[k]), rel=1e-3, abs=1e-4), name


# ----------------------------------------------------------------------------------------------------------
# end-to-end parity


@pytest.mark.parity
def test_session_reproduces_case_c(astro: Segmenter) -> None:
    meta, ref = _case("case_c_interactive")
    session = InteractiveSession(astro)
    rounds = [
        PromptSet(points=Points([[225, 120]], [1])),  # (y, x) = (120, 225)
        PromptSet(points=Points([[400, 420]], [0])),  # negative (420, 400)
        PromptSet(scribbles=Scribble([[60, 300], [100, 350], [120, 400], [150, 460]], width=5)),
    ]
    assert meta["rounds"] == len(rounds)
    for r, prompt in enumerate(rounds, start=1):
        seg = session.step(prompt, draws=v1_draws(meta, ref, r - 1))[0]
        raster = rasterize(session.prompts(0), astro.geometry)  # type: ignore[arg-type]
        assert np.array_equal(raster.pos, ref[f"round{r}/prompt/pos_mask"][0]), f"round {r} positive prompt"
        assert np.array_equal(raster.neg, ref[f"round{r}/prompt/neg_mask"][0]), f"round {r} negative prompt"
        assert seg.low_res_logits is not None
        assert_parity(seg.low_res_logits, ref[f"round{r}/out/prev_mask"][0, 0], f"round{r}/prev_mask")
        assert_masks(seg.mask, ref[f"round{r}/final/mask"][0], f"round{r}/final/mask")
        # label from the selected spatial query's class logits (rows 16..18 of the cross-attention variables)
        q = int(np.argmax(ref[f"round{r}/out/pred_smaskembs"][0] @ ref[f"round{r}/out/pred_pspatials"][0, 0]))
        assert_label(seg, ref[f"round{r}/L3/class_logits"][0, 16 + q], f"round {r}")
    assert session.round == 3


@pytest.mark.parity
def test_session_reproduces_case_d(coffee: Segmenter) -> None:
    meta, ref = _case("case_d_box")
    g = coffee.geometry
    assert g.original_size == (400, 600) and g.resized_size == (512, 768)
    sy, sx = g.scale
    # the official boxes (y0, x0, y1, x1) are on the 512×768 canvas: give their edges in original pixels
    boxes = [(20, 215, 300, 520), (330, 110, 480, 300)]
    first = [PromptSet(boxes=Box(x0 / sx, y0 / sy, x1 / sx, y1 / sy)) for y0, x0, y1, x1 in boxes]
    click = g.to_original(np.array([[500, 110]]))  # the canvas pixel (y, x) = (110, 500), in original pixels
    second = [PromptSet(points=Points(click, [0])), None]
    session = InteractiveSession(coffee, num_objects=2)  # joint: both prompts in one decoder call, as officially
    for r, corr in enumerate([first, second], start=1):
        segs = session.step(corr, draws=v1_draws(meta, ref, r - 1))
        for k, seg in enumerate(segs):
            raster = rasterize(session.prompts(k), g)  # type: ignore[arg-type]
            assert np.array_equal(raster.pos, ref[f"round{r}/prompt/pos_mask"][k]), f"round {r} prompt {k}"
            assert np.array_equal(raster.neg, ref[f"round{r}/prompt/neg_mask"][k]), f"round {r} prompt {k}"
            assert_parity(seg.low_res_logits, ref[f"round{r}/out/prev_mask"][0, k], f"round{r}/prev_mask/{k}")
            assert_masks(seg.mask, ref[f"round{r}/final/mask"][k], f"round{r}/final/mask/{k}")


@pytest.mark.parity
def test_panoptic_reproduces_case_a(astro: Segmenter) -> None:
    meta, ref = _case("case_a_panoptic")
    pan = astro.panoptic()  # the current vocabulary: 5 classes, 'wall' is stuff; thresholds from the config
    assert_masks(pan.panoptic_seg, ref["final/panoptic_seg"], "panoptic_seg")
    ours = [{"id": s.id, "isthing": s.isthing, "category_id": s.label_id} for s in pan.segments]
    assert ours == meta["segments_info"]
    for s in pan.segments:
        assert s.label == VOCAB[s.label_id] and 0.8 < s.score <= 1.0 and s.category_id == s.label_id + 1
        assert np.array_equal(s.mask, pan.panoptic_seg == s.id)
    sem = astro.semantic()
    assert_masks(sem.label_map.astype(np.uint8), ref["final/sem_seg/argmax"], "sem_seg argmax")
    inst = astro.instances()
    scores, classes = ref["final/instances/scores"].tolist(), ref["final/instances/pred_classes"].tolist()
    want = sorted(zip(scores, classes, strict=True))[::-1]  # official topk(sorted=False): compare sorted
    assert [s.label_id for s in inst] == [c for _, c in want]
    np.testing.assert_allclose([s.score for s in inst], [v for v, _ in want], rtol=1e-3)


@pytest.mark.parity
def test_referring_text_reproduces_case_b(coffee: Segmenter) -> None:
    meta, ref = _case("case_b_grounding")
    segs = coffee.segment_text(meta["phrases"])  # joint: both phrases form one token group, as officially
    for k, seg in enumerate(segs):
        assert seg.source == "text"
        assert_parity(seg.low_res_logits, ref["select/pred_gmasks_matched"][k], f"grounding logits {k}")
        assert_masks(seg.mask, ref["final/grounding_mask"][k], f"grounding_mask/{k}")
        assert seg.score == pytest.approx(float(ref["select/vl_similarity"][meta["matched_id"][k], k]), rel=1e-3)


@pytest.mark.parity
def test_referring_image_reproduces_case_e(coffee: Segmenter) -> None:
    meta, ref = _case("case_e_refimg")
    stroke = [[x, y] for y, x in meta["stroke_yx"]]
    ref_prompts = PromptSet(scribbles=Scribble(stroke, width=meta["stroke_thickness"]))
    astro_img = SEEM_PARITY_DIR / "images" / "astronaut.png"
    g_ref = ImageGeometry.for_image(512, 512)
    assert np.array_equal(rasterize(ref_prompts, g_ref).pos, ref["stage1/prompt/pos_mask"][0])
    reference = ReferenceImage(astro_img, ref_prompts, draws=v1_draws(meta, ref, 0))
    seg = coffee.segment(PromptSet(reference=reference), draws=[v1_draws(meta, ref, 1)], labels=False)[0]
    assert seg.source == "reference"
    assert_parity(seg.low_res_logits, ref["stage2/out/prev_mask"][0, 0], "stage2/prev_mask")
    assert_masks(seg.mask, ref["stage2/final/pred_mask_ori"][0], "stage2/final/pred_mask_ori")


# ----------------------------------------------------------------------------------------------------------
# behaviour


def test_click_lands_on_its_pixel_in_the_features(grabcut: tuple[Segmenter, dict[str, Any]]) -> None:
    """A click at original pixel (x, y) is drawn at canvas pixel floor((x+0.5)·s) and sampled there."""
    seg, _ = grabcut
    g = seg.geometry
    h0, w0 = g.original_size
    assert (h0, w0) == (321, 481) and g.resized_size == (256, int(256 * 481 / 321)) and g.padded_size == (256, 384)
    x, y = 301, 87
    raster = rasterize(PromptSet(points=Points([[x, y]])), g)
    u = int(np.floor((x + 0.5) * g.resized_size[1] / w0))
    v = int(np.floor((y + 0.5) * g.resized_size[0] / h0))
    ys, xs = np.nonzero(raster.pos)
    assert sorted(set(xs.tolist())) == [u - 1, u, u + 1] and sorted(set(ys.tolist())) == [v - 1, v, v + 1]
    # the model samples the mask features exactly at those 9 canvas pixels (official: (y/Hp, x/Wp),
    # grid_sample with align_corners=True)
    feats = seg.features
    hp, wp = g.padded_size
    pos = torch.from_numpy(raster.pos)[None]
    tokens = seg.model.encode_reference(feats, SpatialPrompts(pos, torch.zeros_like(pos)))
    grid = torch.tensor([[2 * px / wp - 1, 2 * py / hp - 1] for py, px in zip(ys, xs, strict=True)])
    want = F.grid_sample(feats.mask_features, grid[None, None].float(), align_corners=True)[0, :, 0].mean(1)
    assert_parity(tokens.pooled_pos[0], want, "pooled prompt embedding at the clicked pixel")


def test_cached_image_equals_fresh_run(grabcut: tuple[Segmenter, dict[str, Any]], model: SEEMModel, cache_dir) -> None:
    seg, item = grabcut
    img = item["dir"] / item["image"]
    prompts = PromptSet(points=Points([[200, 150], [40, 30]], [1, 0]), boxes=Box(100, 60, 380, 300))
    seg.segment(PromptSet(points=Points([[10, 10]])), labels=False)  # other calls on the cached image first
    seg.predict(np.array([[100.0, 100.0]]), np.array([1]))
    a = seg.segment(prompts, labels=False)[0]
    fresh = _segmenter(model, img, cache_dir, short_side=256)
    b = fresh.segment(prompts, labels=False)[0]
    assert np.array_equal(a.mask, b.mask) and a.score == b.score
    assert np.array_equal(a.low_res_logits, b.low_res_logits)


def test_batch_equals_one_by_one(grabcut: tuple[Segmenter, dict[str, Any]]) -> None:
    seg, _ = grabcut
    scrib = np.array([[120, 80], [200, 160], [260, 170]])
    objects = [
        PromptSet(points=Points([[250, 180]])),
        PromptSet(scribbles=Scribble(scrib), points=Points([[30, 30]], [0])),
        PromptSet(boxes=Box(50, 40, 300, 260)),
        PromptSet(text="a bird on a branch"),
    ]
    batch = seg.segment(objects, labels=False)
    for obj, b in zip(objects, batch, strict=True):
        one = seg.segment(obj, labels=False)[0]
        assert np.array_equal(one.mask, b.mask) and one.score == b.score and one.source == b.source
        assert np.array_equal(one.low_res_logits, b.low_res_logits)
        assert b.mask.shape == seg.original_size


def test_joint_visual_prompts_within_budget_equal_one_by_one(grabcut: tuple[Segmenter, dict[str, Any]]) -> None:
    """Joint decoding of clicks (< 512 prompt pixels, no memory) gives each object its one-by-one result."""
    seg, _ = grabcut
    objects = [PromptSet(points=Points([[250, 180]])), PromptSet(points=Points([[60, 50], [90, 70]], [1, 0]))]
    joint = seg.segment(objects, joint=True, labels=False)
    for obj, j in zip(objects, joint, strict=True):
        one = seg.segment(obj, labels=False)[0]
        assert_parity(j.low_res_logits, one.low_res_logits, "joint vs one by one")


def test_session_memory_is_used_from_round_two(grabcut: tuple[Segmenter, dict[str, Any]]) -> None:
    seg, _ = grabcut
    session = InteractiveSession(seg, labels=False)
    r1 = session.click(250, 180)
    r2 = session.click(100, 250, positive=False)
    both = PromptSet(points=Points([[250, 180], [100, 250]], [1, 0]))
    with_memory = seg.segment(both, labels=False, memory=[r1.low_res_logits])[0]
    without = seg.segment(both, labels=False)[0]
    assert np.array_equal(r2.low_res_logits, with_memory.low_res_logits)  # round 2 = prompts + round-1 memory
    assert not np.array_equal(r2.low_res_logits, without.low_res_logits)  # ... and the memory matters
    # undo goes back to round 1; reset forgets everything
    assert session.undo() is not None and session.round == 1
    assert np.array_equal(session.segments[0].mask, r1.mask)  # type: ignore[index]
    again = session.click(100, 250, positive=False)
    assert np.array_equal(again.low_res_logits, r2.low_res_logits)
    session.reset()
    assert session.round == 0 and session.segments is None and session.prompts() is None
    with pytest.raises(RuntimeError, match="nothing to undo"):
        session.undo()
    session.text("a bird")  # text-only object: no memory prompt in round 2
    assert session.text("the bird").source == "text"


def test_sam_style_predict_equals_native_call(grabcut: tuple[Segmenter, dict[str, Any]]) -> None:
    seg, _ = grabcut
    coords, labels, box = np.array([[250.0, 180.0], [60.0, 40.0]]), np.array([1, 0]), np.array([120, 90, 380, 300])
    native = seg.segment(PromptSet(points=Points(coords, labels), boxes=Box(box)), labels=False)[0]
    masks, scores, low = seg.predict(coords, labels, box[None], multimask_output=False)
    assert masks.shape == (1, *seg.original_size) and masks.dtype == bool
    assert np.array_equal(masks[0], native.mask) and scores[0] == pytest.approx(native.score)
    assert np.array_equal(low[0], native.low_res_logits)
    multi, mscores, mlow = seg.predict(coords, labels, box)
    assert multi.shape[0] == 3 and mlow.shape == (3, *native.low_res_logits.shape)  # type: ignore[union-attr]
    assert np.array_equal(multi[0], native.mask) and list(mscores) == sorted(mscores, reverse=True)
    logits, _, _ = seg.predict(coords, labels, box, multimask_output=False, return_logits=True)
    assert logits.dtype == np.float32 and np.array_equal(logits[0] > 0, native.mask)
    # mask_input = a previous low_res_logits row: the v1 memory prompt
    again, _, _ = seg.predict(coords, labels, box, mask_input=low, multimask_output=False)
    mem = seg.segment(PromptSet(points=Points(coords, labels), boxes=Box(box)), labels=False, memory=[low[0]])[0]
    assert np.array_equal(again[0], mem.mask)


def test_labels_and_vocabulary_cache(grabcut: tuple[Segmenter, dict[str, Any]], model: SEEMModel, cache_dir) -> None:
    seg, _ = grabcut
    seg.set_vocabulary(VOCAB, STUFF)
    s = seg.segment(PromptSet(points=Points([[250, 180]])))[0]
    assert s.label in [*VOCAB, "background"] and 0.0 < s.label_score <= 1.0  # type: ignore[operator]
    # the vocabulary was written to the disk cache and is read back bit-exactly by a new segmenter
    files = list(cache_dir.glob("*.safetensors"))
    assert files
    other = Segmenter(model, cache_dir=cache_dir, progress=False)
    assert torch.equal(other.class_embeddings(VOCAB), seg.class_embeddings(VOCAB))
    assert len(list(cache_dir.glob("*.safetensors"))) == len(files)
    assert seg.vocabulary == VOCAB
    assert len(Segmenter(model, cache_dir=False).vocabulary) == 133  # default: COCO panoptic, encoded lazily


def test_vocabulary_made_inside_bf16_autocast_equals_the_fp32_one(model: SEEMModel) -> None:
    """An app that enables bf16 autocast once, then sets a vocabulary, gets the fp32 class embeddings."""
    ref = Segmenter(model, cache_dir=False, progress=False).class_embeddings(VOCAB)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = Segmenter(model, cache_dir=False, progress=False).class_embeddings(VOCAB)
        direct = model.class_embeddings(VOCAB)  # the model's own call under autocast works too (bf16 precision)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert torch.allclose(direct.float(), ref.to(direct.device), atol=2e-2)


def test_errors_are_clear(grabcut: tuple[Segmenter, dict[str, Any]], model: SEEMModel) -> None:
    seg, _ = grabcut
    h, w = seg.original_size
    with pytest.raises(PromptError, match="outside"):
        seg.segment(PromptSet(points=Points([[w + 5, 10]])))
    with pytest.raises(PromptError, match="degenerate"):
        Box(10, 10, 10, 40)
    with pytest.raises(PromptError, match="extends outside"):
        seg.segment(PromptSet(boxes=Box(-1, 0, 20, 20)))
    with pytest.raises(PromptError, match="does not match the image size"):
        seg.segment(PromptSet(masks=MaskPrompt(np.ones((h + 1, w), bool))))
    with pytest.raises(PromptError, match="positive"):
        seg.segment(PromptSet(points=Points([[10, 10]], [0])))
    with pytest.raises(PromptError, match="empty prompt set"):
        seg.segment(PromptSet())
    with pytest.raises(PromptError, match="empty"):
        Text("   ")
    with pytest.raises(PromptError, match="low_res_logits"):
        seg.predict(np.array([[10, 10]]), np.array([1]), mask_input=np.zeros((1, 256, 256), np.float32))
    with pytest.raises(PromptError, match="reference"):
        ref = ReferenceImage(seg.image, PromptSet(points=Points([[5, 5]])))
        seg.segment(PromptSet(points=Points([[5, 5]]), reference=ref))
    with pytest.raises(RuntimeError, match="set_image"):
        Segmenter(model).segment(PromptSet(points=Points([[1, 1]])))
    import seem.loading

    with pytest.MonkeyPatch.context() as mp:  # an installation without the shipped default model
        mp.setattr(seem.loading, "DEFAULT_MODEL_DIR", Path("/nonexistent/default-model"))
        with pytest.raises(ModelNotFoundError, match="no default model"):
            resolve_model(None)
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model("/nonexistent/seem.pt")
    session = InteractiveSession(seg)
    seg_token = seg.image_token
    seg.set_image(seg.image)  # a new image (here: the same pixels again) invalidates the session
    assert seg.image_token != seg_token
    with pytest.raises(RuntimeError, match="image changed"):
        session.click(10, 10)


# ----------------------------------------------------------------------------------------------------------
# demo-rule models (v0 checkpoints as the official demo runs them)


@pytest.mark.parity
def test_demo_model_reproduces_demo_cases(cache_dir: Path) -> None:
    """Stroke (case a), example image (case b) and text (case c) of ``../shared/parity/seem_demo`` through the
    predictor: the drawn stroke, the selected query's stride-4 logits, its label, and (astronaut, where the
    original size is the model size) the final mask."""
    d = require(SEEM_DEMO_PARITY_DIR, "SEEM demo parity fixtures")
    model, _ = SEEMModel.from_official(
        SEEM_PARITY_DIR / "seem_v1_small.pt", variant="demo", config=d / "seem_demo_small.yaml"
    )

    def case(name: str) -> tuple[dict[str, Any], Any]:
        return json.loads((d / f"{name}.json").read_text()), np.load(d / f"{name}.npz")

    def draws(meta: dict[str, Any], ref: Any, prefix: str) -> DecoderDraws:
        out = DecoderDraws()
        for c in meta["rand_sample_calls"]:
            if c["prefix"] == prefix and c["random_draw"] >= 0:
                perm = torch.from_numpy(ref[f"rand/{c['random_draw']:02d}_randperm"])
                out.prompt_pixels[c["role"]] = perm[: c["n_points_out"]]
        return out

    def check(seg: Any, meta: dict[str, Any], ref: Any) -> None:
        assert_parity(seg.low_res_logits, ref["select/mask_logits_stride4"], "demo selected logits")
        assert seg.label_id == meta["selection"]["pred_class"]
        q = meta["selection"]["query"]
        scores = ref["select/scores"][0, :, 0] if "select/scores" in ref.files else ref["select/vl_similarity"][:, 0]
        assert seg.score == pytest.approx(float(scores[q]), rel=1e-3, abs=1e-3)

    astro = _segmenter(model, SEEM_PARITY_DIR / "images" / "astronaut.png", cache_dir)
    astro.set_vocabulary(VOCAB, STUFF)
    meta, ref = case("case_a_stroke")
    stroke = Scribble([[x, y] for y, x in meta["stroke_yx_original_coords"]], width=meta["stroke_thickness"])
    assert np.array_equal(
        rasterize(PromptSet(scribbles=stroke), astro.geometry).pos, ref["prompt/stroke_resized"][0, 0]
    )
    seg = astro.segment(PromptSet(scribbles=stroke), draws=[draws(meta, ref, "dec/")])[0]
    check(seg, meta, ref)
    assert_masks(seg.mask, ref["final/mask"], "demo final mask")

    coffee = _segmenter(model, SEEM_PARITY_DIR / "images" / "coffee_original.png", cache_dir)
    coffee.set_vocabulary(VOCAB, STUFF)
    meta, ref = case("case_b_example")
    ref_stroke = Scribble([[x, y] for y, x in meta["ref_stroke_yx_original_coords"]], width=5)
    example = ReferenceImage(
        SEEM_PARITY_DIR / "images" / "astronaut.png", PromptSet(scribbles=ref_stroke), draws(meta, ref, "stage1/")
    )
    seg = coffee.segment(PromptSet(reference=example))[0]
    assert seg.source == "reference"
    check(seg, meta, ref)
    meta, ref = case("case_c_text")
    seg = coffee.segment(PromptSet(text=meta["text"]))[0]
    assert seg.source == "text" and seg.mask.shape == (400, 600)
    check(seg, meta, ref)
    masks, scores, _ = coffee.predict(np.array([[300, 200]]), np.array([1]))
    assert masks.shape == (3, 400, 600) and list(scores) == sorted(scores, reverse=True)
    with pytest.raises(PromptError, match="no memory prompt"):
        coffee.predict(np.array([[300, 200]]), np.array([1]), mask_input=np.zeros((1, 128, 192), np.float32))
    session = InteractiveSession(coffee, labels=False)  # no memory: each round re-runs the accumulated prompts
    session.click(300, 200)
    r2 = session.click(100, 100, positive=False)
    both = coffee.segment(PromptSet(points=Points([[300, 200], [100, 100]], [1, 0])), labels=False)[0]
    assert np.array_equal(r2.mask, both.mask)


def test_large_vocabularies_are_encoded_in_chunks_with_progress(
    model: SEEMModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Vocabularies larger than PROGRESS_CHUNK are encoded chunk by chunk (progress bar); same embeddings."""
    import seem.vocabulary as vocabulary

    whole = vocabulary.VocabularyCache(model, cache_dir=False, progress=False).get(VOCAB)
    monkeypatch.setattr(vocabulary, "PROGRESS_CHUNK", 2)
    chunked = vocabulary.VocabularyCache(model, cache_dir=tmp_path, progress=True).get(VOCAB)
    assert chunked.shape == whole.shape == (len(VOCAB) + 1, model.config.decoder.dim_proj)
    assert_parity(chunked, whole, "chunked class embeddings", tol=1e-5)
    with pytest.raises(ValueError, match="duplicates"):
        vocabulary.validate_class_names(["a", "a"])
    with pytest.raises(ValueError, match="background"):
        vocabulary.validate_class_names(["a", "background"])
    with pytest.raises(TypeError):
        vocabulary.validate_class_names("a,b")
    monkeypatch.setenv("SEEM_CACHE", str(tmp_path / "elsewhere"))
    assert vocabulary.default_cache_dir() == tmp_path / "elsewhere" / "vocab"
