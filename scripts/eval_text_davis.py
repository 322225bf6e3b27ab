"""Referring text on held-out DAVIS-2016 frames, and what a phrase far outside the vocabulary scores.

    python scripts/eval_text_davis.py [MODEL] --out runs/eval/default/text_davis

Each DAVIS-2016 sequence has one annotated object; its class in the default model's vocabulary is fixed below
(``SEQUENCE_CLASS``). For every frame of ``../shared/data/davis2016`` (never trained on) the model segments the
phrase "<class>" (``Segmenter.segment_text``) and we report the mask IoU with the annotation (mean, and the share of
frames with IoU ≥ 0.5), plus the grounding score of the right phrase against phrases the model never saw in training
(``OUT_OF_VOCABULARY``). Writes ``text_davis.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

SEQUENCE_CLASS = {
    "blackswan": "bird",
    "breakdance": "person",
    "car-roundabout": "car",
    "cows": "cow",
    "dog": "dog",
    "drift-straight": "car",
    "horsejump-high": "horse",
    "libby": "dog",
    "paragliding-launch": "person",
    "scooter-black": "motorcycle",
}
OUT_OF_VOCABULARY = ["a violin", "a volcano", "a submarine", "a chandelier", "a lobster"]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def main() -> None:
    from seem.predictor import Segmenter, resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--data", default=os.environ.get("SEEM_DATA_DIR", "../shared/data") + "/davis2016")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    root = Path(args.data)
    items = json.loads((root / "index.json").read_text())["items"]
    seg = Segmenter(resolve_model(args.model), progress=False)
    rows = []
    for it in items:
        cls = SEQUENCE_CLASS[it["sequence"]]
        image = np.array(Image.open(root / it["image"]).convert("RGB"))
        gt = np.array(Image.open(root / it["mask"])) > 0
        seg.set_image(image)
        right = seg.segment_text(cls, labels=False)[0]
        oov = [s.score for s in seg.segment_text(OUT_OF_VOCABULARY, joint=False, labels=False)]
        rows.append(
            {
                "sequence": it["sequence"],
                "frame": it["frame"],
                "phrase": cls,
                "iou": _iou(right.mask, gt),
                "score": right.score,
                "oov_max_score": max(oov),
            }
        )
    ious = np.array([r["iou"] for r in rows])
    sc = np.array([r["score"] for r in rows])
    oov = np.array([r["oov_max_score"] for r in rows])
    summary = {
        "frames": len(rows),
        "mIoU": float(ious.mean()),
        "acc@0.5": float((ious >= 0.5).mean()),
        "mean_score_right_phrase": float(sc.mean()),
        "mean_max_score_out_of_vocabulary": float(oov.mean()),
        "share_right_phrase_scores_higher": float((sc > oov).mean()),
        "out_of_vocabulary_phrases": OUT_OF_VOCABULARY,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text_davis.json").write_text(json.dumps({"summary": summary, "frames": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
