"""Process-group set-up from the environment `torchrun` provides (gloo on CPU, NCCL on GPU), and
`spawn_local`, which starts such a group on this machine without torchrun."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int | None = None, key: str = "train.device") -> torch.device:
    """``name`` (auto | cpu | cuda | cuda:N) as a device; ``auto`` and ``cuda`` mean this process's
    GPU, ``cuda:LOCAL_RANK`` (from torchrun's environment unless given), when there is one. A bad
    or unavailable device is a ValueError naming ``key``."""
    from multimae.config.schema import check_device

    check_device(name, key)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda" and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but CUDA is not available on this machine")
    return torch.device(name)


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from the arguments or torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``), for jobs that split their work without a process group."""
    if rank is None:
        rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    assert world_size is not None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size, int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def local_threads(requested: int | str | None) -> int | None:
    """Intra-op threads for this process: ``requested``, or, for one of several local processes,
    this machine's cores shared out between them (as torchrun's one thread per process would
    under-use a machine with more cores than processes); None leaves PyTorch's default. ``auto``
    starts as None does (the trainer may then measure, see `multimae.engine.threads`)."""
    if isinstance(requested, int) and requested:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // local)


def from_rank0(value: Any) -> Any:
    """``value`` as rank 0 has it (say, a time-stamped run name), on every rank of the group;
    ``value`` itself outside a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_process_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (say, rendering a cached pool), the other ranks after it."""
    if info.enabled and not info.is_main:
        dist.barrier()
    yield
    if info.enabled and info.is_main:
        dist.barrier()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    try:
        fn(*args, **kwargs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn_local(processes: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in ``processes`` new processes on this machine that form one
    process group, as ``torchrun --standalone --nproc-per-node processes`` would; ``fn`` (a
    module-level function) calls `init_distributed` to join it. An exception in any process stops
    them all and is raised here as `torch.multiprocessing.ProcessRaisedException`."""
    import torch.multiprocessing as mp

    mp.start_processes(_spawned, args=(processes, _free_port(), fn, args, kwargs), nprocs=processes,
                       start_method="spawn")

