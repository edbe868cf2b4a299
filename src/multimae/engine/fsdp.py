"""FSDP2 (`torch.distributed.fsdp.fully_shard`) applied from outside the model.

`apply_fsdp` shards every Transformer block as its own unit (its parameters are all-gathered just
before the block runs and freed after it), then the root, which holds what is left (adapters,
tokens, decoder heads). The blocks are found generically, so no model knows about FSDP:

* every `timm.models.vision_transformer.Block` (MultiMAE's and M3AE's encoder and decoder blocks,
  4M's encoder blocks) and every `multimae.layers.decoder_block.DecoderBlock` (4M's decoder blocks);
* every instance of a class a model lists in its optional ``fsdp_units()`` method (say, the
  decoder blocks of a model whose blocks are not timm's). A unit must be entered through its
  ``forward`` (FSDP's hooks run there); a module called through another method is left to its
  parent's unit.

Mixed precision (`mixed_precision_policy`): with bf16 on a GPU, the all-gathered parameters are
bf16 (half the traffic and memory of fp32) while the sharded master weights, the optimizer state
and the gradient reduction stay fp32 (torchtitan's default: a bf16 sum over many ranks loses
digits). Everywhere else (the CPU, fp32 runs) nothing is cast: the shards are the fp32 weights and
the trainer's autocast does what it does without FSDP. fp16 is not offered: its loss scaler would
have to agree on overflow across shards, which `torch.amp.GradScaler` does not do.

Like DDP, `apply_fsdp` first copies rank 0's weights to every rank, so a model initialised
differently on some rank is still trained as one model.

`gathered` is the way to run the sharded model on one rank alone (validation, pictures, the final
report): every rank all-gathers every unit's parameters, and the block runs with the model whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from timm.models.vision_transformer import Block
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from multimae.layers.decoder_block import DecoderBlock

__all__ = ["apply_fsdp", "broadcast_from_rank0", "fsdp_units", "gathered", "is_sharded", "mixed_precision_policy",
           "set_gradient_sync"]


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules `apply_fsdp` shards as units (not the root), in `model.modules()` order:
    timm ``Block``s, our ``DecoderBlock``s and instances of the classes ``model.fsdp_units()`` lists."""
    classes: tuple[type, ...] = (Block, DecoderBlock, *getattr(model, "fsdp_units", lambda: ())())
    return [m for m in model.modules() if m is not model and isinstance(m, classes)]


def mixed_precision_policy(precision: str, device_type: str) -> MixedPrecisionPolicy:
    """bf16 parameters with fp32 gradient reduction for bf16 on a GPU; no casting otherwise (see
    the module docstring). ``precision``: the resolved `train.precision` (fp32 | bf16)."""
    if precision == "fp16":
        raise ValueError("train.parallel=fsdp does not run fp16 (its loss scaler would have to agree on overflow "
                         "across shards); use train.precision=bf16 or fp32")
    if precision == "bf16" and device_type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


@torch.no_grad()
def broadcast_from_rank0(model: nn.Module) -> None:
    """Every parameter and buffer of ``model`` set to rank 0's values (as DDP does on wrapping)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def apply_fsdp(model: nn.Module, device_type: str, policy: MixedPrecisionPolicy | None = None,
               mesh: DeviceMesh | None = None) -> list[nn.Module]:
    """Shard ``model`` in place over ``mesh`` (default: every rank of the process group, which must
    exist; one rank is allowed) with FSDP2: each of `fsdp_units`, innermost first, then the root,
    under ``policy`` (default: no casting; see `mixed_precision_policy`).
    Rank 0's weights are copied to every rank first. Returns the units sharded. Each unit frees
    its gathered parameters after its forward and gathers them again in backward (FSDP's default:
    less memory, more traffic); the root keeps its own until the backward ends."""
    if mesh is None:
        if not dist.is_initialized():
            raise ValueError("train.parallel=fsdp shards over a process group, and none is initialised")
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    broadcast_from_rank0(model)
    policy = policy or MixedPrecisionPolicy()
    units = fsdp_units(model)
    for unit in reversed(units):  # children before the parents that contain them
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return units


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Whether the next backward reduce-scatters gradients (False: accumulate them unsharded, FSDP's
    ``no_sync``; the micro-step that ends a step sets True)."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Within the block, every unit of a sharded ``model`` holds its whole parameters, so any rank
    may run it alone (no collective per forward). Every rank must enter; on leaving, each waits for
    all to leave, and the model is sharded again as FSDP trains it. With the bf16 policy the whole
    parameters are the bf16 copies. A no-op for a model that is not sharded."""
    if not isinstance(model, FSDPModule):
        yield
        return
    modules: list[Any] = [m for m in model.modules() if isinstance(m, FSDPModule)]
    model.set_reshard_after_forward(False)
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        dist.barrier()
        for module in modules:
            module.reshard()
            if module is not model:  # the root keeps its parameters after forward, as FSDP sets it
                module.set_reshard_after_forward(True, recurse=False)
