"""``seem eval`` end to end on GrabCut images (through ``add_eval_parser`` on a fresh argparse parser, as the lead's
``seem`` CLI registers it): JSON with every number, per-item CSV, IoU-vs-clicks and worst-case PNGs; the
"skipped" and bad-argument exit codes. The model is the fake oracle of ``test_eval_runner`` given as
``--model py:test_eval_runner:make_grabcut_oracle``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR, require
from test_eval_runner import make_grabcut_oracle

from seem.eval.cli import TASKS, add_eval_parser, load_predictor, main
from seem.eval.runner import evaluate_interactive


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seem")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    assert args.command == "eval" and args.func is not None
    return int(args.func(args))


@pytest.fixture(scope="module")
def grabcut_dir() -> Path:
    return require(DATA_DIR / "grabcut", "GrabCut sample")


def _png(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def test_parser_registers_every_task() -> None:
    p = _parser()
    for task in TASKS:
        a = p.parse_args(["eval", task, "--data", "d", "--model", "m", "--out", "o"])
        assert a.eval_task == task and a.func.__name__ == "run_eval"
    a = p.parse_args(["eval", "interactive", "--data", "d", "--model", "m", "--out", "o"])
    assert (a.protocol, a.max_clicks, a.thresholds, a.limit) == ("ritm", 20, [0.85, 0.9], None)
    with pytest.raises(SystemExit):
        p.parse_args(["eval", "interactive", "--data", "d", "--model", "m", "--out", "o", "--protocol", "sam"])


def test_interactive_end_to_end(tmp_path, grabcut_dir, capsys) -> None:
    out = tmp_path / "run"
    model = "py:test_eval_runner:make_grabcut_oracle"
    argv = ["eval", "interactive", "--data", str(grabcut_dir), "--model", model, "--out", str(out)]
    argv += ["--protocol", "seem", "--max-clicks", "8", "--limit", "3", "--worst", "2", "--no-progress"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "NoC@0.9" in printed and "wrote" in printed
    doc = json.loads((out / "interactive.json").read_text())
    assert doc["task"] == "interactive" and doc["model"] == model
    assert doc["data"] == {"path": str(grabcut_dir.resolve()), "format": "grabcut"}
    assert doc["settings"]["protocol"] == "seem" and doc["settings"]["max_clicks"] == 8
    assert doc["versions"]["numpy"] == np.__version__ and "python" in doc["versions"]
    r = doc["result"]
    # the same numbers as the runner called directly
    ds_res = evaluate_interactive(make_grabcut_oracle(), _grabcut(grabcut_dir), "seem", 8, limit=3)
    assert r["n_items"] == 3 and r["protocol"] == "seem" and r["stop_iou"] == 0.9
    assert r["noc"]["0.9"]["noc"] == ds_res.noc[0.9].noc and r["noc"]["0.85"]["failures"] == ds_res.noc[0.85].failures
    assert r["iou_curve"] == pytest.approx(ds_res.curve.tolist()) and len(r["iou_curve"]) == 8
    assert [it["ious"] for it in r["items"]] == [it.ious for it in ds_res.items]
    assert r["timing"]["overhead_ms_per_click"]["n"] == sum(it.model_calls for it in ds_res.items)
    # CSV: one row per object
    with open(out / "interactive_items.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["id"] for row in rows] == [it.id for it in ds_res.items]
    for row, it in zip(rows, ds_res.items, strict=True):
        assert [float(v) for v in row["ious"].split(";")] == pytest.approx(it.ious)
        assert int(row["noc@0.9"]) == it.noc[0.9] and float(row["iou_at_1"]) == pytest.approx(it.ious[0])
        assert len(row["clicks_yx_positive"].split(";")) == len(it.clicks)
    # plots: a curve and the worst objects drawn over their images
    curve = _png(out / "interactive_iou_vs_clicks.png")
    assert curve.shape[:2] == (560, 900) and (curve < 200).any(axis=2).mean() > 0.01
    worst = sorted((out / "worst").glob("*.png"))
    assert len(worst) == 2 and doc["files"]["worst_png"] == [str(p) for p in worst]
    img = _png(worst[0])
    assert img.shape[0] == 321 + 26 or img.shape[0] == 481 + 26  # image + title bar


def _grabcut(root: Path):
    from seem.eval.datasets import open_dataset

    return open_dataset(root)[0]


def test_prompts_end_to_end(tmp_path, grabcut_dir) -> None:
    out = tmp_path / "prompts"
    argv = ["eval", "prompts", "--data", str(grabcut_dir), "--model", "py:test_eval_runner:make_grabcut_oracle"]
    argv += ["--out", str(out), "--limit", "2", "--kinds", "point", "box", "scribble", "--no-progress"]
    assert main(argv) == 0  # the module's own entry point
    doc = json.loads((out / "prompts.json").read_text())
    miou = doc["result"]["miou"]
    assert set(miou) == {"point", "box", "scribble", "all"} and all(0 < v <= 1 for v in miou.values())
    with open(out / "prompts_items.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"point", "box", "scribble"}
    assert _png(out / "prompts_miou.png").shape[:2] == (420, 700)
    assert len(list((out / "worst").glob("*.png"))) == 2 * 3  # keep_worst objects per kind (2 objects here)


def test_unsupported_task_and_bad_arguments(tmp_path, grabcut_dir, capsys) -> None:
    pan = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    out = tmp_path / "pan"
    argv = ["eval", "panoptic", "--data", str(pan), "--model", "py:test_eval_runner:make_plain_predictor"]
    assert _run([*argv, "--out", str(out), "--no-progress"]) == 3
    assert "panoptic()" in capsys.readouterr().err
    doc = json.loads((out / "panoptic.json").read_text())
    assert doc["result"]["skipped"] is True and "panoptic()" in doc["result"]["reason"]
    # unknown data layout / missing folder / bad model spec → exit code 2 with a message
    bad = tmp_path / "empty"
    bad.mkdir()
    base = ["eval", "interactive", "--model", "py:test_eval_runner:make_plain_predictor", "--out", str(tmp_path / "x")]
    assert _run([*base[:2], "--data", str(bad), *base[2:]]) == 2
    assert "unknown data layout" in capsys.readouterr().err
    assert _run([*base[:2], "--data", str(tmp_path / "nope"), *base[2:]]) == 2
    argv = ["eval", "interactive", "--data", str(grabcut_dir), "--model", "py:nomodule", "--out", str(tmp_path / "y")]
    assert _run(argv) == 2
    assert "py:MODULE:ATTR" in capsys.readouterr().err


def test_load_predictor_specs(tmp_path) -> None:
    p = load_predictor("py:test_eval_runner:make_plain_predictor")
    assert callable(p.set_image) and callable(p.predict)
    with pytest.raises(ValueError, match="no set_image"):
        load_predictor("py:types:SimpleNamespace")
    with pytest.raises((FileNotFoundError, ImportError)):
        load_predictor(f"sam-onnx:{tmp_path}")
    with pytest.raises((FileNotFoundError, ImportError)):
        load_predictor(f"sam-onnx:{tmp_path / 'e.onnx'},{tmp_path / 'd.onnx'}")
