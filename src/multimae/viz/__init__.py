"""Pictures of modalities: colour maps, palettes and labelled grids."""

from multimae.viz.colormaps import (
    classes_to_rgb,
    depth_to_rgb,
    distinct_colors,
    instances_to_rgb,
    normals_to_rgb,
    rgb_to_uint8,
)
from multimae.viz.grid import image_grid

__all__ = [
    "classes_to_rgb", "depth_to_rgb", "distinct_colors", "image_grid", "instances_to_rgb", "normals_to_rgb",
    "rgb_to_uint8",
]
