"""Data-parallel training under ``torchrun`` (torch.distributed), used by :func:`trade_md.train.train`.

A process started by ``torchrun`` (or ``srun`` with the same variables) sees
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:meth:`World.from_env` reads them, and :meth:`World.start` joins the process
group with the backend of the model's device (gloo on the CPU, nccl on CUDA).
Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) the world is one process and
every helper here does nothing, so a plain run behaves as before.

How a step is split (the convention :func:`~trade_md.train.train` follows):

* ``optim.batch_size`` is the global batch: each of the N ranks draws
  ``batch_size / N`` boundary samples and gradient-loss evaluation points
  with its own random stream (rank 0 keeps the run's seed, rank r > 0 uses
  :func:`rank_seed`), evaluates their energies and its loss;
* the gradients are averaged by an explicit ``all_reduce`` after
  ``backward()`` (:meth:`World.average_gradients`; DistributedDataParallel's
  hooks did not average a step that begins with ``autograd.grad(...,
  create_graph=True)``, as the TRADE loss does);
* the scalars that decide (the losses the divergence guard screens, the
  validation loss that selects the best model) are averaged or taken from
  rank 0, so every rank takes the same decisions and keeps the same
  parameters, optimizer and schedule;
* a method's state between steps (the SNIS table and sample pool of
  ``trade_grid``) is broadcast from rank 0 after every step
  (:meth:`World.broadcast_state`): a rank's refresh serves its own step, the
  table carried on is rank 0's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["World", "rank_seed"]

#: Variables that ``torchrun`` sets and a distributed run needs.
ENV_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: Backend of each device type.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` on rank 0, far from ``seed + 1`` (validation) elsewhere."""
    return seed + 1_000_003 * rank


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


@dataclass(frozen=True)
class World:
    """The processes of a data-parallel run: this one's ``rank`` among ``size``, and its ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        """The world that ``torchrun``'s variables describe; one process without ``WORLD_SIZE``.

        Raises ValueError (one line) when ``WORLD_SIZE`` > 1 is set without the
        other variables, or when they are not integers in range.
        """
        if "WORLD_SIZE" not in os.environ:
            return cls()
        size = _env_int("WORLD_SIZE")
        if size < 1:
            raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {size}")
        if size == 1:
            return cls()
        missing = [name for name in ENV_VARIABLES if name not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={size} is set but {', '.join(missing)} not: launch with torchrun "
                             "(or set all of " + ", ".join(ENV_VARIABLES) + ")")
        rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
        if not 0 <= rank < size:
            raise ValueError(f"environment variable RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size})")
        if local_rank < 0:
            raise ValueError(f"environment variable LOCAL_RANK must be >= 0, got {local_rank}")
        return cls(rank, size, local_rank)

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes checkpoints, logs and outputs."""
        return self.rank == 0

    def start(self, like: Tensor) -> None:
        """Join the process group (once), with the backend of ``like``'s device; nothing for one process."""
        if not self.distributed or dist.is_initialized():
            return
        kind = like.device.type
        if kind not in BACKENDS:
            raise ValueError(f"distributed training runs on cpu (gloo) or cuda (nccl), not on {kind}")
        if kind == "cuda":
            torch.cuda.set_device(like.device)
        dist.init_process_group(BACKENDS[kind], init_method="env://", rank=self.rank, world_size=self.size)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

    def mean(self, values: Iterable[float]) -> list[float]:
        """The mean over ranks of each of ``values`` (float64)."""
        values = [float(v) for v in values]
        if not self.distributed:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(total)
        return (total / self.size).tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def collect(self, value: Any) -> Optional[list]:
        """Every rank's ``value`` (picklable), in rank order, on rank 0; None on the other ranks."""
        if not self.distributed:
            return [value]
        values: Optional[list] = [None] * self.size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over ranks (one all_reduce of a flat buffer).

        A parameter without a gradient on some rank counts as zero there; one
        without a gradient on every rank keeps none.
        """
        if not self.distributed:
            return
        flat = torch.cat([torch.zeros(p.numel() + 1, dtype=p.dtype, device=p.device) if p.grad is None
                          else torch.cat([p.grad.reshape(-1), p.grad.new_ones(1)]) for p in params])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            if bool(flat[offset + n] > 0):
                p.grad = (flat[offset:offset + n] / self.size).reshape(p.shape).clone()
            offset += n + 1

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers onto every rank."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def broadcast_state(self, obj: Any) -> None:
        """Load rank 0's ``obj.state_dict()`` into ``obj`` on the other ranks (for a state that must agree)."""
        if not self.distributed:
            return
        state: Optional[dict] = self.broadcast(obj.state_dict() if self.is_main else None)
        if not self.is_main:
            obj.load_state_dict(state)
