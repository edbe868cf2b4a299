"""Pre-tokenised data (4M): the token-shard format, its manifest, and a reader over it.

Shapes: K crops of a sample, N tokens of a modality (h * w for a grid placement).

A token-shard folder, as `multimae tokenize` (`multimae.pretokenize`) writes it::

    OUT/manifest.json          what is there (below), written atomically
    OUT/tokens-000000.tar      webdataset shards; shard i holds samples [i * S, (i + 1) * S)
    OUT/tokens-000001.tar      ...
    OUT/.parts/tokens-000000.json   one per finished shard (its sample count and sha256)

A sample of a shard is the webdataset group ``<index>.*`` (``index``: the sample's position in the
source, 9 digits), with members

- ``<modality>.npy``: (K, N) token ids of each crop, in the smallest unsigned integer dtype that holds
  the tokenizer's vocabulary (uint8, uint16 or uint32);
- ``<modality>.valid.npy``: (K, N) bool, only when some token is not valid (a grid cell without a
  valid pixel, a sequence's padding);
- ``<modality>.pixels.npy``: (K, C, P, P) uint8, a picture's pixels at each crop (``multimae tokenize
  --pixels rgb``), in [0, 255] for values in [0, 1]: what a model reading raw pixels takes (4M's RGB
  input, a patch projection), beside the tokens it predicts;
- ``crops.npy``: (K, 5) int64, per crop (top, left, height, width, flipped) in the source sample's
  pixels (zeros for the box of a sample without maps); crop 0 is the central square, unflipped;
- ``key.txt``: the sample's key in its source.

The manifest records the format and version, the source, the crop settings and seed, per modality
the tokenizer's ``content_hash``, type, vocabulary size, placement, grid, ids dtype and the image size
its crops were resized to, per pixel modality (``pixels``) its size, channels and dtype, the shard
size and sample count, and, once every shard is written
(``complete``), per shard its name, sample count and sha256. `TokenShardDataset` reads only complete
folders and refuses tokenizers whose hash is not the manifest's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset

from multimae.data.collate import sample_generator

if TYPE_CHECKING:
    from multimae.tokenizers.base import Tokenizer

FORMAT = "multimae.token_shards"
VERSION = 1
TOKEN_MANIFEST = "manifest.json"
PARTS = ".parts"  # per-shard records of finished shards
CROPS = "crops.npy"
KEY = "key.txt"
VALID = "valid.npy"  # the member of a modality's valid mask is <modality>.valid.npy
PIXELS = "pixels.npy"  # the member of a modality's pixels is <modality>.pixels.npy


def shard_name(index: int) -> str:
    return f"tokens-{index:06d}.tar"


def sample_key(index: int) -> str:
    """The webdataset ``__key__`` of the source's sample ``index``."""
    return f"{index:09d}"


def ids_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer dtype holding ids in ``[0, vocab_size)``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"a vocabulary of {vocab_size} ids does not fit in 32 bits")


def sample_record(index: int, key: str, crops: np.ndarray, ids: Mapping[str, np.ndarray],
                  valid: Mapping[str, np.ndarray], pixels: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One sample as a webdataset record for `webdataset.TarWriter`: ``crops`` (K, 5), per modality
    ``ids`` (K, N) (already in its stored dtype) and ``valid`` (K, N) bool (stored only when some are
    False), and per pixel modality ``pixels`` (K, C, P, P) uint8."""
    record: dict[str, Any] = {"__key__": sample_key(index), KEY: key, CROPS: crops.astype(np.int64)}
    for modality, x in ids.items():
        if x.ndim != 2 or x.shape[0] != crops.shape[0]:
            raise ValueError(f"{modality}: ids must be (K={crops.shape[0]}, N), got {x.shape}")
        record[f"{modality}.npy"] = x
        if not valid[modality].all():
            record[f"{modality}.{VALID}"] = valid[modality].astype(bool)
    for modality, x in (pixels or {}).items():
        if x.ndim != 4 or x.shape[0] != crops.shape[0] or x.dtype != np.uint8:
            raise ValueError(f"{modality}: pixels must be (K={crops.shape[0]}, C, P, P) uint8, got {x.dtype} {x.shape}")
        record[f"{modality}.{PIXELS}"] = x
    return record


def read_token_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a token-shard folder; a ValueError when there is none, it is of another
    format, or the folder is not complete (some shards are still to be written)."""
    path = Path(root) / TOKEN_MANIFEST
    if not path.is_file():
        raise ValueError(f"{root}: no {TOKEN_MANIFEST} (not a folder written by `multimae tokenize`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{path}: not a token-shard manifest of version {VERSION} (format "
                         f"{manifest.get('format')!r}, version {manifest.get('version')!r})")
    if not manifest.get("complete"):
        raise ValueError(f"{root}: the token shards are incomplete ({len(manifest.get('shards', []))} of "
                         f"{manifest.get('num_shards')} recorded); finish them with `multimae tokenize ... --resume`")
    return manifest


def check_tokenizers(manifest: Mapping[str, Any], tokenizers: Mapping[str, Tokenizer], where: str = "") -> None:
    """A ValueError unless every given tokenizer (by modality) is the one the shards were made with
    (same `content_hash`)."""
    recorded = manifest["tokenizers"]
    for modality, tokenizer in tokenizers.items():
        if modality not in recorded:
            raise ValueError(f"{where}: the shards hold no {modality!r} tokens; they hold {sorted(recorded)}")
        want, have = recorded[modality]["content_hash"], tokenizer.content_hash
        if want != have:
            raise ValueError(f"{where}: the {modality} tokens were made by tokenizer sha256 {want[:16]}, not by the "
                             f"given one ({have[:16]}): decoding them with it would give garbage; re-tokenise "
                             "or use the tokenizer recorded in the manifest")


CropChoice = Literal["random", "all"] | int


class TokenShardDataset(IterableDataset):
    """Samples of a token-shard folder, streamed by a webdataset pipeline.

    Each item is a dict: ``ids`` {modality: (N,) int64} for one crop (``(K, N)`` with ``crop="all"``),
    ``valid`` {modality: (N,) bool} (likewise; all True where the shard stored no mask), ``pixels``
    {pixel modality: (C, P, P) uint8} (likewise; ``{}`` when the shards keep none), ``crop`` (5,)
    int64 (top, left, height, width, flipped; ``(K, 5)`` with ``all``), ``crop_index`` int (-1 with
    ``all``), ``index`` int (position in the source) and ``key`` str. `torch.utils.data.default_collate`
    batches them.

    ``crop``: ``"random"`` draws one crop per sample and epoch from a generator seeded by (seed,
    epoch, index), so the choice does not depend on workers or ranks; an int takes that crop
    always; ``"all"`` keeps every crop. Shards are split over ranks (``RANK`` / ``WORLD_SIZE`` or
    torch.distributed, `webdataset.split_by_node`) and DataLoader workers (`split_by_worker`): each
    consumer reads whole shards, so use at least as many shards as consumers; ``split=False`` gives
    every consumer every shard (an in-memory pool, `multimae.data.token_pool`). ``shuffle`` permutes
    the shards per epoch (seeded by seed and epoch) and mixes samples through a buffer of
    ``buffer_size``. ``tokenizers`` (modality -> tokenizer) are checked against the manifest's
    hashes: shards made by another tokenizer are refused. ``modalities`` limits the tokens read
    (default: every modality of the manifest), ``pixels`` the pixels (default: every one kept).
    """

    def __init__(self, root: str | Path, tokenizers: Mapping[str, Tokenizer] | None = None,
                 modalities: Sequence[str] | None = None, crop: CropChoice = "random", shuffle: bool = False,
                 buffer_size: int = 256, seed: int = 0, pixels: Sequence[str] | None = None,
                 split: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.manifest = read_token_manifest(self.root)
        check_tokenizers(self.manifest, tokenizers or {}, str(self.root))
        known = self.manifest["tokenizers"]
        self.modalities = tuple(modalities) if modalities else tuple(known)
        unknown = [m for m in self.modalities if m not in known]
        if unknown:
            raise ValueError(f"{self.root}: the shards hold no tokens of {unknown}; they hold {sorted(known)}")
        kept = self.manifest.get("pixels", {})
        self.pixels = tuple(kept) if pixels is None else tuple(pixels)
        unknown = [m for m in self.pixels if m not in kept]
        if unknown:
            raise ValueError(f"{self.root}: the shards keep no pixels of {unknown} (they keep {sorted(kept) or 'none'}); "
                             "tokenize again with --pixels")
        num_crops = self.manifest["crops"]["num_crops"]
        if isinstance(crop, int) and not 0 <= crop < num_crops:
            raise ValueError(f"crop {crop} is not in [0, {num_crops}) (the shards hold {num_crops} crops per sample)")
        if not isinstance(crop, int) and crop not in ("random", "all"):
            raise ValueError(f"crop must be 'random', 'all' or a crop index, got {crop!r}")
        self.paths = [self.root / s["name"] for s in self.manifest["shards"]]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise ValueError(f"{self.root}: shards named in the manifest are missing: {missing[:3]}")
        self.crop, self.shuffle, self.buffer_size, self.seed, self.epoch = crop, shuffle, buffer_size, seed, 0

    def __len__(self) -> int:
        """Samples over all consumers (each sample once per epoch)."""
        return int(self.manifest["num_samples"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def grid(self, modality: str) -> tuple[int, int] | None:
        """(h, w) of a grid modality's tokens, None for a sequence."""
        grid = self.manifest["tokenizers"][modality]["grid"]
        return None if grid is None else (int(grid[0]), int(grid[1]))

    def _crop_index(self, index: int) -> int:
        if isinstance(self.crop, int):
            return self.crop
        num_crops = self.manifest["crops"]["num_crops"]
        return int(torch.randint(num_crops, (1,), generator=sample_generator(self.seed, self.epoch, index)))

    def _item(self, record: Mapping[str, Any]) -> dict[str, Any]:
        index = int(record["__key__"])
        crops = torch.from_numpy(np.asarray(record[CROPS], dtype=np.int64))
        chosen = slice(None) if self.crop == "all" else self._crop_index(index)
        ids, valid = {}, {}
        for m in self.modalities:
            x = np.asarray(record[f"{m}.npy"]).astype(np.int64)
            v = record.get(f"{m}.{VALID}")
            v = np.ones(x.shape, dtype=bool) if v is None else np.asarray(v, dtype=bool)
            ids[m], valid[m] = torch.from_numpy(x[chosen]), torch.from_numpy(v[chosen])
        pixels = {m: torch.from_numpy(np.asarray(record[f"{m}.{PIXELS}"], dtype=np.uint8)[chosen]) for m in self.pixels}
        return {"ids": ids, "valid": valid, "pixels": pixels, "crop": crops[chosen],
                "crop_index": -1 if self.crop == "all" else chosen, "index": index, "key": record[KEY]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        urls = [str(p) for p in self.paths]
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        whole = lambda src: src  # noqa: E731  (every shard to this consumer)
        pipeline = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node if self.split else whole,
                                  workersplitter=wds.split_by_worker if self.split else whole, empty_check=False)
        if self.shuffle and self.buffer_size > 1:
            pipeline = pipeline.shuffle(self.buffer_size, rng=random.Random(f"{self.seed}-{self.epoch}-buffer"))
        for record in pipeline.decode():
            yield self._item(record)
