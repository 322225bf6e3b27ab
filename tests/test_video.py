"""Video tracking (``seem.video``) and ``seem video`` on the small SEEM parity model and real frames.

The parity model has random weights, so what is checked is the mechanics: readers (frame folders, an mp4 written
here from real DAVIS frames, arrays) and their errors; that propagation is exactly the documented referring-image
call (previous frame / prompt frame / both, fused logits between the two single-reference masks); one image
encoding per frame; lazy frame reading, constant memory (old frames are released), progress callbacks,
cancellation from another thread; objects entering mid-video (Cutie's judo clip); the writers (PNG, RLE JSON,
mp4, all-or-nothing); J&F scoring; ``track_masks`` (the evaluation protocol); the command line (outputs,
errors, no partial output). The model runs at a short side of 128 px to keep this fast.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import weakref
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA_DIR, SEEM_PARITY_DIR, require

from seem.io import read_image, read_mask
from seem.models.postprocess import crop_and_resize, upsample_to_padded
from seem.models.seem_model import SEEMModel
from seem.predictor import Segmenter
from seem.prompts import Box, MaskPrompt, Points, PromptError, PromptSet, ReferenceImage
from seem.results import rle_to_mask
from seem.video import (
    FrameFolder,
    FrameResult,
    JFAccumulator,
    TrackingCancelled,
    TrackingWriter,
    VideoError,
    VideoFile,
    VideoTracker,
    open_frames,
)
from seem.video_cli import add_video_parser

SIZE = 128


def _davis() -> Path:
    return require(DATA_DIR / "davis2016", "DAVIS-2016 data (../shared/data/davis2016)")


def _judo() -> Path:
    return require(DATA_DIR / "video_judo", "video_judo data (../shared/data/video_judo)")


@pytest.fixture(scope="module")
def model() -> SEEMModel:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures")
    require(d / "seem_v1_small.pt", "small SEEM parity checkpoint")
    m, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return m


def _seg(model: SEEMModel) -> Segmenter:
    return Segmenter(model, short_side=SIZE, cache_dir=False, progress=False)


@pytest.fixture(scope="module")
def swan() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames 0..4 of DAVIS-2016 blackswan and their ground-truth masks."""
    d = _davis()
    frames = [read_image(d / "JPEGImages" / "blackswan" / f"{i:05d}.jpg") for i in range(5)]
    masks = [read_mask(d / "Annotations" / "blackswan" / f"{i:05d}.png") for i in range(5)]
    return frames, masks


def _ref(frame: np.ndarray, mask: np.ndarray) -> PromptSet:
    return PromptSet(reference=ReferenceImage(frame, PromptSet(masks=MaskPrompt(mask))))


# ----------------------------------------------------------------------------------------------------------
# readers


def test_frame_folder_reads_real_frames_in_natural_order(tmp_path: Path) -> None:
    src = FrameFolder(_davis() / "JPEGImages" / "blackswan")
    assert src.num_frames == 32 and src.fps is None  # frames 0..29, then the every-10th frames 30 and 40
    frames = list(src.frames(3, 5))
    assert [f.index for f in frames] == [3, 4] and [f.name for f in frames] == ["00003", "00004"]
    assert frames[0].image.shape == (480, 854, 3) and frames[0].image.dtype == np.uint8
    img = (np.arange(12 * 16 * 3) % 251).astype(np.uint8).reshape(12, 16, 3)
    for name in ("f10.png", "f2.png", "f1.png"):
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [f.name for f in FrameFolder(tmp_path)] == ["f1", "f2", "f10"]
    assert FrameFolder(tmp_path).read(2).name == "f10"
    with pytest.raises(VideoError, match="no frame 3"):
        FrameFolder(tmp_path).read(3)


def test_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no frame images"):
        FrameFolder(tmp_path / "empty")
    with pytest.raises(VideoError, match="not found"):
        open_frames(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(VideoError, match="cannot open"):
        open_frames(bad)
    with pytest.raises(VideoError, match="empty list"):
        open_frames([])
    with pytest.raises(TypeError, match="wrap a single array"):
        open_frames(np.zeros((4, 4, 3), np.uint8))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "00000.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(VideoError, match=r"frame 0 \(00000.jpg\)"):
        list(FrameFolder(corrupt))


def _write_mp4(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(np.ascontiguousarray(f[:, :, ::-1]))
    vw.release()


def test_video_file_round_trip_rgb(tmp_path: Path, swan: Any) -> None:
    frames = [cv2.resize(f, (428, 240), interpolation=cv2.INTER_AREA) for f in swan[0][:4]]
    path = tmp_path / "clip.mp4"
    _write_mp4(path, frames)
    src = open_frames(path)
    assert isinstance(src, VideoFile) and src.fps == pytest.approx(12.0) and src.num_frames == 4
    got = list(src)
    assert [f.index for f in got] == [0, 1, 2, 3] and got[0].name == "00000"
    for a, b in zip(got, frames, strict=True):
        assert a.image.shape == b.shape
        assert np.abs(a.image.astype(float) - b).mean() < 8  # lossy codec, same colours (RGB, not BGR)
        assert np.abs(a.image.astype(float) - b[:, :, ::-1]).mean() > np.abs(a.image.astype(float) - b).mean()
    assert [f.index for f in src.frames(2)] == [2, 3]  # skipping decodes without converting
    assert open_frames(path, fps=5).fps == 5.0


# ----------------------------------------------------------------------------------------------------------
# tracking: the documented propagation, exactly


def test_previous_reference_is_the_referring_image_call(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    results = list(VideoTracker(_seg(model)).track(frames[:3], {1: PromptSet(masks=MaskPrompt(masks[0]))}))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].segments[1].source == "given" and np.array_equal(results[0].masks[1], masks[0])
    assert results[0].prompted == frozenset({1}) and results[1].prompted == frozenset()
    ref = _seg(model)
    for t in (1, 2):
        ref.set_image(frames[t])
        expected = ref.segment(_ref(frames[t - 1], results[t - 1].masks[1]), labels=False)[0]
        got = results[t].segments[1]
        assert got.source == "reference" and got.mask.shape == (480, 854)
        assert np.array_equal(got.mask, expected.mask) and got.score == pytest.approx(expected.score)


def test_first_and_both_references(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    prompts = {"swan": PromptSet(masks=MaskPrompt(masks[0]))}
    first = list(VideoTracker(_seg(model), reference="first").track(frames[:3], prompts))
    prev = list(VideoTracker(_seg(model), reference="previous").track(frames[:3], prompts))
    both = list(VideoTracker(_seg(model), reference="both").track(frames[:3], prompts))
    ref = _seg(model)
    ref.set_image(frames[2])
    a = ref.segment(_ref(frames[0], masks[0]), labels=False)[0]  # the prompt frame as reference
    b = ref.segment(_ref(frames[1], prev[1].masks["swan"]), labels=False)[0]
    assert np.array_equal(first[2].masks["swan"], a.mask)
    # frame 1: previous frame == prompt frame, so one reference only
    assert np.array_equal(both[1].masks["swan"], prev[1].masks["swan"])
    # frame 2: logits averaged (resizing is linear, so the mask lies between the two single-reference masks)
    assert both[2].masks["swan"].shape == (480, 854)
    lo, hi = a.mask & b.mask, a.mask | b.mask
    m = both[2].masks["swan"]
    assert (lo & ~m).sum() <= 0.001 * lo.size and (m & ~hi).sum() <= 0.001 * m.size
    g = ref.geometry
    mean = torch.from_numpy((a.low_res_logits + b.low_res_logits) / 2)[None]
    full = crop_and_resize(upsample_to_padded(mean, g.padded_size, "bicubic"), g.resized_size, g.original_size,
                           mode="bicubic", antialias=False)[0]  # fmt: skip
    assert np.array_equal(m, (full > 0).numpy())


def test_refine_reprompts_with_the_propagated_mask(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    prompts = {1: PromptSet(masks=MaskPrompt(masks[0]))}
    plain = list(VideoTracker(_seg(model)).track(frames[:2], prompts))
    refined = list(VideoTracker(_seg(model), refine=True).track(frames[:2], prompts))
    ref = _seg(model)
    ref.set_image(frames[1])
    p = plain[1].segments[1]
    expected = ref.segment(PromptSet(masks=MaskPrompt(p.mask)), memory=[p.low_res_logits], labels=False)[0]
    assert np.array_equal(refined[1].masks[1], expected.mask)


def test_one_encoding_per_frame_and_lazy_reading(model: SEEMModel, swan: Any, monkeypatch: Any) -> None:
    frames, masks = swan
    seg = _seg(model)
    calls = []
    orig = seg.model.encode_image
    monkeypatch.setattr(seg.model, "encode_image", lambda *a, **k: calls.append(1) or orig(*a, **k))
    read = []

    def gen() -> Any:
        for i, f in enumerate(frames):
            read.append(i)
            yield f

    for mode in ("previous", "first", "both"):
        calls.clear()
        read.clear()
        it = VideoTracker(seg, reference=mode).track(
            gen(), {1: PromptSet(masks=MaskPrompt(masks[0])), 2: PromptSet(boxes=Box(300, 100, 600, 400))}
        )
        assert read == []  # nothing runs before iterating
        next(it)
        assert read == [0]
        rest = list(it)
        assert len(rest) == 4 and len(calls) == 5, (mode, len(calls))


def test_old_frames_are_released(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    copies = [f.copy() for f in frames]
    refs = [weakref.ref(f) for f in copies]

    def gen() -> Any:
        while copies:
            yield copies.pop(0)

    alive = []
    for r in VideoTracker(_seg(model)).track(gen(), {1: PromptSet(masks=MaskPrompt(masks[0]))}):
        del r
        gc.collect()
        alive.append(sum(x() is not None for x in refs))
    assert max(alive[2:]) <= 3  # the frame being yielded, the previous one (reference), the next one at most
    assert alive[-1] <= 2


def test_progress_and_cancel_from_another_thread(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    seen: list[tuple[int, int | None]] = []
    list(
        VideoTracker(_seg(model)).track(
            frames, {1: PromptSet(masks=MaskPrompt(masks[0]))}, progress=lambda d, t: seen.append((d, t))
        )
    )
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]

    cancel = threading.Event()
    out: list[Any] = []

    def progress(done: int, total: int | None) -> None:
        if done == 2:
            cancel.set()

    def worker() -> None:
        try:
            for r in VideoTracker(_seg(model)).track(
                frames, {1: PromptSet(masks=MaskPrompt(masks[0]))}, progress=progress, cancel=cancel
            ):
                out.append(r.index)
        except TrackingCancelled as e:
            out.append(e)

    th = threading.Thread(target=worker)
    th.start()
    th.join(60)
    assert out[:2] == [0, 1] and isinstance(out[2], TrackingCancelled) and len(out) == 3


def test_objects_entering_mid_video_judo(model: SEEMModel) -> None:
    d = _judo()
    src = FrameFolder(d / "JPEGImages")
    lab5 = np.array(__import__("PIL.Image", fromlist=["Image"]).open(d / "Annotations" / "00005.png"))
    mask5 = np.pad(lab5 == 2, ((0, 0), (0, 1)))  # the README: frame 5's mask is 853 px wide
    prompts = {1: PromptSet(points=Points([[420, 250]]))}
    results = list(
        VideoTracker(_seg(model)).track(
            src, prompts, start_frame=4, end_frame=7, extra_prompts={5: {2: PromptSet(masks=MaskPrompt(mask5))}}
        )
    )
    assert [r.index for r in results] == [4, 5, 6] and [r.name for r in results] == ["00004", "00005", "00006"]
    assert list(results[0].segments) == [1] and list(results[1].segments) == [1, 2] == list(results[2].segments)
    assert results[0].segments[1].source == "visual" and results[1].segments[1].source == "reference"
    assert np.array_equal(results[1].masks[2], mask5) and results[1].prompted == frozenset({2})
    assert results[2].segments[2].source == "reference"


def test_tracking_errors(model: SEEMModel, swan: Any) -> None:
    frames, masks = swan
    tr = VideoTracker(_seg(model))
    with pytest.raises(PromptError, match="dict"):
        tr.track(frames, PromptSet(points=Points([[1, 1]])))
    with pytest.raises(PromptError, match="no object"):
        tr.track(frames, {})
    with pytest.raises(VideoError, match="extra_prompts"):
        tr.track(frames, {1: PromptSet(text="a")}, start_frame=2, extra_prompts={1: {2: PromptSet(text="b")}})
    with pytest.raises(VideoError, match=r"frame\(s\) \[7\]"):
        tr.track(frames, {1: PromptSet(text="a")}, start_frame=7)
    with pytest.raises(VideoError, match="end_frame"):
        tr.track(frames, {1: PromptSet(text="a")}, start_frame=2, end_frame=2)
    with pytest.raises(ValueError, match="reference"):
        VideoTracker(_seg(model), reference="last")  # type: ignore[arg-type]
    with pytest.raises(PromptError, match=r"frame 0, object 'far'.*outside"):
        list(tr.track(frames, {"far": PromptSet(points=Points([[900, 10]]))}))
    small = [frames[0], frames[1][:240, :400]]
    with pytest.raises(VideoError, match="earlier frames are 854×480"):
        list(tr.track(small, {1: PromptSet(masks=MaskPrompt(masks[0]))}))


# ----------------------------------------------------------------------------------------------------------
# writers and J&F


def _results(swan: Any, n: int = 3) -> list[FrameResult]:
    from seem.results import Segment

    frames, masks = swan
    return [
        FrameResult(i, f"{i:05d}", frames[i], {1: Segment(masks[i], 1.0), "b/x": Segment(~masks[i], 0.5)})
        for i in range(n)
    ]


def test_tracking_writer_outputs(tmp_path: Path, swan: Any) -> None:
    res = _results(swan)
    with TrackingWriter(tmp_path, "swan", fps=8) as w:
        for r in res:
            w.write(r)
        w.attach("extra.txt", b"hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra.txt", "swan.json", "swan.overlay.mp4", "swan_masks"]
    assert sorted(p.name for p in (tmp_path / "swan_masks").iterdir()) == ["1", "b_x"]
    for r in res:
        png = read_mask(tmp_path / "swan_masks" / "1" / f"{r.name}.png")
        assert np.array_equal(png, r.masks[1])
    doc = json.loads((tmp_path / "swan.json").read_text())
    assert doc["video"]["num_frames"] == 3 and doc["video"]["fps"] == 8.0 and len(doc["frames"]) == 3
    assert [o["id"] for o in doc["objects"]] == ["1", "b/x"]
    assert np.array_equal(rle_to_mask(doc["frames"][2]["objects"]["b/x"]["segmentation"]), res[2].masks["b/x"])
    cap = cv2.VideoCapture(str(tmp_path / "swan.overlay.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 854
    cap.release()


def test_tracking_writer_all_or_nothing(tmp_path: Path, swan: Any) -> None:
    res = _results(swan)
    with pytest.raises(RuntimeError, match="boom"), TrackingWriter(tmp_path, "swan") as w:
        w.write(res[0])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left
    w = TrackingWriter(tmp_path, "swan")
    w.write(res[0])
    bad = FrameResult(1, "x", res[1].image[:100], {1: res[1].segments[1]})
    with pytest.raises(VideoError, match="earlier frames"):
        w.write(bad)
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_jf_accumulator(tmp_path: Path, swan: Any) -> None:
    from seem.results import Segment

    frames, masks = swan
    gt = _davis() / "Annotations" / "blackswan"
    perfect, empty = JFAccumulator(gt), JFAccumulator(gt, drop_first_last=False)
    for i in range(5):
        perfect.add(
            FrameResult(i, f"{i:05d}", frames[i], {1: Segment(masks[i], 1)}, frozenset({1}) if i == 0 else frozenset())
        )
        empty.add(
            FrameResult(
                i,
                f"{i:05d}",
                frames[i],
                {1: Segment(np.zeros_like(masks[i]), 0)},
                frozenset({1}) if i == 0 else frozenset(),
            )
        )
    s = perfect.summary()
    assert s["JF"] == 1.0 and s["objects"]["1"]["n_scored"] == 3 and s["objects"]["1"]["n_frames"] == 5
    # imperfect predictions (masks shifted by 5 px per frame): the same statistics as metrics.jf_sequence
    from seem.eval.metrics import jf_sequence

    preds = [np.roll(m, 5 * i, axis=1) for i, m in enumerate(masks)]
    acc = JFAccumulator(gt)
    for i in range(5):
        acc.add(
            FrameResult(i, f"{i:05d}", frames[i], {1: Segment(preds[i], 1)}, frozenset({1}) if i == 0 else frozenset())
        )
    ref = jf_sequence(np.stack(masks), np.stack(preds))
    got = acc.summary()["objects"]["1"]
    assert got["J"] == pytest.approx(ref["J"]) and got["F"] == pytest.approx(ref["F"]) and got["JF"] < 1
    assert empty.summary()["J_mean"] == 0.0
    # multi-object palette GT: value k is object k, 255 void
    lab = np.zeros((480, 854), np.uint8)
    lab[:100, :100] = 1
    lab[200:300, 200:300] = 2
    lab[0:10, 500:510] = 255
    from PIL import Image

    Image.fromarray(lab).save(tmp_path / "00000.png")
    acc = JFAccumulator(tmp_path, drop_first_last=False)
    acc.add(
        FrameResult(0, "00000", frames[0], {1: Segment(lab == 1, 1), "2": Segment(lab == 1, 1)}, frozenset({1, "2"}))
    )
    s = acc.summary()
    assert s["objects"]["1"]["J"]["M"] == 1.0 and s["objects"]["2"]["J"]["M"] == 0.0
    with pytest.raises(VideoError, match="is 854×480 but the frame"):
        acc.add(FrameResult(0, "00000", frames[0][:10], {1: Segment(lab[:10] == 1, 1)}, frozenset({1})))


def test_track_masks_with_the_evaluation_runner(model: SEEMModel) -> None:
    """``track_masks`` is the evaluation protocol's ``track(frames, first_mask)`` (``seem eval video``)."""
    from seem.eval.readers import DavisDataset
    from seem.eval.runner import evaluate_video

    class Predictor:
        def __init__(self) -> None:
            self.tracker = VideoTracker(_seg(model))

        def track(self, frames: list[np.ndarray], first_mask: np.ndarray) -> np.ndarray:
            return self.tracker.track_masks(frames, first_mask)

    ds = DavisDataset(_davis(), single_object=True)
    ds.sequences = ["blackswan"]
    res = evaluate_video(Predictor(), ds, max_frames=4)
    assert 0.0 <= res.metrics["JF"] <= 1.0 and res.items[0]["n_scored"] == 4
    first = read_mask(_davis() / "Annotations" / "blackswan" / "00000.png")
    masks = Predictor().track(
        [read_image(_davis() / "JPEGImages" / "blackswan" / f"{i:05d}.jpg") for i in range(2)], first
    )
    assert masks.shape == (2, 480, 854) and masks.dtype == bool and np.array_equal(masks[0], first)


# ----------------------------------------------------------------------------------------------------------
# command line


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="seem")
    add_video_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["video", *argv])
    return int(args.func(args))


def _model_args() -> list[str]:
    d = SEEM_PARITY_DIR
    return ["--model", str(d / "seem_v1_small.pt"), "--config", str(d / "seem_v1_small.yaml"), "--size", str(SIZE)]


def test_cli_video_file(tmp_path: Path, swan: Any, model: SEEMModel, capsys: Any) -> None:
    clip = tmp_path / "in" / "clip.mp4"
    clip.parent.mkdir()
    _write_mp4(clip, swan[0][:3], fps=6)
    out = tmp_path / "out"
    mask = tmp_path / "in" / "m.png"
    cv2.imwrite(str(mask), swan[1][1].astype(np.uint8) * 255)
    argv = [str(clip), "--frame", "1", "--point", "400,200", "--box", "2:300,100,600,400", f"--mask=3:{mask}"]
    assert _cli([*argv, *_model_args(), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.overlay.mp4", "clip_masks"]
    assert sorted(p.name for p in (out / "clip_masks").iterdir()) == ["1", "2", "3"]
    assert sorted(p.name for p in (out / "clip_masks" / "3").iterdir()) == ["00001.png", "00002.png"]
    assert np.array_equal(read_mask(out / "clip_masks" / "3" / "00001.png"), swan[1][1])
    doc = json.loads((out / "clip.json").read_text())
    assert doc["video"]["fps"] == pytest.approx(6.0) and doc["video"]["prompt_frame"] == 1
    assert "2 frames tracked" in capsys.readouterr().out


def test_cli_jf_and_errors_leave_no_output(tmp_path: Path, swan: Any, capsys: Any) -> None:
    davis = _davis()
    out = tmp_path / "out"
    seq = davis / "JPEGImages" / "blackswan"
    gt = davis / "Annotations" / "blackswan"
    argv = [str(seq), "--mask", str(gt / "00000.png"), "--end", "3", "--gt", str(gt), "--no-png", "--no-video"]
    assert _cli([*argv, *_model_args(), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["blackswan.jf.json", "blackswan.json"]
    jf = json.loads((out / "blackswan.jf.json").read_text())
    assert jf["objects"]["1"]["n_frames"] == 3 and 0 <= jf["JF"] <= 1
    assert "J&F" in capsys.readouterr().out

    bad_out = tmp_path / "bad"
    # a prompt outside the frame: refused before the model loads
    assert _cli([str(seq), "--point", "900,10", *_model_args(), "--out", str(bad_out)]) == 2
    assert "outside" in capsys.readouterr().err
    # a corrupt frame in the middle of the run: nothing is written
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:05d}.jpg"), swan[0][i][:, :, ::-1])
    (frames / "00003.jpg").write_bytes(b"\xff\xd8\xff broken")
    assert _cli([str(frames), "--point", "400,200", *_model_args(), "--out", str(bad_out), "--quiet"]) == 2
    assert "frame 3" in capsys.readouterr().err
    assert not bad_out.exists() or list(bad_out.iterdir()) == []
    assert _cli([str(tmp_path / "nope.mp4"), "--point", "1,1", "--out", str(bad_out)]) == 2
    assert "not found" in capsys.readouterr().err
