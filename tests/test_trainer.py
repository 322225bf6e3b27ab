"""The trainer: run configs, optimizer / schedule / freezing, corrective rounds, a tiny SEEM that learns GrabCut objects
(interactive IoU measured with the evaluation module before / after), bit-identical resume, Semantic-SAM's
many-to-many recipe on real BSDS500 data, and the ``seem train`` / ``seem finetune`` commands."""

from __future__ import annotations

import copy
import glob
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, REPO, require

from seem.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    tiny_seem_config,
)
from seem.train.data import collate
from seem.train.distributed import ShardedSampler
from seem.train.optim import WarmupMultiStepSchedule, build_optimizer, freeze_modules
from seem.train.trainer import Trainer, evaluate_model, latest_checkpoint

GRABCUT = DATA_DIR / "grabcut"
BSDS = DATA_DIR / "bsds500"


def seem_run(out: Path, **over: Any) -> dict[str, Any]:
    """A tiny SEEM run on 4 GrabCut images (the overfit setting of ``configs/tiny_grabcut.yaml``)."""
    d: dict[str, Any] = {
        "name": "test",
        "output_dir": str(out),
        "seed": 0,
        "freeze": [],
        "model": {"family": "seem", "config": "tiny"},
        "data": {
            "sources": [{"type": "grabcut", "root": str(GRABCUT), "limit": 4}],
            "image_size": 192,
            "min_scale": 1.0,
            "max_scale": 1.0,
            "batch_size": 2,
        },
        "prompts": {"max_iter": 3},
        "tasks": {"object": True, "grounding": False, "spatial": True},
        "losses": {"num_points": 1024},
        "solver": {"lr": 1e-3},
        "schedule": {"max_steps": 4},
        "eval": {"data": None, "limit": 4, "max_clicks": 3, "short_side": 128, "at_end": False},
        "logging": {"log_every": 1, "checkpoint_every": 0, "progress": False},
    }
    for k, v in over.items():
        apply_overrides(d, [f"{k}={v}"])
    return d


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------


def test_every_shipped_run_config_parses_and_round_trips():
    files = sorted(glob.glob(str(REPO / "configs" / "*.yaml")))
    assert len(files) >= 4
    for f in files:
        cfg = load_config(f)
        again = config_from_dict(copy.deepcopy(config_to_dict(cfg)))
        assert again == cfg, f
        cfg.finalize()
        cfg.validate()
        assert cfg.losses.weights and cfg.solver.clip_grad_norm is not None
    seem = load_config(REPO / "configs" / "finetune_folder.yaml").finalize()
    assert seem.freeze == ["backbone", "text_encoder", "pixel_decoder"]  # official FIX_PARAM
    assert seem.solver.clip_grad_norm == 5.0 and seem.losses.weights["loss_mask_ce"] == 2.0
    ssam = load_config(REPO / "configs" / "semantic_sam_swint_sa1b.yaml").finalize()
    assert ssam.freeze == [] and ssam.solver.clip_grad_norm == 0.01 and ssam.losses.weights["loss_giou"] == 2.0


def test_config_errors_name_the_key_and_overrides_apply(tmp_path):
    d = seem_run(tmp_path)
    d["data"]["sources"][0]["limt"] = 3  # a source's extra keys are adapter options, checked when built
    d["solver"]["lrr"] = 1.0
    with pytest.raises(ValueError, match=r"solver\.lrr"):
        config_from_dict(d)
    with pytest.raises(ValueError, match="precision"):
        config_from_dict({**seem_run(tmp_path), "precision": "fp8"})
    with pytest.raises(ValueError, match=r"data\.batch_size: expected an integer"):
        config_from_dict(apply_overrides(seem_run(tmp_path), ["data.batch_size=two"]))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides({}, ["solver.lr"])
    cfg = config_from_dict(apply_overrides(seem_run(tmp_path), ["solver.lr=3e-5", "data.sources.0.limit=2"]))
    assert cfg.solver.lr == 3e-5 and cfg.data.sources[0].limit == 2
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig(losses=config_from_dict({"losses": {"weights": {"loss_nope": 1.0}}}).losses).finalize()


# ---------------------------------------------------------------------------------------------------------------
# optimizer, schedule, freezing, sampler
# ---------------------------------------------------------------------------------------------------------------


def test_official_schedule_shape():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1e-4}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-5}])
    s = WarmupMultiStepSchedule(opt, 1000, (0.88889, 0.96296), 0.1, warmup_steps=10, warmup_factor=0.001)
    assert s.milestones == [888, 962]
    assert s.factor(0) == pytest.approx(0.001)
    assert s.factor(5) == pytest.approx(0.001 * 0.5 + 0.5)
    assert s.factor(10) == 1.0 and s.factor(887) == 1.0
    assert s.factor(888) == pytest.approx(0.1) and s.factor(962) == pytest.approx(0.01)
    for _ in range(888):
        s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-6])
    s2 = WarmupMultiStepSchedule(opt, 1000, (0.88889, 0.96296), 0.1, 10, 0.001)
    s2.load_state_dict(s.state_dict())
    assert s2.last_step == 888 and opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    # official WARMUP_FACTOR 1.0: no warmup in effect
    assert WarmupMultiStepSchedule(opt, 100, (0.5,), warmup_factor=1.0).factor(0) == 1.0


def test_param_groups_multipliers_no_decay_and_freezing():
    from seem.models.seem_model import SEEMModel

    torch.manual_seed(0)
    model = SEEMModel(tiny_seem_config()).train()
    frozen = freeze_modules(model, ["text_encoder"])
    assert frozen and all(n.startswith("text_encoder.") for n in frozen)
    assert not model.text_encoder.training and model.decoder.training  # frozen parts run in eval mode
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.05, lr_multipliers={"backbone": 0.1})
    by_name = {n: g for g in opt.param_groups for n in g["names"]}
    assert not any(n.startswith("text_encoder.") for n in by_name)
    assert len(by_name) == sum(1 for _, p in model.named_parameters() if p.requires_grad)
    assert by_name["backbone.patch_embed.proj.weight"]["lr"] == pytest.approx(1e-5)
    assert by_name["decoder.query_feat.weight"]["weight_decay"] == 0.0  # embedding
    assert by_name["decoder.decoder_norm.weight"]["weight_decay"] == 0.0  # LayerNorm
    assert by_name["backbone.patch_embed.norm.weight"]["lr"] == pytest.approx(1e-5)
    assert by_name["backbone.patch_embed.norm.weight"]["weight_decay"] == 0.0
    assert by_name["decoder.mask_embed.layers.0.weight"] is by_name["decoder.class_embed"]
    assert by_name["decoder.mask_embed.layers.0.weight"]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="names no parameter"):
        freeze_modules(model, ["backbon"])


def test_sharded_sampler_splits_epochs_and_resumes():
    a = ShardedSampler(7, num_replicas=2, rank=0, seed=3)
    b = ShardedSampler(7, num_replicas=2, rank=1, seed=3)
    ia, ib = a.epoch_indices(), b.epoch_indices()
    assert len(ia) == len(ib) == 4 and set(ia) | set(ib) == set(range(7))
    assert len(set(ia) & set(ib)) == 1  # one index repeated to pad 7 to 8
    assert a.epoch_indices(1) != ia  # reshuffled each epoch
    a.set_start(2)
    assert list(a) == ia[2:] and len(a) == 2


# ---------------------------------------------------------------------------------------------------------------
# iterative interactive training
# ---------------------------------------------------------------------------------------------------------------


def test_corrective_rounds_add_clicks_and_pass_memory():
    require(GRABCUT, "GrabCut data")
    from seem.models.seem_model import SEEMModel
    from seem.models.seem_types import DecoderInputs, ImageFeatures
    from seem.train.data import LargeScaleJitter, LSJConfig, TrainDataset
    from seem.train.datasets import FolderSource
    from seem.train.iterative import random_decoder_draws, run_corrective_rounds
    from seem.train.simulate import ShapeSampler

    torch.manual_seed(0)
    model = SEEMModel(tiny_seem_config()).train()
    ds = TrainDataset(FolderSource(GRABCUT, masks="gt", void_value=128), LargeScaleJitter(LSJConfig(image_size=160)))
    batch = collate([ds[0]], pad_to=160)
    with torch.no_grad():
        pix = model.pixel_decoder(model.backbone(batch.normalized(model.config.pixel_mean, model.config.pixel_std)))
    feats = ImageFeatures(pix.multi_scale_features, pix.mask_features, batch.canvas_size)
    prompts = ShapeSampler()(batch.samples[0].masks, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(0)
    calls: list[DecoderInputs] = []

    def decode(inputs: DecoderInputs) -> Any:
        calls.append(inputs)
        return model.decode(inputs)

    def draws(sp: Any, mem: bool) -> Any:
        return random_decoder_draws(model.config.decoder, sp, with_memory=mem, generator=gen)

    out = run_corrective_rounds(decode, feats, prompts, 3, draws=draws)
    assert out.rounds == 3 and len(calls) == 3
    assert calls[0].prev_mask is None and calls[1].prev_mask is not None  # the previous mask becomes memory
    assert calls[2].draws is not None and calls[2].draws.memory_slots is not None
    assert all(c.object_queries is False for c in calls)
    assert out.prev_mask is not None and tuple(out.prev_mask.shape) == (len(prompts), 40, 40)
    n_clicks = [len(c) for c in out.prompts.clicks]
    assert max(n_clicks) >= 1 and all(n <= 3 for n in n_clicks)
    added = out.prompts.pos_masks | out.prompts.neg_masks
    assert bool((added & ~(prompts.pos_masks | prompts.neg_masks)).any())
    # the drawn choices are valid decoder draws and reproducible from the generator seed
    sp = out.prompts.spatial_prompts()
    d1 = random_decoder_draws(model.config.decoder, sp, with_memory=True, generator=torch.Generator().manual_seed(5))
    d2 = random_decoder_draws(model.config.decoder, sp, with_memory=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(d1.spatial_query_indices, d2.spatial_query_indices)
    assert int(d1.spatial_query_indices.max()) < model.config.decoder.num_queries
    with torch.no_grad():
        res = model.decode(DecoderInputs(feats, spatial=sp, prev_mask=out.prev_mask, object_queries=False, draws=d1))
    assert res.spatial_selection is not None


# ---------------------------------------------------------------------------------------------------------------
# learning, resume, Semantic-SAM
# ---------------------------------------------------------------------------------------------------------------


def test_tiny_seem_learns_grabcut_objects_interactive_iou_rises(tmp_path):
    require(GRABCUT, "GrabCut data")
    d = seem_run(tmp_path / "run", **{"schedule.max_steps": 16, "eval.data": str(GRABCUT)})
    trainer = Trainer(config_from_dict(d), log=quiet)
    before = evaluate_model(trainer.model, trainer.cfg)  # RITM clicks on the 4 training objects
    trainer.model.train()
    result = trainer.fit()
    after = evaluate_model(trainer.model, trainer.cfg)
    assert after["miou@1"] > before["miou@1"] + 0.15, (before, after)
    assert after["mean_iou_curve"] > before["mean_iou_curve"] + 0.15, (before, after)
    rows = trainer.metrics.rows()
    assert len(rows) == 16 and all(math.isfinite(float(r["loss"])) for r in rows)
    first, last = np.mean([float(r["loss"]) for r in rows[:4]]), np.mean([float(r["loss"]) for r in rows[-4:]])
    assert last < first
    assert float(rows[0]["loss_spatial_ce"]) > 0 and float(rows[0]["loss_mask_bce"]) > 0
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000
    assert result.final_dir is not None
    from seem import load

    again = load(result.final_dir)
    sd = trainer.model.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in again.state_dict().items())


def test_resume_continues_bit_identically(tmp_path):
    require(GRABCUT, "GrabCut data")
    full = Trainer(config_from_dict(seem_run(tmp_path / "full")), log=quiet)
    full.fit()
    cut = Trainer(config_from_dict(seem_run(tmp_path / "cut")), log=quiet)
    cut.fit(until=2)  # an interruption after step 2 (a checkpoint is written)
    ckpt = latest_checkpoint(tmp_path / "cut")
    assert ckpt is not None and ckpt.name == "step_0000002"
    assert {p.name for p in ckpt.iterdir()} == {"model", "trainer.pt", "rng_rank0.pt"}
    resumed = Trainer(config_from_dict(seem_run(tmp_path / "cut")), resume=True, log=quiet)
    assert resumed.step == 2
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    la = [r["loss"] for r in full.metrics.rows()]
    lb = [r["loss"] for r in resumed.metrics.rows()]
    assert la == lb and len(la) == 4  # the metrics log continues where the checkpoint left off


def test_semantic_sam_many_to_many_on_bsds_losses_finite_and_decrease(tmp_path):
    require(BSDS, "BSDS500 data")
    d = {
        "name": "ssam",
        "output_dir": str(tmp_path),
        "model": {"family": "semantic_sam", "config": "tiny"},
        "data": {
            "sources": [{"type": "bsds", "root": str(BSDS), "split": "train", "limit": 2}],
            "image_size": 128,
            "min_scale": 1.0,
            "max_scale": 1.0,
            "flip_prob": 0.0,
            "batch_size": 2,
        },
        "prompts": {"n_clicks": 8},
        "losses": {"num_points": 1024},
        "solver": {"lr": 1e-3},
        "schedule": {"max_steps": 8},
        "logging": {"log_every": 1, "checkpoint_every": 0, "progress": False},
    }
    trainer = Trainer(config_from_dict(d), log=quiet)
    assert trainer.cfg.freeze == [] and trainer.cfg.solver.clip_grad_norm == 0.01  # Semantic-SAM recipe
    batch = collate([trainer.dataset[i] for i in range(2)], pad_to=128)
    assert all(len(s.granularity_groups) > 0 for s in batch.samples)

    def fixed_loss() -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            total, losses, info = trainer.step_module(batch, trainer.context(10**6))
        assert info["targets"] > 8  # clicks with several nested BSDS targets
        return float(total), {k: float(v) for k, v in losses.items()}

    before, terms = fixed_loss()
    n_layers = trainer.model.cfg.decoder.num_layers
    for t in ("mask_bce", "mask_dice", "iou", "bbox", "giou"):
        assert all(f"loss_{t}_{j}" in terms for j in range(n_layers)), t  # deep supervision on every layer
    assert all(math.isfinite(v) for v in terms.values())
    trainer.fit()
    after, _ = fixed_loss()
    assert math.isfinite(after) and after < before - 1.0, (before, after)
    assert all(math.isfinite(float(r["loss"])) for r in trainer.metrics.rows())


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------


def test_cli_train_and_finetune(tmp_path, capsys):
    require(GRABCUT, "GrabCut data")
    import yaml
    from PIL import Image

    from seem.models.seem_model import SEEMModel
    from seem.train.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(seem_run(tmp_path / "run", **{"schedule.max_steps": 1})))
    assert main(["train", str(cfg), "--set", "schedule.max_steps=2", "--no-progress"]) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert len((tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()) == 3
    assert main(["train", str(cfg), "--resume", "--set", "schedule.max_steps=3", "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().out

    # a user folder: images/ + masks/ label maps (0 background, 1 object)
    data = tmp_path / "mydata"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for stem in ("21077", "65019"):
        Image.open(GRABCUT / "images" / f"{stem}.jpg").save(data / "images" / f"{stem}.jpg")
        gt = np.array(Image.open(GRABCUT / "gt" / f"{stem}.png"))
        Image.fromarray((gt == 255).astype(np.uint8)).save(data / "masks" / f"{stem}.png")
    torch.manual_seed(0)
    SEEMModel(tiny_seem_config()).save_pretrained(tmp_path / "tiny_model")
    out = tmp_path / "ft"
    args = ["finetune", "--data", str(data), "--from", str(tmp_path / "tiny_model"), "--steps", "2", "--out", str(out)]
    args += ["--image-size", "128", "--workers", "0", "--no-progress", "--set", "losses.num_points=512"]
    assert main(args) == 0
    written = load_config(out / "config.yaml")
    assert written.model.from_ == str(tmp_path / "tiny_model")
    assert written.freeze == ["backbone", "text_encoder", "pixel_decoder"]  # the official SEEM recipe
    assert written.prompts.max_iter == 5 and written.solver.lr == 1e-4 and written.schedule.max_steps == 2
    assert (out / "final" / "config.json").is_file()
    # frozen parts did not move
    start = SEEMModel.from_pretrained(tmp_path / "tiny_model").state_dict()
    tuned = SEEMModel.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(start[k], tuned[k]) for k in start if k.startswith(("backbone.", "pixel_decoder.")))
    assert not all(torch.equal(start[k], tuned[k]) for k in start if k.startswith("decoder."))

    assert main(["finetune", "--data", str(tmp_path / "nope"), "--from", str(tmp_path / "tiny_model")]) == 2
    assert "images/" in capsys.readouterr().err
