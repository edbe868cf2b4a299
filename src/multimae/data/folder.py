"""Reader of the official MultiMAE folder layout.

``root/<split>/<modality>/[<class>/]<name>.<ext>``: the class level is optional and detected
(or forced with ``class_level``); a folder that mixes class folders and files, a modality folder
without readable files, a sample present in one modality and missing in another (unless ``allow_missing=True``: the
sample's dict then lacks that modality, see `multimae.data.collate` for batching), an undecodable
file, maps of different sizes and class ids above the declared count all raise a ValueError that
names the file (``on_error="skip"`` logs and counts bad samples instead and returns the next one).
Encodings are those of `multimae.data.codecs`; depth scale, class count and the semseg ignore
index (``semseg.ignore_index``, allowed above the class count) default to the ``manifest.json``
found in ``root`` when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from multimae.data.codecs import (
    DEPTH_SCALE,
    MODALITIES,
    READABLE,
    check_sample,
    decode_modality,
    manifest_entry,
    read_file,
)
from multimae.data.indexed import IndexedSamples
from multimae.data.manifest import read_manifest
from multimae.data.transforms import Transform
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY

log = logging.getLogger(__name__)
LAYOUT = "root/<split>/<modality>/[<class>/]<name>.<ext>"


def _scan_modality(folder: Path, modality: str, class_level: bool | None) -> tuple[bool, dict[str, Path]]:
    """(has a class level, {key: path}) for one modality folder; key is ``class/name`` or ``name``."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: modality folder not found (expected layout {LAYOUT})")
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    dirs = sorted(e for e in entries if e.is_dir())
    files = [e for e in entries if e.is_file()]
    if dirs and files:
        raise ValueError(f"{folder}: mixes class folders ({dirs[0].name}, ...) and files ({files[0].name}, ...)")
    has_classes = bool(dirs)
    if class_level is True and not has_classes:
        raise ValueError(f"{folder}: class_level=True but it holds files, not class folders")
    if class_level is False and has_classes:
        raise ValueError(
            f"{folder}: holds class folders ({', '.join(d.name for d in dirs[:3])}, ...) but class_level=False; "
            "pass class_level=True or None (detect)"
        )
    candidates = [f for d in dirs for f in d.iterdir()] if has_classes else files
    found: dict[str, Path] = {}
    for f in candidates:
        if f.suffix.lower() in READABLE[modality] and not f.name.startswith("."):
            key = f"{f.parent.name}/{f.stem}" if has_classes else f.stem
            if key in found:
                raise ValueError(f"{f}: two files for the same sample ({found[key].name} and {f.name})")
            found[key] = f
    if not found:
        raise ValueError(
            f"{folder}: found 0 {modality} files with extensions {READABLE[modality]} "
            f"(expected layout {LAYOUT})"
        )
    return has_classes, found


class FolderDataset(IndexedSamples):
    """Aligned samples from ``root/<split>/<modality>/[<class>/]<name>.<ext>``.

    Items are sample dicts (see `multimae.data.codecs`) with ``key`` (``class/name`` or ``name``)
    and, with a class level, ``label``: the class index in ``class_names`` (default: the
    manifest's ``label_names``, else the sorted class folder names).

    ``allow_missing``: read the samples found in any of ``modalities``; a sample lacking a file of
    some modality has no such key. The default (False) refuses a split where a sample lacks one.
    Each modality folder must still exist and hold at least one file.
    """

    def __init__(self, root: str | Path, split: str = "train", modalities: Sequence[str] = (DEFAULT_IMAGE_MODALITY,),
                 class_level: bool | None = None, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None, depth_scale: float | None = None,
                 transform: Transform | None = None, on_error: str = "raise", seed: int = 0,
                 allow_missing: bool = False) -> None:
        super().__init__(transform, on_error, seed)
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        self.root, self.split, self.modalities = Path(root), split, tuple(modalities)
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise ValueError(f"{split_dir}: split folder not found (expected layout {LAYOUT})")
        manifest = read_manifest(self.root) or {}
        self.num_classes = num_classes if num_classes is not None else manifest.get("num_classes")
        self.depth_scale = depth_scale or manifest_entry(manifest, "depth16").get("scale", DEPTH_SCALE)
        self.ignore_index = manifest_entry(manifest, "class_ids").get("ignore_index")  # unlabelled (imported data)
        self.allow_missing = allow_missing
        self.files, self.has_classes = self._index(split_dir, class_level)
        self.keys = sorted(set().union(*(set(f) for f in self.files.values())))
        self.class_names: tuple[str, ...] = ()
        if self.has_classes:
            present = sorted({k.split("/", 1)[0] for k in self.keys})
            self.class_names = tuple(class_names or manifest.get("label_names") or present)
            stray = set(present) - set(self.class_names)
            if stray:
                raise ValueError(f"{split_dir}: class folders {sorted(stray)} are not in class_names")

    def _index(self, split_dir: Path, class_level: bool | None) -> tuple[dict[str, dict[str, Path]], bool]:
        scans = {m: _scan_modality(split_dir / m, m, class_level) for m in self.modalities}
        levels = {m: s[0] for m, s in scans.items()}
        if len(set(levels.values())) > 1:
            raise ValueError(f"{split_dir}: some modalities have a class level and some do not: {levels}")
        files = {m: s[1] for m, s in scans.items()}
        if self.allow_missing:
            return files, levels[self.modalities[0]]
        common = set.intersection(*(set(f) for f in files.values()))
        for m, f in files.items():
            others = set().union(*(set(g) for g in files.values())) - set(f)
            if others:
                example = sorted(others)[0]
                message = (f"{split_dir / m}: {len(others)} sample(s) found in other modalities are missing here, "
                           f"e.g. {example} ({next(files[o][example] for o in files if example in files[o])}); "
                           "pass allow_missing=True to read such samples without it")
                if self.on_error == "raise":
                    raise ValueError(message)
                log.warning("skipping: %s", message)
                self.num_skipped += len(others)
        return {m: {k: p for k, p in f.items() if k in common} for m, f in files.items()}, levels[self.modalities[0]]

    def __len__(self) -> int:
        return len(self.keys)

    def where(self) -> str:
        return str(self.root / self.split)

    def load(self, index: int) -> dict[str, object]:
        """Sample ``index`` without augmentation; raises ValueError naming a bad file."""
        key = self.keys[index]
        sample: dict[str, object] = {}
        for m in self.modalities:
            path = self.files[m].get(key)
            if path is None:  # only with allow_missing: the sample lacks the modality
                continue
            sample[m] = decode_modality(m, read_file(path), str(path), self.num_classes, self.depth_scale,
                                        self.ignore_index)
        check_sample(sample, f"{self.root / self.split}/*/{key}")
        if self.has_classes:
            sample["label"] = self.class_names.index(key.split("/", 1)[0])
        sample["key"] = key
        return sample

