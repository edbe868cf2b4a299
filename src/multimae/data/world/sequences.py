"""The world's sequence modalities as 4M serialises them into text: 2-D boxes, metadata, colour palette.

``world_sequences(world_sample("train", 0, 64))`` gives ``{"boxes": ..., "metadata": ..., "palette": ...}``;
coordinate and value tokens are ``v{axis}={bin}`` (see `multimae.data.boxes`, `metadata`, `palette`),
the other words are `SEQUENCE_WORDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimae.data.boxes import boxes_of_instances, serialize_boxes
from multimae.data.world.captions import visible_objects
from multimae.data.world.classes import OBJECT_CLASSES
from multimae.data.world.metadata import METADATA_NAMES, metadata_text
from multimae.data.world.palette import palette_text
from multimae.data.world.render import Rendering
from multimae.data.world.scenes import Scene

if TYPE_CHECKING:  # the package's __init__ imports this module
    from multimae.data.world import WorldSample

# Whole words of the world's sequences (box class names, metadata field names): one token each.
SEQUENCE_WORDS: tuple[str, ...] = OBJECT_CLASSES + METADATA_NAMES


def boxes_text(scene: Scene, rendering: Rendering, bins: int) -> str:
    """``"v0=xmin v1=ymin v2=xmax v3=ymax <shape> ..."``: the box of each visible object (as
    `visible_objects` decides) in its instance map, in ``bins`` per side, ordered by the distance of
    (xmin, ymin) to the top-left corner; '' if none is visible."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    index = {id(obj): k for k, obj in enumerate(scene.objects)}
    names = {index[id(v.obj)] + 1: v.obj.shape for v in visible_objects(scene, rendering)}
    return serialize_boxes(boxes_of_instances(rendering.instance, names, bins))


def world_sequences(ws: WorldSample, bins: int = 64, colors: int = 4) -> dict[str, str]:
    """The sequence texts of one world sample: boxes, metadata and a ``colors``-colour palette."""
    return {
        "boxes": boxes_text(ws.scene, ws.rendering, bins),
        "metadata": metadata_text(ws.scene, ws.rendering, bins),
        "palette": palette_text(ws.rendering.rgb, colors, bins),
    }
