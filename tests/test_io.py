"""Safe image reading (content sniffing, limits, conversions) and atomic writing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, SEEM_PARITY_DIR, require
from PIL import Image

from seem.io import (
    ImageError,
    ImageTypeError,
    read_image,
    read_mask,
    resize_image,
    sniff_image_format,
    write_files_atomically,
)


def _encode(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_real_files_by_content(tmp_path: Path) -> None:
    jpg = require(DATA_DIR / "grabcut" / "images" / "21077.jpg", "GrabCut image")
    a = read_image(jpg)
    assert a.shape == (321, 481, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    # the extension does not matter: a JPEG named .png is read as JPEG, a text file named .png is refused
    fake = tmp_path / "photo.png"
    fake.write_bytes(jpg.read_bytes())
    assert np.array_equal(read_image(fake), a)
    (tmp_path / "notes.png").write_text("hello, not an image")
    with pytest.raises(ImageError, match="not a supported image"):
        read_image(tmp_path / "notes.png")
    png = require(SEEM_PARITY_DIR / "images" / "coffee_original.png", "parity image")
    assert read_image(png).shape == (400, 600, 3)
    assert np.array_equal(read_image(png.read_bytes()), read_image(png))
    assert np.array_equal(read_image(Image.open(png)), read_image(str(png)))


def test_formats_and_modes() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    for fmt, kw in [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True}), ("GIF", {})]:
        data = _encode(rgb if fmt != "GIF" else rgb[:, :, 0], fmt, **kw)
        assert sniff_image_format(data[:16]) == fmt
        out = read_image(data)
        assert out.shape == (17, 23, 3)
        if fmt in ("PNG", "BMP", "TIFF", "WEBP"):
            assert np.array_equal(out, rgb), fmt
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    assert np.array_equal(read_image(_encode(gray, "PNG")), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.dstack([rgb, np.full((17, 23), 7, np.uint8)])
    assert np.array_equal(read_image(_encode(rgba, "PNG")), rgb)  # alpha dropped
    g16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    assert np.array_equal(read_image(_encode(g16, "PNG"))[:, :, 0], gray)  # 16-bit gray scaled to 8 bits
    assert read_image(Image.new("P", (4, 3))).shape == (3, 4, 3)
    assert read_image(Image.new("CMYK", (4, 3))).shape == (3, 4, 3)
    with pytest.raises(ImageTypeError, match="mode 'F'"):
        read_image(Image.new("F", (4, 3)))


def test_array_dtypes_and_shapes() -> None:
    base = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = read_image(base)
    assert np.array_equal(out, base) and out is not base
    out[0, 0, 0] = 99
    assert base[0, 0, 0] == 0  # never a view of the caller's data
    assert read_image(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]
    assert read_image(np.full((2, 2, 3), 0.5))[0, 0, 0] == 128
    assert read_image(np.full((2, 2), 65535, np.uint16))[0, 0, 0] == 255
    assert read_image(np.full((2, 2, 1), 200, np.int64))[0, 0].tolist() == [200] * 3
    assert read_image(np.zeros((2, 2, 4), np.uint8)).shape == (2, 2, 3)
    assert read_image(np.asfortranarray(np.zeros((5, 6, 3), np.uint8))).flags.c_contiguous
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        read_image(np.full((2, 2, 3), 2.0))
    with pytest.raises(ImageError, match="NaN"):
        read_image(np.full((2, 2, 3), np.nan))
    with pytest.raises(ImageError, match=r"0\.\.255"):
        read_image(np.full((2, 2, 3), -3, np.int16))
    with pytest.raises(ImageError, match="channels-first"):
        read_image(np.zeros((3, 20, 30), np.uint8))
    with pytest.raises(ImageError, match="channels"):
        read_image(np.zeros((20, 30, 5), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        read_image(np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        read_image(np.zeros((2, 2, 2, 3), np.uint8))
    with pytest.raises(ImageTypeError, match="dtype"):
        read_image(np.zeros((2, 2, 3), np.complex64))
    with pytest.raises(ImageTypeError, match="unsupported image type"):
        read_image(12)  # type: ignore[arg-type]


def test_limits_and_bad_files(tmp_path: Path) -> None:
    big = _encode(np.zeros((300, 400), np.uint8), "PNG")
    with pytest.raises(ImageError, match="more than the limit"):
        read_image(big, max_pixels=100_000)
    assert read_image(big, max_pixels=120_000).shape == (300, 400, 3)
    # a decompression bomb: a tiny file whose header claims 30000 × 30000 pixels is refused before decoding
    with pytest.raises(ImageError, match="more than the limit"):
        read_image(_png_header_only(10000, 10000))  # 100 MP > the default 50 MP
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(_png_header_only(30000, 30000), max_pixels=None)  # PIL's own bomb check still applies
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="empty file"):
        read_image(b"")
    truncated = _encode(np.zeros((64, 64, 3), np.uint8) + 100, "JPEG")[:200]
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(truncated)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims ``w × h`` but whose data is a tiny zlib stream (a decompression-bomb header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    )


def test_read_mask(tmp_path: Path) -> None:
    gt = require(DATA_DIR / "grabcut" / "gt" / "21077.png", "GrabCut mask")
    m = read_mask(gt, (321, 481))
    assert m.dtype == bool and m.shape == (321, 481) and 0 < m.sum() < m.size
    with pytest.raises(ImageError, match="but the image is"):
        read_mask(gt, (10, 10))
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2, 1] = 3
    assert read_mask(rgb).sum() == 1
    p = tmp_path / "m.png"
    p.write_bytes(_encode(rgb, "PNG"))
    assert read_mask(p)[1, 2] and read_mask(p).sum() == 1


def test_resize_matches_official_parity_image() -> None:
    """PIL bicubic to 512 × 768 reproduces the fixture's resized coffee exactly (README §4)."""
    d = require(SEEM_PARITY_DIR, "parity images")
    orig = read_image(d / "images" / "coffee_original.png")
    assert np.array_equal(resize_image(orig, (512, 768)), read_image(d / "images" / "coffee.png"))
    same = resize_image(orig, (400, 600))
    assert np.array_equal(same, orig) and same is not orig


def test_write_files_atomically(tmp_path: Path) -> None:
    a, b = tmp_path / "out" / "a.json", tmp_path / "out" / "b.png"
    write_files_atomically({a: b"1", b: b"2"})
    assert a.read_bytes() == b"1" and b.read_bytes() == b"2"
    blocker = tmp_path / "out" / "dir_is_a_file"
    blocker.write_text("x")
    c, d = tmp_path / "out" / "c.json", blocker / "d.png"  # d cannot be created: nothing is written
    with pytest.raises(OSError):
        write_files_atomically({c: b"3", d: b"4"})
    assert not c.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.png", "dir_is_a_file"]
