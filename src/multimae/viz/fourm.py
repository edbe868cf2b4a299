"""Pictures of 4M predictions: token maps decoded by their tokenizers and drawn as their sources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from multimae.modalities.registry import get_modality
from multimae.model.fourm import FourM
from multimae.tokenizers.base import Tokenizer
from multimae.viz.colormaps import distinct_colors, draw
from multimae.viz.grid import image_grid


def decoded_picture(source: str, tokenizer: Tokenizer, ids: Tensor,
                    palette: Sequence[Sequence[int]] | np.ndarray | None = None) -> list[np.ndarray]:
    """uint8 (H, W, 3) pictures of token maps ``ids`` (B, N) decoded by ``tokenizer`` and drawn as the
    modality ``source`` is drawn."""
    maps = tokenizer.decode(ids)
    display = get_modality(source).drawn_as
    if display == "palette" and palette is None:
        palette = distinct_colors(get_modality(source).num_channels)
    return [draw(display, m.detach().cpu().numpy(), palette) for m in maps]


def prediction_grid(model: FourM, tokenizers: Mapping[str, Tokenizer], rows: Mapping[str, Mapping[str, Tensor]],
                    image: str, predicted: Mapping[str, Tensor],
                    palette: Sequence[Sequence[int]] | np.ndarray | None = None) -> Image.Image:
    """One row per sample: the input picture (its pixels for a raw-pixel input, else its tokens
    decoded), then each predicted map's truth and prediction."""
    specs = {**model.input_specs, **model.output_specs}
    source = specs[image].source_name
    if specs[image].kind == "dense":
        columns = [[x.permute(1, 2, 0).cpu().numpy() for x in rows["pixels"][source]]]
        titles = [f"{source} (input pixels)"]
    else:
        columns = [decoded_picture(source, tokenizers[source], rows["ids"][source], palette)]
        titles = [f"{source} (input tokens, decoded)"]
    for name, ids in predicted.items():
        src = specs[name].source_name
        columns.append(decoded_picture(src, tokenizers[src], rows["ids"][src], palette))
        columns.append(decoded_picture(src, tokenizers[src], ids, palette))
        titles += [f"{src}: truth (tokens)", f"{src}: 4M from {source}"]
    grid = [list(r) for r in zip(*columns)]
    return image_grid(grid, titles, tile=128)
