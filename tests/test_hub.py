"""Registered names, downloads (served on 127.0.0.1) and ``seem.load``."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import SEEM_PARITY_DIR, require

from seem import hub
from seem.loading import load
from seem.models.checkpoints import CheckpointError
from seem.models.seem_model import SEEMModel


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 serving ``tmp_path / "www"``; yields (base url, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    finally:
        httpd.shutdown()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SEEM_CACHE", str(d))
    return d


def register(monkeypatch: pytest.MonkeyPatch, name: str, url: str, sha256: str | None, filename: str) -> None:
    entry = hub.ModelEntry(name, "seem", url, filename, sha256=sha256, variant="v1")
    monkeypatch.setitem(hub.REGISTRY, name, entry)


def test_download_verifies_hash_and_is_atomic(server, tmp_path: Path):
    url, www = server
    data = bytes(range(256)) * 1000
    (www / "blob.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "dl" / "blob.bin"
    assert hub.download(url + "blob.bin", dest, sha256=sha, progress=False) == sha
    assert dest.read_bytes() == data
    bad = tmp_path / "dl" / "bad.bin"
    with pytest.raises(hub.DownloadError, match="does not match"):
        hub.download(url + "blob.bin", bad, sha256="0" * 64, progress=False)
    assert not bad.exists() and not list(bad.parent.glob("*.part")), "no partial file may be left behind"
    with pytest.raises(hub.DownloadError, match="could not download"):
        hub.download(url + "missing.bin", tmp_path / "dl" / "m.bin", progress=False)


def test_fetch_caches_and_detects_tampering(server, cache: Path, monkeypatch: pytest.MonkeyPatch):
    url, www = server
    (www / "w.pt").write_bytes(b"weights v1")
    register(monkeypatch, "test-model", url + "w.pt", None, "w.pt")
    path = hub.fetch("test-model", progress=False)
    assert path == cache / "w.pt" and path.read_bytes() == b"weights v1"
    record = (cache / "w.pt.sha256").read_text().strip()
    assert record == hashlib.sha256(b"weights v1").hexdigest()  # trust on first use
    (www / "w.pt").unlink()
    assert hub.fetch("test-model", progress=False) == path  # served from the cache, no network
    path.write_bytes(b"tampered")
    with pytest.raises(hub.DownloadError, match="differs from the recorded"):
        hub.fetch("test-model", progress=False)
    with pytest.raises(ValueError, match="unknown model name"):
        hub.fetch("no-such-model")


def test_pinned_hash_from_environment(server, cache: Path, monkeypatch: pytest.MonkeyPatch):
    url, www = server
    (www / "p.pt").write_bytes(b"abc")
    register(monkeypatch, "pinned-model", url + "p.pt", None, "p.pt")
    monkeypatch.setenv("SEEM_SHA256_PINNED_MODEL", "1" * 64)
    with pytest.raises(hub.DownloadError, match="does not match"):
        hub.fetch("pinned-model", progress=False)
    assert not (cache / "p.pt").exists()


def test_load_registered_name_downloads_and_converts(server, cache: Path, monkeypatch: pytest.MonkeyPatch):
    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    url, www = server
    data = ckpt.read_bytes()
    (www / "seem_small_v1.pt").write_bytes(data)
    register(monkeypatch, "seem-small", url + "seem_small_v1.pt", hashlib.sha256(data).hexdigest(), "s.pt")
    model = load("seem-small")
    assert isinstance(model, SEEMModel) and not model.training
    official = torch.load(ckpt, weights_only=True)
    assert torch.equal(model.decoder.query_feat.weight, official["sem_seg_head.predictor.query_feat.weight"])


def test_load_paths_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from test_checkpoints import tiny_config

    import seem.loading

    SEEMModel(tiny_config()).save_pretrained(tmp_path / "tiny")
    assert isinstance(load(tmp_path / "tiny"), SEEMModel)
    assert load().config.name == "seem-default"  # the shipped default model
    # an installation without it (e.g. a package built without weights) says what to pass
    monkeypatch.setattr(seem.loading, "DEFAULT_MODEL_DIR", tmp_path / "no-default")
    with pytest.raises(ValueError, match="no default model"):
        load()
    with pytest.raises(FileNotFoundError, match="registered names"):
        load("seem-nonexistent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a seem model"):
        load(tmp_path / "empty")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load(junk)
