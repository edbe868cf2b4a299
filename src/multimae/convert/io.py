"""Reading checkpoint files of any supported format into a flat state dict, and recognising
which format a state dict is in.

Containers understood: a bare state dict; a dict holding the weights under ``model`` (official
MultiMAE and MAE ``.pth`` files, our training checkpoints), ``state_dict`` or ``model_state``;
``.safetensors`` files (their metadata is kept). A ``module.`` prefix (DistributedDataParallel) is
removed. Files are read with ``torch.load(weights_only=True)``, allowing the ``argparse.Namespace``
that official checkpoints store under ``args``; anything else needs ``trusted=True``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import Tensor

from multimae.engine.checkpoint import Checkpoint, read_ours_safetensors, read_ours_torch, read_safetensors

FORMATS = ("multimae", "official", "timm")
# Container entries that hold the weights, in the order they are looked for.
_WEIGHT_ENTRIES = ("model", "state_dict", "model_state")


def _torch_load(path: Path, trusted: bool) -> Any:
    from multimae.engine.checkpoint import load_torch_file

    return load_torch_file(path, trusted, allowed=[argparse.Namespace])


def _unwrap(obj: Any, where: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, the rest of the container)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a dict of tensors or a checkpoint dict, got {type(obj).__name__}")
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj), {}
    for entry in _WEIGHT_ENTRIES:
        if isinstance(obj.get(entry), dict):
            return _unwrap(obj[entry], where)[0], {k: v for k, v in obj.items() if k != entry}
    raise ValueError(
        f"{where}: no weights found: not a state dict, and none of the entries {_WEIGHT_ENTRIES} "
        f"holds one (entries: {sorted(map(str, obj))[:10]})"
    )


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def detect_format(state: dict[str, Tensor], where: str = "checkpoint") -> str:
    """``"official"`` (MultiMAE), ``"fourm"`` (official 4M) or ``"timm"`` from the key names; a ValueError
    naming some keys otherwise."""
    from multimae.convert.fourm import is_fourm_state

    keys = list(state)
    if is_fourm_state(state):
        return "fourm"
    if any(k.startswith(("input_adapters.", "encoder.0.")) for k in keys) and "global_tokens" in state:
        return "official"
    if "patch_embed.proj.weight" in state and any(k.startswith("blocks.0.") for k in keys):
        return "timm"
    raise ValueError(
        f"{where}: unrecognised checkpoint: expected the official MultiMAE layout (input_adapters.*, "
        f"encoder.*, global_tokens), the official 4M layout (encoder_embeddings.*, decoder_proj_context.*) or a timm / MAE VisionTransformer (patch_embed.*, blocks.*); "
        f"found keys {keys[:6]}{' ...' if len(keys) > 6 else ''}"
    )


def from_state_dict(state: dict[str, Tensor], where: str = "state dict") -> Checkpoint:
    state = _strip_module_prefix(dict(state))
    return Checkpoint(state, detect_format(state, where))


def read_checkpoint(path: str | Path, trusted: bool = False) -> Checkpoint:
    """Read ``path`` (``.pth``/``.pt``/``.bin``/``.safetensors``) and recognise its format. Files of
    ours are read by `multimae.engine.checkpoint` (the one reader of our format); others are
    unwrapped to their state dict and told apart by their keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    metadata: dict[str, str] = {}
    rest: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        ours = read_ours_safetensors(state, metadata, path) if metadata.get("format") != "timm" else None
    else:
        contents = _torch_load(path, trusted)
        ours = read_ours_torch(contents, path)
        if ours is None:
            state, rest = _unwrap(contents, str(path))
    if ours is not None:
        return ours
    state = _strip_module_prefix(state)
    args = rest.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, dict) else {}
    return Checkpoint(state, detect_format(state, str(path)), args=args, metadata=metadata, path=path)
