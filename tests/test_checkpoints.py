"""Official SEEM checkpoints convert strictly; our safetensors format round-trips losslessly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import SEEM_PARITY_DIR, require

from seem.cli import main as cli_main
from seem.models.checkpoints import CheckpointError
from seem.models.checkpoints.seem import infer_seem_config, variant_from_filename
from seem.models.config import (
    SEEMConfig,
    seem_focall,
    seem_focalt,
)
from seem.models.seem_model import SEEMModel
from seem.train.config import tiny_seem_config


def tiny_config() -> SEEMConfig:
    """A very small SEEM model that needs no shared files (for format tests on a fresh clone)."""
    return tiny_seem_config()


def manifest_state_dict(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = require(SEEM_PARITY_DIR / name, "SEEM manifest")
    manifest = json.loads(path.read_text())
    sd = {e["key"]: torch.empty(e["shape"], device="meta") for e in manifest["keys"]}
    return sd, manifest


@pytest.mark.parametrize(
    ("manifest", "expected_config"),
    [("manifest_focalt_v1.json", seem_focalt), ("manifest_focall_v1.json", seem_focall)],
)
def test_full_size_official_layout_converts_with_every_key_accounted_for(manifest, expected_config):
    sd, man = manifest_state_dict(manifest)
    assert len(sd) == man["n_tensors"]
    with torch.device("meta"):
        model, report = SEEMModel.from_official(sd)
    # 100% of official keys are accounted for: mapped onto a model key, or ignored with a reason.
    assert report.n_official == len(sd)
    assert set(report.mapped) | set(report.ignored) == set(sd)
    assert set(report.ignored) == {"dilation_kernel", "criterion.empty_weight"}
    assert all(len(reason) > 20 for reason in report.ignored.values())
    assert sorted(report.mapped.values()) == sorted(model.state_dict())
    # the architecture read from the weights is the shipped full-size config
    want = expected_config("v1")
    for part in ("backbone", "pixel_decoder", "text", "decoder"):
        assert getattr(model.config, part) == getattr(want, part), part
    n_values = sum(v.numel() for k, v in sd.items() if k not in report.ignored)
    assert n_values == sum(p.numel() for p in model.state_dict().values())


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_damaged_checkpoint_is_refused_with_the_key_named(damage):
    sd, _ = manifest_state_dict("manifest_focalt_v1.json")
    key = "sem_seg_head.predictor.query_feat.weight"
    if damage == "missing":
        del sd[key]
        expect = "missing key(s): decoder.query_feat.weight"
    elif damage == "unexpected":
        sd["sem_seg_head.predictor.bbox_embed.layers.0.weight"] = torch.empty(4, 4, device="meta")
        expect = "sem_seg_head.predictor.bbox_embed.layers.0.weight"
    else:
        sd[key] = torch.empty(100, 512, device="meta")
        expect = f"{key}: checkpoint (100, 512) vs model (101, 512)"
    cfg = seem_focalt()
    with torch.device("meta"), pytest.raises(CheckpointError, match=r"does not fit the model") as err:
        SEEMModel.from_official(sd, config=cfg)
    assert expect in str(err.value)


def test_checkpoint_of_the_wrong_model_is_refused():
    sd, _ = manifest_state_dict("manifest_focall_v1.json")
    with torch.device("meta"), pytest.raises(CheckpointError) as err:
        SEEMModel.from_official(sd, config=seem_focalt())
    assert "shape mismatch" in str(err.value) and "backbone.patch_embed.proj.weight" in str(err.value)


def test_not_a_seem_checkpoint(tmp_path: Path):
    ssam = {"model.backbone.patch_embed.proj.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="Semantic-SAM"):
        SEEMModel.from_official(ssam)
    with pytest.raises(CheckpointError, match="not an official SEEM checkpoint"):
        SEEMModel.from_official({"encoder.weight": torch.zeros(2)})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        SEEMModel.from_official(junk)
    with pytest.raises(FileNotFoundError):
        SEEMModel.from_official(tmp_path / "absent.pt")


def test_dilation_kernel_must_be_ones():
    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    sd = torch.load(ckpt, weights_only=True)
    sd["dilation_kernel"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointError, match="dilation_kernel"):
        SEEMModel.from_official(sd, config=SEEM_PARITY_DIR / "seem_v1_small.yaml")


def test_variant_from_filename():
    assert variant_from_filename("seem_focalt_v0.pt") == "demo"
    assert variant_from_filename("/x/seem_focall_v0.pt") == "demo"
    assert variant_from_filename("seem_focalt_v1.pt") == "v1"
    assert variant_from_filename("my_v01_model.pt") == "v1"


def test_small_official_checkpoint_loads_and_matches_its_tensors():
    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    official = torch.load(ckpt, weights_only=True)
    model, report = SEEMModel.from_official(ckpt, config=SEEM_PARITY_DIR / "seem_v1_small.yaml")
    ours = model.state_dict()
    for key, new in report.mapped.items():
        assert torch.equal(ours[new], official[key]), key
    # the reduced checkpoint's heads cannot be read from weights; everything else can
    inferred = infer_seem_config(official)
    assert inferred.backbone == model.config.backbone
    assert dataclasses.replace(inferred.decoder, num_heads=4) == model.config.decoder


def test_native_format_round_trip_is_lossless(tmp_path: Path):
    torch.manual_seed(0)
    model = SEEMModel(tiny_config()).eval()
    out = model.save_pretrained(tmp_path / "tiny")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = SEEMModel.from_pretrained(out)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_native_format_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not a directory"):
        SEEMModel.from_pretrained(tmp_path / "nothing")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        SEEMModel.from_pretrained(tmp_path / "d")


def test_cli_convert(tmp_path: Path, capsys):
    ckpt = require(SEEM_PARITY_DIR / "seem_v1_small.pt", "SEEM parity checkpoint")
    rc = cli_main(
        ["convert", str(ckpt), str(tmp_path / "out"), "--config", str(SEEM_PARITY_DIR / "seem_v1_small.yaml")]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "290 keys mapped, 2 ignored" in text and "criterion.empty_weight" in text
    loaded = SEEMModel.from_pretrained(tmp_path / "out")
    assert loaded.config.decoder.variant == "v1"
    assert cli_main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o2")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
