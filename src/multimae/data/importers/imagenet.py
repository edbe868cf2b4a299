"""ImageNet (ILSVRC-2012) in class folders -> the folder layout with a class level.

Source: ``DIR/train/<wnid>/*.JPEG`` and ``DIR/val/<wnid>/*.JPEG`` (the validation images sorted
into class folders, as the usual preparation script does; a flat ``val/`` is refused with a
message). Written: ``out/{train,val}/rgb/<wnid>/<name>.<ext>``, the files unchanged (copied, or
hard-linked with ``link=True`` when on the same file system), and a manifest whose
``label_names`` (the sorted class folders of ``train``) fix the class indices of both splits.
Each image's header is checked (a file PIL cannot identify raises a ValueError naming it, or is
skipped and listed with ``on_error="skip"``); decoding (grey and CMYK JPEGs, EXIF orientation)
follows `multimae.data.codecs.read_image` when the data is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from multimae.data.importers.common import finish_manifest, start_manifest
from multimae.engine.files import atomic_path, write_bytes_atomic

SUFFIXES = (".jpeg", ".jpg", ".png")


def _classes(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise ValueError(f"{split_dir}: not found (expected DIR/{{train,val}}/<class>/*.JPEG)")
    flat = [p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    if flat:
        raise ValueError(f"{split_dir}: holds images directly ({flat[0].name}, ...): sort them into one folder per "
                         "class first (e.g. with the usual valprep.sh for ImageNet's val)")
    out = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
           for d in sorted(split_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not any(out.values()):
        raise ValueError(f"{split_dir}: found 0 images in class folders (extensions {SUFFIXES})")
    return out


def _check(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 -- the header is read
    except (UnidentifiedImageError, OSError) as err:
        return f"{path}: cannot decode ({err})"
    return None


def import_imagenet(source: str | Path, out: str | Path, link: bool = False, on_error: str = "raise",
                    progress: bool = True) -> dict[str, Any]:
    """Write ``out/{train,val}/rgb/<class>/`` and the manifest from ``source/{train,val}/<class>/``."""
    source, root = Path(source), Path(out)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    splits = {s: _classes(source / s) for s in ("train", "val") if (source / s).exists()}
    if "train" not in splits:
        raise ValueError(f"{source}/train: not found (expected DIR/{{train,val}}/<class>/*.JPEG)")
    names = sorted(splits["train"])
    stray = sorted(set(splits.get("val", {})) - set(names))
    if stray:
        raise ValueError(f"{source}/val: class folders {stray[:3]} are not among train's classes")
    manifest = start_manifest(root, "imagenet", source.resolve(), list(splits), label_names=names)
    skipped: dict[str, list[str]] = {s: [] for s in splits}
    counts = {s: 0 for s in splits}
    total = sum(len(files) for classes in splits.values() for files in classes.values())
    with tqdm(total=total, desc="imagenet", unit="image", disable=not progress) as bar:
        for split, classes in splits.items():
            for cls, files in classes.items():
                for path in files:
                    bar.update(1)
                    target = root / split / "rgb" / cls / path.name
                    if target.is_file():
                        counts[split] += 1
                        continue
                    problem = _check(path)
                    if problem is not None:
                        if on_error == "raise":
                            raise ValueError(problem)
                        skipped[split].append(str(path))
                        continue
                    if link:
                        with atomic_path(target) as tmp:
                            os.link(path, tmp)
                    else:
                        write_bytes_atomic(target, path.read_bytes())
                    counts[split] += 1
    return finish_manifest(root, manifest, counts, **{s: {"skipped": v} for s, v in skipped.items()})
