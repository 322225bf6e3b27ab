"""Safe image reading and atomic file writing for the user-facing layer.

Every image that enters ``seem`` through the predictor, the session or the CLI goes through ``read_image``,
which returns one canonical form: a C-contiguous ``uint8`` RGB array ``[H, W, 3]`` (row-major, ``y`` down,
``x`` right, pixel ``(x, y)`` at ``array[y, x]``).

Accepted inputs:

- a numpy array ``[H, W, 3]`` (RGB), ``[H, W, 4]`` (RGBA: alpha dropped), ``[H, W]`` or ``[H, W, 1]``
  (grayscale: replicated to RGB). Accepted dtypes: ``uint8``; ``bool`` (False/True → 0/255); ``uint16``
  (divided by 257, i.e. 65535 → 255); other integer types when every value lies in 0..255; floating point when
  every value is finite and lies in [0, 1] (multiplied by 255 and rounded). Channels-first arrays
  (``[3, H, W]``) are refused with a message saying to transpose them.
- a ``PIL.Image.Image`` of any 8-bit mode (``RGB``, ``RGBA``, ``L``, ``LA``, ``P``, ``1``, ``CMYK``, ``YCbCr``)
  or 16-bit grayscale (``I;16*``, ``I`` with values 0..65535); the first frame of an animation.
- a path (``str`` / ``os.PathLike``) or the encoded bytes of a PNG, JPEG, GIF, BMP, TIFF or WebP file. The type is
  recognised from the file's first bytes, never from its extension.

Limits: an image with more than ``max_pixels`` pixels (default ``DEFAULT_MAX_PIXELS``, 50 megapixels) is refused
*before* it is decoded (decompression bombs never reach memory). Every failure raises ``ImageError`` (a
``ValueError``; ``ImageTypeError`` is also a ``TypeError``) whose message says what was wrong.

EXIF orientation is **not** applied by default (masks then line up with the stored pixel grid, as in COCO-style
annotation files); pass ``apply_exif=True`` to rotate photos the way viewers show them.
"""

from __future__ import annotations

import io as _io
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageInput",
    "ImageTypeError",
    "read_image",
    "read_mask",
    "resize_image",
    "sniff_image_format",
    "write_files_atomically",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (height × width) read by default: 50 megapixels (e.g. 8660 × 5773)."""

ImageInput = np.ndarray | Image.Image | str | os.PathLike | bytes | bytearray
"""Anything ``read_image`` accepts."""

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


class ImageError(ValueError):
    """An image could not be read or is not acceptable (bad content, size, shape or value range)."""


class ImageTypeError(ImageError, TypeError):
    """An image argument has an unsupported type or dtype."""


# --------------------------------------------------------------------------------------------------------
# format sniffing


def sniff_image_format(header: bytes) -> str | None:
    """The image format named by the first bytes of a file (``"PNG"``, ``"JPEG"``, ...), or None if unknown."""
    for magic, offset, name in _MAGIC:
        if header[offset : offset + len(magic)] == magic:
            return name
    if len(header) >= 12 and header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    return None


# --------------------------------------------------------------------------------------------------------
# reading


def read_image(
    source: ImageInput,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    apply_exif: bool = False,
) -> np.ndarray:
    """Read an image into a C-contiguous ``uint8`` RGB array ``[H, W, 3]``.

    Args:
        source: a numpy array, a ``PIL.Image.Image``, a path, or encoded image bytes (see the module docstring
            for the accepted shapes, dtypes and formats).
        max_pixels: refuse images with more than this many pixels (None: no limit). Checked from the file header,
            before decoding.
        apply_exif: rotate/flip according to the EXIF orientation tag (files and PIL images only).

    Returns:
        ``uint8`` ``[H, W, 3]`` RGB, a new array (never a view of the caller's data).

    Raises:
        ImageError / ImageTypeError: with a message naming the problem (missing file, not an image, unsupported
            type/dtype/shape/mode, values out of range, too many pixels, truncated or corrupt data).
    """
    if max_pixels is not None and (not isinstance(max_pixels, int) or max_pixels < 1):
        raise ImageTypeError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[:2] if source.ndim >= 2 else (0, 0), max_pixels, "array")
        return _from_array(source)
    if isinstance(source, Image.Image):
        _check_pixels((source.height, source.width), max_pixels, "PIL image")
        return _from_pil(source, apply_exif, "PIL image")
    if isinstance(source, (bytes, bytearray)):
        return _from_encoded(bytes(source), "image bytes", max_pixels, apply_exif)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if not path.is_file():
            raise ImageError(f"not a file: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read {path}: {e}") from e
        return _from_encoded(data, str(path), max_pixels, apply_exif)
    raise ImageTypeError(
        f"unsupported image type {type(source).__name__}: pass a numpy array [H, W, 3] uint8 RGB, a PIL image, "
        "a file path or encoded image bytes"
    )


def _check_pixels(hw: tuple[int, ...], max_pixels: int | None, what: str) -> None:
    if max_pixels is None or len(hw) < 2:
        return
    n = int(hw[0]) * int(hw[1])
    if n > max_pixels:
        raise ImageError(
            f"{what} is {hw[1]}×{hw[0]} = {n:,} pixels, more than the limit of {max_pixels:,} "
            "(raise max_pixels to allow it)"
        )


def _from_encoded(data: bytes, what: str, max_pixels: int | None, apply_exif: bool) -> np.ndarray:
    if not data:
        raise ImageError(f"{what}: empty file")
    fmt = sniff_image_format(data[:16])
    if fmt is None:
        raise ImageError(
            f"{what}: not a supported image (expected {', '.join(SUPPORTED_FORMATS)}; "
            f"the file starts with {data[:8]!r})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: refused as a possible decompression bomb: {e}") from e
    except Exception as e:  # PIL raises many types on bad headers
        raise ImageError(f"{what}: cannot decode this {fmt} file: {e}") from e
    with im:
        _check_pixels((im.height, im.width), max_pixels, what)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.seek(0)
                im.load()
        except Image.DecompressionBombError as e:
            raise ImageError(f"{what}: refused as a possible decompression bomb: {e}") from e
        except Exception as e:
            raise ImageError(f"{what}: cannot decode this {fmt} file (truncated or corrupt?): {e}") from e
        return _from_pil(im, apply_exif, what)


def _from_pil(im: Image.Image, apply_exif: bool, what: str) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{what} is empty ({im.width}×{im.height})")
    if apply_exif:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as e:
            raise ImageError(f"{what}: cannot apply the EXIF orientation: {e}") from e
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise ImageError(f"{what}: 32-bit integer image with values outside 0..65535; convert it to 8-bit")
        return _from_array(arr.astype(np.uint16))
    if mode == "F":
        raise ImageTypeError(f"{what}: 32-bit float PIL images (mode 'F') are not supported; convert to 8-bit RGB")
    if mode != "RGB":
        try:
            im = im.convert("RGBA" if mode in ("P", "PA") else "RGB").convert("RGB")
        except Exception as e:
            raise ImageError(f"{what}: cannot convert PIL mode {mode!r} to RGB: {e}") from e
    return np.array(im, dtype=np.uint8, copy=True).reshape(im.height, im.width, 3)


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ImageError(f"image array must be [H, W, 3] (RGB), [H, W, 4] or [H, W]; got shape {a.shape}")
    h, w, c = a.shape
    if c not in (1, 3, 4):
        if a.shape[0] in (1, 3, 4) and a.shape[2] > 4:
            raise ImageError(
                f"image array of shape {a.shape} looks channels-first; pass [H, W, C] (e.g. arr.transpose(1, 2, 0))"
            )
        raise ImageError(f"image array must have 1, 3 or 4 channels last ([H, W, C]); got shape {a.shape}")
    if h == 0 or w == 0:
        raise ImageError(f"image array is empty: shape {a.shape}")
    a = _to_uint8(a)
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)  # _to_uint8 made a new array, so this never aliases the caller's data


def _to_uint8(a: np.ndarray) -> np.ndarray:
    dt = a.dtype
    if dt == np.uint8:
        return a.copy()
    if dt == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if dt == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(dt, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ImageError(
                f"integer image of dtype {dt} has values in [{lo}, {hi}]; expected 0..255 (convert it to uint8)"
            )
        return a.astype(np.uint8)
    if np.issubdtype(dt, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(f"float image of dtype {dt} contains NaN or infinite values")
        flo, fhi = float(a.min()), float(a.max())
        if flo < 0.0 or fhi > 1.0:
            raise ImageError(
                f"float image of dtype {dt} has values in [{flo:g}, {fhi:g}]; float images must lie in [0, 1] "
                "(for 0..255 data convert to uint8)"
            )
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    raise ImageTypeError(f"unsupported image dtype {dt}; use uint8 RGB (0..255), bool, uint16 or float in [0, 1]")


def read_mask(source: ImageInput | np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask (a PNG file, PIL image or array): nonzero → True; returns bool ``[H, W]``.

    Multi-channel masks are True where any channel is nonzero. ``size`` = ``(height, width)`` to check against.
    """
    if isinstance(source, np.ndarray):
        arr: np.ndarray = np.asarray(source)
        if arr.ndim == 3:
            arr = np.asarray(arr.any(axis=2))
        if arr.ndim != 2:
            raise ImageError(f"mask array must be [H, W] (or [H, W, C]); got shape {source.shape}")
        if arr.dtype != np.bool_ and not (np.issubdtype(arr.dtype, np.number)):
            raise ImageTypeError(f"mask array has unsupported dtype {arr.dtype}")
        mask = arr.astype(bool)
    else:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"mask file not found: {path}")
            data = path.read_bytes()
            what = str(path)
        elif isinstance(source, (bytes, bytearray)):
            data, what = bytes(source), "mask bytes"
        elif isinstance(source, Image.Image):
            data, what = b"", "PIL mask"
        else:
            raise ImageTypeError(f"unsupported mask type {type(source).__name__}")
        if isinstance(source, Image.Image):
            im = source
        else:
            fmt = sniff_image_format(data[:16])
            if fmt is None:
                raise ImageError(f"{what}: not a supported image file (expected PNG/JPEG/GIF/BMP/TIFF/WebP)")
            try:
                im = Image.open(_io.BytesIO(data), formats=[fmt])
                im.load()
            except Exception as e:
                raise ImageError(f"{what}: cannot decode: {e}") from e
        arr = np.asarray(im.convert("RGBA") if im.mode in ("P", "PA") else im)
        mask = (arr.any(axis=2) if arr.ndim == 3 else arr != 0).astype(bool)
    if size is not None and tuple(mask.shape) != tuple(size):
        raise ImageError(f"mask is {mask.shape[1]}×{mask.shape[0]} but the image is {size[1]}×{size[0]} (W×H)")
    return np.ascontiguousarray(mask)


# --------------------------------------------------------------------------------------------------------
# resizing


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``size = (height, width)`` with PIL's bicubic filter.

    This is the official SEEM resize (``torchvision.transforms.Resize(512, BICUBIC)`` on a PIL image, which calls
    PIL's ``Image.resize(..., BICUBIC)``); the same size returns a copy.
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image.copy()
    im = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(im.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------------------
# atomic writing


def write_files_atomically(files: Mapping[str | os.PathLike[str], bytes]) -> list[Path]:
    """Write several files so that either all of them appear or none does (as far as the OS allows).

    Each file is first written to a temporary file in its target directory; only when every temporary file is
    complete are they renamed into place (``os.replace``, atomic per file). On any error the temporary files are
    removed and the error is re-raised; files that existed before keep their old content.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((Path(tmp_name), path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for tmp, dest in temps:
            os.replace(tmp, dest)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    return [p for _, p in temps]
