"""ADE20K as the scene-parsing benchmark ships it (``ADEChallengeData2016``) -> folders.

Source layout: ``images/{training,validation}/<name>.jpg`` and ``annotations/{training,
validation}/<name>.png`` (8-bit class ids: 0 = "other" / unlabelled, 1..150 the classes of
``objectInfo150.txt`` (or ``.csv``) when it is there). Written: ``out/{train,val}/rgb/<name>.jpg``
(the JPEG bytes unchanged) and ``out/{train,val}/semseg/<name>.png`` with ids 0..149 and 255 =
unlabelled (the manifest's ``semseg.ignore_index``). An image whose size differs from its
annotation raises a ValueError naming both files. A JPEG with an EXIF orientation tag is written
as the PNG of its stored (unrotated) pixels, since the annotation is drawn on those.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from multimae.data.codecs import encode_png, read_array, read_image
from multimae.data.importers.common import finish_manifest, semseg_entry, shift_labels, start_manifest
from multimae.engine.files import write_bytes_atomic

NUM_CLASSES = 150
SPLITS = {"training": "train", "validation": "val"}


def class_names(root: Path) -> tuple[str, ...]:
    """The 150 names from ``objectInfo150.txt`` / ``.csv`` (first synonym of each), else ``class 1..150``."""
    for name in ("objectInfo150.txt", "objectInfo150.csv"):
        path = root / name
        if path.is_file():
            rows = list(csv.reader(path.read_text().splitlines(), delimiter="\t" if name.endswith("txt") else ","))
            header = [h.strip().lower() for h in rows[0]]
            col = header.index("name") if "name" in header else len(header) - 1
            names = tuple(r[col].split(";")[0].strip() for r in rows[1:] if len(r) > col)
            if len(names) == NUM_CLASSES:
                return names
    return tuple(f"class {i + 1}" for i in range(NUM_CLASSES))


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    images, annotations = root / "images" / split, root / "annotations" / split
    for folder in (images, annotations):
        if not folder.is_dir():
            raise ValueError(f"{folder}: not found (expected ADEChallengeData2016/{{images,annotations}}/{split}/)")
    jpgs = {p.stem: p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
    pngs = {p.stem: p for p in annotations.iterdir() if p.suffix.lower() == ".png"}
    if not jpgs:
        raise ValueError(f"{images}: found 0 .jpg images")
    unmatched = sorted(set(jpgs) ^ set(pngs))
    if unmatched:
        raise ValueError(f"{root}: {len(unmatched)} image(s) without annotation or annotation(s) without image in "
                         f"{split}, e.g. {unmatched[0]}")
    return [(jpgs[k], pngs[k]) for k in sorted(jpgs)]


def _write_pair(image: Path, annotation: Path, split_dir: Path) -> None:
    data = image.read_bytes()
    with Image.open(image) as im:
        size = im.size  # stored pixels, W x H
        rotated = im.getexif().get(0x0112, 1) not in (1, None)
    labels = read_array(annotation.read_bytes(), str(annotation))
    if labels.ndim != 2 or (labels.shape[1], labels.shape[0]) != size:
        raise ValueError(f"{annotation}: {labels.shape[1]}×{labels.shape[0]} (W×H, {labels.ndim} axes) does not "
                         f"match {image} ({size[0]}×{size[1]})")
    rgb_path = split_dir / "rgb" / image.name
    if rotated:  # the annotation is drawn on the stored pixels: keep them upright as stored
        with Image.open(image) as im:
            write_bytes_atomic(rgb_path.with_suffix(".png"), encode_png(np.asarray(im.convert("RGB"))))
    else:
        read_image(data, str(image), rgb=True)  # undecodable images fail here, naming the file
        write_bytes_atomic(rgb_path, data)
    write_bytes_atomic(split_dir / "semseg" / f"{annotation.stem}.png", encode_png(shift_labels(labels, NUM_CLASSES)))


def import_ade20k(source: str | Path, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write ``out/{train,val}/{rgb,semseg}/`` and the manifest from ``ADEChallengeData2016``."""
    source, root = Path(source), Path(out)
    if not source.is_dir():
        raise ValueError(f"{source}: not a folder (expected ADEChallengeData2016/)")
    pairs = {split: _pairs(source, split) for split in SPLITS if (source / "images" / split).is_dir()}
    if not pairs:
        raise ValueError(f"{source}: no images/training or images/validation folder (expected ADEChallengeData2016/)")
    manifest = start_manifest(root, "ade20k", source.resolve(), [SPLITS[s] for s in pairs],
                              classes=list(class_names(source)), num_classes=NUM_CLASSES,
                              semseg=semseg_entry(NUM_CLASSES))
    total = sum(len(p) for p in pairs.values())
    with tqdm(total=total, desc="ade20k", unit="image", disable=not progress) as bar:
        for split, items in pairs.items():
            split_dir = root / SPLITS[split]
            for image, annotation in items:
                if not (split_dir / "semseg" / f"{annotation.stem}.png").is_file():  # written last
                    _write_pair(image, annotation, split_dir)
                bar.update(1)
    return finish_manifest(root, manifest, {SPLITS[s]: len(p) for s, p in pairs.items()})
