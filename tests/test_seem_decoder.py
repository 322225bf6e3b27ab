"""SEEM decoder (v1 and demo flavours): parity with the official tensors, state-dict keys, defaults, errors.

Parity is driven generically by the fixture folders: every ``case_*.json`` of ``../shared/parity/seem`` (v1)
and ``../shared/parity/seem_demo`` (demo) is replayed call by call (``<prefix>layout`` entries of the JSON;
a ``stage1/`` reference call first when stored), with the recorded random draws injected, and every stored
decoder tensor of the call is compared (floats: max|Δ|/max|ref| ≤ 1e-4; boolean attention masks: a handful
of flipped entries allowed and counted, README §10). Entries that are not the decoder's (text encoder,
vocabulary, prompt rasters, raw draws, post-processed ``final/*`` maps) are listed in ``NOT_DECODER`` and
skipped; any other stored entry that is not compared fails the test, so new cases in the same format are
checked in full.

Image features: astronaut from the stored ``features_astronaut.npz`` (complete); coffee is stored only
partially, so its features are computed with our FocalNet + pixel decoder (module-scoped fixture).

Every parity call passes a ``trace``, which selects the decoder's exact path (official order of operations,
all query groups given the vocabulary); ``test_seem_decoder_fast.py`` checks the fast default path against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SEEM_DEMO_PARITY_DIR, SEEM_PARITY_DIR, rel_err

from seem.models.config import SEEMDecoderConfig, from_official_yaml, seem_focall, seem_focalt
from seem.models.seem_attention import (
    DEMO_RULES,
    V1_RULES,
    GroupLayout,
    default_memory_slots,
    default_spatial_query_indices,
)
from seem.models.seem_decoder import SEEMDecoder, normalize, vl_similarity
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import (
    DecoderDraws,
    DecoderInputs,
    DecoderOutput,
    GroundingPrompt,
    ImageFeatures,
    ReferenceTokens,
    SpatialPrompts,
)
from seem.models.visual_sampler import _balanced_quotas, default_pixel_selection, evenly_spaced

PRED_PREFIX = "sem_seg_head.predictor."
LANG_PREFIX = PRED_PREFIX + "lang_encoder."
TOL = 1e-4
MAX_MASK_FLIPS = 4  # per boolean attention mask (README §10: "a handful of flips")
PARTIAL_SUFFIXES = ("crop_tl", "crop_center", "crop_br", "stride8", "chan_sum", "chan_sumsq", "shape")

# Stored entries that are not decoder outputs (regex on the entry name, after the call prefix if any).
NOT_DECODER = re.compile(
    r"^(text/|vocab/|rand/|final/|prompt/|stage2/final/|stroke_only/final/|round\d+/final/|"
    r"round\d+/prompt/|stage1/prompt/)"
)


def _cases(folder: Path) -> list[Any]:
    names = sorted(p.stem for p in folder.glob("case_*.json"))
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no case_*.json in {folder}"))]
    return names


V1_CASES = _cases(SEEM_PARITY_DIR)
DEMO_CASES = _cases(SEEM_DEMO_PARITY_DIR)


# ----------------------------------------------------------------------------------------------------------
# fixtures


def decoder_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official checkpoint → our decoder keys: strip ``sem_seg_head.predictor.``, drop ``lang_encoder.*``."""
    return {
        k[len(PRED_PREFIX) :]: v for k, v in sd.items() if k.startswith(PRED_PREFIX) and not k.startswith(LANG_PREFIX)
    }


@pytest.fixture(scope="module")
def official_sd(seem_parity_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(seem_parity_dir / "seem_v1_small.pt", weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def decoders(seem_parity_dir: Path, official_sd) -> dict[str, Any]:
    """{"v1": SEEMDecoder, "demo": SEEMDecoder, "logit_scale": tensor} loaded from the small .pt through the strict
    checkpoint converter."""
    out: dict[str, Any] = {"logit_scale": official_sd[LANG_PREFIX + "logit_scale"]}
    yamls = {
        "v1": seem_parity_dir / "seem_v1_small.yaml",
        "demo": SEEM_DEMO_PARITY_DIR / "seem_demo_small.yaml",
    }
    for variant, path in yamls.items():
        if not path.exists():
            continue
        cfg = from_official_yaml(path)
        assert cfg.decoder.variant == variant
        model, _ = SEEMModel.from_official(official_sd, variant=variant, config=cfg)  # the strict converter
        out[variant] = model.decoder
    return out


class FeatureBank:
    """Per-image ``ImageFeatures``: stored when complete, else computed with our backbone + pixel decoder."""

    def __init__(self, parity_dir: Path) -> None:
        self.dir = parity_dir
        self.cache: dict[str, ImageFeatures] = {}
        self.models: Any = None

    def __call__(self, name: str) -> ImageFeatures:
        if name not in self.cache:
            self.cache[name] = self._stored(name) or self._computed(name)
        return self.cache[name]

    def _stored(self, name: str) -> ImageFeatures | None:
        f = np.load(self.dir / f"features_{name}.npz")
        keys = [f"pixel_decoder/multi_scale_features/{i}" for i in range(3)] + ["pixel_decoder/mask_features"]
        if not all(k in f.files for k in keys):
            return None
        ms = [torch.from_numpy(f[k]) for k in keys[:3]]
        mf = torch.from_numpy(f[keys[3]])
        return ImageFeatures(ms, mf, (4 * mf.shape[2], 4 * mf.shape[3]))

    def _computed(self, name: str) -> ImageFeatures:
        try:
            from PIL import Image

            from seem.models.backbones import FocalNet
            from seem.models.pixel_decoders import TransformerEncoderPixelDecoder
            from seem.models.preprocess import normalize_and_pad
        except ImportError as e:  # pragma: no cover - depends on the other parts being present
            pytest.skip(f"features of {name!r} are stored partially and FocalNet / pixel decoder are missing: {e}")
        if self.models is None:
            cfg = from_official_yaml(self.dir / "seem_v1_small.yaml")
            sd = torch.load(self.dir / "seem_v1_small.pt", weights_only=True, map_location="cpu")
            bb = FocalNet(cfg.backbone).eval()
            pd = TransformerEncoderPixelDecoder(cfg.pixel_decoder).eval()
            bb.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, strict=True)
            pfx = "sem_seg_head.pixel_decoder."
            pd.load_state_dict({k[len(pfx) :]: v for k, v in sd.items() if k.startswith(pfx)}, strict=True)
            self.models = (cfg, bb, pd)
        cfg, bb, pd = self.models
        img = np.array(Image.open(self.dir / "images" / f"{name}.png").convert("RGB"))
        x = normalize_and_pad(torch.from_numpy(img).permute(2, 0, 1).contiguous(), cfg.pixel_mean, cfg.pixel_std)
        with torch.no_grad():
            out = pd(bb(x))
        return ImageFeatures(list(out.multi_scale_features), out.mask_features, tuple(x.shape[-2:]))


@pytest.fixture(scope="module")
def features(seem_parity_dir: Path) -> FeatureBank:
    return FeatureBank(seem_parity_dir)


# ----------------------------------------------------------------------------------------------------------
# comparison helpers


class Checker:
    """Compares our tensors with stored ones and records which stored entries were checked."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.checked: set[str] = set()
        self.flips: dict[str, int] = {}

    def __call__(self, name: str, ours: torch.Tensor | np.ndarray | int, tol: float = TOL) -> None:
        assert name in self.ref.files, f"no stored entry {name}"
        ref = self.ref[name]
        ours_t = torch.as_tensor(ours).detach()
        if ref.dtype == np.bool_:
            assert tuple(ours_t.shape) == ref.shape, f"{name}: shape {tuple(ours_t.shape)} != {ref.shape}"
            flips = int((ours_t.cpu().numpy() != ref).sum())
            self.flips[name] = flips
            assert flips <= MAX_MASK_FLIPS, f"{name}: {flips} flipped entries (> {MAX_MASK_FLIPS})"
        elif ref.dtype.kind in "iu":
            assert np.array_equal(ours_t.cpu().numpy().astype(ref.dtype).reshape(ref.shape), ref), name
            assert ours_t.numel() == ref.size, name
        else:
            e = rel_err(ours_t.float().cpu(), ref)
            assert e <= tol, f"{name}: relative error {e:.3g} > {tol:g}"
        self.checked.add(name)

    def partial(self, name: str, full: torch.Tensor) -> None:
        """A map stored whole, or partially with the README §6.1 suffixes; ``full`` is [C, H, W]."""
        if name in self.ref.files:
            self(name, full[None] if self.ref[name].ndim == full.dim() + 1 else full)
            return
        h, w = full.shape[-2:]
        views = {
            "crop_tl": full[:, :16, :16],
            "crop_center": full[:, h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8],
            "crop_br": full[:, -16:, -16:],
            "stride8": full[:, ::8, ::8],
            "chan_sum": full.double().sum(dim=(1, 2)),
            "chan_sumsq": full.double().square().sum(dim=(1, 2)),
        }
        found = False
        for s in PARTIAL_SUFFIXES:
            key = f"{name}/{s}"
            if key not in self.ref.files:
                continue
            found = True
            if s == "shape":
                assert self.ref[key][-3:].tolist() == list(full.shape), key
                self.checked.add(key)
            else:
                self(key, views[s])
        assert found, f"{name}: not stored"


def call_prefixes(meta: dict[str, Any], files: list[str]) -> list[str]:
    """Decoder calls of a case, in order: a layout-less ``stage1/`` reference call, then every layout."""
    prefixes = [k[: -len("layout")] for k in meta if k.endswith("layout")]
    if "stage1/" not in prefixes and any(f.startswith("stage1/") for f in files):
        prefixes.insert(0, "stage1/")
    return prefixes


def image_of(meta: dict[str, Any], prefix: str) -> str:
    if prefix == "stage1/":
        return meta["ref_image"]
    return meta.get("target_image", meta.get("image"))


def v1_draws(meta: dict[str, Any], ref: Any, call: int) -> DecoderDraws:
    """Recorded official v1 draws of decoder call ``call`` (multinomial pixel sets, randint, memory slots)."""
    d = DecoderDraws()
    by_index = {r["i"]: r for r in meta["random_draws"]}
    for c in meta["rand_sample_calls"]:
        if c["decoder_call"] == call and c["random_draw"] >= 0:
            r = by_index[c["random_draw"]]
            d.prompt_pixels[c["role"]] = torch.from_numpy(ref[f"rand/{r['i']:02d}_{r['fn']}"])
    slots = []
    for r in meta["random_draws"]:
        if r["decoder_call"] != call:
            continue
        t = torch.from_numpy(ref[f"rand/{r['i']:02d}_{r['fn']}"])
        if r["fn"] == "randint":
            d.spatial_query_indices = t
        elif "cross_attn_mask" in r["site"]:
            slots.append(t.sort().values)  # the official code sorts the drawn assignment
    d.memory_slots = slots or None
    return d


def demo_draws(meta: dict[str, Any], ref: Any, prefix: str) -> DecoderDraws:
    """Recorded demo draws: the used prefix of each ``randperm``."""
    d = DecoderDraws()
    for c in meta["rand_sample_calls"]:
        if c["prefix"] == prefix and c["random_draw"] >= 0:
            perm = torch.from_numpy(ref[f"rand/{c['random_draw']:02d}_randperm"])
            d.prompt_pixels[c["role"]] = perm[: c["n_points_out"]]
    return d


def pad_to(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    m = torch.from_numpy(mask).reshape(-1, *mask.shape[-2:])
    out = torch.zeros(m.shape[0], *size, dtype=torch.bool)
    out[:, : m.shape[1], : m.shape[2]] = m
    return out


def check_layout(meta: dict[str, Any], prefix: str, trace: dict[str, Any], n_layers: int) -> None:
    """Our group row ranges equal the official layout (cross variables and self-attention rows)."""
    lay = meta.get(f"{prefix}layout")
    if not lay or not lay["cross_vars"]:
        return
    assert trace["layout/cross"] == {k: tuple(v) for k, v in lay["cross_vars"][0]["index"].items()}
    for i in range(n_layers):
        want = lay["self_attn"][i]
        assert trace[f"layer{i}/self_layout"] == {k: tuple(v) for k, v in want["index"].items()}
        assert trace[f"layer{i}/kept_rows"] == want["kept_rows_in_self_out_ffn_out"]


def check_trace(chk: Checker, prefix: str, trace: dict[str, Any], out: DecoderOutput) -> None:
    """Every ``<prefix>init|level_pos|L*|layer*`` entry against the trace."""
    for name in chk.ref.files:
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if re.match(r"^(init/|level_pos/|layer\d+/|L\d+/(head_input|caption|class_logits|maskemb)$)", key):
            chk(name, trace[key])
    j = len(out.predictions) - 1
    name = f"{prefix}L{j}/masks/queries_object"
    if name in chk.ref.files or f"{name}/shape" in chk.ref.files:
        chk.partial(name, out.final.object.mask_logits[0])


def check_points(chk: Checker, meta: dict[str, Any], prefix: str, call: int, trace: dict[str, Any]) -> None:
    """Sampled prompt points: v1 ``rand_sample/{nn}`` [3, K] (prompt, y, x); demo ``spatial/points/*``."""
    for c in meta.get("rand_sample_calls", []):
        if c["prefix"] != prefix if "prefix" in c else c["decoder_call"] != call:
            continue
        role = c["role"]
        v1_name = f"rand_sample/{c['i']:02d}"
        if v1_name in chk.ref.files:
            pts = trace[f"spatial/points/{role}"]
            pid = trace[f"spatial/prompt_index/{role}"]
            ours = torch.cat([pid[None].float(), pts.t()]) if pts.numel() else torch.zeros(3, 0, dtype=torch.long)
            chk(v1_name, ours)
        demo_name = f"{prefix}spatial/points/{role}"
        if demo_name in chk.ref.files:
            chk(demo_name, trace[f"spatial/points/{role}"])


def check_reference(chk: Checker, ref_tokens: ReferenceTokens, demo: bool) -> None:
    kind = "visual" if demo else "spatial"
    key = "visual_query" if demo else "spatial_query"
    chk(f"stage1/{key}_pos", ref_tokens.pooled_pos[:, None])
    chk(f"stage1/{key}_neg", ref_tokens.pooled_neg[:, None])
    for lvl in range(3):
        chk(f"stage1/src_{kind}_queries/{lvl}", ref_tokens.level_tokens[lvl][:, None])
        chk(
            f"stage1/src_{kind}_maskings/{lvl}",
            torch.zeros(1, ref_tokens.level_tokens[lvl].shape[0], dtype=bool),
        )
        name = f"stage1/src_{kind}_indices/{lvl}"
        if name in chk.ref.files:
            chk(name, ref_tokens.level_prompt_index[lvl][None, :, None].float())


def assert_all_checked(chk: Checker) -> None:
    missing = sorted(
        k for k in chk.ref.files if k not in chk.checked and not NOT_DECODER.match(re.sub(r"^dec/", "", k))
    )
    assert not missing, f"stored decoder entries not compared: {missing}"


# ----------------------------------------------------------------------------------------------------------
# v1 parity


def _traced_forward(dec: SEEMDecoder, inputs: DecoderInputs) -> tuple[DecoderOutput, dict[str, Any]]:
    trace: dict[str, Any] = {}
    with torch.no_grad():
        out = dec(inputs, trace=trace)
    return out, trace


@pytest.mark.parity
@pytest.mark.parametrize("case", V1_CASES)
def test_v1_parity(case: str, decoders, features: FeatureBank, seem_parity_dir: Path) -> None:
    dec: SEEMDecoder = decoders["v1"]
    ls = decoders["logit_scale"]
    meta = json.loads((seem_parity_dir / f"{case}.json").read_text())
    ref = np.load(seem_parity_dir / f"{case}.npz")
    chk = Checker(ref)
    vocab_npz = ref if "text/class_embeddings" in ref.files else np.load(seem_parity_dir / "case_a_panoptic.npz")
    vocab = torch.from_numpy(vocab_npz["text/class_embeddings"])
    prefixes = call_prefixes(meta, ref.files)
    reference: ReferenceTokens | None = None
    for call, prefix in enumerate(prefixes):
        feats = features(image_of(meta, prefix))
        draws = v1_draws(meta, ref, call)
        if prefix == "stage1/":
            pos = pad_to(ref["stage1/prompt/pos_mask"], feats.padded_size)
            trace: dict[str, Any] = {}
            with torch.no_grad():
                reference = dec.encode_reference(feats, SpatialPrompts(pos, torch.zeros_like(pos)), draws, trace)
            check_reference(chk, reference, demo=False)
            check_points(chk, meta, prefix, call, trace)
            continue
        lay = meta[f"{prefix}layout"]
        extra = set(lay["extra_keys"])
        inputs = DecoderInputs(feats, class_embeddings=vocab, logit_scale=ls, draws=draws)
        if "grounding_tokens" in extra:
            g = f"{prefix}text/00/" if f"{prefix}text/00/token_emb" in ref.files else "text/00/"
            am = torch.from_numpy(ref[g + "attention_mask"]).bool()
            tokens = torch.from_numpy(ref[g + "token_emb"])[am]
            inputs.grounding = GroundingPrompt(tokens, torch.from_numpy(ref[g + "class_emb"]))
        if "spatial_query_pos_mask" in extra:
            pos = pad_to(ref[f"{prefix}prompt/pos_mask"], feats.padded_size)
            neg = pad_to(ref[f"{prefix}prompt/neg_mask"], feats.padded_size)
            inputs.spatial = SpatialPrompts(pos, neg)
        if "prev_mask" in extra:
            inputs.prev_mask = torch.from_numpy(ref[f"{prefixes[call - 1]}out/prev_mask"][0])
        if "refimg_tokens" in extra:
            assert reference is not None
            inputs.reference = reference
        out, trace = _traced_forward(dec, inputs)
        check_layout(meta, prefix, trace, dec.cfg.num_layers)
        check_trace(chk, prefix, trace, out)
        check_points(chk, meta, prefix, call, trace)
        # organize_output keys
        fin = out.final
        o = f"{prefix}out/"
        chk(o + "pred_logits", fin.object.class_logits)
        for name, val in (
            ("pred_captions", fin.object.captions),
            ("pred_gtexts", None if fin.grounding is None else fin.grounding.captions),
            ("pred_stexts", None if fin.spatial is None else fin.spatial.captions),
            ("pred_smaskembs", None if fin.spatial is None else fin.spatial.mask_embeddings),
            ("pred_pspatials", out.pooled_pos_spatial),
            ("pred_nspatials", out.pooled_neg_spatial),
        ):
            if o + name in ref.files:
                assert val is not None, o + name
                chk(o + name, val)
        if o + "prev_mask" in ref.files:
            assert out.spatial_selection is not None
            chk(o + "prev_mask", out.spatial_selection.prev_mask[None])
        # grounding selection (evaluate_grounding)
        if lay["task"] == "grounding_eval" and "select/vl_similarity" in ref.files:
            sel = out.grounding_selection
            assert sel is not None
            chk("select/vl_similarity", sel.scores)
            chk("select/matched_id", sel.query_index)
            assert sel.query_index.tolist() == meta["matched_id"]
            chk("select/pred_gmasks_matched", sel.mask_logits)
            assert out.final.grounding is not None and inputs.grounding is not None
            assert inputs.grounding.phrase_embeddings is not None
            chk("select/v_emb_normalized", normalize(out.final.grounding.captions[0]))
            chk("select/t_emb_normalized", normalize(inputs.grounding.phrase_embeddings))
    assert_all_checked(chk)


# ----------------------------------------------------------------------------------------------------------
# demo parity


@pytest.mark.parity
@pytest.mark.parametrize("case", DEMO_CASES)
def test_demo_parity(case: str, decoders, features: FeatureBank, seem_demo_parity_dir: Path) -> None:
    dec: SEEMDecoder = decoders["demo"]
    ls = decoders["logit_scale"]
    meta = json.loads((seem_demo_parity_dir / f"{case}.json").read_text())
    ref = np.load(seem_demo_parity_dir / f"{case}.npz")
    chk = Checker(ref)
    vocab = torch.from_numpy(ref["vocab/class_embeddings"])
    chk.checked.add("vocab/logit_scale")
    assert float(ref["vocab/logit_scale"]) == pytest.approx(float(ls))
    prefixes = call_prefixes(meta, ref.files)
    reference: ReferenceTokens | None = None
    grounding = None
    if "text/grounding_tokens" in ref.files:
        grounding = GroundingPrompt(
            torch.from_numpy(ref["text/grounding_tokens"])[:, 0], torch.from_numpy(ref["text/class_emb"])
        )
    for call, prefix in enumerate(prefixes):
        feats = features(image_of(meta, prefix))
        draws = demo_draws(meta, ref, prefix)
        lay = meta[f"{prefix}layout"]
        if lay["task"] == "refimg":
            pos = pad_to(ref["stage1/prompt/rand_shape"], feats.padded_size)
            trace: dict[str, Any] = {}
            with torch.no_grad():
                reference = dec.encode_reference(feats, SpatialPrompts(pos, torch.zeros_like(pos)), draws, trace)
            check_reference(chk, reference, demo=True)
            check_points(chk, meta, prefix, call, trace)
            continue
        extra = set(lay["extra_keys"])
        inputs = DecoderInputs(feats, class_embeddings=vocab, logit_scale=ls, draws=draws)
        if "grounding_tokens" in extra:
            inputs.grounding = grounding
        if "spatial_query_pos_mask" in extra:
            inputs.spatial = SpatialPrompts(pad_to(ref["prompt/stroke_resized"], feats.padded_size))
        if "visual_query_pos" in extra:
            inputs.reference = reference
        out, trace = _traced_forward(dec, inputs)
        check_layout(meta, prefix, trace, dec.cfg.num_layers)
        check_trace(chk, prefix, trace, out)
        check_points(chk, meta, prefix, call, trace)
        _check_demo_outputs(chk, prefix, out)
        if grounding is not None and "select_if_text/vl_similarity" in ref.files:
            sim = vl_similarity(normalize(out.final.object.captions[0]), normalize(grounding.phrase_embeddings), ls)
            chk("select_if_text/vl_similarity", sim)
            assert int(sim.argmax()) == meta["selection_if_text_rule_were_used"]["query"]
        if "selection" in meta and prefix in ("dec/", "stage2/"):
            assert out.demo_selection is not None
            assert out.demo_selection.query_index == meta["selection"]["query"]
            assert out.demo_selection.class_index == meta["selection"]["pred_class"]
        # the stroke-only replay of a stroke+text case: same draws, no text
        if "stroke_only/dec/L0/head_input" in ref.files and prefix == "dec/":
            inputs.grounding = None
            out2, trace2 = _traced_forward(dec, inputs)
            check_trace(chk, "stroke_only/dec/", trace2, out2)
            _check_demo_outputs(chk, "stroke_only/dec/", out2)
            assert out2.demo_selection is not None
            assert out2.demo_selection.query_index == meta["stroke_only_replay"]["query"]
    assert_all_checked(chk)


def _check_demo_outputs(chk: Checker, prefix: str, out: DecoderOutput) -> None:
    ref = chk.ref
    fin = out.final
    o = f"{prefix}out/"
    for name, val in (
        ("pred_logits", fin.object.class_logits),
        ("pred_maskembs", fin.object.mask_embeddings),
        ("pred_captions", fin.object.captions),
        ("pred_pspatials", out.pooled_pos_spatial),
        ("pred_nspatials", out.pooled_neg_spatial),
        ("pred_pvisuals", out.pooled_pos_visual),
        ("pred_nvisuals", out.pooled_neg_visual),
    ):
        if o + name in ref.files:
            assert val is not None, o + name
            chk(o + name, val)
    s = "stroke_only/select/" if prefix.startswith("stroke_only/") else "select/"
    sel = out.demo_selection
    if s + "query" in ref.files:
        assert sel is not None
        chk(s + "query", sel.query_index)
        chk(s + "pred_class", sel.class_index)
        if s + "scores" in ref.files:
            chk(s + "scores", sel.scores[None, :, None])
        if s + "vl_similarity" in ref.files:
            chk(s + "vl_similarity", sel.scores[:, None])
        if s + "mask_logits_stride4" in ref.files:
            chk(s + "mask_logits_stride4", sel.mask_logits)


# ----------------------------------------------------------------------------------------------------------
# state-dict keys


def test_small_checkpoint_keys(decoders, official_sd) -> None:
    """Our keys and shapes equal the official ``sem_seg_head.predictor.*`` keys (minus ``lang_encoder.*``)."""
    want = {k: tuple(v.shape) for k, v in decoder_state_dict(official_sd).items()}
    for variant in ("v1", "demo"):
        if variant not in decoders:
            continue
        ours = {k: tuple(v.shape) for k, v in decoders[variant].state_dict().items()}
        assert ours == want, variant


@pytest.mark.parametrize("which", ["focalt", "focall"])
@pytest.mark.parametrize("variant", ["v1", "demo"])
def test_full_size_keys_match_manifest(which: str, variant: str, seem_parity_dir: Path) -> None:
    """A full-size decoder built on the meta device has exactly the manifest's predictor keys and shapes."""
    manifest = json.loads((seem_parity_dir / f"manifest_{which}_v1.json").read_text())
    want = {
        e["key"][len(PRED_PREFIX) :]: tuple(e["shape"])
        for e in manifest["keys"]
        if e["key"].startswith(PRED_PREFIX) and not e["key"].startswith(LANG_PREFIX)
    }
    cfg = (seem_focalt if which == "focalt" else seem_focall)(variant).decoder
    with torch.device("meta"):
        dec = SEEMDecoder(cfg)
    ours = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert ours == want


# ----------------------------------------------------------------------------------------------------------
# deterministic defaults and independence


def _random_decoder(variant: str = "v1") -> SEEMDecoder:
    torch.manual_seed(0)
    cfg = SEEMDecoderConfig(
        variant=variant,  # type: ignore[arg-type]
        hidden_dim=32,
        num_heads=4,
        ffn_dim=64,
        num_layers=3,
        num_queries=10,
        mask_dim=32,
        dim_proj=32,
        spatial_memories=6,
    )
    dec = SEEMDecoder(cfg).eval()
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_(0, 0.3)
    return dec


def _random_features(b: int = 1, hp: int = 128, wp: int = 160, c: int = 32) -> ImageFeatures:
    g = torch.Generator().manual_seed(1)
    ms = [torch.randn(b, c, hp // s, wp // s, generator=g) for s in (32, 16, 8)]
    return ImageFeatures(ms, torch.randn(b, c, hp // 4, wp // 4, generator=g), (hp, wp))


def _click(hp: int, wp: int, y: int, x: int) -> torch.Tensor:
    m = torch.zeros(hp, wp, dtype=torch.bool)
    m[y - 1 : y + 2, x - 1 : x + 2] = True
    return m


def test_defaults_are_deterministic() -> None:
    """No draws: two calls give identical outputs (large prompts: > 512 pixels, two prompts, memory)."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(2, 128, 160, dtype=torch.bool)
    pos[0, 10:60, 20:90] = True  # 3500 px: the budget is split
    pos[1, 70:120, 30:50] = True
    neg = torch.stack([_click(128, 160, 100, 120), torch.zeros(128, 160, dtype=torch.bool)])
    prev = torch.randn(2, 32, 40)
    vocab = normalize(torch.randn(5, 32))
    inputs = DecoderInputs(feats, vocab, torch.tensor(2.0), spatial=SpatialPrompts(pos, neg), prev_mask=prev)
    with torch.no_grad():
        a = dec(inputs)
        b = dec(inputs)
    for pa, pb in zip(a.predictions, b.predictions, strict=True):
        assert pa.spatial is not None and pb.spatial is not None
        assert torch.equal(pa.object.mask_logits, pb.object.mask_logits)
        assert torch.equal(pa.spatial.mask_logits, pb.spatial.mask_logits)
    assert a.spatial_selection is not None and b.spatial_selection is not None
    assert torch.equal(a.spatial_selection.prev_mask, b.spatial_selection.prev_mask)
    # the used draws are reported and follow the documented rules; replaying them changes nothing
    assert a.draws.spatial_query_indices is not None
    assert a.draws.spatial_query_indices.tolist() == [0, 5, 9, 0, 5, 9]
    assert a.draws.memory_slots is not None and all(s.tolist() == [0, 0, 0, 1, 1, 1] for s in a.draws.memory_slots)
    n_pos = a.draws.prompt_pixels["level0_pos"].numel()
    assert n_pos == 512
    inputs.draws = a.draws
    with torch.no_grad():
        c = dec(inputs)
    assert torch.equal(c.final.object.mask_logits, a.final.object.mask_logits)
    assert c.spatial_selection is not None
    assert torch.equal(c.spatial_selection.prev_mask, a.spatial_selection.prev_mask)


def test_prompt_independent_of_other_prompts() -> None:
    """v1 defaults: adding an unrelated second prompt leaves the first prompt's result unchanged.

    (Holds whenever the prompt stacks stay within the 512-pixel budget and no memory is used; beyond that
    the budget and the memory slots are shared among the prompts, as officially.)
    """
    dec = _random_decoder()
    feats = _random_features()
    p0 = _click(128, 160, 30, 40)
    p1 = torch.zeros(128, 160, dtype=torch.bool)
    p1[80:90, 100:130] = True  # a small scribble-like box, 300 px
    n0 = _click(128, 160, 60, 70)
    empty = torch.zeros(128, 160, dtype=torch.bool)
    one = DecoderInputs(feats, spatial=SpatialPrompts(p0[None], n0[None]), object_queries=True)
    two = DecoderInputs(
        feats, spatial=SpatialPrompts(torch.stack([p0, p1]), torch.stack([n0, empty])), object_queries=True
    )
    with torch.no_grad():
        a = dec(one)
        b = dec(two)
    assert a.spatial_selection is not None and b.spatial_selection is not None
    assert int(a.spatial_selection.query_index[0]) == int(b.spatial_selection.query_index[0])
    for pa, pb in zip(a.predictions, b.predictions, strict=True):
        assert pa.spatial is not None and pb.spatial is not None
        assert rel_err(pb.spatial.mask_logits[:, :3], pa.spatial.mask_logits) < 1e-5
        assert pa.object is not None and pb.object is not None
        assert rel_err(pb.object.mask_logits, pa.object.mask_logits) < 1e-5  # v1: objects ignore prompts
    assert rel_err(b.spatial_selection.prev_mask[:1], a.spatial_selection.prev_mask) < 1e-5
    assert a.final.object is not None and a.final.object.class_logits is None  # no vocabulary: no class logits


def test_reference_tokens_equal_spatial_prompt_v1() -> None:
    """v1: injecting stage-1 tokens of the same image equals giving the spatial prompts directly."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 20:80, 40:50] = True
    with torch.no_grad():
        ref = dec.encode_reference(feats, SpatialPrompts(pos))
        a = dec(DecoderInputs(feats, spatial=SpatialPrompts(pos)))
        b = dec(DecoderInputs(feats, reference=ref))
    assert a.spatial_selection is not None and b.spatial_selection is not None
    assert torch.equal(a.spatial_selection.prev_mask, b.spatial_selection.prev_mask)
    assert b.pooled_pos_spatial is not None and torch.equal(b.pooled_pos_spatial[0], ref.pooled_pos)


def test_demo_example_and_priority() -> None:
    """Demo: a reference prompt becomes tokens_visual; with a stroke too, the stroke picks the mask."""
    dec = _random_decoder("demo")
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 20:80, 40:50] = True
    phrase = torch.randn(1, 32)
    g = GroundingPrompt(torch.randn(4, 32), phrase)
    with torch.no_grad():
        ref = dec.encode_reference(feats, SpatialPrompts(pos))
        ex = dec(DecoderInputs(feats, reference=ref, logit_scale=torch.tensor(1.0)), trace=(tr := {}))
        both = dec(
            DecoderInputs(feats, spatial=SpatialPrompts(pos), reference=ref, grounding=g, logit_scale=torch.tensor(1.0))
        )
        text = dec(DecoderInputs(feats, grounding=g, logit_scale=torch.tensor(1.0)))
    assert tr["layer0/self_layout"] == {
        "queries_object": (0, 10),
        "tokens_visual": (10, 10 + len(ref.level_tokens[0])),
    }
    assert ex.demo_selection is not None and ex.demo_selection.source == "example"
    assert both.demo_selection is not None and both.demo_selection.source == "stroke"
    assert text.demo_selection is not None and text.demo_selection.source == "text"
    assert ex.demo_selection.class_index is None  # no vocabulary
    assert ex.pooled_pos_visual is not None and ex.pooled_neg_visual is not None
    assert torch.equal(ex.pooled_neg_visual, torch.zeros_like(ex.pooled_neg_visual))  # demo: empty → 0


@pytest.mark.parametrize("variant", ["v1", "demo"])
def test_prompt_without_pixels(variant: str) -> None:
    """A prompt without any pixel runs; its pooled embedding is -1 (v1) or 0 (demo), as officially."""
    dec = _random_decoder(variant)
    feats = _random_features()
    empty = torch.zeros(1, 128, 160, dtype=torch.bool)
    with torch.no_grad():
        out = dec(DecoderInputs(feats, spatial=SpatialPrompts(empty, empty)))
    assert out.pooled_pos_spatial is not None
    assert torch.all(out.pooled_pos_spatial == (-1.0 if variant == "v1" else 0.0))
    group = out.final.spatial if variant == "v1" else out.final.object
    assert group is not None and torch.isfinite(group.mask_logits).all()


def test_batch_without_prompts() -> None:
    """The prompt-free path takes a batch; each image's result equals its single-image result."""
    dec = _random_decoder()
    feats = _random_features(b=2)
    with torch.no_grad():
        both = dec(DecoderInputs(feats))
        one = dec(DecoderInputs(ImageFeatures([m[1:] for m in feats.multi_scale], feats.mask_features[1:], (128, 160))))
    assert rel_err(both.final.object.mask_logits[1:], one.final.object.mask_logits) < 1e-5


# ----------------------------------------------------------------------------------------------------------
# small rules


def test_sampler_rules() -> None:
    assert evenly_spaced(10, 3).tolist() == [0, 5, 9]
    assert evenly_spaced(16, 3).tolist() == [0, 8, 15]
    assert evenly_spaced(101, 3).tolist() == [0, 50, 100]
    assert evenly_spaced(7, 7).tolist() == list(range(7))
    assert evenly_spaced(5, 1).tolist() == [0]
    assert _balanced_quotas([1000, 0, 1000], 511) == [256, 0, 255]
    assert _balanced_quotas([100, 1000, 1000], 512) == [100, 206, 206]
    sel = default_pixel_selection([300, 300], 512)
    assert sel.numel() == 512 and torch.equal(sel, sel.sort().values) and sel.unique().numel() == 512
    assert int((sel < 300).sum()) == 256
    assert default_pixel_selection([9, 9], 512).tolist() == list(range(18))
    assert default_spatial_query_indices(101, 2, 3).tolist() == [0, 50, 100, 0, 50, 100]
    assert default_memory_slots(8, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert default_memory_slots(32, 1).tolist() == [0] * 32


def test_attention_rules_tables() -> None:
    """v1: object rows see only objects; spatial rows see only their own prompt. Demo: objects see all."""
    pidx = {
        "queries_spatial": torch.tensor([0, 0, 1, 1]),
        "tokens_spatial": torch.tensor([0, 1, 1]),
        "memories_spatial": torch.tensor([0, 1]),
    }
    sizes = {"queries_object": 2, "queries_spatial": 4, "tokens_spatial": 3, "memories_spatial": 2}
    lay = GroupLayout.build(V1_RULES.self_order, sizes, pidx)
    m = V1_RULES.self_attn_mask(lay)
    assert m[:2, :2].logical_not().all() and m[:2, 2:].all()
    qs, ts, ms = lay.rows("queries_spatial"), lay.rows("tokens_spatial"), lay.rows("memories_spatial")
    assert m[qs, qs].tolist() == [[False, False, True, True]] * 2 + [[True, True, False, False]] * 2
    assert m[qs, ts][0].tolist() == [False, True, True] and m[qs, ms][3].tolist() == [True, False]
    assert m[ts, qs].all() and m[ms, qs].all() and m[ts, ts].tolist()[0] == [False, True, True]
    dl = GroupLayout.build(DEMO_RULES.self_order, {"queries_object": 2, "tokens_grounding": 2, "tokens_spatial": 3})
    d = DEMO_RULES.self_attn_mask(dl)
    assert not d[:2].any()  # object queries attend to every token group
    assert not d[2:4, :4].any() and d[2:4, 4:].all()  # text tokens: objects + text
    assert d[4:, :4].all() and not d[4:, 4:].any()  # stroke tokens: only themselves


# ----------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise() -> None:
    dec = _random_decoder()
    feats = _random_features()
    ok = torch.zeros(1, 128, 160, dtype=torch.bool)
    ok[0, 5, 5] = True
    with pytest.raises(ValueError, match="padded size"):
        dec(DecoderInputs(feats, spatial=SpatialPrompts(torch.zeros(1, 64, 160, dtype=torch.bool))))
    with pytest.raises(ValueError, match="empty"):
        dec(DecoderInputs(feats, spatial=SpatialPrompts(torch.zeros(0, 128, 160, dtype=torch.bool))))
    with pytest.raises(TypeError, match="bool"):
        dec(DecoderInputs(feats, spatial=SpatialPrompts(ok.float())))
    with pytest.raises(ValueError, match="batch size 1"):
        dec(DecoderInputs(_random_features(b=2), spatial=SpatialPrompts(ok)))
    with pytest.raises(ValueError, match="prev_mask"):
        dec(DecoderInputs(feats, spatial=SpatialPrompts(ok), prev_mask=torch.zeros(2, 32, 40)))
    with pytest.raises(ValueError, match="prev_mask"):
        dec(DecoderInputs(feats, prev_mask=torch.zeros(1, 32, 40)))
    with pytest.raises(ValueError, match="padded_size"):
        dec(DecoderInputs(ImageFeatures(feats.multi_scale, feats.mask_features, (100, 160))))
    with pytest.raises(ValueError, match="channels"):
        dec(DecoderInputs(ImageFeatures(feats.multi_scale, feats.mask_features[:, :8], (128, 160))))
    with pytest.raises(ValueError, match="multi_scale"):
        dec(DecoderInputs(ImageFeatures(feats.multi_scale[:2], feats.mask_features, (128, 160))))
    with pytest.raises(ValueError, match="logit_scale"):
        dec(DecoderInputs(feats, class_embeddings=torch.randn(3, 32)))
    with pytest.raises(ValueError, match="grounding tokens"):
        dec(DecoderInputs(feats, grounding=GroundingPrompt(torch.randn(0, 32))))
    with pytest.raises(ValueError, match="draw"):
        dec(DecoderInputs(feats, spatial=SpatialPrompts(ok), draws=DecoderDraws({"pooled_pos": torch.tensor([0, 1])})))
    with pytest.raises(ValueError, match="spatial_query_indices"):
        dec(
            DecoderInputs(
                feats, spatial=SpatialPrompts(ok), draws=DecoderDraws(spatial_query_indices=torch.tensor([0]))
            )
        )
    demo = _random_decoder("demo")
    with pytest.raises(ValueError, match="one spatial prompt"):
        demo(DecoderInputs(feats, spatial=SpatialPrompts(torch.cat([ok, ok]))))
    with pytest.raises(ValueError, match="memory"):
        demo(DecoderInputs(feats, spatial=SpatialPrompts(ok), prev_mask=torch.zeros(1, 32, 40)))
