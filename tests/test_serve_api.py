"""The HTTP API (``seem.serve``) through FastAPI's TestClient, on the small parity models and real images.

Every endpoint is exercised and its answers are compared with the library called directly (``Segmenter``,
``GranularityPredictor``, ``AutomaticMaskGenerator``) on the same image, so the API is shown to forward prompts and
results faithfully. Every refusal is covered: body size (Content-Length and streamed), pixel limit, decompression
bomb, type by content, corrupt data, aspect ratio, no file-system paths, invalid prompts, unknown ids, bounded
concurrency (503 at once), per-request timeout (504), session expiry, LRU memory budget, API key, CORS, object
limits, missing model families, video-job limits.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, SSAM_PARITY_DIR, require

pytest.importorskip("fastapi", reason="seem[serve] is not installed (fastapi)")
pytest.importorskip("httpx", reason="httpx is needed by FastAPI's TestClient")

from fastapi.testclient import TestClient
from PIL import Image

from seem.automatic import AutomaticMaskGenerator
from seem.granularity import GranularityPredictor
from seem.io import read_image
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM, semantic_sam_from_official
from seem.models.semantic_sam_config import from_official_yaml
from seem.predictor import Segmenter
from seem.prompts import Box, MaskPrompt, Points, Polygon, PromptSet, ReferenceImage, Scribble
from seem.results import rle_to_mask
from seem.serve import ServeConfig, create_app
from seem.serve.jobs import MaskPropagationTracker

IMAGE = DATA_DIR / "grabcut" / "images" / "124084.jpg"  # 481 x 321
REF_IMAGE = DATA_DIR / "grabcut" / "images" / "153077.jpg"
CLIP = DATA_DIR / "davis2016" / "JPEGImages" / "blackswan"


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seem_model() -> SEEMModel:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures (SEEM_PARITY_DIR)")
    m, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    return m


@pytest.fixture(scope="module")
def ssam_model() -> SemanticSAM:
    d = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures (SSAM_PARITY_DIR)")
    m, _ = semantic_sam_from_official(d / "ssam_small.pth", config=from_official_yaml(d / "ssam_small.yaml"))
    return m.eval()


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Vocabulary cache shared by the serve test modules of this pytest run (encoded once)."""
    d = tmp_path_factory.getbasetemp() / "serve_vocab"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def image_bytes() -> bytes:
    return require(IMAGE, "grabcut images (../shared/data)").read_bytes()


@pytest.fixture(scope="module")
def image(image_bytes: bytes) -> np.ndarray:
    return read_image(image_bytes)


def _cfg(vocab_dir: Path, **kw: Any) -> ServeConfig:
    return ServeConfig(vocab_cache_dir=vocab_dir, **kw)


@pytest.fixture(scope="module")
def client(seem_model: SEEMModel, ssam_model: SemanticSAM, vocab_dir: Path) -> Iterator[TestClient]:
    """Both families, default limits."""
    app = create_app(seem_model, ssam_model, config=_cfg(vocab_dir))
    app.state.service.warm()
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def direct(seem_model: SEEMModel, image: np.ndarray, vocab_dir: Path) -> Segmenter:
    """The library on the same image, for comparisons."""
    s = Segmenter(seem_model, cache_dir=vocab_dir, progress=False)
    s.set_image(image)
    return s


def _upload(c: TestClient, data: bytes, name: str = "photo.jpg", **kw: Any) -> Any:
    return c.post("/v1/sessions", files={"image": (name, data, "application/octet-stream")}, **kw)


@pytest.fixture()
def sid(client: TestClient, image_bytes: bytes) -> Iterator[str]:
    r = _upload(client, image_bytes)
    assert r.status_code == 201, r.text
    yield r.json()["session_id"]
    client.delete(f"/v1/sessions/{r.json()['session_id']}")


def _err(r: Any, status: int, code: str | None = None, contains: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "detail"} and isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    if contains is not None:
        assert contains in body["detail"], body
    return body


def _mask(rec: dict[str, Any]) -> np.ndarray:
    return rle_to_mask(rec["segmentation"])


def _png_mask(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))) > 0


def _segment(c: TestClient, sid: str, prompts: dict[str, Any], **kw: Any) -> Any:
    return c.post(f"/v1/sessions/{sid}/segment", json={"prompts": prompts, **kw})


# ----------------------------------------------------------------------------------------------------- basics


def test_openapi_health_info_and_page(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/sessions",
        "/v1/sessions/{sid}",
        "/v1/sessions/{sid}/segment",
        "/v1/sessions/{sid}/granularity",
        "/v1/sessions/{sid}/panoptic",
        "/v1/sessions/{sid}/everything",
        "/v1/sessions/{sid}/objects",
        "/v1/sessions/{sid}/objects/{oid}/undo",
        "/v1/sessions/{sid}/reset",
        "/v1/sessions/{sid}/export",
        "/v1/videos",
        "/v1/videos/{jid}/result",
        "/v1/videos/{jid}/cancel",
    ):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/v1/sessions"]["post"]["requestBody"]["content"]
    assert client.get("/healthz").json() == {"status": "ok", "auth_required": False}
    info = client.get("/v1/info").json()
    assert set(info["families"]) == {"seem", "semantic_sam"}
    assert info["video_tracker"] in ("mask-propagation", "seem.video")
    assert info["limits"]["max_pixels"] == 25_000_000 and "api_key" not in info["limits"]
    page = client.get("/")
    assert page.status_code == 200 and "seem" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200


def test_upload_multipart_raw_info_delete(client: TestClient, image_bytes: bytes, image: np.ndarray) -> None:
    r = _upload(client, image_bytes, name="../../etc/passwd")  # the file name is a label, never a path
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["height"], out["width"]) == image.shape[:2]
    assert out["families"] == ["seem"] and out["bytes"] > image.nbytes and out["objects"] == 0
    sid = out["session_id"]
    raw = client.post("/v1/sessions", content=image_bytes, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 201 and raw.json()["width"] == image.shape[1]
    info = client.get(f"/v1/sessions/{sid}").json()
    assert info["session_id"] == sid and 0 < info["expires_in_s"] <= 1800
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    _err(client.get(f"/v1/sessions/{sid}"), 404, "session_not_found", "was deleted")
    _err(client.delete(f"/v1/sessions/{sid}"), 404, "session_not_found")
    client.delete(f"/v1/sessions/{raw.json()['session_id']}")


# ----------------------------------------------------------------------------------------------------- prompts


def test_click_rounds_match_library_and_undo(client: TestClient, sid: str, direct: Segmenter) -> None:
    h, w = direct.original_size
    r = _segment(client, sid, {"points": [[240, 160]]}, mask_formats=["rle", "png"])
    assert r.status_code == 200, r.text
    o1 = r.json()
    assert o1["kind"] == "interactive" and o1["round"] == 1 and len(o1["masks"]) == 1
    m1 = o1["masks"][0]
    ref = direct.segment(PromptSet(points=Points([[240, 160]])))[0]
    np.testing.assert_array_equal(_mask(m1), ref.mask)
    np.testing.assert_array_equal(_png_mask(m1["png"]), ref.mask)
    assert m1["label"] == ref.label and m1["score"] == pytest.approx(ref.score)
    assert m1["bbox"] == list(ref.bbox) and m1["area"] == ref.area and m1["source"] == "visual"
    assert m1["segmentation"]["size"] == [h, w]

    # round 2: a negative correction only (valid because the object already has a positive click)
    oid = o1["object_id"]
    r2 = _segment(client, sid, {"points": [[20, 20, 0]]}, object_id=oid)
    assert r2.status_code == 200, r2.text
    o2 = r2.json()
    assert o2["object_id"] == oid and o2["round"] == 2 and "1-" in o2["prompts"]
    # the library: the same two rounds with the memory prompt from round 2
    from seem.session import InteractiveSession

    sess = InteractiveSession(direct, 1)
    sess.click(240, 160)
    lib2 = sess.click(20, 20, positive=False)
    np.testing.assert_array_equal(_mask(o2["masks"][0]), lib2.mask)

    listed = client.get(f"/v1/sessions/{sid}/objects?mask_formats=png").json()["objects"]
    assert [o["object_id"] for o in listed] == [oid] and "png" in listed[0]["masks"][0]
    assert "segmentation" not in listed[0]["masks"][0]
    one = client.get(f"/v1/sessions/{sid}/objects/{oid}").json()
    np.testing.assert_array_equal(_mask(one["masks"][0]), lib2.mask)

    u = client.post(f"/v1/sessions/{sid}/objects/{oid}/undo").json()
    assert u["round"] == 1
    np.testing.assert_array_equal(_mask(u["masks"][0]), ref.mask)
    u0 = client.post(f"/v1/sessions/{sid}/objects/{oid}/undo").json()
    assert u0["round"] == 0 and u0["masks"] == []
    _err(client.post(f"/v1/sessions/{sid}/objects/{oid}/undo"), 409, "nothing_to_undo")
    assert client.delete(f"/v1/sessions/{sid}/objects/{oid}").status_code == 204
    _err(client.get(f"/v1/sessions/{sid}/objects/{oid}"), 404, "object_not_found")


def test_every_prompt_kind_matches_library(client: TestClient, sid: str, direct: Segmenter) -> None:
    h, w = direct.original_size
    disk = np.zeros((h, w), dtype=bool)
    disk[100:200, 150:300] = True
    png = io.BytesIO()
    Image.fromarray(disk.astype(np.uint8) * 255).save(png, format="PNG")
    from seem.results import mask_to_rle

    cases = [
        ({"boxes": [[100, 50, 300, 250]]}, PromptSet(boxes=Box(100, 50, 300, 250))),
        (
            {"scribbles": [{"points": [[120, 100], [200, 150], [260, 180]], "width": 7}]},
            PromptSet(scribbles=Scribble([[120, 100], [200, 150], [260, 180]], width=7)),
        ),
        (
            {"polygons": [{"points": [[100, 100], [300, 100], [200, 250]]}]},
            PromptSet(polygons=Polygon([[100, 100], [300, 100], [200, 250]])),
        ),
        ({"masks": [{"rle": mask_to_rle(disk)}]}, PromptSet(masks=MaskPrompt(disk))),
        ({"masks": [{"png": base64.b64encode(png.getvalue()).decode()}]}, PromptSet(masks=MaskPrompt(disk))),
        ({"text": "the flower"}, PromptSet(text="the flower")),
        (
            {"points": [[240, 160, 1], [30, 30, 0]], "boxes": [[150, 80, 350, 260]]},
            PromptSet(points=Points([[240, 160], [30, 30]], [1, 0]), boxes=Box(150, 80, 350, 260)),
        ),
    ]
    for prompts, ps in cases:
        r = _segment(client, sid, prompts)
        assert r.status_code == 200, (prompts, r.text)
        got = r.json()["masks"][0]
        ref = direct.segment(ps)[0]
        np.testing.assert_array_equal(_mask(got), ref.mask, err_msg=str(list(prompts)))
        assert got["source"] == ref.source and got["label"] == ref.label
    # labels can be switched off per object
    r = _segment(client, sid, {"points": [[240, 160]]}, labels=False)
    assert "label" not in r.json()["masks"][0]


def test_reference_session(client: TestClient, sid: str, direct: Segmenter) -> None:
    ref_bytes = require(REF_IMAGE, "grabcut images").read_bytes()
    ref_sid = _upload(client, ref_bytes, name="example.jpg").json()["session_id"]
    prompts = {"reference": {"session_id": ref_sid, "prompts": {"scribbles": [{"points": [[150, 120], [250, 200]]}]}}}
    r = _segment(client, sid, prompts)
    assert r.status_code == 200, r.text
    got = r.json()["masks"][0]
    assert got["source"] == "reference"
    lib = direct.segment_like(read_image(ref_bytes), PromptSet(scribbles=Scribble([[150, 120], [250, 200]])))
    np.testing.assert_array_equal(_mask(got), lib.mask)
    # v1 cannot mix visual prompts on this image with a reference in one object: a clear 422
    bad = dict(prompts, points=[[10, 10]])
    _err(_segment(client, sid, bad), 422, "invalid_prompt", "reference")
    # the reference must be an existing session (ids are never paths)
    missing = {"reference": {"session_id": "../../etc/passwd", "prompts": {"points": [[5, 5]]}}}
    _err(_segment(client, sid, missing), 404, "session_not_found")
    # reference prompts are checked against the reference image
    outside = {"reference": {"session_id": ref_sid, "prompts": {"points": [[5000, 5]]}}}
    _err(_segment(client, sid, outside), 422, "invalid_prompt", "outside")
    client.delete(f"/v1/sessions/{ref_sid}")


def test_prompt_refusals(client: TestClient, sid: str) -> None:
    _err(_segment(client, sid, {"points": [[5000, 10]]}), 422, "invalid_prompt", "outside")
    _err(_segment(client, sid, {}), 422, "invalid_prompt", "empty")
    _err(_segment(client, sid, {"points": [[10, 10, 0]]}), 422, "invalid_prompt", "positive")
    _err(_segment(client, sid, {"boxes": [[10, 10, 5, 5]]}), 422, "invalid_prompt", "degenerate")
    _err(_segment(client, sid, {"boxes": [[1, 2, 3]]}), 422, "invalid_request", "x0, y0, x1, y1")
    _err(_segment(client, sid, {"points": [[1, 2, 7]]}), 422, "invalid_request", "label")
    _err(_segment(client, sid, {"bogus": 1}), 422, "invalid_request")
    _err(_segment(client, sid, {"text": "x" * 501}), 422, "invalid_request")
    _err(_segment(client, sid, {"masks": [{"png": "/etc/passwd"}]}), 422, "invalid_request", "base64")
    _err(_segment(client, sid, {"masks": [{"rle": {"size": [4, 4], "counts": "0"}}]}), 422, "invalid_prompt")
    _err(_segment(client, sid, {"masks": [{}]}), 422, "invalid_prompt", "exactly one")
    _err(_segment(client, sid, {"points": [[1, 1]]}, object_id="o_missing"), 404, "object_not_found")
    bad_json = client.post(
        f"/v1/sessions/{sid}/segment", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _err(bad_json, 422, "invalid_request")
    _err(_segment(client, "s_unknown", {"points": [[1, 1]]}), 404, "session_not_found", "does not exist")
    _err(client.get(f"/v1/sessions/{sid}/objects?mask_formats=jpeg"), 422, "invalid_request")


# ----------------------------------------------------------------------------------------------------- granularity


def test_granularity_levels_match_library(
    client: TestClient, sid: str, ssam_model: SemanticSAM, image: np.ndarray
) -> None:
    r = client.post(f"/v1/sessions/{sid}/granularity", json={"points": [[240, 160]], "mask_formats": ["rle", "png"]})
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["kind"] == "granularity" and o["round"] == 1
    assert [m["level"] for m in o["masks"]] == [1, 2, 3, 4, 5, 6]  # every level: what a slider needs
    g = GranularityPredictor(ssam_model)
    g.set_image(image)
    lib = g.predict([[240, 160]], sort="level", dedup_iou=1.0, min_iou=-float("inf"))
    for got, ref in zip(o["masks"], lib, strict=True):
        np.testing.assert_array_equal(_mask(got), ref.mask)
        np.testing.assert_array_equal(_png_mask(got["png"]), ref.mask)
        assert got["predicted_iou"] == pytest.approx(ref.predicted_iou)
    assert o["selected_level"] == max(lib, key=lambda m: m.predicted_iou).level
    oid = o["object_id"]
    # a second click accumulates; the chosen level is kept for exports
    r2 = client.post(
        f"/v1/sessions/{sid}/granularity",
        json={"object_id": oid, "points": [[300, 200, 1]], "levels": [2, 5], "level": 5},
    ).json()
    assert r2["round"] == 2 and [m["level"] for m in r2["masks"]] == [2, 5] and r2["selected_level"] == 5
    lib2 = g.predict([[240, 160], [300, 200]], levels=[2, 5], sort="level", dedup_iou=1.0, min_iou=-float("inf"))
    np.testing.assert_array_equal(_mask(r2["masks"][1]), lib2[1].mask)
    back = client.post(f"/v1/sessions/{sid}/objects/{oid}/undo").json()
    assert back["round"] == 1 and len(back["masks"]) == 6
    # refusals
    url = f"/v1/sessions/{sid}/granularity"
    _err(client.post(url, json={"points": [[240, 160]], "levels": [7]}), 422, "invalid_request", "1..6")
    _err(client.post(url, json={"points": [[240, 160]], "levels": [2, 2]}), 422, "invalid_request", "twice")
    _err(client.post(url, json={}), 422, "invalid_prompt", "click")
    _err(client.post(url, json={"points": [[9999, 1]]}), 422, "invalid_prompt", "outside")
    seg = _segment(client, sid, {"points": [[240, 160]]}).json()
    _err(client.post(url, json={"object_id": seg["object_id"], "points": [[1, 1]]}), 409, "wrong_object_kind")
    _err(_segment(client, sid, {"points": [[1, 1]]}, object_id=oid), 409, "wrong_object_kind")


# ----------------------------------------------------------------------------------------------------- image-level


def test_panoptic_with_class_list(client: TestClient, sid: str, direct: Segmenter) -> None:
    classes, stuff = ["flower", "leaf", "grass", "sky"], ["grass", "sky"]
    r = client.post(
        f"/v1/sessions/{sid}/panoptic",
        json={
            "class_names": classes,
            "stuff_classes": stuff,
            "panoptic_png": True,
            "object_mask_threshold": 0.0,
            "overlap_threshold": 0.0,
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    lib = direct.panoptic(classes, stuff_classes=stuff, object_mask_threshold=0.0, overlap_threshold=0.0)
    assert len(out["objects"]) == len(lib.segments) > 0
    for o, s in zip(out["objects"], lib.segments, strict=True):
        assert o["kind"] == "panoptic" and o["masks"][0]["label"] == s.label
        np.testing.assert_array_equal(_mask(o["masks"][0]), s.mask)
    pan = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["panoptic_png"]))).convert("RGB"))
    np.testing.assert_array_equal(lib.ids_from_coco_png(pan), lib.panoptic_seg)
    assert [c["name"] for c in out["coco_panoptic"]["categories"]] == classes
    listed = client.get(f"/v1/sessions/{sid}/objects").json()["objects"]
    assert len(listed) == len(lib.segments)  # stored as objects
    _err(client.post(f"/v1/sessions/{sid}/panoptic", json={"class_names": ["a", "a"]}), 422, "invalid_request")
    _err(
        client.post(f"/v1/sessions/{sid}/panoptic", json={"class_names": ["a"], "stuff_classes": ["b"]}),
        422,
        "invalid_request",
    )
    # not stored when asked so
    r = client.post(f"/v1/sessions/{sid}/panoptic", json={"class_names": classes, "store": False})
    assert r.status_code == 200
    assert len(client.get(f"/v1/sessions/{sid}/objects").json()["objects"]) == len(lib.segments)


def test_everything_both_families(
    client: TestClient, sid: str, seem_model: SEEMModel, ssam_model: SemanticSAM, image: np.ndarray
) -> None:
    body = {"points_per_side": 3, "pred_iou_thresh": -1e9, "stability_score_thresh": 0.0, "box_nms_thresh": 0.99}
    r = client.post(f"/v1/sessions/{sid}/everything", json={**body, "family": "seem"})
    assert r.status_code == 200, r.text
    out = r.json()
    gen = AutomaticMaskGenerator(
        seem_model, points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=0.99
    )
    lib = sorted(gen.generate(image), key=lambda x: -x["predicted_iou"])
    assert out["family"] == "seem" and len(out["objects"]) == len(lib) > 0
    for o, rec in zip(out["objects"], lib, strict=True):
        np.testing.assert_array_equal(_mask(o["masks"][0]), rec["segmentation"])
        assert o["kind"] == "everything"
    r = client.post(f"/v1/sessions/{sid}/everything", json={**body, "points_per_side": 2, "levels": [1, 6]})
    assert r.status_code == 200, r.text
    ss = r.json()
    assert ss["family"] == "semantic_sam" and all(o["masks"][0]["level"] in (1, 6) for o in ss["objects"])
    _err(client.post(f"/v1/sessions/{sid}/everything", json={"points_per_side": 33}), 422, "invalid_request", "limit")
    _err(client.post(f"/v1/sessions/{sid}/everything", json={"family": "seem", "levels": [1]}), 422, "invalid_request")


def test_export_formats(client: TestClient, sid: str, direct: Segmenter) -> None:
    a = _segment(client, sid, {"points": [[240, 160]]}).json()
    b = _segment(client, sid, {"boxes": [[10, 10, 200, 150]]}).json()
    g = client.post(f"/v1/sessions/{sid}/granularity", json={"points": [[100, 100]]}).json()
    ma, mb = _mask(a["masks"][0]), _mask(b["masks"][0])
    coco = client.get(f"/v1/sessions/{sid}/export").json()
    assert coco["images"][0]["width"] == direct.original_size[1]
    assert [x["object_id"] for x in coco["annotations"]] == [a["object_id"], b["object_id"], g["object_id"]]
    np.testing.assert_array_equal(rle_to_mask(coco["annotations"][0]["segmentation"]), ma)
    gsel = next(m for m in g["masks"] if m["level"] == g["selected_level"])
    np.testing.assert_array_equal(rle_to_mask(coco["annotations"][2]["segmentation"]), _mask(gsel))
    assert coco["annotations"][1]["bbox"] == b["masks"][0]["bbox_xywh"]
    r = client.get(f"/v1/sessions/{sid}/export?format=png")
    assert r.headers["content-type"] == "image/png" and "attachment" in r.headers["content-disposition"]
    index = np.asarray(Image.open(io.BytesIO(r.content)))
    exp = np.zeros(ma.shape, np.uint8)
    exp[ma] = 1
    exp[mb] = 2
    exp[_mask(gsel)] = 3
    np.testing.assert_array_equal(index, exp)
    over = np.asarray(Image.open(io.BytesIO(client.get(f"/v1/sessions/{sid}/export?format=overlay").content)))
    assert over.shape == (*ma.shape, 3)
    # chosen objects, a chosen granularity level, in the given order
    body = {"format": "png", "objects": [{"object_id": g["object_id"], "level": 6}, {"object_id": a["object_id"]}]}
    index2 = np.asarray(Image.open(io.BytesIO(client.post(f"/v1/sessions/{sid}/export", json=body).content)))
    exp2 = np.zeros(ma.shape, np.uint8)
    exp2[_mask(next(m for m in g["masks"] if m["level"] == 6))] = 1
    exp2[ma] = 2
    np.testing.assert_array_equal(index2, exp2)
    _err(client.get(f"/v1/sessions/{sid}/export?format=tiff"), 422, "invalid_request")
    _err(client.post(f"/v1/sessions/{sid}/export", json={"objects": [{"object_id": "o_x"}]}), 404)
    reset = client.post(f"/v1/sessions/{sid}/reset").json()
    assert reset["objects"] == [] and client.get(f"/v1/sessions/{sid}/export").json()["annotations"] == []


# ----------------------------------------------------------------------------------------------------- uploads


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width × height`` 1-bit pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_upload_refusals(client: TestClient, image_bytes: bytes) -> None:
    _err(_upload(client, b"hello, I am text", name="a.png"), 415, "unsupported_media_type", "by content")
    _err(client.post("/v1/sessions", json={"image": "/etc/passwd"}), 415, "unsupported_media_type")
    _err(_upload(client, b""), 422, "invalid_image", "empty")
    _err(_upload(client, image_bytes[:3000]), 422, "invalid_image")  # truncated JPEG
    _err(_upload(client, _png((4000, 20))), 422, "invalid_image", "long side")  # aspect ratio 200:1
    t0 = time.perf_counter()
    for w, h in ((100_000, 100_000), (10_000, 5_000)):  # 10 gigapixels (PIL's bomb check), 50 MP (our limit)
        bomb = _png_header_only(w, h)
        assert len(bomb) < 1000
        _err(_upload(client, bomb), 413, "too_large")
    assert time.perf_counter() - t0 < 2.0  # refused from the header, never decoded
    r = client.post("/v1/sessions", files={"other": ("a.png", image_bytes, "image/png")})
    _err(r, 422, "invalid_request", "'image'")
    gif = io.BytesIO()
    Image.fromarray(read_image(image_bytes)).save(gif, format="GIF")
    r = _upload(client, gif.getvalue(), name="not-a.png")  # the content decides, not the name
    assert r.status_code == 201
    client.delete(f"/v1/sessions/{r.json()['session_id']}")


def test_size_limits(seem_model: SEEMModel, vocab_dir: Path, image_bytes: bytes) -> None:
    app = create_app(seem_model, config=_cfg(vocab_dir, max_upload_bytes=10_000, max_pixels=50_000))
    with TestClient(app) as c:
        _err(_upload(c, image_bytes), 413, "too_large", "limit")  # Content-Length over the limit

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(image_bytes), 4096):
                yield image_bytes[i : i + 4096]

        streamed = c.post("/v1/sessions", content=chunks(), headers={"Content-Type": "image/jpeg"})
        _err(streamed, 413, "too_large")  # no Content-Length: cut off while streaming
        _err(_upload(c, _png((300, 200))), 413, "too_large", "pixels")  # 60 000 > 50 000 pixels
        assert _upload(c, _png((200, 200))).status_code == 201


# ----------------------------------------------------------------------------------------------------- load control


def test_busy_gives_503_at_once_and_timeout_gives_504(
    seem_model: SEEMModel, vocab_dir: Path, image_bytes: bytes
) -> None:
    app = create_app(seem_model, config=_cfg(vocab_dir, workers=1, max_pending=2))
    gate = app.state.gate
    release = threading.Event()
    with TestClient(app) as c:
        sid = _upload(c, image_bytes).json()["session_id"]
        gate.timeout_s = 0.5  # the per-request time limit (ServeConfig.request_timeout_s), shortened for the test
        assert _segment(c, sid, {"points": [[10, 10]]}, labels=False).status_code == 200
        running = threading.Event()

        def block() -> None:
            running.set()
            release.wait(10)

        busy = gate.submit(block)  # the only worker is busy
        assert running.wait(5)  # (running, not merely queued: a click would be served before a queued call)
        t0 = time.perf_counter()
        r = _segment(c, sid, {"points": [[10, 10]]}, labels=False)  # admitted, waits, times out
        _err(r, 504, "timeout")
        assert 0.4 < time.perf_counter() - t0 < 3.0
        blocker2 = gate.submit(release.wait, 10)  # now 2 admitted: the limit
        t0 = time.perf_counter()
        r = _segment(c, sid, {"points": [[10, 10]]}, labels=False)
        _err(r, 503, "busy", "limit")
        assert r.headers["retry-after"] == "1" and time.perf_counter() - t0 < 1.0
        release.set()
        busy.result(5)
        blocker2.result(5)
        deadline = time.time() + 5
        while gate.pending and time.time() < deadline:
            time.sleep(0.01)
        assert _segment(c, sid, {"points": [[10, 10]]}, labels=False).status_code == 200


def test_session_expiry_and_lru_budget(seem_model: SEEMModel, vocab_dir: Path, image_bytes: bytes) -> None:
    app = create_app(seem_model, config=_cfg(vocab_dir, session_ttl_s=0.3))
    with TestClient(app) as c:
        one = _upload(c, image_bytes).json()
        time.sleep(0.45)
        _err(c.get(f"/v1/sessions/{one['session_id']}"), 404, "session_not_found", "expired")
        assert app.state.service.store.sweep() == 0 and len(app.state.service.store) == 0
    # budget for one session: the second upload evicts the first
    budget = int(one["bytes"] * 1.5)
    app = create_app(seem_model, config=_cfg(vocab_dir, cache_bytes=budget))
    with TestClient(app) as c:
        a = _upload(c, image_bytes).json()["session_id"]
        b = _upload(c, image_bytes).json()["session_id"]
        _err(c.get(f"/v1/sessions/{a}"), 404, "session_not_found", "evicted")
        assert c.get(f"/v1/sessions/{b}").status_code == 200
        assert app.state.service.store.total_bytes <= budget
        assert app.state.service.pool.created == 2
        c3 = _upload(c, image_bytes).json()["session_id"]  # evicts b
        _err(c.get(f"/v1/sessions/{b}"), 404, "session_not_found", "evicted")
        assert c.get(f"/v1/sessions/{c3}").status_code == 200
        assert app.state.service.pool.created == 2  # the evicted session's Segmenter was reused
    app = create_app(seem_model, config=_cfg(vocab_dir, cache_bytes=budget // 4))
    with TestClient(app) as c:
        _err(_upload(c, image_bytes), 413, "too_large", "cache")
    app = create_app(seem_model, config=_cfg(vocab_dir, max_sessions=1, max_objects=1))
    with TestClient(app) as c:
        a = _upload(c, image_bytes).json()["session_id"]
        b = _upload(c, image_bytes).json()["session_id"]
        _err(c.get(f"/v1/sessions/{a}"), 404, "session_not_found", "evicted")
        assert _segment(c, b, {"points": [[10, 10]]}, labels=False).status_code == 200
        _err(_segment(c, b, {"points": [[20, 20]]}, labels=False), 409, "too_many_objects")


def test_api_key_and_cors(seem_model: SEEMModel, vocab_dir: Path, image_bytes: bytes) -> None:
    key = "s3cret-key-123"
    app = create_app(seem_model, config=_cfg(vocab_dir, api_key=key))
    with TestClient(app) as c:
        _err(c.get("/v1/info"), 401, "unauthorized")
        _err(c.get("/v1/info", headers={"Authorization": "Bearer wrong-key-0000"}), 401)
        r = _upload(c, image_bytes)  # refused before the body is read
        _err(r, 401)
        assert c.get("/v1/info", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/v1/info", headers={"X-API-Key": key}).status_code == 200
        assert c.get("/healthz").json()["auth_required"] is True
        assert c.get("/").status_code == 200 and c.get("/openapi.json").status_code == 200
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "http://evil.example"}).headers
    app = create_app(seem_model, config=_cfg(vocab_dir, cors_origins=("http://app.example",)))
    with TestClient(app) as c:
        r = c.get("/healthz", headers={"Origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        pre = c.options(
            "/v1/sessions",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 200
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "http://x.example"}).headers


def test_missing_families(seem_model: SEEMModel, ssam_model: SemanticSAM, vocab_dir: Path, image_bytes: bytes) -> None:
    app = create_app(seem_model, config=_cfg(vocab_dir))
    with TestClient(app) as c:
        sid = _upload(c, image_bytes).json()["session_id"]
        _err(c.post(f"/v1/sessions/{sid}/granularity", json={"points": [[5, 5]]}), 400, "feature_unavailable")
        _err(c.post(f"/v1/sessions/{sid}/everything", json={"family": "semantic_sam"}), 400, "feature_unavailable")
    app = create_app(ssam_model, config=_cfg(vocab_dir))  # Semantic-SAM only
    with TestClient(app) as c:
        up = _upload(c, image_bytes).json()
        assert up["families"] == ["semantic_sam"]
        sid = up["session_id"]
        assert c.post(f"/v1/sessions/{sid}/granularity", json={"points": [[5, 5]]}).status_code == 200
        _err(_segment(c, sid, {"points": [[5, 5]]}), 400, "feature_unavailable")
        _err(c.post(f"/v1/sessions/{sid}/panoptic", json={}), 400, "feature_unavailable")
        _err(c.get("/v1/videos/v_x"), 400, "feature_unavailable")
    with pytest.raises(TypeError, match="SEEMModel"):
        create_app(None)


# ----------------------------------------------------------------------------------------------------- video


def _frames(n: int) -> list[bytes]:
    d = require(CLIP, "DAVIS-2016 clips (../shared/data)")
    return [(d / f"{i:05d}.jpg").read_bytes() for i in range(n)]


def _post_video(c: TestClient, frames: list[bytes], prompts: Any, video: bytes | None = None) -> Any:
    files = [("frames", (f"{i:05d}.jpg", b, "image/jpeg")) for i, b in enumerate(frames)]
    if video is not None:
        files.append(("video", ("clip.avi", video, "video/x-msvideo")))
    data = {"prompts": prompts if isinstance(prompts, str) else json.dumps(prompts)}
    return c.post("/v1/videos", files=files, data=data)


def _wait(c: TestClient, jid: str, until: tuple[str, ...] = ("done", "failed", "cancelled")) -> dict[str, Any]:
    seen = []
    deadline = time.time() + 30
    while time.time() < deadline:
        st = c.get(f"/v1/videos/{jid}").json()
        seen.append(st["done"])
        if st["status"] in until:
            st["seen"] = seen
            return st
        time.sleep(0.05)
    raise AssertionError(f"job {jid} did not finish: {st}")


def test_video_job_progress_results_and_refusals(client: TestClient, seem_model: SEEMModel, vocab_dir: Path) -> None:
    frames = _frames(2)
    prompts = {"points": [[420, 240]]}
    r = _post_video(client, frames, prompts)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["frames"] == 2
    _err(client.get(f"/v1/videos/{job['job_id']}/result"), 409, "not_ready")
    st = _wait(client, job["job_id"])
    assert st["status"] == "done", st
    assert st["done"] == 2 and st["progress"] == 1.0 and st["result_url"].endswith("/result")
    assert st["seen"] == sorted(st["seen"])  # progress only grows
    res = client.get(st["result_url"]).json()
    assert [f["frame"] for f in res["frames"]] == [0, 1] and (res["height"], res["width"]) == (480, 854)
    # the job's masks are the tracker's own (seem.video's VideoTracker, or the mask-propagation fallback)
    seg = Segmenter(seem_model, cache_dir=vocab_dir, progress=False)
    if res["tracker"] == "seem.video":
        from seem.video import VideoTracker

        arrays = [read_image(b) for b in frames]
        lib = [r.masks[1] for r in VideoTracker(seg).track(arrays, {1: PromptSet(points=Points([[420, 240]]))})]
    else:
        lib = MaskPropagationTracker(lambda: seg)(
            [read_image(b) for b in frames], PromptSet(points=Points([[420, 240]])), lambda d, n: None
        )
    m0 = lib[0]
    for f, m in zip(res["frames"], lib, strict=True):
        np.testing.assert_array_equal(rle_to_mask(f["segmentation"]), m)
    z = zipfile.ZipFile(io.BytesIO(client.get(f"{st['result_url']}?format=zip").content))
    assert z.namelist() == ["masks/00000.png", "masks/00001.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(z.open("masks/00000.png"))) > 0, m0)
    assert client.delete(f"/v1/videos/{job['job_id']}").status_code == 204
    _err(client.get(f"/v1/videos/{job['job_id']}"), 404, "job_not_found")

    # a video file (AVI, MJPG) instead of frames
    import cv2

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"seem_serve_test_{os.getpid()}.avi"
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 5, (854, 480))
    for b in frames[:2]:
        w.write(read_image(b)[:, :, ::-1].copy())
    w.release()
    video = tmp.read_bytes()
    tmp.unlink()
    r = _post_video(client, [], prompts, video=video)
    assert r.status_code == 202, r.text
    st = _wait(client, r.json()["job_id"])
    assert st["status"] == "done" and st["frames"] == 2

    # refusals
    _err(_post_video(client, [], prompts, video=b"RIFF0000WAVEfmt not a video"), 415, "unsupported_media_type")
    _err(_post_video(client, frames[:1], prompts, video=video), 422, "invalid_request", "not both")
    no_frames = client.post(
        "/v1/videos", files=[("other", ("a.txt", b"x", "text/plain"))], data={"prompts": json.dumps(prompts)}
    )
    _err(no_frames, 422, "invalid_request", "no frames")
    _err(_post_video(client, [b"text, not an image"], prompts), 415, "unsupported_media_type")
    _err(_post_video(client, frames[:1], "{nope"), 422, "invalid_request", "JSON")
    _err(_post_video(client, frames[:1], {"points": [[5000, 1]]}), 422, "invalid_prompt", "outside")
    _err(_post_video(client, frames[:1], {"points": [[5, 1, 0]]}), 422, "invalid_prompt", "positive")
    small = _png((64, 48))
    _err(_post_video(client, [frames[0], small], prompts), 422, "invalid_request", "frame 1")
    _err(client.post("/v1/videos", json={"prompts": prompts}), 415, "unsupported_media_type")
    _err(client.get("/v1/videos/v_missing"), 404, "job_not_found")


def test_video_cancel_failure_and_job_limit(seem_model: SEEMModel, vocab_dir: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_tracker(frames: Any, prompts: PromptSet, progress: Any) -> list[np.ndarray]:
        out = []
        for i, f in enumerate(frames):
            started.set()
            release.wait(5)
            out.append(np.zeros(f.shape[:2], dtype=bool))
            progress(i + 1, len(frames))
        return out

    app = create_app(seem_model, config=_cfg(vocab_dir, max_jobs=1, max_video_frames=3), tracker=slow_tracker)
    frames = _frames(3)
    with TestClient(app) as c:
        assert c.get("/v1/info").json()["video_tracker"] == "slow_tracker"
        jid = _post_video(c, frames[:2], {"points": [[10, 10]]}).json()["job_id"]
        assert started.wait(10)
        _err(_post_video(c, frames[:1], {"points": [[10, 10]]}), 429, "too_many_jobs")
        assert c.post(f"/v1/videos/{jid}/cancel").status_code == 200
        release.set()
        st = _wait(c, jid)
        assert st["status"] == "cancelled" and st["done"] == 1
        assert c.delete(f"/v1/videos/{jid}").status_code == 204
        _err(_post_video(c, frames + frames[:1], {"points": [[10, 10]]}), 413, "too_large", "frames")

    def broken(frames: Any, prompts: PromptSet, progress: Any) -> list[np.ndarray]:
        raise ValueError("the object was lost on frame 1")

    app = create_app(seem_model, config=_cfg(vocab_dir), tracker=broken)
    with TestClient(app) as c:
        jid = _post_video(c, frames[:1], {"points": [[10, 10]]}).json()["job_id"]
        st = _wait(c, jid)
        assert st["status"] == "failed" and "lost on frame 1" in st["error"]
        _err(c.get(f"/v1/videos/{jid}/result"), 409, "not_ready", "failed")


def test_reference_image_prompt_type(direct: Segmenter) -> None:
    """The reference prompt the API builds is the library's own ``ReferenceImage`` (no path reading)."""
    from seem.serve.convert import to_prompt_set
    from seem.serve.schemas import PromptsIn

    img = direct.image
    p = PromptsIn.model_validate({"reference": {"session_id": "s_x", "prompts": {"points": [[5, 5]]}}})
    ps = to_prompt_set(p, direct.original_size, lambda sid: np.array(img))
    assert isinstance(ps.reference, ReferenceImage) and ps.reference.image.shape == img.shape


def test_gate_serves_interactive_calls_first() -> None:
    from seem.serve.gate import HEAVY, INTERACTIVE, InferenceGate

    gate = InferenceGate(workers=1, max_pending=4, timeout_s=5)
    release = threading.Event()
    order: list[str] = []
    running = threading.Event()

    def block() -> None:
        running.set()
        release.wait(5)

    first = gate.submit(block)
    assert running.wait(5)
    heavy = gate.submit(order.append, "upload", priority=HEAVY)
    click = gate.submit(order.append, "click", priority=INTERACTIVE)
    assert gate.pending == 3
    release.set()
    for f in (first, heavy, click):
        f.result(5)
    assert order == ["click", "upload"]
    deadline = time.time() + 2
    while gate.pending and time.time() < deadline:
        time.sleep(0.01)
    assert gate.pending == 0
    gate.shutdown()


def test_mask_propagation_fallback_tracker(seem_model: SEEMModel, vocab_dir: Path) -> None:
    """The tracker used when ``seem.video`` is absent: frame t from frame t-1's mask as a mask prompt."""
    from seem.serve.jobs import JobCancelled

    frames = [read_image(b) for b in _frames(2)]
    seg = Segmenter(seem_model, cache_dir=vocab_dir, progress=False)
    released: list[Segmenter] = []
    tracker = MaskPropagationTracker(lambda: seg, released.append)
    seen: list[tuple[int, int]] = []
    prompts = PromptSet(points=Points([[420, 240]]))
    masks = tracker(frames, prompts, lambda d, n: seen.append((d, n)))
    assert seen == [(1, 2), (2, 2)] and released == [seg] and len(masks) == 2
    assert seg.original_size == frames[1].shape[:2]  # the tracker left frame 1 encoded: check frame 1 on it
    m0 = masks[0]
    expected = seg.segment(PromptSet(masks=MaskPrompt(m0)), labels=False)[0].mask if m0.any() else np.zeros_like(m0)
    np.testing.assert_array_equal(masks[1], expected)

    def cancel(d: int, n: int) -> None:
        raise JobCancelled

    with pytest.raises(JobCancelled):
        tracker(frames, prompts, cancel)
    assert released == [seg, seg]  # the Segmenter goes back even when cancelled


def test_cli_defaults_and_no_model_message(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from seem.loading import default_model_dir
    from seem.serve.cli import add_serve_parser, build_config

    parser = argparse.ArgumentParser(prog="seem")
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, None)  # loopback unless told otherwise
    cfg = build_config(args)
    assert cfg == ServeConfig(api_key=os.environ.get("SEEM_API_KEY") or None)
    args = parser.parse_args(["serve", "--cors-origin", "http://a.example", "--max-pending", "3", "--cache-mb", "64"])
    cfg = build_config(args)
    assert cfg.cors_origins == ("http://a.example",) and cfg.max_pending == 3 and cfg.cache_bytes == 64 << 20
    if default_model_dir() is None:  # no default model: seem.load's message, exit status 2
        assert args.func(parser.parse_args(["serve"])) == 2
        err = capsys.readouterr().err
        assert err.startswith("seem serve: seem has no default model")
    assert args.func(parser.parse_args(["serve", "--model", "/nonexistent/model.pt"])) == 2
    assert "model not found" in capsys.readouterr().err
    bad = parser.parse_args(["serve", "--max-pending", "-1"])
    assert bad.func(bad) == 2
    assert "max_pending" in capsys.readouterr().err
