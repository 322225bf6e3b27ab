"""Readers of the evaluation data formats, one module per format.

- ``coco``: COCO instances JSON (polygons / RLE) — ``CocoInstances``
- ``coco_panoptic``: COCO panoptic JSON + id PNGs (and the 2-channel PNG) — ``CocoPanoptic``
- ``lvis``: LVIS v1 JSON — ``LvisInstances``
- ``refcoco``: RefCOCO / RefCOCO+ / RefCOCOg (``refs(*).p`` + ``instances.json``) — ``RefCoco``
- ``davis``: DAVIS 2016/2017 folders and DAVIS-interactive scribbles — ``DavisDataset``, ``read_scribbles``
- ``grabcut``: GrabCut / Berkeley image + mask folders with a void value — ``BinaryMaskDataset``
- ``bsds``: BSDS500 ``.mat`` or PNG label maps, one annotator per granularity level — ``Bsds500``
- ``sa1b``: SA-1B per-image JSON with RLE masks — ``read_sa1b``

Masks come back as numpy ``bool`` arrays ``[H, W]`` / ``[N, H, W]``; boxes as XYXY pixels with an exclusive
right/bottom edge; points as pixel ``(x, y)``. pycocotools / scipy / OpenCV are imported only when needed.
"""

from seem.eval.readers.bsds import Bsds500, BsdsSample, coarse_to_fine, read_bsds_mat, read_bsds_png_dir, segments_at
from seem.eval.readers.coco import CocoInstances, InstanceSample, annotation_to_mask, bbox_xywh_to_xyxy
from seem.eval.readers.coco_panoptic import (
    CocoPanoptic,
    PanopticSample,
    id_to_rgb,
    read_panoptic_png,
    read_two_channel_png,
    rgb_to_id,
)
from seem.eval.readers.davis import (
    DavisDataset,
    DavisScribbles,
    ScribbleStroke,
    read_davis_labels,
    read_scribbles,
    split_objects,
)
from seem.eval.readers.grabcut import BinaryMaskDataset, BinarySample, read_binary_mask
from seem.eval.readers.lvis import LvisInstances
from seem.eval.readers.refcoco import RefCoco, RefSample, load_refs
from seem.eval.readers.sa1b import Sa1bImage, read_sa1b

__all__ = [
    "BinaryMaskDataset",
    "BinarySample",
    "Bsds500",
    "BsdsSample",
    "CocoInstances",
    "CocoPanoptic",
    "DavisDataset",
    "DavisScribbles",
    "InstanceSample",
    "LvisInstances",
    "PanopticSample",
    "RefCoco",
    "RefSample",
    "Sa1bImage",
    "ScribbleStroke",
    "annotation_to_mask",
    "bbox_xywh_to_xyxy",
    "coarse_to_fine",
    "id_to_rgb",
    "load_refs",
    "read_binary_mask",
    "read_bsds_mat",
    "read_bsds_png_dir",
    "read_davis_labels",
    "read_panoptic_png",
    "read_sa1b",
    "read_scribbles",
    "read_two_channel_png",
    "rgb_to_id",
    "segments_at",
    "split_objects",
]
