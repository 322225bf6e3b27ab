"""The SEEM model: backbone → pixel decoder → decoder, plus the text encoder, built from a ``SEEMConfig``.

``SEEMModel`` only wires the parts together and loads weights; it holds no task logic. Everything users touch (the
predictor, interaction sessions, the evaluator, the CLI) calls these methods:

- ``encode_image(image)`` → ``ImageFeatures`` (run once per image and cache);
- ``class_embeddings(names)`` → the vocabulary for class logits (cache per class list);
- ``encode_phrases(phrases)`` → a ``GroundingPrompt`` for referring text;
- ``decode(DecoderInputs)`` → ``DecoderOutput`` (every prompt kind, memory, injected draws);
- ``encode_reference(features, SpatialPrompts)`` → ``ReferenceTokens`` for a referring-image prompt.

Loading: ``from_official(path)`` (strict conversion of an official SEEM ``.pt``), ``from_pretrained(dir)`` /
``save_pretrained(dir)`` (our safetensors format).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seem.models.backbones import build_backbone
from seem.models.checkpoints.common import CheckpointError, ConversionReport
from seem.models.checkpoints.native import load_native, save_native
from seem.models.checkpoints.seem import (
    convert_official_seem,
    infer_seem_config,
    official_state_dict,
    read_official_seem,
    variant_from_filename,
)
from seem.models.click_refiner import (
    MODEL_RUN_SETTINGS,
    ClickRefiner,
    ClickRefinerConfig,
    clean_regions,
    click_maps,
    damp_far_correction,
    fold_batchnorm,
    stride8_features,
)
from seem.models.config import DecoderVariant, SEEMConfig, TextEncoderConfig, from_official_yaml
from seem.models.pixel_decoders.fpn_transformer import TransformerEncoderPixelDecoder
from seem.models.preprocess import normalize_and_pad
from seem.models.refiner_runtime import OnnxRefiner, onnxruntime_available
from seem.models.seem_decoder import SEEMDecoder
from seem.models.seem_types import (
    DecoderDraws,
    DecoderInputs,
    DecoderOutput,
    GroundingPrompt,
    ImageFeatures,
    ReferenceTokens,
    SpatialPrompts,
)
from seem.models.text.encoder import TextEncoder

if TYPE_CHECKING:
    from seem.models.text.minilm import MiniLMTextEncoder

FAMILY = "seem"


CLASS_EMBEDDINGS_FILE = "class_embeddings.safetensors"
"""Optional file of a model directory: precomputed class embeddings (``builtin_class_embeddings``)."""


def save_class_embeddings(path: Path, vocabularies: Mapping[tuple[str, ...], Tensor], text_state: str = "") -> None:
    """Write vocabularies as ``embeddings_<i>`` tensors ``[K + 1, D]`` with their names and the text-encoder state
    they were computed with (``SEEMModel.text_state_hash``) in the metadata."""
    from safetensors.torch import save_file

    tensors = {f"embeddings_{i}": e.detach().float().cpu().contiguous() for i, e in enumerate(vocabularies.values())}
    meta = {"names": json.dumps([list(n) for n in vocabularies]), "text_state": text_state}
    save_file(tensors, str(path), metadata=meta)


def load_class_embeddings(path: Path) -> tuple[dict[tuple[str, ...], Tensor], str]:
    """Read ``save_class_embeddings``'s file → (vocabularies, text state); raises ``CheckpointError`` naming the file
    when it is malformed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = str(meta.get("text_state", ""))
        names = json.loads(meta.get("names", "null"))
        if not isinstance(names, list) or set(f.keys()) != {f"embeddings_{i}" for i in range(len(names))}:
            raise CheckpointError(f"{path}: not a class-embeddings file (names and embeddings_<i> tensors)")
        out = {tuple(n): f.get_tensor(f"embeddings_{i}") for i, n in enumerate(names)}
    for n, e in out.items():
        if e.dim() != 2 or e.shape[0] != len(n) + 1:
            raise CheckpointError(
                f"{path}: embeddings of {len(n)} classes must be [{len(n) + 1}, D], got {tuple(e.shape)}"
            )
    return out, state


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder | MiniLMTextEncoder:
    """``TextEncoder`` (``kind="clip"``) or ``MiniLMTextEncoder`` (``kind="minilm"``, imported only when used)."""
    if cfg.kind == "minilm":
        from seem.models.text.minilm import MiniLMTextEncoder

        return MiniLMTextEncoder(cfg)
    if cfg.kind != "clip":
        raise ValueError(f"unknown text encoder kind {cfg.kind!r}; choose 'clip' or 'minilm'")
    return TextEncoder(cfg)


class SEEMModel(nn.Module):
    """One SEEM model (any size, v1 or demo decoder rules).

    Attributes:
        config: the ``SEEMConfig`` it was built from.
        backbone: ``FocalNet`` (official prefix ``backbone.``) or ``MobileNetV2`` (``seem.models.backbones``).
        pixel_decoder: ``TransformerEncoderPixelDecoder`` (``sem_seg_head.pixel_decoder.``).
        text_encoder: ``TextEncoder`` (``sem_seg_head.predictor.lang_encoder.``) or ``MiniLMTextEncoder`` (frozen
            package weights; only its projection and logit scale are in the state dict).
        decoder: ``SEEMDecoder`` (``sem_seg_head.predictor.``).
    """

    def __init__(self, config: SEEMConfig) -> None:
        super().__init__()
        if config.pixel_decoder.conv_dim != config.decoder.hidden_dim:
            raise ValueError(
                f"pixel_decoder.conv_dim ({config.pixel_decoder.conv_dim}) must equal decoder.hidden_dim "
                f"({config.decoder.hidden_dim}): the decoder's input projection is the identity"
            )
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = TransformerEncoderPixelDecoder(config.pixel_decoder)
        self.text_encoder = build_text_encoder(config.text)
        self.decoder = SEEMDecoder(config.decoder)
        self.refiner = _channels_last(ClickRefiner(config.refiner)) if config.refiner.enabled else None
        """Optional click refiner (``seem.models.click_refiner``; the default model has one, official ones none)."""
        self._folded_refiner: tuple[tuple[object, ...], ClickRefiner] | None = None
        """Inference copy of ``refiner`` with BatchNorm folded in (``fold_batchnorm``) and the state it was made
        from (a plain tuple, so not a submodule: it is in no state dict)."""
        self._onnx_refiner = _RunnerSlot()
        """The folded refiner in onnxruntime (``_refiner_runner``); left out of copies and pickles."""
        self._pooled_features: tuple[weakref.ref[Tensor], tuple[object, ...], Tensor] | None = None
        """The last image's mask features pooled to stride 8 for the refiner (``stride8_features``), with a weak
        reference to the features they came from and that tensor's version, shape, device and dtype: the clicks
        of one image slice their windows out of one pooled map instead of pooling again per click."""
        self.builtin_class_embeddings: dict[tuple[str, ...], Tensor] = {}
        """Class embeddings shipped with the weights (class names → ``[K + 1, D]``, background last), so that a
        model whose text encoder is an optional package still labels masks with its own vocabulary. Valid while
        ``text_state_hash()`` equals ``builtin_text_state`` (training the text projection makes them stale)."""
        self.builtin_text_state = ""

    def text_state_hash(self) -> str:
        """sha256 of the text encoder's state dict (for MiniLM: the projection and logit scale only)."""
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(self.text_encoder.state_dict().items()):
            t = v.detach().to("cpu").float().contiguous().reshape(-1)
            h.update(f"{k}|{tuple(v.shape)}\n".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------------------------------------
    # inference building blocks

    @property
    def device(self) -> torch.device:
        return self.decoder.query_feat.weight.device

    def preprocess(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """uint8 RGB ``[3, H, W]`` or ``[B, 3, H, W]`` → (normalised, zero-padded ``[B, 3, Hp, Wp]``, ``(H, W)``)."""
        x = normalize_and_pad(
            image.to(self.device),
            self.config.pixel_mean,
            self.config.pixel_std,
            self.config.inference.size_divisibility,
        )
        return x, (int(image.shape[-2]), int(image.shape[-1]))

    def encode_image(self, image: Tensor, prepare_decoder: bool = False) -> ImageFeatures:
        """Backbone + pixel decoder on a uint8 RGB image ``[3, H, W]`` / ``[B, 3, H, W]`` (already resized).

        Returns ``ImageFeatures`` with the three decoder levels (strides 32, 16, 8), the stride-4 mask features
        and the padded size ``(Hp, Wp)``. The unpadded size is ``image.shape[-2:]``.

        The decoder derives per-image tensors from these features (every layer's cross-attention keys / values,
        the mask features at the level sizes) on its first call without gradients and keeps them in
        ``ImageFeatures.decoder_cache`` for every later prompt on the image. ``prepare_decoder=True`` computes them
        here instead (``SEEMDecoder.prepare``), so that the first click is as fast as the later ones.
        """
        x, _ = self.preprocess(image)
        pix = self.pixel_decoder(self.backbone(x))
        feats = ImageFeatures(
            multi_scale=list(pix.multi_scale_features),
            mask_features=pix.mask_features,
            padded_size=(int(x.shape[-2]), int(x.shape[-1])),
        )
        if prepare_decoder:
            self.prepare_decoder(feats)
        return feats

    def refine_clicks(
        self,
        image: Tensor,
        logits4: Tensor,
        coords: Tensor,
        labels: Tensor,
        prev4: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        """Correct masks where clicked, with the click refiner (raises ``RuntimeError`` if the model has none).

        Args:
            image: ``[1, 3, Hp, Wp]`` the normalised, padded input canvas (``preprocess(image)[0]``).
            logits4: ``[C, Hp / 4, Wp / 4]`` stride-4 mask logits on that canvas (C masks of the same clicks).
            coords: ``[N, 2]`` clicks, (x, y) canvas pixels; ``labels [N]``: 1 positive, 0 negative.
            prev4: ``[H4, W4]`` or ``[1, H4, W4]`` stride-4 logits of the previous round's mask (the memory prompt the
                decoder got) or None; read only by a refiner with ``prev_mask``.
            features: ``[1, D, Hp / 4, Wp / 4]`` the image's ``ImageFeatures.mask_features``; required by a refiner
                with ``feature_dim`` (``ValueError`` without them), else ignored.

        Returns: logits ``[C, Hp, Wp]`` at canvas resolution, small islands and holes cleaned
        (``ClickRefinerConfig.min_region``), the correction damped far from every click (``ClickRefinerConfig.reach``).
        The net reads a window around the masks and the clicks (``_refine_window``), at half resolution while the
        prompt has few clicks and the window is large (``ClickRefinerConfig.half_above``).
        """
        if self.refiner is None:
            raise RuntimeError("this model has no click refiner (config.refiner.enabled is false)")
        hp, wp = image.shape[-2:]
        coarse = F.interpolate(logits4[:, None].float(), size=(hp, wp), mode="bilinear", align_corners=False)
        c = coarse.shape[0]
        prev = None
        if prev4 is not None and self.config.refiner.prev_mask:
            p4 = prev4.reshape(1, 1, *prev4.shape[-2:]).float()
            prev = F.interpolate(p4, size=(hp, wp), mode="bilinear", align_corners=False).expand(c, -1, -1, -1)
        if self.config.refiner.feature_dim and (
            features is None or features.dim() != 4 or tuple(features.shape[-2:]) != (hp // 4, wp // 4)
        ):
            got = None if features is None else tuple(features.shape)
            raise ValueError(f"this refiner reads the image's mask features [1, D, {hp // 4}, {wp // 4}], got {got}")
        if prev is not None and self.config.refiner.correct_previous:  # correct the previous round's mask
            coarse, prev = prev.contiguous(), coarse
        fg = coarse > 0 if prev is None else (coarse > 0) | (prev > 0)
        cfg = self.config.refiner
        y0, y1, x0, x1 = _refine_window(fg, coords, (hp, wp))
        given = coords.reshape(-1, 2)[(labels == 0) | (labels == 1)].float()
        half = 0 < cfg.half_above < (y1 - y0) * (x1 - x0) and len(given) <= cfg.half_clicks
        if half:  # edges on multiples of 16: the half-resolution window's stride-8 cells are 2×2 stride-8 cells
            y0, x0, y1, x1 = y0 // 16 * 16, x0 // 16 * 16, min(hp, -(-y1 // 16) * 16), min(wp, -(-x1 // 16) * 16)
        out = coarse.clamp(-cfg.coarse_clamp, cfg.coarse_clamp)
        win = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
        net = self._inference_refiner()  # (its key walks every weight: once per click)
        f8 = None  # the window's features at stride 8 (its edges are multiples of 8 or the canvas edges)
        if cfg.feature_dim and features is not None:
            f8 = self._stride8_features(features, net)[..., y0 // 8 : -(-y1 // 8), x0 // 8 : -(-x1 // 8)]
        image_w, coarse_w, prev_w = image[win].to(coarse), coarse[win], None if prev is None else prev[win]
        if half:
            image_w, coarse_w = _halved(image_w), _halved(coarse_w)
            prev_w = None if prev_w is None else _halved(prev_w)
            f8 = None if f8 is None else _halved(f8)
            at = torch.tensor([x0 + 0.5, y0 + 0.5], dtype=torch.float32, device=coords.device)  # pixel centres
            hh, ww = coarse_w.shape[-2:]
            maps_w = click_maps((coords.float() - at) / 2, labels, (hh, ww), cfg.click_radius)
        else:
            maps_w = click_maps(coords, labels, (hp, wp), cfg.click_radius)[:, y0:y1, x0:x1]
        small = self._refiner_runner(net)(  # window views as they are: the net concatenates them in one pass
            image_w.expand(c, -1, -1, -1),
            coarse_w,
            maps_w.to(coarse)[None].expand(c, -1, -1, -1),
            prev_w,
            None if f8 is None else f8.expand(c, -1, -1, -1),
        )
        if half:  # the correction, upsampled onto the decoder's mask at canvas resolution
            delta = small - coarse_w.clamp(-cfg.coarse_clamp, cfg.coarse_clamp)
            refined = out[win] + F.interpolate(delta, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        else:
            refined = small
        if cfg.reach > 0 and cfg.far_weight < 1 and given.numel():
            local = given - torch.tensor([x0, y0], dtype=given.dtype, device=given.device)
            refined = damp_far_correction(out[win], refined, local, cfg.reach, cfg.far_weight)
        out[win] = refined
        frac = self.config.refiner.min_region
        return torch.stack([clean_regions(o, coords, labels, frac) for o in out[:, 0]])

    def _stride8_features(self, features: Tensor, net: ClickRefiner) -> Tensor:
        """What the refiner reads of the whole canvas (``ClickRefiner.image_features`` of ``stride8_features
        (features)``: the features pooled, and their similarity embedding if the refiner has one), made once per
        image: kept while ``features`` is the same tensor, unchanged (``_version``), on the same device and dtype,
        and the refiner's similarity head the same. A window on multiples of 8 px is the same slice of the pooled
        features as pooling the window itself (every 2×2 cell lies inside the window). ``net``: the refiner that
        runs (``_inference_refiner()``)."""
        head = () if net.similarity is None else tuple((id(t), t._version) for t in net.similarity.parameters())
        key = (features._version, tuple(features.shape), features.device, features.dtype, net, head)
        c = self._pooled_features
        if c is None or c[0]() is not features or c[1] != key:
            c = (weakref.ref(features), key, net.image_features(stride8_features(features)))
            self._pooled_features = c
        return c[2]

    def _inference_refiner(self) -> ClickRefiner:
        """``refiner`` with its BatchNorm folded in when it is in eval mode and no gradient is asked for (made
        again whenever a weight or a statistic changed or was replaced, or the device or the dtype changed), else
        ``refiner`` itself."""
        net = self.refiner
        if net is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("this model has no click refiner")
        if net.training or torch.is_grad_enabled():
            return net
        # every tensor of every module (read directly: parameters() / buffers() cost 0.3 ms per click)
        state = [t for m in net.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        key = (net, state[0].device, state[0].dtype, *((id(t), t._version) for t in state))
        if self._folded_refiner is None or self._folded_refiner[0] != key:
            self._folded_refiner = (key, _channels_last(fold_batchnorm(net)))
        return self._folded_refiner[1]

    @torch.no_grad()
    def prepare_refiner(self) -> None:
        """Make the inference copy of the click refiner now (folded, and handed to onnxruntime on a CPU: about half a
        second), so that the first refined click does not wait for it. Nothing for a model without a refiner."""
        if self.refiner is not None and not self.refiner.training:
            self._refiner_runner()

    def _refiner_runner(self, net: ClickRefiner | None = None) -> ClickRefiner | OnnxRefiner:
        """What runs the refiner's net at inference: ``net`` (default ``_inference_refiner()``), or that net in
        onnxruntime (``OnnxRefiner``, made once per folded net and thread count) when it is folded, on the CPU, with
        ``config.refiner.onnxruntime`` and onnxruntime installed. A net onnxruntime cannot run stays with PyTorch
        (one warning)."""
        net = self._inference_refiner() if net is None else net
        if net is self.refiner or not self.config.refiner.onnxruntime or net.head.weight.device.type != "cpu":
            return net
        threads = torch.get_num_threads()
        cached = self._onnx_refiner.runner
        if cached is not None and cached.net is net and cached.threads == threads:
            return cached
        if self._onnx_refiner.failed is net or not onnxruntime_available():
            return net
        try:
            runner = OnnxRefiner(net, threads)
        except RuntimeError as e:
            warnings.warn(f"{e}; the click refiner runs in PyTorch", RuntimeWarning, stacklevel=2)
            self._onnx_refiner.failed = net
            return net
        self._onnx_refiner.runner = runner
        return runner

    def set_refiner(self, refiner: ClickRefiner | None) -> None:
        """Give the model a click refiner (trained apart, ``seem.train.refiner``) or remove it; the config follows,
        so ``save_pretrained`` writes it: the refiner's own config, except the model's inference settings ``reach``
        and ``far_weight`` (how far from the clicks the correction counts in full), ``half_above`` and
        ``half_clicks`` (when the net reads a half-resolution window) and ``onnxruntime``, which stay as they were."""
        if refiner is not None and not isinstance(refiner, ClickRefiner):
            raise TypeError(f"refiner must be a ClickRefiner or None, got {type(refiner).__name__}")
        dim = self.config.pixel_decoder.mask_dim
        if refiner is not None and refiner.cfg.feature_dim not in (0, dim):
            raise ValueError(
                f"the refiner reads {refiner.cfg.feature_dim}-channel model features, this model's have {dim} "
                "(a refiner with features belongs to the model it was trained behind)"
            )
        self.refiner = None if refiner is None else _channels_last(refiner.to(self.device).eval())
        self._folded_refiner = None
        old = self.config.refiner
        cfg = ClickRefinerConfig() if refiner is None else dataclasses.replace(refiner.cfg, enabled=True)
        cfg = dataclasses.replace(cfg, **{k: getattr(old, k) for k in MODEL_RUN_SETTINGS})
        self.config = dataclasses.replace(self.config, refiner=cfg)

    def prepare_decoder(self, features: ImageFeatures) -> ImageFeatures:
        """Compute the decoder's per-image tensors of ``features`` now (see ``encode_image``), under the caller's
        autocast setting (the decoder keeps one set per autocast dtype). Returns ``features``."""
        return self.decoder.prepare(features)

    def class_embeddings(self, class_names: Sequence[str]) -> Tensor:
        """Vocabulary ``[K + 1, D]`` for ``class_names`` (SEEM's 81 templates; ``background`` appended last)."""
        return self.text_encoder.class_embeddings(list(class_names))

    def encode_phrases(self, phrases: Sequence[str]) -> GroundingPrompt:
        """Referring phrases → a ``GroundingPrompt`` (all phrases' non-padding tokens form one group)."""
        if isinstance(phrases, str):
            phrases = [phrases]
        enc = self.text_encoder.encode_text(list(phrases))
        keep = enc.attention_mask.bool()
        return GroundingPrompt(tokens=enc.token_emb[keep], phrase_embeddings=enc.pooled)

    @property
    def logit_scale(self) -> Tensor:
        """The text encoder's ``logit_scale`` parameter (log scale; ``exp`` is applied where it is used)."""
        return self.text_encoder.logit_scale

    def decode(self, inputs: DecoderInputs, trace: dict[str, Tensor] | None = None) -> DecoderOutput:
        """Run the decoder (see ``SEEMDecoder.forward``); fills in ``logit_scale`` when it is missing.

        Interactive use: encode the image once, then call ``decode`` per prompt under ``torch.inference_mode()``
        with the same ``ImageFeatures`` (its decoder cache is reused) and without ``class_embeddings`` (a v1
        prompted call then skips the object queries, see ``DecoderInputs.object_queries``). The fast path is the
        default; ``DecoderInputs.exact=True`` (or a ``trace``) follows the official order of operations.
        """
        if inputs.logit_scale is None:
            inputs.logit_scale = self.logit_scale
        return self.decoder(inputs, trace=trace)

    def encode_reference(
        self, features: ImageFeatures, prompts: SpatialPrompts, draws: DecoderDraws | None = None
    ) -> ReferenceTokens:
        """Stage 1 of a referring-image prompt: tokens of ``prompts`` drawn on the reference image's features."""
        return self.decoder.encode_reference(features, prompts, draws=draws)

    # ------------------------------------------------------------------------------------------------
    # weights

    def expected_shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.state_dict().items()}

    def load_official_state_dict(self, official: Mapping[str, Tensor], what: str = "checkpoint") -> ConversionReport:
        """Load an official SEEM state_dict strictly (see ``seem.models.checkpoints.seem``)."""
        ours, report = convert_official_seem(official, self.expected_shapes(), what=what)
        self.load_state_dict(ours, strict=True, assign=any(p.is_meta for p in self.parameters()))
        return report

    @classmethod
    def from_official(
        cls,
        checkpoint: str | Path | Mapping[str, Tensor],
        variant: DecoderVariant | None = None,
        config: SEEMConfig | str | Path | None = None,
    ) -> tuple[SEEMModel, ConversionReport]:
        """Build a model from an official SEEM checkpoint (path or loaded state_dict), strictly.

        Args:
            checkpoint: ``seem_focal{t,l}_v{0,1}.pt`` or an already loaded official state_dict.
            variant: decoder rules; default ``"demo"`` for ``*_v0`` files (as the official demo runs them), else
                ``"v1"``.
            config: a ``SEEMConfig`` or an official YAML path; default: inferred from the weights.

        Returns:
            ``(model in eval mode, ConversionReport)``.
        """
        if isinstance(checkpoint, (str, Path)):
            what = str(checkpoint)
            sd = read_official_seem(checkpoint)
            variant = variant or variant_from_filename(checkpoint)
        else:
            what = "state_dict"
            sd = official_state_dict(checkpoint, what)
            variant = variant or "v1"
        if isinstance(config, (str, Path)):
            config = from_official_yaml(config)
        if config is None:
            name = Path(what).stem if what != "state_dict" else "seem"
            config = infer_seem_config(sd, variant=variant, name=name)
        elif config.decoder.variant != variant:
            config.decoder.variant = variant
        model = cls(config)
        report = model.load_official_state_dict(sd, what=what)
        return model.eval(), report

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (lossless), and ``class_embeddings.safetensors`` when
        ``builtin_class_embeddings`` holds vocabularies (see ``seem.vocabulary``)."""
        out = save_native(out_dir, FAMILY, self.config.to_dict(), self.state_dict())
        shipped = Path(out_dir) / CLASS_EMBEDDINGS_FILE
        if self.builtin_class_embeddings:
            save_class_embeddings(shipped, self.builtin_class_embeddings, self.builtin_text_state)
        else:
            shipped.unlink(missing_ok=True)  # never leave another model's vocabulary behind
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SEEMModel:
        """Load a directory written by ``save_pretrained`` (strict: every key must match)."""
        family, cfg, sd = load_native(path, device=device)
        if family != FAMILY:
            raise CheckpointError(f"{path}: holds a {family!r} model, not a SEEM model")
        model = cls(SEEMConfig.from_dict(cfg)).to(device)
        missing, unexpected = set(model.state_dict()) - set(sd), set(sd) - set(model.state_dict())
        if missing or unexpected:
            raise CheckpointError(f"{path}: missing keys {sorted(missing)[:10]}, unexpected {sorted(unexpected)[:10]}")
        model.load_state_dict(sd, strict=True)
        shipped = Path(path) / CLASS_EMBEDDINGS_FILE
        if shipped.is_file():
            model.builtin_class_embeddings, model.builtin_text_state = load_class_embeddings(shipped)
            dim = model.config.text.proj_dim
            bad = [n for n, e in model.builtin_class_embeddings.items() if e.shape[1] != dim]
            if bad:
                raise CheckpointError(f"{shipped}: class embeddings must be {dim} wide (text.proj_dim)")
        return model.eval()


class _RunnerSlot:
    """Holds the model's ``OnnxRefiner`` (and the folded net onnxruntime refused, so it is not tried again); copies
    and pickles of the model get an empty slot (an onnxruntime session can be neither)."""

    def __init__(self) -> None:
        self.runner: OnnxRefiner | None = None
        self.failed: ClickRefiner | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> _RunnerSlot:
        return _RunnerSlot()

    def __getstate__(self) -> dict[str, object]:
        return {"runner": None, "failed": None}


def _channels_last(refiner: ClickRefiner) -> ClickRefiner:
    """The refiner's convolution weights in channels-last layout (oneDNN's fast path on CPU; values unchanged)."""
    return refiner.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _halved(x: Tensor) -> Tensor:
    """``x [B, C, H, W]`` at half resolution ``[B, C, ceil(H / 2), ceil(W / 2)]``: for even sizes the mean of each
    2×2 cell (bilinear at scale 1/2, five times as fast as ``avg_pool2d`` on CPU)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(-(-h // 2), -(-w // 2)), mode="bilinear", align_corners=False)


def _refine_window(fg: Tensor, coords: Tensor, size: tuple[int, int], margin: float = 0.4) -> tuple[int, int, int, int]:
    """The canvas window the click refiner reads: the box around the masks ``fg [C, 1, H, W]`` and the clicks
    ``coords [N, 2]`` (x, y), grown by ``margin`` × its size (at least 64 px) on each side, on multiples of 8 →
    ``(y0, y1, x0, x1)``; the whole canvas when that box covers most of it (no saving)."""
    h, w = size
    ys, xs = torch.nonzero(fg.any(0)[0], as_tuple=True)
    cx = torch.cat([xs.float(), coords[:, 0].float().to(xs.device)])
    cy = torch.cat([ys.float(), coords[:, 1].float().to(ys.device)])
    if cx.numel() == 0:
        return 0, h, 0, w
    bx0, bx1, by0, by1 = float(cx.min()), float(cx.max()) + 1, float(cy.min()), float(cy.max()) + 1
    m = max(64.0, margin * max(bx1 - bx0, by1 - by0))
    x0, y0 = max(0, int(bx0 - m) // 8 * 8), max(0, int(by0 - m) // 8 * 8)
    x1, y1 = min(w, -(-int(bx1 + m) // 8) * 8), min(h, -(-int(by1 + m) // 8) * 8)
    if (x1 - x0) * (y1 - y0) > 0.7 * h * w:
        return 0, h, 0, w
    return y0, y1, x0, x1
