"""Distributed data parallel helpers: one process per device under ``torchrun``.

``torchrun --nproc_per_node N -m worldenv train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup`
joins the process group (gloo on CPU, nccl on CUDA) and pins the device. A
plain ``python -m worldenv train ...`` is a world of one and needs no group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "teardown", "all_mean"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the run.

    Attributes:
        rank: Global rank.
        world_size: Processes in the run.
        local_rank: Rank on this machine (selects the CUDA device).
        device: Where this process computes.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: str = "auto") -> Dist:
    """Join the process group when launched by ``torchrun``.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        This process's :class:`Dist`.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Expect `device` to be 'auto', 'cpu' or 'cuda', actually: {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def teardown(d: Dist) -> None:
    """Leave the process group."""
    if d.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(d: Dist, values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging)."""
    if not d.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if d.device.type == "cuda":
        t = t.to(d.device)
    dist.all_reduce(t)
    return {k: float(v) / d.world_size for k, v in zip(keys, t.tolist(), strict=True)}
