"""The world as data: storage arrays, encoded files and the on-the-fly `WorldDataset`."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from multimae.data.codecs import (
    CLASS_MAPS,
    LABEL_SUFFIX,
    MAPS,
    SEQUENCES,
    STORED,
    TEXT,
    class_map_dtype,
    decode_class_map,
    decode_dense,
    encode_png,
    member_suffix,
    quantize_depth,
    quantize_normals,
)
from multimae.data.collate import sample_generator
from multimae.data.transforms import Transform
from multimae.data.world import (
    NUM_CLASSES,
    SEQUENCE_NAMES,
    WorldSample,
    check_world_settings,
    scene_rng,
    stored_sequences,
    world_sample,
)

WORLD_MODALITIES = MAPS  # the world renders every stored map (`WorldSample.rendering` has one field each)
WORLD_SEQUENCES = tuple(m for m in SEQUENCES if m in SEQUENCE_NAMES)  # ... and serialises these sequences


def storage_arrays(ws: WorldSample) -> dict[str, np.ndarray]:
    """The stored form of each map (see `multimae.data.codecs`), as its encoding says."""
    store = {"rgb8": lambda a: a, "depth16": quantize_depth, "unit_vectors8": quantize_normals,
             "class_ids": lambda a: a.astype(class_map_dtype(NUM_CLASSES)), "instance_ids": lambda a: a.astype(np.uint8)}
    return {m: store[STORED[m]](getattr(ws.rendering, m)) for m in WORLD_MODALITIES}


def encode_world_sample(ws: WorldSample) -> dict[str, bytes]:
    """Files of one sample, keyed by suffix (``rgb.png``, ..., ``boxes.txt``, ..., ``txt``, ``cls``)."""
    files = {member_suffix(m): encode_png(a) for m, a in storage_arrays(ws).items()}
    for m, text in stored_sequences(ws, WORLD_SEQUENCES).items():
        files[member_suffix(m)] = text.encode("utf-8")
    for m in TEXT:  # the caption
        files[member_suffix(m)] = getattr(ws, m).encode("utf-8")
    files[LABEL_SUFFIX] = str(ws.label).encode("ascii")
    return files


def decode_world_sample(ws: WorldSample, key: str, modalities: tuple[str, ...] = WORLD_MODALITIES
                        ) -> dict[str, object]:
    """The sample a reader returns for ``ws`` after a write/read round trip, without the disk:
    ``modalities`` (maps and sequences), the label, the caption and the key."""
    arrays = storage_arrays(ws)
    sample: dict[str, object] = dict(stored_sequences(ws, tuple(m for m in modalities if m in WORLD_SEQUENCES)))
    for m in (m for m in modalities if m not in WORLD_SEQUENCES):
        if m in CLASS_MAPS:  # class ids are checked against the world's classes, instance ids are not
            sample[m] = decode_class_map(arrays[m], key, NUM_CLASSES if STORED[m] == "class_ids" else None)
        else:
            sample[m] = decode_dense(m, arrays[m], key)
    sample["label"] = ws.label
    sample.update({m: getattr(ws, m) for m in TEXT})
    sample["key"] = key
    return sample


class WorldDataset(Dataset):
    """Scenes of the built-in world rendered on the fly; item ``i`` is scene ``i`` of ``split``.

    Each item is a sample dict: ``rgb`` (3, H, W) float in [0, 1], ``depth`` (1, H, W) z-depth
    (NaN = invalid), ``normals`` (3, H, W), ``semseg`` / ``instance`` (H, W) int64, ``label`` int,
    ``caption`` str, ``key`` str, and the sequences ``modalities`` names (`WORLD_SEQUENCES`: boxes in
    pixels, metadata, palette; str); values are quantised exactly as on disk, so they equal what the
    folder and shard readers return for the same scene. ``transform(sample, generator)`` receives a
    generator seeded by (seed, epoch, index): deterministic whatever the worker; call
    `set_epoch` to draw new augmentations each epoch.
    """

    def __init__(self, split: str = "train", size: int = 64, length: int = 100_000, difficulty: float = 1.0,
                 class_colors: float = 0.0,
                 transform: Transform | None = None, modalities: tuple[str, ...] = WORLD_MODALITIES,
                 seed: int = 0) -> None:
        unknown = set(modalities) - set(WORLD_MODALITIES) - set(WORLD_SEQUENCES)
        if unknown:
            raise ValueError(f"the world has no modality {sorted(unknown)}; it has "
                             f"{[*WORLD_MODALITIES, *WORLD_SEQUENCES]}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        scene_rng(split, 0)  # validates the split
        check_world_settings(difficulty, class_colors)
        self.split, self.size, self.length = split, size, length
        self.difficulty, self.class_colors = difficulty, class_colors
        self.transform, self.modalities, self.seed, self.epoch = transform, tuple(modalities), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a WorldDataset of length {self.length}")
        ws = world_sample(self.split, index, self.size, self.difficulty, self.class_colors)
        sample = decode_world_sample(ws, f"{index:08d}", self.modalities)
        if self.transform is not None:
            sample = self.transform(sample, sample_generator(self.seed, self.epoch, index))
        return sample

