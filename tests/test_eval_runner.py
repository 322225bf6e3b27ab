"""The evaluation runner on real GrabCut / DAVIS / COCO-panoptic / BSDS samples with fake predictors whose masks
are derived from the clicks (and, for the optional tasks, from the GT), so every number can be recomputed by hand
from what the predictor was given and returned. Also: seem's own ``Segmenter`` (small parity model) end to end."""

from __future__ import annotations

import hashlib
import itertools
import math
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, require

from seem.eval.clickers import RITMClicker, SEEMClicker
from seem.eval.datasets import MaskItem, detect_format, granularity_items, mask_items, open_dataset
from seem.eval.metrics import (
    iou_curve,
    jf_sequence,
    mask_iou,
    noc_metrics,
    pad_ious,
    point_max_oracle,
    referring_metrics,
)
from seem.eval.protocol import InteractivePredictor, PromptPredictor
from seem.eval.readers import BinaryMaskDataset, Bsds500, CocoPanoptic, DavisDataset, RefSample, segments_at
from seem.eval.runner import (
    InteractiveResult,
    Skipped,
    evaluate_granularity,
    evaluate_interactive,
    evaluate_panoptic,
    evaluate_prompts,
    evaluate_referring,
    evaluate_video,
    select_output,
)

# ----------------------------------------------------------------------------------------------------------------
# fake predictors
# ----------------------------------------------------------------------------------------------------------------


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def disk(shape: tuple[int, int], x: float, y: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


class OraclePredictor:
    """Fake SAM-style model. It knows the GT of the images it was built with (looked up by the image bytes; an
    unknown image counts as all object) and answers each click from its memory (``mask_input``) and the last
    click only: a positive click adds ``disk(radius) ∩ GT dilated by band`` (so the prediction spills a little
    over the boundary), a negative click removes ``disk(neg_radius)``. Its low-res logits are the full-size mask as
    ±8, so a runner that does not pass them back makes the memory vanish. Every call is recorded."""

    def __init__(self, gts: dict[str, np.ndarray] | None = None, radius: float = 70, band: int = 3, neg: float = 12):
        self.gts = gts or {}
        self.radius, self.band, self.neg = radius, band, neg
        self.set_image_calls = 0
        self.calls: list[dict[str, Any]] = []
        self.shape: tuple[int, int] = (0, 0)
        self.gt_dil = np.zeros(0, bool)

    def set_image(self, image: np.ndarray) -> None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.set_image_calls += 1
        self.shape = image.shape[:2]
        gt = self.gts.get(image_key(image))
        if gt is None:
            self.gt_dil = np.ones(self.shape, bool)
        else:
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.band + 1, 2 * self.band + 1))
            self.gt_dil = cv2.dilate(gt.astype(np.uint8), k) > 0

    def _answer(self, new: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = np.where(new, 8.0, -8.0).astype(np.float32)[None]
        self.calls[-1]["out_mask"] = new.copy()
        self.calls[-1]["out_logits"] = logits
        return new[None].copy(), np.array([0.9], np.float32), logits.copy()

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=False):
        self.calls.append(
            {
                "coords": None if point_coords is None else np.array(point_coords),
                "labels": None if point_labels is None else np.array(point_labels),
                "box": None if box is None else np.array(box),
                "mask_input": None if mask_input is None else np.array(mask_input),
                "multimask": multimask_output,
            }
        )
        prev = np.zeros(self.shape, bool) if mask_input is None else np.asarray(mask_input)[0] > 0
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            new = np.zeros(self.shape, bool)
            new[y0:y1, x0:x1] = True
            return self._answer(new & self.gt_dil)
        (x, y), positive = point_coords[-1], bool(point_labels[-1])
        if positive:
            new = prev | (disk(self.shape, x, y, self.radius) & self.gt_dil)
        else:
            new = prev & ~disk(self.shape, x, y, self.neg)
        return self._answer(new)


class PromptOracle(OraclePredictor):
    """Also takes free-form prompts: the prompt's pixels grown by 15 px, inside the dilated GT."""

    def predict_prompt(self, prompt):
        self.calls.append({"prompt": prompt})
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (31, 31))
        grown = cv2.dilate(prompt.mask.astype(np.uint8), k) > 0
        return self._answer(grown & self.gt_dil)


def gt_lookup(dataset: Any, limit: int | None = None) -> dict[str, np.ndarray]:
    out = {}
    for i, item in enumerate(mask_items(dataset)):
        if limit is not None and i >= limit:
            break
        out[image_key(item.image())] = item.masks()[0]
    return out


def make_grabcut_oracle() -> OraclePredictor:
    """Factory for ``seem eval --model py:test_eval_runner:make_grabcut_oracle`` (tests/test_eval_cli.py)."""
    ds, _ = open_dataset(require(DATA_DIR / "grabcut", "GrabCut sample"))
    return PromptOracle(gt_lookup(ds))


def make_plain_predictor() -> OraclePredictor:
    """A predictor with no optional methods (for the 'skipped' paths)."""
    return OraclePredictor()


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grabcut() -> BinaryMaskDataset:
    ds, fmt = open_dataset(require(DATA_DIR / "grabcut", "GrabCut sample"))
    assert fmt == "grabcut" and isinstance(ds, BinaryMaskDataset) and len(ds) == 10
    return ds


@pytest.fixture(scope="module")
def grabcut_gts(grabcut) -> dict[str, np.ndarray]:
    return gt_lookup(grabcut)


N_GC = 5  # GrabCut objects used by the interactive tests
MAX_CLICKS = 12


@pytest.fixture(scope="module")
def ritm_run(grabcut, grabcut_gts) -> tuple[InteractiveResult, OraclePredictor]:
    p = OraclePredictor(grabcut_gts)
    return evaluate_interactive(p, grabcut, "ritm", MAX_CLICKS, (0.85, 0.9), limit=N_GC), p


@pytest.fixture(scope="module")
def seem_run(grabcut, grabcut_gts) -> tuple[InteractiveResult, OraclePredictor]:
    p = OraclePredictor(grabcut_gts)
    return evaluate_interactive(p, grabcut, "seem", MAX_CLICKS, (0.85, 0.9), limit=N_GC), p


def _split_calls(calls: list[dict[str, Any]], lengths: list[int]) -> list[list[dict[str, Any]]]:
    out, i = [], 0
    for n in lengths:
        out.append(calls[i : i + n])
        i += n
    assert i == len(calls)
    return out


def _noc_by_hand(ious: list[float], thr: float, max_clicks: int) -> int:
    for k, v in enumerate(ious[:max_clicks], start=1):
        if v >= thr:
            return k
    return max_clicks


# ----------------------------------------------------------------------------------------------------------------
# interactive
# ----------------------------------------------------------------------------------------------------------------


def test_fakes_implement_the_protocol() -> None:
    assert isinstance(OraclePredictor(), InteractivePredictor)
    assert isinstance(PromptOracle(), PromptPredictor) and not isinstance(OraclePredictor(), PromptPredictor)


def test_ritm_run_feeds_clicks_and_logits_and_scores_every_click(ritm_run, grabcut) -> None:
    res, p = ritm_run
    assert res.protocol == "ritm" and len(res.items) == N_GC and res.stop_iou is None
    assert [it.id for it in res.items] == [s.id for s in list(grabcut)[:N_GC]]
    assert p.set_image_calls == N_GC
    # RITM without a stop runs every click
    assert all(len(it.ious) == MAX_CLICKS == it.model_calls == len(it.clicks) for it in res.items)
    per_item = _split_calls(p.calls, [it.model_calls for it in res.items])
    samples = list(grabcut)[:N_GC]
    for it, calls, s in zip(res.items, per_item, samples, strict=True):
        gt, void = s.read()
        clicker = RITMClicker()
        pred = np.zeros_like(gt)
        for k, call in enumerate(calls):
            # the runner sends every click so far, as (x, y) with 1/0 labels, and the previous round's logits
            c = clicker.next_click(gt, pred, void)
            assert (c.y, c.x, c.is_positive) == it.clicks[k]
            np.testing.assert_array_equal(call["coords"], [[x, y] for y, x, _ in it.clicks[: k + 1]])
            np.testing.assert_array_equal(call["labels"], [int(q) for _, _, q in it.clicks[: k + 1]])
            assert call["box"] is None and call["multimask"] is False
            if k == 0:
                assert call["mask_input"] is None
            else:
                np.testing.assert_array_equal(call["mask_input"], calls[k - 1]["out_logits"])
            pred = call["out_mask"]
            # the recorded IoU is the void-aware IoU of what the predictor returned
            assert it.ious[k] == mask_iou(gt, pred, void)
    # a negative click happened (the prediction spills over the boundary), and the IoU rises overall
    assert any(not q for it in res.items for _, _, q in it.clicks)
    assert res.curve[-1] > res.curve[0]


def test_ritm_noc_and_curves_match_the_metrics_by_hand(ritm_run) -> None:
    res, _ = ritm_run
    lists = [it.ious for it in res.items]
    ref = noc_metrics(lists, (0.85, 0.9), MAX_CLICKS)
    for t in (0.85, 0.9):
        by_hand = [_noc_by_hand(v, t, MAX_CLICKS) for v in lists]
        assert [it.noc[t] for it in res.items] == by_hand
        assert res.noc[t].noc == pytest.approx(np.mean(by_hand)) == ref[t].noc
        assert res.noc[t].failures == sum(1 for v in lists if max(v) < t) == len(res.failures[t])
        assert res.failures[t] == [it.id for it, v in zip(res.items, lists, strict=True) if max(v) < t]
    np.testing.assert_allclose(res.curve, np.mean(np.array(lists), axis=0))
    for k in (1, 2, 3, 5, 10):
        assert res.miou_at_k[k] == pytest.approx(np.mean([v[k - 1] for v in lists]))
    assert 20 not in res.miou_at_k  # beyond max_clicks
    assert 0.85 < res.miou_at_k[10] <= 1.0 and res.miou_at_k[1] < res.miou_at_k[10]
    # timing: one entry per model call, the evaluation's own work measured separately
    n_calls = sum(it.model_calls for it in res.items)
    for key in ("model_ms_per_click", "clicker_ms_per_click", "metric_ms_per_click", "overhead_ms_per_click"):
        assert res.timing[key]["n"] == n_calls and res.timing[key]["mean"] >= 0
    assert res.timing["set_image_calls"] == N_GC
    o = res.timing["overhead_ms_per_click"]["mean"]
    c, m = res.timing["clicker_ms_per_click"]["mean"], res.timing["metric_ms_per_click"]["mean"]
    assert o == pytest.approx(c + m)
    # summary is JSON-able and carries the numbers
    s = res.summary()
    assert s["noc"]["0.9"]["noc"] == res.noc[0.9].noc and len(s["items"]) == N_GC
    assert s["items"][0]["ious"] == res.items[0].ious


def test_seem_protocol_clicks_stop_rule_and_padding(seem_run, ritm_run, grabcut) -> None:
    res, p = seem_run
    ritm, _ = ritm_run
    assert res.protocol == "seem" and res.stop_iou == 0.9
    samples = list(grabcut)[:N_GC]
    per_item = _split_calls(p.calls, [it.model_calls for it in res.items])
    for it, s, calls in zip(res.items, samples, per_item, strict=True):
        gt, void = s.read()
        # SEEM's first click comes from the GT alone (void as background), at kornia's DT maximum
        first = SEEMClicker().propose_first(gt).click
        assert it.clicks[0] == (first.y, first.x, True)
        # stop once IoU > 0.9 (strictly); otherwise run to max_clicks
        over = [k for k, v in enumerate(it.ious) if v > 0.9]
        assert len(it.ious) == (over[0] + 1 if over else MAX_CLICKS)
        assert all(c["mask_input"] is not None for c in calls[1:])
        # the score leaves GrabCut's void band out, although SEEM's clicker treats it as background
        assert it.ious == [mask_iou(gt, c["out_mask"], void) for c in calls]
    # SEEM's lists are padded with their last value before NoC / curve
    padded = [pad_ious(np.array(it.ious), MAX_CLICKS) for it in res.items]
    np.testing.assert_allclose(res.curve, iou_curve(padded, MAX_CLICKS))
    for t in (0.85, 0.9):
        assert [it.noc[t] for it in res.items] == [_noc_by_hand(list(v), t, MAX_CLICKS) for v in padded]
        assert res.noc[t].noc == pytest.approx(np.mean([it.noc[t] for it in res.items]))
    assert any(len(it.ious) < MAX_CLICKS for it in res.items)  # some objects stopped early
    # the two protocols place different clicks on the same objects
    assert any(a.clicks[0] != b.clicks[0] for a, b in zip(res.items, ritm.items, strict=True))
    assert [a.clicks for a in res.items] != [
        b.clicks[: len(a.clicks)] for a, b in zip(res.items, ritm.items, strict=True)
    ]


def test_ritm_stop_iou_gives_the_same_noc(grabcut, grabcut_gts, ritm_run) -> None:
    full, _ = ritm_run
    res = evaluate_interactive(
        OraclePredictor(grabcut_gts), grabcut, "ritm", MAX_CLICKS, (0.85, 0.9), stop_iou=0.9, limit=N_GC
    )
    for a, b in zip(res.items, full.items, strict=True):
        hit = [k for k, v in enumerate(b.ious) if v >= 0.9]
        assert a.ious == b.ious[: hit[0] + 1] if hit else a.ious == b.ious
    for t in (0.85, 0.9):
        assert res.noc[t].noc == full.noc[t].noc and res.noc[t].failures == full.noc[t].failures


def test_seem_padding_on_an_easy_object() -> None:
    """A disk-shaped object the fake gets right at click 1: SEEM stops and pads, RITM runs all clicks."""
    img = np.full((120, 160, 3), 80, np.uint8)
    gt = disk((120, 160), 70, 60, 30)
    img[gt] = 200
    item = MaskItem.from_arrays("disk", img, gt)
    p = OraclePredictor({image_key(img): gt}, radius=40, band=0)
    seem = evaluate_interactive(p, [item], "seem", max_clicks=8)
    assert seem.items[0].ious == [1.0] and seem.items[0].model_calls == 1
    np.testing.assert_array_equal(seem.curve, np.ones(8))
    assert seem.noc[0.9].noc == 1 and seem.miou_at_k[5] == 1.0
    ritm = evaluate_interactive(OraclePredictor({image_key(img): gt}, radius=40, band=0), [item], "ritm", 8)
    assert len(ritm.items[0].ious) == 8 and ritm.items[0].ious[0] == 1.0
    # with nothing left to correct, RITM's next click is the negative (0, 0) click, as in RITM
    assert ritm.items[0].clicks[1] == (0, 0, False)
    # objects below min_area are left out (and listed); limit counts evaluated objects
    tiny = MaskItem.from_arrays("tiny", img, disk((120, 160), 10, 10, 1))
    res = evaluate_interactive(OraclePredictor(), [tiny, item, item], "ritm", 2, min_area=10, limit=1)
    assert [it.id for it in res.items] == ["disk"] and res.skipped_small == ["tiny"]
    assert res.summary()["skipped_small_objects"] == ["tiny"]


def test_davis_frames_as_interactive_items() -> None:
    root = require(DATA_DIR / "davis2016", "DAVIS-2016 sample")
    ds, fmt = open_dataset(root)
    assert fmt == "davis" and isinstance(ds, DavisDataset) and ds.single_object
    gts = gt_lookup(ds, limit=3)
    p = OraclePredictor(gts)
    res = evaluate_interactive(p, ds, "ritm", max_clicks=6, limit=3)
    assert [it.id for it in res.items] == ["blackswan/00000", "blackswan/00001", "blackswan/00002"]
    assert p.set_image_calls == 3
    for it in res.items:
        assert it.ious[0] > 0.2 and max(it.ious) > 0.8
    assert res.noc[0.85].noc == pytest.approx(np.mean([_noc_by_hand(it.ious, 0.85, 6) for it in res.items]))


def test_items_of_one_image_share_set_image() -> None:
    root = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    ds, fmt = open_dataset(root)
    assert fmt == "coco_panoptic" and isinstance(ds, CocoPanoptic)
    p = OraclePredictor()
    res = evaluate_interactive(p, ds, "ritm", max_clicks=2, limit=6)
    assert len(res.items) == 6 and p.set_image_calls == 1  # the first image has more than 6 segments
    assert all(it.id.startswith(f"{ds.annotations[0]['image_id']}/") for it in res.items)


def test_bad_predictor_outputs_are_named() -> None:
    hw = (10, 12)
    ok = (np.zeros((1, *hw), bool), np.ones(1), np.zeros((1, 4, 4)))
    mask, logits, score = select_output(ok, hw)
    assert mask.shape == hw and logits.shape == (1, 4, 4) and score == 1.0
    three = (
        np.stack([np.zeros(hw), np.ones(hw), np.zeros(hw)]).astype(bool),
        np.array([0.1, 0.7, 0.2]),
        np.zeros((3, 4, 4)),
    )
    assert select_output(three, hw)[0].all()  # the highest score wins
    with pytest.raises(ValueError, match="image is"):
        select_output((np.zeros((1, 5, 5), bool), np.ones(1), np.zeros((1, 4, 4))), hw)
    with pytest.raises(ValueError, match="scores"):
        select_output((np.zeros((1, *hw), bool), np.ones(2), np.zeros((1, 4, 4))), hw)
    with pytest.raises(ValueError, match="low_res_logits"):
        select_output((np.zeros((1, *hw), bool), np.ones(1), np.zeros((4, 4))), hw)
    with pytest.raises(ValueError, match="binary"):
        select_output((np.full((1, *hw), 0.3), np.ones(1), np.zeros((1, 4, 4))), hw)
    with pytest.raises(TypeError, match="must return"):
        select_output(np.zeros((1, *hw)), hw)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_interactive(OraclePredictor(), [], "sam")
    with pytest.raises(TypeError, match="set_image"):
        evaluate_interactive(object(), [], "ritm")


# ----------------------------------------------------------------------------------------------------------------
# single prompts
# ----------------------------------------------------------------------------------------------------------------


def test_single_prompts_per_kind(grabcut, grabcut_gts) -> None:
    p = PromptOracle(grabcut_gts)
    res = evaluate_prompts(p, grabcut, limit=3, seed=7)
    assert res.unsupported == {} and len(res.items) == 3 * 5
    samples = list(grabcut)[:3]
    calls = iter(p.calls)
    for s in samples:
        gt, void = s.read()
        for kind in ("point", "box", "stroke", "scribble", "polygon"):
            call = next(calls)
            r = next(x for x in res.items if x.id == s.id and x.kind == kind)
            assert r.supported and r.iou == mask_iou(gt, call["out_mask"], void)
            if kind == "point":  # through predict: one positive click at the object's centre
                assert call["coords"].shape == (1, 2) and call["labels"].tolist() == [1]
                x, y = call["coords"][0].astype(int)
                assert gt[y, x]
            elif kind == "box":  # through predict: the tight XYXY box, exclusive right/bottom edge
                ys, xs = np.nonzero(gt)
                assert call["box"].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert call["coords"] is None
            else:  # through predict_prompt, drawn with seed + item index
                assert call["prompt"].kind == kind and r.prompt is call["prompt"]
                assert call["prompt"].mask.any()
    for kind in ("point", "box", "stroke", "scribble", "polygon"):
        assert res.miou[kind] == pytest.approx(np.mean([x.iou for x in res.items if x.kind == kind]))
    assert res.miou["all"] == pytest.approx(np.mean([x.iou for x in res.items]))
    assert res.miou["box"] > res.miou["point"]  # the fake's box covers the whole object
    # reproducible with the same seed
    again = evaluate_prompts(PromptOracle(grabcut_gts), grabcut, limit=3, seed=7)
    assert [x.iou for x in again.items] == [x.iou for x in res.items]


def test_free_form_prompts_unsupported_without_predict_prompt(grabcut, grabcut_gts) -> None:
    res = evaluate_prompts(OraclePredictor(grabcut_gts), grabcut, limit=2)
    assert set(res.unsupported) == {"stroke", "scribble", "polygon"}
    assert "predict_prompt" in res.unsupported["stroke"]
    assert math.isnan(res.miou["scribble"]) and math.isfinite(res.miou["point"]) and math.isfinite(res.miou["box"])
    assert res.miou["all"] == pytest.approx(np.mean([x.iou for x in res.items if x.kind in ("point", "box")]))
    assert all(not x.supported for x in res.items if x.kind == "polygon")
    s = res.summary()
    assert s["miou"]["stroke"] is None and s["unsupported"]["polygon"]


# ----------------------------------------------------------------------------------------------------------------
# optional tasks
# ----------------------------------------------------------------------------------------------------------------


def test_tasks_without_their_method_are_skipped() -> None:
    p = OraclePredictor()
    for fn, method in (
        (evaluate_panoptic, "panoptic"),
        (evaluate_referring, "referring"),
        (evaluate_video, "track"),
        (evaluate_granularity, "predict_levels"),
    ):
        r = fn(p, None)
        assert isinstance(r, Skipped) and f"{method}()" in r.reason and "OraclePredictor" in r.reason
        assert r.summary()["skipped"] is True


class PanopticOracle(OraclePredictor):
    """Returns the GT panoptic map of the image; ``wrong`` relabels the first segment."""

    def __init__(self, ds: CocoPanoptic, wrong: bool = False):
        super().__init__()
        cats = sorted(ds.categories)
        self.by_image: dict[str, tuple[np.ndarray, list[dict[str, int]]]] = {}
        from seem.eval.datasets import read_image

        for s in ds:
            segs = [{"id": int(g["id"]), "class": cats.index(int(g["category_id"]))} for g in s.segments]
            if wrong:
                segs[0]["class"] = (segs[0]["class"] + 1) % len(cats)
            self.by_image[image_key(read_image(s.image_path))] = (s.id_map(), segs)
        self.names_seen: list[list[str]] = []

    def set_image(self, image):
        super().set_image(image)
        self.current = self.by_image[image_key(image)]

    def panoptic(self, class_names):
        self.names_seen.append(list(class_names))
        return self.current


def test_panoptic_pq_with_oracle_and_a_wrong_label() -> None:
    root = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    ds, _ = open_dataset(root)
    p = PanopticOracle(ds)
    res = evaluate_panoptic(p, ds)
    assert res.n_images == 2 and res.pq["All"]["pq"] == pytest.approx(1.0)
    assert p.names_seen[0][0] == ds.categories[min(ds.categories)]["name"] and len(p.names_seen[0]) == 133
    bad = evaluate_panoptic(PanopticOracle(ds, wrong=True), ds)
    assert bad.pq["All"]["pq"] < 1.0 and bad.summary()["pq"]["All"]["pq"] == pytest.approx(bad.pq["All"]["pq"])


class VideoOracle(OraclePredictor):
    """Propagates by returning the GT of each frame shifted right by ``shift`` pixels (frame 0 unchanged)."""

    def __init__(self, frames_gt: dict[str, np.ndarray], shift: int = 4):
        super().__init__()
        self.frames_gt, self.shift = frames_gt, shift

    def track(self, frames, first_mask):
        out = []
        for t, f in enumerate(frames):
            g = self.frames_gt[image_key(f)]
            out.append(g if t == 0 else np.roll(g, self.shift, axis=1))
        assert np.array_equal(out[0], first_mask)
        return np.stack(out)


def test_video_jf_matches_jf_sequence() -> None:
    root = require(DATA_DIR / "davis2016", "DAVIS-2016 sample")
    ds, _ = open_dataset(root)
    ds.sequences = ["blackswan"]
    frames = ds.frames("blackswan")[:8]
    gts = {}
    from seem.eval.datasets import read_image

    for f in frames:
        gts[image_key(read_image(ds.image_path("blackswan", f)))] = ds.objects("blackswan", f)[0][0]
    res = evaluate_video(VideoOracle(gts), ds, max_frames=8)
    assert len(res.items) == 1 and res.items[0]["n_frames"] == 8
    gt = np.stack([ds.objects("blackswan", f)[0][0] for f in frames])
    pred = np.concatenate([gt[:1], np.roll(gt[1:], 4, axis=2)])
    ref = jf_sequence(gt, pred, np.zeros_like(gt))
    assert res.metrics["J_mean"] == pytest.approx(ref["J"]["M"]) and res.metrics["F_mean"] == pytest.approx(
        ref["F"]["M"]
    )
    assert 0.5 < res.metrics["JF"] < 1.0


class LevelsOracle(OraclePredictor):
    """Returns, for a click, the BSDS segments containing it (one per annotator, padded to 6) with scores that
    favour the last annotator."""

    def __init__(self, maps_by_image: dict[str, list[np.ndarray]]):
        super().__init__()
        self.maps_by_image = maps_by_image

    def set_image(self, image):
        super().set_image(image)
        self.maps = self.maps_by_image[image_key(image)]

    def predict_levels(self, points):
        x, y = (int(v) for v in points[0])
        segs = segments_at(self.maps, y, x)
        segs = np.concatenate([segs, np.repeat(segs[-1:], 6 - len(segs), 0)]) if len(segs) < 6 else segs[:6]
        return segs, np.linspace(0.1, 0.9, 6)


def test_granularity_on_bsds() -> None:
    root = require(DATA_DIR / "bsds500", "BSDS500 sample")
    ds, fmt = open_dataset(root)
    assert fmt == "bsds" and isinstance(ds, Bsds500) and ds.root == root
    from seem.eval.datasets import read_image

    maps = {image_key(read_image(s.image_path)): s.label_maps() for s in list(ds)[:2]}
    res = evaluate_granularity(LevelsOracle(maps), ds, clicks_per_image=2, limit=4)
    assert len(res.items) == 4
    items = list(itertools.islice(granularity_items(ds, clicks_per_image=2), 4))
    for row, it in zip(res.items, items, strict=True):
        assert row["click_yx"] == list(it.click_yx) and it.gt[it.click_yx]
        segs = segments_at(ds[0].label_maps() if row["id"].startswith(ds[0].id) else ds[1].label_maps(), *it.click_yx)
        assert row["all_granularity_iou"] == pytest.approx(1.0) and row["n_targets"] == len(segs)
        pad = np.concatenate([segs, np.repeat(segs[-1:], 6 - len(segs), 0)]) if len(segs) < 6 else segs[:6]
        pmax, oracle = point_max_oracle(it.gt, pad, np.linspace(0.1, 0.9, 6))
        assert row["point_max"] == pytest.approx(pmax) and row["point_oracle"] == pytest.approx(oracle) == 1.0
    assert res.metrics["point_oracle"] == 1.0 and res.metrics["point_max"] <= 1.0


class ReferringOracle(OraclePredictor):
    def __init__(self, answers: dict[str, np.ndarray]):
        super().__init__()
        self.answers = answers

    def referring(self, phrase):
        return self.answers[phrase]


def test_referring_metrics_accumulate_like_referring_metrics() -> None:
    root = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    ds, _ = open_dataset(root)
    from pycocotools import mask as mask_utils

    s = next(iter(ds))
    masks, _ = s.masks()
    refs, answers, gts, preds = [], {}, [], []
    for k in range(3):
        rle = mask_utils.encode(np.asfortranarray(masks[k].astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        h, w = masks[k].shape
        sents = [f"object {k} a", f"object {k} b"]
        refs.append(RefSample(k, k, s.image_id, 1, "val", sents, s.file_name, s.image_path, h, w, (0, 0, 1, 1), rle))
        answers[sents[0]] = masks[k]
        answers[sents[1]] = masks[k] if k == 0 else np.roll(masks[k], 9, axis=0)
        gts += [masks[k], masks[k]]
        preds += [answers[sents[0]], answers[sents[1]]]
    res = evaluate_referring(ReferringOracle(answers), refs)
    ref = referring_metrics(gts, preds)
    assert res.metrics.keys() == ref.keys()
    for k, v in ref.items():
        assert res.metrics[k] == pytest.approx(v)
    assert len(res.items) == 6 and res.items[0]["iou"] == pytest.approx(1.0)


def test_detect_format_on_the_shared_folders() -> None:
    require(DATA_DIR, "shared data")
    expected = {
        "grabcut": "grabcut",
        "davis2016": "davis",
        "davis_scribbles": "davis",
        "bsds500": "bsds",
        "coco_panoptic_sample": "coco_panoptic",
        "voc_samples/labelme": "coco",
        "weizmann_horses": "binary",
        "coco_panoptic_sample/panoptic_examples.json": "coco_panoptic",
    }
    for rel, fmt in expected.items():
        assert detect_format(DATA_DIR / rel) == fmt, rel
    with pytest.raises(ValueError, match="unknown data layout"):
        detect_format(DATA_DIR / "kodak24")
    with pytest.raises(FileNotFoundError):
        detect_format(DATA_DIR / "no_such_folder")
    # COCO instances (labelme export): image root found from file_name, one item per annotation
    ds, _ = open_dataset(DATA_DIR / "voc_samples" / "labelme")
    items = list(mask_items(ds))
    assert len(items) == sum(len(s.annotations) for s in ds) and items[0].image().shape[2] == 3
    horses, _ = open_dataset(DATA_DIR / "weizmann_horses")
    gt, void = next(mask_items(horses)).masks()
    assert void is None and gt.any()


# ----------------------------------------------------------------------------------------------------------------
# seem's own Segmenter (small random-weight parity model): the protocol end to end
# ----------------------------------------------------------------------------------------------------------------


class Recorder:
    """Wraps a predictor and records what ``predict`` received and returned."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def set_image(self, image):
        self.inner.set_image(image)

    def predict(self, **kw):
        out = self.inner.predict(**kw)
        self.calls.append({"in": kw, "out": out})
        return out


@pytest.mark.parity
def test_seem_segmenter_through_the_runner(grabcut) -> None:
    pytest.importorskip("seem.predictor")
    require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    from seem.models.seem_model import SEEMModel
    from seem.predictor import Segmenter

    model, _ = SEEMModel.from_official(
        SEEM_PARITY_DIR / "seem_v1_small.pt", config=SEEM_PARITY_DIR / "seem_v1_small.yaml"
    )
    seg = Recorder(Segmenter(model, progress=False, cache_dir=False))
    res = evaluate_interactive(seg, grabcut, "seem", max_clicks=2, stop_iou=1.01, limit=1)
    it = res.items[0]
    assert len(it.ious) == 2 and all(0.0 <= v <= 1.0 for v in it.ious)
    first, second = seg.calls
    assert first["in"]["mask_input"] is None and first["in"]["multimask_output"] is False
    low = first["out"][2]
    assert low.ndim == 3 and low.shape[0] == 1  # SEEM's stride-4 logits of the selected candidate
    np.testing.assert_array_equal(second["in"]["mask_input"], low[:1])
    gt, void = grabcut[0].read()
    assert it.ious[1] == mask_iou(gt, second["out"][0][0], void)
