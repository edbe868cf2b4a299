"""The labelling loops: a folder of images -> the folder layout, tar shards -> tar shards.

Both decode images in DataLoader workers, label them in chunks of a few batches and write every
file atomically (a temporary file renamed into place), so an interrupted run leaves only whole
files behind. Folder output is resumable per image and modality (a label file that exists is not
recomputed); shard output per shard (a shard is written whole when all its samples are labelled).
Images that cannot be decoded are logged by name, listed in the result and skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from multimae.data.codecs import READABLE, encode_png, member_suffix
from multimae.data.shards import iter_shard, write_shard
from multimae.engine.children import die_with_parent
from multimae.engine.files import atomic_path
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.pseudolabel.base import Labeler
from multimae.pseudolabel.sources import (
    SHARD_IMAGE_SUFFIXES,
    DecodedImage,
    ImageItem,
    decode_file,
    decode_image,
    shard_image_member,
)
from multimae.pseudolabel.store import encode_label

log = logging.getLogger(__name__)
CHUNK_BATCHES = 4  # images decoded and labelled together = batch_size * CHUNK_BATCHES


@dataclass
class Progress:
    """What one process did. ``total``: images (folder) or shards in its slice; ``done``: samples
    now complete on disk, ``labelled`` of them in this run; ``skipped``: names of unreadable
    images (or shards); ``complete``: nothing is left to do; ``shards``: written shards."""

    total: int = 0
    done: int = 0
    labelled: int = 0
    skipped: list[str] = field(default_factory=list)
    complete: bool = False
    shards: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, message: str) -> None:
        self.skipped.append(message.split(": ", 1)[0])
        log.warning("skipped unreadable image %s", message)


def write_atomic(path: Path, data: bytes | None = None, copy_from: Path | None = None, link_to: Path | None = None) -> None:
    """Write ``data`` (or a copy of / a symbolic link to a file) at ``path`` atomically."""
    with atomic_path(path) as tmp:
        if data is not None:
            tmp.write_bytes(data)
        elif copy_from is not None:
            shutil.copyfile(copy_from, tmp)
        else:
            assert link_to is not None
            tmp.symlink_to(link_to)


def label_images(labelers: Mapping[str, Labeler], images: Sequence[np.ndarray], needs: Sequence[set[str]]
                 ) -> list[dict[str, bytes]]:
    """Encoded labels ``{modality: file bytes}`` per image, for the modalities each one needs."""
    out: list[dict[str, bytes]] = [{} for _ in images]
    for modality, labeler in labelers.items():
        index = [i for i, need in enumerate(needs) if modality in need]
        if not index:
            continue
        labels = labeler([images[i] for i in index])
        for i, label in zip(index, labels):
            out[i][modality] = encode_label(modality, label, labeler.num_classes)
    return out


class _Decode(Dataset):
    """``decode(item)`` for each item, in DataLoader workers (picklable: a module-level function or
    a partial of one); an unreadable image gives its error message instead."""

    def __init__(self, decode: Callable[[Any], DecodedImage], items: Sequence[Any]) -> None:
        self.decode, self.items = decode, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, DecodedImage | str]:
        try:
            return index, self.decode(self.items[index])
        except ValueError as err:
            return index, str(err)


def _decoded_chunks(decode: Callable[[Any], DecodedImage], items: Sequence[Any], chunk: int, workers: int
                    ) -> DataLoader:
    return DataLoader(_Decode(decode, items), batch_size=chunk, collate_fn=list, num_workers=workers,
                      worker_init_fn=partial(die_with_parent, os.getpid()) if workers else None)


# --------------------------------------------------------------------------- folders

@dataclass(frozen=True)
class FolderTarget:
    """Where the labels of a folder run go: ``out/<split>/<modality>/[<class>/]<stem>.<ext>``."""

    split_dir: Path
    rgb_mode: str = "copy"  # copy | symlink | none (labelling the pipeline's own rgb folder in place)

    def label_path(self, item: ImageItem, modality: str) -> Path:
        return self.split_dir / modality / item.rel_dir / f"{item.stem}{READABLE[modality][0]}"

    def rgb_paths(self, item: ImageItem) -> tuple[Path, Path]:
        """(the copy keeping the original bytes, the PNG written when they are not readable as is)."""
        folder = self.split_dir / DEFAULT_IMAGE_MODALITY / item.rel_dir
        return folder / f"{item.stem}{item.path.suffix}", folder / f"{item.stem}.png"

    def missing(self, item: ImageItem, modalities: Sequence[str]) -> set[str]:
        need = {m for m in modalities if not self.label_path(item, m).is_file()}
        if self.rgb_mode != "none" and not any(p.is_file() for p in self.rgb_paths(item)):
            need.add(DEFAULT_IMAGE_MODALITY)
        return need

    def write_rgb(self, item: ImageItem, image: DecodedImage) -> None:
        kept, png = self.rgb_paths(item)
        if not image.keep_bytes:
            write_atomic(png, encode_png(image.rgb))
        elif self.rgb_mode == "symlink":
            write_atomic(kept, link_to=item.path.resolve())
        else:
            write_atomic(kept, copy_from=item.path)


def label_folder(items: Sequence[ImageItem], target: FolderTarget, labelers: Mapping[str, Labeler],
                 batch_size: int, workers: int = 0, max_images: int | None = None, progress: bool = True,
                 desc: str = "labelling") -> Progress:
    """Label ``items`` into ``target``; images whose files all exist are skipped."""
    modalities = tuple(labelers)
    needs = [target.missing(item, modalities) for item in items]
    todo = [(item, need) for item, need in zip(items, needs) if need]
    result = Progress(total=len(items), done=len(items) - len(todo))
    if max_images is not None:
        todo = todo[:max_images]
    loader = _decoded_chunks(decode_file, [item for item, _ in todo], batch_size * CHUNK_BATCHES, workers)
    with tqdm(total=len(items), initial=result.done, desc=desc, unit="img", disable=not progress) as bar:
        for chunk in loader if todo else ():
            good = []
            for index, decoded in chunk:
                if isinstance(decoded, str):
                    result.skip(decoded)
                else:
                    good.append((todo[index][0], todo[index][1], decoded))
            encoded = label_images(labelers, [d.rgb for _, _, d in good], [n for _, n, _ in good])
            for (item, need, decoded), files in zip(good, encoded):
                for modality, data in files.items():
                    write_atomic(target.label_path(item, modality), data)
                if DEFAULT_IMAGE_MODALITY in need:
                    target.write_rgb(item, decoded)
                if target.rgb_mode == "none" and not decoded.keep_bytes:
                    log.warning("%s is not an 8-bit RGB PNG/JPEG: the data pipeline will not read it", item.path)
            result.labelled += len(good)
            bar.update(len(chunk))
    result.done += result.labelled
    result.complete = result.done + len(result.skipped) == result.total
    return result


# --------------------------------------------------------------------------- shards

def _rgb_member(suffix: str, decoded: DecodedImage) -> str:
    if decoded.keep_bytes:
        return "rgb.png" if suffix.endswith("png") else "rgb.jpg"
    return "rgb.png"


def _decode_sample(source: Path, sample: tuple[str, dict[str, bytes]]) -> DecodedImage:
    key, files = sample
    member = shard_image_member(files)
    if member is None:
        raise ValueError(f"{source}:{key}: no image member (one of {', '.join(SHARD_IMAGE_SUFFIXES)})")
    return decode_image(files[member], f"{source}:{key}.{member}", member.endswith(("png", "jpg", "jpeg")))


def _shard_count(path: Path) -> int:
    return len({key for key, _ in iter_shard(path)})


def label_shard(source: Path, target: Path, labelers: Mapping[str, Labeler], batch_size: int, workers: int,
                result: Progress) -> int:
    """Label every sample of the shard ``source`` into the new shard ``target``; returns its size.

    Output members: the sample's other members unchanged, the image as ``rgb.png`` / ``rgb.jpg``
    (its bytes kept when the pipeline reads them as they are), one member per label
    (``<modality>.png``, ``<modality>.npy``: `multimae.data.codecs.member_suffix`).
    """
    samples = list(iter_shard(source))
    produced = {member_suffix(m) for m in labelers} | {"rgb.png", "rgb.jpg"}

    out = []
    for chunk in _decoded_chunks(partial(_decode_sample, source), samples, batch_size * CHUNK_BATCHES, workers):
        good = [(i, d) for i, d in chunk if not isinstance(d, str)]
        for _, message in (c for c in chunk if isinstance(c[1], str)):
            result.skip(message)
        encoded = label_images(labelers, [d.rgb for _, d in good], [set(labelers)] * len(good))
        for (i, decoded), labels in zip(good, encoded):
            key, files = samples[i]
            member = shard_image_member(files)
            assert member is not None
            kept = {s: b for s, b in files.items() if s != member and s not in produced}
            image = files[member] if decoded.keep_bytes else encode_png(decoded.rgb)
            out.append((key, {**kept, _rgb_member(member, decoded): image, **{member_suffix(m): b for m, b in labels.items()}}))
        result.labelled += len(good)
    write_shard(target, out)
    return len(out)


def label_shards(sources: Sequence[Path], out_dir: Path, labelers: Mapping[str, Labeler], batch_size: int,
                 workers: int = 0, max_images: int | None = None, progress: bool = True,
                 desc: str = "labelling") -> Progress:
    """Label each shard of ``sources`` into ``out_dir/<same name>``; existing outputs are kept.

    ``max_images``: stop after the shard in which this many images have been labelled.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Progress(total=len(sources))
    handled = 0
    with tqdm(total=len(sources), desc=desc, unit="shard", disable=not progress) as bar:
        for source in sources:
            if max_images is not None and result.labelled >= max_images:
                break
            target = out_dir / source.name
            if target.resolve() == source.resolve():
                raise ValueError(f"{source}: the output shard would overwrite its input; choose another --out")
            try:
                count = _shard_count(target) if target.is_file() else label_shard(
                    source, target, labelers, batch_size, workers, result)
                result.shards.append({"path": target.name, "count": count})
                result.done += count
            except ValueError as err:  # an unreadable tar: report it and go on
                result.skip(str(err))
            handled += 1
            bar.update(1)
            bar.set_postfix(images=result.done)
    result.complete = handled == len(sources)
    return result
