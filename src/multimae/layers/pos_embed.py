"""Fixed sine-cosine positional embeddings (2-D for grids, 1-D for sequences).

Shapes: D width, h w token grid.

Channel layout (for a token at grid row ``r`` and column ``c``, with ``Q = D / 4`` and
``omega_k = temperature ** (-k / Q)``): ``[sin(r * omega), cos(r * omega), sin(c * omega),
cos(c * omega)]``: rows first, columns second. For square grids this is exactly the table of the
official MultiMAE checkpoints; for non-square grids it is the correct table (the official code
scrambles rows and columns there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def build_2d_sincos_pos_embed(dim: int, grid_h: int, grid_w: int, temperature: float = 10000.0,
                              scale: float = 1.0, columns_first: bool = False) -> Tensor:
    """The ``(1, D, h, w)`` sin-cos table (rows in the first half of the channels, or with
    ``columns_first`` the columns, as MAE's and M3AE's tables, whose meshgrid puts x first).

    ``scale``: size of this grid's cells in units of the common frame's cells (2: a 2x coarser grid).
    Cell ``i`` then sits at frame coordinate ``i * scale + (scale - 1) / 2``, its centre, so grids of
    different sizes over one image have aligned positions.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos positional embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (Q,)
    shift = (scale - 1.0) / 2.0
    rows = (torch.arange(grid_h, dtype=torch.float64) * scale + shift)[:, None] * omega  # (h, Q)
    cols = (torch.arange(grid_w, dtype=torch.float64) * scale + shift)[:, None] * omega  # (w, Q)
    row_part = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(grid_h, grid_w, 2 * quarter)
    col_part = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(grid_h, grid_w, 2 * quarter)
    table = torch.cat([col_part, row_part] if columns_first else [row_part, col_part], dim=2)  # (h, w, D)
    return table.permute(2, 0, 1).unsqueeze(0).float().contiguous()


def resize_pos_embed(pos_embed: Tensor, grid_h: int, grid_w: int, mode: str = "bicubic") -> Tensor:
    """Resize a ``(1, D, h0, w0)`` table to ``(1, D, h, w)`` (align_corners=False).

    Returns the table itself when the grid already matches, so the stored embedding is used
    bit-exactly at the training resolution.
    """
    if pos_embed.shape[-2:] == (grid_h, grid_w):
        return pos_embed
    return F.interpolate(pos_embed, size=(grid_h, grid_w), mode=mode, align_corners=False)


def build_1d_sincos_pos_embed(dim: int, length: int, temperature: float = 10000.0) -> Tensor:
    """The ``(1, L, D)`` 1-D sin-cos table: position ``p`` -> ``[sin(p * omega), cos(p * omega)]``
    with ``omega_k = temperature ** (-k / (D / 2))``."""
    if dim % 2:
        raise ValueError(f"the 1-D sin-cos positional embedding needs an even width, got {dim}")
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float64) / half)  # (D/2,)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega  # (L, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).unsqueeze(0).float().contiguous()
