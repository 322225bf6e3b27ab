"""Single-process and ``torchrun`` multi-process training helpers (gloo on CPU, NCCL on CUDA, gloo for ranks that
share a GPU).

``torchrun --nproc_per_node N ...`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) makes ``init_distributed`` start a process group; without those variables
everything runs in one process and the collective helpers are no-ops.

``ShardedSampler`` is a resumable ``DistributedSampler``: epoch ``e``'s order is a seeded permutation (``seed +
e``), padded to a multiple of the world size by repeating its start, and rank ``r`` takes every ``world``-th index
from ``r``; ``set_start(k)`` skips the first ``k`` indices of the epoch (resuming mid-epoch).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "ShardedSampler",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "is_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` / ``world_size`` (global), ``local_rank`` (on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available, else ``mps`` when available, else ``cpu``; ``cuda``
    (no index) → ``cuda:LOCAL_RANK``; anything else as given. With more processes on a node than GPUs, ranks share
    them round-robin (``LOCAL_RANK mod device_count``): a small model whose steps are bound by Python and CPU-side
    prompt simulation trains several times faster with several processes per GPU."""
    if spec == "auto":
        if torch.cuda.is_available():  # several processes per GPU when there are more processes than GPUs
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return dev


def init_distributed(device: torch.device | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Start the process group from the launcher's environment (``WORLD_SIZE`` > 1); backend NCCL for CUDA
    devices with one process per GPU, gloo otherwise (CPU, or several processes sharing a GPU). Returns the
    ``DistInfo`` (rank 0 of 1 without a launcher)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world <= 1:
        return DistInfo(0, 1, 0)
    if is_distributed():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise RuntimeError("WORLD_SIZE > 1 but MASTER_ADDR / MASTER_PORT are not set; launch with torchrun")
    backend = "gloo"
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
        # NCCL refuses two ranks on one GPU; gloo reduces CUDA tensors too (all_reduce, broadcast: what DDP uses)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        backend = "nccl" if local_world <= torch.cuda.device_count() else "gloo"
    dist.init_process_group(
        backend=backend,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return DistInfo(rank, world, local)


def cleanup_distributed() -> None:
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is unchanged). Identity in a single process."""
    out = t.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy). Identity in a single process."""
    if not is_distributed():
        return t.detach().clone()
    return all_reduce_sum(t) / dist.get_world_size()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s Python object on every rank (identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class ShardedSampler(Sampler[int]):
    """Seeded, resumable, rank-sharded sampler (see the module docstring).

    Args:
        n: dataset length.
        num_replicas, rank: the data-parallel world.
        seed: order seed; shuffle: permute every epoch (else dataset order).
    """

    def __init__(self, n: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError("the training set is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside a world of {num_replicas}")
        self.n = int(n)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        """Indices per rank and epoch (``ceil(n / world)``)."""
        return -(-self.n // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's epoch order."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start {start} outside [0, {self.per_rank}]")
        self.start = int(start)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's full index order of ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + e)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.num_replicas
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start
