"""The generation state: a ``{modality: ModalityBatch}`` batch of conditions and targets (4M's protocol).

Shapes: B batch, N tokens of a token map, L ids of a sequence row.

* a condition: every valid token given to the encoder;
* a token-map target: ids (B, N), all hidden at first; each decoded token is written into ``data``
  and given to the encoder from then on (`commit`);
* a sequence target: ``[S_1]`` alone given (its opening sentinel, as 4M's empty sequence), replaced
  by the generated ids, all given, once decoded (`sequence_result`);
* the unconditional version of a condition (`emptied`): nothing given for a map, ``[S_1]`` alone
  for a sequence, the first vector alone for a vector sequence (4M's empty modalities).

Records carry no ``target`` mask: the samplers choose which positions to query.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multimae.masking.span import SentinelId, fourm_sentinel_id
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM

State = dict[str, ModalityBatch]


def condition(model: FourM, name: str, data: Tensor, valid: Tensor | None = None) -> ModalityBatch:
    """A fully given condition; ``valid`` None: every token (a sequence: every id but padding)."""
    if name not in model.input_specs:
        raise ValueError(f"condition {name!r} is not an input of this model ({list(model.input_specs)})")
    spec = model.input_specs[name]
    if valid is None:
        if spec.kind == "tokens":
            valid = data != spec.pad_id
        else:
            N = model.encoder_embeddings[name].num_tokens(data)
            valid = torch.ones(data.shape[0], N, dtype=torch.bool, device=data.device)
    return ModalityBatch(data, valid.to(data.device))


def _opening(batch_size: int, length: int, pad_id: int, sentinel: SentinelId, device: torch.device) -> ModalityBatch:
    data = torch.full((batch_size, length), pad_id, dtype=torch.long, device=device)
    data[:, 0] = sentinel(1)
    valid = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    valid[:, 0] = True
    return ModalityBatch(data, valid)


def empty_target(model: FourM, name: str, batch_size: int, device: torch.device | str = "cpu",
                 sentinel: SentinelId = fourm_sentinel_id) -> ModalityBatch:
    """A target before decoding: a token map all hidden, a sequence its opening sentinel alone."""
    if name not in model.output_specs:
        raise ValueError(f"target {name!r} is not an output of this model ({list(model.output_specs)})")
    spec = model.output_specs[name]
    device = torch.device(device)
    if spec.kind == "tokens":
        return _opening(batch_size, 1, spec.pad_id, sentinel, device)
    N = model.decoder_embeddings[name].side ** 2
    ones = torch.ones(batch_size, N, dtype=torch.bool, device=device)
    return ModalityBatch(torch.zeros(batch_size, N, dtype=torch.long, device=device), ones, ones.clone())


def emptied(model: FourM, name: str, record: ModalityBatch, sentinel: SentinelId = fourm_sentinel_id) -> ModalityBatch:
    """``record`` with nothing given (the unconditional pass's version of a condition)."""
    spec = model.input_specs[name]
    B, device = record.data.shape[0], record.data.device
    if spec.kind == "tokens":
        return _opening(B, 1, spec.pad_id, sentinel, device)
    if spec.kind == "vector":
        valid = torch.zeros_like(record.valid)
        valid[:, 0] = True
        return ModalityBatch(torch.zeros_like(record.data), valid)
    return ModalityBatch(record.data, record.valid, torch.ones_like(record.valid))


def decoded(record: ModalityBatch) -> Tensor:
    """(B, N) bool: the token-map target's tokens already decoded (given to the encoder)."""
    return record.encoded


def commit(record: ModalityBatch, positions: Tensor, tokens: Tensor) -> ModalityBatch:
    """The token-map target with ``tokens`` (B, K) written at ``positions`` (B, K) and given from now on."""
    data = record.data.scatter(1, positions, tokens.to(record.data.dtype))
    hidden = record.hidden.scatter(1, positions, torch.zeros_like(positions, dtype=torch.bool))
    return ModalityBatch(data, record.valid, hidden)


def sequence_result(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> ModalityBatch:
    """Generated rows (each ending where it stopped) as a fully given (B, L) sequence, right-padded."""
    L = max(1, *(len(r) for r in ids))
    data = torch.full((len(ids), L), pad_id, dtype=torch.long)
    valid = torch.zeros(len(ids), L, dtype=torch.bool)
    for b, row in enumerate(ids):
        data[b, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        valid[b, :len(row)] = True
    return ModalityBatch(data.to(device), valid.to(device))
