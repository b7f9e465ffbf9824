"""Past one process, at the lowest level: the torchrun world, global random draws and gathers.

``torchrun --nproc_per_node=N -m aerobust audit|train ...`` runs the same command in N processes
(ranks). The world is read from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); without them aerobust runs as one process and nothing here is active.
The process group uses gloo on CPU and NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``). How an audit
shares its blocks among the ranks is the audit's business (:mod:`aerobust.audit.sharded`); this
module imports nothing of the package but its errors.

Training: each rank takes its rows of the same global batch (same shuffle); random draws are made for
the whole global batch and sliced (:func:`batch_random`), so they equal one process's; batch
statistics (KS, covariance, coupled terms, beta-TCVAE's minibatch estimates) are computed on codes
gathered with gradients (:func:`gather_rows`). With DistributedDataParallel averaging the gradients,
N ranks with local batch B/N optimise the objective of one process with batch B. The mean of the
local means and the sum of gradients over ranks add the same numbers in another order (equal to
float rounding, about 1e-7 relative). BatchNorm statistics and dropout masks of a user's model stay
per rank (as under plain DDP), so such models do not get the single-process objective.
"""
from __future__ import annotations

import atexit
import contextvars
import dataclasses
import datetime
import os
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from .errors import DistributedError

# Ranks wait for each other at the end of an audit; an uneven share must not trip gloo's 30 min default.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=24)
# Joining is another matter: a rank whose peers never start (or whose MASTER_ADDR resolves nowhere) must not
# wait for the collective timeout. Seconds; the --join-timeout option sets the variable.
JOIN_TIMEOUT_VARIABLE = "AEROBUST_JOIN_TIMEOUT"
DEFAULT_JOIN_TIMEOUT_S = 300


# -- the world -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the ranks; ``World()`` is the single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        """What a manifest records: the number of processes and the collective backend."""
        return {"processes": self.size, "backend": dist.get_backend() if self.distributed else None}

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable):
        """Rank 0 runs ``work`` (e.g. writes a file); every rank returns its result once it is done."""
        return self.broadcast(work() if self.is_main else None)

    def main_first(self, work: Callable):
        """Rank 0 runs ``work`` first (e.g. trains and saves something), then the others (who load it)."""
        if self.is_main:
            value = work()
        self.barrier()
        if not self.is_main:
            value = work()
        return value


def _integer(env, name: str, minimum: int, default: str | None = None) -> int:
    text = env.get(name, default)
    if text is None or not text.strip().lstrip("-").isdigit() or int(text) < minimum:
        raise DistributedError(f"the torch.distributed environment is misconfigured: {name}={text!r} (need an "
                               f"integer >= {minimum}); launch with torchrun --nproc_per_node=N -m aerobust ..., "
                               "or unset WORLD_SIZE and RANK to run one process")
    return int(text)


def world_from_environment(env=None) -> World:
    """The world described by torchrun's variables; one process when neither WORLD_SIZE nor RANK is set."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") is None and env.get("RANK") is None:
        return World()
    size = _integer(env, "WORLD_SIZE", 1)
    if size == 1:
        return World()
    rank = _integer(env, "RANK", 0)
    if rank >= size:
        raise DistributedError(f"the torch.distributed environment is misconfigured: RANK={rank} but WORLD_SIZE="
                               f"{size} (ranks are 0..{size - 1}); launch with torchrun")
    local_rank = _integer(env, "LOCAL_RANK", 0)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise DistributedError(f"the torch.distributed environment is misconfigured: {' and '.join(missing)} "
                               f"not set for rank {rank} of {size}; launch with torchrun, which sets them")
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(world: World, device: torch.device) -> torch.device:
    """One GPU per rank: a plain ``cuda`` device becomes ``cuda:LOCAL_RANK``."""
    if not world.distributed or device.type != "cuda" or device.index is not None:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK {world.local_rank} has no GPU (this node has "
                               f"{torch.cuda.device_count()}); start at most that many processes per node "
                               "(--nproc_per_node) or use --device cpu")
    return torch.device("cuda", world.local_rank)


def join_world(device: torch.device) -> tuple[World, torch.device]:
    """Read the world, join its process group (once per process) and pick this rank's device."""
    world = world_from_environment()
    if not world.distributed:
        return world, device
    device = rank_device(world, device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        join_timeout = _integer(os.environ, JOIN_TIMEOUT_VARIABLE, 1, str(DEFAULT_JOIN_TIMEOUT_S))
        address, port = os.environ["MASTER_ADDR"], _integer(os.environ, "MASTER_PORT", 1)
        try:
            # The store is where ranks meet: its timeout bounds the join, the group's bounds each collective.
            store = dist.TCPStore(address, port, world.size, is_master=world.rank == 0,
                                  timeout=datetime.timedelta(seconds=join_timeout), wait_for_workers=True)
            dist.init_process_group(backend, store=store, rank=world.rank, world_size=world.size,
                                    timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError, OSError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DistributedError(
                f"rank {world.rank} of {world.size} did not join the {backend} process group at MASTER_ADDR={address} "
                f"MASTER_PORT={port} within {join_timeout} s ({first_line}); start all WORLD_SIZE={world.size} ranks "
                f"with one torchrun command (same MASTER_ADDR, MASTER_PORT), or raise --join-timeout "
                f"({JOIN_TIMEOUT_VARIABLE})") from None
        atexit.register(_leave_world)
    elif dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise DistributedError(f"a process group of {dist.get_world_size()} ranks is already running here, but "
                               f"RANK/WORLD_SIZE say {world.rank}/{world.size}")
    return world, device


# The commands that share their work among torchrun's ranks; the others would all do the same work
# and write the same files at once.
SHARDED_COMMANDS = ("audit", "train")


def refuse_world_for(command: str | None):
    """One clear error when a command that runs in one process only is started by torchrun."""
    world = world_from_environment()
    if world.distributed and command not in SHARDED_COMMANDS:
        raise DistributedError(f"aerobust {command} runs in one process; under torchrun only "
                               f"{' and '.join(SHARDED_COMMANDS)} share their work: start it with plain aerobust")


def _leave_world():
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True for rank 0 and for a single process (the one that prints and writes the shared outputs)."""
    return not dist.is_initialized() or dist.get_rank() == 0


# -- data-parallel training --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _BatchShare:
    start: int
    stop: int
    total: int


# Set only while a data-parallel training step runs its defense; None everywhere else.
_current_share: contextvars.ContextVar[_BatchShare | None] = contextvars.ContextVar("aerobust_batch_share",
                                                                                     default=None)


def batch_random(draw: Callable, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    """``draw(shape, ...)`` (torch.rand, torch.randn) for a batch of samples, equal to one process's draw.

    In a data-parallel step the draw covers the whole global batch (the generator advances exactly
    as in one process) and this rank keeps its own rows.
    """
    share = _current_share.get()
    if share is None:
        return draw(tuple(shape), generator=generator, device=device, dtype=dtype)
    if shape[0] != share.stop - share.start:
        raise RuntimeError(f"batch_random was asked for {shape[0]} rows inside a data-parallel step whose "
                           f"local batch has {share.stop - share.start}; only per-sample draws go through it")
    full = draw((share.total, *shape[1:]), generator=generator, device=device, dtype=dtype)
    return full[share.start:share.stop]


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order; gradients flow back to each rank's own rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = slice(dist.get_rank() * len(local), (dist.get_rank() + 1) * len(local))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Each rank differentiates its own copy of the batch statistic; the sum over ranks, with DDP's
        # mean over ranks, gives exactly the gradient one process would have.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows]


def gather_rows(local: torch.Tensor | None) -> torch.Tensor | None:
    """The whole global batch of ``local`` (codes, means...) for a batch statistic; itself outside training."""
    if local is None or _current_share.get() is None:
        return local
    return _GatherRows.apply(local)


class _DefenseLosses(nn.Module):
    """The defense's loss terms as a module's forward, which is what DistributedDataParallel hooks."""

    def __init__(self, defense, model: nn.Module):
        super().__init__()
        self.model = model
        self.defense = defense

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.defense.losses(self.model, x, generator)


class DataParallelObjective:
    """The defense's loss terms on this rank's rows of a global batch; one process: the plain call.

    ``rows`` selects this rank's rows of a global batch; ``terms = objective(x_rows, generator)`` then
    ``terms["total"].backward()`` leaves in every rank's parameters the gradient of the global
    objective; ``mean_over_ranks`` turns per-rank logged terms into the global batch's.
    """

    def __init__(self, defense, model: nn.Module, batch_size: int, world: World, device: torch.device):
        self.defense, self.model, self.world = defense, model, world
        self.rows = slice(None)
        self._share = None
        self._parallel = None
        if world.distributed:
            if batch_size % world.size:
                raise DistributedError(f"--batch-size {batch_size} does not split evenly over {world.size} ranks; "
                                       f"use a multiple of {world.size}")
            local = batch_size // world.size
            self.rows = slice(world.rank * local, (world.rank + 1) * local)
            self._share = _BatchShare(self.rows.start, self.rows.stop, batch_size)
            # find_unused_parameters: a defense may leave parts of a user's model out of its loss.
            self._parallel = nn.parallel.DistributedDataParallel(
                _DefenseLosses(defense, model), device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=True)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self._parallel is None:
            return self.defense.losses(self.model, x, generator)
        token = _current_share.set(self._share)
        try:
            return self._parallel(x, generator)
        finally:
            _current_share.reset(token)

    def mean_over_ranks(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-rank logged terms -> those of the global batch (local means over equal slices average)."""
        if not self.world.distributed:
            return values
        names = sorted(values)
        stacked = torch.stack([values[name].detach().double() for name in names])
        dist.all_reduce(stacked)
        return dict(zip(names, stacked / self.world.size))
