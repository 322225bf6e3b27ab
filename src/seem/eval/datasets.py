"""Evaluation items from the dataset readers, and data-format auto-detection for ``seem eval``.

The runner works on small, uniform items:

- ``MaskItem``: one object to segment (image, GT mask, optional void map): interactive and single-prompt tasks;
- ``GranularityItem``: one click on an image with the GT masks of every granularity that contain it.

``mask_items`` / ``granularity_items`` turn every reader of ``seem.eval.readers`` (and plain iterables of
items) into these; ``detect_format`` / ``open_dataset`` find the reader for a folder. Images load lazily,
as uint8 ``[H, W, 3]`` RGB; masks are bool ``[H, W]``; clicks are ``(y, x)`` pixel rows/columns.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seem.eval.readers import (
    BinaryMaskDataset,
    Bsds500,
    CocoInstances,
    CocoPanoptic,
    DavisDataset,
    LvisInstances,
    RefCoco,
    Sa1bImage,
    coarse_to_fine,
    read_sa1b,
    segments_at,
)

__all__ = [
    "FORMATS",
    "GranularityItem",
    "MaskItem",
    "detect_format",
    "granularity_items",
    "mask_items",
    "open_dataset",
    "read_image",
]

FORMATS = ("grabcut", "binary", "davis", "coco", "lvis", "coco_panoptic", "bsds", "refcoco", "sa1b")
"""Formats ``detect_format`` recognises: ``grabcut`` (images/ + gt/ with void 128, or RITM's data_GT/ +
boundary_GT/), ``binary`` (images/ + masks/, 0/255, no void: Berkeley, Weizmann horses), ``davis``,
``coco`` / ``lvis`` (instances JSON), ``coco_panoptic``, ``bsds`` (BSDS500 PNG or .mat ground truth),
``refcoco`` (``refs(*).p`` + ``instances.json``), ``sa1b`` (``sa_*.json``)."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, 3]`` RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name} must be [H, W, 3] RGB, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {a.dtype}")
    return a


# ----------------------------------------------------------------------------------------------------------------
# items
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MaskItem:
    """One object to segment.

    Attributes:
        id: unique name of the object (e.g. ``"21077"``, ``"blackswan/00010"``, ``"142238/1234"``).
        image_key: identity of the image (consecutive items with the same key share one ``set_image``).
        image_path: the image file when there is one (used for overlays), else None.
    """

    id: str
    image_key: str
    load_image: Callable[[], np.ndarray] = field(repr=False)
    load_masks: Callable[[], tuple[np.ndarray, np.ndarray | None]] = field(repr=False)
    image_path: Path | None = None

    def image(self) -> np.ndarray:
        """uint8 ``[H, W, 3]`` RGB."""
        return _check_image(self.load_image(), f"image of {self.id}")

    def masks(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(gt bool [H, W], void bool [H, W] | None)``."""
        gt, void = self.load_masks()
        return np.asarray(gt, bool), None if void is None else np.asarray(void, bool)

    @classmethod
    def from_arrays(cls, id: str, image: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> MaskItem:
        """An item from in-memory arrays (image uint8 ``[H, W, 3]``, gt / void bool ``[H, W]``)."""
        img = _check_image(image)
        g = np.asarray(gt, bool)
        if g.shape != img.shape[:2]:
            raise ValueError(f"gt is {g.shape}, image is {img.shape[:2]}")
        v = None if void is None else np.asarray(void, bool)
        return cls(id, f"array:{builtins.id(img)}", lambda: img, lambda: (g, v))


def _path_item(id: str, image_path: Path, load_masks: Callable[[], tuple[np.ndarray, np.ndarray | None]]) -> MaskItem:
    return MaskItem(id, str(image_path), functools.partial(read_image, image_path), load_masks, image_path)


def _require_image_path(p: Path | None, what: str) -> Path:
    if p is None:
        raise ValueError(f"{what} has no image path: give the reader an image root")
    return p


def mask_items(dataset: Any, *, min_area: int = 1) -> Iterator[MaskItem]:
    """Objects of a dataset as ``MaskItem`` (in reader order).

    - ``BinaryMaskDataset`` (GrabCut, Berkeley, ...): one item per sample, with its void band;
    - ``DavisDataset``: one item per annotated frame with an image and per non-empty object, void = 255;
    - ``CocoInstances`` / ``LvisInstances``: one item per non-crowd annotation;
    - ``CocoPanoptic``: one item per non-crowd segment (things and stuff);
    - ``Sa1bImage`` or a list of them: one item per mask;
    - an iterable of ``MaskItem``: passed through.

    Objects with fewer than ``min_area`` GT pixels (outside void) are skipped (masks are decoded to check).
    """

    def keep(item: MaskItem) -> bool:
        if min_area <= 0:
            return True
        gt, void = item.masks()
        return int((gt & ~void).sum() if void is not None else gt.sum()) >= min_area

    for item in _raw_mask_items(dataset):
        if keep(item):
            yield item


def _pair(gt: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return gt, void


def _coco_mask(sample: Any, index: int) -> tuple[np.ndarray, None]:
    return sample.mask(index), None


def _sa1b_mask(image: Sa1bImage, ann: dict[str, Any]) -> tuple[np.ndarray, None]:
    from seem.eval.readers.coco import annotation_to_mask

    return annotation_to_mask(ann["segmentation"], image.height, image.width), None


class _IdMapMasks:
    """Segment masks of one panoptic sample, decoding its id PNG once."""

    def __init__(self, sample: Any) -> None:
        self.sample = sample
        self.ids: np.ndarray | None = None

    def mask(self, seg_id: int) -> tuple[np.ndarray, None]:
        if self.ids is None:
            self.ids = self.sample.id_map()
        return self.ids == seg_id, None


def _davis_items(ds: DavisDataset) -> Iterator[MaskItem]:
    for seq in ds.sequences:
        frames = set(ds.frames(seq))
        for fr in ds.annotated_frames(seq):
            if fr not in frames:
                continue
            try:
                img_path = ds.image_path(seq, fr)
            except FileNotFoundError:
                continue
            masks, ids, void = ds.objects(seq, fr)
            for k in range(masks.shape[0]):
                if not masks[k].any():
                    continue
                oid = f"{seq}/{fr}" if ds.single_object else f"{seq}/{fr}#{int(ids[k])}"
                yield _path_item(oid, img_path, functools.partial(_pair, masks[k], void))


def _coco_items(ds: CocoInstances) -> Iterator[MaskItem]:
    for s in ds:
        path = _require_image_path(s.image_path, f"image {s.image_id}")
        for i, a in enumerate(s.annotations):
            if not int(a.get("iscrowd", 0)):
                yield _path_item(f"{s.image_id}/{a['id']}", path, functools.partial(_coco_mask, s, i))


def _panoptic_items(ds: CocoPanoptic) -> Iterator[MaskItem]:
    for s in ds:
        path = _require_image_path(s.image_path, f"panoptic image {s.image_id}")
        masks = _IdMapMasks(s)
        for seg in s.segments:
            if not int(seg.get("iscrowd", 0)):
                sid = int(seg["id"])
                yield _path_item(f"{s.image_id}/{sid}", path, functools.partial(masks.mask, sid))


def _raw_mask_items(dataset: Any) -> Iterator[MaskItem]:
    if isinstance(dataset, BinaryMaskDataset):
        for s in dataset:
            yield _path_item(s.id, s.image_path, s.read)
    elif isinstance(dataset, DavisDataset):
        yield from _davis_items(dataset)
    elif isinstance(dataset, CocoInstances):
        yield from _coco_items(dataset)
    elif isinstance(dataset, CocoPanoptic):
        yield from _panoptic_items(dataset)
    elif isinstance(dataset, Sa1bImage) or (
        isinstance(dataset, list) and dataset and all(isinstance(d, Sa1bImage) for d in dataset)
    ):
        for im in [dataset] if isinstance(dataset, Sa1bImage) else dataset:
            for a in im.annotations:
                yield _path_item(f"{im.image_id}/{a['id']}", im.image_path, functools.partial(_sa1b_mask, im, a))
    elif isinstance(dataset, Iterable):
        for item in dataset:
            if not isinstance(item, MaskItem):
                raise TypeError(f"expected MaskItem entries, got {type(item).__name__}")
            yield item
    else:
        raise TypeError(f"cannot make interactive items from {type(dataset).__name__}")


@dataclass
class GranularityItem:
    """One click for the multi-granularity metrics.

    Attributes:
        id: ``<image>/<source>`` name.
        image_key, image_path: as in ``MaskItem``.
        click_yx: the positive click ``(y, x)``: the innermost pixel (Euclidean distance maximum) of ``gt``.
        gt: bool ``[H, W]`` the mask the click was made for (Point Max / Oracle are scored against it).
        all_masks: bool ``[M, H, W]`` every GT mask of the image that may contain the click (the targets of
            1-IoU@all-granularity are those that contain it).
    """

    id: str
    image_key: str
    load_image: Callable[[], np.ndarray] = field(repr=False)
    click_yx: tuple[int, int]
    gt: np.ndarray = field(repr=False)
    all_masks: np.ndarray = field(repr=False)
    image_path: Path | None = None

    def image(self) -> np.ndarray:
        return _check_image(self.load_image(), f"image of {self.id}")


def _centre(mask: np.ndarray) -> tuple[int, int]:
    from seem.eval.simulate import simulate_point

    x, y = simulate_point(mask).points_xy[0]
    return int(y), int(x)


def _coco_all(s: Any) -> np.ndarray:
    keep = [i for i, a in enumerate(s.annotations) if not int(a.get("iscrowd", 0))]
    return np.stack([s.mask(i) for i in keep]) if keep else np.zeros((0, s.height, s.width), bool)


def _pan_all(s: Any) -> np.ndarray:
    m, _ = s.masks()
    return m[[i for i, seg in enumerate(s.segments) if not int(seg.get("iscrowd", 0))]]


def granularity_items(dataset: Any, *, clicks_per_image: int = 3, min_area: int = 64) -> Iterator[GranularityItem]:
    """Clicks for the granularity task.

    - ``Bsds500``: per image, the ``clicks_per_image`` largest segments (≥ ``min_area`` px) of the annotator
      of median granularity (``coarse_to_fine``); the click is each segment's innermost pixel and the targets
      are the segments of every annotator that contain it (``segments_at``).
    - ``CocoInstances`` / ``CocoPanoptic`` / SA-1B images: one click per non-crowd mask (≥ ``min_area`` px) at its
      innermost pixel; the targets are all masks of the image that contain it.
    - an iterable of ``GranularityItem``: passed through.
    """
    if isinstance(dataset, Bsds500):
        for s in dataset:
            maps = s.label_maps()
            order = coarse_to_fine(maps)
            src = maps[order[len(order) // 2]]
            ids, counts = np.unique(src, return_counts=True)
            chosen = [int(i) for i, c in sorted(zip(ids, counts, strict=True), key=lambda t: -t[1]) if c >= min_area]
            img_path = s.image_path
            for sid in chosen[:clicks_per_image]:
                seg = src == sid
                y, x = _centre(seg)
                yield GranularityItem(
                    f"{s.id}/{sid}", str(img_path), functools.partial(read_image, img_path), (y, x), seg,
                    segments_at(maps, y, x), img_path,
                )  # fmt: skip
        return
    if isinstance(dataset, Iterable) and not isinstance(dataset, (CocoInstances, CocoPanoptic, list)):
        dataset = list(dataset)
    if isinstance(dataset, list) and all(isinstance(d, GranularityItem) for d in dataset):
        yield from dataset
        return
    images: Iterable[tuple[str, Path, Callable[[], np.ndarray]]]
    if isinstance(dataset, CocoInstances):
        images = (
            (str(s.image_id), _require_image_path(s.image_path, f"image {s.image_id}"), functools.partial(_coco_all, s))
            for s in dataset
        )
    elif isinstance(dataset, CocoPanoptic):
        images = (
            (str(s.image_id), _require_image_path(s.image_path, f"image {s.image_id}"), functools.partial(_pan_all, s))
            for s in dataset
        )
    elif isinstance(dataset, Sa1bImage) or (
        isinstance(dataset, list) and all(isinstance(d, Sa1bImage) for d in dataset)
    ):
        ims = [dataset] if isinstance(dataset, Sa1bImage) else dataset
        images = ((str(im.image_id), im.image_path, im.masks) for im in ims)
    else:
        raise TypeError(f"cannot make granularity items from {type(dataset).__name__}")
    for name, path, load in images:
        masks = load()
        for k in range(masks.shape[0]):
            if int(masks[k].sum()) < min_area:
                continue
            y, x = _centre(masks[k])
            load_image = functools.partial(read_image, path)
            yield GranularityItem(f"{name}/{k}", str(path), load_image, (y, x), masks[k], masks, path)


# ----------------------------------------------------------------------------------------------------------------
# format detection
# ----------------------------------------------------------------------------------------------------------------


def _json_kind(path: Path) -> str | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    anns = data.get("annotations")
    if "image" in data and isinstance(anns, list):
        return "sa1b"
    if isinstance(anns, list) and anns and isinstance(anns[0], dict) and "segments_info" in anns[0]:
        return "coco_panoptic"
    if "images" in data and isinstance(anns, list):
        cats = data.get("categories") or [{}]
        return "lvis" if "frequency" in cats[0] else "coco"
    return None


def _json_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.json") if p.name != "index.json")


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the data format of a folder or JSON file (one of ``FORMATS``).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: no known layout was recognised (the message lists what was looked for).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_file():
        kind = _json_kind(p) if p.suffix == ".json" else None
        if kind is None:
            raise ValueError(f"{p}: not a COCO / LVIS / COCO-panoptic / SA-1B JSON file")
        return kind
    if any((p / d).is_dir() and any(c.is_dir() for c in (p / d).iterdir()) for d in ("JPEGImages", "Annotations")):
        return "davis"  # sequence (or resolution) folders inside; a VOC-style JPEGImages/ holds files
    if any(p.glob("refs(*).p")):
        return "refcoco"
    if (p / "data_GT").is_dir() and (p / "boundary_GT").is_dir():
        return "grabcut"
    if (p / "images").is_dir() and (p / "groundTruth").is_dir():
        return "bsds"
    if (p / "images").is_dir() and (p / "gt").is_dir():
        gt = p / "gt"
        if any(c.is_dir() for c in gt.iterdir()):
            return "bsds"
        return "grabcut"
    if (p / "images").is_dir() and (p / "masks").is_dir():
        return "binary"
    if any(p.glob("sa_*.json")):
        return "sa1b"
    for j in _json_files(p):
        kind = _json_kind(j)
        if kind in ("coco_panoptic", "coco", "lvis"):
            return kind
    raise ValueError(
        f"{p}: unknown data layout; expected one of: images/+gt/ (GrabCut, void 128), data_GT/+boundary_GT/ "
        "(RITM GrabCut), images/+masks/ (Berkeley-style), JPEGImages/+Annotations/ (DAVIS), images/+gt/<id>/<k>.png "
        "or groundTruth/*.mat (BSDS500), a COCO / LVIS / COCO-panoptic JSON, refs(*).p + instances.json "
        "(RefCOCO), sa_*.json (SA-1B)"
    )


def _find_image_root(base: Path, first_file: str | None, extra: Iterable[Path] = ()) -> Path | None:
    cands = [*extra, base, base / "images", base / "val2017", base / "train2017", base / "train2014"]
    if first_file is None:
        return next((c for c in cands if c.is_dir()), None)
    for c in cands:
        if (c / first_file).exists():
            return c
    return None


def _split_of(root: Path, split: str | None) -> str | None:
    if split is not None:
        return split
    for s in ("val", "test", "train"):
        if (root / "images" / s).is_dir():
            return s
    return None


def _davis_single_object(ds: DavisDataset) -> bool:
    from PIL import Image

    for seq in ds.sequences:
        files = ds.annotated_frames(seq)
        if files:
            with Image.open(ds.mask_path(seq, files[0])) as im:
                if im.mode == "P":
                    return False
                vals = set(np.unique(np.asarray(im)).tolist())
            return vals <= {0, 255}
    return False


def open_dataset(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    split: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
) -> tuple[Any, str]:
    """Open the reader for ``path`` → ``(dataset, format)``; ``fmt`` None = ``detect_format``.

    ``split``: BSDS500 / RefCOCO split (default: the first of val, test, train present for BSDS; all refs for
    RefCOCO). ``image_root``: where COCO / panoptic / RefCOCO images live when not next to the JSON.
    """
    p = Path(path)
    fmt = fmt or detect_format(p)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    img_root = Path(image_root) if image_root is not None else None
    if fmt == "grabcut":
        if (p / "data_GT").is_dir():
            return BinaryMaskDataset(p, "data_GT", "boundary_GT", void_value=128), fmt
        return BinaryMaskDataset(p, "images", "gt", void_value=128), fmt
    if fmt == "binary":
        return BinaryMaskDataset(p, "images", "masks", void_value=None), fmt
    if fmt == "davis":
        ds = DavisDataset(p)
        ds.single_object = _davis_single_object(ds)
        return ds, fmt
    if fmt == "bsds":
        return Bsds500(p, _split_of(p, split)), fmt
    if fmt == "sa1b":
        files = [p] if p.is_file() else sorted(p.glob("sa_*.json"))
        return [read_sa1b(f) for f in files], fmt
    if fmt == "refcoco":
        refs = sorted(p.glob("refs(*).p"))
        inst = p / "instances.json"
        if not inst.exists():
            raise FileNotFoundError(f"{p}: refs file found but no instances.json")
        coco = CocoInstances(inst)
        first = next(iter(coco.images.values()), {}).get("file_name")
        root = img_root or _find_image_root(p, first)
        return RefCoco(refs[0], coco, split=split, image_root=root), fmt
    # JSON based: COCO / LVIS / panoptic
    json_path = p if p.is_file() else next(j for j in _json_files(p) if _json_kind(j) == fmt)
    base = json_path.parent
    with open(json_path) as f:
        data = json.load(f)
    images = data.get("images") or []
    if fmt == "coco_panoptic":
        png_root = next(
            (c for c in (base / json_path.stem, base / "panoptic") if c.is_dir()),
            base,
        )
        first = images[0]["file_name"] if images else None
        root = img_root or _find_image_root(base, first)
        return CocoPanoptic(data, png_root, root), fmt
    cls = LvisInstances if fmt == "lvis" else CocoInstances
    reader = cls(data)
    first = reader._file_name(images[0]) if images else None
    root = img_root or _find_image_root(base, first)
    return cls(data, root), fmt
