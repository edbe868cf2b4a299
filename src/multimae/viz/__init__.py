"""Pictures of modalities: colour maps, palettes, labelled grids and model reconstructions."""

from multimae.viz.colormaps import (
    classes_to_rgb,
    depth_to_rgb,
    distinct_colors,
    instances_to_rgb,
    normals_to_rgb,
    rgb_to_uint8,
)
from multimae.viz.grid import image_grid
from multimae.viz.predictions import prediction_figure
from multimae.viz.reconstruction import (
    Panels,
    cross_modal_figure,
    cross_modal_panels,
    masked_reconstruction_figure,
    masked_reconstruction_panels,
)

__all__ = [
    "Panels", "classes_to_rgb", "cross_modal_figure", "cross_modal_panels", "depth_to_rgb", "distinct_colors",
    "image_grid", "instances_to_rgb", "masked_reconstruction_figure", "masked_reconstruction_panels",
    "normals_to_rgb", "prediction_figure", "rgb_to_uint8",
]
