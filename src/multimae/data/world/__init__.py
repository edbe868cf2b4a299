"""The built-in multi-modal world: seeded 3-D scenes rendered on the CPU with exact ground truth.

``world_sample("train", 7, size=64)`` is scene 7 of the train split: the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from multimae.data.world.captions import (
    CAPTION_ATTRIBUTES, FACTS, caption, caption_attributes, scene_facts, scene_label, visible_objects,
)
from multimae.data.world.classes import (
    BACKGROUND_CLASSES,
    CLASS_NAMES,
    LABEL_NAMES,
    NUM_CLASSES,
    NUM_LABELS,
    OBJECT_CLASSES,
    PALETTE,
)
from multimae.data.world.metadata import METADATA_FIELDS, MetadataField, metadata_text, parse_metadata
from multimae.data.world.palette import palette_text, parse_palette
from multimae.data.world.render import Rendering, render
from multimae.data.world.scenes import GENERATOR_VERSION, SPLITS, Scene, check_world_settings, sample_scene, scene_rng
from multimae.data.world.sequences import (
    SEQUENCE_BINS, SEQUENCE_NAMES, SEQUENCE_WORDS, boxes_text, stored_sequences, world_sequences,
)

__all__ = [
    "BACKGROUND_CLASSES", "CAPTION_ATTRIBUTES", "CLASS_NAMES", "FACTS", "GENERATOR_VERSION", "LABEL_NAMES",
    "METADATA_FIELDS", "NUM_CLASSES", "NUM_LABELS", "OBJECT_CLASSES", "PALETTE", "SEQUENCE_BINS", "SEQUENCE_NAMES",
    "SEQUENCE_WORDS", "SPLITS", "MetadataField", "Rendering", "Scene", "WorldSample", "boxes_text",
    "caption_attributes", "check_world_settings", "metadata_text", "palette_text", "parse_metadata", "parse_palette",
    "render", "sample_scene", "scene_facts", "scene_rng", "stored_sequences", "visible_objects", "world_sample",
    "world_sequences",
]

_MAX_TRIES = 10


@dataclass(frozen=True)
class WorldSample:
    """One rendered scene with its scene-level label (index into `LABEL_NAMES`) and caption."""

    scene: Scene
    rendering: Rendering
    label: int
    caption: str


def world_sample(split: str, index: int, size: int = 64, difficulty: float = 1.0,
                 class_colors: float = 0.0) -> WorldSample:
    """Scene ``index`` of ``split`` rendered at ``size`` px.

    A drawn scene in which the camera sees no object is redrawn from the same generator, so the
    result still depends on (split, index, size, difficulty, class_colors) only (see `sample_scene`).
    """
    rng = scene_rng(split, index)
    for _ in range(_MAX_TRIES):
        scene = sample_scene(rng, difficulty, class_colors)
        rendering = render(scene, size)
        visible = visible_objects(scene, rendering)
        if visible:
            return WorldSample(scene, rendering, scene_label(visible), caption(scene, visible, size))
    raise RuntimeError(f"scene {index} of split {split!r}: no object visible after {_MAX_TRIES} draws")
