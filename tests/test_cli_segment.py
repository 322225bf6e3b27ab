"""``seem segment`` and ``seem panoptic`` end to end (in-process), with the small parity model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, require

from seem.cli import build_parser, main
from seem.io import read_image
from seem.models.seem_model import SEEMModel
from seem.results import PanopticSegmentation, rle_to_mask

CLASSES = "person,cup,table,plant,wall"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small parity checkpoint converted to seem's format (what `seem convert` writes)."""
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    m, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return m.save_pretrained(tmp_path_factory.mktemp("model") / "seem-small")


@pytest.fixture(autouse=True)
def _vocab_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEM_CACHE", str(tmp_path_factory.getbasetemp() / "seem-cache"))


@pytest.fixture(scope="module")
def image() -> Path:
    return require(DATA_DIR / "grabcut" / "images" / "21077.jpg", "GrabCut image")


def test_segment_writes_overlay_and_json(model_dir: Path, image: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(
        [
            "segment", str(image), "--model", str(model_dir), "--out", str(out), "--classes", CLASSES,
            "--quiet", "--size", "128",
            "--point", "250,180", "--point", "40,30,0", "--box", "100,60,380,300",
            "--scribble", "120,80;200,160;260,170", "--text", "a bird",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["21077.json", "21077.overlay.png"]
    doc = json.loads((out / "21077.json").read_text())
    assert doc["image"] == {"file_name": "21077.jpg", "height": 321, "width": 481}
    [s] = doc["segments"]
    mask = rle_to_mask(s["segmentation"])
    assert mask.shape == (321, 481) and int(mask.sum()) == s["area"]
    ys, xs = np.nonzero(mask)
    if len(xs):
        assert s["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    assert s["label"] in [*CLASSES.split(","), "background"] and 0 < s["label_score"] <= 1
    assert s["source"] == "visual" and isinstance(s["score"], float)
    overlay = read_image(out / "21077.overlay.png")
    assert overlay.shape == (321, 481, 3)
    assert "wrote" in capsys.readouterr().out


def test_segment_from_official_pt_and_reference_image(image: Path, tmp_path: Path, capsys) -> None:
    """``--model`` also takes an official .pt (converted on the fly); a referring image with its own prompts."""
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    rc = main(
        [
            "segment", str(image), "--model", str(d / "seem_v1_small.pt"), "--config", str(d / "seem_v1_small.yaml"),
            "--out", str(tmp_path), "--no-labels", "--size", "128", "--ref-image", str(d / "images" / "astronaut.png"),
            "--ref-scribble", "60,330;100,380;120,440",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    [s] = json.loads((tmp_path / "21077.json").read_text())["segments"]
    assert s["source"] == "reference" and s["label"] is None


def test_panoptic_writes_coco_files(model_dir: Path, tmp_path: Path, capsys) -> None:
    img = require(SEEM_PARITY_DIR / "images" / "astronaut.png", "parity image")
    rc = main(
        ["panoptic", str(img), "--model", str(model_dir), "--out", str(tmp_path), "--classes", CLASSES,
         "--stuff", "wall", "--quiet", "--size", "128"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["astronaut.json", "astronaut.overlay.png", "astronaut.panoptic.json", "astronaut.panoptic.png"]
    coco = json.loads((tmp_path / "astronaut.panoptic.json").read_text())
    ids = PanopticSegmentation.ids_from_coco_png(read_image(tmp_path / "astronaut.panoptic.png"))
    infos = coco["annotations"][0]["segments_info"]
    assert infos and sorted(set(np.unique(ids).tolist()) - {0}) == sorted(i["id"] for i in infos)
    for info in infos:
        assert info["area"] == int((ids == info["id"]).sum())
        assert coco["categories"][info["category_id"] - 1]["name"] == info["label"]
    assert {c["name"]: c["isthing"] for c in coco["categories"]}["wall"] == 0
    segs = json.loads((tmp_path / "astronaut.json").read_text())["segments"]
    assert [s["id"] for s in segs] == [i["id"] for i in infos]


def test_errors_leave_no_output(model_dir: Path, image: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import seem.loading

    out = tmp_path / "out"
    with monkeypatch.context() as mp:  # an installation without the shipped default model
        mp.setattr(seem.loading, "DEFAULT_MODEL_DIR", tmp_path / "no-default")
        rc = main(["segment", str(image), "--out", str(out), "--point", "10,10"])
    err = capsys.readouterr().err
    assert rc == 2 and "no default model" in err and "seem convert" in err
    rc = main(["segment", str(image), "--model", str(model_dir), "--out", str(out), "--point", "900,10"])
    assert rc == 2 and "outside the 481×321 image" in capsys.readouterr().err
    rc = main(["segment", str(image), "--model", str(model_dir), "--out", str(out), "--box", "1,2,3"])
    assert rc == 2 and "4 comma-separated" in capsys.readouterr().err
    rc = main(["segment", str(image), "--model", str(model_dir), "--out", str(out)])
    assert rc == 2 and "at least one prompt" in capsys.readouterr().err
    rc = main(["segment", str(tmp_path / "nope.jpg"), "--model", str(model_dir), "--out", str(out), "--point", "1,1"])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = main(["panoptic", str(image), "--model", str(tmp_path / "missing"), "--out", str(out)])
    assert rc == 2 and "model not found" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["segment", "panoptic", "convert", "models"])
def test_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"seem {command}" in text
    if command in ("segment", "panoptic"):
        assert "--model" in text and "--out" in text and "--classes" in text
    if command == "segment":
        for flag in ("--point", "--box", "--scribble", "--mask", "--text", "--ref-image", "--ref-point"):
            assert flag in text
