"""Any data source as numbered samples: ``world``, a folder-layout root or tar shards, each read by
its own reader and addressed by index (what jobs that split a source into fixed ranges need).

``open_source(data, modalities)`` takes ``data`` as the command lines do: ``world`` (the built-in
world, scenes 0 .. world_scenes-1 of ``split`` rendered at ``render_size``; a folder of that name is
``./world``), a folder in the folder layout (``DATA/<split>/<modality>/...``, `FolderDataset`), or
tar shards (a ``.tar``, a glob, a folder of them or a root holding ``<split>/*.tar``, as `multimae
data generate` writes; `IndexedShards`). Samples come without augmentation, holding ``modalities``
(and ``key``); a modality the source does not hold is a ValueError naming it.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from multimae.data.codecs import MODALITIES, TEXT
from multimae.data.folder import FolderDataset
from multimae.data.generated import WORLD_MODALITIES, WORLD_SEQUENCES, WorldDataset
from multimae.data.shards import ShardDataset, list_shards

WORLD = "world"


class IndexedShards(Dataset):
    """Samples of tar shards by index (shards in the order given, samples in tar order), each read
    by seeking to its members: the index (member offsets) is built once from the tar headers.
    Decoding is `ShardDataset.decode`'s (its manifest settings, its checks)."""

    def __init__(self, paths: Sequence[Path], modalities: Sequence[str]) -> None:
        self.paths = list(paths)
        self.decoder = ShardDataset(self.paths, modalities=modalities)
        self.index: list[tuple[int, str, dict[str, tuple[int, int]]]] = []  # (shard, key, {suffix: (offset, size)})
        for s, path in enumerate(self.paths):
            try:
                with tarfile.open(path, "r:") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        key, _, suffix = member.name.rsplit("/", 1)[-1].partition(".")
                        if not self.index or self.index[-1][:2] != (s, key):
                            self.index.append((s, key, {}))
                        self.index[-1][2][suffix] = (member.offset_data, member.size)
            except (tarfile.TarError, OSError) as err:
                raise ValueError(f"{path}: corrupt or unreadable shard ({err})") from None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, object]:
        s, key, members = self.index[index]
        files = {}
        with open(self.paths[s], "rb") as f:
            for suffix, (offset, size) in members.items():
                f.seek(offset)
                files[suffix] = f.read(size)
        return self.decoder.decode(key, files, f"{self.paths[s]}:")


@dataclass(frozen=True)
class SampleSource:
    """Numbered samples (``samples[i]``, ``len(samples)``) and what they are, for manifests."""

    samples: Dataset
    kind: str  # world | folder | shards
    record: dict[str, Any] = field(default_factory=dict)


def shard_paths(data: str, split: str) -> list[Path] | None:
    """The shards ``data`` names, or None when it names none."""
    path = Path(data)
    if "*" in data or (path.is_file() and path.suffix == ".tar"):
        return list_shards(data)
    for folder in (path / split, path):
        if folder.is_dir() and any(folder.glob("*.tar")):
            return list_shards(folder)
    return None


def open_source(data: str, modalities: Sequence[str], split: str = "train", world_scenes: int = 1000,
                render_size: int = 64, world_class_colors: float = 0.0) -> SampleSource:
    """The samples of ``data`` (see the module docstring), holding ``modalities``; ``world_class_colors``:
    the world's chance that an object wears its class's colour (`multimae.data.WorldDataset`)."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; data modalities: {list(MODALITIES)}")
    if data == WORLD:
        has = (*WORLD_MODALITIES, *WORLD_SEQUENCES, *TEXT)
        absent = [m for m in modalities if m not in has]
        if absent:
            raise ValueError(f"the built-in world has no {absent}; it has {list(has)}")
        maps = tuple(m for m in modalities if m in WORLD_MODALITIES or m in WORLD_SEQUENCES)
        samples = WorldDataset(split, size=render_size, length=world_scenes, modalities=maps,
                               class_colors=world_class_colors)
        about = {"split": split, "scenes": world_scenes, "size": render_size}
        if world_class_colors:  # recorded when set (manifests written before the option stay valid)
            about["class_colors"] = world_class_colors
        return SampleSource(samples, WORLD, about)
    shards = shard_paths(data, split)
    if shards is not None:
        return SampleSource(IndexedShards(shards, modalities), "shards",
                            {"path": str(Path(data).resolve()), "shards": [p.name for p in shards]})
    if not (Path(data) / split).is_dir():
        raise ValueError(f"{data}: neither '{WORLD}', tar shards (*.tar, or {split}/*.tar) nor a folder-layout root "
                         f"({data}/{split}/<modality>/...)")
    return SampleSource(FolderDataset(data, split, tuple(modalities)), "folder",
                        {"path": str(Path(data).resolve()), "split": split})
