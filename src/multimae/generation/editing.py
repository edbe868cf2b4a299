"""Editing: in-paint part of a token map or a sequence (keep some of its tokens, regenerate the others).

Shapes: B batch, N = h * w tokens of the map (row-major grid), H W pixels, L ids of a sequence.

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

A sequence is in-painted as 4M's span masking gives it to the encoder: its text with every span to
regenerate replaced by a sentinel, [S_1] .. [S_k] in order ("a [S_1] cube on the [S_2] [EOS]"). That
record is given whole; the autoregressive step decodes "[S_1] span_1 [S_2] .. [S_k] span_k" up to the
closing [S_(k+1)] and merges the spans into the text (`masking.span.merge_spans`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.masking.span import SentinelId, fourm_sentinel_id, sentinel_numbers
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
    """ValueError unless ``name`` is a token map or a sequence the model both reads (kept tokens go to
    the encoder) and predicts (the others are decoded)."""
    if name not in model.output_specs:
        both = [n for n in model.output_specs if n in model.input_specs]
        raise ValueError(f"in-paint of {name!r}: not an output of this model; a token map or sequence the model "
                         f"reads and predicts can be in-painted (this model: {both})")
    if name not in model.input_specs:
        raise ValueError(f"in-paint of {name!r}: the model predicts it but does not read it, so its kept tokens "
                         f"cannot be given (inputs: {list(model.input_specs)})")


def is_sequence(model: FourM, name: str) -> bool:
    """Whether the output ``name`` is a sequence (else a token map)."""
    return model.output_specs[name].kind == "tokens"


def inpaint_target(model: FourM, name: str, tokens: Tensor, keep: Tensor) -> ModalityBatch:
    """The target record of an in-paint of ``name``: ``tokens`` (B, N) its full token map, ``keep``
    (B, N) bool, True = kept (given to the encoder, never changed), False = regenerated. The data at
    regenerated positions is overwritten by the samplers."""
    check_inpaintable(model, name)
    if is_sequence(model, name):
        raise ValueError(f"in-paint of {name!r}: a sequence; give its text with sentinels (`inpaint_sequence`)")
    N = model.decoder_embeddings[name].side ** 2
    if tokens.ndim != 2 or tokens.shape[1] != N or tuple(keep.shape) != tuple(tokens.shape):
        raise ValueError(f"in-paint of {name!r}: tokens and keep must both be (B, {N}), got "
                         f"{tuple(tokens.shape)} and {tuple(keep.shape)}")
    if keep.dtype != torch.bool or tokens.dtype.is_floating_point:
        raise ValueError(f"in-paint of {name!r}: keep must be bool and tokens integer ids, got {keep.dtype}, "
                         f"{tokens.dtype}")
    keep = keep.to(tokens.device)
    return ModalityBatch(tokens.long(), torch.ones_like(keep), ~keep)


def span_count(model: FourM, name: str, ids: Sequence[int], sentinel: SentinelId = fourm_sentinel_id) -> int:
    """k, the spans to regenerate in one in-paint row of the sequence ``name`` (its real ids), after
    checking that its sentinels are [S_1] .. [S_k] in order (ValueError naming what is there)."""
    numbers = sentinel_numbers(ids, model.output_specs[name].max_length, sentinel)
    if not numbers:
        raise ValueError(f"in-paint of {name!r}: no span to regenerate; mark each with a sentinel, [S_1], [S_2], "
                         f"... in order")
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"in-paint of {name!r}: the sentinels must be [S_1] .. [S_{len(numbers)}] in order, got "
                         f"{', '.join(f'[S_{i}]' for i in numbers)}")
    return len(numbers)


def inpaint_sequence(model: FourM, name: str, ids: Tensor, valid: Tensor | None = None,
                     sentinel: SentinelId = fourm_sentinel_id) -> ModalityBatch:
    """The start record of an in-paint of the sequence ``name``: ``ids`` (B, L) each row its text with
    the spans to regenerate as sentinels [S_1] .. [S_k] ([EOS] and padding as a condition has them),
    ``valid`` (B, L) its real ids (None: all but padding). Given whole to the encoder."""
    check_inpaintable(model, name)
    if not is_sequence(model, name):
        raise ValueError(f"in-paint of {name!r}: a token map; give its tokens and a keep mask (`inpaint_target`)")
    spec = model.output_specs[name]
    if ids.ndim != 2 or ids.dtype.is_floating_point:
        raise ValueError(f"in-paint of {name!r}: ids must be (B, L) integers, got {ids.dtype} {tuple(ids.shape)}")
    valid = (ids != spec.pad_id) if valid is None else valid.to(ids.device)
    if ids.shape[1] > spec.max_length:
        raise ValueError(f"in-paint of {name!r}: {ids.shape[1]} ids, the model reads {spec.max_length}")
    for row, keep in zip(ids.tolist(), valid.tolist()):
        span_count(model, name, [t for t, k in zip(row, keep) if k], sentinel)
    return ModalityBatch(ids.long(), valid.bool())


def check_inpaint(model: FourM, inpaint: Mapping[str, ModalityBatch], targets: list[str], batch_size: int) -> None:
    """ValueError naming the problem: an in-paint record for something that is not a target, not
    in-paintable, of the wrong shape or batch size."""
    for name, record in inpaint.items():
        if name not in targets:
            raise ValueError(f"in-paint of {name!r}: not among the targets {targets}")
        check_inpaintable(model, name)
        if is_sequence(model, name):
            if record.valid.shape[0] != batch_size or record.hidden is not None:
                raise ValueError(f"in-paint of {name!r}: expected a fully given (B, L) record with B = {batch_size} "
                                 f"(`inpaint_sequence`), got {tuple(record.valid.shape)}")
            continue
        N = model.decoder_embeddings[name].side ** 2
        if tuple(record.valid.shape) != (batch_size, N) or record.hidden is None:
            raise ValueError(f"in-paint of {name!r}: expected a (B, N) = {(batch_size, N)} record with a hidden "
                             f"mask (`inpaint_target`), got {tuple(record.valid.shape)}")


def regenerated(record: ModalityBatch) -> Tensor:
    """(B,) tokens per sample still to decode in a target record."""
    return (~record.encoded).sum(dim=1)
