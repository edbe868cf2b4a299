"""`SequenceTokenizer`: texts (a caption, boxes, metadata serialised as text) <-> padded token ids,
with 4M's vocabulary layout; one vocabulary shared by every sequence modality of a run.

Shapes: B texts, L ``max_length`` tokens.

Layout (ids in this order, as the official 4M tokenizer has them): ``[PAD]`` = 0, ``[UNK]`` = 1,
``[SOS]`` = 2, ``[EOS]`` = 3, the sentinels ``[S_0]`` .. ``[S_{n-1}]`` (span masking; 4M uses n = 200,
ids 4..203), the coordinate tokens ``v0=0`` .. ``v0={bins-1}``, ``v1=..``, ``v2=..``, ``v3=..`` (a box's
xmin, ymin, xmax, ymax in pixel bins), the given whole words (class names: one id each, never split),
then the trained WordPiece pieces (BERT-style normalisation; every ASCII character as a piece, and
every letter and digit also as a word-continuing piece, so that no ASCII text becomes ``[UNK]``).
Special, sentinel and coordinate tokens written in a text are those tokens (4M's serialisations rely
on it).

`encode` gives each text's pieces followed by ``[EOS]``, then ``[PAD]`` (an empty text, e.g. the boxes
of a scene without objects, is ``[EOS]`` alone); a text longer than
``max_length - 1`` pieces is cut (its ``[EOS]`` kept) and counted (`SequenceTokenizer.truncated`).
Training is not bit-reproducible (the library breaks frequency ties in hash order): train once, save,
and identify the tokenizer by `content_hash`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.engine.files import write_text_atomic
from multimae.text.tokenizer import ALPHABET, TOKENIZER_FILE, UNK, _tokenizers
from multimae.tokenizers.base import Tokenizer, TokenIds

PAD, SOS, EOS = "[PAD]", "[SOS]", "[EOS]"
LEADING: tuple[str, ...] = (PAD, UNK, SOS, EOS)  # ids 0..3
COORD_AXES = 4  # v0= .. v3=: xmin, ymin, xmax, ymax
# One training word that holds every letter and digit after its first character: the trainer then keeps
# each as a word-continuing piece (``##q``), so an unseen word always splits into known pieces.
_CONTINUATIONS = "a" + string.ascii_lowercase + string.digits
_COORD = re.compile(r"(?<!\S)v([0-3])=(\d+)(?!\S)")  # a coordinate token as a whole word


def _check(texts: Iterable[object]) -> Iterable[str]:
    """The texts, each a str (empty allowed), else a ValueError naming the index of the first that is not."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, not str")
        yield text


def sentinel(i: int) -> str:
    return f"[S_{i}]"


def coord_token(axis: int, value: int) -> str:
    return f"v{axis}={value}"


class SequenceTokenizer(Tokenizer):
    """Texts <-> (B, L) ids in 4M's layout (see the module docstring); build with `train` or
    `load_tokenizer`."""

    type_name = "wordpiece"

    def __init__(self, tokenizer: Any, max_length: int, layout: Mapping[str, Any]) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (a token and [EOS]), got {max_length}")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer, self.max_length = tokenizer, int(max_length)
        self.layout = {"num_sentinels": int(layout["num_sentinels"]), "coord_bins": int(layout["coord_bins"]),
                       "words": list(layout["words"])}
        self.truncated = 0  # texts cut by `encode` so far
        for i, token in enumerate(LEADING):
            if tokenizer.token_to_id(token) != i:
                raise ValueError(f"not a 4M-layout tokenizer: {token} is id {tokenizer.token_to_id(token)}, not {i}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, words: Sequence[str] = (), coord_bins: int = 64,
              num_sentinels: int = 200, max_length: int = 64, min_frequency: int = 1) -> SequenceTokenizer:
        """A WordPiece tokenizer trained on ``texts`` with the 4M layout; ``words`` (e.g. class names)
        are whole-word tokens. The vocabulary holds at most ``vocab_size`` entries beyond the special,
        sentinel, coordinate and word tokens."""
        if coord_bins < 1 or num_sentinels < 2:
            raise ValueError(f"coord_bins must be >= 1 and num_sentinels >= 2, got {coord_bins}, {num_sentinels}")
        if vocab_size < len(ALPHABET):
            raise ValueError(f"vocab_size must be at least {len(ALPHABET)} (the ASCII alphabet), got {vocab_size}")
        tk = _tokenizers()
        fixed = [*LEADING, *(sentinel(i) for i in range(num_sentinels)),
                 *(coord_token(a, v) for a in range(COORD_AXES) for v in range(coord_bins))]
        whole = [w.lower() for w in words]
        if len(set(whole)) != len(whole) or any(not w or " " in w for w in whole):
            raise ValueError(f"words must be distinct single words, got {list(words)}")
        # Only as whole words ("v0=3" inside "xv0=3" is not one), not normalised: as in 4M's file.
        special = [tk.AddedToken(t, single_word=True, normalized=False, special=True) for t in fixed]
        special += [tk.AddedToken(w, single_word=True, normalized=True, special=True) for w in whole]
        tokenizer = tk.Tokenizer(tk.models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = tk.decoders.WordPiece()
        trainer = tk.trainers.WordPieceTrainer(vocab_size=len(special) + vocab_size, min_frequency=min_frequency,
                                               special_tokens=special, initial_alphabet=list(ALPHABET),
                                               show_progress=False)
        texts = [t for t in _check(texts) if t.strip()]
        if not texts:
            raise ValueError("no texts to train a tokenizer on (none given, or all empty)")
        tokenizer.train_from_iterator([*texts, _CONTINUATIONS], trainer=trainer)
        return cls(tokenizer, max_length, {"num_sentinels": num_sentinels, "coord_bins": coord_bins, "words": whole})

    # ------------------------------------------------------------------ layout

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def placement(self) -> str:
        return "sequence"

    pad_id, unk_id, sos_id, eos_id = 0, 1, 2, 3

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < self.layout["num_sentinels"]:
            raise ValueError(f"sentinel {i} is not in [0, {self.layout['num_sentinels']})")
        return len(LEADING) + i

    @property
    def coord_bins(self) -> int:
        """Bins per axis of the coordinate tokens ``v0=0`` .. ``v3={coord_bins-1}``."""
        return self.layout["coord_bins"]

    @property
    def coord_ids(self) -> frozenset[int]:
        """Every coordinate token's id (the values of boxes, metadata and palettes)."""
        return frozenset(self.coord_id(a, v) for a in range(COORD_AXES) for v in range(self.coord_bins))

    def coord_id(self, axis: int, value: int) -> int:
        bins = self.layout["coord_bins"]
        if not (0 <= axis < COORD_AXES and 0 <= value < bins):
            raise ValueError(f"coordinate v{axis}={value} is outside axes 0..3 and bins [0, {bins})")
        return len(LEADING) + self.layout["num_sentinels"] + axis * bins + value

    def token_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None."""
        return self._tokenizer.token_to_id(token)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) or UNK for i in ids]

    # ------------------------------------------------------------------ ids

    def piece_counts(self, texts: Sequence[str]) -> list[int]:
        """Pieces of each text, before ``[EOS]`` and before any cut."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(_check(texts)), add_special_tokens=False)]

    def encode(self, raw: Sequence[str], max_length: int | None = None) -> TokenIds:  # type: ignore[override]
        """B texts -> `TokenIds` (B, L): pieces, ``[EOS]``, ``[PAD]``; ``valid`` False exactly at padding."""
        length = max_length or self.max_length
        if isinstance(raw, str):
            raise ValueError("encode takes a sequence of texts, got one str (wrap it in a list)")
        texts = list(_check(raw))
        for i, text in enumerate(texts):
            for axis, value in _COORD.findall(text):
                if int(value) >= self.coord_bins:
                    raise ValueError(f"texts[{i}]: coordinate v{axis}={value} is outside this tokenizer's "
                                     f"{self.coord_bins} bins (v{axis}=0 .. v{axis}={self.coord_bins - 1})")
        pieces = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.int64)
        for row, p in enumerate(pieces):
            if len(p) > length - 1:
                self.truncated += 1
                p = p[:length - 1]
            ids[row, :len(p) + 1] = torch.tensor([*p, self.eos_id], dtype=torch.int64)
        return TokenIds(ids, ids != self.pad_id, "sequence")

    def decode(self, tokens: TokenIds | Tensor) -> list[str]:  # type: ignore[override]
        """(B, L) ids -> B texts: the tokens before the first ``[EOS]``, padding left out."""
        ids = tokens.ids if isinstance(tokens, TokenIds) else tokens
        if not isinstance(ids, Tensor) or ids.ndim != 2:
            raise ValueError(f"expected ids of shape (B, L), got {getattr(ids, 'shape', type(ids).__name__)}")
        self.check_ids(ids)
        rows = []
        for row in ids.tolist():
            row = row[:row.index(self.eos_id)] if self.eos_id in row else row
            rows.append([i for i in row if i != self.pad_id])
        return self._tokenizer.decode_batch(rows, skip_special_tokens=False)

    # ------------------------------------------------------------------ files

    def to_json(self) -> str:
        """The Hugging Face ``tokenizer.json`` text."""
        return self._tokenizer.to_str(pretty=True)

    def config_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "layout": self.layout, "tokenizer_json": self.to_json()}

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def save(self, folder: str | Path) -> Path:
        """`Tokenizer.save`, plus the plain ``tokenizer.json`` other tools read."""
        folder = super().save(folder)
        write_text_atomic(folder / TOKENIZER_FILE, self.to_json(), unique=True)
        return folder

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> SequenceTokenizer:
        tokenizer = _tokenizers().Tokenizer.from_str(config["tokenizer_json"])
        return cls(tokenizer, int(config["max_length"]), config["layout"])

    def __repr__(self) -> str:
        return f"SequenceTokenizer(vocab_size={self.vocab_size}, max_length={self.max_length}, " \
               f"hash={self.content_hash[:12]})"

