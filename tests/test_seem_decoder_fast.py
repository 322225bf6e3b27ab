"""SEEM decoder fast path: equal to the exact (official-order) path, per-image cache, group skipping, bf16.

The exact path is what ``test_seem_decoder.py`` checks against the official tensors. Here every parity case
(``../shared/parity/seem`` v1 and ``seem_demo``, real images: astronaut, coffee) is replayed call by call
three ways, on the parity checkpoint:

- ``exact``: ``DecoderInputs.exact=True`` with all groups (the official computation);
- ``fast``: the default fast path, with the vocabulary (so object queries are decoded too);
- ``interactive``: the default fast path without vocabulary (v1 prompted calls skip the object queries).

Interaction rounds chain each run's own ``prev_mask`` (memory prompts), so differences could accumulate.
The selected masks (query indices and stride-4 logits), pooled prompt embeddings, captions, mask embeddings,
class logits and every prediction's mask logits must agree (max|Δ|/max|ref| ≤ 1e-5; observed ≤ 1.5e-6; the
binary selected masks may differ only where the logit is 0 up to rounding), and
the fast path's cross-attention masks, given the official ``prev_mask``, must match the stored official masks
(a handful of flips allowed, as in the parity tests; observed: none).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SEEM_DEMO_PARITY_DIR, SEEM_PARITY_DIR, rel_err
from test_seem_decoder import (
    DEMO_CASES,
    LANG_PREFIX,
    MAX_MASK_FLIPS,
    V1_CASES,
    FeatureBank,
    _click,
    _random_decoder,
    _random_features,
    call_prefixes,
    decoder_state_dict,
    demo_draws,
    image_of,
    pad_to,
    v1_draws,
)
from torch.utils.flop_counter import FlopCounterMode

from seem.models.config import from_official_yaml
from seem.models.seem_decoder import (
    SEEMDecoder,
    _can_pack,
    linear,
    masked_attention,
    sparse_masked_attention,
)
from seem.models.seem_types import (
    DecoderInputs,
    DecoderOutput,
    GroundingPrompt,
    GroupPrediction,
    ImageFeatures,
    ReferenceTokens,
    SpatialPrompts,
    mask_logits_from_embeddings,
)

TOL = 1e-5

# ----------------------------------------------------------------------------------------------------------
# fixtures and replay


@pytest.fixture(scope="module")
def parity(seem_parity_dir: Path) -> dict[str, Any]:
    """Parity decoders (v1, demo), logit_scale and the feature bank, loaded once."""
    sd = torch.load(seem_parity_dir / "seem_v1_small.pt", weights_only=True, map_location="cpu")
    out: dict[str, Any] = {"logit_scale": sd[LANG_PREFIX + "logit_scale"], "features": FeatureBank(seem_parity_dir)}
    for variant, path in (
        ("v1", seem_parity_dir / "seem_v1_small.yaml"),
        ("demo", SEEM_DEMO_PARITY_DIR / "seem_demo_small.yaml"),
    ):
        if path.exists():
            dec = SEEMDecoder(from_official_yaml(path).decoder).eval()
            dec.load_state_dict(decoder_state_dict(sd), strict=True)
            out[variant] = dec
    return out


Call = tuple[str, DecoderInputs, DecoderOutput, dict[str, Any] | None]


def replay_v1(
    p: dict[str, Any], case: str, *, vocab: bool, exact: bool, official_prev: bool = False, trace: bool = False
) -> Iterator[Call]:
    """Every decoder call of a v1 parity case; ``prev_mask`` from this run's previous call (or the official)."""
    dec: SEEMDecoder = p["v1"]
    meta = json.loads((SEEM_PARITY_DIR / f"{case}.json").read_text())
    ref = np.load(SEEM_PARITY_DIR / f"{case}.npz")
    vocab_npz = ref if "text/class_embeddings" in ref.files else np.load(SEEM_PARITY_DIR / "case_a_panoptic.npz")
    ce = torch.from_numpy(vocab_npz["text/class_embeddings"]) if vocab else None
    prefixes = call_prefixes(meta, ref.files)
    reference: ReferenceTokens | None = None
    prev: DecoderOutput | None = None
    for call, prefix in enumerate(prefixes):
        feats = p["features"](image_of(meta, prefix))
        draws = v1_draws(meta, ref, call)
        if prefix == "stage1/":
            pos = pad_to(ref["stage1/prompt/pos_mask"], feats.padded_size)
            with torch.inference_mode():
                reference = dec.encode_reference(feats, SpatialPrompts(pos, torch.zeros_like(pos)), draws)
            continue
        extra = set(meta[f"{prefix}layout"]["extra_keys"])
        inputs = DecoderInputs(
            feats, class_embeddings=ce, logit_scale=p["logit_scale"], draws=draws, exact=exact, object_queries=None
        )
        if "grounding_tokens" in extra:
            g = f"{prefix}text/00/" if f"{prefix}text/00/token_emb" in ref.files else "text/00/"
            am = torch.from_numpy(ref[g + "attention_mask"]).bool()
            inputs.grounding = GroundingPrompt(
                torch.from_numpy(ref[g + "token_emb"])[am], torch.from_numpy(ref[g + "class_emb"])
            )
        if "spatial_query_pos_mask" in extra:
            pos = pad_to(ref[f"{prefix}prompt/pos_mask"], feats.padded_size)
            neg = pad_to(ref[f"{prefix}prompt/neg_mask"], feats.padded_size)
            inputs.spatial = SpatialPrompts(pos, neg)
        if "prev_mask" in extra:
            if official_prev:
                inputs.prev_mask = torch.from_numpy(ref[f"{prefixes[call - 1]}out/prev_mask"][0])
            else:
                assert prev is not None and prev.spatial_selection is not None
                inputs.prev_mask = prev.spatial_selection.prev_mask
        if "refimg_tokens" in extra:
            inputs.reference = reference
        tr: dict[str, Any] | None = {} if trace else None
        with torch.inference_mode():
            out = dec(inputs, trace=tr)
        prev = out
        yield prefix, inputs, out, tr


def replay_demo(p: dict[str, Any], case: str, *, exact: bool, trace: bool = False) -> Iterator[Call]:
    dec: SEEMDecoder = p["demo"]
    meta = json.loads((SEEM_DEMO_PARITY_DIR / f"{case}.json").read_text())
    ref = np.load(SEEM_DEMO_PARITY_DIR / f"{case}.npz")
    vocab = torch.from_numpy(ref["vocab/class_embeddings"])
    grounding = None
    if "text/grounding_tokens" in ref.files:
        grounding = GroundingPrompt(
            torch.from_numpy(ref["text/grounding_tokens"])[:, 0], torch.from_numpy(ref["text/class_emb"])
        )
    reference: ReferenceTokens | None = None
    for prefix in call_prefixes(meta, ref.files):
        feats = p["features"](image_of(meta, prefix))
        draws = demo_draws(meta, ref, prefix)
        lay = meta[f"{prefix}layout"]
        if lay["task"] == "refimg":
            pos = pad_to(ref["stage1/prompt/rand_shape"], feats.padded_size)
            with torch.inference_mode():
                reference = dec.encode_reference(feats, SpatialPrompts(pos, torch.zeros_like(pos)), draws)
            continue
        extra = set(lay["extra_keys"])
        inputs = DecoderInputs(feats, class_embeddings=vocab, logit_scale=p["logit_scale"], draws=draws, exact=exact)
        if "grounding_tokens" in extra:
            inputs.grounding = grounding
        if "spatial_query_pos_mask" in extra:
            inputs.spatial = SpatialPrompts(pad_to(ref["prompt/stroke_resized"], feats.padded_size))
        if "visual_query_pos" in extra:
            inputs.reference = reference
        tr: dict[str, Any] | None = {} if trace else None
        with torch.inference_mode():
            out = dec(inputs, trace=tr)
        yield prefix, inputs, out, tr


def assert_close(ours: torch.Tensor | None, ref: torch.Tensor | None, what: str, tol: float = TOL) -> None:
    assert (ours is None) == (ref is None), what
    if ours is None or ref is None:
        return
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(ours), finite) and torch.equal(ours[~finite], ref[~finite]), what
    e = rel_err(ours[finite].float(), ref[finite].float().numpy())
    assert e <= tol, f"{what}: relative error {e:.3g} > {tol:g}"


def assert_group_close(fast: GroupPrediction | None, exact: GroupPrediction | None, what: str) -> None:
    assert (fast is None) == (exact is None), what
    if fast is None or exact is None:
        return
    assert not fast.mask_logits_computed  # the fast path leaves stride-4 logits to the reader
    assert_close(fast.captions, exact.captions, what + ".captions")
    assert_close(fast.mask_embeddings, exact.mask_embeddings, what + ".mask_embeddings")
    assert_close(fast.class_logits, exact.class_logits, what + ".class_logits", tol=1e-4)
    assert_close(fast.mask_logits, exact.mask_logits, what + ".mask_logits")


def assert_selections_equal(fast: DecoderOutput, exact: DecoderOutput, what: str) -> None:
    assert_close(fast.pooled_pos_spatial, exact.pooled_pos_spatial, what + " pooled_pos")
    assert_close(fast.pooled_neg_spatial, exact.pooled_neg_spatial, what + " pooled_neg")
    assert_close(fast.pooled_pos_visual, exact.pooled_pos_visual, what + " pooled_pos_visual")
    for name in ("spatial_selection", "grounding_selection"):
        a, b = getattr(fast, name), getattr(exact, name)
        assert (a is None) == (b is None), f"{what} {name}"
        if a is None:
            continue
        assert torch.equal(a.query_index, b.query_index), f"{what} {name}: different queries selected"
        assert_close(a.scores, b.scores, f"{what} {name}.scores", tol=1e-4)
        sel_a = a.prev_mask if name == "spatial_selection" else a.mask_logits
        sel_b = b.prev_mask if name == "spatial_selection" else b.mask_logits
        assert_close(sel_a, sel_b, f"{what} {name} mask")
        # binary masks: equal except where the exact logit is 0 up to rounding
        differ = (sel_a > 0) != (sel_b > 0)
        assert (sel_b[differ].abs() <= 1e-5 * sel_b.abs().max()).all(), f"{what} {name}: binary masks differ"
    a, b = fast.demo_selection, exact.demo_selection
    assert (a is None) == (b is None), what
    if a is not None and b is not None:
        assert (a.source, a.query_index, a.class_index) == (b.source, b.query_index, b.class_index), what
        assert_close(a.mask_logits, b.mask_logits, what + " demo mask")


# ----------------------------------------------------------------------------------------------------------
# fast == exact on the parity cases


@pytest.mark.parity
@pytest.mark.parametrize("case", V1_CASES)
def test_v1_fast_equals_exact(case: str, parity: dict[str, Any]) -> None:
    """Every call and every round (own memory chain): fast path with and without object queries == exact."""
    exact = list(replay_v1(parity, case, vocab=True, exact=True))
    fast = list(replay_v1(parity, case, vocab=True, exact=False))
    inter = list(replay_v1(parity, case, vocab=False, exact=False))
    assert len(exact) == len(fast) == len(inter) > 0
    for (prefix, inputs, e, _), (_, _, f, _), (_, _, i, _) in zip(exact, fast, inter, strict=True):
        what = f"{case}/{prefix}"
        assert len(f.predictions) == len(e.predictions) == len(i.predictions)
        for j, (pf, pe, pi) in enumerate(zip(f.predictions, e.predictions, i.predictions, strict=True)):
            assert_group_close(pf.object, pe.object, f"{what} L{j} object")
            assert_group_close(pf.grounding, pe.grounding, f"{what} L{j} grounding")
            assert_group_close(pf.spatial, pe.spatial, f"{what} L{j} spatial")
            # without a vocabulary a prompted call skips the object queries; the prompt groups are unchanged
            prompted = any(x is not None for x in (inputs.spatial, inputs.grounding, inputs.reference))
            assert (pi.object is None) == prompted, what
            for name in ("grounding", "spatial"):
                gi, ge = getattr(pi, name), getattr(pe, name)
                assert (gi is None) == (ge is None)
                if gi is not None:
                    assert_close(gi.captions, ge.captions, f"{what} L{j} {name} captions (no objects)")
                    assert_close(gi.mask_logits, ge.mask_logits, f"{what} L{j} {name} masks (no objects)")
        assert_selections_equal(f, e, what)
        assert_selections_equal(i, e, what + " (no objects)")


@pytest.mark.parity
@pytest.mark.parametrize("case", DEMO_CASES)
def test_demo_fast_equals_exact(case: str, parity: dict[str, Any]) -> None:
    exact = list(replay_demo(parity, case, exact=True))
    fast = list(replay_demo(parity, case, exact=False))
    assert len(exact) == len(fast) > 0
    for (prefix, _, e, _), (_, _, f, _) in zip(exact, fast, strict=True):
        for j, (pf, pe) in enumerate(zip(f.predictions, e.predictions, strict=True)):
            assert pf.object is not None  # the demo always decodes its object queries
            assert_group_close(pf.object, pe.object, f"{case}/{prefix} L{j} object")
        assert_selections_equal(f, e, f"{case}/{prefix}")


@pytest.mark.parity
@pytest.mark.parametrize("variant", ["v1", "demo"])
def test_fast_attention_masks_match_official(variant: str, parity: dict[str, Any]) -> None:
    """Fast-path cross-attention masks (from ``mask_features`` resized per level) vs the stored official ones."""
    cases = V1_CASES if variant == "v1" else DEMO_CASES
    folder = SEEM_PARITY_DIR if variant == "v1" else SEEM_DEMO_PARITY_DIR
    checked = 0
    for case in cases:
        ref = np.load(folder / f"{case}.npz")
        if variant == "v1":
            calls = replay_v1(parity, case, vocab=True, exact=False, official_prev=True, trace=True)
        else:
            calls = replay_demo(parity, case, exact=False, trace=True)
        for prefix, _, _, tr in calls:
            assert tr is not None
            assert "L0/masks" not in tr  # fast path: no per-prediction stride-4 logits
            for i in range(parity[variant].cfg.num_layers):
                name = f"{prefix}layer{i}/cross_attn_mask"
                if name not in ref.files:
                    continue
                flips = int((tr[f"layer{i}/cross_attn_mask"].numpy() != ref[name]).sum())
                assert flips <= MAX_MASK_FLIPS, f"{case} {name}: {flips} flips"
                checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------------------------------------
# cost (FLOP counts are exact, unlike timings)


def _uncached(feats: ImageFeatures) -> ImageFeatures:
    """The same feature tensors with an empty decoder cache."""
    return ImageFeatures(feats.multi_scale, feats.mask_features, feats.padded_size)


def _flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@pytest.mark.parity
def test_click_cost(parity: dict[str, Any]) -> None:
    """Parity model on astronaut: the fast click costs a fraction of the exact one; the cache is reused."""
    dec: SEEMDecoder = parity["v1"]
    cached = parity["features"]("astronaut")
    feats = _uncached(cached)
    hp, wp = feats.padded_size
    click = _click(hp, wp, 120, 225)[None]
    fast = DecoderInputs(feats, spatial=SpatialPrompts(click))
    exact = DecoderInputs(feats, spatial=SpatialPrompts(click), exact=True, object_queries=True)
    with torch.inference_mode():
        first = _flops(lambda: dec(fast))
        assert len(feats.decoder_cache) == 1
        entry = next(iter(feats.decoder_cache.values()))
        kv = entry.key_value(dec, 0)
        again = _flops(lambda: dec(fast))
        assert entry.key_value(dec, 0) is kv and len(feats.decoder_cache) == 1  # reused, not rebuilt
        full = _flops(lambda: dec(exact))
    assert again < first / 2  # the keys / values were computed once
    assert again < full / 10


# ----------------------------------------------------------------------------------------------------------
# cache, options, laziness, bf16 (small random decoder)


def test_cache_reuse_and_invalidation() -> None:
    dec = _random_decoder()
    feats = _random_features()
    inputs = DecoderInputs(feats, spatial=SpatialPrompts(_click(128, 160, 40, 50)[None]))
    with torch.no_grad():
        a = dec(inputs)
        assert len(feats.decoder_cache) == 1
        entry = next(iter(feats.decoder_cache.values()))
        b = dec(inputs)
        assert next(iter(feats.decoder_cache.values())) is entry
        fresh = dec(DecoderInputs(_uncached(feats), spatial=inputs.spatial))
    assert a.spatial_selection is not None and b.spatial_selection is not None and fresh.spatial_selection is not None
    assert torch.equal(a.spatial_selection.prev_mask, b.spatial_selection.prev_mask)
    assert torch.equal(a.spatial_selection.prev_mask, fresh.spatial_selection.prev_mask)
    prepared = dec.prepare(_uncached(feats))
    (entry2,) = prepared.decoder_cache.values()
    assert len(entry2._kv) == dec.cfg.num_layers and len(entry2._mf_levels) == 3
    copied = copy.deepcopy(prepared)  # copies / pickles leave the cache out
    assert not copied.decoder_cache and torch.equal(copied.mask_features, prepared.mask_features)

    # new weights (in place): the entry is rebuilt and the result follows the new weights
    with torch.no_grad():
        dec.transformer_cross_attention_layers[1].multihead_attn.in_proj_weight.mul_(1.5)
        c = dec(inputs)
        assert next(iter(feats.decoder_cache.values())) is not entry
        d = dec(DecoderInputs(_uncached(feats), spatial=inputs.spatial))
    assert c.spatial_selection is not None and d.spatial_selection is not None
    assert torch.equal(c.spatial_selection.prev_mask, d.spatial_selection.prev_mask)
    assert not torch.equal(c.spatial_selection.prev_mask, a.spatial_selection.prev_mask)

    # with gradients nothing is cached (no autograd graph is kept alive)
    g = _random_features()
    out = dec(DecoderInputs(g, spatial=inputs.spatial))
    assert not g.decoder_cache
    assert out.spatial_selection is not None and out.spatial_selection.prev_mask.requires_grad


def test_object_query_option() -> None:
    dec = _random_decoder()
    feats = _random_features()
    click = SpatialPrompts(_click(128, 160, 40, 50)[None])
    vocab = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    ls = torch.tensor(2.0)
    g = GroundingPrompt(torch.randn(5, 32), torch.randn(1, 32))
    with torch.no_grad():
        assert dec(DecoderInputs(feats, spatial=click)).final.object is None
        assert dec(DecoderInputs(feats, grounding=g, logit_scale=ls)).final.object is None
        assert dec(DecoderInputs(feats, spatial=click, class_embeddings=vocab, logit_scale=ls)).final.object is not None
        assert dec(DecoderInputs(feats, spatial=click, object_queries=True)).final.object is not None
        assert dec(DecoderInputs(feats)).final.object is not None
        skipped = dec(DecoderInputs(feats, grounding=g, logit_scale=ls, class_embeddings=vocab, object_queries=False))
        assert skipped.final.object is None and skipped.grounding_selection is not None
        with pytest.raises(ValueError, match="nothing to decode"):
            dec(DecoderInputs(feats, object_queries=False))
        with pytest.raises(ValueError, match="demo"):
            _random_decoder("demo")(DecoderInputs(feats, spatial=click, object_queries=False))
        with pytest.raises(TypeError, match="exact"):
            dec(DecoderInputs(feats, spatial=click, exact=1))  # type: ignore[arg-type]


def test_lazy_mask_logits() -> None:
    """Stride-4 logits are computed on first read, equal the einsum, also outside inference mode."""
    dec = _random_decoder()
    feats = _random_features()
    with torch.inference_mode():
        out = dec(DecoderInputs(feats, spatial=SpatialPrompts(_click(128, 160, 40, 50)[None]), object_queries=True))
    obj = out.predictions[1].object
    assert obj is not None and not obj.mask_logits_computed
    rows = torch.tensor([2, 7])
    part = obj.mask_logits_of(0, rows)
    assert not obj.mask_logits_computed
    full = obj.mask_logits  # read outside inference mode
    assert obj.mask_logits_computed and full.shape == (1, 10, 32, 40)
    want = torch.einsum("bqc,bchw->bqhw", obj.mask_embeddings, feats.mask_features)
    assert rel_err(full, want.numpy()) < 1e-6
    assert rel_err(part, full[0, rows].numpy()) < 1e-6
    assert torch.equal(obj.mask_logits_of(0, 3), full[0, 3])


def test_bf16_autocast() -> None:
    """Under bf16 autocast: a separate cache entry, float32 mask logits, same selection as fp32 here."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 30:60, 40:80] = True
    inputs = DecoderInputs(feats, spatial=SpatialPrompts(pos))
    with torch.inference_mode():
        ref = dec(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = dec(inputs)
            bf2 = dec(inputs)
    assert len(feats.decoder_cache) == 2  # fp32 and bf16 entries
    assert ref.spatial_selection is not None and bf.spatial_selection is not None and bf2.spatial_selection is not None
    assert bf.spatial_selection.prev_mask.dtype == torch.float32
    assert bf.final.spatial is not None and bf.final.spatial.mask_logits.dtype == torch.float32
    assert torch.equal(bf.spatial_selection.prev_mask, bf2.spatial_selection.prev_mask)
    a, b = ref.spatial_selection.prev_mask > 0, bf.spatial_selection.prev_mask > 0
    iou = float((a & b).sum()) / max(1.0, float((a | b).sum()))
    assert iou > 0.9, iou
    # features encoded under autocast (bfloat16) and decoded without it run in the decoder's float32
    half = ImageFeatures([x.bfloat16() for x in feats.multi_scale], feats.mask_features.bfloat16(), (128, 160))
    with torch.inference_mode():
        out = dec(DecoderInputs(half, spatial=inputs.spatial))
    assert out.spatial_selection is not None and out.spatial_selection.prev_mask.dtype == torch.float32


def test_final_only_gives_the_final_prediction_alone() -> None:
    """``final_only`` (the predictor's calls): fp32 bit-identical final outputs without the earlier layers' captions;
    under bf16 autocast the earlier attention masks are bf16 and the final heads still float32."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 30:60, 40:80] = True
    vocab = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    kw: dict[str, Any] = {"spatial": SpatialPrompts(pos), "class_embeddings": vocab, "logit_scale": torch.tensor(2.0)}
    with torch.inference_mode():
        full = dec(DecoderInputs(feats, **kw))
        last = dec(DecoderInputs(feats, final_only=True, **kw))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf_full = dec(DecoderInputs(feats, **kw))
            bf_last = dec(DecoderInputs(feats, final_only=True, **kw))
    assert len(full.predictions) == dec.cfg.num_layers + 1 and len(last.predictions) == 1
    a, b = full.final.spatial, last.final.spatial
    assert a is not None and b is not None and b.class_logits is not None and a.class_logits is not None
    assert torch.equal(a.captions, b.captions) and torch.equal(a.class_logits, b.class_logits)
    assert torch.equal(a.mask_logits, b.mask_logits)
    assert full.spatial_selection is not None and last.spatial_selection is not None
    assert torch.equal(full.spatial_selection.prev_mask, last.spatial_selection.prev_mask)
    assert bf_full.spatial_selection is not None and bf_last.spatial_selection is not None
    assert bf_last.spatial_selection.prev_mask.dtype == torch.float32
    m1, m2 = bf_full.spatial_selection.prev_mask > 0, bf_last.spatial_selection.prev_mask > 0
    assert float((m1 & m2).sum()) / max(1.0, float((m1 | m2).sum())) > 0.95


def test_early_exit_gives_that_layers_prediction() -> None:
    """``DecoderInputs.layers = n`` (the default model's refined clicks): the final outputs are the prediction after
    layer ``n`` of a full run (the heads that supervise every layer in training), memory prompt included; values
    outside ``[0, num_layers]`` are refused."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 30:60, 40:80] = True
    prev = torch.randn(1, 32, 40)
    vocab = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    kw: dict[str, Any] = {
        "spatial": SpatialPrompts(pos),
        "class_embeddings": vocab,
        "logit_scale": torch.tensor(2.0),
        "prev_mask": prev,
    }
    with torch.inference_mode():
        full = dec(DecoderInputs(feats, **kw))
        for n in range(dec.cfg.num_layers + 1):
            early = dec(DecoderInputs(feats, final_only=True, layers=n, **kw))
            a, b = full.predictions[n].spatial, early.final.spatial
            assert a is not None and b is not None and a.class_logits is not None and b.class_logits is not None
            torch.testing.assert_close(b.mask_logits, a.mask_logits)
            torch.testing.assert_close(b.class_logits, a.class_logits)
        last = dec(DecoderInputs(feats, final_only=True, layers=dec.cfg.num_layers, **kw))
        one = dec(DecoderInputs(feats, final_only=True, layers=1, **kw))
        assert one.draws.memory_slots is not None and len(one.draws.memory_slots) == 1  # recorded for the layer run
        replay = dec(DecoderInputs(feats, final_only=True, layers=1, draws=one.draws, **kw))
        assert one.final.spatial is not None and replay.final.spatial is not None
        assert torch.equal(one.final.spatial.mask_logits, replay.final.spatial.mask_logits)
        with pytest.raises(ValueError, match="memory_slots needs one"):
            dec(DecoderInputs(feats, final_only=True, layers=2, draws=one.draws, **kw))
    assert full.final.spatial is not None and last.final.spatial is not None
    assert torch.equal(full.final.spatial.mask_logits, last.final.spatial.mask_logits)
    assert not torch.allclose(full.predictions[1].spatial.mask_logits, full.final.spatial.mask_logits)
    for bad, err in ((-1, ValueError), (dec.cfg.num_layers + 1, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(err, match="layers must"):
            dec(DecoderInputs(feats, layers=bad, **kw))


def test_low_precision_weight_cache() -> None:
    """Under bf16 autocast the layer weights are cast once and kept: the same results as autocast casting them
    on every call, reused across calls and autocast contexts, rebuilt when a weight changes, unused otherwise."""
    dec = _random_decoder()
    feats = _random_features()
    pos = torch.zeros(1, 128, 160, dtype=torch.bool)
    pos[0, 30:60, 40:80] = True
    inputs = DecoderInputs(feats, spatial=SpatialPrompts(pos), object_queries=True)
    final_only = DecoderInputs(feats, spatial=SpatialPrompts(pos), object_queries=True, final_only=True)

    def run(inputs: DecoderInputs = inputs) -> DecoderOutput:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return dec(inputs)

    def same(a: DecoderOutput, b: DecoderOutput) -> bool:
        assert a.spatial_selection is not None and b.spatial_selection is not None
        assert a.final.spatial is not None and b.final.spatial is not None
        assert a.final.object is not None and b.final.object is not None
        return (
            torch.equal(a.spatial_selection.prev_mask, b.spatial_selection.prev_mask)
            and torch.equal(a.final.spatial.mask_embeddings, b.final.spatial.mask_embeddings)
            and torch.equal(a.final.object.captions, b.final.object.captions)
        )

    cached, cached_final_only = run(), run(final_only)
    ((key, (_, layers)),) = dec._low_precision.items()
    assert key == (torch.bfloat16, torch.device("cpu")) and len(layers.layers) == dec.cfg.num_layers
    q = layers.layers[0].self_attn.q
    assert q.weight.dtype == torch.bfloat16 and q.weight.is_contiguous()
    assert len(layers.mask_embed) == 3 and layers.mask_embed[0].weight.dtype == torch.bfloat16
    # on a CPU with oneDNN's bfloat16 kernels the copies are also packed (the path a click takes)
    assert (q.packed is not None) == _can_pack(q.weight)
    assert same(run(), cached) and dec._low_precision[key][1] is layers  # reused by a new autocast context
    # reference: autocast casting the float32 parameters itself (the cache switched off)
    dec._low_precision_weights = lambda device: None  # type: ignore[method-assign]
    assert same(run(), cached) and same(run(final_only), cached_final_only)
    del dec._low_precision_weights
    # no copies without autocast or with gradients
    fresh = _random_decoder()
    with torch.no_grad():
        fresh(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh(DecoderInputs(_random_features(), spatial=inputs.spatial))
    assert not fresh._low_precision
    # a weight modified in place: the copies are rebuilt and follow it
    with torch.no_grad():
        dec.transformer_ffn_layers[2].linear1.weight.mul_(1.5)
    changed = run()
    assert dec._low_precision[key][1] is not layers
    dec._low_precision_weights = lambda device: None  # type: ignore[method-assign]
    assert same(run(), changed) and not same(changed, cached)


def test_packed_mask_projection_equals_matmul() -> None:
    """The attention-mask logits through the packed mask features equal the batched matmul bit for bit."""
    dec = _random_decoder()
    feats = _random_features()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        img = dec._image_cache(feats)
        emb = torch.randn(1, 5, dec.cfg.mask_dim).to(torch.bfloat16)
        for level in range(len(img.sizes)):
            mf = img.mask_features_at(level, torch.bfloat16)
            proj = img.mask_projection_at(level, torch.bfloat16)
            assert (proj is not None) == _can_pack(mf)
            if proj is None:
                continue
            reference = mask_logits_from_embeddings(emb, mf).flatten(2)
            assert torch.equal(linear(emb, proj), reference)
        assert img.mask_projection_at(0, torch.float16) is None  # only the packed dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_masked_attention_equals_dense(dtype: torch.dtype) -> None:
    """Rows with few free keys attend to the gathered keys only: the same output as the dense masked attention
    (up to the order of the sums), for sparse, dense, fully blocked and mixed rows, with batch > 1."""
    g = torch.Generator().manual_seed(0)
    b, h, n_rows, s, d = 2, 4, 7, 300, 16
    q = torch.randn(b, h, n_rows, d, generator=g).to(dtype)
    k = torch.randn(b, h, s, d, generator=g).to(dtype)
    v = torch.randn(b, h, s, d, generator=g).to(dtype)
    blocked = torch.ones(b, n_rows, s, dtype=torch.bool)
    blocked[:, 0, 10:40] = False  # sparse
    blocked[:, 1] = torch.rand(b, s, generator=g) < 0.3  # dense
    blocked[:, 2, 5:9] = False  # sparse, shares no key with row 0
    # row 3 fully blocked: zeros in both
    blocked[0, 4, :200] = False  # sparse in batch item 1 only: takes the dense path
    blocked[1, 4, 100:120] = False
    blocked[:, 5, 35:60] = False
    blocked[:, 6] = blocked[:, 5]  # memory rows share a mask
    dense = masked_attention(q, k, v, blocked)
    sparse = sparse_masked_attention(q, k, v, blocked, min_work=0)
    assert sparse.shape == dense.shape and sparse.dtype == dense.dtype
    assert torch.equal(sparse[:, :, 3], torch.zeros_like(sparse[:, :, 3]))
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(sparse.float(), dense.float(), atol=tol, rtol=tol)
    # only dense rows / only sparse rows
    torch.testing.assert_close(
        sparse_masked_attention(q[:, :, 1:2], k, v, blocked[:, 1:2], min_work=0).float(),
        dense[:, :, 1:2].float(),
        atol=tol,
        rtol=tol,
    )
    only = [0, 2, 5, 6]
    torch.testing.assert_close(
        sparse_masked_attention(q[:, :, only], k, v, blocked[:, only], min_work=0).float(),
        dense[:, :, only].float(),
        atol=tol,
        rtol=tol,
    )
