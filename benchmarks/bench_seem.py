"""Speed of the full-size SEEM Focal-T model on this machine (random weights; speed does not depend on values).

Measures, on one real image resized to 512 short side, in fp32 and under bf16 autocast:

- image encoding (backbone + pixel decoder), skipped with ``--decoder-only``;
- the decoder per click prompt:
  ``first click`` (a fresh ``ImageFeatures``: includes building the per-image decoder cache, i.e. every
  layer's cross-attention keys / values), ``click`` (cache warm: every later click on the same image),
  ``3-round clicks`` (positive click; negative click with memory; positive click with memory; per call),
  ``click, exact`` (the official order of operations with all query groups, as before the fast path);
- the prompt-free decoder call (panoptic / semantic / instance), including the final object-query masks;
- the FLOPs of each (``torch.utils.flop_counter``) and the fraction of this machine's matmul throughput they reach,
  with the throughput measured in the same run (fp32 and bf16 ``torch.mm``).

Times are medians of ``--repeats`` runs (the first-click and click rows use 3× as many), wall clock and process CPU
time (the sum over threads; less sensitive to other processes on a shared machine). Prints numbers, not pass/fail:
``python benchmarks/bench_seem.py [--image PATH] [--repeats N] [--decoder-only] [--precision fp32|bf16|both]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from seem.models.config import seem_focalt
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import DecoderInputs, ImageFeatures, SpatialPrompts

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24" / "images" / "kodim05.png"


def load_image(path: Path, short_side: int = 512) -> torch.Tensor:
    """uint8 ``[3, H, W]`` with the short side resized (bicubic) to ``short_side``."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = short_side / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds."""
    return timeit_cpu(fn, repeats, warmup)[0]


def timeit_cpu(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds); CPU time is less sensitive to other processes."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_throughput(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n×n @ n×n`` matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = timeit(lambda: a @ b, repeats)
    return 2 * n**3 / t


def click_mask(hp: int, wp: int, y: int, x: int) -> torch.Tensor:
    """bool ``[1, Hp, Wp]`` with a 3×3 click centred at pixel ``(y, x)``."""
    m = torch.zeros(1, hp, wp, dtype=torch.bool)
    m[0, y - 1 : y + 2, x - 1 : x + 2] = True
    return m


def fresh(feats: ImageFeatures) -> ImageFeatures:
    """The same feature tensors with an empty decoder cache (as for a newly encoded image)."""
    return ImageFeatures(feats.multi_scale, feats.mask_features, feats.padded_size)


def measure(
    model: SEEMModel, image: torch.Tensor, ctx: Callable[[], AbstractContextManager], repeats: int, decoder_only: bool
) -> list[tuple[str, float, float, int]]:
    """``[(stage, wall seconds, CPU seconds, FLOPs)]`` for one precision (per decoder call)."""
    h, w = image.shape[-2:]
    rows: list[tuple[str, float, float, int]] = []
    with torch.inference_mode(), ctx():
        feats = model.encode_image(image)
        hp, wp = feats.padded_size
        pos1 = click_mask(hp, wp, h // 2, w // 2)
        neg2 = click_mask(hp, wp, h // 4, w // 4)
        pos3 = pos1 | click_mask(hp, wp, h // 2 + 20, w // 2 - 20)

        def encode() -> object:
            return model.encode_image(image)

        def first_click() -> object:
            return model.decode(DecoderInputs(features=fresh(feats), spatial=SpatialPrompts(pos_masks=pos1)))

        def click() -> object:
            return model.decode(DecoderInputs(features=feats, spatial=SpatialPrompts(pos_masks=pos1)))

        def three_rounds() -> object:
            out = model.decode(DecoderInputs(features=feats, spatial=SpatialPrompts(pos1, torch.zeros_like(pos1))))
            for pos, neg in ((pos1, neg2), (pos3, neg2)):
                assert out.spatial_selection is not None
                out = model.decode(
                    DecoderInputs(
                        features=feats, spatial=SpatialPrompts(pos, neg), prev_mask=out.spatial_selection.prev_mask
                    )
                )
            return out

        def click_exact() -> object:
            inputs = DecoderInputs(
                features=feats, spatial=SpatialPrompts(pos_masks=pos1), exact=True, object_queries=True
            )
            return model.decode(inputs)

        def panoptic() -> object:
            out = model.decode(DecoderInputs(features=feats))
            assert out.final.object is not None
            return out.final.object.mask_logits  # the final stride-4 masks post-processing reads

        stages: list[tuple[str, Callable[[], object], int, int]] = []
        if not decoder_only:
            stages.append(("image encoding", encode, repeats, 1))
        stages += [
            ("first click", first_click, repeats * 3, 1),
            ("click", click, repeats * 3, 1),
            ("3-round clicks", three_rounds, repeats, 3),
            ("click, exact", click_exact, repeats, 1),
            ("prompt-free", panoptic, repeats, 1),
        ]
        for name, fn, n, calls in stages:
            wall, cpu = timeit_cpu(fn, n)
            rows.append((name, wall / calls, cpu / calls, flops(fn) // calls))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="any RGB photo (default: Kodak kodim05)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--decoder-only", action="store_true", help="skip timing the image encoder")
    ap.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    args = ap.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"image not found: {args.image} (pass --image PATH)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    image = load_image(args.image)
    model = SEEMModel(seem_focalt("v1")).eval()
    h, w = image.shape[-2:]
    print(f"SEEM Focal-T (random weights), image {args.image.name} → {h}x{w}, {args.threads} threads")

    precisions: list[tuple[str, torch.dtype, Callable[[], AbstractContextManager]]] = []
    if args.precision in ("fp32", "both"):
        precisions.append(("fp32", torch.float32, nullcontext))
    if args.precision in ("bf16", "both"):
        precisions.append(("bf16 autocast", torch.bfloat16, lambda: torch.autocast("cpu", dtype=torch.bfloat16)))
    peak = {dtype: matmul_throughput(dtype) for _, dtype, _ in precisions}
    print("matmul throughput: " + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peak.items()))

    rows = []
    for name, dtype, ctx in precisions:
        for stage, t, cpu, f in measure(model, image, ctx, args.repeats, args.decoder_only):
            rows.append((name, stage, t, cpu, f, f / t / peak[dtype]))

    print(f"{'precision':<14} {'stage':<16} {'time':>9} {'CPU time':>10} {'GFLOP':>8} {'of matmul peak':>15}")
    for name, stage, t, cpu, f, util in rows:
        print(f"{name:<14} {stage:<16} {t * 1000:>7.1f}ms {cpu * 1000:>8.1f}ms {f / 1e9:>8.2f} {util:>14.1%}")
    if len(precisions) == 2:
        fp32 = {r[1]: r[2] for r in rows if r[0] == "fp32"}
        bf16 = {r[1]: r[2] for r in rows if r[0] != "fp32"}
        for stage in fp32:
            print(f"bf16 speed-up, {stage}: {fp32[stage] / bf16[stage]:.2f}x")


if __name__ == "__main__":
    main()
