"""Video tracking quality (DAVIS J&F) and speed of ``seem.video.VideoTracker`` on the shared clips.

- DAVIS-2016 ``blackswan`` and ``breakdance`` (frames 0..29 of ``../shared/data/davis2016``): semi-supervised, the
  ground-truth mask of frame 0 given, J&F over frames 1..28 (DAVIS rules: first and last scored frame dropped),
  for each ``--modes`` reference rule (previous frame / prompt frame / both) and optionally ``--refine``;
- Cutie's ``video_judo`` clip (16 frames): four objects entering at frames 0, 5, 8, 13 from their masks
  (``extra_prompts``); it has no ground truth after an object's first frame, so only speed and the mask areas
  are reported.

Default model: the small SEEM parity model of ``../shared/parity/seem`` (random weights: the J&F numbers only
show that the measurement runs; pass a real checkpoint, e.g. ``--model seem_focalt_v1.pt``, for numbers that mean
something). The same J&F is available per video with ``seem video ... --gt DIR``.

    python benchmarks/bench_video.py [--model PATH [--config YAML]] [--size 512] [--frames 30]
                                     [--modes previous,first,both] [--refine] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from seem.io import read_mask
from seem.predictor import Segmenter, resolve_model
from seem.prompts import MaskPrompt, PromptSet
from seem.video import FrameFolder, JFAccumulator, VideoTracker, read_gt_labels

SHARED = Path(__file__).resolve().parents[2] / "shared"
DAVIS = SHARED / "data" / "davis2016"
JUDO = SHARED / "data" / "video_judo"
PARITY = SHARED / "parity" / "seem"
CLIPS = ("blackswan", "breakdance")


def davis_clip(tracker: VideoTracker, seq: str, frames: int) -> tuple[dict, float, int]:
    first = read_mask(DAVIS / "Annotations" / seq / "00000.png")
    jf = JFAccumulator(DAVIS / "Annotations" / seq)
    t = time.perf_counter()
    n = 0
    src = FrameFolder(DAVIS / "JPEGImages" / seq)
    for r in tracker.track(src, {1: PromptSet(masks=MaskPrompt(first))}, end_frame=frames, progress=False):
        jf.add(r)
        n += 1
    return jf.summary(), (time.perf_counter() - t) / max(1, n - 1), n


def judo(tracker: VideoTracker) -> tuple[dict[str, list[int]], float, int]:
    masks: dict[int, dict[int, PromptSet]] = {}
    for f, k in ((0, 1), (5, 2), (8, 3), (13, 4)):
        lab = read_gt_labels(JUDO / "Annotations" / f"{f:05d}.png")
        if lab.shape[1] == 853:  # the README: frame 5's mask is one column narrower than the frames
            lab = np.pad(lab, ((0, 0), (0, 1)))
        masks[f] = {k: PromptSet(masks=MaskPrompt(lab == k))}
    areas: dict[str, list[int]] = {}
    t = time.perf_counter()
    n = 0
    src = FrameFolder(JUDO / "JPEGImages")
    for r in tracker.track(src, masks[0], extra_prompts={f: p for f, p in masks.items() if f}, progress=False):
        for k, s in r.segments.items():
            areas.setdefault(str(k), []).append(s.area)
        n += 1
    return areas, (time.perf_counter() - t) / max(1, n - 1), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SEEM checkpoint / directory / name (default: the parity model)")
    ap.add_argument("--config", default=None, help="official YAML for --model when needed")
    ap.add_argument("--size", type=int, default=512, help="model input short side (default 512)")
    ap.add_argument("--frames", type=int, default=30, help="frames per DAVIS clip, at most 30 (default 30)")
    ap.add_argument("--modes", default="previous,first,both", help="reference rules to compare")
    ap.add_argument("--refine", action="store_true", help="also run each mode with refine=True")
    ap.add_argument("--no-judo", action="store_true", help="skip the judo clip")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not DAVIS.is_dir():
        raise SystemExit(f"DAVIS data not found at {DAVIS}")
    if args.model is None:
        model = resolve_model(PARITY / "seem_v1_small.pt", config=PARITY / "seem_v1_small.yaml")
        print("model: the small SEEM parity model (RANDOM weights: the J&F values below are meaningless)")
    else:
        model = resolve_model(args.model, config=args.config)
        print(f"model: {args.model}")
    frames = max(3, min(30, args.frames))
    print(
        f"short side {args.size}, {args.threads} thread(s), DAVIS-2016 clips {', '.join(CLIPS)}: frames 0..{frames - 1}"
    )
    settings = [(m.strip(), False) for m in args.modes.split(",") if m.strip()]
    if args.refine:
        settings += [(m, True) for m, _ in list(settings)]
    print(f"{'clip':<12} {'reference':<10} {'refine':<7} {'J':>7} {'F':>7} {'J&F':>7} {'s/frame':>8}")
    for mode, refine in settings:
        jfs = []
        for seq in CLIPS:
            seg = Segmenter(model, short_side=args.size, cache_dir=False, progress=False)
            tracker = VideoTracker(seg, reference=mode, refine=refine)  # type: ignore[arg-type]
            s, per_frame, _ = davis_clip(tracker, seq, frames)
            jfs.append(s["JF"])
            o = s["objects"]["1"]
            print(
                f"{seq:<12} {mode:<10} {refine!s:<7} {o['J']['M']:7.4f} {o['F']['M']:7.4f} {o['JF']:7.4f} "
                f"{per_frame:8.2f}"
            )
        print(f"{'mean':<12} {mode:<10} {refine!s:<7} {'':>7} {'':>7} {float(np.mean(jfs)):7.4f}")
    if not args.no_judo and JUDO.is_dir():
        seg = Segmenter(model, short_side=args.size, cache_dir=False, progress=False)
        areas, per_frame, n = judo(VideoTracker(seg))
        print(f"\njudo: {n} frames, {per_frame:.2f} s/frame (4 objects entering at frames 0, 5, 8, 13)")
        for k, a in areas.items():
            print(f"  object {k}: on {len(a)} frames, areas {a}")


if __name__ == "__main__":
    main()
