"""`generate`: write the world to disk as a folder tree or as tar shards, resumably.

Folder layout (the official MultiMAE one, with a class level named after the scene label):
``out/<split>/<modality>/<label name>/<key>.<ext>``, the caption as ``caption/<label>/<key>.txt`` and the
world's sequences (boxes in pixels, metadata, palette) as ``<sequence>/<label>/<key>.txt``.
Shards: ``out/<split>/shard-000000.tar``, ... (see `multimae.data.shards`). ``out/manifest.json``
records the generator version, classes, palette and encodings (see `multimae.data.manifest`).

Resuming: a sample's files are written each atomically with the caption last, and a shard is
renamed into place when complete, so rerunning the same command writes only what is missing.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from multimae.data.codecs import MAPS, SUFFIX, TEXT, member_suffix
from multimae.data.generated import WORLD_SEQUENCES, encode_world_sample
from multimae.data.manifest import read_manifest, world_manifest, write_manifest
from multimae.data.shards import write_shard
from multimae.data.world import LABEL_NAMES, SPLITS, check_world_settings, world_sample
from multimae.engine.children import die_with_parent
from multimae.engine.files import write_bytes_atomic


@dataclass(frozen=True)
class GenerateConfig:
    count: int  # scenes 0 .. count - 1 of the split
    size: int = 64  # render size in pixels
    fmt: str = "folder"  # "folder" or "shards"
    split: str = "train"
    difficulty: float = 1.0
    class_colors: float = 0.0  # chance that an object wears its class's colour (see `sample_scene`)
    shard_size: int = 1000  # samples per shard
    workers: int = 1  # rendering processes

    def __post_init__(self) -> None:
        if self.fmt not in ("folder", "shards"):
            raise ValueError(f"format must be 'folder' or 'shards', got {self.fmt!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.count < 1 or self.size < 8 or self.shard_size < 1 or self.workers < 1:
            raise ValueError(f"count, shard_size, workers must be >= 1 and size >= 8: {self}")
        check_world_settings(self.difficulty, self.class_colors)


def _encoded(job: tuple[str, int, int, float, float]) -> tuple[int, int, dict[str, bytes]]:
    split, index, size, difficulty, class_colors = job
    ws = world_sample(split, index, size, difficulty, class_colors)
    return index, ws.label, encode_world_sample(ws)


def _render(config: GenerateConfig, indices: list[int]) -> Iterator[tuple[int, int, dict[str, bytes]]]:
    jobs = [(config.split, i, config.size, config.difficulty, config.class_colors) for i in indices]
    if config.workers == 1:
        yield from map(_encoded, jobs)
        return
    with multiprocessing.get_context().Pool(config.workers, die_with_parent, (os.getpid(),)) as pool:
        yield from pool.imap(_encoded, jobs, chunksize=4)


def _generate_folder(root: Path, config: GenerateConfig, bar: tqdm) -> dict[str, Any]:
    split_dir = root / config.split
    done = {p.stem for p in split_dir.glob("caption/*/*.txt")}
    todo = [i for i in range(config.count) if f"{i:08d}" not in done]
    bar.update(config.count - len(todo))
    for index, label, files in _render(config, todo):
        key, cls = f"{index:08d}", LABEL_NAMES[label]
        for modality in (*MAPS, *WORLD_SEQUENCES, *TEXT):  # the caption last: it marks the sample done
            folder = split_dir / modality / cls
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(folder / f"{key}.{SUFFIX[modality]}", files[member_suffix(modality)])
        bar.update(1)
    return {"count": config.count, "layout": "<split>/<modality>/<label name>/<key>.<ext>"}


def _generate_shards(root: Path, config: GenerateConfig, bar: tqdm, old_count: int | None) -> dict[str, Any]:
    """``old_count``: the count of the run that wrote the shards already there (None: the same)."""
    split_dir = root / config.split
    split_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for first in range(0, config.count, config.shard_size):
        end = min(first + config.shard_size, config.count)
        indices = list(range(first, end))
        path = split_dir / f"shard-{first // config.shard_size:06d}.tar"
        shards.append({"path": path.name, "count": len(indices)})
        # An existing shard is kept when it holds these scenes: it was not the last, partial shard
        # of a smaller count.
        if path.is_file() and (old_count is None or min(first + config.shard_size, old_count) == end):
            bar.update(len(indices))
            continue
        samples = []
        for index, _label, files in _render(config, indices):
            samples.append((f"{index:08d}", files))
            bar.update(1)
        write_shard(path, samples)
    return {"count": config.count, "shard_size": config.shard_size, "shards": shards}


def _check_resumable(root: Path, config: GenerateConfig, old: dict[str, Any]) -> None:
    """Refuse to add to a split whose samples would not be exactly scenes ``0 .. count - 1``
    afterwards: a readers reads every sample on disk, so none may lie beyond the manifest's count."""
    if config.fmt == "shards":
        if old.get("shard_size") is not None and old["shard_size"] != config.shard_size:
            raise ValueError(f"{root}: split {config.split!r} was written with shard_size {old['shard_size']}, this "
                             f"run asks for {config.shard_size}; use the same --shard-size to resume, or another --out")
        if old.get("count") is not None and old["count"] > config.count:
            raise ValueError(f"{root}: split {config.split!r} holds {old['count']} samples in shards, more than "
                             f"--count {config.count}; use --count {old['count']} or more, or another --out")
        return
    keys = {int(p.stem) for p in (root / config.split).glob("*/*/*") if p.stem.isdigit()}
    beyond = sorted(k for k in keys if k >= config.count)
    if beyond:
        raise ValueError(f"{root}: split {config.split!r} already holds {max(keys) + 1} samples (scenes up to "
                         f"{beyond[-1]}), more than --count {config.count}; use --count {max(keys) + 1} or more, "
                         "or another --out")


def generate(out: str | Path, config: GenerateConfig, progress: bool = True) -> dict[str, Any]:
    """Write scenes ``0 .. count - 1`` of ``config.split`` under ``out``; returns the manifest."""
    root = Path(out)
    if root.is_dir() and not (root / "manifest.json").is_file() and any(root.iterdir()):
        raise ValueError(f"--out {root}: exists, is not empty and holds no manifest.json of generated data; "
                         "use an empty or new folder (generate writes only where it wrote before)")
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root}: exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    for stale in [*root.glob("manifest.json.*.tmp"), *(root / config.split).rglob("*.tmp")]:
        stale.unlink()  # left by a killed run: files are written as .tmp and renamed when complete
    manifest = read_manifest(root) if (root / "manifest.json").is_file() else None
    fresh = world_manifest(config.fmt, config.size, config.difficulty, config.class_colors)
    if manifest is None:
        manifest = fresh
    else:
        manifest.setdefault("class_colors", 0.0)  # data written before the setting existed
        for field in ("generator_version", "format", "size", "difficulty", "class_colors"):
            if manifest.get(field) != fresh[field]:
                raise ValueError(
                    f"{root / 'manifest.json'}: existing data has {field}={manifest.get(field)!r}, this run "
                    f"asks for {fresh[field]!r}; use another --out or the same settings to resume"
                )
        _check_resumable(root, config, manifest["splits"].get(config.split, {}))
    # Recorded before any sample is written, so that a run killed at any point resumes with it.
    old_count = (manifest["splits"].get(config.split) or {}).get("count")
    started = {"count": config.count, **({"shard_size": config.shard_size} if config.fmt == "shards" else {})}
    manifest["splits"][config.split] = {**manifest["splits"].get(config.split, {}), **started, "complete": False}
    write_manifest(root, manifest)
    with tqdm(total=config.count, desc=f"{config.split} {config.fmt}", unit="scene", disable=not progress) as bar:
        if config.fmt == "folder":
            entry = _generate_folder(root, config, bar)
        else:
            entry = _generate_shards(root, config, bar, old_count)
    manifest["splits"][config.split] = {**entry, "complete": True, "config": asdict(config)}
    write_manifest(root, manifest)
    return manifest
