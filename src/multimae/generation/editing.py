"""Editing: in-paint part of a token map (keep some of its tokens, regenerate the others).

Shapes: B batch, N = h * w tokens of the map (row-major grid), H W pixels.

In 4M a modality can be partly given: its kept tokens go to the encoder as inputs and the other
positions are targets, decoded by MaskGIT / ROAR. Training masks random subsets of every modality,
so a partial condition is in distribution. An in-paint target is a target record that starts with
its kept tokens already decoded (given, ``hidden`` False) and the regenerated ones hidden; the
samplers query only hidden positions (`token_maps`), so kept tokens are never touched, and the
target's schedule spreads over the regenerated positions alone (`generate.plan`).

Edits are made on the raw maps: change a region of one modality (paint an object's pixels another
class in a semseg map), give the edited map as a full condition, and in-paint the region of another
modality (rgb) there; or in-paint the edited map's own tokens around the edit.

Polarity: ``keep`` (B, N) is True where a token is kept; a pixel mask ``regenerate`` (B, H, W) is
True where pixels are to be regenerated (a white pixel of a mask picture); a token is regenerated
when any of its pixels is (`keep_from_pixels`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM


def keep_from_pixels(regenerate: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, N) bool keep mask on the token grid ``(h, w)`` from a pixel mask ``regenerate`` (B, H, W)
    bool (True = regenerate): a token is regenerated when any pixel of its cell is marked. H and W
    must be multiples of h and w."""
    if regenerate.ndim != 3:
        raise ValueError(f"a pixel mask is (B, H, W), got {tuple(regenerate.shape)}")
    B, H, W = regenerate.shape
    h, w = grid
    if H % h or W % w:
        raise ValueError(f"a {H}x{W} pixel mask does not tile the {h}x{w} token grid")
    cells = F.max_pool2d(regenerate[:, None].float(), (H // h, W // w))[:, 0] > 0  # (B, h, w)
    return ~cells.reshape(B, h * w)


def token_grid(model: FourM, name: str) -> tuple[int, int]:
    """``(h, w)`` the token grid of the token map ``name`` (an output of ``model``)."""
    side = model.decoder_embeddings[name].side
    return side, side


def check_inpaintable(model: FourM, name: str) -> None:
    """ValueError unless ``name`` is a token map the model both reads (kept tokens go to the encoder)
    and predicts (the others are decoded)."""
    spec = model.output_specs.get(name)
    if spec is None or spec.kind == "tokens":
        maps = [n for n, s in model.output_specs.items() if s.kind != "tokens" and n in model.input_specs]
        what = "a sequence" if spec is not None else "not an output of this model"
        raise ValueError(f"in-paint of {name!r}: {what}; only a token map the model reads and predicts can be "
                         f"in-painted (this model: {maps})")
    if name not in model.input_specs:
        raise ValueError(f"in-paint of {name!r}: the model predicts it but does not read it, so its kept tokens "
                         f"cannot be given (inputs: {list(model.input_specs)})")


def inpaint_target(model: FourM, name: str, tokens: Tensor, keep: Tensor) -> ModalityBatch:
    """The target record of an in-paint of ``name``: ``tokens`` (B, N) its full token map, ``keep``
    (B, N) bool, True = kept (given to the encoder, never changed), False = regenerated. The data at
    regenerated positions is overwritten by the samplers."""
    check_inpaintable(model, name)
    N = model.decoder_embeddings[name].side ** 2
    if tokens.ndim != 2 or tokens.shape[1] != N or tuple(keep.shape) != tuple(tokens.shape):
        raise ValueError(f"in-paint of {name!r}: tokens and keep must both be (B, {N}), got "
                         f"{tuple(tokens.shape)} and {tuple(keep.shape)}")
    if keep.dtype != torch.bool or tokens.dtype.is_floating_point:
        raise ValueError(f"in-paint of {name!r}: keep must be bool and tokens integer ids, got {keep.dtype}, "
                         f"{tokens.dtype}")
    keep = keep.to(tokens.device)
    return ModalityBatch(tokens.long(), torch.ones_like(keep), ~keep)


def check_inpaint(model: FourM, inpaint: Mapping[str, ModalityBatch], targets: list[str], batch_size: int) -> None:
    """ValueError naming the problem: an in-paint record for something that is not a target, not
    in-paintable, of the wrong shape or batch size."""
    for name, record in inpaint.items():
        if name not in targets:
            raise ValueError(f"in-paint of {name!r}: not among the targets {targets}")
        check_inpaintable(model, name)
        N = model.decoder_embeddings[name].side ** 2
        if tuple(record.valid.shape) != (batch_size, N) or record.hidden is None:
            raise ValueError(f"in-paint of {name!r}: expected a (B, N) = {(batch_size, N)} record with a hidden "
                             f"mask (`inpaint_target`), got {tuple(record.valid.shape)}")


def regenerated(record: ModalityBatch) -> Tensor:
    """(B,) tokens per sample still to decode in a target record."""
    return (~record.encoded).sum(dim=1)
