"""A labelled figure of image tiles: rows of pictures under column titles, a note under each
row and an optional colour legend (PIL only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _tile(image: np.ndarray, tile: int) -> Image.Image:
    """uint8 ``(H, W, 3)`` scaled to ``tile`` px wide; nearest keeps class boundaries crisp."""
    im = Image.fromarray(image)
    return im.resize((tile, round(tile * im.height / im.width)), Image.Resampling.NEAREST)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], notes: Sequence[str] | None = None,
               legend: Sequence[tuple[str, Sequence[int]]] | None = None, tile: int = 160, gap: int = 6
               ) -> Image.Image:
    """Figure with ``rows`` of uint8 ``(H, W, 3)`` tiles under ``titles``, a text note under each
    row (its lines split at "\n", each wrapped to the figure's width) and a legend of (name,
    colour) swatches at the bottom."""
    cols = len(titles)
    if any(len(r) != cols for r in rows):
        raise ValueError(f"every row needs {cols} images (one per title)")
    font, small = _font(15), _font(13)
    tiles = [[_tile(im, tile) for im in row] for row in rows]
    tile_h = max(t.height for row in tiles for t in row)
    chars = max(20, int(cols * (tile + gap) / 7.2))
    wrapped = [[line for part in n.split("\n") for line in (textwrap.wrap(part, chars) or [""])]
               for n in (notes or [""] * len(rows))]  # a note's lines ("\n") wrapped each
    line_h = 17
    width = gap + cols * (tile + gap)
    legend_h = 0
    if legend:
        per_row = max(1, width // 130)
        legend_h = gap + ((len(legend) + per_row - 1) // per_row) * 22
    height = 26 + sum(tile_h + gap + len(w) * line_h + gap for w in wrapped) + legend_h
    fig = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(fig)
    for c, title in enumerate(titles):
        x = gap + c * (tile + gap)
        draw.text((x + tile / 2, 13), title, fill=TEXT, font=font, anchor="mm")
    y = 26
    for row, lines in zip(tiles, wrapped):
        for c, t in enumerate(row):
            fig.paste(t, (gap + c * (tile + gap), y))
        y += tile_h + 3
        for line in lines:
            draw.text((gap, y), line, fill=TEXT, font=small)
            y += line_h
        y += gap + gap - 3
    if legend:
        for i, (name, color) in enumerate(legend):
            x = gap + (i % per_row) * 130
            yy = y + (i // per_row) * 22
            draw.rectangle([x, yy + 2, x + 16, yy + 18], fill=tuple(int(v) for v in color), outline=TEXT)
            draw.text((x + 22, yy + 2), name, fill=TEXT, font=small)
    return fig
