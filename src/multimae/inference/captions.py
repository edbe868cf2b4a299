"""Captions as inputs and outputs of `multimae.inference.predict`.

A given caption is tokenised word by word; each word written as ``[MASK]`` becomes one hidden
position, which the model predicts ("a red sphere [MASK] of a blue cube"). A caption output
whose caption was not given is predicted whole, from the other inputs alone, up to the first
position predicted as padding.

Shapes: L the modality's ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from multimae.modalities.spec import ModalitySpec
from multimae.text.tokenizer import TextTokenizer
from multimae.viz.words import join_pieces

MASK_WORD = "[MASK]"  # a word of a given caption that the model is asked to predict


@dataclass
class CaptionInput:
    """A given caption as the model reads it: ``ids`` (L,) int64, ``valid`` (L,) bool (False at
    padding), ``hidden`` (L,) bool (the ``[MASK]`` positions) and the ``text`` as given."""

    ids: Tensor
    valid: Tensor
    hidden: Tensor
    text: str


@dataclass
class CaptionPrediction:
    """What the model says of a caption.

    Attributes:
        given: the caption as given, or None when it was predicted from the other inputs alone.
        positions: the predicted positions (the ``[MASK]`` ones, or every one up to the first padding).
        words: the predicted word pieces at ``positions``.
        text: the caption with the predicted pieces in place (joined into words).
        marked: the same with each predicted piece in brackets, for reading.
    """

    given: str | None
    positions: list[int] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    text: str = ""
    marked: str = ""


def read_caption(text: str | Path, spec: ModalitySpec, tokenizer: TextTokenizer) -> CaptionInput:
    """Tokenise a caption (a string, or a ``.txt`` file holding one) for ``spec``; a ValueError when
    it is empty or longer than the modality's ``max_length`` pieces (never cut silently)."""
    if isinstance(text, Path) or (isinstance(text, str) and text.endswith(".txt") and Path(text).is_file()):
        text = Path(text).read_text(encoding="utf-8")
    words = str(text).split()
    if not words:
        raise ValueError(f"{spec.name}: the caption is empty")
    L = spec.max_length
    ids: list[int] = []
    hidden: list[bool] = []
    for word in words:
        if word == MASK_WORD:
            ids.append(tokenizer.pad_id)
            hidden.append(True)
            continue
        enc = tokenizer.encode([word], L)
        pieces = enc.ids[0][enc.valid[0]].tolist()
        ids += pieces
        hidden += [False] * len(pieces)
    if len(ids) > L:
        raise ValueError(f"{spec.name}: the caption has {len(ids)} word pieces, more than the model's {L}: shorten it")
    n = len(ids)
    out_ids = torch.full((L,), tokenizer.pad_id, dtype=torch.int64)
    out_ids[:n] = torch.tensor(ids, dtype=torch.int64)
    valid = torch.arange(L) < n
    hid = torch.zeros(L, dtype=torch.bool)
    hid[:n] = torch.tensor(hidden)
    if bool(hid.all()) and n == L:
        raise ValueError(f"{spec.name}: every position is [MASK]: give some words")
    return CaptionInput(out_ids, valid, hid, str(text).strip())


def caption_prediction(logits: Tensor, tokenizer: TextTokenizer, given: CaptionInput | None) -> CaptionPrediction:
    """The caption read off ``logits`` (L, V): at the hidden positions of ``given``, or, without a
    given caption, at every position up to the first one predicted as padding."""
    best = logits.argmax(dim=-1)  # (L,)
    if given is not None:
        positions = given.hidden.nonzero().flatten().tolist()
        ids = given.ids.clone()
        ids[given.hidden] = best[given.hidden]
        n = int(given.valid.sum())
    else:
        pads = (best == tokenizer.pad_id).nonzero().flatten().tolist()
        n = pads[0] if pads else len(best)
        positions = list(range(n))
        ids = best
    pieces = tokenizer.pieces(ids[:n].tolist())
    chosen = set(positions)
    marked = [(f"##[{p[2:]}]" if p.startswith("##") else f"[{p}]") if i in chosen else p for i, p in enumerate(pieces)]
    return CaptionPrediction(given.text if given is not None else None, positions,
                             [pieces[i] for i in positions], join_pieces(pieces), join_pieces(marked))
