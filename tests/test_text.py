"""SEEM text path: CLIP tokenizer, text encoder, prompt templates, similarities (parity with the official code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEEM_PARITY_DIR, assert_parity, require

from seem.models.config import TextEncoderConfig
from seem.models.seem_model import SEEMModel
from seem.models.text import (
    EOT_ID,
    PROMPT_TEMPLATES,
    SOT_ID,
    ClipTokenizer,
    TextEncoder,
    class_logits,
    strip_class_name,
    vl_similarity,
)

OFFICIAL_PREFIX = "sem_seg_head.predictor.lang_encoder."


def to_ours(rel_key: str) -> str:
    """Official key below ``sem_seg_head.predictor.lang_encoder.`` → our ``TextEncoder`` key."""
    return "transformer." + rel_key[len("lang_encoder.") :] if rel_key.startswith("lang_encoder.") else rel_key


def _tokenizer_cases() -> list[dict]:
    path = SEEM_PARITY_DIR / "tokenizer_cases.json"
    return json.loads(path.read_text())["cases"] if path.exists() else []


def _text_case_files() -> list[str]:
    """Every case file of the fixture that records text embeddings."""
    index_path = SEEM_PARITY_DIR / "INDEX.json"
    if not index_path.exists():
        return []
    index = json.loads(index_path.read_text())
    found = [fname for fname, entries in index.items() if "text/class_embeddings" in entries]
    return sorted(found)


def _vocabulary(case_json: dict) -> list[str]:
    vocab = case_json.get("vocabulary") or case_json["vocabulary_for_pred_logits"]
    assert vocab[-1] == "background"
    return list(vocab[:-1])


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.default()


@pytest.fixture(scope="module")
def small_encoder(seem_parity_dir: Path) -> TextEncoder:
    """The reduced official model's text encoder, loaded through the strict checkpoint converter."""
    model, _ = SEEMModel.from_official(
        seem_parity_dir / "seem_v1_small.pt", config=seem_parity_dir / "seem_v1_small.yaml"
    )
    return model.text_encoder


@pytest.fixture(scope="module")
def case_a(seem_parity_dir: Path) -> tuple[dict, dict]:
    z = np.load(seem_parity_dir / "case_a_panoptic.npz")
    return {k: z[k] for k in z.files if k.startswith(("text/", "dec/L"))}, json.loads(
        (seem_parity_dir / "case_a_panoptic.json").read_text()
    )


@pytest.fixture(scope="module")
def case_b(seem_parity_dir: Path) -> tuple[dict, dict]:
    z = np.load(seem_parity_dir / "case_b_grounding.npz")
    keep = ("text/", "select/", "dec/out/pred_gtexts")
    return {k: z[k] for k in z.files if k.startswith(keep)}, json.loads(
        (seem_parity_dir / "case_b_grounding.json").read_text()
    )


# ------------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parity
@pytest.mark.parametrize("case", _tokenizer_cases(), ids=lambda c: repr(c["text"][:30]))
def test_tokenizer_matches_official(case: dict, tokenizer: ClipTokenizer) -> None:
    ids, mask = tokenizer(case["text"])
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.shape == mask.shape == (1, 77)
    assert ids[0].tolist() == case["input_ids"]
    assert mask[0].tolist() == case["attention_mask"]
    assert int(ids[0].argmax()) == case["pooled_index"]
    pieces = ["<|startoftext|>", *tokenizer.tokenize(case["text"])[:75], "<|endoftext|>"]
    assert pieces == case["bpe_tokens"]


@pytest.mark.parity
def test_tokenizer_batched_equals_single(seem_parity_dir: Path, tokenizer: ClipTokenizer) -> None:
    cases = _tokenizer_cases()
    assert len(cases) == 41
    ids, mask = tokenizer([c["text"] for c in cases])
    assert ids.tolist() == [c["input_ids"] for c in cases]
    assert mask.tolist() == [c["attention_mask"] for c in cases]


def test_tokenizer_rules(tokenizer: ClipTokenizer) -> None:
    ids, mask = tokenizer(["a photo of a cat", "", "a " * 100], context_length=77)
    assert ids[0, :7].tolist() == [SOT_ID, 320, 1125, 539, 320, 2368, EOT_ID]  # known CLIP ids
    assert ids[1, :2].tolist() == [SOT_ID, EOT_ID] and mask[1].sum() == 2
    assert ids[2, 0] == SOT_ID and ids[2, -1] == EOT_ID and (ids[2, 1:-1] == 320).all() and mask[2].all()
    assert (ids[0, 7:] == EOT_ID).all() and mask[0].tolist() == [1] * 7 + [0] * 70
    short, _ = tokenizer("a photo of a cat", context_length=5)
    assert short[0].tolist() == [SOT_ID, 320, 1125, 539, EOT_ID]
    assert tokenizer.vocab_size == 49408
    assert tokenizer.decode(ids[0]) == "a photo of a cat"
    # A literal special token in the text becomes its id (HF behaviour), and pooling then reads it.
    ids, _ = tokenizer("x <|endoftext|> y")
    assert ids[0, :5].tolist() == [SOT_ID, tokenizer.encoder["x</w>"], EOT_ID, tokenizer.encoder["y</w>"], EOT_ID]


def test_tokenizer_bad_input(tokenizer: ClipTokenizer) -> None:
    with pytest.raises(ValueError, match="empty"):
        tokenizer([])
    with pytest.raises(TypeError, match="item 1"):
        tokenizer(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str or a list"):
        tokenizer(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or a list"):
        tokenizer(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context_length"):
        tokenizer("a", context_length=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([49408])


# ------------------------------------------------------------------------------------------- templates
def test_templates_shape() -> None:
    assert len(PROMPT_TEMPLATES) == 81 and len(set(PROMPT_TEMPLATES)) == 81
    assert PROMPT_TEMPLATES[0] == "{}." and PROMPT_TEMPLATES[1] == "a photo of a {}."
    assert all(t.count("{}") == 1 for t in PROMPT_TEMPLATES)
    assert strip_class_name("wall-other-merged") == "wall"
    assert strip_class_name("grass-merged") == "grass" and strip_class_name("floor-stuff") == "floor"
    assert strip_class_name("dining table") == "dining table"


@pytest.mark.parity
def test_templates_reproduce_fixture_ids(case_a: tuple[dict, dict], tokenizer: ClipTokenizer) -> None:
    arrays, meta = case_a
    vocab = [*_vocabulary(meta), "background"]
    for k, name in enumerate(vocab):
        ids, mask = tokenizer([t.format(strip_class_name(name)) for t in PROMPT_TEMPLATES])
        np.testing.assert_array_equal(ids.numpy(), arrays[f"text/{k:02d}/input_ids"], err_msg=name)
        np.testing.assert_array_equal(mask.numpy(), arrays[f"text/{k:02d}/attention_mask"], err_msg=name)


# -------------------------------------------------------------------------------------------- encoder
@pytest.mark.parity
def test_case_a_template_embeddings(case_a: tuple[dict, dict], small_encoder: TextEncoder) -> None:
    arrays, meta = case_a
    assert_parity(small_encoder.logit_scale.detach(), arrays["text/logit_scale"], "text/logit_scale")
    with torch.no_grad():
        for k in range(len(_vocabulary(meta)) + 1):
            ids = torch.from_numpy(arrays[f"text/{k:02d}/input_ids"])
            mask = torch.from_numpy(arrays[f"text/{k:02d}/attention_mask"])
            _, pooled = small_encoder.encode_tokens(ids, mask)
            pooled = pooled / (pooled.norm(dim=-1, keepdim=True) + 1e-7)
            assert_parity(pooled, arrays[f"text/{k:02d}/pooled_proj"], f"text/{k:02d}/pooled_proj")


@pytest.mark.parity
@pytest.mark.parametrize("case_file", _text_case_files())
def test_class_embeddings(case_file: str, seem_parity_dir: Path, small_encoder: TextEncoder) -> None:
    ref = np.load(seem_parity_dir / case_file)["text/class_embeddings"]
    meta = json.loads((seem_parity_dir / case_file.replace(".npz", ".json")).read_text())
    emb = small_encoder.class_embeddings(_vocabulary(meta))
    assert emb.shape == ref.shape
    assert_parity(emb, ref, f"{case_file}:text/class_embeddings")
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(emb)))
    # Chunking and length-sorting do not change the result.
    assert_parity(small_encoder.class_embeddings(_vocabulary(meta), chunk_size=100), ref, "chunk_size=100")
    assert small_encoder.class_embeddings(["wall-other-merged"], add_background=False).shape == (1, ref.shape[1])


@pytest.mark.parity
def test_case_a_class_logits(case_a: tuple[dict, dict], small_encoder: TextEncoder) -> None:
    arrays, _ = case_a
    class_emb = torch.from_numpy(arrays["text/class_embeddings"])
    for j in range(4):
        caption = torch.from_numpy(arrays[f"dec/L{j}/caption"])
        ours = class_logits(caption, class_emb, small_encoder.logit_scale.detach())
        assert_parity(ours, arrays[f"dec/L{j}/class_logits"], f"dec/L{j}/class_logits")
    # exp(4.65) = 104.6 > 100: the class-logit scale is NOT clamped.
    unit = class_emb[:1]
    assert class_logits(unit, unit, 4.65).item() == pytest.approx(np.exp(4.65), rel=1e-5)


@pytest.mark.parity
def test_case_b_grounding_text(case_b: tuple[dict, dict], small_encoder: TextEncoder) -> None:
    arrays, meta = case_b
    enc = small_encoder.encode_text(meta["phrases"])
    np.testing.assert_array_equal(enc.input_ids.numpy(), arrays["text/00/input_ids"])
    np.testing.assert_array_equal(enc.attention_mask.numpy(), arrays["text/00/attention_mask"])
    trace: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        token_emb, pooled = small_encoder.encode_tokens(enc.input_ids, enc.attention_mask, trace=trace)
    assert_parity(token_emb, arrays["text/00/token_emb"], "text/00/token_emb")
    assert_parity(pooled, arrays["text/00/class_emb"], "text/00/class_emb")
    n_layers = small_encoder.cfg.layers
    for i in range(n_layers):  # official block outputs are sequence-first [77, N, W]
        assert_parity(trace[f"hidden/{i}"].transpose(0, 1), arrays[f"text/00/hidden/{i}"], f"text/00/hidden/{i}")
    assert_parity(trace["ln_final"], arrays[f"text/00/hidden/{n_layers}"], f"text/00/hidden/{n_layers}")
    torch.testing.assert_close(enc.token_emb, token_emb, rtol=0, atol=0)

    # Grounding selection: vl_similarity of the grounding-query captions against the phrases' pooled embeddings.
    gtexts = torch.from_numpy(arrays["dec/out/pred_gtexts"][0])
    sim = vl_similarity(gtexts, pooled, small_encoder.logit_scale.detach())
    assert_parity(sim, arrays["select/vl_similarity"], "select/vl_similarity")
    assert sim.argmax(dim=0).tolist() == list(arrays["select/matched_id"]) == meta["matched_id"]
    assert torch.allclose(small_encoder.vl_similarity(gtexts, pooled), sim)
    unit = pooled[:1]
    assert vl_similarity(unit, unit, 4.65).item() == pytest.approx(100.0, rel=1e-5)  # clamped


@pytest.mark.parity
def test_causal_prefix_invariance(case_b: tuple[dict, dict], small_encoder: TextEncoder) -> None:
    """Trimming trailing padding leaves every kept position unchanged (what class_embeddings relies on)."""
    arrays, _ = case_b
    ids = torch.from_numpy(arrays["text/00/input_ids"])
    with torch.no_grad():
        full, pooled_full = small_encoder.encode_tokens(ids)
        n = int(torch.from_numpy(arrays["text/00/attention_mask"]).sum(1).max())
        short, pooled_short = small_encoder.encode_tokens(ids[:, :n])
    assert_parity(short, full[:, :n], "trimmed token_emb", tol=1e-5)
    assert_parity(pooled_short, pooled_full, "trimmed pooled", tol=1e-5)


def test_encoder_bad_input() -> None:
    enc = TextEncoder(TextEncoderConfig(width=16, heads=2, layers=1, proj_dim=8)).eval()
    ids = torch.full((2, 77), EOT_ID, dtype=torch.long)
    with pytest.raises(TypeError, match="int64"):
        enc.encode_tokens(ids.float())
    with pytest.raises(ValueError, match=r"\[N>=1, L\]"):
        enc.encode_tokens(ids[0])
    with pytest.raises(ValueError, match=r"\[N>=1, L\]"):
        enc.encode_tokens(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        enc.encode_tokens(ids + 1)
    with pytest.raises(ValueError, match="attention_mask"):
        enc.encode_tokens(ids, torch.ones(2, 76, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        enc.class_embeddings([])
    with pytest.raises(TypeError, match="list of str"):
        enc.class_embeddings("person")
    with pytest.raises(TypeError, match="class name 1"):
        enc.class_embeddings(["person", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a str"):
        enc.encode_text([1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        enc.encode_text([])
    with pytest.raises(ValueError, match="mismatch"):
        class_logits(torch.zeros(3, 8), torch.zeros(4, 7), 1.0)
    with pytest.raises(ValueError, match=r"\[M, P\]"):
        vl_similarity(torch.zeros(3, 8), torch.zeros(2, 4, 8), 1.0)
    out, pooled = enc.encode_text(["a cat", "a dog"])[2:]
    assert out.shape == (2, 77, 8) and pooled.shape == (2, 8)


# ------------------------------------------------------------------------------------------ key set
@pytest.mark.parity
def test_full_size_keys_match_manifest(seem_parity_dir: Path) -> None:
    manifest = json.loads(require(seem_parity_dir / "manifest_focalt_v1.json", "manifest").read_text())
    ref = {
        to_ours(e["key"][len(OFFICIAL_PREFIX) :]): tuple(e["shape"])
        for e in manifest["keys"]
        if e["key"].startswith(OFFICIAL_PREFIX)
    }
    with torch.device("meta"):
        enc = TextEncoder(TextEncoderConfig())
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert set(ours) == set(ref), f"missing {sorted(set(ref) - set(ours))}, extra {sorted(set(ours) - set(ref))}"
    assert ours == ref
    assert len(ours) == 150
