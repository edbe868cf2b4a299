"""NYU Depth v2, the 1,449 densely labelled frames: ``nyu_depth_v2_labeled.mat`` -> folders.

The file is MATLAB v7.3, i.e. HDF5 (read with h5py). MATLAB stores arrays column-major, so h5py
sees every axis reversed: ``images`` (N, 3, W, H) uint8, ``depths`` (N, W, H) float metres,
``labels`` (N, W, H) uint16 (0 = unlabelled, 1..894 = the raw classes of ``names``), ``names``
(894 references to MATLAB char arrays). A frame is read back as (H, W) = (480, 640).

Classes. The standard NYUv2-40 classes (Gupta et al., CVPR 2013) come from a table that maps each
of the 894 raw labels to one of 40 classes; it is not in the labelled file and cannot be
downloaded here, so it is a user-supplied file (``mapping``): ``classMapping40.mat`` (its
``mapClass`` 1 x 894, and ``className`` when present) or 894 integers in a ``.npy`` / ``.txt`` /
``.json`` file (class of raw label 1, 2, ...). Without it the raw labels are written (894
classes, 16-bit PNG) and the manifest says so. Written ids are 0-based: class ``c`` (1..K) ->
``c - 1``, unlabelled -> 255 (65535 for the raw labels).

Split. The standard split (795 train / 654 test) is in ``splits.mat`` (``trainNdxs``,
``testNdxs``, 1-based frame numbers), a separate file (``splits``). The test frames are written
as the ``val`` split, which ``finetune`` evaluates on. Without it, a seeded random 795 / 654
split is written and the manifest says it is not the official one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from multimae.data.codecs import encode_png, quantize_depth
from multimae.data.importers.common import depth_entry, finish_manifest, semseg_entry, shift_labels, start_manifest
from multimae.engine.files import write_bytes_atomic

NUM_FRAMES, NUM_TRAIN, NUM_RAW = 1449, 795, 894
# The 40 class names of the NYUv2-40 mapping, in class order 1..40 (used when the mapping file has none).
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ValueError("reading MATLAB v7.3 files needs h5py: pip install 'multimae[data]' (or pip install h5py)"
                         ) from None
    return h5py


def read_mat(path: Path) -> dict[str, Any]:
    """The variables of a small .mat file, v5 (scipy) or v7.3 (h5py; axes put back in MATLAB order)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        from scipy.io import loadmat

        return {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    except (ImportError, NotImplementedError, ValueError):  # v7.3 is HDF5
        pass
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in f if isinstance(f[k], h5py.Dataset) and f[k].dtype != object}
    except OSError as err:
        raise ValueError(f"{path}: not a MATLAB file ({err})") from None


def read_splits(path: Path, num_frames: int) -> tuple[list[int], list[int]]:
    """0-based (train, test) frame indices from ``splits.mat``'s 1-based trainNdxs / testNdxs."""
    mat = read_mat(path)
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in mat]
    if missing:
        raise ValueError(f"{path}: no {missing} (expected the NYUv2 splits.mat with trainNdxs and testNdxs)")
    train, test = (sorted(int(i) - 1 for i in np.asarray(mat[k]).ravel()) for k in ("trainNdxs", "testNdxs"))
    bad = [i + 1 for i in train + test if not 0 <= i < num_frames]
    if bad or set(train) & set(test):
        raise ValueError(f"{path}: indices outside 1..{num_frames} ({bad[:3]}) or in both splits")
    return train, test


def read_mapping(path: Path, num_raw: int) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """(lookup table raw label 0..num_raw -> class 0..K (0 = unlabelled), class names or None)."""
    names: tuple[str, ...] | None = None
    if path.suffix == ".mat":
        mat = read_mat(path)
        if "mapClass" not in mat:
            raise ValueError(f"{path}: no mapClass (expected classMapping40.mat)")
        values = np.asarray(mat["mapClass"]).ravel()
        if "className" in mat:
            names = tuple(str(np.asarray(n).ravel()[0]) for n in np.asarray(mat["className"]).ravel())
    elif path.suffix == ".npy":
        values = np.load(path, allow_pickle=False).ravel()
    elif path.suffix == ".json":
        values = np.asarray(json.loads(path.read_text())).ravel()
    else:
        values = np.asarray(path.read_text().replace(",", " ").split(), dtype=np.int64)
    if values.size != num_raw or values.dtype.kind not in "uif" or (values < 0).any():
        raise ValueError(f"{path}: expected {num_raw} non-negative class ids (one per raw label), got {values.size}")
    return np.concatenate([[0], values.astype(np.int64)]), names


def _raw_names(f: Any) -> tuple[str, ...]:
    """The ``names`` cell array: references to MATLAB char arrays (uint16 code points)."""
    if "names" not in f:
        return ()
    refs = np.asarray(f["names"]).ravel()
    return tuple("".join(chr(c) for c in np.asarray(f[r]).ravel()) for r in refs)


def _frame(f: Any, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, depth (H, W) metres, raw labels (H, W)) of frame ``i``."""
    rgb = np.ascontiguousarray(np.asarray(f["images"][i]).transpose(2, 1, 0))  # (3, W, H) -> (H, W, 3)
    return rgb, np.asarray(f["depths"][i]).T.astype(np.float32), np.asarray(f["labels"][i]).T


def _check_layout(f: Any, path: Path) -> int:
    missing = [k for k in ("images", "depths", "labels") if k not in f]
    if missing:
        raise ValueError(f"{path}: no {missing} datasets (expected nyu_depth_v2_labeled.mat)")
    images, depths, labels = f["images"], f["depths"], f["labels"]
    N = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (N, *images.shape[2:]) or labels.shape != depths.shape:
        raise ValueError(f"{path}: unexpected shapes images {images.shape}, depths {depths.shape}, labels "
                         f"{labels.shape} (expected (N, 3, W, H), (N, W, H), (N, W, H) as h5py reads MATLAB)")
    return int(N)


def import_nyuv2(source: str | Path, out: str | Path, splits: str | Path | None = None,
                 mapping: str | Path | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write ``out/{train,val}/{rgb,depth,semseg}/<frame>.png`` (frame = 1-based number, 4 digits)
    and the manifest; returns the manifest. See the module docstring for ``splits`` and ``mapping``."""
    source, root = Path(source), Path(out)
    h5py = _h5py()
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    try:
        f = h5py.File(source, "r")
    except OSError as err:
        raise ValueError(f"{source}: not a MATLAB v7.3 (HDF5) file ({err}); expected nyu_depth_v2_labeled.mat") from None
    with f:
        N = _check_layout(f, source)
        raw_names = _raw_names(f)
        num_raw = len(raw_names) or NUM_RAW
        if splits is not None:
            train, test = read_splits(Path(splits), N)
            split_note = f"official: {Path(splits).name} (trainNdxs / testNdxs); val = the test frames"
        else:
            order = np.random.default_rng(seed).permutation(N)
            n_train = round(N * NUM_TRAIN / NUM_FRAMES)
            train, test = sorted(order[:n_train].tolist()), sorted(order[n_train:].tolist())
            split_note = (f"NOT the official split: random {len(train)} / {len(test)} (seed {seed}); pass splits.mat "
                          "(--splits) for the standard 795 / 654")
        if mapping is not None:
            lut, names = read_mapping(Path(mapping), num_raw)
            num_classes = int(lut.max())
            classes = names or (NYU40_CLASSES if num_classes == 40 else tuple(f"class {i + 1}" for i in range(num_classes)))
            class_note = f"mapped from the {num_raw} raw labels with {Path(mapping).name}"
        else:
            lut, num_classes = None, num_raw
            classes = raw_names or tuple(f"raw {i + 1}" for i in range(num_raw))
            class_note = (f"the {num_raw} raw labels, NOT the 40-class mapping (pass the mapping file, e.g. "
                          "classMapping40.mat, with --mapping)")
        manifest = start_manifest(root, "nyuv2", source.resolve(), ("train", "val"), classes=list(classes),
                                  num_classes=num_classes, class_source=class_note, split_source=split_note,
                                  depth=depth_entry(), semseg=semseg_entry(num_classes))
        jobs = [(i, "train") for i in train] + [(i, "val") for i in test]
        with tqdm(total=len(jobs), desc="nyuv2", unit="frame", disable=not progress) as bar:
            for i, split in jobs:
                key, split_dir = f"{i + 1:04d}", root / split
                if (split_dir / "semseg" / f"{key}.png").is_file():  # written last: the frame is done
                    bar.update(1)
                    continue
                rgb, depth, labels = _frame(f, i)
                classes_map = shift_labels(lut[labels] if lut is not None else labels, num_classes)
                write_bytes_atomic(split_dir / "rgb" / f"{key}.png", encode_png(rgb))
                write_bytes_atomic(split_dir / "depth" / f"{key}.png", encode_png(quantize_depth(depth)))
                write_bytes_atomic(split_dir / "semseg" / f"{key}.png", encode_png(classes_map))
                bar.update(1)
    return finish_manifest(root, manifest, {"train": len(train), "val": len(test)})
