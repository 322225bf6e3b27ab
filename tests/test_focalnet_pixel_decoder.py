"""FocalNet backbone (both SEEM flavours), the FPN + transformer pixel decoder, and preprocessing.

* Parity: every ``features_*.npz`` of the SEEM parity folder (official code, reduced Focal-T model) is
  reproduced from ``images/<name>.png`` and ``seem_v1_small.pt`` within 1e-4 relative error, including the
  partially stored maps (``/crop_*``, ``/stride8``, ``/chan_sum*``, ``/shape``; README §6.1).
* Keys: our state_dict keys and shapes equal the official ``backbone.*`` / ``sem_seg_head.pixel_decoder.*``
  entries of the full-size Focal-T and Focal-L manifests (built on the meta device) and of the small
  checkpoint.
* Focal-L (``focal``) has no parity tensors: it is checked against a literal token-layout transcription of the
  official block equations (the same transcription reproduces the Focal-T parity tensors, which validates it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SEEM_PARITY_DIR, assert_parity
from PIL import Image

from seem.models.backbones import FocalNet
from seem.models.config import (
    FocalNetConfig,
    PixelDecoderConfig,
    from_official_yaml,
    seem_focall,
    seem_focalt,
)
from seem.models.pixel_decoders import PixelDecoderOutput, TransformerEncoderPixelDecoder
from seem.models.preprocess import normalize_and_pad
from seem.models.seem_model import SEEMModel

BB_PREFIX = "backbone."
PD_PREFIX = "sem_seg_head.pixel_decoder."
PARTIAL_SUFFIXES = ("crop_tl", "crop_center", "crop_br", "stride8", "chan_sum", "chan_sumsq", "shape")

_CASES = sorted(p.stem.removeprefix("features_") for p in SEEM_PARITY_DIR.glob("features_*.npz"))
_NO_CASES = pytest.mark.skip(reason=f"no features_*.npz in {SEEM_PARITY_DIR}")
CASES = _CASES or [pytest.param(None, marks=_NO_CASES)]


# ----------------------------------------------------------------------------------------------------------
# helpers


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def load_image(parity_dir: Path, name: str) -> torch.Tensor:
    """RGB uint8 [3, H, W], checked against the sha256 recorded in images_meta.json."""
    arr = np.array(Image.open(parity_dir / "images" / f"{name}.png").convert("RGB"))
    meta = json.loads((parity_dir / "images_meta.json").read_text())[name]
    assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == meta["resized_sha256"]
    assert list(arr.shape[:2]) == meta["resized_hw"]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def partial_view(full: torch.Tensor, suffix: str) -> torch.Tensor:
    """The README §6.1 partial entry ``suffix`` computed from our full map ``full`` [1, C, H, W]."""
    x = full[0]
    h, w = x.shape[-2:]
    if suffix == "crop_tl":
        return x[:, :16, :16]
    if suffix == "crop_center":
        return x[:, h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8]
    if suffix == "crop_br":
        return x[:, -16:, -16:]
    if suffix == "stride8":
        return x[:, ::8, ::8]
    if suffix == "chan_sum":
        return x.double().sum(dim=(1, 2))
    if suffix == "chan_sumsq":
        return x.double().square().sum(dim=(1, 2))
    raise ValueError(suffix)


def check_reference(ours: torch.Tensor, ref_npz: np.lib.npyio.NpzFile, name: str, tol: float = 1e-4) -> int:
    """Compare our full map with a full or partial reference ``name``; returns the arrays checked."""
    if name in ref_npz.files:
        assert_parity(ours, ref_npz[name], name, tol)
        return 1
    parts = [s for s in PARTIAL_SUFFIXES if f"{name}/{s}" in ref_npz.files]
    assert parts, f"{name}: neither a full nor a partial reference is stored"
    assert "shape" in parts, f"{name}: partial reference without /shape"
    for s in parts:
        ref = ref_npz[f"{name}/{s}"]
        if s == "shape":
            assert list(ours.shape) == ref.tolist(), f"{name}: shape {list(ours.shape)} != {ref.tolist()}"
        else:
            assert_parity(partial_view(ours, s), ref, f"{name}/{s}", tol)
    return len(parts)


def stored_map_names(ref_npz: np.lib.npyio.NpzFile) -> set[str]:
    """Names of stored maps, with the partial suffixes folded into their base name."""
    names = set()
    for k in ref_npz.files:
        base, _, last = k.rpartition("/")
        names.add(base if last in PARTIAL_SUFFIXES else k)
    return names


# ----------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def small(seem_parity_dir: Path):
    """(config, backbone, pixel decoder, state dict) of the reduced official model, loaded through the strict
    checkpoint converter (``SEEMModel.from_official``)."""
    cfg = from_official_yaml(seem_parity_dir / "seem_v1_small.yaml")
    sd = torch.load(seem_parity_dir / "seem_v1_small.pt", weights_only=True, map_location="cpu")
    model, _ = SEEMModel.from_official(sd, config=cfg)
    return cfg, model.backbone, model.pixel_decoder, sd


def manifest_shapes(parity_dir: Path, which: str, prefix: str) -> dict[str, list[int]]:
    m = json.loads((parity_dir / f"manifest_{which}_v1.json").read_text())
    return {e["key"][len(prefix) :]: e["shape"] for e in m["keys"] if e["key"].startswith(prefix)}


# ----------------------------------------------------------------------------------------------------------
# parity with the official outputs


@pytest.mark.parity
@pytest.mark.parametrize("name", CASES)
def test_features_parity(name: str, small, seem_parity_dir: Path) -> None:
    cfg, backbone, pixel_decoder, _ = small
    ref = np.load(seem_parity_dir / f"features_{name}.npz")
    image = load_image(seem_parity_dir, name)
    x = normalize_and_pad(image, cfg.pixel_mean, cfg.pixel_std, cfg.inference.size_divisibility)
    with torch.no_grad():
        feats = backbone(x)
        out = pixel_decoder(feats)
    ours = {"input/normalized_padded": x}
    ours.update({f"backbone/{k}": v for k, v in feats.items()})
    ours["pixel_decoder/transformer_encoder_features"] = out.transformer_encoder_features
    ours["pixel_decoder/mask_features"] = out.mask_features
    for i, m in enumerate(out.multi_scale_features):
        ours[f"pixel_decoder/multi_scale_features/{i}"] = m
    stored = stored_map_names(ref)
    assert stored == set(ours), f"unexpected stored maps: {sorted(stored ^ set(ours))}"
    n_checked = sum(check_reference(ours[k], ref, k) for k in sorted(stored))
    assert n_checked == len(ref.files)


def test_output_shapes_and_strides(small) -> None:
    cfg, backbone, pixel_decoder, _ = small
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        feats = backbone(x)
        out = pixel_decoder(feats)
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for (k, f), s, c in zip(feats.items(), (4, 8, 16, 32), cfg.backbone.out_channels, strict=True):
        assert f.shape == (2, c, 96 // s, 160 // s), k
    assert isinstance(out, PixelDecoderOutput)
    d = cfg.pixel_decoder
    assert out.mask_features.shape == (2, d.mask_dim, 24, 40)
    assert out.transformer_encoder_features.shape == (2, d.conv_dim, 3, 5)
    assert [tuple(m.shape) for m in out.multi_scale_features] == [
        (2, 64, 3, 5),
        (2, 64, 6, 10),
        (2, 64, 12, 20),
    ]
    mask_features, enc, multi = out  # unpacks like the official 3-tuple
    assert mask_features is out.mask_features and enc is out.transformer_encoder_features and len(multi) == 3


def test_batch_equals_single(small, seem_parity_dir: Path) -> None:
    """Batch-first: a batch of two different images gives the per-image results."""
    cfg, backbone, pixel_decoder, _ = small
    a = load_image(seem_parity_dir, "astronaut")[:, :256, :384]
    b = load_image(seem_parity_dir, "coffee")[:, 100:356, 200:584]
    x = normalize_and_pad(torch.stack([a, b]), cfg.pixel_mean, cfg.pixel_std)
    with torch.no_grad():
        both = pixel_decoder(backbone(x))
        for i in range(2):
            one = pixel_decoder(backbone(x[i : i + 1]))
            assert_parity(both.mask_features[i : i + 1], one.mask_features, f"mask_features[{i}]", 1e-5)
            for j in range(3):
                ms_both, ms_one = both.multi_scale_features[j], one.multi_scale_features[j]
                assert_parity(ms_both[i : i + 1], ms_one, f"multi_scale_features/{j}[{i}]", 1e-5)


# ----------------------------------------------------------------------------------------------------------
# state-dict keys


def test_small_checkpoint_keys_in_order(small) -> None:
    """Same key names, shapes and even order as the official modules' state_dict."""
    _, backbone, pixel_decoder, sd = small
    for module, prefix in ((backbone, BB_PREFIX), (pixel_decoder, PD_PREFIX)):
        ref = strip_prefix(sd, prefix)
        ours = module.state_dict()
        assert list(ours) == list(ref)
        assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("which", ["focalt", "focall"])
def test_full_size_keys_match_manifest(which: str, seem_parity_dir: Path) -> None:
    cfg = seem_focalt() if which == "focalt" else seem_focall()
    with torch.device("meta"):
        backbone = FocalNet(cfg.backbone)
        pixel_decoder = TransformerEncoderPixelDecoder(cfg.pixel_decoder)
    for module, prefix in ((backbone, BB_PREFIX), (pixel_decoder, PD_PREFIX)):
        ref = manifest_shapes(seem_parity_dir, which, prefix)
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert sorted(set(ours) ^ set(ref)) == [], f"{which} {prefix}: key sets differ"
        assert ours == ref
    n_blocks = sum(cfg.backbone.depths)
    assert sum(k.endswith("gamma_1") for k in backbone.state_dict()) == n_blocks
    assert any(".dw1." in k for k in backbone.state_dict()) == (which == "focalt")


# ----------------------------------------------------------------------------------------------------------
# Focal-L flavour against a literal transcription of the official equations (token layout [B, L, C])


def _ln(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"])


def reference_focalnet(sd: dict[str, torch.Tensor], cfg: FocalNetConfig, img: torch.Tensor) -> dict:
    """Official ``FocalNet.forward`` (focal.py / focal_dw.py) written out with functional ops."""
    dw = cfg.flavour == "focal_dw"

    def patch_embed(x, p, patch, stride, pad):
        h, w = x.shape[-2:]
        if w % patch:
            x = F.pad(x, (0, patch - w % patch))
        if h % patch:
            x = F.pad(x, (0, 0, 0, patch - h % patch))
        x = F.conv2d(x, sd[p + "proj.weight"], sd[p + "proj.bias"], stride=stride, padding=pad)
        hh, ww = x.shape[-2:]
        x = _ln(x.flatten(2).transpose(1, 2), sd, p + "norm.")
        return x, hh, ww  # [B, L, C]

    def dwconv(x, p, h, w):  # x [B, L, C] -> x + dwconv(x)
        b, _, c = x.shape
        xc = x.transpose(1, 2).reshape(b, c, h, w)
        xc = xc + F.conv2d(xc, sd[p + "weight"], sd[p + "bias"], padding=1, groups=c)
        return xc.flatten(2).transpose(1, 2)

    def modulation(x, p, level, h, w):  # x [B, L, C]
        b, _, c = x.shape
        x = F.linear(x, sd[p + "f.weight"], sd[p + "f.bias"]).transpose(1, 2).reshape(b, -1, h, w)
        q, ctx, gates = x[:, :c], x[:, c : 2 * c], x[:, 2 * c :]
        ctx_all = 0
        for k in range(level):
            wk = sd[p + f"focal_layers.{k}.0.weight"]
            ctx = F.gelu(F.conv2d(ctx, wk, padding=wk.shape[-1] // 2, groups=c))
            ctx_all = ctx_all + ctx * gates[:, k : k + 1]
        ctx_all = ctx_all + F.gelu(ctx.mean((2, 3), keepdim=True)) * gates[:, level:]
        if cfg.scaling_modulator:
            ctx_all = ctx_all / (level + 1)
        out = q * F.conv2d(ctx_all, sd[p + "h.weight"], sd[p + "h.bias"])
        out = out.flatten(2).transpose(1, 2)
        return F.linear(out, sd[p + "proj.weight"], sd[p + "proj.bias"])

    def mlp(x, p):
        return F.linear(
            F.gelu(F.linear(x, sd[p + "fc1.weight"], sd[p + "fc1.bias"])),
            sd[p + "fc2.weight"],
            sd[p + "fc2.bias"],
        )

    x, h, w = patch_embed(img, "patch_embed.", cfg.patch_size, 4, 3 if dw else 2)
    outs = {}
    for s, depth in enumerate(cfg.depths):
        for bi in range(depth):
            p = f"layers.{s}.blocks.{bi}."
            g1, g2 = sd[p + "gamma_1"], sd[p + "gamma_2"]
            level = cfg.focal_levels[s]
            if dw:  # focal_dw.py, use_postln
                x = dwconv(x, p + "dw1.", h, w)
                x = _ln(x + g1 * modulation(x, p + "modulation.", level, h, w), sd, p + "norm1.")
                x = dwconv(x, p + "dw2.", h, w)
                x = _ln(x + g2 * mlp(x, p + "mlp."), sd, p + "norm2.")
            else:  # focal.py, use_postln
                x = x + g1 * _ln(modulation(x, p + "modulation.", level, h, w), sd, p + "norm1.")
                x = x + g2 * _ln(mlp(x, p + "mlp."), sd, p + "norm2.")
        c = x.shape[-1]
        outs[f"res{s + 2}"] = _ln(x, sd, f"norm{s}.").reshape(-1, h, w, c).permute(0, 3, 1, 2)
        if s < len(cfg.depths) - 1:
            x, h, w = patch_embed(x.transpose(1, 2).reshape(-1, c, h, w), f"layers.{s}.downsample.", 2, 2, 1)
    return outs


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma_1") or name.endswith("gamma_2"):
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5))


def test_reference_transcription_reproduces_focalt_parity(small, seem_parity_dir: Path) -> None:
    """Validates ``reference_focalnet`` itself on the official Focal-T tensors."""
    cfg, _, _, sd = small
    ref = np.load(seem_parity_dir / "features_astronaut.npz")
    x = normalize_and_pad(load_image(seem_parity_dir, "astronaut"), cfg.pixel_mean, cfg.pixel_std)
    with torch.no_grad():
        outs = reference_focalnet(strip_prefix(sd, BB_PREFIX), cfg.backbone, x)
    for k in ("res3", "res4", "res5"):
        assert_parity(outs[k], ref[f"backbone/{k}"], k)


@pytest.mark.parametrize("flavour", ["focal", "focal_dw"])
@pytest.mark.parametrize("hw", [(64, 96), (70, 45)])
def test_flavours_match_official_equations(flavour: str, hw: tuple[int, int]) -> None:
    """Focal-L (``focal``, 4 focal levels) has no parity tensors; (70, 45) tests the patch-embed padding."""
    cfg = FocalNetConfig(flavour=flavour, embed_dim=16, depths=(1, 2, 1, 1), focal_levels=(4, 4, 4, 4))
    model = FocalNet(cfg).eval()
    _randomise(model, seed=3)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(x)
        ref = reference_focalnet(model.state_dict(), cfg, x)
    for k in ref:
        assert_parity(ours[k], ref[k], f"{flavour}/{k}", 1e-5)
    assert model.patch_embed.proj.padding == ((3, 3) if flavour == "focal_dw" else (2, 2))
    assert ours["res2"].shape[-2:] == (-(-hw[0] // 4), -(-hw[1] // 4))


def test_focal_flavour_is_identity_with_zero_layerscale() -> None:
    """``focal`` puts the post-LN on the branch: with gamma = 0 every block is the identity."""
    cfg = FocalNetConfig(flavour="focal", embed_dim=8, depths=(2, 1, 1, 1), focal_levels=(2, 2, 2, 2))
    model = FocalNet(cfg).eval()
    _randomise(model, seed=5)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        stem = model.patch_embed(x)
        for n, p in model.named_parameters():
            if "gamma" in n:
                p.zero_()
        res2 = model(x)["res2"]
    expected = F.layer_norm(stem.permute(0, 2, 3, 1), (8,), model.norm0.weight, model.norm0.bias)
    assert_parity(res2, expected.permute(0, 3, 1, 2), "res2", 1e-6)


# ----------------------------------------------------------------------------------------------------------
# input validation and preprocessing


def test_normalize_and_pad_values_and_padding() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 45, 70), dtype=torch.uint8, generator=g)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    x = normalize_and_pad(img, mean, std, 32)
    assert x.shape == (1, 3, 64, 96) and x.dtype == torch.float32
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    assert torch.equal(x[0, :, :45, :70], (img.float() - m) / s)
    assert not x[0, :, 45:].any() and not x[0, :, :, 70:].any()
    batch = normalize_and_pad(torch.stack([img, img]), mean, std, 32)
    assert batch.shape == (2, 3, 64, 96) and torch.equal(batch[1], x[0])
    assert normalize_and_pad(img, mean, std, 1).shape == (1, 3, 45, 70)


@pytest.mark.parametrize(
    ("image", "mean", "std", "err", "match"),
    [
        (torch.zeros(3, 8, 8), (0, 0, 0), (1, 1, 1), TypeError, "uint8"),
        (np.zeros((3, 8, 8), np.uint8), (0, 0, 0), (1, 1, 1), TypeError, "torch.Tensor"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), (0, 0, 0), (1, 1, 1), ValueError, "channels"),
        (torch.zeros(8, 8, dtype=torch.uint8), (0, 0, 0), (1, 1, 1), ValueError, "shape"),
        (torch.zeros(1, 1, 3, 8, 8, dtype=torch.uint8), (0, 0, 0), (1, 1, 1), ValueError, "shape"),
        (torch.zeros(3, 0, 8, dtype=torch.uint8), (0, 0, 0), (1, 1, 1), ValueError, "non-empty"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), (0, 0), (1, 1, 1), ValueError, "mean"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), (0, 0, 0), (1, 0, 1), ValueError, "std"),
    ],
)
def test_normalize_and_pad_rejects_bad_input(image, mean, std, err, match) -> None:
    with pytest.raises(err, match=match):
        normalize_and_pad(image, mean, std)


def test_models_reject_bad_input() -> None:
    backbone = FocalNet(FocalNetConfig(embed_dim=8, depths=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        backbone(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        backbone(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="flavour"):
        FocalNet(FocalNetConfig(flavour="swin"))  # type: ignore[arg-type]
    decoder = TransformerEncoderPixelDecoder(
        PixelDecoderConfig(in_channels=(8, 16, 32, 64), conv_dim=32, mask_dim=32, transformer_layers=1)
    )
    feats = backbone(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="res2"):
        decoder({k: v for k, v in feats.items() if k != "res2"})
    with pytest.raises(ValueError, match="res3"):
        decoder({**feats, "res3": torch.zeros(1, 5, 8, 8)})
    assert decoder(feats).mask_features.shape == (1, 32, 16, 16)
