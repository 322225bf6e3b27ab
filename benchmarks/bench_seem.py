"""Speed of the full-size SEEM Focal-T model on this machine (random weights; speed does not depend on values).

Measures, on one real image resized to 512 short side:
- image encoding (backbone + pixel decoder) and decoder time per click prompt, in fp32 and under bf16 autocast;
- the FLOPs of each (``torch.utils.flop_counter``) and the fraction of this machine's matmul throughput they reach,
  with the throughput measured in the same run (fp32 and bf16 ``torch.mm``).

Prints ratios, not pass/fail: run ``python benchmarks/bench_seem.py [--image PATH] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from seem.models.config import seem_focalt
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import DecoderInputs, SpatialPrompts

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
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_throughput(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n×n @ n×n`` matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = timeit(lambda: a @ b, repeats)
    return 2 * n**3 / t


def measure(model: SEEMModel, image: torch.Tensor, autocast: bool, repeats: int) -> tuple[float, float, int, int]:
    """(encode seconds, decode-one-click seconds, encode FLOPs, decode FLOPs)."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    h, w = image.shape[-2:]
    with torch.inference_mode(), ctx:
        feats = model.encode_image(image)
        hp, wp = feats.padded_size
        click = torch.zeros(1, hp, wp, dtype=torch.bool)
        click[0, h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2] = True
        inputs = DecoderInputs(features=feats, spatial=SpatialPrompts(pos_masks=click))

        def encode() -> object:
            return model.encode_image(image)

        def decode() -> object:
            return model.decode(inputs)

        return timeit(encode, repeats), timeit(decode, repeats * 3), flops(encode), flops(decode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="any RGB photo (default: Kodak kodim05)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"image not found: {args.image} (pass --image PATH)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    image = load_image(args.image)
    model = SEEMModel(seem_focalt("v1")).eval()
    h, w = image.shape[-2:]
    print(f"SEEM Focal-T (random weights), image {args.image.name} → {h}x{w}, {args.threads} threads")

    peak = {torch.float32: matmul_throughput(torch.float32), torch.bfloat16: matmul_throughput(torch.bfloat16)}
    print(f"matmul throughput: fp32 {peak[torch.float32] / 1e9:.1f} GFLOP/s, bf16 {peak[torch.bfloat16] / 1e9:.1f}")

    rows = []
    for name, dtype, autocast in (("fp32", torch.float32, False), ("bf16 autocast", torch.bfloat16, True)):
        t_enc, t_dec, f_enc, f_dec = measure(model, image, autocast, args.repeats)
        for part, t, f in (("image encoding", t_enc, f_enc), ("decoder / click", t_dec, f_dec)):
            rows.append((name, part, t, f, f / t / peak[dtype]))

    print(f"{'precision':<14} {'stage':<16} {'time':>9} {'GFLOP':>8} {'of matmul peak':>15}")
    for name, part, t, f, util in rows:
        print(f"{name:<14} {part:<16} {t * 1000:>7.1f}ms {f / 1e9:>8.2f} {util:>14.1%}")
    fp32 = {r[1]: r[2] for r in rows if r[0] == "fp32"}
    bf16 = {r[1]: r[2] for r in rows if r[0] != "fp32"}
    for part in fp32:
        print(f"bf16 speed-up, {part}: {fp32[part] / bf16[part]:.2f}x")


if __name__ == "__main__":
    main()
