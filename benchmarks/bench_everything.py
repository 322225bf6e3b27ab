"""Segment-everything speed of the full-size Semantic-SAM Swin-T layout on this machine (random weights).

Runs ``AutomaticMaskGenerator`` (default settings unless told otherwise) on one real image, resized by the official
rule (short side 640), with a 32×32 grid and all six levels (6,144 candidate masks), and prints the time of each stage:
image encoding, decoding (decoder + stride-4 mask logits of the requested levels), post-processing (IoU filter,
chunked upscaling + stability + boxes, NMS, final masks at the original size, records), the total and masks/s.

Random weights make the IoU head's scores and the masks meaningless, so how many masks survive the IoU filter (and
therefore how much upscaling happens) depends on the seed. ``--keep-all`` sets ``pred_iou_thresh`` to -inf and the
stability threshold to 0 so that every candidate mask is upscaled: the worst case of post-processing.

The CPU time (all threads) is printed next to the wall time: on a shared machine the wall time also measures the
other processes' load.

Usage: ``python benchmarks/bench_everything.py [--image PATH] [--points-per-side 32] [--bf16] [--keep-all]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from seem.automatic import AutomaticMaskGenerator, GridFrame, mask_stats, upscale_logits
from seem.granularity import load_rgb, resize_short_side
from seem.models.semantic_sam import SemanticSAM
from seem.models.semantic_sam_config import swin_t

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24" / "images" / "kodim05.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="any RGB photo (default: Kodak kodim05)")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--levels", default="1,2,3,4,5,6", help="comma-separated granularity levels")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--bf16", action="store_true", help="run the decoder under bf16 autocast")
    ap.add_argument("--keep-all", action="store_true", help="no IoU / stability filtering: upscale every mask")
    ap.add_argument("--upscale-chunk", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--synthetic-masks",
        type=int,
        default=1200,
        help="also time the chunked stability/box stage on this many object-like masks (random disks); 0 skips",
    )
    args = ap.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"image not found: {args.image} (pass --image PATH)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = SemanticSAM(swin_t()).eval()
    levels = tuple(int(v) for v in args.levels.split(","))
    kw = {"pred_iou_thresh": float("-inf"), "stability_score_thresh": 0.0} if args.keep_all else {}
    gen = AutomaticMaskGenerator(
        model,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        levels=levels,
        upscale_chunk=args.upscale_chunk,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
        **kw,
    )
    rgb = load_rgb(args.image)
    h, w = resize_short_side(rgb).shape[:2]
    n_cand = args.points_per_side**2 * len(levels)
    print(
        f"Semantic-SAM Swin-T (random weights), {args.image.name} {rgb.shape[1]}x{rgb.shape[0]} -> model input "
        f"{w}x{h}, grid {args.points_per_side}x{args.points_per_side}, levels {levels} ({n_cand} candidate masks), "
        f"{args.threads} threads, decoder {'bf16 autocast' if args.bf16 else 'fp32'}"
        + (", keep-all" if args.keep_all else "")
    )
    for r in range(args.repeats):
        trace: list[dict] = []
        t, cpu = time.perf_counter(), time.process_time()
        records = gen.generate(rgb, trace=trace)
        total, cpu = time.perf_counter() - t, time.process_time() - cpu
        tm = gen.timings
        upscaled = sum(sum(e["keep"]) for e in trace if e["stage"] == "pred_iou")
        after_stab = sum(sum(e["keep"]) for e in trace if e["stage"] == "stability")
        print(
            f"run {r + 1}: encode {tm['encode']:.2f}s  decode {tm['decode']:.2f}s  "
            f"postprocess {tm['postprocess']:.2f}s  "
            f"total {total:.2f}s (CPU time {cpu:.1f}s)  | {n_cand / total:.0f} candidate masks/s, {upscaled} upscaled, "
            f"{after_stab} after stability, {len(records)} records"
        )
    if args.synthetic_masks:
        synthetic_postprocess(args.synthetic_masks, args.upscale_chunk)


def synthetic_postprocess(n: int, chunk: int) -> None:
    """Random weights give noise masks; real ones are objects. Time the per-mask measuring stage (stability + box at
    640x640, chunked) on ``n`` disk-shaped stride-4 logit maps, with the cell method and with plain upscaling, and
    the final upscaling of 200 kept masks."""
    g = torch.Generator().manual_seed(0)
    h4 = w4 = 160
    yy, xx = torch.meshgrid(torch.arange(h4, dtype=torch.float32), torch.arange(w4, dtype=torch.float32), indexing="ij")
    c = torch.rand(n, 2, 1, 1, generator=g) * h4
    r = torch.rand(n, 1, 1, generator=g) * 50 + 5
    low = (r - ((xx - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2).sqrt()) * 4  # logits ~ +-200, like trained models
    frame = GridFrame(input_size=(640, 640), padded_size=(640, 640))
    for fast in (True, False):
        t = time.perf_counter()
        for s in range(0, n, chunk):
            mask_stats(low[s : s + chunk], frame, 1.0, fast=fast)
        dt = time.perf_counter() - t
        name = "cell method" if fast else "plain upscaling"
        print(f"stability + boxes of {n} object-like masks at 640x640 ({name}, chunks of {chunk}): {dt:.2f}s")
    t = time.perf_counter()
    for s in range(0, 200, chunk):
        _ = upscale_logits(low[s : min(s + chunk, 200)], frame) > 0
    print(f"final upscaling of 200 kept masks to 640x640: {time.perf_counter() - t:.2f}s")


if __name__ == "__main__":
    main()
