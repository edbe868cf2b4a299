"""Captions in pictures: a token sequence shown with its masked words, the predictions for them
and the truth (M3AE's masked language modelling, read by a person).

Shapes: L tokens of one caption.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

HIDDEN = "___"  # a word piece the encoder did not see
Pieces = Callable[[Sequence[int]], list[str]]  # ids -> vocabulary entries (`TextTokenizer.pieces`)
PiecesOf = Mapping[str, Pieces]  # {text modality: its pieces}


def join_pieces(pieces: Sequence[str]) -> str:
    """WordPiece pieces -> text: a ``##`` continuation is glued to the piece before it."""
    out = ""
    for p in pieces:
        out += p[2:] if p.startswith("##") and out else (" " + p if out else p)
    return out


@dataclass(frozen=True)
class CaptionLines:
    """One caption under one mask: what the encoder saw, what came back, the truth, and how many
    of the hidden real tokens were predicted exactly."""

    given: str  # hidden pieces as ___
    predicted: str  # hidden pieces replaced by the prediction, in [brackets]
    truth: str
    correct: int
    hidden: int

    def note(self, name: str) -> str:
        score = f"{self.correct}/{self.hidden} hidden pieces right" if self.hidden else "nothing hidden"
        return f"{name} in: {self.given}\n{name} out: {self.predicted} ({score})\n{name} GT: {self.truth}"


def caption_lines(pieces: Pieces, ids: Tensor, valid: Tensor, hidden: Tensor,
                  predicted: Tensor) -> CaptionLines:
    """``ids``, ``valid``, ``hidden`` and ``predicted`` (argmax ids) are (L,) for one caption;
    ``pieces`` maps ids to vocabulary entries (`TextTokenizer.pieces`)."""
    real = [i for i in range(ids.shape[0]) if bool(valid[i])]
    truth = pieces([int(ids[i]) for i in real])
    guess = pieces([int(predicted[i]) for i in real])
    masked = [bool(hidden[i]) for i in real]
    given = [HIDDEN if m else t for t, m in zip(truth, masked)]
    shown = [f"[{g}]" if m else t for t, g, m in zip(truth, guess, masked)]
    correct = sum(int(predicted[i]) == int(ids[i]) for i, m in zip(real, masked) if m)
    return CaptionLines(join_pieces(given), join_pieces(shown), join_pieces(truth), correct, sum(masked))
