"""``seem label``: sources, the four tasks with the local engine, atomic resumable outputs, bad input.

Real images from ``../shared/data/coco128_seg`` (resized to 160 px) with the small parity models (SEEM v1 and
Semantic-SAM, random weights) saved in seem's format, as a user would name them with ``--model``. The Ray engine is
tested in ``test_label_ray.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, SSAM_PARITY_DIR, require
from PIL import Image

from seem.label import LabelJobError, list_source, make_job, run_job
from seem.label.cli import main
from seem.results import rle_to_mask

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools, numpy 2

N_IMAGES = 7
EVERYTHING = [
    "--task", "everything", "--size", "128", "--points-per-side", "8", "--pred-iou-thresh", "0",
    "--stability-score-thresh", "0", "--threads", "1", "--quiet",
]  # fmt: skip
PANOPTIC = ["--task", "panoptic", "--classes", "person,cup,table,plant,wall", "--stuff", "wall,table",
            "--size", "128", "--threads", "1", "--quiet"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- fixtures


def make_image_folder(dst: Path, n: int = N_IMAGES, corrupt: bool = True, side: int = 160) -> Path:
    """``n`` real COCO images, long side ``side`` px, every second one in ``sub/``, plus a corrupt ``broken.jpg``."""
    files = sorted((require(DATA_DIR / "coco128_seg" / "images", "COCO128 images")).glob("*.jpg"))[:n]
    (dst / "sub").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            im.save(dst / ("sub" if i % 2 else "") / f.name, quality=92)
    if corrupt:
        (dst / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (dst / "notes.txt").write_text("not an image\n")
    return dst


def save_seem_small(dst: Path) -> Path:
    from seem.models.seem_model import SEEMModel

    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    m, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return m.save_pretrained(dst)


def tree(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, except the run records (manifest, journal, lock), which hold times and hosts."""
    skip = {"manifest.json", "journal.jsonl", ".lock"}
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("label_src"))


@pytest.fixture(scope="module")
def seem_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seem_small(tmp_path_factory.mktemp("model") / "seem-small")


@pytest.fixture(scope="module")
def ssam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seem.models.semantic_sam import save_semantic_sam, semantic_sam_from_official
    from seem.models.semantic_sam_config import from_official_yaml

    root = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures")
    model, _ = semantic_sam_from_official(root / "ssam_small.pth", from_official_yaml(root / "ssam_small.yaml"))
    return save_semantic_sam(model, tmp_path_factory.mktemp("model") / "ssam-small")


@pytest.fixture(autouse=True)
def _vocab_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEM_CACHE", str(tmp_path_factory.getbasetemp() / "seem-cache"))


@pytest.fixture(scope="module")
def everything_ref(images: Path, seem_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete local ``--task everything`` run with overlays (the reference the other runs must equal)."""
    out = tmp_path_factory.mktemp("ref") / "everything"
    assert main([str(images), "--out", str(out), "--model", str(seem_dir), "--overlays", *EVERYTHING]) == 0
    return out


# ------------------------------------------------------------------------------------------------------ validators


def check_label_file(out: Path, key: str, source: Path) -> dict:
    """A per-image JSON: the image's size, decodable RLE masks whose area and COCO box match."""
    from pycocotools import mask as mask_utils

    doc = json.loads((out / "labels" / f"{key}.json").read_text())
    with Image.open(source / key) as im:
        w, h = im.size
    assert doc["image"]["file_name"] == key and (doc["image"]["width"], doc["image"]["height"]) == (w, h)
    for a in doc["annotations"]:
        m = rle_to_mask(a["segmentation"])
        assert m.shape == (h, w) and int(m.sum()) == a["area"] > 0
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        assert a["bbox"] == [int(v) for v in mask_utils.toBbox(rle)]
        assert isinstance(a["score"], float)
    return doc


def load_coco(path: Path):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads(path.read_text())
    coco.createIndex()
    return coco


# ----------------------------------------------------------------------------------------------------------- sources


def test_sources_folder_glob_list_coco_and_errors(images: Path, tmp_path: Path) -> None:
    keys = [it.key for it in list_source(images)]
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))
    assert keys == names and "notes.txt" not in keys and len(keys) == N_IMAGES + 1
    assert all(Path(it.path).is_absolute() and it.image_id is None for it in list_source(images))
    # hidden files are skipped
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / ".hidden.jpg").write_bytes((images / "broken.jpg").read_bytes())
    (tmp_path / "h" / "a.PNG").write_bytes(b"x")
    assert [it.key for it in list_source(tmp_path / "h")] == ["a.PNG"]
    # glob: keys relative to the fixed part of the pattern
    assert [it.key for it in list_source(str(images / "sub" / "*.jpg"))] == [k[4:] for k in names if "sub/" in k]
    assert [it.key for it in list_source(str(images / "**" / "*.jpg"))] == names
    # a text file of paths (relative to the file, absolute, comments, repeats)
    lst = images.parent / "list.txt"
    sub = sorted((images / "sub").glob("*.jpg"))
    lst.write_text(f"# images\n{images.name}/sub/{sub[0].name}\n\n{sub[1]}\n{sub[1]}\n")
    items = list_source(lst)
    assert [it.path for it in items] == [str(sub[0]), str(sub[1])] and [it.key for it in items] == [
        sub[0].name,
        sub[1].name,
    ]
    # a COCO JSON: its images (file order, ids) relative to --image-root, without annotations
    coco = {"images": [{"id": 42, "file_name": f"sub/{sub[1].name}", "height": 1, "width": 1},
                       {"id": 7, "file_name": "broken.jpg", "height": 1, "width": 1}]}  # fmt: skip
    cj = tmp_path / "coco.json"
    cj.write_text(json.dumps(coco))
    items = list_source(cj, image_root=images)
    assert [(it.key, it.image_id) for it in items] == [(f"sub/{sub[1].name}", 42), ("broken.jpg", 7)]
    assert items[0].path == str(sub[1])
    # one image
    assert [it.key for it in list_source(sub[0])] == [sub[0].name]
    # nothing there
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelJobError, match="holds no images"):
        list_source(tmp_path / "empty")
    with pytest.raises(LabelJobError, match="source not found"):
        list_source(tmp_path / "missing")
    with pytest.raises(LabelJobError, match="without an 'images' list"):
        (tmp_path / "x.json").write_text("{}")
        list_source(tmp_path / "x.json")


def test_sources_object_storage_uri(images: Path) -> None:
    """Object-storage URIs are listed through pyarrow's file systems; the local file system, named by a ``file://``
    URI, stands in for S3 / GCS (no network here)."""
    pytest.importorskip("pyarrow", reason="object-storage sources need pyarrow (seem[ray])")
    from seem.label.sources import _list_uri, read_bytes

    items = _list_uri(f"file://{images}")
    assert [it.key for it in items] == [it.key for it in list_source(images)]
    assert read_bytes(items[0].path) == (images / items[0].key).read_bytes()


# ------------------------------------------------------------------------------------------------------------- tasks


def test_everything_local_outputs(images: Path, everything_ref: Path, capsys) -> None:
    out = everything_ref
    keys = [it.key for it in list_source(images)]
    good = [k for k in keys if k != "broken.jpg"]
    for k in good:
        doc = check_label_file(out, k, images)
        assert doc["task"] == "everything" and doc["annotations"]
        a = doc["annotations"][0]
        assert a["level"] is None and a["label"] is None and {"predicted_iou", "stability_score"} <= set(a)
        with Image.open(out / "overlays" / f"{k}.png") as im:
            assert max(im.size) <= 256 and im.mode == "RGB"
    assert not (out / "labels" / "broken.jpg.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete_with_errors"
    assert manifest["counts"]["images"] == len(keys) and manifest["counts"]["labelled"] == len(good)
    [err] = manifest["errors"]
    assert err["key"] == "broken.jpg" and "cannot decode" in err["reason"]
    assert manifest["settings"]["task"] == "everything" and manifest["model"]["family"] == "seem"
    assert {"seem", "torch", "numpy", "python"} <= set(manifest["versions"])
    coco = load_coco(out / "instances.json")
    assert len(coco.getImgIds()) == len(good) and manifest["counts"]["annotations"] == len(coco.getAnnIds())
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(ann).sum() == ann["area"] and ann["category_id"] == 1
    assert [c["name"] for c in coco.dataset["categories"]] == ["object"]
    entries = journal(out)
    assert sorted(e["key"] for e in entries) == sorted(keys) and all(e["peak_rss_mb"] > 0 for e in entries)


def test_rerun_skips_finished_images(images: Path, seem_dir: Path, everything_ref: Path, capsys) -> None:
    """The same command on a finished folder labels nothing new (the corrupt image is retried) and changes nothing."""
    before = tree(everything_ref)
    assert main([str(images), "--out", str(everything_ref), "--model", str(seem_dir), "--overlays", *EVERYTHING]) == 0
    assert f"(1 this run, {N_IMAGES} already done" in capsys.readouterr().out
    assert tree(everything_ref) == before
    runs = json.loads((everything_ref / "manifest.json").read_text())["runs"]
    assert len(runs) >= 2 and runs[-1]["already_done"] == N_IMAGES and runs[-1]["processed"] == 1


def test_output_folder_inside_the_source(images: Path, seem_dir: Path, tmp_path: Path, capsys) -> None:
    """``--out`` inside SOURCE: its overlay PNGs are never labelled as images, on the first run or a rerun."""
    src = make_image_folder(tmp_path / "src", n=2, corrupt=False)
    out = src / "labelled"
    for _ in range(2):
        assert main([str(src), "--out", str(out), "--model", str(seem_dir), "--overlays", *EVERYTHING]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["images"] == 2
    assert len(list((out / "overlays").rglob("*.png"))) == 2 and "2/2 images" in capsys.readouterr().out


def test_panoptic_coco_files(images: Path, seem_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pan"
    assert main([str(images), "--out", str(out), "--model", str(seem_dir), *PANOPTIC]) == 0
    pan = json.loads((out / "panoptic.json").read_text())
    cats = {c["id"]: c for c in pan["categories"]}
    assert [c["name"] for c in pan["categories"]] == ["person", "cup", "table", "plant", "wall"]
    assert cats[3]["isthing"] == 0 and cats[1]["isthing"] == 1
    assert len(pan["annotations"]) == len(pan["images"]) == N_IMAGES
    n_segments = 0
    for ann in pan["annotations"]:
        rgb = np.asarray(Image.open(out / "panoptic" / ann["file_name"]).convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert sorted(set(np.unique(ids).tolist()) - {0}) == sorted(s["id"] for s in ann["segments_info"])
        key = ann["file_name"][: -len(".png")]
        doc = check_label_file(out, key, images)
        for a, s in zip(doc["annotations"], ann["segments_info"], strict=True):
            assert a["segment_id"] == s["id"] and a["category_id"] == s["category_id"] in cats
            assert np.array_equal(rle_to_mask(a["segmentation"]), ids == s["id"])
        n_segments += len(ann["segments_info"])
    coco = load_coco(out / "instances.json")
    assert len(coco.getAnnIds()) == n_segments > 0


def test_text_one_mask_per_phrase(images: Path, seem_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "text"
    phrases = ["a dog", "the red bowl, on the left"]
    rc = main([str(images), "--out", str(out), "--model", str(seem_dir), "--task", "text", "--phrases", *phrases,
               "--size", "128", "--quiet"])  # fmt: skip
    assert rc == 0
    coco = load_coco(out / "instances.json")
    assert [c["name"] for c in coco.dataset["categories"]] == phrases
    for img in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert [a["label"] for a in anns] == phrases[: len(anns)] and all(a["category_id"] in (1, 2) for a in anns)
        assert all(a["label"] == phrases[a["category_id"] - 1] for a in anns)


def test_granularity_one_set_per_level(images: Path, ssam_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gran"
    rc = main([str(images), "--out", str(out), "--model", str(ssam_dir), "--task", "granularity", "--levels", "1,4",
               "--size", "128", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh",
               "0", "--threads", "1", "--quiet"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["levels"] == [1, 4] and manifest["model"]["family"] == "semantic_sam"
    for k in [it.key for it in list_source(images) if it.key != "broken.jpg"]:
        doc = check_label_file(out, k, images)
        levels = [a["level"] for a in doc["annotations"]]
        assert set(levels) == {1, 4} and levels == sorted(levels)  # each level gives its own set, in level order
    # `everything` with the same model: one merged set over the levels (never more masks than per-level sets)
    out2 = tmp_path / "every"
    rc = main([str(images), "--out", str(out2), "--model", str(ssam_dir), "--task", "everything", "--levels", "1,4",
               "--size", "128", "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh",
               "0", "--threads", "1", "--quiet"])  # fmt: skip
    assert rc == 0
    n_gran = len(load_coco(out / "instances.json").getAnnIds())
    n_every = len(load_coco(out2 / "instances.json").getAnnIds())
    assert 0 < n_every <= n_gran


# ------------------------------------------------------------------------------------------------------------ resume


def test_resume_after_killed_run(images: Path, seem_dir: Path, everything_ref: Path, tmp_path: Path) -> None:
    """Kill the process mid-run (SIGKILL, as an OOM killer would); the same command completes the folder without
    duplicates, and the result equals an uninterrupted run."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "seem.label.cli", str(images), "--out", str(out), "--model", str(seem_dir),
           "--overlays", *EVERYTHING]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    # slow each image down (more points) is not an option (it changes the outputs); instead kill as soon as the
    # first results are on disk, which leaves most images undone
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "labels").rglob("*.json"))) >= 1:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = {p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.json")}
    assert 1 <= len(done_before) < N_IMAGES
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert main([str(images), "--out", str(out), "--model", str(seem_dir), "--overlays", *EVERYTHING]) == 0
    assert not list(out.rglob("*.tmp"))
    assert tree(out) == tree(everything_ref)
    entries = journal(out)
    ok_keys = [e["key"] for e in entries if e["status"] == "ok"]
    assert len(ok_keys) == len(set(ok_keys)) <= N_IMAGES  # nothing labelled twice
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["labelled"] == N_IMAGES and manifest["status"] == "complete_with_errors"
    assert manifest["runs"][-1]["already_done"] == len(done_before)


# --------------------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_any_work(images: Path, seem_dir: Path, ssam_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "never"

    def refused(args: list[str], match: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert match in err, err
        assert not out.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    refused([str(empty), "--out", str(out), "--model", str(seem_dir), *EVERYTHING], "holds no images")
    refused([str(tmp_path / "nope"), "--out", str(out), "--model", str(seem_dir)], "source not found")
    refused([str(images), "--out", str(out), "--model", str(tmp_path / "nope")], "not found")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--task", "granularity"], "Semantic-SAM")
    refused([str(images), "--out", str(out), "--model", str(ssam_dir), "--task", "panoptic"], "needs a SEEM model")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--levels", "1,2"], "Semantic-SAM models only")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--task", "text"], "needs --phrases")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--phrases", "a"], "--task text only")
    refused([str(images), "--out", str(out), "--model", str(ssam_dir), "--levels", "0,7"], "outside 1..6")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--points-per-side", "0"], "points-per-side")
    refused([str(images), "--out", str(out), "--model", str(seem_dir), "--address", "auto"], "--engine ray only")
    # an unknown task: argparse refuses it; the API says which tasks exist
    with pytest.raises(SystemExit) as e:
        main([str(images), "--out", str(out), "--model", str(seem_dir), "--task", "depth"])
    assert e.value.code == 2 and "invalid choice: 'depth'" in capsys.readouterr().err
    with pytest.raises(LabelJobError, match="unknown task 'depth'; choose one of: panoptic, everything, text"):
        make_job(images, out, task="depth", model=seem_dir)
    with pytest.raises(LabelJobError, match="unknown engine"):
        run_job(make_job(images, out, model=seem_dir), engine="spark")
    assert not out.exists()


def test_output_folder_of_another_run_is_refused(
    images: Path, seem_dir: Path, ssam_dir: Path, everything_ref: Path, tmp_path: Path, capsys
) -> None:
    before = tree(everything_ref)
    base = [str(images), "--out", str(everything_ref), "--overlays"]
    other = [*EVERYTHING]
    other[other.index("--points-per-side") + 1] = "5"
    assert main([*base, "--model", str(seem_dir), *other]) == 2
    err = capsys.readouterr().err
    assert "belongs to a different run" in err and "points-per-side: folder 8, this run 5" in err
    assert main([*base[:-1], "--model", str(seem_dir), *EVERYTHING]) == 2  # no --overlays: a setting too
    assert "overlays: folder True, this run False" in capsys.readouterr().err
    assert main([*base, "--model", str(ssam_dir), *EVERYTHING]) == 2  # another model
    assert "model: the folder was labelled with" in capsys.readouterr().err
    assert tree(everything_ref) == before
    # a folder whose run labelled nothing (here: its only image is corrupt) may be reused with other settings
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "broken.jpg").write_bytes((images / "broken.jpg").read_bytes())
    assert main([str(only_bad), "--out", str(tmp_path / "o"), "--model", str(seem_dir), *EVERYTHING]) == 0
    assert main([str(only_bad), "--out", str(tmp_path / "o"), "--model", str(seem_dir), *other]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["settings"]["points_per_side"] == 5
    # a folder with other files is not an output folder
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("...")
    assert main([str(images), "--out", str(foreign), "--model", str(seem_dir), *EVERYTHING]) == 2
    assert "not the output of a `seem label` run" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_unreachable_ray_address(images: Path, seem_dir: Path, tmp_path: Path) -> None:
    import socket

    out = tmp_path / "never"
    job = make_job(images, out, model=seem_dir)
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(LabelJobError, match=r"pip install 'seem\[ray\]'"):
            run_job(job, engine="ray")
        return
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(LabelJobError, match=rf"--address 127.0.0.1:{port}: cannot reach a Ray cluster"):
        run_job(job, engine="ray", address=f"127.0.0.1:{port}")
    with pytest.raises(LabelJobError, match="cannot reach"):
        run_job(job, engine="ray", address=f"ray://127.0.0.1:{port}")
    with pytest.raises(LabelJobError, match="expected auto, HOST:PORT"):
        run_job(job, engine="ray", address="ray://host:port")
    assert time.monotonic() - t < 20 and not out.exists()


def test_core_never_imports_ray() -> None:
    code = (
        "import sys, seem.label, seem.label.cli, seem.label.engines; from seem.label.cli import add_label_parser; "
        "import argparse; add_label_parser(argparse.ArgumentParser().add_subparsers()); "
        "assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
