"""Dataset adapters: each reads one dataset format (through ``seem.eval.readers``) and returns ``Sample``.

- ``CocoPanopticSource``: COCO panoptic, optionally with LVIS masks swapped in and RefCOCOg sentences attached
  (the SEEM training set);
- ``RefCocoSource``: RefCOCO / RefCOCO+ / RefCOCOg alone (referred objects + sentences);
- ``Sa1bSource``: SA-1B per-image JSON (nested masks → granularity chains);
- ``PartSource``: PACO / PASCAL-Part style COCO JSON with object and ``object:part`` categories;
- ``BsdsSource``: BSDS500, every annotator's segments, nested across annotators by containment;
- ``IndexedInstancesSource``: an ``index.json`` + instance PNGs (the COCO128-seg layout of ``shared/data``);
- ``FolderSource``: a user's folder of images + mask PNGs (label maps or one binary PNG per mask).

All are indexable (``len``, ``source[i]``), deterministic and unaugmented; wrap them in
``seem.train.data.TrainDataset`` with a transform for training.
"""

from seem.train.datasets.bsds import BsdsSource
from seem.train.datasets.coco import CocoPanopticSource, RefCocoSource
from seem.train.datasets.folder import FolderSource
from seem.train.datasets.indexed import IndexedInstancesSource
from seem.train.datasets.parts import PartSource
from seem.train.datasets.sa1b import Sa1bSource

__all__ = [
    "BsdsSource",
    "CocoPanopticSource",
    "FolderSource",
    "IndexedInstancesSource",
    "PartSource",
    "RefCocoSource",
    "Sa1bSource",
]
