"""WebDataset-style tar shards: writing, and a streaming reader split over ranks and workers.

A shard is a plain tar whose members are ``<key>.<suffix>`` (``00000012.rgb.png``,
``00000012.depth.png``, ..., ``00000012.txt`` for the caption, ``00000012.cls`` for the label),
members of one sample consecutive: the layout the ``webdataset`` package reads, without needing it.
"""

from __future__ import annotations

import io
import logging
import random
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from multimae.data.codecs import (
    DEPTH_SCALE,
    LABEL_SUFFIX,
    MEMBER_TO_MODALITY,
    MODALITIES,
    check_sample,
    decode_modality,
    manifest_entry,
)
from multimae.data.collate import sample_generator
from multimae.data.manifest import read_manifest
from multimae.data.transforms import Transform
from multimae.engine.files import atomic_path

log = logging.getLogger(__name__)


def write_shard(path: Path, samples: Sequence[tuple[str, Mapping[str, bytes]]]) -> None:
    """Write ``(key, {suffix: bytes})`` samples to the tar ``path`` atomically."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, files in samples:
            for suffix in sorted(files):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mode, info.mtime = len(files[suffix]), 0o644, 0
                tar.addfile(info, io.BytesIO(files[suffix]))


def iter_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the raw samples ``(key, {suffix: bytes})`` of one shard, in order."""
    key, files = None, {}
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                k, _, suffix = name.partition(".")
                if k != key and key is not None:
                    yield key, files
                    files = {}
                key = k
                files[suffix] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: corrupt or unreadable shard ({err})") from None
    if key is not None:
        yield key, files


def list_shards(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard paths from a directory (its ``*.tar``), a glob pattern or a list of paths."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        paths = sorted(p.glob("*.tar")) if p.is_dir() else sorted(Path().glob(str(p))) if "*" in str(p) else [p]
    else:
        paths = [Path(s) for s in source]
    if not paths:
        raise ValueError(f"no shards (*.tar) found at {source}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"shard files not found: {missing[:5]}")
    return paths


def consumer(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(consumer index g, consumer count G) of the calling process and DataLoader worker, over DDP
    ranks (``rank`` / ``world_size``, else torch.distributed's, else one process) and workers."""
    if rank is None or world_size is None:
        rank, world_size = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world_size * workers


class ShardDataset(IterableDataset):
    """Stream samples from tar shards, each sample exactly once per epoch over all DDP ranks and
    DataLoader workers.

    With ``G = world_size * num_workers`` consumers, consumer ``g`` reads shards ``g, g + G, ...``
    (of the epoch's shard order) when there are at least ``G`` shards, and otherwise reads every
    shard keeping samples ``g, g + G, ...``. ``shuffle`` permutes the shards per epoch and mixes
    samples through a buffer of ``buffer_size``; both are seeded by (seed, epoch, consumer).

    Resuming: ``set_position(epoch, consumed)`` makes each consumer skip its first
    ``consumed // G`` samples of that epoch (exact when the consumption was balanced over
    consumers, as with DataLoader round-robin at whole multiples of ``batch_size * num_workers``).
    Skipped samples are not decoded.

    ``allow_missing``: a sample lacking some of ``modalities`` is read without them (its dict lacks
    those keys; see `multimae.data.collate` for batching); one holding none of them is still an
    error. The default (False) raises on a sample lacking any.

    ``on_error="skip"`` logs and counts undecodable samples (``num_skipped``) instead of raising.
    Depth scale and class count default to the manifest next to the shards.
    """

    def __init__(self, source: str | Path | Sequence[str | Path], modalities: Sequence[str] | None = None,
                 transform: Transform | None = None, shuffle: bool = False, buffer_size: int = 256,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 num_classes: int | None = None, depth_scale: float | None = None, on_error: str = "raise",
                 allow_missing: bool = False) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.paths = list_shards(source)
        unknown = set(modalities or ()) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        manifest = read_manifest(self.paths[0].parent) or {}
        self.modalities = tuple(modalities) if modalities else None
        self.num_classes = num_classes if num_classes is not None else manifest.get("num_classes")
        self.depth_scale = depth_scale or manifest_entry(manifest, "depth16").get("scale", DEPTH_SCALE)
        self.transform, self.shuffle, self.buffer_size, self.seed = transform, shuffle, buffer_size, seed
        self.rank, self.world_size, self.on_error, self.allow_missing = rank, world_size, on_error, allow_missing
        self.epoch, self.skip_consumed, self.num_skipped = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, consumed: int) -> None:
        """Resume ``epoch`` after ``consumed`` samples (over all consumers) were already used."""
        self.epoch, self.skip_consumed = epoch, consumed

    def _raw(self, g: int, total: int) -> Iterator[tuple[str, str, dict[str, bytes]]]:
        order = list(range(len(self.paths)))
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        if len(order) >= total:
            for s in order[g::total]:
                for key, files in iter_shard(self.paths[s]):
                    yield f"{self.paths[s]}:", key, files
        else:
            position = 0
            for s in order:
                for key, files in iter_shard(self.paths[s]):
                    if position % total == g:
                        yield f"{self.paths[s]}:", key, files
                    position += 1

    def _mixed(self, raw: Iterator[tuple[str, str, dict[str, bytes]]], g: int
               ) -> Iterator[tuple[str, str, dict[str, bytes]]]:
        if not self.shuffle or self.buffer_size <= 1:
            yield from raw
            return
        rng = random.Random(f"{self.seed}-{self.epoch}-{g}")
        buffer: list[tuple[str, str, dict[str, bytes]]] = []
        for item in raw:
            buffer.append(item)
            if len(buffer) >= self.buffer_size:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def decode(self, key: str, files: Mapping[str, bytes], where: str = "") -> dict[str, object]:
        """Raw files of one sample -> sample dict (see `multimae.data.codecs`)."""
        sample: dict[str, object] = {}
        for suffix, data in sorted(files.items()):
            modality = MEMBER_TO_MODALITY.get(suffix)
            name = f"{where}{key}.{suffix}"
            if modality is not None and (self.modalities is None or modality in self.modalities):
                sample[modality] = decode_modality(modality, data, name, self.num_classes, self.depth_scale)
            elif suffix == LABEL_SUFFIX:
                try:
                    sample["label"] = int(data.decode("ascii").strip())
                except (UnicodeDecodeError, ValueError):
                    raise ValueError(f"{name}: label is not an integer") from None
        missing = set(self.modalities or ()) - set(sample)
        if missing and not (self.allow_missing and len(missing) < len(self.modalities or ())):
            hint = "" if self.allow_missing else "; pass allow_missing=True to read such samples without them"
            raise ValueError(f"{where}{key}: missing modalities {sorted(missing)} (has {sorted(files)}){hint}")
        check_sample(sample, f"{where}{key}")
        sample["key"] = key
        return sample

    def __iter__(self) -> Iterator[dict[str, object]]:
        g, total = consumer(self.rank, self.world_size)
        skip = self.skip_consumed // total
        for position, (where, key, files) in enumerate(self._mixed(self._raw(g, total), g)):
            if position < skip:
                continue
            try:
                sample = self.decode(key, files, where)
            except ValueError as err:
                if self.on_error == "raise":
                    raise
                self.num_skipped += 1
                log.warning("skipped sample (%d so far): %s", self.num_skipped, err)
                continue
            if self.transform is not None:
                index = int(key) if key.isdigit() else zlib.crc32(key.encode())
                sample = self.transform(sample, sample_generator(self.seed, self.epoch, index))
            yield sample
