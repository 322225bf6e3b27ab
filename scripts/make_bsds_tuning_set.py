"""Build the BSDS500-val click tuning set of MODELS.md: a GrabCut-style folder (``images/``, ``masks/``) of segments.

For each of the 50 BSDS500 val images, the coarsest annotation (fewest segments; ties by annotator index) gives its
one or two largest segments covering 5–60 % of the image, each an object: ``masks/<id>_<segment>.png`` (0 / 255) and
``images/<id>_<segment>.jpg`` (a symbolic link to the shared image: the data stays in ``../shared``).

    python scripts/make_bsds_tuning_set.py OUT [--bsds ../shared/data/bsds500]
    seem eval interactive --data OUT --out runs/eval/bsds_tune
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created; must not exist)")
    ap.add_argument("--bsds", type=Path, default=Path("../shared/data/bsds500"), help="BSDS500 folder with index.json")
    args = ap.parse_args()
    index = args.bsds / "index.json"
    if not index.is_file():
        raise SystemExit(f"{index} not found (pass --bsds: the shared BSDS500 folder)")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder")
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    n = 0
    for item in json.loads(index.read_text())["items"]:
        if item["split"] != "val":
            continue
        coarsest = min(item["annotators"], key=lambda a: (a["n_segments"], a["annotator"]))
        seg = np.array(Image.open(args.bsds / coarsest["mask"]))
        ids, counts = np.unique(seg, return_counts=True)
        sized = [(int(c), int(i)) for i, c in zip(ids, counts, strict=True) if 0.05 * seg.size <= c <= 0.6 * seg.size]
        for _, i in sorted(sized, reverse=True)[:2]:
            name = f"{item['id']}_{i}"
            (args.out / "images" / f"{name}.jpg").symlink_to((args.bsds / item["image"]).resolve())
            Image.fromarray(((seg == i) * 255).astype(np.uint8)).save(args.out / "masks" / f"{name}.png")
            n += 1
    print(f"wrote {n} objects to {args.out}")


if __name__ == "__main__":
    main()
