"""Captions that stay true when their image is mirrored left-right.

A horizontal flip turns "a red cube left of a blue cone" into a picture of a red cube *right* of
a blue cone, so the augmentation swaps the words ``left`` and ``right`` in the caption too
(`multimae.data.transforms.hflip`, `multimae.data.batch_augment`). Only whole words are swapped
("left-hand" -> "right-hand", but "leftover" stays), keeping their case (``Left`` -> ``Right``,
``LEFT`` -> ``RIGHT``). Mirroring twice gives the caption back.
"""

from __future__ import annotations

import re

MIRRORED_WORDS: dict[str, str] = {"left": "right", "right": "left"}
_WORD = re.compile(r"\b(" + "|".join(MIRRORED_WORDS) + r")\b", re.IGNORECASE)


def _same_case(word: str, like: str) -> str:
    """``word`` written in the case of ``like``: all capitals, a capital first, or lower case."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[0].isupper():
        return word.capitalize()
    return word


def mirror_caption(text: str) -> str:
    """``text`` with every whole word left <-> right swapped, case kept."""
    return _WORD.sub(lambda m: _same_case(MIRRORED_WORDS[m.group(0).lower()], m.group(0)), text)
