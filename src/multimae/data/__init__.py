"""Data: the built-in procedural world, readers (folders, shards, on the fly), the joint
augmentation and the writer.

Samples are dicts: ``rgb`` (3, H, W) float in [0, 1], ``depth`` (1, H, W) z-depth (NaN =
invalid), ``normals`` (3, H, W) unit vectors in the camera frame, ``semseg`` / ``instance``
(H, W) int64, ``label`` int, ``caption`` str, ``key`` str; `collate` stacks them into batches.
"""

from multimae.data.codecs import DEPTH_SCALE
from multimae.data.collate import collate, sample_generator
from multimae.data.folder import FolderDataset
from multimae.data.generated import WorldDataset
from multimae.data.shards import ShardDataset, write_shard
from multimae.data.transforms import RandomResizedCropFlip, Resize, hflip
from multimae.data.world import CLASS_NAMES, LABEL_NAMES, NUM_CLASSES, NUM_LABELS, PALETTE
from multimae.data.writer import GenerateConfig, generate

__all__ = [
    "CLASS_NAMES", "DEPTH_SCALE", "LABEL_NAMES", "NUM_CLASSES", "NUM_LABELS", "PALETTE", "FolderDataset",
    "GenerateConfig", "RandomResizedCropFlip", "Resize", "ShardDataset", "WorldDataset", "collate", "generate",
    "hflip", "sample_generator", "write_shard",
]
