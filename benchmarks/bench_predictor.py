"""Per-click latency of ``Segmenter.segment`` on a cached image vs. running the whole model again per click.

The official SEEM demo runs the image encoder and the decoder on every click; ``Segmenter`` encodes the image
once (``set_image``) and each click runs only the prompt rasterisation, the decoder and the post-processing.
This measures both on the full-size SEEM Focal-T (random weights: speed does not depend on the values), one real
image (Kodak kodim05, short side resized to 512), in fp32 and under bf16 autocast, with 1 and 2 threads:

- ``click``: ``segment(PromptSet(points=...))`` with a label from a 10-class vocabulary (``--coco`` for the
  133 COCO classes; the label costs the same), a new click position every call, the image's features cached;
- ``click, 2nd round``: an ``InteractiveSession`` correction (negative click + the previous mask as memory);
- ``click, 5th round``: the fifth click of such a session (clicks alternating negative / positive): the default
  model's click refiner reads a prompt's first 3 clicks at half resolution and later ones at full resolution;
- ``full re-run``: ``set_image`` + ``segment`` (what the demo pays per click);
- a breakdown of ``click`` through the public pieces it is made of: prompt validation + rasterisation,
  ``SEEMModel.decode`` (the decoder), the upsampling of the chosen stride-4 logits to the original size
  (bilinear to the padded canvas, crop, bilinear to 500×500, ``sigmoid > 0.5``), the label (softmax).

Precisions: ``fp32`` (``Segmenter()``), ``bf16`` (``Segmenter(precision="bf16")``: the decoder under bf16
autocast, the encoder in fp32) and ``bf16-all`` (an app that wraps everything, the encoder too, in one
``torch.autocast`` region: faster encoding, masks less close to fp32's; see ``Segmenter``'s ``precision``).

Times are medians (wall clock, and process CPU time summed over threads: less sensitive to other processes on a
shared machine). OpenMP runs as the environment sets it up (``OMP_WAIT_POLICY`` unset = the default a user gets:
threads wait actively for a short while; ``PASSIVE`` makes two threads much slower on the decoder's many small
operations, but spares a machine that trains at the same time). Goals printed with each run: a click ≤ 30 ms
and ≥ 10× faster than a full re-run.

    python benchmarks/bench_predictor.py [--threads 1,2] [--precision fp32,bf16,bf16-all] [--clicks 30] [--reruns 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from seem.io import read_image, resize_image
from seem.models.config import seem_focalt
from seem.models.postprocess import crop_and_resize, upsample_to_padded
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import DecoderInputs, SpatialPrompts
from seem.predictor import Segmenter
from seem.prompts import Points, PromptSet, rasterize
from seem.session import InteractiveSession

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24" / "images" / "kodim05.png"
SMALL_VOCAB = ["person", "bicycle", "motorcycle", "car", "tree", "building", "sky", "grass", "road", "wall"]
GOAL_MS = 30.0
GOAL_SPEEDUP = 10.0


def timed(fn: Callable[[int], object], n: int, warmup: int = 2) -> tuple[float, float]:
    """(median wall ms, median process-CPU ms) of ``fn(i)`` over ``n`` calls after ``warmup`` calls."""
    for i in range(warmup):
        fn(-1 - i)
    wall, cpu = [], []
    for i in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def clicks(image: np.ndarray, n: int = 64) -> list[tuple[float, float]]:
    """``n`` click positions spread over the image (deterministic)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    return [
        (float(x), float(y)) for x, y in zip(rng.uniform(0.1, 0.9, n) * w, rng.uniform(0.1, 0.9, n) * h, strict=True)
    ]


def measure(
    seg: Segmenter, image: np.ndarray, ctx: Callable[[], AbstractContextManager], n_clicks: int, n_reruns: int
) -> dict[str, tuple[float, float]]:
    pos = clicks(image)

    def prompt(i: int) -> PromptSet:
        x, y = pos[i % len(pos)]
        return PromptSet(points=Points([[x, y]]))

    rows: dict[str, tuple[float, float]] = {}
    with ctx():
        seg.set_image(image)
        rows["click"] = timed(lambda i: seg.segment(prompt(i)), n_clicks)

        def later_round(i: int, k: int) -> tuple[float, float]:
            """(wall s, CPU s) of round ``k`` of an ``InteractiveSession``: a positive click, then clicks
            alternating negative / positive, each a round with the previous mask as memory."""
            s = InteractiveSession(seg)
            for j in range(k):
                x, y = pos[(i + 7 * j) % len(pos)]
                t, c = time.perf_counter(), time.process_time()
                s.click(x, y, positive=j % 2 == 0)
            return time.perf_counter() - t, time.process_time() - c

        for k, label in ((2, "click, 2nd round (memory)"), (5, "click, 5th round (memory)")):
            ts = [later_round(i, k) for i in range(max(5, n_clicks // 3) + 1)][1:]
            rows[label] = (statistics.median(t for t, _ in ts) * 1000, statistics.median(c for _, c in ts) * 1000)

        # the pieces of one click, through the public API
        g = seg.geometry
        vocab = seg.class_embeddings(seg.vocabulary)
        rows["  prompt → canvas"] = timed(lambda i: rasterize(prompt(i), g), n_clicks)
        raster = rasterize(prompt(0), g)
        spatial = SpatialPrompts(torch.from_numpy(raster.pos)[None], torch.from_numpy(raster.neg)[None])

        decoder_ctx = torch.autocast("cpu", dtype=torch.bfloat16) if seg.precision == "bf16" else nullcontext()

        def decode(i: int) -> object:
            inputs = DecoderInputs(
                seg.features, class_embeddings=vocab, logit_scale=seg.model.logit_scale, object_queries=False
            )
            inputs.spatial = spatial
            if seg.model.refiner is not None and seg.refine_clicks:  # a refined click exits the decoder early
                inputs.layers = seg.model.config.inference.click_decoder_layers
            with torch.no_grad(), decoder_ctx:
                return seg.model.decode(inputs)

        rows["  decoder"] = timed(decode, n_clicks)
        out = decode(0)
        assert out.spatial_selection is not None and out.final.spatial is not None
        logits4 = out.spatial_selection.prev_mask[:1].float()

        def to_original(i: int) -> np.ndarray:
            up = upsample_to_padded(logits4, g.padded_size, mode="bilinear")
            full = crop_and_resize(up, g.resized_size, g.original_size, mode="bilinear", antialias=False)
            return (full.sigmoid() > 0.5).numpy()

        rows["  upsample to original size"] = timed(to_original, n_clicks)
        if seg.model.refiner is not None and seg.refine_clicks:  # the click refiner (default model)
            x = torch.from_numpy(resize_image(image, g.resized_size)).permute(2, 0, 1).contiguous()
            canvas = seg.model.preprocess(x)[0]

            def refine(i: int) -> object:
                uv = torch.from_numpy(g.canvas_pixels(np.array([pos[i % len(pos)]], np.float64)))
                with torch.no_grad():
                    return seg.model.refine_clicks(
                        canvas, logits4[0:1], uv, torch.ones(1, dtype=torch.long), None, seg.features.mask_features
                    )

            rows["  click refiner"] = timed(refine, n_clicks)
        cls = out.final.spatial.class_logits
        assert cls is not None
        rows["  label"] = timed(lambda i: int(torch.softmax(cls[0, 0].float(), -1).argmax()), n_clicks)

        def rerun(i: int) -> None:
            seg.set_image(image)
            seg.segment(prompt(i))

        rows["full re-run (encoder + click)"] = timed(rerun, n_reruns, warmup=1)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="any RGB photo (default: Kodak kodim05)")
    ap.add_argument("--threads", default="1,2", help="thread counts to measure, e.g. 1,2 (default)")
    ap.add_argument(
        "--precision", default="fp32,bf16,bf16-all", help="any of fp32, bf16, bf16-all (default: all three)"
    )
    ap.add_argument("--clicks", type=int, default=30, help="clicks per measurement (default 30)")
    ap.add_argument("--reruns", type=int, default=3, help="full re-runs per measurement (default 3)")
    ap.add_argument("--coco", action="store_true", help="label with the 133 COCO classes (slow first encoding)")
    ap.add_argument(
        "--model",
        default=None,
        help="measure this model instead (e.g. 'default': the shipped default model, labelled with its own "
        "vocabulary); default: full-size SEEM Focal-T with random weights",
    )
    args = ap.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"image not found: {args.image} (pass --image PATH)")
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    torch.manual_seed(0)
    image = read_image(args.image)
    if args.model is None:
        model = SEEMModel(seem_focalt("v1")).eval()
        name, vocab = "SEEM Focal-T (random weights)", None if args.coco else SMALL_VOCAB
    else:
        from seem.loading import load

        model = load(None if args.model == "default" else args.model)
        name, vocab = f"{model.config.name} ({args.model})", None
    unknown = set(precisions) - {"fp32", "bf16", "bf16-all"}
    if unknown:
        raise SystemExit(f"unknown --precision {', '.join(sorted(unknown))} (fp32, bf16, bf16-all)")
    seg = Segmenter(model, vocabulary=vocab, cache_dir=False, progress=False)
    seg_bf16 = Segmenter(model, vocabulary=vocab, cache_dir=False, progress=False, precision="bf16")
    for s in (seg, seg_bf16):
        s.set_image(image)
        s.segment(PromptSet(points=Points([[10, 10]])))  # encodes the vocabulary once
    g = seg.geometry
    print(
        f"{name}, {args.image.name} {g.original_size[1]}×{g.original_size[0]} → "
        f"{g.resized_size[1]}×{g.resized_size[0]} (padded {g.padded_size[1]}×{g.padded_size[0]}), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, torch {torch.__version__}"
    )
    configs: list[tuple[str, Segmenter, Callable[[], AbstractContextManager]]] = []
    if "fp32" in precisions:
        configs.append(("fp32", seg, nullcontext))
    if "bf16" in precisions:
        configs.append(("bf16 (decoder)", seg_bf16, nullcontext))
    if "bf16-all" in precisions:
        configs.append(("bf16-all (app autocast)", seg, lambda: torch.autocast("cpu", dtype=torch.bfloat16)))
    results = []
    for n in threads:
        torch.set_num_threads(n)
        for name, s, ctx in configs:
            rows = measure(s, image, ctx, args.clicks, args.reruns)
            results.append((n, name, rows))
            print(f"\n{name}, {n} thread(s)           wall      CPU (all threads)")
            for stage, (wall, cpu) in rows.items():
                print(f"  {stage:<34} {wall:>8.1f} ms {cpu:>8.1f} ms")
            click, rerun = rows["click"][0], rows["full re-run (encoder + click)"][0]
            pieces = ("  prompt → canvas", "  upsample to original size", "  label")
            overhead = sum(rows[k][1] for k in pieces)
            speed = "meets" if rerun / click >= GOAL_SPEEDUP else "misses"
            print(
                f"  → click {click:.1f} ms ({'meets' if click <= GOAL_MS else 'misses'} ≤ {GOAL_MS:.0f} ms), "
                f"{rerun / click:.0f}× faster than a full re-run ({speed} ≥ {GOAL_SPEEDUP:.0f}×); "
                f"predictor-side pieces (canvas + upsampling + label): {overhead:.1f} ms CPU"
            )
    print("\nsummary (median wall ms per click / full re-run)")
    for n, name, rows in results:
        print(
            f"  {n} thread(s), {name:<24} click {rows['click'][0]:7.1f}   2nd round "
            f"{rows['click, 2nd round (memory)'][0]:7.1f}   5th round {rows['click, 5th round (memory)'][0]:7.1f}   "
            f"full re-run {rows['full re-run (encoder + click)'][0]:8.1f}"
        )


if __name__ == "__main__":
    main()
