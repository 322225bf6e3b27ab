"""The web page of ``seem serve`` in a real browser: Playwright driving Debian's Chromium (headless).

A real server (uvicorn on 127.0.0.1, the small SEEM parity model) serves the page; the test opens a real image,
clicks on it and checks that the API returned a mask and that the page drew it (overlay pixels, mask list); then a
negative right click, a box drag, undo and the COCO download. Screenshots are saved under ``tests/artifacts/``
(git-ignored). Skips with the reason when Playwright or Chromium is missing (``pip install playwright`` and
``apt-get install -y chromium``; never ``playwright install``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA_DIR, REPO, SEEM_PARITY_DIR, require

CHROMIUM = os.environ.get("SEEM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / "tests" / "artifacts"
IMAGE = DATA_DIR / "grabcut" / "images" / "124084.jpg"  # 481 x 321

pytest.importorskip("fastapi", reason="seem[serve] is not installed (fastapi)")
uvicorn = pytest.importorskip("uvicorn", reason="seem[serve] is not installed (uvicorn)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set SEEM_CHROMIUM)", allow_module_level=True
    )

from seem.models.seem_model import SEEMModel  # noqa: E402
from seem.serve import ServeConfig, create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    d = require(SEEM_PARITY_DIR, "SEEM parity fixtures (SEEM_PARITY_DIR)")
    model, _ = SEEMModel.from_official(d / "seem_v1_small.pt", config=d / "seem_v1_small.yaml")
    vocab = tmp_path_factory.getbasetemp() / "serve_vocab"  # shared with test_serve_api.py (encoded once)
    vocab.mkdir(exist_ok=True)
    app = create_app(model, config=ServeConfig(vocab_cache_dir=vocab))
    app.state.service.warm()
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server: tuple[str, Any]) -> Iterator[Any]:
    url, _ = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url + "/")
        pg.wait_for_function("document.body.dataset.families === 'seem'")
        pg.set_input_files("#file", str(require(IMAGE, "grabcut images (../shared/data)")))
        pg.wait_for_selector("body[data-state=ready]", timeout=30_000)
        pg.errors = errors
        yield pg
        browser.close()


def _overlay_alpha_count(pg: Any, alpha: int) -> int:
    """Pixels of the overlay canvas whose alpha equals ``alpha`` (masks are drawn with alpha 130)."""
    return int(
        pg.evaluate(
            """(a) => { const c = document.getElementById('overlay');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] === a) n++; return n; }""",
            alpha,
        )
    )


def _at(pg: Any, fx: float, fy: float) -> tuple[float, float]:
    box = pg.locator("#overlay").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def test_click_shows_the_mask_the_api_returned(page: Any, server: tuple[str, Any]) -> None:
    pg = page
    assert pg.evaluate("document.getElementById('overlay').width") == 481  # the image's own pixel grid
    x, y = _at(pg, 0.5, 0.5)
    with pg.expect_response(lambda r: r.url.endswith("/segment") and r.request.method == "POST") as info:
        pg.mouse.click(x, y)
    resp = info.value
    assert resp.status == 200
    sent = json.loads(resp.request.post_data)
    assert sent["object_id"] is None and len(sent["prompts"]["points"]) == 1
    px, py, label = sent["prompts"]["points"][0]
    assert label == 1 and abs(px - 240.5) < 2 and abs(py - 160.5) < 2  # screen → image pixels
    out = resp.json()
    mask = out["masks"][0]
    assert mask["segmentation"]["size"] == [321, 481] and mask["area"] > 0
    pg.wait_for_function("document.getElementById('overlay').dataset.masksDrawn === '1'")
    assert pg.locator("#masks li").count() == 1
    assert pg.locator("#masks li").first.get_attribute("data-object-id") == out["object_id"]
    drawn = _overlay_alpha_count(pg, 130)
    assert abs(drawn - mask["area"]) <= 400, (drawn, mask["area"])  # the mask, less the click marker
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "serve_page_click.png"))
    # the page's RLE decoder agrees with pycocotools on the returned mask
    from seem.results import rle_to_mask

    counts = pg.evaluate("(s) => window.seemPage.rleCounts(s)", mask["segmentation"]["counts"])
    assert sum(counts) == 321 * 481
    ones = sum(counts[1::2])
    assert ones == int(rle_to_mask(mask["segmentation"]).sum()) == mask["area"]
    assert not pg.errors, pg.errors


def test_negative_click_box_undo_and_download(page: Any, server: tuple[str, Any]) -> None:
    pg = page
    x, y = _at(pg, 0.05, 0.05)
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as info:
        pg.mouse.click(x, y, button="right")  # a negative correction of the current object
    out = info.value.json()
    assert info.value.status == 200 and out["round"] == 2
    assert json.loads(info.value.request.post_data)["prompts"]["points"][0][2] == 0

    pg.click("#new-object")
    (x0, y0), (x1, y1) = _at(pg, 0.1, 0.1), _at(pg, 0.6, 0.7)
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as info:
        pg.mouse.move(x0, y0)
        pg.mouse.down()
        pg.mouse.move(x1, y1, steps=6)
        pg.mouse.up()
    sent = json.loads(info.value.request.post_data)
    assert sent["object_id"] is None and len(sent["prompts"]["boxes"]) == 1
    bx0, by0, bx1, by1 = sent["prompts"]["boxes"][0]
    assert abs(bx0 - 48) < 3 and abs(by0 - 32) < 3 and abs(bx1 - 288.6) < 3 and abs(by1 - 224.7) < 3
    pg.wait_for_function("document.querySelectorAll('#masks li').length === 2")
    pg.screenshot(path=str(ARTIFACTS / "serve_page_box.png"))

    with pg.expect_response(lambda r: "/undo" in r.url):
        pg.click("#undo")  # the box object had one round: undo removes it
    pg.wait_for_function("document.querySelectorAll('#masks li').length === 1 && !document.body.dataset.busy")

    pg.locator("#masks li input[type=checkbox]").first.uncheck()  # toggling hides the mask
    pg.wait_for_function("document.getElementById('overlay').dataset.masksDrawn === '0'")
    pg.locator("#masks li input[type=checkbox]").first.check()

    with pg.expect_download() as dl:
        pg.click("#dl-coco")
    coco = json.loads(Path(dl.value.path()).read_text())
    assert len(coco["annotations"]) == 1 and coco["images"][0]["width"] == 481
    assert not pg.errors, pg.errors
