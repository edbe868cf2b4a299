"""Mask samplers: objects that draw, per batch, which tokens the encoder sees and which are targets.

Shapes: B batch, N_m tokens of modality m.

Every sampler is called as ``sampler(num_tokens, batch_size, generator, valid)`` and returns a
`MaskDraw`: ``hidden[m]`` (B, N_m) bool, True = not given to the encoder, and ``target[m]``
(B, N_m) bool, True = predicted and counted (see `multimae.modalities.batch.ModalityBatch`).
``valid`` (optional, ``{m: (B, N_m) bool}``) marks the tokens that exist; samplers never spend a
budget on invalid tokens.

The model treats an output whose modality is absent from ``target`` as fully predicted (MultiMAE:
an output whose source was not given is predicted everywhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from multimae.masking.dirichlet import sample_masks


@dataclass
class MaskDraw:
    """``hidden``: ``{input modality: (B, N_m) bool}``, True = not encoded.
    ``target``: ``{modality: (B, N_m) bool}``, True = predicted and counted."""

    hidden: dict[str, Tensor]
    target: dict[str, Tensor]

    def rows(self, rows: slice, device: torch.device | str | None = None) -> MaskDraw:
        """The rows ``rows`` of every mask (a process's share of a global batch), on ``device``."""
        return MaskDraw({k: v[rows].to(device) for k, v in self.hidden.items()},
                        {k: v[rows].to(device) for k, v in self.target.items()})


class MaskSampler(Protocol):
    def __call__(
        self,
        num_tokens: Mapping[str, int],
        batch_size: int,
        generator: torch.Generator | None = None,
        valid: Mapping[str, Tensor] | None = None,
    ) -> MaskDraw: ...


@dataclass
class DirichletInputMasking:
    """MultiMAE (paper Sec. 3.3): each sample keeps ``num_visible`` input tokens in total, split over
    the inputs by Dirichlet(``alpha``) proportions; the targets are the hidden input tokens.

    ``alpha``: one concentration, or one per input in ``num_tokens`` order (`MaskingConfig.concentrations`).
    """

    num_visible: int
    alpha: float | Sequence[float] = 1.0

    def __call__(self, num_tokens: Mapping[str, int], batch_size: int,
                 generator: torch.Generator | None = None, valid: Mapping[str, Tensor] | None = None) -> MaskDraw:
        if valid is not None and not all(bool(v.all()) for v in valid.values()):
            raise NotImplementedError("DirichletInputMasking with invalid tokens")
        hidden = sample_masks(num_tokens, batch_size, self.num_visible, self.alpha, generator)
        return MaskDraw(hidden, dict(hidden))
