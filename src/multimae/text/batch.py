"""Where captions meet the model: a collated batch's captions become a ``tokens`` modality.

Shapes: B batch, L ``max_length``.

Readers and augmentation keep captions as text (a flip must be able to rewrite them, see
`multimae.text.flip`); `tokenize_batch` turns the collated list of captions into the (B, L) ids a
``tokens`` `ModalitySpec` describes, after augmentation and before `prepare_batch`. `spec_for`
fills such a spec's vocabulary size and padding id from the tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from multimae.data.collate import PRESENT_KEY
from multimae.modalities.spec import ModalitySpec
from multimae.text.tokenizer import TextTokenizer, check_texts


def spec_for(spec: ModalitySpec, tokenizer: TextTokenizer) -> ModalitySpec:
    """``spec`` (a ``tokens`` modality) with the tokenizer's vocabulary size and padding id."""
    if spec.kind != "tokens":
        raise ValueError(f"modality {spec.name!r} is a {spec.kind} modality; a tokenizer fits a tokens modality")
    return spec.replace(num_channels=tokenizer.vocab_size, pad_id=tokenizer.pad_id)


def tokenize_texts(batch: Mapping[str, object], tokenizers: Mapping[str, TextTokenizer],
                   specs: Mapping[str, ModalitySpec]) -> tuple[dict[str, object], int]:
    """(``batch`` with every text modality that still holds captions, of ``tokenizers``, as ids of
    its spec's ``max_length``, captions truncated); modalities already holding ids are kept."""
    out, truncated = dict(batch), 0
    for name, tokenizer in tokenizers.items():
        if isinstance(out.get(name), list):
            out, cut = tokenize_batch(out, tokenizer, name, specs[name].max_length)
            truncated += cut
    return out, truncated


def tokenize_batch(batch: Mapping[str, object], tokenizer: TextTokenizer, modality: str,
                   max_length: int) -> tuple[dict[str, object], int]:
    """(batch with ``batch[modality]`` as (B, L) int64 ids, number of captions truncated).

    ``batch[modality]`` is the collated list of B captions, None for a sample without one: its row
    is all padding and ``batch[PRESENT_KEY][modality]`` (B,) bool says False there (added when
    some sample lacks a caption, as `multimae.data.collate` does for tensors). A batch without
    ``modality`` is returned as it is, with 0.
    """
    if modality not in batch:
        return dict(batch), 0
    captions = batch[modality]
    if not isinstance(captions, list):
        raise ValueError(f"batch[{modality!r}] must be the collated list of captions, got {type(captions).__name__}")
    present = torch.tensor([c is not None for c in captions], dtype=torch.bool)  # (B,)
    ids = torch.full((len(captions), max_length), tokenizer.pad_id, dtype=torch.int64)  # (B, L)
    truncated = 0
    try:  # checked with the batch's own indices (a missing caption is no error)
        list(check_texts((c if c is not None else "-" for c in captions), f"batch[{modality!r}]"))
    except ValueError as err:
        raise ValueError(f"{err} (sample keys {batch.get('key')})") from None
    if bool(present.any()):
        encoded = tokenizer.encode([c for c in captions if c is not None], max_length)
        ids[present] = encoded.ids
        truncated = encoded.truncated
    out = dict(batch)
    out[modality] = ids
    if not bool(present.all()):
        record = dict(out.get(PRESENT_KEY) or {})  # type: ignore[call-overload]
        record[modality] = present
        out[PRESENT_KEY] = record
    return out, truncated
