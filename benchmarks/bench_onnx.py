"""onnxruntime vs PyTorch for the exported models (``seem export onnx``): time per encode and per click.

Both sides run the same pipeline (``SamOnnxPredictor``'s preprocessing and prompt encoding): the ONNX files through
onnxruntime, and the export wrappers through PyTorch (``seem.export.onnx.torch_sam_predictor``), so the difference
is the runtime alone. Also times the int8 dynamically quantised decoder and reports how far its per-click IoU
prediction and masks move from fp32 on the same clicks.

``--model swint`` (default): the full-size Semantic-SAM Swin-T architecture with random weights (speed does not
depend on the values); ``--model small``: the Semantic-SAM parity model of ``../shared/parity/semantic_sam``;
``--model default``: the shipped default model (SEEM family); ``--model focalt``: full-size SEEM Focal-T v1 with
random weights. Prints numbers, not pass/fail::

    python benchmarks/bench_onnx.py [--model swint|small|default|focalt] [--image-size 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from seem.eval.sam_onnx import SamOnnxPredictor
from seem.export.onnx import export_semantic_sam_onnx, quantize_decoder_int8, torch_sam_predictor
from seem.export.seem_onnx import export_seem_onnx, torch_seem_sam_predictor
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM, semantic_sam_from_official
from seem.models.semantic_sam_config import swin_t

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_IMAGE = SHARED / "data" / "kodak24" / "images" / "kodim05.png"
CLICKS = np.array([[300.0, 200.0], [420.0, 260.0], [150.0, 330.0]], np.float32)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _model(which: str) -> Any:
    if which == "default":
        from seem.loading import load

        return load()
    if which == "focalt":
        from seem.models.config import seem_focalt
        from seem.models.seem_model import SEEMModel

        torch.manual_seed(0)
        return SEEMModel(seem_focalt("v1")).eval()
    if which == "small":
        d = SHARED / "parity" / "semantic_sam"
        return semantic_sam_from_official(d / "ssam_small.pth", config=d / "ssam_small.yaml")[0]
    torch.manual_seed(0)
    return SemanticSAM(swin_t()).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("swint", "small", "default", "focalt"), default="swint")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    img = np.asarray(Image.open(args.image).convert("RGB"))
    model = _model(args.model)
    s = args.image_size
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        seem_family = isinstance(model, SEEMModel)
        export = export_seem_onnx if seem_family else export_semantic_sam_onnx
        paths = export(model, tmp, image_size=s)
        print(
            f"model {args.model}, S={s}, image {args.image.name} {img.shape[1]}x{img.shape[0]}, "
            f"torch threads {torch.get_num_threads()}; export {time.perf_counter() - t0:.1f} s"
        )
        q = quantize_decoder_int8(paths["decoder"], Path(tmp) / "prompt_int8.onnx")
        preds = {
            "pytorch": torch_seem_sam_predictor(model, s) if seem_family else torch_sam_predictor(model, s),
            "onnxruntime": SamOnnxPredictor(paths["encoder"], paths["decoder"], threads=args.threads),
            "onnxruntime int8 dec": SamOnnxPredictor(paths["encoder"], q, threads=args.threads),
        }
        results = {}
        for name, p in preds.items():
            enc_ms = _median_ms(lambda p=p: p.set_image(img), args.repeats)
            click_ms = _median_ms(lambda p=p: p.predict(CLICKS[:1], np.array([1])), 3 * args.repeats)
            clicks3_ms = _median_ms(lambda p=p: p.predict(CLICKS, np.array([1, 0, 1])), 3 * args.repeats)
            results[name] = [p.predict(CLICKS[: i + 1], np.ones(i + 1, np.int64)) for i in range(3)]
            print(f"{name:22s} encode {enc_ms:8.1f} ms   1 click {click_ms:7.1f} ms   3 clicks {clicks3_ms:7.1f} ms")
    for name in ("onnxruntime", "onnxruntime int8 dec"):
        d_iou = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(results[name], results["pytorch"], strict=True))
        flips = max(float((a[0] != b[0]).mean()) for a, b in zip(results[name], results["pytorch"], strict=True))
        print(
            f"{name:22s} vs pytorch: max |d iou_prediction| {d_iou:.2e}, max fraction of mask pixels flipped "
            f"{flips:.2e}"
        )


if __name__ == "__main__":
    main()
