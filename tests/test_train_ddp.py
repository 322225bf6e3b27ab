"""Two-process data-parallel training on this CPU (gloo): both ranks take different images, average their gradients
and end with identical weights (``torch.multiprocessing`` spawns the ranks, as ``torchrun`` would)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import DATA_DIR, require

GRABCUT = DATA_DIR / "grabcut"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from seem.train.config import config_from_dict
    from seem.train.trainer import Trainer

    cfg = config_from_dict(
        {
            "name": "ddp",
            "output_dir": out,
            "device": "cpu",
            "freeze": [],
            "model": {"family": "seem", "config": "tiny"},
            "data": {
                "sources": [{"type": "grabcut", "root": str(GRABCUT), "limit": 4}],
                "image_size": 160,
                "min_scale": 1.0,
                "max_scale": 1.0,
                "batch_size": 1,
            },
            "prompts": {"max_iter": 2},
            "tasks": {"object": True, "grounding": False, "spatial": True},
            "losses": {"num_points": 512},
            "solver": {"lr": 1e-3},
            "schedule": {"max_steps": 3},
            "logging": {"log_every": 1, "checkpoint_every": 2, "progress": False},
        }
    )
    trainer = Trainer(cfg, log=lambda _: None)
    assert trainer.dist.world_size == world and trainer.dist.rank == rank
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    seen = trainer.sampler.epoch_indices(0)
    trainer.fit()
    torch.save(
        {"start": start, "end": trainer.model.state_dict(), "seen": seen, "ddp": trainer.ddp is not None},
        Path(out) / f"rank{rank}.pt",
    )
    trainer.close()


def test_two_process_gloo_ranks_end_with_identical_weights(tmp_path):
    require(GRABCUT, "GrabCut data")
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["ddp"] and r1["ddp"]
    assert set(r0["seen"]).isdisjoint(r1["seen"])  # each rank trains on its own shard
    assert all(torch.equal(r0["start"][k], r1["start"][k]) for k in r0["start"])
    assert all(torch.equal(r0["end"][k], r1["end"][k]) for k in r0["end"])  # gradients were averaged
    changed = [k for k in r0["end"] if not torch.equal(r0["end"][k], r0["start"][k])]
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("backbone.") for k in changed)
    # rank 0 alone logs and checkpoints; every rank stores its RNG state
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "final" / "model.safetensors").is_file()
    ckpt = tmp_path / "checkpoints" / "step_0000003"
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()


def test_more_processes_than_gpus_share_them_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 ranks on a node with 2 GPUs: rank r trains on cuda:(r mod 2) (no GPU is touched: only the mapping)."""
    from seem.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [resolve_device("auto", r) for r in range(4)] == [torch.device("cuda", i) for i in (0, 1, 0, 1)]
    assert resolve_device("cuda", 5) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", 5) == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu", 3) == torch.device("cpu")
