"""``seem label --engine ray``: the same files as the local engine, and a complete output when a worker is killed.

One Ray session for the module (``ray.init(num_cpus=2)``: start-up is slow); Ray Data actors get half a CPU each
so the read stage never starves on this 2-CPU machine. Skipped when Ray is not installed (``pip install
'seem[ray]'``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_label import journal, make_image_folder, save_seem_small, tree

from seem.label import list_source, make_job, run_job

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ray = pytest.importorskip("ray", reason="the Ray engine needs Ray (pip install 'seem[ray]')")

N_IMAGES = 10
RAY = {"num_workers": 2, "batch_size": 1, "cpus_per_worker": 0.5, "progress": False}


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("ray_src"), n=N_IMAGES)


@pytest.fixture(scope="module")
def seem_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seem_small(tmp_path_factory.mktemp("model") / "seem-small")


@pytest.fixture(scope="module", autouse=True)
def _vocab_cache(tmp_path_factory: pytest.TempPathFactory):
    """Ray workers inherit the driver's environment: the vocabulary cache goes to a temporary folder."""
    old = os.environ.get("SEEM_CACHE")
    os.environ["SEEM_CACHE"] = str(tmp_path_factory.mktemp("seem-cache"))
    yield
    if old is None:
        os.environ.pop("SEEM_CACHE", None)
    else:
        os.environ["SEEM_CACHE"] = old


def _job(images: Path, out: Path, model: Path, task: str):
    if task == "panoptic":
        kw = {"classes": "person,cup,table,plant,wall", "stuff": "wall,table"}
    else:  # enough clicks that each image takes a moment (so a worker can be killed mid-run)
        kw = {"points_per_side": 12, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    return make_job(images, out, task=task, model=model, size=128, overlays=True, threads=1, **kw)


def test_ray_and_local_engines_write_identical_files(ray_session, images: Path, seem_dir: Path, tmp_path: Path):
    local = run_job(_job(images, tmp_path / "local", seem_dir, "panoptic"), "local", progress=False)
    dist = run_job(_job(images, tmp_path / "ray", seem_dir, "panoptic"), "ray", **RAY)
    assert (local.labelled, dist.labelled) == (N_IMAGES, N_IMAGES) and local.annotations == dist.annotations > 0
    assert [e["key"] for e in dist.errors] == ["broken.jpg"] and dist.errors[0]["reason"] == local.errors[0]["reason"]
    a, b = tree(tmp_path / "local"), tree(tmp_path / "ray")
    assert sorted(a) == sorted(b) and {"instances.json", "panoptic.json"} <= set(a)
    assert a == b
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    engine = manifest["runs"][-1]["engine"]
    assert engine["name"] == "ray" and engine["num_workers"] == 2 and "ray" in manifest["versions"]
    workers = manifest["runs"][-1]["workers"]
    assert 1 <= len(workers) <= 2 and all(w["peak_rss_mb"] > 0 for w in workers.values())
    assert all(w.split("@")[0] != str(os.getpid()) for w in workers)  # labelled in the actors, not here


def _ray_workers() -> list[int]:
    """PIDs of this machine's Ray Data actors running ``RayLabeler`` (their process title names the class)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"RayLabeler" in cmd and b"MapWorker" in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker through /proc (Linux)")
def test_killed_worker_still_gives_complete_output(ray_session, images: Path, seem_dir: Path, tmp_path: Path):
    """SIGKILL a model actor as soon as the first results are on disk: Ray restarts it and retries its batches; the
    output is complete, free of duplicates and equal to a local run's."""
    out = tmp_path / "ray"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if any((out / "labels").rglob("*.json")):
                for pid in _ray_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run_job(_job(images, out, seem_dir, "everything"), "ray", **RAY)
    t.join(timeout=5)
    assert killed, "no Ray worker was found to kill"
    ok = [e["key"] for e in journal(out) if e["status"] == "ok"]
    assert len(ok) == len(set(ok)) == N_IMAGES  # complete, nothing twice
    assert summary.labelled == N_IMAGES and summary.processed == N_IMAGES + 1
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died
    assert not list(out.rglob("*.tmp"))
    local = run_job(_job(images, tmp_path / "local", seem_dir, "everything"), "local", progress=False)
    assert local.labelled == N_IMAGES and tree(out) == tree(tmp_path / "local")
    labels = sorted(p.relative_to(out / "labels").as_posix()[: -len(".json")] for p in (out / "labels").rglob("*.json"))
    assert labels == [it.key for it in list_source(images) if it.key != "broken.jpg"]


def test_worker_that_cannot_start_is_a_clear_error(ray_session, images: Path, tmp_path: Path) -> None:
    """Class names for a Semantic-SAM model whose class heads were never trained: the actors fail to build their
    generator; the run stops with the worker's own message (the local engine says the same before any work)."""
    from conftest import SSAM_PARITY_DIR, require

    from seem.label import LabelJobError
    from seem.models.semantic_sam import save_semantic_sam, semantic_sam_from_official
    from seem.models.semantic_sam_config import from_official_yaml

    root = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures")
    model, _ = semantic_sam_from_official(root / "ssam_small.pth", from_official_yaml(root / "ssam_small.yaml"))
    ssam = save_semantic_sam(model, tmp_path / "ssam")
    job = make_job(images, tmp_path / "out", task="everything", model=ssam, classes="dog,cat", size=128)
    with pytest.raises(LabelJobError, match="untrained") as local:
        run_job(job, "local", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(LabelJobError, match="a Ray worker could not start: cannot set up --task everything") as dist:
        run_job(job, "ray", **RAY)
    assert str(local.value) in str(dist.value)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "interrupted"
