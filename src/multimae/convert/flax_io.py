"""Reading Flax parameter trees (JAX checkpoints) without JAX: msgpack files and pickles.

Two containers are understood:

- ``.msgpack`` (``flax.serialization.to_bytes``): a msgpack map whose arrays are extension type 1,
  ``(shape, dtype name, raw bytes)``, scalars extension type 3, and arrays above Flax's chunk size
  split into ``{"__msgpack_chunked_array__": ..., "shape": ..., "chunks": {...}}``; needs the
  ``msgpack`` package (``pip install 'multimae[jax]'``).
- ``.pkl`` (M3AE's and MAE-JAX's ``model.pkl``: ``{"step", "epoch", "variant", "state"}``, the state
  a Flax ``TrainState``): unpickled by a restricted unpickler that builds numpy arrays, plain
  containers and inert stand-ins for Flax / optax / JAX / ml_collections objects (whose attributes
  it keeps), and refuses every other global, so no code from the file runs.

`find_params` then picks the model's parameter tree out of whatever was read (``state.params
["params"]``, a ``{"params": ...}`` dict, or the tree itself), never the optimiser's moment trees,
and `flatten` gives ``{"encoder/Block_0/Attention_0/Dense_0/kernel": array}``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STUB_MODULES = ("flax", "optax", "jax", "jaxlib", "ml_collections", "chex")
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_BUILTINS = {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "slice", "bytearray", "object")}
_BUILTINS |= {("collections", "OrderedDict"), ("copyreg", "_reconstructor")}


class StandIn:
    """What a Flax / optax / JAX object unpickles to: its constructor arguments and state kept.

    Called (as a reconstruction function or class) with an array it returns the array (a
    ``jax.Array`` is rebuilt from its numpy value); with a single mapping it returns a plain dict
    (``FrozenDict``); otherwise it is an object whose ``__dict__`` receives the pickled state.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if arrays:
            return arrays[0]
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            return dict(args[0])
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, Mapping):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


def _stand_in(module: str, name: str) -> type:
    return type(name, (StandIn,), {"__module__": module})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _BUILTINS:
            return super().find_class(module, name)
        if module.split(".")[0] in _STUB_MODULES:
            return _stand_in(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a Flax parameter checkpoint")


def read_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            return _Unpickler(f).load()
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path}: {err}") from None


def _array(shape: Any, dtype: str, buffer: bytes) -> np.ndarray:
    if dtype == "bfloat16":  # not a numpy dtype: through torch
        raw = torch.frombuffer(bytearray(buffer), dtype=torch.bfloat16).float().numpy()
        return raw.reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()


def _unchunk(tree: Any) -> Any:
    if isinstance(tree, dict):
        if "__msgpack_chunked_array__" in tree:
            chunks = tree["chunks"]
            parts = [chunks[k] for k in sorted(chunks, key=int)]
            return np.concatenate([p.reshape(-1) for p in parts]).reshape(tree["shape"])
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def read_msgpack(path: Path) -> Any:
    try:
        import msgpack
    except ImportError:
        raise ValueError(f"{path}: reading Flax msgpack checkpoints needs the msgpack package "
                         "(pip install 'multimae[jax]')") from None

    def ext_hook(code: int, data: bytes) -> Any:
        if code == 1:
            shape, dtype, buffer = msgpack.unpackb(data)
            return _array(shape, dtype, buffer)
        if code == 3:
            dtype, buffer = msgpack.unpackb(data)
            return _array((), dtype, buffer)
        raise ValueError(f"{path}: unsupported msgpack extension type {code}")

    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=ext_hook, raw=False, strict_map_key=False)
    except (msgpack.exceptions.ExtraData, ValueError, msgpack.exceptions.UnpackException) as err:
        raise ValueError(f"{path}: not a Flax msgpack file ({err})") from None
    return _unchunk(tree)


def read_flax_file(path: str | Path) -> Any:
    """The object stored in a ``.msgpack`` or ``.pkl`` JAX checkpoint (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".msgpack":
        return read_msgpack(path)
    if path.suffix in (".pkl", ".pickle"):
        return read_pickle(path)
    raise ValueError(f"{path}: a JAX checkpoint is a .msgpack or .pkl file")


def find_params(obj: Any, marker: str = "encoder", where: str = "checkpoint") -> dict[str, Any]:
    """The parameter tree in ``obj``: the first mapping holding ``marker`` reached through ``params``
    attributes and keys first, never through an optimiser state (``opt_state``: its moment trees
    have the same keys)."""
    seen: set[int] = set()
    queue = [obj]
    while queue:
        node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, StandIn):
            node = {k: v for k, v in node.__dict__.items() if not k.startswith("_")}
        if isinstance(node, Mapping):
            if marker in node and isinstance(node[marker], Mapping):
                return dict(node)
            keys = sorted(node, key=lambda k: (k != "params", k != "state", str(k)))
            queue += [node[k] for k in keys if k not in ("opt_state", "tokenizer_params")]
        elif isinstance(node, (list, tuple)):
            queue += list(node)
    raise ValueError(f"{where}: no Flax parameter tree with {marker!r} found")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` of a nested parameter tree."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = np.asarray(value)
    return out
