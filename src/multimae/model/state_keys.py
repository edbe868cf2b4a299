"""State-dict keys of a composed model: a child's entries listed without the child's name.

A composed model holds its encoder as a child module (``model.backbone``), so its parameters are
named ``backbone.encoder.0.attn.qkv.weight``; the official MultiMAE checkpoints are flat
(``encoder.0.attn.qkv.weight``). `lift_child_keys` makes ``state_dict()`` write, and
``load_state_dict()`` read and report (missing / unexpected keys), the flat names (the child's
prefixed names are accepted as well), so
official checkpoints load with ``strict=True`` and ours stay interchangeable with them. The
parent also tells `torch.distributed.checkpoint.state_dict` (FSDP checkpoints) where each lifted
name lives, through the ``_fqn_modifiers`` method that module reads (`StateDictOptions.dsd_fqn_modifiers`).
Parameter *objects* keep their module path in ``named_parameters()``; code that needs the
checkpoint name of a parameter reads ``state_dict(keep_vars=True)`` (see `checkpoint_names`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn


def _top_names(child: nn.Module) -> set[str]:
    """First components of the child's own state-dict keys (its parameters, buffers, modules)."""
    return {*child._parameters, *child._buffers, *child._modules}


def lift_child_keys(parent: nn.Module, child_name: str) -> None:
    """Make ``parent``'s state dict list ``parent.<child_name>``'s entries without its prefix.

    Raises:
        ValueError: when a name of the child's would collide with one of the parent's own.
    """
    child = getattr(parent, child_name)
    own = {n for n in _top_names(parent) if n != child_name}
    clash = sorted(own & _top_names(child))
    if clash:
        raise ValueError(f"{child_name}'s state-dict names {clash} collide with the model's own")

    def flatten(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        inner = f"{prefix}{child_name}."
        items = list(state.items())
        state.clear()
        for key, value in items:  # rebuilt in place so the order of the entries is kept
            state[prefix + key[len(inner):] if key.startswith(inner) else key] = value

    loading_at: list[str] = []  # the prefix of the load in progress (the post-hook is not told it)

    def nest(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
        loading_at[:] = [prefix]
        tops = _top_names(getattr(module, child_name))
        items = list(state.items())
        state.clear()
        for key, value in items:
            rest = key[len(prefix):] if key.startswith(prefix) else None
            if rest is not None and rest.split(".", 1)[0] in tops:
                key = f"{prefix}{child_name}.{rest}"
            state[key] = value

    def report_flat(module: nn.Module, incompatible: Any) -> None:
        inner = f"{loading_at[0] if loading_at else ''}{child_name}."
        for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
            keys[:] = [k.replace(inner, inner[: -len(child_name) - 1], 1) if k.startswith(inner) else k
                       for k in keys]

    parent._fqn_modifiers = _LiftedNames(parent, child_name)
    parent.register_state_dict_post_hook(flatten)
    parent.register_load_state_dict_pre_hook(nest)
    parent.register_load_state_dict_post_hook(report_flat)


class _LiftedNames:
    """``parent._fqn_modifiers()``: ``{lifted top name: child_name}``, which
    `torch.distributed.checkpoint.state_dict` reads to find a state-dict key such as
    ``encoder.0.attn.qkv.weight`` under ``backbone`` (it walks keys as attribute paths). A class,
    not a closure, so that a copied or pickled model keeps a working one."""

    def __init__(self, parent: nn.Module, child_name: str) -> None:
        self.parent, self.child_name = parent, child_name

    def __call__(self) -> dict[str, str]:
        return dict.fromkeys(_top_names(getattr(self.parent, self.child_name)), self.child_name)


def checkpoint_names(model: nn.Module) -> dict[int, str]:
    """``{id(parameter): its key in model.state_dict()}``: the names checkpoints, optimizer
    groups and layer-wise decay use (``named_parameters()`` gives module paths instead)."""
    return {id(v): k for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, nn.Parameter)}


def named_checkpoint_parameters(model: nn.Module) -> OrderedDict[str, Tensor]:
    """``{state-dict key: parameter}`` in ``named_parameters()`` order."""
    names = checkpoint_names(model)
    return OrderedDict((names.get(id(p), n), p) for n, p in model.named_parameters())
