"""`ModalityBatch`: one modality of a batch with its token-level masks (4M's modality dict, typed).

Shapes: B batch, N_m tokens of modality m (h*w for a grid, L for a sequence, G for global tokens).

Three boolean masks, each of which means what its name says when True (no field means "masked"
in one place and "valid" in another, a recurring source of bugs in the 4M code base):

* ``valid`` (B, N_m): the token exists. False on the padding of a sequence, and on every token of
  a sample that lacks the modality (a text-only sample in an image batch).
* ``hidden`` (B, N_m): the token is *not* given to the encoder. Invalid tokens are never given,
  whatever ``hidden`` says.
* ``target`` (B, N_m): the token is predicted and counted in the loss. Invalid tokens are never
  counted, whatever ``target`` says.

A token can be given and not predicted, predicted and not given (MultiMAE, 4M), given and
predicted (MultiMAE's ``loss_on_all_patches``), or neither (4M's unused positions).

Conversion to the official 4M polarity: ``input_mask = ~encoded``, ``target_mask = ~counted``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModalityBatch:
    """Attributes:
    data: the prepared tensor: (B, C, H, W) float for dense maps, (B, H, W) int64 class ids for
        categorical maps, (B, L) int64 token ids for sequences, (B, G, C) float for global tokens.
    valid: (B, N) bool, True = the token exists.
    hidden: (B, N) bool, True = not given to the encoder; None = every valid token is given.
    target: (B, N) bool, True = predicted and counted; None = nothing is a target.
    """

    data: Tensor
    valid: Tensor
    hidden: Tensor | None = None
    target: Tensor | None = None

    def __post_init__(self) -> None:
        B, N = self.valid.shape
        if self.valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor, got {self.valid.dtype}")
        if self.data.shape[0] != B:
            raise ValueError(f"data has batch size {self.data.shape[0]}, valid {tuple(self.valid.shape)} has {B}")
        for name in ("hidden", "target"):
            m = getattr(self, name)
            if m is not None and (tuple(m.shape) != (B, N) or m.dtype != torch.bool):
                raise ValueError(f"{name} must be a (B, N) = {(B, N)} bool tensor, got {m.dtype} {tuple(m.shape)}")

    @property
    def num_tokens(self) -> int:
        """N."""
        return self.valid.shape[1]

    @property
    def encoded(self) -> Tensor:
        """(B, N) bool: tokens the encoder sees (valid and not hidden)."""
        return self.valid if self.hidden is None else self.valid & ~self.hidden

    @property
    def counted(self) -> Tensor:
        """(B, N) bool: tokens the loss counts (valid targets)."""
        if self.target is None:
            return torch.zeros_like(self.valid)
        return self.valid & self.target

    @property
    def present(self) -> Tensor:
        """(B,) bool: samples that have the modality (at least one valid token)."""
        return self.valid.any(dim=1)
