"""How each modality is stored on disk and decoded into a sample.

One encoding is shared by every reader and writer (folders, shards, the on-the-fly world), so a
sample read back from disk equals the sample the world produced, bit for bit:

==========  ===============================  ==================================================
modality    on disk                          in a sample
==========  ===============================  ==================================================
rgb         8-bit RGB PNG (JPEG readable)    float32 ``(3, H, W)`` in [0, 1]
depth       16-bit PNG, ``round(z * 1000)``  float32 ``(1, H, W)`` z-depth in scene units
            (millimetres), 0 = invalid;      (metres for real data), NaN where invalid
            or ``.npy`` float, 0 = invalid
normals     8-bit RGB PNG, ``(n + 1) / 2``   float32 ``(3, H, W)`` unit vectors, camera frame
                                             (x right, y down, z forward)
semseg      8-bit PNG, or 16-bit PNG when    int64 ``(H, W)`` class ids
            there are more than 256 classes
instance    8- or 16-bit PNG, 0 = none       int64 ``(H, W)``
caption     UTF-8 text (``.txt``), not empty  str, stripped of surrounding white space
boxes       UTF-8 text (``.txt``), 4M's       str: whole boxes only, inside the sample's maps
            ``v0=x0 v1=y0 v2=x1 v3=y1 name``  (empty: no box)
            per box, in pixels of the maps
metadata,   UTF-8 text (``.txt``) of a        str (may be empty)
palette     serialised sequence
feature     ``.npy`` float (G, C) or (C,)    float32 ``(G, C)`` global vectors, finite
label       decimal text (``.cls``)          int
==========  ===============================  ==================================================

Every picture is opened by `read_image`, the one rule of the project: the EXIF orientation is
applied (pixels are the displayed image) and an rgb file of any mode (grey, 16-bit grey, palette,
CMYK, alpha) becomes 8-bit RGB.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from multimae.data.boxes import check_boxes_text
from multimae.modalities.registry import stored_modalities

DEPTH_SCALE = 1000.0  # stored value per scene unit: millimetres when the unit is the metre
DEPTH_MAX = 65535 / DEPTH_SCALE  # the largest depth a 16-bit PNG can hold
STORED = stored_modalities()  # {modality: encoding}, from the registry (`ModalitySpec.encoding`)
DENSE = tuple(m for m, e in STORED.items() if e in ("rgb8", "depth16", "unit_vectors8"))
CLASS_MAPS = tuple(m for m, e in STORED.items() if e in ("class_ids", "instance_ids"))
MAPS = DENSE + CLASS_MAPS
TEXT = tuple(m for m, e in STORED.items() if e == "text")
BOXES = tuple(m for m, e in STORED.items() if e == "box_text")
# Serialised sequences (4M's boxes, metadata, palette), stored as text and tokenised by a sequence tokenizer.
SEQUENCES = BOXES + tuple(m for m, e in STORED.items() if e == "sequence_text")
VECTORS = tuple(m for m, e in STORED.items() if e == "vectors")
MODALITIES = MAPS + TEXT + SEQUENCES + VECTORS
# The extensions a reader accepts for each encoding, the first being the one written.
EXTENSIONS = {"rgb8": (".png", ".jpg", ".jpeg"), "depth16": (".png", ".npy"), "unit_vectors8": (".png",),
              "class_ids": (".png",), "instance_ids": (".png",), "text": (".txt",), "box_text": (".txt",),
              "sequence_text": (".txt",), "vectors": (".npy",)}
# The one modality <-> file-name table: the extensions a reader accepts for each modality, the
# first being the one written. Folders hold ``<modality>/.../<key><ext>``; shard members are
# ``<key>.<modality><ext>`` (`member_suffix`), but a caption is ``<key>.txt`` and a label ``<key>.cls``.
READABLE = {m: EXTENSIONS[STORED[m]] for m in MODALITIES}
SUFFIX = {m: exts[0][1:] for m, exts in READABLE.items()}  # the extension written, without the dot
LABEL_SUFFIX = "cls"  # the label's shard member suffix (decimal text)
MAX_TEXT_CHARS = 10_000  # a longer text file is not a caption (a wrong or corrupt file): an error


def member_suffix(modality: str, ext: str | None = None) -> str:
    """Shard member suffix of ``modality`` stored with extension ``ext`` (default: the one written):
    ``rgb.png``, ``depth.npy``; text modalities are named by their extension alone (``txt``)."""
    ext = ext or READABLE[modality][0]
    return ext[1:] if modality in TEXT else f"{modality}{ext}"


MEMBER_TO_MODALITY = {member_suffix(m, ext): m for m, exts in READABLE.items() for ext in exts}


# --------------------------------------------------------------------------- arrays <-> storage

# The conversions below are shared by the files and by the in-memory world pool
# (`multimae.data.pool`), which stores rgb and depth exactly as the files do (channel first).

def rgb_to_storage(rgb: torch.Tensor) -> torch.Tensor:
    """float rgb in [0, 1] -> uint8 ``round(x * 255)``, any shape."""
    return (rgb * 255).round().to(torch.uint8)


def rgb_from_storage(stored: torch.Tensor) -> torch.Tensor:
    """uint8 rgb -> float32 in [0, 1], any shape."""
    return stored.float() / 255


def depth_to_storage(depth: torch.Tensor, scale: float = DEPTH_SCALE) -> torch.Tensor:
    """float z-depth (NaN = invalid) -> uint16 ``round(z * scale)``, 0 = invalid, any shape; no
    range check (`quantize_depth` checks)."""
    return torch.where(torch.isfinite(depth), depth * scale, 0.0).round().to(torch.int32).to(torch.uint16)


def depth_from_storage(stored: torch.Tensor, scale: float = DEPTH_SCALE) -> torch.Tensor:
    """Integer stored depth (uint16 / uint8) -> float32 z-depth ``stored / scale``, NaN where 0."""
    d = stored.to(torch.int32).float()
    return torch.where(d != 0, d / torch.full_like(d, scale), torch.full_like(d, float("nan")))


def quantize_depth(depth: np.ndarray, scale: float = DEPTH_SCALE) -> np.ndarray:
    """float z-depth ``(H, W)`` (NaN = invalid) -> uint16 ``(H, W)``, 0 = invalid."""
    valid = np.isfinite(depth)
    if (depth[valid] < 0).any() or (depth[valid] * scale > 65535).any():
        raise ValueError(f"depth must lie in [0, {65535 / scale:.3f}] to fit 16 bits at scale {scale}")
    return depth_to_storage(torch.from_numpy(np.array(depth)), scale).numpy()  # a copy: it may be read-only


def quantize_normals(normals: np.ndarray) -> np.ndarray:
    """Unit vectors ``(H, W, 3)`` in [-1, 1] -> uint8 ``(H, W, 3)``."""
    return np.round((np.clip(normals, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def class_map_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.uint16


# --------------------------------------------------------------------------- decoding

def decode_dense(modality: str, array: np.ndarray, name: str, depth_scale: float = DEPTH_SCALE) -> torch.Tensor:
    """A stored array -> float32 ``(C, H, W)`` as ``modality``'s encoding says (`STORED`); ``name``
    (the file) is quoted in errors."""
    encoding = STORED.get(modality)
    if encoding == "rgb8":
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"{name}: {modality} must be an 8-bit 3-channel image, got {array.dtype} {array.shape}")
        return rgb_from_storage(torch.from_numpy(array.transpose(2, 0, 1).copy()))  # a copy: it may be read-only
    if encoding == "depth16":
        if array.ndim != 2:
            raise ValueError(f"{name}: {modality} must be a single-channel map, got shape {array.shape}")
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise ValueError(f"{name}: {modality} has NaN or inf values (store invalid pixels as 0)")
            if (array < 0).any():
                raise ValueError(f"{name}: {modality} has negative values")
            return torch.from_numpy(np.where(array == 0, np.float32(np.nan), array.astype(np.float32))[None])
        return depth_from_storage(torch.from_numpy(array.astype(np.int32)), depth_scale)[None]
    if encoding == "unit_vectors8":
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"{name}: {modality} must be an 8-bit 3-channel image, got {array.dtype} {array.shape}")
        n = array.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        n /= np.maximum(np.sqrt((n * n).sum(0, keepdims=True)), np.float32(1e-6))
        return torch.from_numpy(n)
    raise ValueError(f"{name}: {modality!r} is not a dense modality {DENSE}")


def decode_class_map(array: np.ndarray, name: str, num_classes: int | None = None,
                     ignore_index: int | None = None) -> torch.Tensor:
    """A stored 8/16-bit map -> int64 ``(H, W)``, checking ids against ``num_classes`` (the
    ``ignore_index`` of unlabelled pixels, e.g. 255 in imported datasets, is allowed too)."""
    if array.ndim != 2 or array.dtype.kind not in "ui":
        raise ValueError(f"{name}: class maps must be single-channel integer images, got {array.dtype} {array.shape}")
    ids = torch.from_numpy(array.astype(np.int64))
    labelled = ids if ignore_index is None else ids[ids != ignore_index]
    if num_classes is not None and labelled.numel() and int(labelled.max()) >= num_classes:
        raise ValueError(f"{name}: class id {int(labelled.max())} is not below the declared {num_classes} classes")
    return ids


# --------------------------------------------------------------------------- files and bytes

def encode_png(array: np.ndarray) -> bytes:
    """uint8 ``(H, W)`` / ``(H, W, 3)`` or uint16 ``(H, W)`` -> PNG bytes (16-bit for uint16)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_problem(err: Exception, size: int) -> str:
    """A decoder's complaint without the in-memory buffer's repr (``<_io.BytesIO object at 0x...>``)."""
    if size == 0:
        return "the file is empty"
    if isinstance(err, UnidentifiedImageError):
        return "not an image PIL can identify: truncated, or another format"
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the data", str(err))


def to_rgb8(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any PIL picture -> uint8 ``(H, W, 3)``, naming each conversion in ``notes``."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        if im.mode == "F":
            raise ValueError("a floating-point picture is not an rgb image")
        bits = 16 if im.mode.startswith("I;16") or (a.size and int(a.max()) > 255) else 8
        if bits == 16:
            a = np.round(np.clip(a, 0, 65535).astype(np.float64) / 257.0)
            notes.append("16-bit grey scaled to 8 bits (value / 257), copied to 3 channels")
        else:
            notes.append("grey copied to 3 channels")
        return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        notes.append(f"alpha channel dropped ({im.mode})")
    elif im.mode in ("L", "1"):
        notes.append("grey copied to 3 channels")
    elif im.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif im.mode == "P":
        notes.append("palette colours looked up")
    elif im.mode != "RGB":
        notes.append(f"{im.mode} converted to RGB")
    return np.asarray(im.convert("RGB"))


def read_image(data: bytes, name: str, rgb: bool = False) -> tuple[np.ndarray, list[str]]:
    """The one image reader of the project (training readers, pseudolabel, predict, importers).

    Rule: pixels are the *displayed* image, i.e. an EXIF orientation tag is applied (the map files
    of a sample rarely carry one; then nothing changes). ``rgb``: any mode becomes uint8
    ``(H, W, 3)`` (16-bit grey scaled by 1/257, grey / palette expanded, CMYK converted, alpha
    dropped); else palette / bilevel maps give their indices and 16-bit maps stay 16-bit. Returns
    the array and the conversions done, as short phrases. Raises ValueError naming ``name``.
    """
    notes: list[str] = []
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                im = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied")
            if rgb:
                array = to_rgb8(im, notes)
            else:
                if im.mode in ("P", "1"):
                    im = im.convert("L")  # palette / bilevel maps: their indices are the ids
                elif im.mode in ("RGBA", "CMYK", "YCbCr", "LA"):
                    im = im.convert("RGB")
                array = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{name}: cannot decode ({decode_problem(err, len(data))})") from None
    if array.dtype == np.int32:  # PIL opens some 16-bit PNGs as 32-bit signed
        array = array.astype(np.uint16)
    if array.size == 0:
        raise ValueError(f"{name}: empty image")
    return array, notes


def read_array(data: bytes, name: str, rgb: bool = False) -> np.ndarray:
    """Decode image (PNG/JPEG, see `read_image`) or ``.npy`` bytes; ``name`` ends with the extension."""
    if name.endswith(".npy"):
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: cannot decode ({err})") from None
    return read_image(data, name, rgb)[0]


def check_text(text: str, name: str, modality: str) -> str:
    """``text`` without surrounding white space; a ValueError naming ``name`` when nothing is left
    (an empty caption says nothing and cannot be tokenized) or when it is longer than
    `MAX_TEXT_CHARS` (not a caption: a wrong file). Token-level length is the tokenizer's business:
    it truncates to ``max_length`` and counts (`multimae.text.Encoded.truncated`)."""
    text = text.strip()
    if not text:
        raise ValueError(f"{name}: {modality} is empty (or only white space)")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{name}: {modality} has {len(text)} characters, more than a caption's {MAX_TEXT_CHARS} "
                         f"(starts {text[:40]!r})")
    return text


def decode_text(data: bytes, name: str, modality: str) -> str:
    """UTF-8 bytes -> stripped text; a ValueError naming ``name`` when they are not UTF-8 or empty."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: {modality} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})"
                         ) from None
    return check_text(text, name, modality)


def decode_sequence(data: bytes, name: str, modality: str) -> str:
    """UTF-8 bytes of a serialised sequence -> stripped text (empty allowed: a scene without boxes);
    boxes must be whole boxes (`multimae.data.boxes.check_boxes_text`). A ValueError naming ``name``."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: {modality} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})"
                         ) from None
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{name}: {modality} has {len(text)} characters, more than {MAX_TEXT_CHARS} "
                         f"(starts {text[:40]!r})")
    if STORED[modality] == "box_text":
        check_boxes_text(text, f"{name}: {modality}")
    return text


def decode_vectors(array: np.ndarray, name: str, modality: str) -> torch.Tensor:
    """A stored float array (G, C), or (C,) for one vector, -> float32 ``(G, C)``; a ValueError naming
    ``name`` when it is not a finite float array of that shape."""
    if array.dtype.kind != "f" or array.ndim not in (1, 2) or array.size == 0:
        raise ValueError(f"{name}: {modality} must be a float array of shape (C,) or (G, C), got {array.dtype} "
                         f"{array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: {modality} holds non-finite values")
    vectors = np.array(array, dtype=np.float32)  # a copy: it may be read-only
    return torch.from_numpy(vectors.reshape(1, -1) if vectors.ndim == 1 else vectors)


def decode_modality(modality: str, data: bytes, name: str, num_classes: int | None = None,
                    depth_scale: float = DEPTH_SCALE, ignore_index: int | None = None) -> torch.Tensor | str:
    """Bytes of one stored modality -> its sample value (see the table above)."""
    encoding = STORED.get(modality)
    if encoding == "text":
        return decode_text(data, name, modality)
    if encoding in ("box_text", "sequence_text"):
        return decode_sequence(data, name, modality)
    array = read_array(data, name, rgb=encoding == "rgb8")
    if encoding == "vectors":
        return decode_vectors(array, name, modality)
    if encoding == "class_ids":
        return decode_class_map(array, name, num_classes, ignore_index)
    if encoding == "instance_ids":
        return decode_class_map(array, name)
    return decode_dense(modality, array, name, depth_scale)


def manifest_entry(manifest: Mapping[str, object], encoding: str) -> Mapping[str, object]:
    """A manifest's entry (``{"scale": ..., "ignore_index": ...}``) for the first stored modality with
    ``encoding`` (``depth16``: its scale; ``class_ids``: its ignore index); empty when it has none."""
    for modality, enc in STORED.items():
        entry = manifest.get(modality)
        if enc == encoding and isinstance(entry, Mapping):
            return entry
    return {}


def check_sample(sample: Mapping[str, object], name: str) -> None:
    """Raise a ValueError naming ``name`` if the maps of a sample differ in height and width."""
    sizes = {k: tuple(v.shape[-2:]) for k, v in sample.items()
             if isinstance(v, torch.Tensor) and v.ndim >= 2 and k not in VECTORS}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k} {w}×{h}" for k, (h, w) in sizes.items())
        raise ValueError(f"{name}: modalities have different sizes ({listed}, W×H); they must be aligned pixel for "
                         "pixel (resizing them together would stretch them differently)")
    if sizes:
        for modality in BOXES:
            if isinstance(text := sample.get(modality), str):
                check_boxes_text(text, f"{name}: {modality}", next(iter(sizes.values())))


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror})") from None
