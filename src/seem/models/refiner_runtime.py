"""The click refiner's net run by onnxruntime on a CPU (inference only; ``SEEMModel.refine_clicks`` uses it).

The refiner (``seem.models.click_refiner``) is some forty small convolutions over a window of up to the whole input
canvas; PyTorch runs them one eager call at a time. ``OnnxRefiner`` exports the folded net (``fold_batchnorm``) to
ONNX in memory once — the batch and the window's height and width dynamic — and runs it with onnxruntime's CPU
provider, which fuses the convolutions with their activations: on this project's 2-core CPU the net takes 17 ms
instead of 22 on a click's 384² window and half or less of PyTorch's time on small windows
(``benchmarks/bench_models_click.py`` times whole clicks), the same logits up to float rounding (|Δ| < 1e-4
measured; 3 of 50 M mask pixels differed over 200 clicks). Windows whose sides are multiples of 8 (every window
``refine_clicks`` cuts) with their stride-8 features go through it; any other input goes through the PyTorch net,
as does everything with gradients or off the CPU.
"""

from __future__ import annotations

import functools
import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seem.models.click_refiner import ClickRefiner

_EXAMPLE = 64  # traced window side: every resampling inside the net is a real one (stride 16 → 4 × 4)


@functools.cache
def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported (a dependency of ``seem``; an environment may still lack it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Graph(nn.Module):
    """``ClickRefiner.forward`` with the inputs its config reads, in a fixed order, for the exporter."""

    def __init__(self, net: ClickRefiner) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, coarse: Tensor, clicks: Tensor, *rest: Tensor) -> Tensor:
        cfg = self.net.cfg
        prev = rest[0] if cfg.prev_mask else None
        feats = rest[-1].permute(0, 3, 1, 2) if cfg.feature_dim else None  # given channels-last: [B, h, w, D]
        return self.net(image, coarse, clicks, prev, feats)


class OnnxRefiner:
    """A folded ``ClickRefiner`` (eval mode, float32, CPU) run by an onnxruntime session with ``threads`` intra-op
    threads (they sleep between calls: spinning threads would slow the PyTorch work of the same click).

    Called like the net: ``(image [B, 3, H, W], coarse [B, 1, H, W] logits, clicks [B, 2, H, W], prev [B, 1, H, W]
    logits or None, feats [B, D (+ S), H / 8, W / 8] or None) → logits [B, 1, H, W]`` (float32 tensors on the CPU).
    Raises ``RuntimeError`` when the export or the session fails (the caller keeps the PyTorch net then)."""

    def __init__(self, net: ClickRefiner, threads: int) -> None:
        import onnxruntime as ort

        if net.training:
            raise ValueError("OnnxRefiner runs a refiner in eval mode (call .eval() first)")
        self.net = net
        cfg = net.cfg
        s = _EXAMPLE
        example = [torch.zeros(1, 3, s, s), torch.zeros(1, 1, s, s), torch.zeros(1, 2, s, s)]
        names = ["image", "coarse", "clicks"]
        if cfg.prev_mask:
            example.append(torch.zeros(1, 1, s, s))
            names.append("prev")
        if cfg.feature_dim:  # the features and their similarity embedding (ClickRefiner.image_features)
            example.append(torch.zeros(1, s // 8, s // 8, cfg.feature_dim + cfg.similarity_dim))
            names.append("feats")
        axes = {n: {0: "batch", 2: "height", 3: "width"} for n in (*names, "logits")}
        if cfg.feature_dim:
            axes["feats"] = {0: "batch", 1: "height8", 2: "width8"}
        buf: Any = io.BytesIO()  # (the exporter writes to a file-like object too; typed for paths only)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer notes on shape arithmetic, the exporter's deprecation
                torch.onnx.export(
                    _Graph(net).eval(),  # (the exporter restores the wrapper's mode, and so the net's, afterwards)
                    tuple(example),
                    buf,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # the exporter or onnxruntime refused the graph
            raise RuntimeError(f"the click refiner could not be run by onnxruntime: {e}") from e
        self._names = names
        self.threads = threads

    def __call__(
        self, image: Tensor, coarse: Tensor, clicks: Tensor, prev: Tensor | None = None, feats: Tensor | None = None
    ) -> Tensor:
        cfg = self.net.cfg
        b, _, h, w = image.shape
        usable = (
            h % 8 == 0
            and w % 8 == 0
            and (prev is None or tuple(prev.shape) == (b, 1, h, w))
            and (not cfg.feature_dim or (feats is not None and tuple(feats.shape[-2:]) == (h // 8, w // 8)))
            and all(t.device.type == "cpu" for t in (image, coarse, clicks))
        )
        if not usable:
            return self.net(image, coarse, clicks, prev, feats)
        given: list[Tensor] = [image, coarse, clicks]
        if cfg.prev_mask:  # no previous mask: -inf logits, a zero probability as the net reads None
            given.append(torch.full_like(coarse, float("-inf")) if prev is None else prev)
        if cfg.feature_dim and feats is not None:  # the model's features are channels-last: a view, no copy
            given.append(feats.permute(0, 2, 3, 1))
        feed: dict[str, Any] = {n: _numpy(t) for n, t in zip(self._names, given, strict=True)}
        return torch.from_numpy(self._session.run(None, feed)[0])


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().float().contiguous().numpy()
