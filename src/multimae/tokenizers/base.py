"""`Tokenizer`: one interface for every way a modality becomes discrete tokens, and back.

Shapes: B samples, N tokens, h w token grid (N = h * w for a grid placement).

A tokenizer takes a modality's *raw* values, exactly as readers and the built-in world produce them
(`multimae.modalities.spec` states the conventions), checks them against the modality's spec, and
normalises them itself: callers never pre-normalise. `encode` returns `TokenIds`; `decode` turns ids
back into raw values. A tokenizer is saved as a folder of two files, its weights
(`WEIGHTS_FILE`, safetensors) and its config (`CONFIG_FILE`, JSON, with the content hash), and is
identified by `Tokenizer.content_hash`: the SHA-256 of its config and weights, so equal hashes mean
equal tokenizers whatever the file bytes.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.engine.files import atomic_path, write_text_atomic

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "multimae_tokenizer.json"  # {"type", "config", "content_hash"}; not a Hugging Face tokenizer.json


@dataclass(frozen=True)
class TokenIds:
    """Token ids of a batch and where they sit.

    Attributes:
        ids: (B, N) int64 ids in ``[0, vocab_size)``, row-major over the grid for ``grid``.
        valid: (B, N) bool, True where the token carries data (False: padding, or a grid cell
            with no valid pixel).
        placement: ``grid`` (a 2-D token map of shape ``grid``) or ``sequence`` (1-D, padded).
        grid: (h, w) of a grid placement, None for a sequence.
    """

    ids: Tensor
    valid: Tensor
    placement: str
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.dtype != torch.int64:
            raise ValueError(f"TokenIds.ids must be (B, N) int64, got {tuple(self.ids.shape)} {self.ids.dtype}")
        if self.valid.shape != self.ids.shape or self.valid.dtype != torch.bool:
            raise ValueError(f"TokenIds.valid must be (B, N) bool like ids {tuple(self.ids.shape)}, "
                             f"got {tuple(self.valid.shape)} {self.valid.dtype}")
        if self.placement == "grid" and (self.grid is None or self.grid[0] * self.grid[1] != self.ids.shape[1]):
            raise ValueError(f"a grid placement needs grid (h, w) with h * w = N = {self.ids.shape[1]}, got {self.grid}")

    @property
    def grid_ids(self) -> Tensor:
        """(B, h, w) ids of a grid placement."""
        if self.grid is None:
            raise ValueError("a sequence placement has no grid")
        return self.ids.reshape(self.ids.shape[0], *self.grid)


def tensors_digest(config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a canonical JSON of ``config`` and of every tensor (name, dtype, shape, bytes,
    in name order): what `Tokenizer.content_hash` is."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\n{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


TOKENIZER_TYPES: dict[str, type[Tokenizer]] = {}  # ``type`` in `CONFIG_FILE` -> class; filled by subclassing


class Tokenizer(ABC):
    """Raw values of one modality <-> token ids.

    Subclasses set `type_name` (the ``type`` recorded in `CONFIG_FILE`; a subclass with one is
    registered in `TOKENIZER_TYPES`, which `load_tokenizer` reads) and implement `encode`, `decode`,
    `vocab_size`, `placement`, `config_dict`, `state_tensors` and `from_saved`.
    """

    type_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            known = TOKENIZER_TYPES.get(cls.type_name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"tokenizer type {cls.type_name!r} is already {known.__qualname__}")
            TOKENIZER_TYPES[cls.type_name] = cls

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct token ids."""

    @property
    @abstractmethod
    def placement(self) -> str:
        """``grid`` or ``sequence``."""

    @abstractmethod
    def encode(self, raw: Tensor) -> TokenIds:
        """Raw values (as the modality's readers produce them) -> `TokenIds`; a ValueError naming
        what is wrong (dtype, channels, shape, range) for values the modality cannot hold."""

    @abstractmethod
    def decode(self, tokens: TokenIds | Tensor) -> Tensor:
        """Token ids (`TokenIds`, or a (B, N) / (B, h, w) int64 tensor) -> raw values; a ValueError for
        ids outside ``[0, vocab_size)``."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Plain-data config that, with `state_tensors`, rebuilds the tokenizer (`from_saved`)."""

    @abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """Every tensor the tokenizer's output depends on, by name."""

    @classmethod
    @abstractmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Tokenizer:
        """The tokenizer `config_dict` and `state_tensors` describe."""

    def code_vectors(self) -> Tensor | None:
        """(vocab_size, d) float: the latent vector each id stands for (a learned map tokenizer's
        quantised codes), or None where ids have no such vector (texts, fixed vocabularies)."""
        return None

    def to(self, device: torch.device | str) -> Tokenizer:
        """This tokenizer with its network (a learned tokenizer's ``net``) moved to ``device``."""
        net = getattr(self, "net", None)
        if isinstance(net, torch.nn.Module):
            net.to(device)
        return self

    # ------------------------------------------------------------------ identity and files

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of config and weights (`tensors_digest`): equal hashes, equal tokenizers."""
        return tensors_digest(self.config_dict(), self.state_tensors())

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/weights.safetensors`` and ``folder/multimae_tokenizer.json`` (type, config,
        content hash), each atomically; returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}
        with atomic_path(folder / WEIGHTS_FILE, unique=True) as tmp:
            save_file(tensors, str(tmp))
        record = {"type": self.type_name, "config": self.config_dict(), "content_hash": self.content_hash}
        write_text_atomic(folder / CONFIG_FILE, json.dumps(record, indent=2) + "\n", unique=True)
        return folder

    def check_ids(self, ids: Tensor) -> None:
        """A ValueError unless ``ids`` is an integer tensor of ids in ``[0, vocab_size)``."""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) (the vocabulary), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, placement={self.placement!r}, " \
               f"hash={self.content_hash[:12]})"


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer saved in ``folder`` (by `Tokenizer.save`); a ValueError naming the folder when a
    file is missing, of an unknown type, or its weights do not give the recorded content hash."""
    from safetensors.torch import load_file

    import multimae.tokenizers  # noqa: F401  (registers the built-in types)

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: no {name} (a saved tokenizer is a folder holding {CONFIG_FILE} "
                             f"and {WEIGHTS_FILE})")
    try:
        record = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CONFIG_FILE}: not valid JSON ({err})") from None
    kind = TOKENIZER_TYPES.get(record.get("type"))
    if kind is None:
        raise ValueError(f"{folder / CONFIG_FILE}: unknown tokenizer type {record.get('type')!r}; "
                         f"known: {sorted(TOKENIZER_TYPES)}")
    tokenizer = kind.from_saved(record["config"], load_file(str(folder / WEIGHTS_FILE)))
    if tokenizer.content_hash != record.get("content_hash"):
        raise ValueError(f"{folder}: the weights and config give sha256 {tokenizer.content_hash[:16]}, not the "
                         f"recorded {str(record.get('content_hash'))[:16]} (a changed or damaged file)")
    return tokenizer
