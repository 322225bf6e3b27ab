"""ONNX export of SEEM v1 models: the exported pair runs in onnxruntime and matches PyTorch on real images.

Models: the small official-format parity checkpoint (``SEEM_PARITY_DIR``, random weights) and the default model's
architecture (``seem-mobilenetv2``, random weights, seed 0); encoder side S = 256 to keep the suite fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, REPO, SEEM_PARITY_DIR, rel_err, require
from PIL import Image

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'seem[onnx]')")
pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")

from seem.eval.datasets import open_dataset  # noqa: E402
from seem.eval.runner import evaluate_interactive  # noqa: E402
from seem.eval.sam_onnx import SamOnnxPredictor, preprocess_shape  # noqa: E402
from seem.export.cli import add_export_parser  # noqa: E402
from seem.export.onnx import DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES, load_metadata  # noqa: E402
from seem.export.seem_onnx import (  # noqa: E402
    TEXT_DECODER_INPUT_NAMES,
    TEXT_DECODER_OUTPUT_NAMES,
    SEEMOnnxDecoder,
    SEEMOnnxEncoder,
    SEEMOnnxTextDecoder,
    export_seem_onnx,
    layout_for,
    text_inputs,
    torch_seem_sam_predictor,
)
from seem.models.config import from_official_yaml, named_config  # noqa: E402
from seem.models.postprocess import sem_seg_postprocess  # noqa: E402
from seem.models.seem_model import SEEMModel  # noqa: E402
from seem.models.seem_types import DecoderInputs, ImageFeatures  # noqa: E402
from seem.models.visual_sampler import default_pixel_selection  # noqa: E402
from seem.predictor import Segmenter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 256
TOL = 1e-4
PHOTOS = REPO / "src" / "seem" / "data"


@pytest.fixture(scope="module")
def model() -> SEEMModel:
    pt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "small SEEM parity checkpoint (SEEM_PARITY_DIR)")
    m, _ = SEEMModel.from_official(pt, config=SEEM_PARITY_DIR / "seem_v1_small.yaml")
    return m


@pytest.fixture(scope="module")
def exported(model: SEEMModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_seem_onnx(model, tmp_path_factory.mktemp("seem_onnx"), image_size=S)


@pytest.fixture(scope="module")
def sessions(exported: dict[str, Path]) -> tuple[object, object]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return (
        ort.InferenceSession(str(exported["encoder"]), sess_options=opts),
        ort.InferenceSession(str(exported["decoder"]), sess_options=opts),
    )


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _grabcut(n: int) -> list[np.ndarray]:
    return [_rgb(p) for p in sorted(require(DATA_DIR / "grabcut" / "images", "GrabCut sample").iterdir())[:n]]


def _feeds(
    emb: np.ndarray, pts: list[list[float]], labels: list[float], hw: tuple[int, int], mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    return {
        "image_embeddings": emb,
        "point_coords": np.asarray([pts], np.float32).reshape(1, -1, 2),
        "point_labels": np.asarray([labels], np.float32),
        "mask_input": np.zeros((1, 1, S // 4, S // 4), np.float32) if mask is None else mask.reshape(1, 1, S // 4, -1),
        "has_mask_input": np.full(1, 0.0 if mask is None else 1.0, np.float32),
        "orig_im_size": np.asarray(hw, np.float32),
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# prompts in the SAM frame of the resized image (longest side S), as SamOnnxPredictor feeds them
PROMPTS = {
    "click": ([[120.0, 60.0], [0.0, 0.0]], [1.0, -1.0]),  # one click + SAM's padding point
    "pos_neg": ([[120.0, 60.0], [40.0, 30.0], [0.0, 0.0]], [1.0, 0.0, -1.0]),
    "box": ([[30.0, 20.0], [200.0, 150.0]], [2.0, 3.0]),
    "box_neg": ([[100.0, 70.0], [30.0, 20.0], [200.0, 150.0]], [0.0, 2.0, 3.0]),
    "negative_only": ([[100.0, 70.0], [0.0, 0.0]], [0.0, -1.0]),  # no positive input: runs, defined output
}


def test_io_names_and_metadata(exported: dict[str, Path], sessions: tuple) -> None:
    enc, dec = sessions
    assert tuple(i.name for i in dec.get_inputs()) == DECODER_INPUT_NAMES
    assert tuple(o.name for o in dec.get_outputs()) == DECODER_OUTPUT_NAMES
    shapes = {i.name: i.shape for i in dec.get_inputs()}
    assert isinstance(shapes["point_coords"][1], str)  # dynamic number of points
    assert shapes["mask_input"] == [1, 1, S // 4, S // 4]
    assert [i.shape for i in enc.get_inputs()] == [[1, 3, S, S]]
    meta = load_metadata(exported["metadata"].parent)
    assert meta["family"] == "seem" and meta["image_size"] == S and meta["num_masks"] == 3
    assert meta["mask_input_size"] == [S // 4, S // 4] and meta["embedding_shape"][:2] == [1, 64]
    ssam_keys = {"family", "image_size", "resize", "pixel_mean", "pixel_std", "num_masks", "mask_input_size"}
    assert ssam_keys | {"embedding_shape", "opset"} <= set(meta)


def test_encoder_equals_decoder_cache(model: SEEMModel, sessions: tuple) -> None:
    """(a) The exported encoder's packed output holds the tensors of the model's own per-image decoder cache."""
    enc, _ = sessions
    layout = layout_for(model, S)
    pre = torch_seem_sam_predictor(model, S)
    for img in (_rgb(PHOTOS / "coffee.jpg"), *_grabcut(1)):
        x = pre.preprocess(img)
        emb = enc.run(None, {"image": x})[0]
        assert emb.shape == (1, 64, layout.total)
        with torch.no_grad():
            pix = model.pixel_decoder(model.backbone(torch.from_numpy(x)))
            feats = ImageFeatures(list(pix.multi_scale_features), pix.mask_features, (S, S))
            model.decoder.prepare(feats)
            assert rel_err(emb, SEEMOnnxEncoder(model, layout)(torch.from_numpy(x))) < TOL
        (cache,) = feats.decoder_cache.values()
        parts = layout.unpack(torch.from_numpy(emb))
        assert rel_err(parts["mask_features"], cache.mask_features) < TOL
        for lvl in range(3):
            assert rel_err(parts[f"mask_features_level{lvl}"], cache.mask_features_at(lvl)) < TOL
            assert rel_err(parts[f"level_map{lvl}"], cache.level_maps[lvl]) < TOL
        for i in range(model.config.decoder.num_layers):
            k, v = cache.key_value(model.decoder, i)
            assert rel_err(parts[f"key{i}"], k[0].transpose(-1, -2)) < TOL  # stored transposed: [heads, d, h*w]
            assert rel_err(parts[f"value{i}"], v[0].transpose(-1, -2)) < TOL


@pytest.mark.parametrize("name", list(PROMPTS))
def test_decoder_onnx_matches_pytorch(model: SEEMModel, sessions: tuple, name: str) -> None:
    """(b) Every decoder output of onnxruntime equals the PyTorch wrapper, without and with the memory prompt."""
    enc, dec = sessions
    torch_dec = SEEMOnnxDecoder(model, layout_for(model, S)).eval()
    pts, labels = PROMPTS[name]
    pre = torch_seem_sam_predictor(model, S)
    for img in (_rgb(PHOTOS / "chelsea.jpg"), *_grabcut(1)):
        hw = img.shape[:2]
        emb = enc.run(None, {"image": pre.preprocess(img)})[0]
        mask = None
        for _round in range(2):  # round 2: the previous selected low-res mask as SEEM's memory prompt
            feeds = _feeds(emb, pts, labels, hw, mask)
            outs = dec.run(None, feeds)
            with torch.no_grad():
                refs = torch_dec(*[torch.from_numpy(v) for v in feeds.values()])
            for out_name, o, r in zip(DECODER_OUTPUT_NAMES, outs, refs, strict=True):
                assert rel_err(o, r) < TOL, out_name
            masks, scores, low = outs
            assert masks.shape == (1, 3, *hw) and low.shape == (1, 3, S // 4, S // 4)
            assert np.all(np.diff(scores[0]) <= 0)  # sorted: index 0 is the official selection
            mask = low[0, 0]


def test_pixel_selection_equals_default_rule(model: SEEMModel) -> None:
    """The traceable prompt-pixel choice is ``default_pixel_selection`` (one prompt), below and above the budget."""
    dec = SEEMOnnxDecoder(model, layout_for(model, S))
    rng = np.random.default_rng(0)
    for density in (0.002, 0.05, 0.5):
        mask = torch.from_numpy(rng.random((S, S)) < density)
        for budget in (1, 7, 512):
            nz = mask.nonzero()
            want = nz[default_pixel_selection([len(nz)], budget)].float() / S
            torch.testing.assert_close(dec.select_pixels(mask, budget), want, rtol=0, atol=0)


@pytest.fixture
def same_canvas_segmenter(model: SEEMModel, monkeypatch: pytest.MonkeyPatch):
    """``Segmenter`` set up to see the exported pair's canvas: bilinear resize (SAM's) instead of bicubic, short side
    = the SAM-resized short side, padding to S x S."""

    def bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))

    monkeypatch.setattr("seem.predictor.resize_image", bilinear)
    monkeypatch.setattr(model.config.inference, "size_divisibility", S)

    def make(img: np.ndarray) -> Segmenter:
        nh, nw = preprocess_shape(*img.shape[:2], S)
        seg = Segmenter(model, short_side=min(nh, nw), cache_dir=False, progress=False)
        seg.set_image(img)
        assert seg.geometry.resized_size == (nh, nw) and seg.geometry.padded_size == (S, S)
        return seg

    return make


def test_agrees_with_segmenter_predict(exported: dict[str, Path], same_canvas_segmenter) -> None:
    """(c) On the same canvas, the exported pair gives ``Segmenter.predict``'s masks, scores and memory rounds.

    Measured (parity model, 3 real images, 4 prompt sets, 2 rounds each): mask IoU >= 0.9999, low-res logits within
    5e-5 of the largest logit. (``Segmenter``'s defaults differ in resize and padding: see docs/onnx.md.)
    """
    onnx_pred = SamOnnxPredictor(exported["encoder"], exported["decoder"], threads=1)
    for img in (_rgb(PHOTOS / "coffee.jpg"), *_grabcut(2)):
        h, w = img.shape[:2]
        seg = same_canvas_segmenter(img)
        onnx_pred.set_image(img)
        cases = [
            (np.array([[0.6 * w, 0.4 * h]]).round(), np.array([1]), None),
            (np.array([[0.6 * w, 0.4 * h], [0.2 * w, 0.7 * h]]).round(), np.array([1, 0]), None),
            (None, None, np.array([0.2 * w, 0.1 * h, 0.8 * w, 0.9 * h]).round()),
            (np.array([[0.5 * w, 0.5 * h]]).round(), np.array([0]), np.array([0.2 * w, 0.1 * h, 0.8 * w, 0.9 * h])),
        ]
        for pc, pl, box in cases:
            mem_a = mem_b = None
            for _round in range(2):
                a_masks, a_scores, a_low = onnx_pred.predict(pc, pl, box, mask_input=mem_a)
                b_masks, b_scores, b_low = seg.predict(pc, pl, box, mask_input=mem_b, multimask_output=True)
                assert a_masks.shape == b_masks.shape == (3, h, w)
                for k in range(3):
                    assert _iou(a_masks[k], b_masks[k]) >= 0.999
                assert rel_err(a_low, b_low) < 5e-4
                np.testing.assert_allclose(a_scores, b_scores, rtol=0, atol=1e-3 * np.abs(b_scores).max())
                mem_a, mem_b = a_low[:1], b_low[:1]


def test_sam_adapter_from_dir_and_interactive_eval(model: SEEMModel, exported: dict[str, Path]) -> None:
    """(d) ``SamOnnxPredictor.from_dir`` runs the export unchanged; the interactive evaluation (memory prompt from
    round 2) gives the PyTorch twin's clicks and IoUs."""
    pred = SamOnnxPredictor.from_dir(exported["encoder"].parent)
    assert pred.image_size == S and pred.mask_input_size == (S // 4, S // 4)
    img = _rgb(PHOTOS / "coffee.jpg")
    pred.set_image(img)
    masks, scores, low = pred.predict(np.array([[300.0, 200.0]]), np.array([1]), multimask_output=False)
    assert masks.shape == (3, *img.shape[:2]) and scores.shape == (3,) and low.shape == (3, S // 4, S // 4)
    data = open_dataset(require(DATA_DIR / "grabcut", "GrabCut sample"))[0]
    a = evaluate_interactive(pred, data, "ritm", max_clicks=3, limit=2)
    b = evaluate_interactive(torch_seem_sam_predictor(model, S), data, "ritm", max_clicks=3, limit=2)
    assert len(a.items) == 2
    for x, y in zip(a.items, b.items, strict=True):
        assert x.clicks == y.clicks
        np.testing.assert_allclose(x.ious, y.ious, rtol=0, atol=1e-3)


def test_default_model_architecture(tmp_path: Path) -> None:
    """The default model's architecture (MobileNetV2, 6 queries per prompt) exports and matches PyTorch."""
    torch.manual_seed(0)
    m = SEEMModel(named_config("seem-mobilenetv2")).eval()
    paths = export_seem_onnx(m, tmp_path, image_size=S)
    pred = SamOnnxPredictor.from_dir(tmp_path, threads=1)
    twin = torch_seem_sam_predictor(m, S)
    img = _grabcut(1)[0]
    pred.set_image(img)
    twin.set_image(img)
    assert pred._embedding is not None and twin._embedding is not None
    assert rel_err(pred._embedding, twin._embedding) < TOL
    pc, pl = np.array([[200.0, 150.0], [50.0, 40.0]]), np.array([1, 0])
    a = pred.predict(pc, pl)
    b = twin.predict(pc, pl, mask_input=None)
    assert a[0].shape == (6, *img.shape[:2]) and load_metadata(paths["metadata"].parent)["num_masks"] == 6
    for x, y in zip(a[1:], b[1:], strict=True):
        assert rel_err(x, y) < TOL
    a2 = pred.predict(pc, pl, mask_input=a[2][:1])
    b2 = twin.predict(pc, pl, mask_input=b[2][:1])
    assert rel_err(a2[2], b2[2]) < TOL


def test_bad_arguments(model: SEEMModel, tmp_path: Path) -> None:
    """(e) Clear errors for what cannot be exported."""
    for bad in (250, 0, 100, 256.0):
        with pytest.raises(ValueError, match="multiple of 32"):
            export_seem_onnx(model, tmp_path, image_size=bad)  # type: ignore[arg-type]
    cfg = from_official_yaml(SEEM_PARITY_DIR / "seem_v1_small.yaml")
    cfg.decoder.variant = "demo"
    with pytest.raises(ValueError, match="v1 decoder rules"):
        export_seem_onnx(SEEMModel(cfg), tmp_path, image_size=S)
    with pytest.raises(TypeError, match="SEEMModel"):
        export_seem_onnx(torch.nn.Linear(2, 2), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="opset"):
        export_seem_onnx(model, tmp_path, image_size=S, opset=16)
    assert not list(tmp_path.iterdir())  # nothing written


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", "onnx", *argv])


def test_cli_exports_seem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "small SEEM parity checkpoint")
    yaml = str(SEEM_PARITY_DIR / "seem_v1_small.yaml")
    args = _cli([str(pt), "--config", yaml, "--out", str(tmp_path), "--image-size", "128", "--quantize"])
    assert args.func(args) == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {"encoder.onnx", "decoder.onnx", "text_prompt.onnx", "seem_onnx.json", "prompt_int8.onnx"}
    assert "decoder.onnx" in capsys.readouterr().out
    img = _rgb(PHOTOS / "chelsea.jpg")
    for dec in ("decoder.onnx", "prompt_int8.onnx"):
        pred = SamOnnxPredictor(tmp_path / "encoder.onnx", tmp_path / dec, threads=1)
        pred.set_image(img)
        masks, scores, low = pred.predict(np.array([[100.0, 120.0]]), np.array([1]))
        assert masks.shape == (3, *img.shape[:2]) and np.all(np.isfinite(scores)) and low.shape == (3, 32, 32)
    bad = _cli([str(pt), "--config", yaml, "--out", str(tmp_path / "x"), "--image-size", "100"])
    with pytest.raises(SystemExit, match="multiple of 32"):
        bad.func(bad)


# ---- referring text (text_prompt.onnx)


def test_text_decoder_matches_pytorch_grounding(model: SEEMModel, exported: dict[str, Path]) -> None:
    """(f) ``text_prompt.onnx`` in onnxruntime, text from the model's own CLIP text encoder, equals
    ``SEEMModel.decode`` with a ``GroundingPrompt`` (what ``Segmenter.segment_text`` runs) on the same canvas: the
    same selected query, its low-res logits and score, and the official grounding post-processing.

    Measured (parity model, coffee photo, S = 256): low-res logits and masks within 1.2e-5 relative, ORT vs the
    PyTorch wrapper within 1e-6."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    enc = ort.InferenceSession(str(exported["encoder"]), sess_options=opts)
    dec = ort.InferenceSession(str(exported["text_decoder"]), sess_options=opts)
    assert tuple(i.name for i in dec.get_inputs()) == TEXT_DECODER_INPUT_NAMES
    assert tuple(o.name for o in dec.get_outputs()) == TEXT_DECODER_OUTPUT_NAMES
    meta = load_metadata(exported["metadata"].parent)
    assert meta["text_decoder"]["file"] == exported["text_decoder"].name == "text_prompt.onnx"
    pre = torch_seem_sam_predictor(model, S)
    photo = _rgb(PHOTOS / "coffee.jpg")
    small = np.asarray(Image.fromarray(photo).resize((150, 100), Image.Resampling.BILINEAR))  # downscaled output
    for img, phrase in ((photo, "a cup of coffee"), (small, "the wooden table")):
        hw = img.shape[:2]
        nh, nw = preprocess_shape(*hw, S)
        x = pre.preprocess(img)
        emb = enc.run(None, {"image": x})[0]
        feeds = {"image_embeddings": emb, **text_inputs(model, phrase), "orig_im_size": np.asarray(hw, np.float32)}
        assert feeds["text_tokens"].shape[2] == 64 and feeds["text_embedding"].shape == (1, 64)
        masks, scores, low = dec.run(None, feeds)
        assert masks.shape == (1, 1, *hw) and scores.shape == (1, 1) and low.shape == (1, 1, S // 4, S // 4)
        with torch.no_grad():
            pix = model.pixel_decoder(model.backbone(torch.from_numpy(x)))
            feats = ImageFeatures(list(pix.multi_scale_features), pix.mask_features, (S, S))
            out = model.decode(DecoderInputs(feats, grounding=model.encode_phrases([phrase]), object_queries=False))
            sel = out.grounding_selection
            assert sel is not None and out.final.grounding is not None
            all_low = out.final.grounding.mask_logits[0]  # [N, S/4, S/4]
            ref_masks = sem_seg_postprocess(sel.mask_logits[:1], (S, S), (nh, nw), hw)
        q = int(sel.query_index[0])
        err = [rel_err(low[0, 0], all_low[j]) for j in range(all_low.shape[0])]
        assert int(np.argmin(err)) == q and err[q] < TOL  # the same selected query, the same logits
        np.testing.assert_allclose(scores[0, 0], float(sel.scores[q, 0]), rtol=1e-5)
        assert rel_err(masks[0], ref_masks) < TOL


def test_text_decoder_shapes_and_errors(model: SEEMModel, exported: dict[str, Path]) -> None:
    """Token count is dynamic; a wrong ``text_tokens`` width is rejected (ONNX and PyTorch), as is an empty phrase."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    dec = ort.InferenceSession(str(exported["text_decoder"]), sess_options=opts)
    shapes = {i.name: i.shape for i in dec.get_inputs()}
    assert isinstance(shapes["text_tokens"][1], str) and shapes["text_tokens"][2] == 64
    emb = np.zeros(shapes["image_embeddings"], np.float32)
    hw = np.asarray([S, S], np.float32)
    bad = np.zeros((1, 4, 32), np.float32)
    with pytest.raises(Exception, match="text_tokens"):
        dec.run(
            None,
            {
                "image_embeddings": emb,
                "text_tokens": bad,
                "text_embedding": np.ones((1, 64), np.float32),
                "orig_im_size": hw,
            },
        )
    torch_dec = SEEMOnnxTextDecoder(model, layout_for(model, S))
    with pytest.raises(ValueError, match=r"text_tokens must be \[1, L, 64\]"):
        torch_dec(torch.from_numpy(emb), torch.from_numpy(bad), torch.ones(1, 64), torch.from_numpy(hw))
    with pytest.raises(ValueError, match="text_embedding"):
        torch_dec(torch.from_numpy(emb), torch.zeros(1, 4, 64), torch.ones(1, 32), torch.from_numpy(hw))
    with pytest.raises(ValueError, match="phrase"):
        text_inputs(model, " ")
