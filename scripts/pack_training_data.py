"""Copy the default model's training sources into one compact folder, for a machine without ``../shared``.

    python scripts/pack_training_data.py OUT_DIR [--data ../shared/data]

A GPU machine that receives only the repository (and folders it carries, ≤ 64 MiB in all) can then train with
``configs/default_model.yaml`` once ``OUT_DIR`` is linked in as ``../shared/data`` (``scripts/device_train.sh``).
What is copied is exactly what ``configs/default_model.yaml`` reads, made smaller without changing any mask:

- BSDS500 train (minus the excluded GrabCut ids) and test: JPEGs re-encoded at quality 85, the 16-bit label maps
  saved as 8-bit PNGs when every id is < 256 (ids unchanged);
- COCO128-seg and the VOC label maps: copied as they are (VOC JPEGs re-encoded at quality 85);
- Weizmann horses: the first 160 images by name (the config's ``limit``) and their masks.

Every packed source is read back through the trainer's own adapters and compared with the original: same images
(within JPEG error), identical masks. The data stay research-only (read each dataset's README); the packed folder
must not be committed (the repository's ``.gitignore`` covers ``.devdata/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from seem.train.config import SourceConfig

GRABCUT_IDS = ["65019", "124084", "153077", "153093", "181079", "209070", "271008", "326038", "388016"]
HORSES = 160


def _jpeg(src: Path, dst: Path, quality: int = 85) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").save(dst, "JPEG", quality=quality)


def _label_png(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        a = np.array(im)
    img = Image.fromarray(a.astype(np.uint8)) if int(a.max()) < 256 else Image.fromarray(a.astype(np.uint16))
    img.save(dst, optimize=True)


def pack_bsds(src: Path, dst: Path, split: str | None, exclude: list[str]) -> None:
    """Images ``images[/split]/*.jpg`` and label maps ``gt[/split]/<id>/<k>.png`` of the kept ids."""
    sub = (lambda p: p / split) if split else (lambda p: p)
    for img in sorted(sub(src / "images").glob("*.jpg")):
        if img.stem in exclude or not (sub(src / "gt") / img.stem).is_dir():
            continue
        _jpeg(img, sub(dst / "images") / img.name)
        for png in sorted((sub(src / "gt") / img.stem).glob("*.png")):
            _label_png(png, sub(dst / "gt") / img.stem / png.name)
    if (src / "index.json").exists():
        shutil.copy2(src / "index.json", dst / "index.json")


def pack_horses(src: Path, dst: Path) -> None:
    """The first ``HORSES`` images by name and their masks (same file names, as the folder adapter pairs them)."""
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    for img in sorted((src / "images").iterdir())[:HORSES]:
        shutil.copy2(img, dst / "images" / img.name)
        for m in (src / "masks").glob(f"{img.stem}.*"):
            shutil.copy2(m, dst / "masks" / m.name)


def pack_voc(src: Path, dst: Path) -> None:
    for img in sorted((src / "images").iterdir()):
        _jpeg(img, dst / "images" / f"{img.stem}.jpg")
    shutil.copytree(src / "labels", dst / "labels", dirs_exist_ok=True)


def check(original: Path, packed: Path) -> None:
    """Read every source of the config from both roots through the trainer's adapters and compare."""
    from seem.train.build import build_source
    from seem.train.config import load_config

    cfg = load_config("configs/default_model.yaml")
    for sc in cfg.data.sources:
        assert sc.root is not None
        rel = Path(sc.root).relative_to("../shared/data")
        a = build_source(_with_root(sc, original / rel))
        b = build_source(_with_root(sc, packed / rel))
        n = min(len(a), sc.limit) if sc.limit else len(a)  # the adapter's limit keeps the first n
        if len(b) < n or (not sc.limit and len(b) != n):
            raise SystemExit(f"{rel}: {len(a)} samples in the original, {len(b)} packed")
        for i in range(n):
            sa, sb = a[i], b[i]
            if not np.array_equal(np.asarray(sa.masks), np.asarray(sb.masks)):
                raise SystemExit(f"{rel}[{i}]: masks differ after packing")
            err = (sa.image.float() - sb.image.float()).abs().mean().item()
            if err > 6.0:
                raise SystemExit(f"{rel}[{i}]: image differs by {err:.1f} grey levels on average")
        print(f"  {rel}: {n} samples identical (masks), images within JPEG error")


def _with_root(sc: SourceConfig, root: Path) -> SourceConfig:
    return dataclasses.replace(sc, root=str(root))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    src, dst = args.data, args.out
    if dst.exists():
        shutil.rmtree(dst)
    pack_bsds(src / "bsds500", dst / "bsds500", "train", GRABCUT_IDS)
    pack_bsds(src / "bsds500_test", dst / "bsds500_test", None, [])
    shutil.copytree(src / "coco128_seg", dst / "coco128_seg")
    pack_horses(src / "weizmann_horses", dst / "weizmann_horses")
    pack_voc(src / "voc_samples" / "vainf", dst / "voc_samples" / "vainf")
    for name in ("README.md", "LICENSE", "LICENSE.txt"):
        for d in dst.rglob("*"):
            if d.is_dir() and (src / d.relative_to(dst) / name).exists():
                shutil.copy2(src / d.relative_to(dst) / name, d / name)
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"packed into {dst}: {size / 2**20:.1f} MiB")
    check(src, dst)
    (dst / "PACKED_FROM.json").write_text(json.dumps({"from": str(src.resolve())}))


if __name__ == "__main__":
    main()
