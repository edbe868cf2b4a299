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


SEQUENCE_BINS = 64  # value bins of the stored metadata and palette: the sequence tokenizer's default coord_bins
SEQUENCE_NAMES: tuple[str, ...] = ("boxes", "metadata", "palette")


def world_sequences(ws: WorldSample, bins: int = SEQUENCE_BINS, colors: int = 4,
                    names: tuple[str, ...] = SEQUENCE_NAMES, box_bins: int | None = None) -> dict[str, str]:
    """The sequence texts ``names`` of one world sample: boxes (in ``box_bins`` per side, default
    ``bins``), metadata and a ``colors``-colour palette (values in ``bins``)."""
    unknown = set(names) - set(SEQUENCE_NAMES)
    if unknown:
        raise ValueError(f"the world has no sequences {sorted(unknown)}; it has {SEQUENCE_NAMES}")
    make = {
        "boxes": lambda: boxes_text(ws.scene, ws.rendering, box_bins or bins),
        "metadata": lambda: metadata_text(ws.scene, ws.rendering, bins),
        "palette": lambda: palette_text(ws.rendering.rgb, colors, bins),
    }
    return {name: make[name]() for name in names}


def stored_sequences(ws: WorldSample, names: tuple[str, ...] = SEQUENCE_NAMES) -> dict[str, str]:
    """The sequences as data files hold them (`multimae.data.codecs`): boxes in pixels of the
    sample's maps, metadata and palette values in `SEQUENCE_BINS`."""
    return world_sequences(ws, names=names, box_bins=ws.rendering.rgb.shape[1])
