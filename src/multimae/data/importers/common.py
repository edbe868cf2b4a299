"""What the importers share: atomic files, the manifest of an imported dataset, resumption."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multimae.data.codecs import DEPTH_SCALE
from multimae.data.manifest import read_manifest, write_manifest

IGNORE_INDEX = 255  # unlabelled pixels of imported class maps (8-bit PNG; left out of loss and mIoU)
IGNORE_INDEX_16 = 65535  # the same for more than 255 classes (16-bit PNG)


def ignore_index(num_classes: int) -> int:
    return IGNORE_INDEX if num_classes <= IGNORE_INDEX else IGNORE_INDEX_16


def start_manifest(root: Path, dataset: str, source: Path, splits: Sequence[str], **fields: Any) -> dict[str, Any]:
    """The manifest of ``root`` with ``splits`` marked incomplete (written at once). Resuming into a
    folder written from another dataset or with other settings raises a ValueError."""
    root.mkdir(parents=True, exist_ok=True)
    fresh: dict[str, Any] = {"generator": f"multimae data import {dataset}", "dataset": dataset,
                             "source": str(source), "format": "folder", **fields, "splits": {}}
    manifest = read_manifest(root) if (root / "manifest.json").is_file() else None
    if manifest is not None:
        for key in ("generator", *fields):
            if manifest.get(key) != fresh.get(key):
                raise ValueError(f"{root / 'manifest.json'}: existing data has {key}={manifest.get(key)!r}, this "
                                 f"import gives {fresh.get(key)!r}; use another --out or the same settings to resume")
        fresh["splits"] = manifest.get("splits", {})
    for split in splits:
        fresh["splits"][split] = {**fresh["splits"].get(split, {}), "complete": False}
    write_manifest(root, fresh)
    return fresh


def finish_manifest(root: Path, manifest: dict[str, Any], counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    for split, count in counts.items():
        manifest["splits"][split] = {**manifest["splits"].get(split, {}), **extra.get(split, {}), "count": count,
                                     "complete": True}
    write_manifest(root, manifest)
    return manifest


def depth_entry() -> dict[str, Any]:
    return {"encoding": "png16", "scale": DEPTH_SCALE, "units": "millimetres (value = metres * 1000)", "invalid": 0}


def semseg_entry(num_classes: int) -> dict[str, Any]:
    ignore = ignore_index(num_classes)
    return {"encoding": "png8" if ignore == IGNORE_INDEX else "png16", "ignore_index": ignore,
            "ids": f"0 .. {num_classes - 1}; {ignore} = unlabelled (ignored)"}


def shift_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Dataset ids 1..K with 0 = unlabelled -> 0..K-1 with `ignore_index` (255, or 65535 above
    255 classes) = unlabelled."""
    if labels.size and int(labels.max()) > num_classes:
        raise ValueError(f"label {int(labels.max())} is above the {num_classes} classes")
    ignore = ignore_index(num_classes)
    dtype = np.uint8 if ignore == IGNORE_INDEX else np.uint16
    return np.where(labels == 0, ignore, labels.astype(np.int64) - 1).astype(dtype)
