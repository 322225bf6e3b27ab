"""``Segmenter``: set an image once, then ask with any prompt; results come back at the image's own size.

    from seem.predictor import Segmenter, resolve_model
    from seem.prompts import Box, Points, PromptSet

    seg = Segmenter(resolve_model("seem_focalt_v1.pt"))
    seg.set_image("photo.jpg")                        # runs the image encoder once
    [dog] = seg.segment(PromptSet(points=Points([[320, 240]])))
    dog.mask, dog.score, dog.label, dog.bbox          # bool [H, W], selection score, class name, XYXY
    masks, scores, low_res = seg.predict(point_coords=np.array([[320, 240]]), point_labels=np.array([1]))  # SAM-style
    pan = seg.panoptic()                              # 133 COCO classes by default

Everything here uses only the public ``SEEMModel`` methods (``encode_image``, ``class_embeddings``,
``encode_phrases``, ``encode_reference``, ``decode``) and types (``seem.models.seem_types``) plus the
post-processing functions of ``seem.models.postprocess``.

How a prompt becomes a mask (the official rules)
------------------------------------------------
The image is resized so its short side is 512 (PIL bicubic; ``seem.prompts.ImageGeometry``) and encoded once.
Visual prompts (clicks, boxes, scribbles, polygons, masks) are drawn on that canvas (``seem.prompts.rasterize``).

- **v1 models** (``seem_focal{t,l}_v1.pt``): each object's visual prompt gets 3 spatial queries; the official
  selection (``update_spatial_results``) picks the one whose mask embedding best matches the prompt's pooled
  embedding; its stride-4 logits go bilinear to the padded canvas, are cropped, go bilinear to the original size
  and are thresholded at ``sigmoid > 0.5`` (``evaluate_interactive``). A **reference image** replaces the visual
  prompt by the tokens of prompts drawn on another image (``evaluate_interactive_single``: same selection,
  **bicubic** resizing). **Text** alone uses the grounding queries: the query with the highest
  ``vl_similarity`` to the phrase wins (``evaluate_grounding``; bicubic with antialias, ``logit > 0``).
  Composition: in v1 the text and visual query groups never attend to each other, so for an object with both,
  the visual prompt decides the mask (priority visual > reference > text, as the official demo); v1 cannot
  combine visual prompts on this image with a reference image in one object (``PromptError``).
- **demo models** (``*_v0.pt`` run with the demo rules): the prompts condition the object queries directly; the
  demo's selection picks one object query (priority stroke > example > text). The demo returns masks at the
  resized size; here they are brought to the original size like v1's (bilinear, ``sigmoid > 0.5``).

Labels: with a vocabulary (default: the 133 COCO-panoptic classes), each mask gets the class whose text
embedding best matches the chosen query's caption (softmax over the classes plus ``background``, argmax over all
columns as the official demo; ``label_score`` is that probability). Vocabularies are cached in memory and on disk
(``seem.vocabulary``).

Several objects per call: ``segment([a, b, c])``. By default (``joint=False``) each object is decoded in its own
decoder call, so a result never depends on the other objects (batch = one by one). ``joint=True`` runs all
visual / text objects of a v1 model in **one** call, as the official multi-prompt evaluation does: cheaper, but
the 512-pixel prompt budget and the memory slots are shared and all phrases form one token group, so results can
depend on the other objects (this is what the official ``evaluate_interactive`` / ``evaluate_grounding`` compute).

Determinism: where the official code draws random numbers, the model uses documented deterministic defaults; the
recorded official choices can be passed as ``draws`` (``seem.models.seem_types.DecoderDraws``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from seem.io import DEFAULT_MAX_PIXELS, ImageInput, read_image, resize_image
from seem.models.grabcut import box_fit_iou, grabcut_box_mask, grabcut_polygon_mask
from seem.models.postprocess import (
    crop_and_resize,
    instance_inference,
    panoptic_segmentation,
    sem_seg_postprocess,
    semantic_inference,
    upsample_to_padded,
)
from seem.models.seem_model import SEEMModel
from seem.models.seem_types import (
    DecoderDraws,
    DecoderInputs,
    DecoderOutput,
    ImageFeatures,
    ReferenceTokens,
    SpatialPrompts,
)
from seem.prompts import (
    ImageGeometry,
    PromptError,
    PromptSet,
    PromptTypeError,
    ReferenceImage,
    mask_core_clicks,
    rasterize,
    spaced_pixels,
)
from seem.results import PanopticSegmentation, Segment, SemanticSegmentation
from seem.vocabulary import Vocabulary, VocabularyCache, coco_panoptic_categories, validate_class_names

__all__ = ["ModelNotFoundError", "Segmenter", "resolve_model"]

Rule = Literal["bilinear", "bicubic", "grounding"]
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
Kind = Literal["visual", "reference", "text"]


# --------------------------------------------------------------------------------------------------------
# model resolution


class ModelNotFoundError(ValueError):
    """No usable model was named (missing argument or path)."""


def resolve_model(
    arg: SEEMModel | str | Path | None,
    *,
    config: str | Path | None = None,
    device: str | torch.device | None = None,
) -> SEEMModel:
    """Turn what a user named into a ``SEEMModel`` in eval mode (the one place the predictor finds models).

    Args:
        arg: a ``SEEMModel`` (returned as is, moved to ``device`` if given); anything ``seem.load`` accepts — None
            for the default model, a registered name (``seem.hub.REGISTRY``), a directory in seem's format, or an
            official SEEM ``.pt`` file, converted on the fly (strictly).
        config: official YAML for an official checkpoint whose architecture cannot be inferred from its weights.
        device: where to put the model (default: CPU, or the model's current device).

    Raises:
        ModelNotFoundError: nothing usable was named (with what to pass).
    """
    from seem.loading import load
    from seem.models.checkpoints.common import CheckpointError

    if isinstance(arg, SEEMModel):
        return arg.to(device).eval() if device is not None else arg.eval()
    if isinstance(arg, str) and not arg.strip():
        arg = None
    if arg is not None and not isinstance(arg, (str, Path)):
        raise TypeError(f"model must be a SEEMModel, a path, a registered name or None, got {type(arg).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if config is not None and arg is not None and Path(arg).is_file():
        model, _report = SEEMModel.from_official(Path(arg).expanduser(), config=config)
        return model.to(dev).eval()
    try:
        loaded = load(Path(arg).expanduser() if isinstance(arg, Path) else arg, device=dev)
    except CheckpointError:
        raise
    except (ValueError, FileNotFoundError) as e:  # nothing to load: no default model, unknown name, missing path
        raise ModelNotFoundError(str(e)) from e
    if not isinstance(loaded, SEEMModel):
        raise ModelNotFoundError(
            f"{arg}: is a {type(loaded).__name__} model; use seem.granularity.GranularityPredictor for it"
        )
    return loaded


# --------------------------------------------------------------------------------------------------------
# internal records


@dataclass
class _ImageState:
    image: np.ndarray  # uint8 [H, W, 3], original
    geometry: ImageGeometry
    features: ImageFeatures
    token: int
    key: str = ""  # reference-cache key of the image
    canvas: Tensor | None = None  # [1, 3, Hp, Wp] normalised padded input, kept for the click refiner
    resized: np.ndarray | None = None  # uint8 [h, w, 3], the model's input before padding (made on first use)


@dataclass
class _Candidate:
    logits4: Tensor  # [H4, W4] stride-4 logits on the padded canvas
    score: float
    class_logits: Tensor | None  # [K + 1]
    canvas_logits: Tensor | None = None  # [Hp, Wp] click-refined logits at canvas resolution


@dataclass
class _ObjectResult:
    kind: Kind
    rule: Rule
    candidates: list[_Candidate]  # [0] is the official selection; the rest sorted by score
    clip_box: tuple[float, float, float, float] | None = None  # box_rule "fit" / "grabcut": XYXY original pixels kept


BOX_RULES = ("official", "fit", "grabcut")
POLYGON_RULES = ("official", "grabcut")
BOX_CLICK_MARGIN = 16
"""``box_rule = "grabcut"`` with a click refiner: canvas pixels in from a box mask's edge where its clicks start."""
GRABCUT_LOGIT = 8.0
"""|logit| of a mask that ``box_rule`` / ``polygon_rule = "grabcut"`` took from GrabCut (a hard mask: +inside,
-outside)."""
NEGATIVE_CLICK_RULES = ("official", "drop_region")


def hard_mask_logits(mask: np.ndarray, padded_size: tuple[int, int]) -> Tensor:
    """Bool ``mask [h, w]`` (the resized image, at the top left of the canvas) as float32 logits ``[Hp, Wp]`` on the
    padded canvas: ``+GRABCUT_LOGIT`` inside, ``-GRABCUT_LOGIT`` elsewhere — how a mask taken from GrabCut (or
    corrected from it) is handed on: to the click refiner as its start, and as the next round's memory."""
    h, w = mask.shape
    logits = torch.full(padded_size, -GRABCUT_LOGIT, dtype=torch.float32)
    logits[:h, :w][torch.from_numpy(mask)] = GRABCUT_LOGIT
    return logits


CLIPPED_LOGIT = -1e4  # logits outside a fitted box (far below any model output; sigmoid 0, no inf / nan)


@dataclass
class _Prepared:
    prompts: PromptSet
    kind: Kind
    spatial: SpatialPrompts | None
    reference: ReferenceTokens | None
    phrase: str | None


# --------------------------------------------------------------------------------------------------------
# the predictor


class Segmenter:
    """SEEM predictor: ``set_image`` once, then ``segment`` / ``predict`` / ``panoptic`` / ``instances`` / ``semantic``.

    Args:
        model: a ``SEEMModel`` (see ``resolve_model``).
        short_side: the model input's short side; None = the model's own (``config.inference.short_side``: 512 for
            the official SEEM models, 384 for the default model).
        vocabulary: class names for labels and the image-level tasks; default: the 133 COCO-panoptic classes.
            Encoded lazily (when first needed) and cached (``cache_dir``).
        stuff_classes: which of ``vocabulary`` are stuff (panoptic merges them per class); default: COCO's stuff
            for the default vocabulary, none otherwise.
        cache_dir: vocabulary cache directory; None = ``seem.vocabulary.default_cache_dir()``; False = memory only.
        max_pixels: largest image accepted by ``set_image`` (``seem.io.read_image``).
        progress: progress bar while encoding large vocabularies.
        exact: decoder numerics (``DecoderInputs.exact``): None/False = the model's fast path (algebraically equal
            rewrites, equal up to float rounding), True = the official order of operations.
        precision: ``"fp32"`` (default; the official numerics) or ``"bf16"``: the decoder runs under
            ``torch.autocast`` with bfloat16 (mask logits, scores and prompt sampling stay float32) — on a CPU with
            bfloat16 matrix units a click costs about half the float32 time (``benchmarks/bench_predictor.py``)
            and gives the float32 masks up to rounding (IoU ≥ 0.99 on real photos with the default model). The
            image encoder stays float32: encoded in bfloat16, features moved a click's mask on a small object
            to IoU 0.84 with the float32 one (wrap ``set_image`` in ``torch.autocast`` yourself to trade that for
            faster encoding).
        refine_clicks: models with a click refiner (``seem.models.click_refiner``; the default model): correct the
            selected mask of every prompt that has points with it (masks at the input canvas resolution; the refined
            mask is also the next round's ``low_res_logits`` / memory). Boxes, scribbles and granularity levels
            (``segment_levels``) keep the decoder's masks. False: the decoder's masks only. With it on, the refiner's
            inference copy is made here (``SEEMModel.prepare_refiner``: on a CPU handed to onnxruntime, about half a
            second, once per model), not at the first click.

    Attribute ``reference_cache_size`` (default 2): how many encoded images are kept for reference-image prompts,
    the images passed to ``set_image`` included (so referring to the previous image, as video tracking does, costs
    no second encoding). Each entry holds one image's features; raise it when alternating between more images.

    All outputs are numpy arrays at the original image size; the model may live on any device.
    """

    def __init__(
        self,
        model: SEEMModel,
        *,
        short_side: int | None = None,
        vocabulary: Sequence[str] | None = None,
        stuff_classes: Sequence[str] | None = None,
        cache_dir: str | Path | bool | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        progress: bool = True,
        exact: bool | None = None,
        precision: Precision = "fp32",
        refine_clicks: bool = True,
    ) -> None:
        if not isinstance(model, SEEMModel):
            raise TypeError(f"model must be a SEEMModel (see seem.predictor.resolve_model), got {type(model).__name__}")
        if short_side is None:
            short_side = int(model.config.inference.short_side)
        if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 32:
            raise ValueError(f"short_side must be an int >= 32, got {short_side!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model.eval()
        self.short_side = short_side
        self.precision: Precision = precision
        self.max_pixels = max_pixels
        self.exact = exact
        self.refine_clicks = refine_clicks
        """Correct the selected mask of a click prompt with the model's click refiner (models that have one)."""
        if refine_clicks:
            model.prepare_refiner()
        self._vocab_cache = VocabularyCache(model, cache_dir=cache_dir, progress=progress)
        self._vocab_spec: tuple[tuple[str, ...] | None, tuple[str, ...] | None] = (None, None)
        self._vocab: Vocabulary | None = None
        if vocabulary is not None:
            self._vocab_spec = (validate_class_names(vocabulary, "vocabulary"), _opt_names(stuff_classes))
            self._check_stuff(*self._vocab_spec)
        self._state: _ImageState | None = None
        self._tokens = 0
        self.reference_cache_size = 2
        self._ref_cache: OrderedDict[str, tuple[ImageFeatures, ImageGeometry]] = OrderedDict()
        self._object_cache: tuple[int, tuple[str, ...], Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def variant(self) -> str:
        """The decoder rules: ``"v1"`` or ``"demo"``."""
        return self.model.config.decoder.variant

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def geometry(self) -> ImageGeometry:
        """Sizes of the current image (original, resized, padded)."""
        return self._require().geometry

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        return self._require().geometry.original_size

    @property
    def image(self) -> np.ndarray:
        """The current image, ``uint8 [H, W, 3]`` RGB (read-only view)."""
        v = self._require().image.view()
        v.flags.writeable = False
        return v

    @property
    def features(self) -> ImageFeatures:
        """The cached encoder output of the current image."""
        return self._require().features

    @property
    def image_token(self) -> int:
        """Changes at every ``set_image`` (sessions use it to notice a new image)."""
        return self._require().token

    def _numerics(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast region of ``precision`` (nothing for float32) around every decoder call."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _require(self) -> _ImageState:
        if self._state is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._state

    def __repr__(self) -> str:
        return (
            f"Segmenter({type(self.model).__name__}, short_side={self.short_side}, precision={self.precision!r}, "
            f"refine_clicks={self.refine_clicks})"
        )

    # ------------------------------------------------------------------ image

    @torch.no_grad()
    def set_image(self, image: ImageInput) -> None:
        """Read, resize (short side ``short_side``, PIL bicubic) and encode ``image``; results are cached until the
        next ``set_image``.

        ``image``: numpy ``uint8 [H, W, 3]`` RGB (see ``seem.io.read_image`` for every accepted form), a PIL image,
        a path or encoded bytes.
        """
        arr = read_image(image, max_pixels=self.max_pixels)
        g = ImageGeometry.for_image(
            arr.shape[0], arr.shape[1], self.short_side, self.model.config.inference.size_divisibility
        )
        features, canvas = self._encode(arr, g)
        if self._state is not None and self._state.key in self._ref_cache:
            self._ref_cache.move_to_end(self._state.key)  # the image before this one outlives older references
        key = _image_key(arr)
        self._remember_reference(key, features, g)
        self._tokens += 1
        self._state = _ImageState(arr, g, features, self._tokens, key, canvas)
        self._object_cache = None

    def reset_image(self) -> None:
        """Forget the current image and its features (and the encoded reference images)."""
        self._state = None
        self._object_cache = None
        self._ref_cache.clear()

    def _encode(self, arr: np.ndarray, g: ImageGeometry) -> tuple[ImageFeatures, Tensor | None]:
        """(features, the normalised padded canvas ``[1, 3, Hp, Wp]`` when the model has a click refiner)."""
        resized = resize_image(arr, g.resized_size)
        x = torch.from_numpy(resized).permute(2, 0, 1).contiguous().to(self.device)
        features = self.model.encode_image(x)
        canvas = self.model.preprocess(x)[0] if self.model.refiner is not None else None
        with self._numerics():
            self.model.prepare_decoder(features)
        if tuple(features.padded_size) != tuple(g.padded_size):  # pragma: no cover - model contract
            raise RuntimeError(f"model padded the image to {features.padded_size}, expected {g.padded_size}")
        return features, canvas

    # ------------------------------------------------------------------ vocabulary

    def _check_stuff(self, names: tuple[str, ...] | None, stuff: tuple[str, ...] | None) -> None:
        if names is None or stuff is None:
            return
        unknown = sorted(set(stuff) - set(names))
        if unknown:
            raise ValueError(f"stuff_classes {unknown} are not in the vocabulary")

    def set_vocabulary(self, class_names: Sequence[str], stuff_classes: Sequence[str] | None = None) -> None:
        """Use ``class_names`` for labels and as the default of ``panoptic`` / ``instances`` / ``semantic``.

        The embeddings are computed now (or read from the cache). ``stuff_classes``: the names that are stuff.
        """
        spec = (validate_class_names(class_names), _opt_names(stuff_classes))
        self._check_stuff(*spec)
        self._vocab = self._build_vocab(*spec)
        self._vocab_spec = spec

    @property
    def vocabulary(self) -> list[str]:
        """The current class names (the model's own vocabulary, else the COCO-panoptic names, unless
        ``set_vocabulary`` was called)."""
        names = self._vocab_spec[0]
        return list(names) if names is not None else list(self._default_names())

    def _default_names(self) -> tuple[str, ...]:
        """The model's own vocabulary (``SEEMConfig.vocabulary``), else the 133 COCO-panoptic names."""
        own = tuple(self.model.config.vocabulary)
        return own if own else tuple(c["name"] for c in coco_panoptic_categories())

    def class_embeddings(self, class_names: Sequence[str]) -> Tensor:
        """``[K + 1, D]`` embeddings of ``class_names`` (background last), from the memory / disk cache."""
        return self._vocab_cache.get(class_names)

    def _build_vocab(self, names: tuple[str, ...] | None, stuff: tuple[str, ...] | None) -> Vocabulary:
        coco = coco_panoptic_categories()
        coco_names = tuple(c["name"] for c in coco)
        if names is None:
            names = self._default_names()
        if names == coco_names:
            stuff_idx = frozenset(i for i, c in enumerate(coco) if not c["isthing"]) if stuff is None else None
            ids = tuple(int(c["id"]) for c in coco)
        else:
            stuff_idx = None
            ids = tuple(range(1, len(names) + 1))
        if stuff_idx is None:
            stuff_idx = frozenset(names.index(s) for s in (stuff or ()))
        return Vocabulary(names=names, embeddings=self._vocab_cache.get(names), stuff=stuff_idx, category_ids=ids)

    def _current_vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = self._build_vocab(*self._vocab_spec)
        return self._vocab

    def _vocab_for(self, class_names: Sequence[str] | None, stuff_classes: Sequence[str] | None) -> Vocabulary:
        if class_names is None:
            if stuff_classes is not None:
                raise ValueError("stuff_classes needs class_names (or call set_vocabulary)")
            return self._current_vocab()
        spec = (validate_class_names(class_names), _opt_names(stuff_classes))
        self._check_stuff(*spec)
        if spec == self._vocab_spec and self._vocab is not None:
            return self._vocab
        return self._build_vocab(*spec)

    # ------------------------------------------------------------------ prompts → decoder

    def _reference_tokens(self, ref: ReferenceImage) -> ReferenceTokens:
        g = ImageGeometry.for_image(
            ref.image.shape[0], ref.image.shape[1], self.short_side, self.model.config.inference.size_divisibility
        )
        key = _image_key(ref.image)
        if key in self._ref_cache:
            self._ref_cache.move_to_end(key)
            feats, g = self._ref_cache[key]
        else:
            feats, _ = self._encode(ref.image, g)
            self._remember_reference(key, feats, g)
        r = rasterize(ref.prompts, g)
        sp = SpatialPrompts(_bool_tensor(r.pos, self.device)[None], _bool_tensor(r.neg, self.device)[None])
        with self._numerics():
            return self.model.encode_reference(feats, sp, draws=ref.draws)

    def _remember_reference(self, key: str, features: ImageFeatures, geometry: ImageGeometry) -> None:
        """Keep the encoded image for reference-image prompts (LRU of ``reference_cache_size`` images)."""
        self._ref_cache[key] = (features, geometry)
        self._ref_cache.move_to_end(key)
        while len(self._ref_cache) > max(1, int(self.reference_cache_size)):
            self._ref_cache.popitem(last=False)

    def _prepare(self, prompts: PromptSet, index: int) -> _Prepared:
        if not isinstance(prompts, PromptSet):
            raise PromptTypeError(f"object {index}: expected a PromptSet, got {type(prompts).__name__}")
        st = self._require()
        try:
            prompts.validate(st.geometry.original_size)
        except PromptError as e:
            raise type(e)(f"object {index}: {e}") from None
        v1 = self.variant == "v1"
        if v1 and prompts.has_visual and prompts.reference is not None:
            raise PromptError(
                f"object {index}: a v1 model cannot combine visual prompts on this image with a reference image in "
                "one object (the reference tokens replace the spatial prompts); use two objects"
            )
        spatial = None
        if prompts.has_visual:
            r = rasterize(prompts, st.geometry)
            spatial = SpatialPrompts(_bool_tensor(r.pos, self.device)[None], _bool_tensor(r.neg, self.device)[None])
        reference = self._reference_tokens(prompts.reference) if prompts.reference is not None else None
        phrase = prompts.text.phrase if prompts.text is not None else None
        kind: Kind = "visual" if spatial is not None else "reference" if reference is not None else "text"
        return _Prepared(prompts, kind, spatial, reference, phrase)

    def _memory(self, memory: Any, prep: _Prepared, index: int) -> Tensor | None:
        if memory is None:
            return None
        if self.variant != "v1":
            raise PromptError("this model (demo decoder rules) has no memory prompt; mask_input / memory must be None")
        if prep.kind == "text":
            raise PromptError(f"object {index}: memory (mask_input) needs visual prompts or a reference image")
        h4, w4 = self._require().features.mask_features.shape[-2:]
        try:
            t = torch.as_tensor(np.asarray(memory) if not isinstance(memory, Tensor) else memory)
        except (TypeError, ValueError, RuntimeError):
            raise PromptTypeError(f"object {index}: mask_input / memory must be a float array") from None
        if t.dim() == 3 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 2 or tuple(t.shape) != (h4, w4) or not t.is_floating_point():
            raise PromptError(
                f"object {index}: mask_input / memory must be float logits [1, {h4}, {w4}] or [{h4}, {w4}] (the "
                f"low_res_logits of a previous call on this image), got {t.dtype} {tuple(t.shape)}"
            )
        if not torch.isfinite(t).all():
            raise PromptError(f"object {index}: mask_input / memory contains NaN or infinite values")
        return t.to(device=self.device, dtype=torch.float32)

    def _inputs(self, vocab: Vocabulary | None, draws: DecoderDraws | None) -> DecoderInputs:
        st = self._require()
        return DecoderInputs(
            st.features,
            class_embeddings=None if vocab is None else vocab.embeddings,
            logit_scale=self.model.logit_scale,
            draws=draws,
            exact=self.exact,
            final_only=True,  # the predictor reads the last layer only
        )

    def _prompted_inputs(self, vocab: Vocabulary | None, draws: DecoderDraws | None) -> DecoderInputs:
        inputs = self._inputs(vocab, draws)
        if self.variant == "v1":
            inputs.object_queries = False  # v1 object queries never see a prompt: skip them
        return inputs

    def _decode(self, inputs: DecoderInputs) -> DecoderOutput:
        with self._numerics():
            return self.model.decode(inputs)

    def _run(
        self,
        objects: Sequence[PromptSet],
        memory: Sequence[Any] | None,
        draws: DecoderDraws | Sequence[DecoderDraws | None] | None,
        joint: bool,
        labels: bool,
        max_candidates: int,
        refine: bool = True,
    ) -> tuple[list[_ObjectResult], Vocabulary | None]:
        if isinstance(objects, PromptSet):
            objects = [objects]
        if not isinstance(objects, Sequence) or len(objects) == 0:
            raise PromptTypeError("prompts must be a PromptSet or a non-empty list of PromptSet")
        n = len(objects)
        if memory is not None and (not isinstance(memory, Sequence) or len(memory) != n):
            raise PromptError(f"memory must be a list with one entry (or None) per object ({n})")
        preps = [self._prepare(p, i) for i, p in enumerate(objects)]
        mems = [self._memory(m, p, i) for i, (m, p) in enumerate(zip(memory or [None] * n, preps, strict=True))]
        vocab = self._current_vocab() if labels else None
        results: list[_ObjectResult | None] = [None] * n
        if joint and self.variant == "v1":
            if draws is not None and not isinstance(draws, DecoderDraws):
                raise TypeError("joint=True takes one DecoderDraws for the joint decoder call (or None)")
            group = [i for i, p in enumerate(preps) if p.kind != "reference"]
            if group:
                for i, r in zip(
                    group, self._run_joint_v1(group, preps, mems, vocab, draws, max_candidates, refine), strict=True
                ):
                    results[i] = r
            for i, p in enumerate(preps):
                if p.kind == "reference":
                    results[i] = self._run_one(p, mems[i], vocab, None, max_candidates, refine)
        else:
            per = _per_object_draws(draws, n)
            for i, p in enumerate(preps):
                results[i] = self._run_one(p, mems[i], vocab, per[i], max_candidates, refine)
        if refine:
            results = [
                None if r is None else self._polygon_grabcut(self._box_grabcut(self._refined(r, p, m)), p)
                for r, p, m in zip(results, preps, mems, strict=True)
            ]
        return [r for r in results if r is not None], vocab

    def _run_one(
        self,
        p: _Prepared,
        mem: Tensor | None,
        vocab: Vocabulary | None,
        draws: DecoderDraws | None,
        k: int,
        refine: bool = False,
    ) -> _ObjectResult:
        inputs = self._prompted_inputs(vocab, draws)
        v1 = self.variant == "v1"
        inputs.layers = self._refined_call_layers([p], refine, k)
        if p.spatial is not None:
            inputs.spatial = p.spatial
        if p.reference is not None and (not v1 or p.spatial is None):
            inputs.reference = p.reference
        if p.phrase is not None and (not v1 or p.kind == "text"):
            inputs.grounding = self.model.encode_phrases([p.phrase])
        inputs.prev_mask = None if mem is None else mem[None]
        out = self._decode(inputs)
        if not v1:
            return self._demo_result(out, k)
        if p.kind == "text":
            return self._grounding_result(out, 0, k)
        return self._negative_click_rule(self._spatial_result(out, 0, 1, p.kind, k, self._fitted_box(p)), p)

    def _run_joint_v1(
        self,
        group: list[int],
        preps: list[_Prepared],
        mems: list[Tensor | None],
        vocab: Vocabulary | None,
        draws: DecoderDraws | None,
        k: int,
        refine: bool = False,
    ) -> list[_ObjectResult]:
        vis = [i for i in group if preps[i].kind == "visual"]
        txt = [i for i in group if preps[i].kind == "text"]
        inputs = self._prompted_inputs(vocab, draws)
        inputs.layers = self._refined_call_layers([preps[i] for i in group], refine, k)
        if vis:
            pos = torch.cat([_need(preps[i].spatial).pos_masks for i in vis])
            neg = torch.cat([_need(_need(preps[i].spatial).neg_masks) for i in vis])
            inputs.spatial = SpatialPrompts(pos, neg)
            given = [mems[i] is not None for i in vis]
            if any(given) and not all(given):
                raise PromptError("joint=True: give memory for every visual object or for none (one decoder call)")
            if all(given):
                inputs.prev_mask = torch.stack([_need(mems[i]) for i in vis])
        if txt:
            inputs.grounding = self.model.encode_phrases([_need(preps[i].phrase) for i in txt])
        out = self._decode(inputs)
        res: dict[int, _ObjectResult] = {}
        for j, i in enumerate(vis):
            res[i] = self._spatial_result(out, j, len(vis), "visual", k, self._fitted_box(preps[i]))
            res[i] = self._negative_click_rule(res[i], preps[i])
        for j, i in enumerate(txt):
            res[i] = self._grounding_result(out, j, k)
        return [res[i] for i in group]

    # ------------------------------------------------------------------ decoder output → candidates

    @staticmethod
    def _ranked(scores: Tensor, chosen: int, k: int) -> list[int]:
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        order.remove(chosen)
        return [chosen, *order][:k]

    @staticmethod
    def _candidate_logits(group: Any, rows: list[int], chosen_logits: Tensor) -> list[Tensor]:
        """Stride-4 logits of ``rows`` of a query group: ``rows[0]`` is the selected query, whose logits the
        decoder's selection already holds (no second pass over the mask features); the others are computed in
        one batched call (each pass reads all of the ``[mask_dim, H4, W4]`` features)."""
        out = [chosen_logits]
        if len(rows) > 1:
            rest = group.mask_logits_of(0, torch.tensor(rows[1:], dtype=torch.long))
            out += list(rest.unbind(0))
        return out

    def _fitted_box(self, p: _Prepared) -> tuple[float, float, float, float] | None:
        """The union of a box-only prompt's boxes when the model's ``box_rule`` is ``"fit"`` or ``"grabcut"``, else
        None."""
        rule = self.model.config.inference.box_rule
        if rule not in BOX_RULES:
            raise ValueError(f"model config inference.box_rule must be one of {', '.join(BOX_RULES)}, got {rule!r}")
        ps = p.prompts
        if rule == "official" or p.kind != "visual" or not ps.boxes:
            return None
        if ps.points is not None or ps.scribbles or ps.polygons or ps.masks or ps.text is not None:
            return None
        b = np.array([bx.xyxy for bx in ps.boxes])
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())

    def _negative_click_rule(self, res: _ObjectResult, p: _Prepared) -> _ObjectResult:
        """``negative_click_rule == "drop_region"``: in each candidate's stride-4 logits, the connected regions of
        the mask (``logits > 0``, 4-connected) holding a negative click and no positive click are set to
        ``CLIPPED_LOGIT``. Other rules, prompts without negative clicks: ``res`` unchanged."""
        rule = self.model.config.inference.negative_click_rule
        if rule not in NEGATIVE_CLICK_RULES:
            raise ValueError(
                f"model config inference.negative_click_rule must be one of {', '.join(NEGATIVE_CLICK_RULES)}, "
                f"got {rule!r}"
            )
        pts = p.prompts.points
        if rule != "drop_region" or pts is None or not (pts.labels == 0).any():
            return res
        cells = self._require().geometry.canvas_pixels(pts.coords) // 4  # (u, v) stride-4 cells
        for c in res.candidates:
            h4, w4 = c.logits4.shape[-2:]
            u, v = np.minimum(cells[:, 0], w4 - 1), np.minimum(cells[:, 1], h4 - 1)
            regions, _ = ndimage.label((c.logits4 > 0).cpu().numpy())
            at = regions[v, u]
            drop = set(at[pts.labels == 0].tolist()) - set(at[pts.labels == 1].tolist()) - {0}
            if drop:
                gone = torch.from_numpy(np.isin(regions, sorted(drop))).to(c.logits4.device)
                c.logits4 = c.logits4.masked_fill(gone, CLIPPED_LOGIT)
        return res

    def _refined(self, res: _ObjectResult, p: _Prepared, memory: Tensor | None) -> _ObjectResult:
        """The selected candidate of a click prompt (or of a stroke / scribble / mask prompt, ``_refiner_clicks``)
        corrected by the model's click refiner (which may also read ``memory``, the previous round's mask): its
        ``canvas_logits`` set and its ``logits4`` (the next round's memory) replaced by their stride-4 average.
        Unchanged: models without a refiner, ``refine_clicks=False``, other prompts, fitted boxes."""
        st = self._require()
        clicks = None if res.clip_box else self._refiner_clicks(p)
        if clicks is None or st.canvas is None:
            return res
        c = res.candidates[0]
        out = self._refine_canvas(c.logits4, clicks, memory)
        c.canvas_logits = out
        c.logits4 = F.avg_pool2d(out[None, None], 4)[0, 0].to(c.logits4.dtype)
        return res

    def _refine_canvas(self, logits4: Tensor, clicks: tuple[np.ndarray, np.ndarray], memory: Tensor | None) -> Tensor:
        """``SEEMModel.refine_clicks`` of one mask: stride-4 logits ``[H4, W4]``, clicks (canvas pixels ``[N, 2]``
        (x, y), labels ``[N]``) and the memory prompt → refined logits ``[Hp, Wp]`` on the padded canvas."""
        st = self._require()
        assert st.canvas is not None  # callers check: models with a refiner keep the canvas
        coords = torch.from_numpy(clicks[0]).to(self.device)
        labels = torch.from_numpy(clicks[1]).to(self.device)
        return self.model.refine_clicks(st.canvas, logits4[None], coords, labels, memory, st.features.mask_features)[0]

    def _resized_image(self) -> np.ndarray:
        """The current image as the model read it (uint8 ``[h, w, 3]``, ``resize_image``), made once per image."""
        st = self._require()
        if st.resized is None:
            st.resized = resize_image(st.image, st.geometry.resized_size)
        return st.resized

    def _stroke_spacing(self) -> float:
        """``InferenceConfig.stroke_clicks``, checked (a number >= 0; 0 = strokes and boxes are not refined)."""
        spacing = self.model.config.inference.stroke_clicks
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or spacing < 0:
            raise ValueError(
                f"model config inference.stroke_clicks must be a number >= 0 (canvas pixels), got {spacing!r}"
            )
        return float(spacing)

    def _box_grabcut(self, res: _ObjectResult) -> _ObjectResult:
        """``box_rule == "grabcut"``: the selected mask of a box-only prompt (fitted to the box as with ``"fit"``)
        refined by OpenCV's GrabCut on the resized image (``seem.models.grabcut``), kept when its bounding box
        matches the box better than the fitted mask's, then corrected by the click refiner (``_box_refined``) when
        the model has one: its ``canvas_logits`` set to ±``GRABCUT_LOGIT`` and its ``logits4`` (the next round's
        memory) to their stride-4 average. Other rules and prompts: ``res`` unchanged."""
        box = res.clip_box
        if box is None or self.model.config.inference.box_rule != "grabcut":
            return res
        st = self._require()
        g = st.geometry
        c = res.candidates[0]
        h, w = g.resized_size
        hp, wp = g.padded_size
        up = F.interpolate(c.logits4[None, None].float(), size=(hp, wp), mode="bilinear", align_corners=False)
        fitted = (up[0, 0, :h, :w] > 0).cpu().numpy()
        sy, sx = g.scale
        x0, y0 = max(0, math.floor(box[0] * sx)), max(0, math.floor(box[1] * sy))
        x1, y1 = min(w, math.ceil(box[2] * sx)), min(h, math.ceil(box[3] * sy))
        if x1 <= x0 or y1 <= y0:
            return res
        cbox = (x0, y0, x1, y1)
        inside = np.zeros_like(fitted)
        inside[y0:y1, x0:x1] = True
        fitted &= inside
        cut = grabcut_box_mask(self._resized_image(), fitted, cbox)
        chosen = fitted if cut is None or box_fit_iou(cut, cbox) <= box_fit_iou(fitted, cbox) else cut
        refined = self._box_refined(chosen, inside)
        if refined is not None:
            self._set_hard_mask(c, refined)
        elif chosen is cut:
            self._set_hard_mask(c, cut)
        return res

    def _box_refined(self, mask: np.ndarray, inside: np.ndarray) -> np.ndarray | None:
        """A box's mask (bool ``[h, w]``, the resized image) corrected by the click refiner, read like a stroke: the
        mask's inside (``BOX_CLICK_MARGIN`` canvas pixels in from its edge) as positive clicks ``stroke_clicks``
        apart (``seem.prompts.spaced_pixels``), the mask itself as the refiner's start; cut to ``inside`` (the
        box). None without a refiner, with ``refine_clicks=False`` or ``stroke_clicks = 0``, or when the mask has no
        inside that deep."""
        st = self._require()
        spacing = self._stroke_spacing()
        if self.model.refiner is None or not self.refine_clicks or st.canvas is None or not spacing:
            return None
        pos = mask_core_clicks(mask, BOX_CLICK_MARGIN, spacing)
        if not len(pos):
            return None
        h, w = st.geometry.resized_size
        start = F.avg_pool2d(self._hard_logits(mask)[None, None], 4)[0, 0]
        out = self._refine_canvas(start, (pos, np.ones(len(pos), np.int64)), None)
        return (out[:h, :w] > 0).cpu().numpy() & inside

    def _polygon_grabcut(self, res: _ObjectResult, p: _Prepared) -> _ObjectResult:
        """``polygon_rule == "grabcut"``: a prompt of positive polygons only gets the filled polygons (as the model
        read them, ``seem.prompts.rasterize``) with their edges snapped to the image's by OpenCV's GrabCut on the
        resized image, moved by at most ``polygon_band`` canvas pixels (``seem.models.grabcut.grabcut_polygon_mask``),
        instead of the decoder's mask; the filled polygons themselves when GrabCut has nothing to cut. Other rules
        and prompts: ``res`` unchanged."""
        inf = self.model.config.inference
        rule, band = inf.polygon_rule, inf.polygon_band
        if rule not in POLYGON_RULES:
            allowed = ", ".join(POLYGON_RULES)
            raise ValueError(f"model config inference.polygon_rule must be one of {allowed}, got {rule!r}")
        if isinstance(band, bool) or not isinstance(band, int) or band < 1:
            raise ValueError(f"model config inference.polygon_band must be an int >= 1 (canvas pixels), got {band!r}")
        ps = p.prompts
        if rule != "grabcut" or p.kind != "visual" or not ps.polygons:
            return res
        if ps.points is not None or ps.boxes or ps.scribbles or ps.masks or not all(q.label for q in ps.polygons):
            return res
        st = self._require()
        g = st.geometry
        h, w = g.resized_size
        filled = rasterize(PromptSet(polygons=ps.polygons), g).pos[:h, :w]
        cut = grabcut_polygon_mask(self._resized_image(), filled, band)
        self._set_hard_mask(res.candidates[0], filled if cut is None or not cut.any() else cut)
        return res

    def _hard_logits(self, mask: np.ndarray) -> Tensor:
        """Bool ``mask [h, w]`` (the resized image) as logits ``[Hp, Wp]`` on the padded canvas: ±``GRABCUT_LOGIT``."""
        return hard_mask_logits(mask, self._require().geometry.padded_size).to(self.device)

    def _set_hard_mask(self, c: _Candidate, mask: np.ndarray) -> None:
        """Make bool ``mask [h, w]`` (the resized image) ``c``'s result: ``canvas_logits`` ±``GRABCUT_LOGIT`` on the
        padded canvas, ``logits4`` (the next round's memory) their stride-4 average."""
        c.canvas_logits = self._hard_logits(mask)
        c.logits4 = F.avg_pool2d(c.canvas_logits[None, None], 4)[0, 0].to(c.logits4.dtype)

    def _refiner_clicks(self, p: _Prepared) -> tuple[np.ndarray, np.ndarray] | None:
        """What the click refiner reads of ``p``: (canvas pixels int64 ``[N, 2]`` (x, y), labels int64 ``[N]``, 1
        positive / 0 negative), or None when it does not correct ``p``. A click prompt (``_refines``): its clicks. With
        ``InferenceConfig.stroke_clicks > 0``, a visual prompt of strokes, scribbles and masks (and polygons with
        them; no clicks, no box): the pixels of its drawn prompts at least that many canvas pixels apart
        (``seem.prompts.spaced_pixels``: positive ones first), when it has a positive one."""
        st = self._require()
        ps = p.prompts
        if ps.points is not None:
            if not self._refines(p):
                return None
            return st.geometry.canvas_pixels(ps.points.coords), np.asarray(ps.points.labels, dtype=np.int64)
        spacing = self._stroke_spacing()
        if not spacing or not self.refine_clicks or st.canvas is None or p.kind != "visual":
            return None
        if ps.boxes or not (ps.scribbles or ps.masks):
            return None
        drawn = rasterize(PromptSet(scribbles=ps.scribbles, polygons=ps.polygons, masks=ps.masks), st.geometry)
        pos, neg = spaced_pixels(drawn.pos, spacing), spaced_pixels(drawn.neg, spacing)
        if not len(pos):
            return None
        labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
        return np.concatenate([pos, neg]), labels

    def _refines(self, p: _Prepared) -> bool:
        """Whether the click refiner corrects the selected mask of ``p`` (a visual prompt with points, a model
        with a refiner, ``refine_clicks`` on)."""
        st = self._require()
        return self.refine_clicks and st.canvas is not None and p.prompts.points is not None and p.kind == "visual"

    def _refined_call_layers(self, preps: Sequence[_Prepared], refine: bool, k: int) -> int | None:
        """Decoder layers of one decoder call for the prompts ``preps``: ``click_decoder_layers`` when one mask is
        asked for and the click refiner corrects every prompt of the call (an early exit serves all or none), else
        None (every layer)."""
        if refine and k == 1 and all(self._refines(p) for p in preps):
            return self._click_decoder_layers()
        return None

    def _click_decoder_layers(self) -> int | None:
        """``InferenceConfig.click_decoder_layers`` of the model, checked against its decoder's layers."""
        n = self.model.config.inference.click_decoder_layers
        total = self.model.config.decoder.num_layers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= total):
            raise ValueError(
                f"model config inference.click_decoder_layers must be None or an int in [0, {total}], got {n!r}"
            )
        return n

    def _box_fit(self, logits4: Tensor, box: tuple[float, float, float, float]) -> tuple[Tensor, Tensor]:
        """``box_rule == "fit"``: ``(box IoU [Q], logits [Q, H4, W4] set to CLIPPED_LOGIT outside the box)`` for
        stride-4 canvas logits of ``Q`` masks and an XYXY box in original pixels (cells the box touches are kept)."""
        g = self._require().geometry
        sy, sx = g.scale
        x0, y0 = math.floor(box[0] * sx / 4), math.floor(box[1] * sy / 4)
        x1, y1 = math.ceil(box[2] * sx / 4), math.ceil(box[3] * sy / 4)
        h4, w4 = logits4.shape[-2:]
        inside = torch.zeros(h4, w4, dtype=torch.bool, device=logits4.device)
        inside[y0:y1, x0:x1] = True
        from seem.automatic import batched_mask_to_box

        fg = logits4 > 0
        m = batched_mask_to_box(fg).double()  # inclusive max indices
        m[:, 2:] += 1
        iw = (m[:, 2].clamp(max=x1) - m[:, 0].clamp(min=x0)).clamp(min=0)
        ih = (m[:, 3].clamp(max=y1) - m[:, 1].clamp(min=y0)).clamp(min=0)
        union = (m[:, 2] - m[:, 0]) * (m[:, 3] - m[:, 1]) + (x1 - x0) * (y1 - y0) - iw * ih
        ious = torch.where(fg.flatten(1).any(1), iw * ih / union, torch.zeros_like(union))
        clipped = torch.where(inside, logits4, torch.full_like(logits4, CLIPPED_LOGIT))
        return ious, clipped

    def _spatial_result(
        self,
        out: DecoderOutput,
        j: int,
        n: int,
        kind: Kind,
        k: int,
        box: tuple[float, float, float, float] | None = None,
    ) -> _ObjectResult:
        sel = out.spatial_selection
        sp = out.final.spatial
        if sel is None or sp is None:  # pragma: no cover - model contract
            raise RuntimeError("the decoder returned no spatial selection")
        per = sp.mask_embeddings.shape[1] // n
        rows = torch.arange(j * per, (j + 1) * per)
        scores = sel.scores[rows, j]
        chosen = int(sel.query_index[j]) - j * per
        if box is not None:  # box_rule "fit": every query's mask, ranked by how well it fills the box
            fit, clipped = self._box_fit(sp.mask_logits_of(0, rows), box)
            order = sorted(range(per), key=lambda r: (-float(fit[r]), -float(scores[r])))[:k]
            cands = [
                _Candidate(
                    logits4=clipped[r],
                    score=float(scores[r]),
                    class_logits=None if sp.class_logits is None else sp.class_logits[0, j * per + r],
                )
                for r in order
            ]
            return _ObjectResult(kind, "bilinear", cands, clip_box=box)
        ranked = self._ranked(scores, chosen, k)
        logits = self._candidate_logits(sp, [j * per + r for r in ranked], sel.prev_mask[j])
        cands = [
            _Candidate(
                logits4=lg,
                score=float(scores[r]),
                class_logits=None if sp.class_logits is None else sp.class_logits[0, j * per + r],
            )
            for r, lg in zip(ranked, logits, strict=True)
        ]
        return _ObjectResult(kind, "bicubic" if kind == "reference" else "bilinear", cands)

    def _grounding_result(self, out: DecoderOutput, j: int, k: int) -> _ObjectResult:
        sel = out.grounding_selection
        gr = out.final.grounding
        if sel is None or gr is None:  # pragma: no cover - model contract
            raise RuntimeError("the decoder returned no grounding selection")
        scores = sel.scores[:, j]
        ranked = self._ranked(scores, int(sel.query_index[j]), k)
        logits = self._candidate_logits(gr, ranked, sel.mask_logits[j])
        cands = [
            _Candidate(
                logits4=lg,
                score=float(scores[q]),
                class_logits=None if gr.class_logits is None else gr.class_logits[0, q],
            )
            for q, lg in zip(ranked, logits, strict=True)
        ]
        return _ObjectResult("text", "grounding", cands)

    def _demo_result(self, out: DecoderOutput, k: int) -> _ObjectResult:
        ds = out.demo_selection
        obj = out.final.object
        if ds is None or obj is None:  # pragma: no cover - model contract
            raise RuntimeError("the decoder returned no demo selection")
        ranked = self._ranked(ds.scores, ds.query_index, k)
        logits = self._candidate_logits(obj, ranked, ds.mask_logits)
        cands = [
            _Candidate(
                logits4=lg,
                score=float(ds.scores[q]),
                class_logits=None if obj.class_logits is None else obj.class_logits[0, q],
            )
            for q, lg in zip(ranked, logits, strict=True)
        ]
        kind: Kind = {"stroke": "visual", "example": "reference", "text": "text"}[ds.source]  # type: ignore[assignment]
        return _ObjectResult(kind, "bilinear", cands)

    # ------------------------------------------------------------------ post-processing

    def _to_original(self, logits4: Tensor, rule: Rule, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        """``[C, H4, W4]`` → (bool masks ``[C, H, W]``, float logits ``[C, H, W]`` if wanted), official rules."""
        g = self._require().geometry
        x = logits4.float()
        if rule == "grounding":
            logits = sem_seg_postprocess(x, g.padded_size, g.resized_size, g.original_size)
            return logits > 0, logits if want_logits else None
        mode = "bicubic" if rule == "bicubic" else "bilinear"
        up = upsample_to_padded(x, g.padded_size, mode=mode)
        logits = crop_and_resize(up, g.resized_size, g.original_size, mode=mode, antialias=False)
        return logits.sigmoid() > 0.5, logits if want_logits else None

    def _candidate_maps(self, res: _ObjectResult, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        """The candidates of ``res`` at the original size: (bool masks ``[C, H, W]``, float logits if wanted), each
        from its click-refined canvas logits if it has them, else from its stride-4 logits (official rules)."""
        g = self._require().geometry
        masks, logits = [], []
        for c in res.candidates:
            lo: Tensor | None
            if c.canvas_logits is not None:
                lo = crop_and_resize(c.canvas_logits[None].float(), g.resized_size, g.original_size, "bilinear", False)
                m = lo > 0
            else:
                m, lo = self._to_original(c.logits4[None], res.rule, want_logits)
            masks.append(self._clip(m, res.clip_box, False))
            if want_logits and lo is not None:
                logits.append(self._clip(lo, res.clip_box, CLIPPED_LOGIT))
        return torch.cat(masks), torch.cat(logits) if want_logits else None

    def _clip(self, maps: Tensor, box: tuple[float, float, float, float] | None, fill: float | bool) -> Tensor:
        """``maps [C, H, W]`` at the original size with every pixel outside ``box`` (XYXY edges) set to ``fill``."""
        if box is None:
            return maps
        h, w = maps.shape[-2:]
        x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
        out = torch.full_like(maps, fill)
        out[..., y0:y1, x0:x1] = maps[..., y0:y1, x0:x1]
        return out

    def _to_segment(self, res: _ObjectResult, vocab: Vocabulary | None) -> Segment:
        c = res.candidates[0]
        masks, _ = self._candidate_maps(_ObjectResult(res.kind, res.rule, [c], res.clip_box), False)
        seg = Segment(
            mask=masks[0].cpu().numpy(),
            score=c.score,
            low_res_logits=c.logits4.float().cpu().numpy(),
            source=res.kind,
        )
        if vocab is not None and c.class_logits is not None:
            probs = torch.softmax(c.class_logits.float(), dim=-1)
            idx = int(probs.argmax())
            seg.label_id, seg.label, seg.label_score = idx, vocab.label(idx), float(probs[idx])
            if idx < len(vocab.names):
                seg.category_id = vocab.category_ids[idx]
                seg.isthing = idx not in vocab.stuff
        return seg

    # ------------------------------------------------------------------ public prompting API

    @torch.no_grad()
    def segment(
        self,
        prompts: PromptSet | Sequence[PromptSet],
        *,
        joint: bool = False,
        labels: bool = True,
        memory: Sequence[Any] | None = None,
        draws: DecoderDraws | Sequence[DecoderDraws | None] | None = None,
    ) -> list[Segment]:
        """One ``Segment`` per object (a ``PromptSet`` each), at the original image size.

        Args:
            prompts: one ``PromptSet`` or a list of them (several objects per call).
            joint: decode every visual / text object of a v1 model in one call (official multi-prompt evaluation;
                see the module docstring). Default: one decoder call per object (batch = one by one).
            labels: label each mask from the vocabulary (encodes the default COCO vocabulary on first use).
            memory: per object, the previous round's ``low_res_logits`` (v1 memory prompt, official from round 2
                of an interaction) or None.
            draws: explicit random choices: per object (``joint=False``; one ``DecoderDraws`` is accepted for a
                single object) or one for the joint call.

        Returns:
            ``[Segment]`` in the order of ``prompts``; ``Segment.low_res_logits`` is the chosen stride-4 logits.
        """
        results, vocab = self._run(
            [prompts] if isinstance(prompts, PromptSet) else prompts, memory, draws, joint, labels, 1
        )
        return [self._to_segment(r, vocab) for r in results]

    def segment_text(self, phrases: str | Sequence[str], *, joint: bool = True, labels: bool = True) -> list[Segment]:
        """Referring text: one ``Segment`` per phrase. ``joint=True`` (default) encodes all phrases as one token
        group, as the official referring evaluation does."""
        items = [phrases] if isinstance(phrases, str) else list(phrases)
        return self.segment([PromptSet(text=p) for p in items], joint=joint, labels=labels)

    def segment_like(
        self, reference_image: ImageInput, reference_prompts: PromptSet, *, labels: bool = True
    ) -> Segment:
        """Referring image: segment in the current image what ``reference_prompts`` mark on ``reference_image``."""
        ref = ReferenceImage(reference_image, reference_prompts)
        return self.segment(PromptSet(reference=ref), labels=labels)[0]

    @torch.no_grad()
    def segment_levels(self, prompts: PromptSet, *, labels: bool = True, memory: Any = None) -> list[Segment]:
        """Every mask the model gives one visual prompt, ordered from the largest region to the smallest.

        A SEEM v1 model answers each visual prompt with ``queries_per_prompt`` spatial queries and ``segment``
        returns the one the model selects. For the default model those queries are granularity levels (trained on
        nested regions: part → object → group), so this lists the same click at every granularity: index 0 is the
        coarsest region, the last the finest part (``Segment.score`` is each query's selection score; the
        selected one has the highest). Official SEEM checkpoints give their 3 queries.

        Args:
            prompts: one visual ``PromptSet`` (points, box, scribble, polygon or mask; no text / reference).
            labels: label each mask from the vocabulary.
            memory: the previous round's ``low_res_logits`` (memory prompt) or None.

        Returns:
            ``queries_per_prompt`` segments, by decreasing mask area (ties: by score).
        """
        if self.variant != "v1":
            raise PromptError("segment_levels needs a v1 model (the demo decoder has no per-prompt queries)")
        if not isinstance(prompts, PromptSet):
            raise PromptTypeError("segment_levels takes one PromptSet")
        if prompts.text is not None or prompts.reference is not None:
            raise PromptError("segment_levels takes visual prompts only (points, box, scribble, polygon, mask)")
        k = self.model.config.decoder.queries_per_prompt
        results, vocab = self._run([prompts], [memory], None, False, labels, k, refine=False)
        res = results[0]
        segs = [self._to_segment(_ObjectResult(res.kind, res.rule, [c]), vocab) for c in res.candidates]
        order = sorted(range(len(segs)), key=lambda i: (-int(segs[i].mask.sum()), -segs[i].score))
        return [segs[i] for i in order]

    @torch.no_grad()
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        draws: DecoderDraws | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SAM's ``SamPredictor.predict``, with SAM's argument names and shapes.

        Args:
            point_coords: ``[N, 2]`` (x, y) pixels of the original image, or None.
            point_labels: ``[N]``: 1 positive, 0 negative.
            box: ``[4]`` or ``[1, 4]`` XYXY pixels (edges; see ``seem.prompts``).
            mask_input: ``[1, H4, W4]`` low-res logits from a previous call on this image (its ``low_res_logits``
                row): used as SEEM's **memory prompt** (v1), which is what a second interaction round feeds.
                SEEM's low-res grid is the padded canvas at stride 4 (e.g. 128 × 192 for a 400 × 600 photo), not
                SAM's 256 × 256.
            multimask_output: return 3 candidates instead of 1. SEEM v1 gives every prompt 3 spatial queries; the
                candidates are those 3 masks, sorted by the official selection score (the first is the mask the
                official rule selects, which is also the single output). Demo models: the 3 object queries with the
                highest selection scores.
            return_logits: return float logits at the original size instead of bool masks (``mask = logits > 0``).

        Returns:
            ``(masks [C, H, W] bool or float32, scores float32 [C], low_res_logits float32 [C, H4, W4])``, ``C`` = 3
            or 1. Scores are the official selection scores (higher is better; not IoU estimates).
        """
        prompts = PromptSet.from_sam(point_coords, point_labels, box)
        if prompts.is_empty:
            raise PromptError("predict needs point_coords (with point_labels) and/or box")
        k = 3 if multimask_output else 1
        results, _ = self._run([prompts], [mask_input], draws, False, False, k)
        res = results[0]
        stack = torch.stack([c.logits4 for c in res.candidates])
        masks, logits = self._candidate_maps(res, return_logits)
        out = logits if return_logits else masks
        assert out is not None
        scores = np.array([c.score for c in res.candidates], dtype=np.float32)
        return out.cpu().numpy(), scores, stack.float().cpu().numpy()

    # ------------------------------------------------------------------ image-level tasks

    def _object_outputs(self, vocab: Vocabulary) -> tuple[Tensor, Tensor]:
        """``(class logits [Q, K+1], stride-4 mask logits [Q, H4, W4])`` of the object queries (no prompt)."""
        st = self._require()
        c = self._object_cache
        if c is not None and c[0] == st.token and c[1] == vocab.names:
            return c[2], c[3]
        out = self._decode(self._inputs(vocab, None))
        obj = out.final.object
        if obj is None or obj.class_logits is None:  # pragma: no cover - model contract
            raise RuntimeError("the decoder returned no object-query predictions")
        cls, masks = obj.class_logits[0].float(), obj.mask_logits[0].float()
        self._object_cache = (st.token, vocab.names, cls, masks)
        return cls, masks

    def _mask_pred(self, logits4: Tensor) -> Tensor:
        g = self._require().geometry
        return sem_seg_postprocess(logits4, g.padded_size, g.resized_size, g.original_size)

    @torch.no_grad()
    def panoptic(
        self,
        class_names: Sequence[str] | None = None,
        *,
        stuff_classes: Sequence[str] | None = None,
        object_mask_threshold: float | None = None,
        overlap_threshold: float | None = None,
    ) -> PanopticSegmentation:
        """Panoptic segmentation of the current image (official Mask2Former rules, ``seem.models.postprocess``).

        Args:
            class_names: vocabulary (default: the current one, COCO-panoptic unless ``set_vocabulary`` was called).
            stuff_classes: which ``class_names`` are stuff (default: none, or COCO's for the COCO names).
            object_mask_threshold: keep queries whose class probability exceeds this (default: the model config's,
                0.8 for v1, 0.4 for demo models).
            overlap_threshold: drop a query whose visible part is below this fraction of its mask (default 0.8).
        """
        vocab = self._vocab_for(class_names, stuff_classes)
        cfg = self.model.config.inference
        thr = cfg.object_mask_threshold if object_mask_threshold is None else float(object_mask_threshold)
        ovl = cfg.overlap_threshold if overlap_threshold is None else float(overlap_threshold)
        cls, logits4 = self._object_outputs(vocab)
        r = panoptic_segmentation(cls, self._mask_pred(logits4), vocab.thing_ids, thr, ovl)
        pan = r.panoptic_seg.cpu().numpy().astype(np.int32)
        scores: dict[int, float] = {}
        for d in r.decisions:
            if d.accepted and d.segment_id not in scores:
                scores[d.segment_id] = d.score
        segs = []
        for info in r.segments_info:
            sid, c = int(info["id"]), int(info["category_id"])
            segs.append(
                Segment(
                    mask=pan == sid,
                    score=scores.get(sid, 0.0),
                    label=vocab.names[c],
                    label_id=c,
                    source="panoptic",
                    id=sid,
                    category_id=vocab.category_ids[c],
                    isthing=bool(info["isthing"]),
                )
            )
        return PanopticSegmentation(panoptic_seg=pan, segments=segs, categories=vocab.categories())

    @torch.no_grad()
    def instances(
        self,
        class_names: Sequence[str] | None = None,
        *,
        stuff_classes: Sequence[str] | None = None,
        max_detections: int | None = None,
        score_threshold: float = 0.0,
        things_only: bool = True,
    ) -> list[Segment]:
        """Instance segmentation (official rules): top ``max_detections`` (query, class) pairs, masks ``logit > 0``,
        score = class probability × mean mask probability; sorted by score, those ``> score_threshold`` kept.

        ``things_only``: drop stuff classes (official behaviour when panoptic is on). Boxes come from the masks.
        """
        vocab = self._vocab_for(class_names, stuff_classes)
        cls, logits4 = self._object_outputs(vocab)
        q, k1 = cls.shape
        det = self.model.config.inference.detections_per_image if max_detections is None else int(max_detections)
        det = max(1, min(det, q * (k1 - 1)))
        ip = instance_inference(cls, self._mask_pred(logits4), det, vocab.thing_ids if things_only else None)
        out: list[Segment] = []
        for i in range(len(ip)):
            s = float(ip.scores[i])
            if s <= score_threshold:
                continue
            c = int(ip.classes[i])
            out.append(
                Segment(
                    mask=ip.masks[i].cpu().numpy(),
                    score=s,
                    label=vocab.names[c],
                    label_id=c,
                    source="instance",
                    id=len(out) + 1,
                    category_id=vocab.category_ids[c],
                    isthing=c not in vocab.stuff,
                )
            )
        return out

    @torch.no_grad()
    def semantic(
        self, class_names: Sequence[str] | None = None, *, return_scores: bool = False
    ) -> SemanticSegmentation:
        """Semantic segmentation: per-pixel argmax of the official ``sem_seg`` scores ``[K, H, W]``."""
        vocab = self._vocab_for(class_names, None)
        cls, logits4 = self._object_outputs(vocab)
        sem = semantic_inference(cls, self._mask_pred(logits4))
        label_map = sem.argmax(0).to(torch.int32).cpu().numpy()
        return SemanticSegmentation(
            label_map=label_map,
            class_names=list(vocab.names),
            scores=sem.cpu().numpy().astype(np.float32) if return_scores else None,
        )


# --------------------------------------------------------------------------------------------------------
# helpers


def _image_key(image: np.ndarray) -> str:
    """Cache key of an image: SHA-1 of its pixels plus its shape."""
    return hashlib.sha1(np.ascontiguousarray(image).data).hexdigest() + f"{image.shape}"


def _opt_names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError("stuff_classes must be a list of class names (str)")
    return tuple(n.strip() for n in names)


def _bool_tensor(a: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _need(x: Any) -> Any:
    assert x is not None
    return x


def _per_object_draws(draws: DecoderDraws | Sequence[DecoderDraws | None] | None, n: int) -> list[DecoderDraws | None]:
    if draws is None:
        return [None] * n
    if isinstance(draws, DecoderDraws):
        if n != 1:
            raise TypeError(f"one DecoderDraws was given for {n} objects decoded separately; pass a list of {n}")
        return [draws]
    if not isinstance(draws, Sequence) or len(draws) != n:
        raise TypeError(f"draws must be None, a DecoderDraws (one object) or a list of {n} (one per object)")
    for d in draws:
        if d is not None and not isinstance(d, DecoderDraws):
            raise TypeError(f"draws items must be DecoderDraws or None, got {type(d).__name__}")
    return list(draws)
