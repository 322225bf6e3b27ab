"""Metrics: parity with the peers' own evaluation code (shared/parity/eval) and hand-computed values."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SHARED, require

from seem.eval.metrics import (
    COCO_STAT_NAMES,
    PanopticQuality,
    all_granularity_iou,
    boundary_f_measure,
    clicks_to_reach,
    coco_mask_ap,
    davis_statistics,
    encode_mask_results,
    iou_curve,
    jf_objects,
    jf_sequence,
    mask_iou,
    miou_at_k,
    noc_metrics,
    pad_ious,
    point_max_oracle,
    referring_metrics,
    region_similarity,
    seg_to_boundary,
    semantic_confusion,
    semantic_scores,
    single_prompt_miou,
)
from seem.eval.readers import CocoPanoptic

EVAL_PARITY_DIR = Path(os.environ.get("SEEM_EVAL_PARITY_DIR", SHARED / "parity" / "eval"))
RITM_THRS = [0.8, 0.8500000000000001, 0.9000000000000001]  # np.arange(0.8, 0.9 + 0.001, 0.05), as RITM


def _parity(name: str) -> Path:
    d = require(EVAL_PARITY_DIR, "evaluation parity fixtures (SEEM_EVAL_PARITY_DIR)")
    return require(d / name, name)


# ----------------------------------------------------------------------------------------------------------------
# IoU and the interactive metrics
# ----------------------------------------------------------------------------------------------------------------


def test_mask_iou_with_void_and_batches() -> None:
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros_like(gt)
    pred[2:6, 4:8] = True  # 16 px, 8 shared
    assert mask_iou(gt, pred) == pytest.approx(8 / 24)
    void = np.zeros_like(gt)
    void[:, 6:] = True  # removes pred's 8 px outside gt
    assert mask_iou(gt, pred, void) == pytest.approx(8 / 16)
    assert math.isnan(mask_iou(np.zeros_like(gt), np.zeros_like(gt)))  # 0/0, as RITM and SEEM
    batch = mask_iou(np.stack([gt, gt]), np.stack([pred, gt]))
    assert batch.shape == (2,) and batch[1] == 1.0
    with pytest.raises(ValueError, match="binary"):
        mask_iou(gt, pred * 0.5)


def test_clicks_to_reach_and_caps() -> None:
    ious = [0.5, 0.84, 0.86, 0.91, 0.95]
    assert clicks_to_reach(ious, 0.85) == 3 and clicks_to_reach(ious, 0.9) == 4
    assert clicks_to_reach(ious, 0.9, max_clicks=3) == 3  # NoC capped at 3 clicks
    assert clicks_to_reach([math.nan] * 4, 0.5, 20) == 20
    r = noc_metrics([ious, [0.2, 0.3]], thresholds=(0.85,), max_clicks=5)[0.85]
    assert r.noc == (3 + 5) / 2 and r.failures == 1 and r.over_max == 1 and r.per_sample.tolist() == [3, 5]


@pytest.mark.parity
def test_noc_matches_ritm_and_seem() -> None:
    d = json.loads(_parity("noc_cases.json").read_text())
    with np.load(_parity("noc_cases.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    n_samples = 0
    for g in d["groups"]:
        names = [s["name"] for s in g["samples"]]
        target = [arrays[f"{g['name']}/{n}/ritm_ious_target_0.9"] for n in names]
        no_stop = [arrays[f"{g['name']}/{n}/ritm_ious_no_stop"] for n in names]
        seem = [arrays[f"{g['name']}/{n}/seem_mask_iou"] for n in names]
        assert all(a.dtype == np.float32 for a in target + no_stop + seem)
        ritm = g["ritm"]
        for mode, lists in (("default_mode", target), ("explicit_thresholds", target), ("print_ious_mode", no_stop)):
            thrs = ritm[mode]["iou_thrs"]
            res = noc_metrics(lists, thrs, max_clicks=20)
            assert [res[t].noc for t in thrs] == pytest.approx(ritm[mode]["noc"], abs=1e-12), (g["name"], mode)
            assert [res[t].over_max for t in thrs] == ritm[mode]["over_max"], (g["name"], mode)
        got = miou_at_k(no_stop, (1, 2, 3, 5, 10, 20), mode="truncate")
        for key, want in ritm["print_ious_mode"]["miou_at_k"].items():
            k = int(key.split("@")[1])
            if want is None:
                assert math.isnan(got[k])
            else:  # the peers average float32 values in float32, we in float64
                assert got[k] == pytest.approx(want, abs=1e-6), (g["name"], key)
        thrs = [0.5, 0.8, 0.85, 0.9]
        res = noc_metrics(seem, thrs, max_clicks=20)
        for t in thrs:
            assert res[t].noc == pytest.approx(g["seem"][f"noc@{t}"], abs=1e-12), (g["name"], t)
        m1 = miou_at_k(seem, (1,), mode="pad")[1]
        want = g["seem"]["miou@iter1"]
        assert math.isnan(m1) if want is None else m1 == pytest.approx(want, abs=1e-6)
        for s, t_list, s_list in zip(g["samples"], target, seem, strict=True):
            n_samples += 1
            per = noc_metrics([t_list], thrs, 20)
            assert [per[t].noc for t in thrs] == s["ritm_noc_per_sample"]["thr_0.5_0.8_0.85_0.9"], s["name"]
            single = noc_metrics([s_list], thrs, 20)
            for t in thrs:
                assert single[t].noc == s["seem_results_single_sample"][f"noc@{t}"], s["name"]
            # SEEM's loop: after its stop rule, the list is filled up to 20 with the last value
            assert np.array_equal(pad_ious(s_list[: s["seem_model_calls"]], 20), s_list, equal_nan=True), s["name"]
    assert n_samples == 14
    # reaching the threshold at the last click is "over max" (RITM) but not a failure
    typ = next(g for g in d["groups"] if g["name"] == "typical")
    lists = [arrays[f"typical/{s['name']}/ritm_ious_target_0.9"] for s in typ["samples"]]
    r = noc_metrics(lists, [0.9000000000000001], 20)[0.9000000000000001]
    assert r.over_max == 2 and r.failures == 1


@pytest.mark.parity
def test_noc_threshold_dtype_trap() -> None:
    """RITM compares in the list's dtype: float32 0.9 reaches 0.9000000000000001, float64 0.9 does not."""
    calls = json.loads(_parity("noc_cases.json").read_text())["direct_calls"]
    f32 = noc_metrics([np.array([0.9], np.float32)], RITM_THRS, 20)
    f64 = noc_metrics([np.array([0.9], np.float64)], RITM_THRS, 20)
    assert [f32[t].noc for t in RITM_THRS] == calls[0]["noc"]
    assert [f64[t].noc for t in RITM_THRS] == calls[1]["noc"]
    assert [f64[t].over_max for t in RITM_THRS] == calls[1]["over_max"]
    seem = noc_metrics([np.full(20, 0.9, np.float64)], [0.5, 0.8, 0.85, 0.9], 20)  # SEEM's thresholds are exact
    assert [seem[t].noc for t in (0.5, 0.8, 0.85, 0.9)] == [
        calls[3]["results"][f"noc@{t}"] for t in (0.5, 0.8, 0.85, 0.9)
    ]


def test_iou_curve_modes() -> None:
    a, b = [0.5, 0.9], [0.2, 0.4, 0.6, 0.8]
    assert np.allclose(iou_curve([a, b], max_clicks=4, mode="pad"), [0.35, 0.65, 0.75, 0.85])
    assert np.allclose(iou_curve([a, b], mode="truncate"), [0.35, 0.65])
    assert miou_at_k([a, b], (1, 4, 5), max_clicks=4) == pytest.approx({1: 0.35, 4: 0.85})
    with pytest.raises(ValueError):
        iou_curve([a], mode="mean")


def test_single_prompt_and_point_max_oracle() -> None:
    r = single_prompt_miou([0.5, 0.7, 0.9, math.nan], ["point", "point", "box", "box"])
    assert r == pytest.approx({"point": 0.6, "box": 0.9, "all": 0.7})
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    cands = np.zeros((3, 20, 20), bool)
    cands[0, 5:15, 5:10] = True  # IoU 0.5
    cands[1] = gt  # IoU 1
    cands[2, 0:20, 0:20] = True  # IoU 0.25
    mx, orc = point_max_oracle(gt, cands, np.array([0.2, 0.1, 0.9]))
    assert mx == pytest.approx(0.25) and orc == 1.0  # Max follows the score, Oracle takes the best


@pytest.mark.parametrize("split", ["val"])
def test_all_granularity_on_bsds_annotators(split: str) -> None:
    """Targets = each BSDS annotator's segment containing the click; predictions matched by Hungarian IoU."""
    from seem.eval.readers import Bsds500, segments_at

    bsds = Bsds500(require(DATA_DIR / "bsds500", "BSDS500 sample"), split)
    maps = bsds[0].label_maps()
    y, x = maps[0].shape[0] // 2, maps[0].shape[1] // 2
    targets = segments_at(maps, y, x)
    gt_stack = np.concatenate([targets, np.zeros((2, *targets.shape[1:]), bool)])  # two masks without the click
    gt_stack[-1, :5, :5] = True
    preds = targets[::-1].copy()  # every target predicted, in another order
    r = all_granularity_iou(gt_stack, preds, (y, x))
    assert r.target_index.tolist() == list(range(len(targets)))
    assert np.allclose(r.ious, 1.0) and r.mean_iou == 1.0
    # with one prediction fewer than targets, exactly one target stays unmatched and scores 0
    r2 = all_granularity_iou(targets, preds[:-1], (y, x))
    assert (r2.pred_index == -1).sum() == 1 and r2.ious[r2.pred_index == -1][0] == 0.0


def test_semantic_scores_on_voc_labels() -> None:
    from PIL import Image

    lab = np.array(Image.open(require(DATA_DIR / "voc_samples" / "vainf" / "labels" / "0.png", "VOC sample")))
    assert 255 in lab and 1 in lab
    conf = semantic_confusion(lab, np.where(lab == 255, 0, lab).astype(np.uint8), 21)
    s = semantic_scores(conf)
    assert s["mIoU"] == 1.0 and s["pACC"] == 1.0
    # predict every "aeroplane" pixel as background: IoU(aeroplane) = 0, IoU(bg) = n_bg / (n_bg + n_plane)
    pred = np.where(lab == 255, 0, lab).astype(np.uint8)
    pred[pred == 1] = 0
    s = semantic_scores(semantic_confusion(lab, pred, 21))
    n_bg, n_pl = int((lab == 0).sum()), int((lab == 1).sum())
    assert s["IoU"][1] == 0 and s["IoU"][0] == pytest.approx(n_bg / (n_bg + n_pl))
    assert s["mIoU"] == pytest.approx((n_bg / (n_bg + n_pl)) / 2) and np.isnan(s["IoU"][2])
    with pytest.raises(ValueError):
        semantic_confusion(lab, pred + 30, 21)


def test_referring_metrics_hand_computed() -> None:
    g1 = np.zeros((10, 10), bool)
    g1[:5] = True  # 50 px
    p1 = np.zeros_like(g1)
    p1[:4] = True  # I 40, U 50
    g2 = np.zeros((4, 4), bool)
    g2[0, 0] = True
    p2 = np.zeros_like(g2)
    p2[3, 3] = True  # I 0, U 2
    r = referring_metrics([g1, g2], [p1, p2])
    assert r["cIoU"] == pytest.approx(40 / 52)
    assert r["mIoU"] == pytest.approx((40 / (50 + 1e-6) + 0) / 2)
    assert r["prec@0.5"] == 0.5 and r["prec@0.8"] == 0.0  # 40/50 = 0.8 - tiny: below 0.8 with SEEM's 1e-6


# ----------------------------------------------------------------------------------------------------------------
# panoptic quality
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panoptic_gt() -> CocoPanoptic:
    root = require(DATA_DIR / "coco_panoptic_sample", "COCO panoptic sample")
    return CocoPanoptic(root / "panoptic_examples.json", root / "panoptic")


@pytest.mark.parity
def test_pq_matches_panopticapi(panoptic_gt: CocoPanoptic) -> None:
    res = json.loads(_parity("pq/pq_results.json").read_text())
    root = _parity("pq")
    gt_maps = {s.image_id: (s.id_map(), s.segments) for s in panoptic_gt}
    assert len(res["cases"]) == 6
    for case in res["cases"]:
        pred = CocoPanoptic(root / case["prediction_json"], root / case["prediction_folder"])
        pq = PanopticQuality()
        for iid, (gmap, gsegs) in gt_maps.items():
            p = pred.sample(iid)
            pq.update(gmap, gsegs, p.id_map(), p.segments)
        r = pq.compute(panoptic_gt.isthing)
        for part in ("All", "Things", "Stuff"):
            for k in ("pq", "sq", "rq"):
                assert r[part][k] == pytest.approx(case["results"][part][k], abs=1e-12), (case["case"], part, k)
            assert r[part]["n"] == case["results"][part]["n"]
        assert sorted(str(k) for k in r.per_class) == sorted(case["per_class"])
        for cat, want in case["per_class"].items():
            assert r.per_class[int(cat)] == pytest.approx(want, abs=1e-12), (case["case"], cat)
        assert {str(k): v for k, v in r.counts.items()} == case["per_class_counts"], case["case"]


def _pq_by_definition(gt_map, gt_segs, pred_map, pred_segs, isthing) -> dict[str, float]:
    """PQ from its definition (Kirillov et al.), written independently with boolean masks: a match is a same-class
    pair with IoU > 0.5 (void pixels of the prediction out of the union; crowd GT never matched nor missed); an
    unmatched prediction is a FP unless more than half of it is void or crowd of its class."""
    stats: dict[int, list[float]] = {}
    for img_gt_map, img_gt, img_pred_map, img_pred in zip(gt_map, gt_segs, pred_map, pred_segs, strict=True):
        void = img_gt_map == 0
        matched_p = set()
        matched_g = set()
        for g in img_gt:
            if g.get("iscrowd", 0):
                continue
            gm = img_gt_map == g["id"]
            for p in img_pred:
                if p["category_id"] != g["category_id"]:
                    continue
                pm = img_pred_map == p["id"]
                inter = np.sum(gm & pm)
                union = np.sum(gm | pm) - np.sum(pm & void)
                if inter / union > 0.5:
                    st = stats.setdefault(g["category_id"], [0, 0, 0, 0.0])
                    st[0] += 1
                    st[3] += inter / union
                    matched_p.add(p["id"])
                    matched_g.add(g["id"])
        for g in img_gt:
            if not g.get("iscrowd", 0) and g["id"] not in matched_g:
                stats.setdefault(g["category_id"], [0, 0, 0, 0.0])[2] += 1
        for p in img_pred:
            if p["id"] in matched_p:
                continue
            pm = img_pred_map == p["id"]
            crowd = np.zeros_like(pm)
            for g in img_gt:
                if g.get("iscrowd", 0) and g["category_id"] == p["category_id"]:
                    crowd = img_gt_map == g["id"]
            if np.sum(pm & (void | crowd)) / np.sum(pm) > 0.5:
                continue
            stats.setdefault(p["category_id"], [0, 0, 0, 0.0])[1] += 1
    out = {}
    for name, want in (("All", None), ("Things", True), ("Stuff", False)):
        vals = [
            st[3] / (st[0] + 0.5 * st[1] + 0.5 * st[2]) for c, st in stats.items() if want is None or isthing[c] == want
        ]
        out[name] = sum(vals) / len(vals)
    return out


def test_pq_hand_built_cases(panoptic_gt: CocoPanoptic) -> None:
    samples = list(panoptic_gt)
    gmaps = [s.id_map() for s in samples]
    gsegs = [s.segments for s in samples]
    isthing = panoptic_gt.isthing

    def score(pmaps, psegs):
        pq = PanopticQuality()
        for a, b, c, d in zip(gmaps, gsegs, pmaps, psegs, strict=True):
            pq.update(a, b, c, d)
        return pq.compute(isthing), _pq_by_definition(gmaps, gsegs, pmaps, psegs, isthing)

    # perfect prediction (non-crowd segments only): PQ = SQ = RQ = 1
    perfect_maps = [
        np.where(np.isin(m, [s["id"] for s in segs if s["iscrowd"]]), 0, m)
        for m, segs in zip(gmaps, gsegs, strict=True)
    ]
    perfect_segs = [
        [{"id": s["id"], "category_id": s["category_id"]} for s in segs if not s["iscrowd"]] for segs in gsegs
    ]
    r, ref = score(perfect_maps, perfect_segs)
    assert r["All"]["pq"] == 1.0 and r["All"]["sq"] == 1.0 and r["All"]["rq"] == 1.0 and ref["All"] == 1.0

    # one missing thing segment (a person of image 0): one FN
    drop = next(s for s in gsegs[0] if s["category_id"] == 1 and not s["iscrowd"])
    maps = [m.copy() for m in perfect_maps]
    maps[0][maps[0] == drop["id"]] = 0
    segs = [[s for s in perfect_segs[0] if s["id"] != drop["id"]], perfect_segs[1]]
    r, ref = score(maps, segs)
    for part in ("All", "Things", "Stuff"):
        assert r[part]["pq"] == pytest.approx(ref[part], abs=1e-12)
    assert r["Stuff"]["pq"] == 1.0 and r["All"]["pq"] < 1.0
    assert r.counts[1]["fn"] == 1

    # two persons merged into one predicted segment
    persons = [s for s in perfect_segs[1] if s["category_id"] == 1]
    a, b = persons[0]["id"], persons[1]["id"]
    maps = [m.copy() for m in perfect_maps]
    maps[1][maps[1] == b] = a
    segs = [perfect_segs[0], [s for s in perfect_segs[1] if s["id"] != b]]
    r, ref = score(maps, segs)
    for part in ("All", "Things", "Stuff"):
        assert r[part]["pq"] == pytest.approx(ref[part], abs=1e-12)
    assert r.counts[1]["fn"] >= 1 and r["Things"]["pq"] < 1.0


def test_pq_bad_inputs() -> None:
    pq = PanopticQuality()
    g = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="does not list"):
        pq.update(g, [], g + 5, [])
    with pytest.raises(ValueError, match="do not occur"):
        pq.update(g, [], g, [{"id": 7, "category_id": 1}])


# ----------------------------------------------------------------------------------------------------------------
# J & F
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_jf_matches_davis_evaluation() -> None:
    d = json.loads(_parity("jf_cases.json").read_text())
    with np.load(_parity("jf_cases.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    assert len(d["pairs"]) == 14
    for c in d["pairs"]:
        i = c["id"]
        void = arrays.get(f"{i}/void")
        j = region_similarity(arrays[f"{i}/gt"], arrays[f"{i}/pred"], void)
        f = boundary_f_measure(arrays[f"{i}/gt"], arrays[f"{i}/pred"], void, bound_th=c["bound_th"])
        assert j == pytest.approx(c["J"], abs=1e-12), i
        assert f == pytest.approx(c["F"], abs=1e-12), i
    clip = d["clip"]
    r = jf_sequence(arrays["clip_blackswan_drift/gt"], arrays["clip_blackswan_drift/pred"])
    assert np.allclose(r["J_per_frame"], clip["J_per_frame"], atol=1e-12, rtol=0)
    assert np.allclose(r["F_per_frame"], clip["F_per_frame"], atol=1e-12, rtol=0)
    for k in ("M", "R", "D"):
        assert r["J"][k] == pytest.approx(clip["J"][k], abs=1e-12)
        assert r["F"][k] == pytest.approx(clip["F"][k], abs=1e-12)
    assert r["JF"] == pytest.approx(clip["JF_mean"], abs=1e-12)


def test_jf_hand_computed() -> None:
    h = 40
    gt = np.zeros((h, 60), bool)
    gt[:, :30] = True  # boundary: column 29, 40 px
    assert seg_to_boundary(gt).sum() == h and seg_to_boundary(gt)[:, 29].all()
    pred = gt.copy()
    pred[h // 2 :, 30:35] = True  # bottom half reaches 5 px further
    assert region_similarity(gt, pred) == pytest.approx(1200 / 1300)
    # pred boundary: col 29 rows 0..18 (19 px), row 19 cols 29..34 (6 px), col 34 rows 20..39 (20 px) = 45 px;
    # within 2 px of GT's column 29: 19 + 3 (row 19, cols 29..31) = 22; GT pixels within 2 px of pred: rows 0..21
    assert seg_to_boundary(pred).sum() == 45
    p, r = 22 / 45, 22 / 40
    assert boundary_f_measure(gt, pred, bound_th=2) == pytest.approx(2 * p * r / (p + r))
    assert boundary_f_measure(gt, pred, bound_th=5) == 1.0  # everything within 5 px
    void = np.zeros_like(gt)
    void[h // 2 :, 30:35] = True  # the extra part is void: both metrics perfect
    assert region_similarity(gt, pred, void) == 1.0 and boundary_f_measure(gt, pred, void, bound_th=2) == 1.0
    e = np.zeros_like(gt)
    assert region_similarity(e, e) == 1.0 and boundary_f_measure(e, e) == 1.0
    assert boundary_f_measure(gt, e) == 0.0 and boundary_f_measure(e, gt) == 0.0
    m, rr, dd = davis_statistics(np.array([1.0, 1.0, 0.4, 0.2, 0.2]))
    assert (m, rr) == pytest.approx((0.56, 0.4)) and dd == pytest.approx(1.0 - 0.2)


def test_jf_per_object_with_void_on_davis2017_frames() -> None:
    from seem.eval.readers import DavisDataset

    ds = DavisDataset(require(DATA_DIR / "davis_scribbles", "DAVIS scribbles sample"))
    objs = [ds.objects("tennis", f, num_objects=2) for f in ("00000", "00001")]
    gt = np.stack([o[0] for o in objs], 1)  # [K=2, T=2, H, W]
    void = np.stack([o[2] for o in objs])
    r = jf_objects(gt, gt, void)
    assert r["J"].shape == (2, 2) and (r["J"] == 1).all() and (r["F"] == 1).all()
    swapped = jf_objects(gt, gt[::-1], void)  # objects exchanged: disjoint masks
    assert (swapped["J"] == 0).all() and (swapped["F"] < 0.5).all()
    grown = gt.copy()
    grown[0] |= void  # object 1 also covers the void pixels: no change with void, a change without
    assert (jf_objects(gt, grown, void)["J"][0] == 1).all()
    assert (jf_objects(gt, grown)["J"][0] < 1).all()


# ----------------------------------------------------------------------------------------------------------------
# mask AP
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_mask_ap_matches_pycocotools_results() -> None:
    res = json.loads(_parity("ap/ap_results.json").read_text())
    root = _parity("ap")
    assert len(res["sets"]) == 4
    for s in res["sets"]:
        r = coco_mask_ap(root / "instances_gt.json", root / s["detections"])
        assert np.allclose(r.stats, s["stats"], atol=1e-12, rtol=0), s["detections"]
        assert r.summary == s["summarize_lines"]
        for cat, want in s["per_category_area_all_maxdet100"].items():
            assert r.per_category[int(cat)] == pytest.approx(want, abs=1e-12)
        assert list(r.as_dict()) == list(COCO_STAT_NAMES)


@pytest.mark.parity
def test_mask_ap_annotation_id_zero_trap() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    res = json.loads(_parity("ap/ap_results.json").read_text())["trap_gt_ids_from_0"]
    gt = json.loads(_parity("ap/instances_gt.json").read_text())
    dets = json.loads(_parity("ap/dets_mixed.json").read_text())
    gt0 = copy.deepcopy(gt)
    for a in gt0["annotations"]:
        a["id"] -= 1  # as the converter writes them: 0..N-1
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools itself falls into the trap
        c = COCO()
        c.dataset = copy.deepcopy(gt0)
        c.createIndex()
        e = COCOeval(c, c.loadRes(copy.deepcopy(dets)), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert np.allclose(e.stats, res["stats_with_id0"], atol=1e-12)
    with pytest.raises(ValueError, match="id 0"):
        coco_mask_ap(gt0, dets, fix_zero_ann_ids=False)
    with pytest.warns(UserWarning, match="renumbered"):
        r = coco_mask_ap(gt0, dets)
    assert np.allclose(r.stats, res["stats_with_ids_from_1"], atol=1e-12)


@pytest.mark.parity
def test_mask_ap_equals_pycocotools_on_encoded_masks(panoptic_gt: CocoPanoptic) -> None:
    """Detections encoded by ``encode_mask_results`` from the panoptic PNGs give pycocotools' own numbers."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = json.loads(_parity("ap/instances_gt.json").read_text())
    dets = []
    rng = np.random.default_rng(0)
    for s in panoptic_gt:
        masks, cats = s.masks()
        keep = [i for i, seg in enumerate(s.segments) if panoptic_gt.isthing[seg["category_id"]] and not seg["iscrowd"]]
        keep = [i for i in keep if rng.random() < 0.8]  # some misses
        m = masks[keep]
        m[::3] = np.roll(m[::3], 4, axis=2)  # some shifted
        dets += encode_mask_results(m, s.image_id, cats[keep].tolist(), rng.random(len(keep)).tolist())
    ours = coco_mask_ap(gt, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = copy.deepcopy(gt)
        c.createIndex()
        e = COCOeval(c, c.loadRes(copy.deepcopy(dets)), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert np.array_equal(ours.stats, e.stats)
    assert 0.0 < ours.stats[0] < 1.0
