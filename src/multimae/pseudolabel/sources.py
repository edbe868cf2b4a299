"""Where the images to label come from: a folder of photos (flat, or one level of class folders,
as ImageNet) or webdataset tar shards; decoding them exactly as the data pipeline will.

Labels must line up with the RGB the pipeline reads later, so images are decoded with the same
function (`multimae.data.codecs.read_image`: EXIF orientation applied, any mode to 8-bit RGB). A
file the pipeline reads as is (PNG / JPEG, 8-bit RGB, no orientation tag) is copied unchanged;
anything else PIL can open (grey, 16-bit, palette, CMYK, alpha, rotated by EXIF, WebP, TIFF, ...)
is converted as the pipeline would and written as PNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimae.data.codecs import READABLE, read_image
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
# Shard members that hold the image, in order of preference (webdataset conventions).
SHARD_IMAGE_SUFFIXES = ("rgb.png", "rgb.jpg", "jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ImageItem:
    """One image of a folder: ``key`` is ``class/stem`` or ``stem`` (the sample key downstream)."""

    key: str
    path: Path

    @property
    def rel_dir(self) -> str:
        return self.key.rpartition("/")[0]

    @property
    def stem(self) -> str:
        return self.key.rpartition("/")[2]


@dataclass
class DecodedImage:
    """An image ready to label: ``rgb`` ``(H, W, 3)`` uint8, and whether its bytes can be kept."""

    rgb: np.ndarray
    keep_bytes: bool


def discover_images(root: str | Path) -> list[ImageItem]:
    """Images under ``root`` (files, or files one folder deep), sorted by key.

    Raises a ValueError that names the problem for: no images, images nested deeper than one
    folder, a folder mixing class folders and images, two images with the same name.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: image folder not found")
    top = [e for e in root.iterdir() if not e.name.startswith(".")]
    dirs = sorted(e for e in top if e.is_dir())
    files = [e for e in top if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    if dirs and files:
        raise ValueError(f"{root}: mixes class folders ({dirs[0].name}, ...) and images ({files[0].name}, ...); "
                         "the layout has either images or one level of class folders")
    items: dict[str, Path] = {}
    ignored: list[Path] = []

    def add(path: Path, key: str) -> None:
        if key in items:
            raise ValueError(f"{path}: two images for the same sample ({items[key].name} and {path.name})")
        items[key] = path

    for f in files:
        add(f, f.stem)
    for d in dirs:
        for f in d.iterdir():
            if f.name.startswith("."):
                continue
            if f.is_dir():
                raise ValueError(f"{f}: images nested deeper than one class folder are not supported")
            if f.suffix.lower() in IMAGE_SUFFIXES:
                add(f, f"{d.name}/{f.stem}")
            else:
                ignored.append(f)
    ignored += [e for e in top if e.is_file() and e.suffix.lower() not in IMAGE_SUFFIXES]
    if ignored:
        log.warning("ignoring %d file(s) without an image extension, e.g. %s", len(ignored), ignored[0])
    if not items:
        raise ValueError(f"{root}: no images (extensions {', '.join(IMAGE_SUFFIXES)})")
    return [ImageItem(k, items[k]) for k in sorted(items)]


def decode_image(data: bytes, name: str, readable_as_is: bool) -> DecodedImage:
    """Decode image bytes; ``readable_as_is``: the file's extension is one the pipeline reads.

    Raises ValueError naming ``name`` when the bytes are not a decodable image.
    """
    try:
        rgb, conversions = read_image(data, name, rgb=True)  # a ValueError naming the file when undecodable
    except ValueError as err:
        raise ValueError(str(err) if str(err).startswith(name) else f"{name}: cannot decode ({err})") from None
    except Exception as err:  # noqa: BLE001 -- any decoder failure (bombs, truncation) is a bad file
        raise ValueError(f"{name}: cannot decode ({type(err).__name__}: {err})") from None
    if readable_as_is and not conversions:
        return DecodedImage(rgb, True)
    if conversions:
        log.info("%s: %s", name, "; ".join(conversions))
    return DecodedImage(rgb, False)


def decode_file(item: ImageItem) -> DecodedImage:
    try:
        data = item.path.read_bytes()
    except OSError as err:
        raise ValueError(f"{item.path}: cannot read ({err.strerror})") from None
    return decode_image(data, str(item.path), item.path.suffix.lower() in READABLE[DEFAULT_IMAGE_MODALITY])


def shard_image_member(files: dict[str, bytes]) -> str | None:
    """The member suffix holding a shard sample's image, or None."""
    return next((s for s in SHARD_IMAGE_SUFFIXES if s in files), None)
