"""ONNX export of Semantic-SAM: the exported files run in onnxruntime and match PyTorch on real images.

Small parity model (random weights), encoder side S = 256 to keep the suite fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, SSAM_PARITY_DIR, rel_err, require
from PIL import Image

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'seem[onnx]')")
pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")

from seem.eval.datasets import open_dataset  # noqa: E402
from seem.eval.runner import evaluate_interactive  # noqa: E402
from seem.eval.sam_onnx import SamOnnxPredictor, preprocess_shape  # noqa: E402
from seem.export.cli import add_export_parser  # noqa: E402
from seem.export.onnx import (  # noqa: E402
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    SemanticSAMOnnxDecoder,
    SemanticSAMOnnxEncoder,
    export_semantic_sam_onnx,
    load_metadata,
    quantize_decoder_int8,
    torch_sam_predictor,
)
from seem.models.semantic_sam import SemanticSAM, semantic_sam_from_official  # noqa: E402

S = 256
TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> SemanticSAM:
    require(SSAM_PARITY_DIR / "ssam_small.pth", "Semantic-SAM parity model (SSAM_PARITY_DIR)")
    m, _ = semantic_sam_from_official(SSAM_PARITY_DIR / "ssam_small.pth", config=SSAM_PARITY_DIR / "ssam_small.yaml")
    return m


@pytest.fixture(scope="module")
def exported(model: SemanticSAM, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_semantic_sam_onnx(model, tmp_path_factory.mktemp("ssam_onnx"), image_size=S)


def _images() -> list[np.ndarray]:
    """Two real images of different aspect ratio (portrait-ish GrabCut, landscape coffee)."""
    coffee = require(SSAM_PARITY_DIR / "images" / "coffee.png", "coffee image")
    grab = sorted(require(DATA_DIR / "grabcut" / "images", "GrabCut sample").iterdir())[0]
    return [np.asarray(Image.open(p).convert("RGB")) for p in (coffee, grab)]


def _feeds(emb: np.ndarray, pts: list[list[float]], labels: list[float], hw: tuple[int, int]) -> dict[str, np.ndarray]:
    return {
        "image_embeddings": emb,
        "point_coords": np.asarray([pts], np.float32),
        "point_labels": np.asarray([labels], np.float32),
        "mask_input": np.zeros((1, 1, S // 4, S // 4), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.asarray(hw, np.float32),
    }


def test_io_names_and_metadata(exported: dict[str, Path]) -> None:
    dec = ort.InferenceSession(str(exported["decoder"]))
    assert tuple(i.name for i in dec.get_inputs()) == DECODER_INPUT_NAMES
    assert tuple(o.name for o in dec.get_outputs()) == DECODER_OUTPUT_NAMES
    shapes = {i.name: i.shape for i in dec.get_inputs()}
    assert isinstance(shapes["point_coords"][1], str)  # dynamic number of points
    assert shapes["mask_input"] == [1, 1, S // 4, S // 4]
    enc = ort.InferenceSession(str(exported["encoder"]))
    assert [i.shape for i in enc.get_inputs()] == [[1, 3, S, S]]
    meta = load_metadata(exported["metadata"].parent)
    assert meta["image_size"] == S and meta["num_masks"] == 6 and meta["family"] == "semantic_sam"


def test_wrapper_decoder_equals_decode_clicks(model: SemanticSAM) -> None:
    """The traceable decoder reformulation gives ``decode_clicks``'s masks and IoUs for a single click."""
    img = _images()[0]
    pred = torch_sam_predictor(model, S)
    x = torch.from_numpy(pred.preprocess(img))
    h, w = img.shape[:2]
    nh, nw = preprocess_shape(h, w, S)
    click = torch.tensor([[210.0, 95.0]])
    with torch.no_grad():
        feats = model.encode_image(x, (nh, nw))
        ref = model.decode_clicks(feats, click)
        emb = SemanticSAMOnnxEncoder(model)(x)
        feeds = _feeds(emb.numpy(), click.tolist(), [1.0], (h, w))
        masks, iou, low = SemanticSAMOnnxDecoder(model, S)(*[torch.from_numpy(v) for v in feeds.values()])
    assert ref.masks is not None
    assert rel_err(low[0], ref.masks[0, 0]) < TOL
    assert rel_err(iou[0], ref.ious[0, 0]) < TOL
    up = model.upscale_masks(ref.masks[0, 0], feats)  # [6, nh, nw] at the resized size
    back = torch.nn.functional.interpolate(up[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    assert rel_err(masks[0], back) < TOL


@pytest.mark.parametrize(
    "prompt",
    [
        ([[60.0, 40.0]], [1.0, -1.0]),  # one click + SAM's padding point
        ([[60.0, 40.0], [150.0, 100.0], [20.0, 30.0]], [1.0, 1.0, 0.0]),  # two positives, one negative
        ([[60.0, 40.0], [10.0, 12.0], [200.0, 140.0]], [0.0, 2.0, 3.0]),  # a negative click and a box
    ],
)
def test_onnx_matches_pytorch(model: SemanticSAM, exported: dict[str, Path], prompt: tuple) -> None:
    enc = ort.InferenceSession(str(exported["encoder"]))
    dec = ort.InferenceSession(str(exported["decoder"]))
    torch_enc, torch_dec = SemanticSAMOnnxEncoder(model).eval(), SemanticSAMOnnxDecoder(model, S).eval()
    pts, labels = prompt
    if len(labels) > len(pts):
        pts = [*pts, [0.0, 0.0]]
    pre = torch_sam_predictor(model, S)
    for img in _images():
        x = pre.preprocess(img)
        emb = enc.run(None, {"image": x})[0]
        with torch.no_grad():
            ref_emb = torch_enc(torch.from_numpy(x))
        assert rel_err(emb, ref_emb) < TOL, "image_embeddings"
        feeds = _feeds(ref_emb.numpy(), pts, labels, img.shape[:2])
        outs = dec.run(None, feeds)
        with torch.no_grad():
            refs = torch_dec(*[torch.from_numpy(v) for v in feeds.values()])
        for name, o, r in zip(DECODER_OUTPUT_NAMES, outs, refs, strict=True):
            assert rel_err(o, r) < TOL, name
        assert outs[0].shape == (1, 6, *img.shape[:2])


@pytest.fixture(scope="module")
def grabcut() -> object:
    return open_dataset(require(DATA_DIR / "grabcut", "GrabCut sample"))[0]


def test_sam_adapter_on_export_gives_pytorch_ious(
    model: SemanticSAM, exported: dict[str, Path], grabcut: object
) -> None:
    """``SamOnnxPredictor`` (unchanged) on the exported files: same clicks and per-click IoUs as PyTorch."""
    onnx_pred = SamOnnxPredictor(exported["encoder"], exported["decoder"])
    assert onnx_pred.image_size == S and onnx_pred.mask_input_size == (S // 4, S // 4)
    a = evaluate_interactive(onnx_pred, grabcut, "ritm", max_clicks=4, limit=3)
    b = evaluate_interactive(torch_sam_predictor(model, S), grabcut, "ritm", max_clicks=4, limit=3)
    assert len(a.items) == 3
    for x, y in zip(a.items, b.items, strict=True):
        assert x.clicks == y.clicks
        # equal up to the few boundary pixels whose logit is within float error of 0
        np.testing.assert_allclose(x.ious, y.ious, rtol=0, atol=1e-3)


def test_int8_decoder_runs_close(exported: dict[str, Path], grabcut: object) -> None:
    """Dynamic int8 quantisation of the decoder: runs through the adapter; per-click IoUs move only a little."""
    q = quantize_decoder_int8(exported["decoder"], exported["decoder"].with_name("decoder_int8.onnx"))
    assert q.stat().st_size < exported["decoder"].stat().st_size
    a = evaluate_interactive(SamOnnxPredictor(exported["encoder"], exported["decoder"]), grabcut, max_clicks=3, limit=2)
    b = evaluate_interactive(SamOnnxPredictor(exported["encoder"], q), grabcut, max_clicks=3, limit=2)
    diff = [abs(u - v) for x, y in zip(a.items, b.items, strict=True) for u, v in zip(x.ious, y.ious, strict=True)]
    assert np.all(np.isfinite(diff)) and float(np.mean(diff)) < 0.05


def test_bad_arguments(model: SemanticSAM, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        export_semantic_sam_onnx(model, tmp_path, image_size=250)
    with pytest.raises(TypeError, match="SemanticSAM"):
        export_semantic_sam_onnx(torch.nn.Linear(2, 2), tmp_path)  # type: ignore[arg-type]


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pth = require(SSAM_PARITY_DIR / "ssam_small.pth", "Semantic-SAM parity model")
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "export",
            "onnx",
            str(pth),
            "--config",
            str(SSAM_PARITY_DIR / "ssam_small.yaml"),
            "--out",
            str(tmp_path),
            "--image-size",
            "128",
        ]
    )
    assert args.func(args) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"encoder.onnx", "decoder.onnx", "seem_onnx.json"}
    assert "decoder.onnx" in capsys.readouterr().out
    pred = SamOnnxPredictor.from_dir(tmp_path)
    img = _images()[1]
    pred.set_image(img)
    masks, scores, low = pred.predict(np.array([[100.0, 120.0]]), np.array([1]))
    assert masks.shape == (6, *img.shape[:2]) and scores.shape == (6,) and low.shape == (6, 32, 32)
