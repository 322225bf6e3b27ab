"""Label whole datasets: ``seem label SOURCE --out DIR`` on one machine or a Ray cluster.

    from seem.label import make_job, run_job

    job = make_job("photos/", "labels_out", task="everything", model="swint_only_sam_many2many.pth", levels=(1, 3))
    summary = run_job(job)                      # engine="ray" to run on a Ray cluster
    summary.labelled, summary.errors            # also in labels_out/manifest.json

Modules: ``job`` (what to do, validation, fingerprint), ``sources`` (folders, globs, path lists, COCO JSON, object
storage), ``engines`` (the worker, the local and the Ray engine, ``run_job``), ``writers`` (atomic per-image files,
manifest, merged COCO / COCO-panoptic), ``cli`` (``add_label_parser``). See ``docs/labeling.md``.

Ray is optional (``pip install 'seem[ray]'``) and imported only by the Ray engine.
"""

from seem.label.engines import ENGINES, LabelWorker, run_job
from seem.label.job import TASKS, LabelJob, LabelJobError, LabelSettings, make_job
from seem.label.sources import SourceItem, list_source
from seem.label.writers import ImageResult, LabelSummary, OutputFolder

__all__ = [
    "ENGINES",
    "TASKS",
    "ImageResult",
    "LabelJob",
    "LabelJobError",
    "LabelSettings",
    "LabelSummary",
    "LabelWorker",
    "OutputFolder",
    "SourceItem",
    "list_source",
    "make_job",
    "run_job",
]
