"""Semantic-SAM model: config, strict checkpoint conversion, parity with the official tensors, API behaviour.

Parity fixtures come from ``SSAM_PARITY_DIR`` (see its README): a reduced official model with random weights and
the official outputs for cases a-e. Cases a, b and e are checked completely at model level; for case c (predictor)
and case d (automatic mask generator) only the model-level tensors they store are checked here (raw masks, IoUs,
boxes); their filtering / cleanup / record stages belong to the predictor and generator tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SSAM_PARITY_DIR, assert_parity, rel_err, require

from seem.models.checkpoints.common import CheckpointError
from seem.models.checkpoints.semantic_sam import load_official_semantic_sam, official_state_dict
from seem.models.semantic_sam import SemanticSAM, SemanticSAMFeatures, boxes_to_xyxy_pixels
from seem.models.semantic_sam_config import SemanticSAMConfig, from_official_yaml, swin_l, swin_t

CASE_FILES = sorted(p.name for p in SSAM_PARITY_DIR.glob("case_*.npz")) if SSAM_PARITY_DIR.exists() else []


# ----------------------------------------------------------------------------------------------- fixtures


class Env:
    """The reduced official model with its weights, and features cached per model-input image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = SemanticSAM(from_official_yaml(root / "ssam_small.yaml")).eval()
        self.report = load_official_semantic_sam(root / "ssam_small.pth", self.model)
        self._feats: dict[str, SemanticSAMFeatures] = {}

    def image(self, name: str) -> torch.Tensor:
        from PIL import Image

        arr = np.array(Image.open(self.root / "images" / name).convert("RGB"))
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def features(self, name: str) -> SemanticSAMFeatures:
        if name not in self._feats:
            img = self.image(name)
            with torch.no_grad():
                x = self.model.preprocess(img)
                self._feats[name] = self.model.encode_image(x, tuple(img.shape[-2:]), keep_backbone=True)
        return self._feats[name]


@pytest.fixture(scope="module")
def env() -> Env:
    root = require(SSAM_PARITY_DIR, "Semantic-SAM parity fixtures (SSAM_PARITY_DIR)")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    return Env(root)


def _unpack(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits, axis=-1)[..., : int(shape[-1])].astype(bool)


def _check_full_masks(logits: torch.Tensor, npz: np.lib.npyio.NpzFile, prefix: str) -> None:
    """Full-resolution logits [N, H, W] against ``{prefix}_bits/_shape/_sample_*`` (the README's storage)."""
    shape = npz[f"{prefix}_shape"]
    assert tuple(logits.shape) == tuple(int(v) for v in shape), f"{prefix}: shape"
    flat = logits.reshape(logits.shape[0], -1)
    idx = torch.from_numpy(npz[f"{prefix}_sample_flat_idx"])
    assert_parity(flat[:, idx], npz[f"{prefix}_sample_vals"], f"{prefix}_sample_vals")
    ref = _unpack(npz[f"{prefix}_bits"], shape)
    mismatch = float(((logits > 0).numpy() != ref).mean())
    assert mismatch <= 1e-4, f"{prefix}_bits: {mismatch:.2e} of pixels differ"


def _check_decoder(out, npz: np.lib.npyio.NpzFile, p: str, n_layers: int) -> None:
    """Decoder intermediates and heads stored under prefix ``p`` (queries flattened as [1, Q*6, ...])."""
    inter = out.intermediates
    q6 = out.ious.shape[1] * out.ious.shape[2]
    assert_parity(inter["tgt_init"], npz[p + "decoder_tgt_init"], "decoder_tgt_init")
    assert_parity(inter["refpoints_unsigmoid_init"], npz[p + "decoder_refpoints_unsigmoid_init"], "refpoints_init")
    for i in range(n_layers):
        assert_parity(inter[f"layer_out_{i}"], npz[f"{p}decoder_layer_out_{i}"], f"decoder_layer_out_{i}")
        assert_parity(inter[f"hs_{i}"], npz[f"{p}decoder_hs_{i}"], f"decoder_hs_{i}")
    for i in range(n_layers + 1):
        assert_parity(inter[f"ref_{i}"], npz[f"{p}decoder_ref_{i}"], f"decoder_ref_{i}")
    assert_parity(out.ious, npz[p + "pred_ious"], "pred_ious")
    assert_parity(out.boxes.reshape(1, q6, 4), npz[p + "pred_boxes"], "pred_boxes")
    for i in range(n_layers - 1):
        assert_parity(out.aux_ious[i], npz[f"{p}aux_pred_ious_{i}"], f"aux_pred_ious_{i}")
        assert_parity(out.aux_boxes[i].reshape(1, q6, 4), npz[f"{p}aux_pred_boxes_{i}"], f"aux_pred_boxes_{i}")


# ------------------------------------------------------------------------------------------- parity cases


def _case_a(env: Env, npz) -> None:
    f = env.features("astronaut_resized640.png")
    for k in ("res2", "res3", "res4", "res5"):
        assert_parity(f.backbone[k], npz[f"backbone_{k}"], f"backbone_{k}")
    for lvl, name in enumerate(("s8", "s16", "s32", "s64")):
        assert_parity(f.multi_scale[lvl], npz[f"encoder_ms_{name}"], f"encoder_ms_{name}")
    assert [tuple(m.shape[-2:]) for m in f.multi_scale] == [tuple(r) for r in npz["encoder_spatial_shapes_hw"]]
    assert f.memory.spatial_shapes == [tuple(r) for r in npz["decoder_spatial_shapes_hw"]]
    assert_parity(f.mask_features, npz["mask_features"], "mask_features")
    assert (f.image_size, f.padded_size) == (tuple(npz["image_size_hw"]), tuple(npz["padded_size_hw"]))
    clicks = torch.from_numpy(npz["clicks_xy_rel"])
    assert_parity(env.model.prompt_boxes(f, clicks, relative=True)[0], npz["points_padded_canvas"], "points")
    with torch.no_grad():
        out = env.model.decode_clicks(f, clicks, relative=True, exact_batching=True, return_intermediates=True)
    _check_decoder(out, npz, "", env.model.cfg.decoder.num_layers)
    assert_parity(out.masks.reshape(1, -1, *out.masks.shape[-2:]), npz["pred_masks_lowres"], "pred_masks_lowres")
    assert_parity(out.ious, npz["out_ious"], "out_ious")
    full = env.model.upscale_masks(out.masks, f)[0].reshape(-1, *f.image_size)
    _check_full_masks(full, npz, "out_masks")


def _case_b(env: Env, npz) -> None:
    """The same clicks one call each = our default (isolated) mode with all clicks in one call."""
    f = env.features("astronaut_resized640.png")
    n = len({k.split("_")[0] for k in npz.files})
    clicks = torch.cat([torch.from_numpy(npz[f"click{c}_points_in"])[:, :2] for c in range(n)])
    with torch.no_grad():
        together = env.model.decode_clicks(f, clicks, relative=True, return_intermediates=True)
    for c in range(n):
        p = f"click{c}_"
        with torch.no_grad():
            alone = env.model.decode_clicks(f, clicks[c : c + 1], relative=True, return_intermediates=True)
        _check_decoder(alone, npz, p, env.model.cfg.decoder.num_layers)
        assert_parity(alone.ious, npz[p + "out_ious"], "out_ious")
        full = env.model.upscale_masks(alone.masks, f)[0].reshape(-1, *f.image_size)
        _check_full_masks(full, npz, p + "out_masks")
        # batching never changes a click's result in the default mode
        assert_parity(together.ious[:, c : c + 1], npz[p + "pred_ious"], f"batched click {c} pred_ious")
        assert_parity(together.boxes[:, c].reshape(1, -1, 4), npz[p + "pred_boxes"], f"batched click {c} boxes")
        assert_parity(together.masks[:, c], alone.masks[:, 0], f"batched click {c} masks", tol=1e-5)


def _case_c(env: Env, npz) -> None:
    """Predictor case: model-level tensors only (raw masks, IoUs, boxes); filtering is tested with the predictor."""
    f = env.features("coffee_resized640.png")
    click = torch.from_numpy(npz["click_xy_rel"])[None]
    assert_parity(env.model.prompt_boxes(f, click, relative=True)[0], npz["points_in"], "points_in")
    with torch.no_grad():
        out = env.model.decode_clicks(f, click, relative=True)
    assert_parity(out.masks.reshape(1, -1, *out.masks.shape[-2:]), npz["pred_masks_lowres"], "pred_masks_lowres")
    assert_parity(out.ious, npz["pred_ious"], "pred_ious")
    assert_parity(out.ious, npz["predict_ious"], "predict_ious")
    assert_parity(out.boxes.reshape(1, -1, 4), npz["pred_boxes"], "pred_boxes")
    _check_full_masks(env.model.upscale_masks(out.masks, f)[0, 0], npz, "predict_masks")
    order = torch.argsort(out.ious[0, 0], descending=True)
    assert order.tolist() == npz["iou_sorted_token_order"].tolist()


def _case_d(env: Env, npz) -> None:
    """Automatic generator case: the decoder's raw IoUs/boxes for the 8x8 grid in one official batch."""
    f = env.features("astronaut_resized640.png")
    variants = sorted({k[: -len("_grid_xy_rel")] for k in npz.files if k.endswith("_grid_xy_rel")})
    assert variants, "no AMG variant in case d"
    done: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
    for v in variants:
        grid = npz[f"{v}_grid_xy_rel"]
        key = grid.tobytes()
        if key not in done:
            pts = torch.tensor(grid, dtype=torch.float32)  # the official generator's float64 → float32 cast
            with torch.no_grad():
                out = env.model.decode_clicks(f, pts, relative=True, exact_batching=True, compute_masks=False)
            done[key] = (out.ious, out.boxes.reshape(1, -1, 4))
        ious, boxes = done[key]
        assert_parity(ious, npz[f"{v}_pred_ious_raw"], f"{v}_pred_ious_raw")
        assert_parity(boxes, npz[f"{v}_pred_boxes_raw"], f"{v}_pred_boxes_raw")


def _case_e(env: Env, npz) -> None:
    """Padded input (600x900 → 608x928): click rescaling to the padded canvas, zero padding and the output crop."""
    f = env.features("coffee_resized600.png")
    assert (f.image_size, f.padded_size) == (tuple(npz["image_size_hw"]), tuple(npz["padded_size_hw"]))
    assert f.memory.spatial_shapes == [tuple(r) for r in npz["decoder_spatial_shapes_hw"]]
    h, w = f.image_size
    clicks_rel = torch.from_numpy(npz["clicks_xy_rel"])
    assert_parity(env.model.prompt_boxes(f, clicks_rel, relative=True)[0], npz["points_padded_canvas"], "points")
    # the pixel API: (x, y) in pixels of the unpadded image
    pixels = clicks_rel * torch.tensor([w, h])
    assert_parity(env.model.prompt_boxes(f, pixels)[0], npz["points_padded_canvas"], "points from pixels")
    with torch.no_grad():
        out = env.model.decode_clicks(f, clicks_rel, relative=True, exact_batching=True, return_intermediates=True)
    _check_decoder(out, npz, "", env.model.cfg.decoder.num_layers)
    assert_parity(out.ious, npz["out_ious"], "out_ious")
    full = env.model.upscale_masks(out.masks, f)[0].reshape(-1, h, w)
    _check_full_masks(full, npz, "out_masks")


CASES = {"a": _case_a, "b": _case_b, "c": _case_c, "d": _case_d, "e": _case_e}


@pytest.mark.parity
@pytest.mark.parametrize("case_file", CASE_FILES or ["<no fixtures>"])
def test_parity_case(env: Env, case_file: str) -> None:
    letter = case_file.split("_")[1][0]
    assert letter in CASES, f"{case_file}: no parity check for case {letter!r}"
    with np.load(env.root / case_file) as npz:
        CASES[letter](env, npz)


@pytest.mark.parity
def test_parity_with_grid_sample_msda(env: Env) -> None:
    """The reference MSDA implementation (the official grid_sample formulation) reproduces case a as well."""
    npz = np.load(env.root / "case_a_astronaut_3clicks.npz")
    img = env.image("astronaut_resized640.png")
    try:
        env.model.set_msda_impl("grid_sample")
        with torch.no_grad():
            f = env.model.encode_image(env.model.preprocess(img), tuple(img.shape[-2:]))
            out = env.model.decode_clicks(f, torch.from_numpy(npz["clicks_xy_rel"]), relative=True, exact_batching=True)
    finally:
        env.model.set_msda_impl("auto")
    for lvl, name in enumerate(("s8", "s16", "s32", "s64")):
        assert_parity(f.multi_scale[lvl], npz[f"encoder_ms_{name}"], f"encoder_ms_{name}")
    assert_parity(f.mask_features, npz["mask_features"], "mask_features")
    assert_parity(out.masks.reshape(1, -1, *out.masks.shape[-2:]), npz["pred_masks_lowres"], "pred_masks_lowres")
    assert_parity(out.ious, npz["pred_ious"], "pred_ious")
    assert_parity(out.boxes.reshape(1, -1, 4), npz["pred_boxes"], "pred_boxes")
    with pytest.raises(ValueError, match="MSDA"):
        env.model.set_msda_impl("fast")  # type: ignore[arg-type]


def test_case_b_meta_batching_changes_official_results(env: Env) -> None:
    """Official batched inference (exact_batching) differs from single calls by what cases_meta.json records."""
    meta = json.loads((env.root / "cases_meta.json").read_text())["case_b"]["batched_vs_single"]
    f = env.features("astronaut_resized640.png")
    clicks = torch.tensor(json.loads((env.root / "cases_meta.json").read_text())["case_a"]["clicks_xy_rel"])
    with torch.no_grad():
        batched = env.model.decode_clicks(f, clicks, relative=True, exact_batching=True)
        isolated = env.model.decode_clicks(f, clicks, relative=True)
    for c, rec in enumerate(meta):
        d_iou = (batched.ious[0, c] - isolated.ious[0, c]).abs().max().item()
        d_mask = (batched.masks[0, c] - isolated.masks[0, c]).abs().max().item()
        assert d_iou == pytest.approx(rec["max_abs_diff_ious_vs_batched"], rel=1e-3)
        assert d_mask == pytest.approx(rec["max_abs_diff_lowres_logits_vs_batched"], rel=1e-3)


# -------------------------------------------------------------------------------------------- checkpoints


def _manifest_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    man = json.loads(path.read_text())
    dt = {"float32": torch.float32, "int64": torch.int64}
    state = {e["key"]: torch.empty(e["shape"], dtype=dt[e["dtype"]], device="meta") for e in man["entries"]}
    return state, man


@pytest.mark.parametrize(("manifest", "make"), [("manifest_swint.json", swin_t), ("manifest_swinl.json", swin_l)])
def test_full_size_manifest_converts_completely(manifest: str, make) -> None:
    state, man = _manifest_state(require(SSAM_PARITY_DIR / manifest, "Semantic-SAM manifests"))
    with torch.device("meta"):
        model = SemanticSAM(make())
    report = load_official_semantic_sam({"model": state}, model, what=manifest)
    assert report.n_official == man["n_keys"] == len(state)
    assert set(report.mapped) | set(report.ignored) == set(state)
    ours = model.state_dict()
    assert sorted(report.mapped.values()) == sorted(ours)
    # unique elements: ours + the ignored non-alias keys (unused class heads, relative position indices)
    non_alias = [k for k, why in report.ignored.items() if not why.startswith("alias of")]
    assert sum(v.numel() for v in ours.values()) + sum(state[k].numel() for k in non_alias) == man["n_unique_elements"]
    # every alias group: exactly one member mapped, the others ignored naming it
    for group in man["alias_groups"]:
        mapped = [k for k in group if k in report.mapped]
        assert len(mapped) == 1, group
        for k in group:
            if k in report.ignored:
                assert mapped[0] in report.ignored[k], (k, report.ignored[k])


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ("remove", "model.sem_seg_head.predictor.mask_tokens.weight"),
        ("extra", "model.sem_seg_head.predictor.extra_head.weight"),
        ("shape", "model.backbone.layers.1.blocks.0.mlp.fc1.weight"),
        ("remove_canonical", "model.sem_seg_head.predictor._bbox_embed.layers.0.weight"),
    ],
)
def test_full_size_manifest_errors_name_the_key(edit: str, needle: str) -> None:
    state, _ = _manifest_state(require(SSAM_PARITY_DIR / "manifest_swint.json", "Semantic-SAM manifests"))
    with torch.device("meta"):
        model = SemanticSAM(swin_t())
    if edit in ("remove", "remove_canonical"):
        del state[needle]
    elif edit == "extra":
        state[needle] = torch.empty(3, device="meta")
    else:
        state[needle] = torch.empty(7, 7, device="meta")
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
        load_official_semantic_sam(state, model)


def test_small_checkpoint_loads_strictly_and_values_land(env: Env) -> None:
    rep = env.report
    state = official_state_dict(env.root / "ssam_small.pth")
    assert rep.n_official == len(state) == 282
    ours = env.model.state_dict()
    for off, mine in rep.mapped.items():
        assert torch.equal(ours[mine], state[off]), off
    assert all(reason for reason in rep.ignored.values())
    assert "model.pixel_mean" not in state  # non-persistent officially; ours are buffers built from the config
    torch.testing.assert_close(env.model.pixel_mean, torch.tensor([123.675, 116.28, 103.53]))


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ("remove", "model.sem_seg_head.pixel_decoder.transformer.level_embed"),
        ("extra", "model.sem_seg_head.predictor.something_new"),
        ("shape", "model.sem_seg_head.predictor.label_enc.weight"),
        ("alias", "model.sem_seg_head.predictor.decoder.bbox_embed.1.layers.2.bias"),
        ("alias", "model.sem_seg_head.predictor.decoder.norm.weight"),
        ("index", "model.backbone.layers.2.blocks.1.attn.relative_position_index"),
        ("nomodel", "backbone.norm0.weight"),
    ],
)
def test_small_checkpoint_errors_name_the_key(env: Env, edit: str, needle: str) -> None:
    state = official_state_dict(env.root / "ssam_small.pth")
    model = SemanticSAM(env.model.cfg)
    if edit == "remove":
        del state[needle]
    elif edit in ("extra", "nomodel"):
        state[needle] = torch.zeros(2)
    elif edit == "shape":
        state[needle] = torch.zeros(3, 64)
    elif edit == "alias":
        state[needle] = state[needle] + 1
    else:
        state[needle] = state[needle].flip(0)
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
        load_official_semantic_sam(state, model)


# ----------------------------------------------------------------------------------------------- API


def test_config_roundtrip_and_yaml() -> None:
    for cfg in (swin_t(), swin_l()):
        assert SemanticSAMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    small = from_official_yaml(require(SSAM_PARITY_DIR / "ssam_small.yaml", "ssam_small.yaml"))
    assert small.encoder.num_heads == 4 and small.decoder.num_heads == 8  # NHEADS is read by the encoder only
    assert small.encoder.ffn_dim == small.decoder.ffn_dim == 128
    assert small.backbone.depths == (1, 1, 2, 1) and small.decoder.num_layers == 3
    with pytest.raises(ValueError, match="unknown config keys"):
        SemanticSAMConfig.from_dict({"nope": 1})
    bad = swin_t().to_dict()
    bad["decoder"]["hidden_dim"] = 128
    with pytest.raises(ValueError, match="hidden_dim"):
        SemanticSAMConfig.from_dict(bad)


def test_batching_never_changes_a_click_in_default_mode(env: Env) -> None:
    f = env.features("coffee_resized600.png")
    pts = torch.tensor([[100.0, 50.0], [500.0, 300.0], [880.0, 590.0], [10.0, 20.0]])
    boxes = torch.tensor([[200.0, 100.0, 400.0, 300.0]])
    with torch.no_grad():
        allp = env.model.decode_clicks(f, pts, boxes=boxes)
        assert allp.masks.shape == (1, 5, 6, 152, 232) and allp.ious.shape == (1, 5, 6)
        for i in range(4):
            one = env.model.decode_clicks(f, pts[i : i + 1])
            assert rel_err(allp.masks[:, i], one.masks[:, 0]) <= 1e-5
            assert rel_err(allp.ious[:, i], one.ious[:, 0]) <= 1e-5
        box_alone = env.model.decode_clicks(f, boxes=boxes)
        assert rel_err(allp.ious[:, 4], box_alone.ious[:, 0]) <= 1e-5
        exact = env.model.decode_clicks(f, pts, exact_batching=True)
        assert (exact.ious - allp.ious[:, :4]).abs().max() > 1e-3  # official batching does mix clicks


def test_prompt_coordinates_and_boxes(env: Env) -> None:
    f = env.features("coffee_resized600.png")  # 600x900 padded to 608x928
    (h, w), (hp, wp) = f.image_size, f.padded_size
    anchors = env.model.prompt_boxes(
        f, torch.tensor([[450.0, 300.0]]), boxes=torch.tensor([[90.0, 60.0, 270.0, 240.0]])
    )
    expected_click = torch.tensor([450 / w * w / wp, 300 / h * h / hp, 0.005 * w / wp, 0.005 * h / hp])
    torch.testing.assert_close(anchors[0, 0], expected_click)
    torch.testing.assert_close(anchors[0, 1], torch.tensor([180 / wp, 150 / hp, 180 / wp, 180 / hp]))
    xyxy = boxes_to_xyxy_pixels(anchors[0, 1], f.padded_size)
    torch.testing.assert_close(xyxy, torch.tensor([90.0, 60.0, 270.0, 240.0]), rtol=1e-5, atol=1e-3)
    rel = env.model.prompt_boxes(f, torch.tensor([[0.5, 0.5]]), relative=True)
    torch.testing.assert_close(rel, env.model.prompt_boxes(f, torch.tensor([[w / 2, h / 2]])))
    with torch.no_grad():
        pb1 = env.model.decode_clicks(f, torch.tensor([[450.0, 300.0]]), pb=1, compute_masks=False)
        pb0 = env.model.decode_clicks(f, torch.tensor([[450.0, 300.0]]), compute_masks=False)
    assert pb1.masks is None and (pb1.ious - pb0.ious).abs().max() > 0


def test_value_cache_and_gradients(env: Env) -> None:
    model = SemanticSAM(env.model.cfg)
    model.load_state_dict(env.model.state_dict())
    x = model.preprocess(env.image("astronaut_resized640.png")[:, :96, :128])
    assert x.shape == (1, 3, 96, 128)
    with torch.no_grad():
        f = model.encode_image(x)
        a = model.decode_clicks(f, torch.tensor([[30.0, 40.0]]))
        assert len(f.memory.value_cache) == model.cfg.decoder.num_layers
        b = model.decode_clicks(f, torch.tensor([[30.0, 40.0]]))
    torch.testing.assert_close(a.masks, b.masks)
    f = model.encode_image(x)
    out = model.decode_clicks(f, torch.tensor([[30.0, 40.0]]), all_layer_masks=True)
    assert len(out.aux_masks) == model.cfg.decoder.num_layers - 1 and not f.memory.value_cache
    (out.masks.mean() + out.ious.sum() + out.boxes.sum()).backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    assert model.predictor.mask_tokens.weight.grad is not None


def test_bad_inputs_raise_clear_errors(env: Env) -> None:
    m = env.model
    f = env.features("coffee_resized600.png")
    with pytest.raises(TypeError, match="uint8"):
        m.preprocess(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="multiple of 32"):
        m.encode_image(torch.zeros(1, 3, 40, 64))
    with pytest.raises(TypeError, match="normalised floats"):
        m.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_size"):
        m.encode_image(torch.zeros(1, 3, 32, 32), image_size=(40, 32))
    with pytest.raises(ValueError, match="points must be"):
        m.decode_clicks(f, torch.zeros(3))
    with pytest.raises(ValueError, match="at least one"):
        m.decode_clicks(f)
    with pytest.raises(ValueError, match="at least one"):
        m.decode_clicks(f, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="finite"):
        m.decode_clicks(f, torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="XYXY"):
        m.decode_clicks(f, boxes=torch.tensor([[10.0, 10.0, 5.0, 20.0]]))
    with pytest.raises(ValueError, match="pb"):
        m.decode_clicks(f, torch.zeros(1, 2), pb=2)
