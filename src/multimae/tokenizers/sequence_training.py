"""Training and checking the sequence tokenizer every sequence modality of a 4M run shares.

Texts come by kind (``{kind: [text, ...]}``): from the built-in world (`world_texts`: each scene's
caption and its serialised sequences, `multimae.data.world.world_sequences`) or from a text source.
`sequence_report` says, per kind on held-out texts, how many tokens a text takes, how many
`max_length` cuts, how many pieces are ``[UNK]`` and how many texts come back exactly after
encode -> decode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from multimae.modalities.registry import DEFAULT_TEXT_MODALITY
from multimae.tokenizers.sequence import SequenceTokenizer


def world_texts(split: str, count: int, size: int = 64, bins: int | None = None, difficulty: float = 1.0,
                progress: bool = True) -> dict[str, list[str]]:
    """``{kind: texts}`` of world scenes 0 .. ``count - 1`` of ``split`` at ``size`` px: the caption and
    each serialised sequence, with ``bins`` coordinate bins (default: one per pixel)."""
    from multimae.data.world import world_sample, world_sequences

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    texts: dict[str, list[str]] = {}
    for i in tqdm(range(count), desc=f"world {split} texts", unit="scene", disable=not progress, dynamic_ncols=True):
        ws = world_sample(split, i, size, difficulty)
        for kind, text in {DEFAULT_TEXT_MODALITY: ws.caption, **world_sequences(ws, bins or size)}.items():
            texts.setdefault(kind, []).append(text)
    return texts


def train_sequence_tokenizer(texts: Mapping[str, Sequence[str]], words: Sequence[str] = (), vocab_size: int = 1000,
                             coord_bins: int = 64, num_sentinels: int = 200, max_length: int = 64,
                             min_frequency: int = 1) -> SequenceTokenizer:
    """One `SequenceTokenizer` trained on the texts of every kind."""
    return SequenceTokenizer.train([t for kind in texts.values() for t in kind], vocab_size, words, coord_bins,
                                   num_sentinels, max_length, min_frequency)


def sequence_report(tokenizer: SequenceTokenizer, texts: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Per kind: ``texts``, ``tokens_mean`` / ``tokens_max`` (with ``[EOS]``, before any cut),
    ``truncated`` (texts over `max_length`), ``unk`` (``[UNK]`` pieces) and ``exact`` (the share of
    texts that decode(encode(text)) gives back character for character); and the vocabulary."""
    kinds: dict[str, Any] = {}
    for kind, group in texts.items():
        lengths = torch.tensor(tokenizer.piece_counts(group)) + 1  # (N,) with [EOS]
        long = tokenizer.encode(list(group), max_length=int(lengths.max()))
        before = tokenizer.truncated
        back = tokenizer.decode(tokenizer.encode(list(group)))
        kinds[kind] = {"texts": len(group), "tokens_mean": round(lengths.float().mean().item(), 2),
                       "tokens_max": int(lengths.max()), "truncated": tokenizer.truncated - before,
                       "unk": int((long.ids == tokenizer.unk_id).sum()),
                       "exact": round(sum(a == b for a, b in zip(back, group)) / max(1, len(group)), 4)}
    return {"vocab_size": tokenizer.vocab_size, "max_length": tokenizer.max_length, "layout": {
        k: v for k, v in tokenizer.layout.items() if k != "words"}, "words": len(tokenizer.layout["words"]),
        "content_hash": tokenizer.content_hash, "kinds": kinds}


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The report as a small table, one line per kind."""
    lines = [f"vocab size {report['vocab_size']} ({report['words']} whole words, "
             f"{report['layout']['num_sentinels']} sentinels, {report['layout']['coord_bins']} coordinate bins), "
             f"max length {report['max_length']}, sha256 {report['content_hash'][:16]}",
             f"{'kind':<10} {'texts':>6} {'tokens mean':>11} {'max':>4} {'cut':>4} {'[UNK]':>5} {'exact':>6}"]
    for kind, r in report["kinds"].items():
        lines.append(f"{kind:<10} {r['texts']:>6} {r['tokens_mean']:>11.1f} {r['tokens_max']:>4} {r['truncated']:>4} "
                     f"{r['unk']:>5} {r['exact']:>6.1%}")
    return lines
