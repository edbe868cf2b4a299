"""Class names, palettes and the named vocabularies of the procedural world.

Semantic classes are background surfaces followed by object shapes. ``semseg`` maps hold indices
into `CLASS_NAMES`; the scene-level ``label`` is an index into `LABEL_NAMES` (the object shapes).
"""

from __future__ import annotations

BACKGROUND_CLASSES: tuple[str, ...] = ("floor", "wall", "ceiling")
OBJECT_CLASSES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "pyramid", "capsule")

CLASS_NAMES: tuple[str, ...] = BACKGROUND_CLASSES + OBJECT_CLASSES
NUM_CLASSES: int = len(CLASS_NAMES)  # `semseg` num_channels for a model trained on the world

LABEL_NAMES: tuple[str, ...] = OBJECT_CLASSES  # scene label: shape of the largest visible object
NUM_LABELS: int = len(LABEL_NAMES)

# One display colour per semantic class (uint8 RGB), distinct from each other and readable on white.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (140, 110, 80),   # floor
    (170, 170, 190),  # wall
    (235, 225, 160),  # ceiling
    (230, 60, 60),    # sphere
    (60, 120, 230),   # cube
    (60, 190, 90),    # cylinder
    (245, 160, 40),   # cone
    (160, 80, 200),   # pyramid
    (40, 200, 200),   # capsule
)

# Object albedos, named so that captions can say them (sRGB in [0, 1]).
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.10),
    "orange": (0.92, 0.48, 0.10),
    "yellow": (0.90, 0.80, 0.15),
    "green": (0.15, 0.62, 0.20),
    "cyan": (0.15, 0.70, 0.75),
    "blue": (0.12, 0.25, 0.80),
    "purple": (0.50, 0.18, 0.65),
    "pink": (0.92, 0.50, 0.65),
    "white": (0.90, 0.90, 0.88),
    "black": (0.10, 0.10, 0.11),
}

# The named colour each object class wears when the world ties colour to class (``class_colors`` > 0);
# the same hues as the class's display colour in `PALETTE`.
CLASS_COLORS: dict[str, str] = {
    "sphere": "red",
    "cube": "blue",
    "cylinder": "green",
    "cone": "orange",
    "pyramid": "purple",
    "capsule": "cyan",
}

# Background textures and the adjective a caption uses for each.
TEXTURES: tuple[str, ...] = ("plain", "checker", "stripes", "noise")
TEXTURE_WORDS: dict[str, str] = {
    "plain": "plain",
    "checker": "checkered",
    "stripes": "striped",
    "noise": "mottled",
}

MATERIALS: tuple[str, ...] = ("matte", "shiny")
