"""`TextTokenizer`: captions -> padded token ids, and back; saved with every run and checkpoint.

Shapes: B texts, L ``max_length`` tokens.

A wrapper around a Hugging Face `tokenizers.Tokenizer`. `TextTokenizer.train` makes a WordPiece
vocabulary from captions (BERT-style: lowercased, accents stripped, split on whitespace and
punctuation); `TextTokenizer.from_pretrained` takes any tokenizer by hub name (``bert-base-uncased``,
needs the network) or from a local ``tokenizer.json``.

Special tokens: a trained vocabulary starts with ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``, ``[SEP]``
and ``[MASK]``, in that order. `encode` adds none of them: a caption's ids are its word pieces
followed by ``[PAD]`` up to ``max_length`` (``[CLS]`` / ``[SEP]`` / ``[MASK]`` are reserved for
models that want them; a masked model hides tokens with its own mask embedding), and a caption
that happens to contain the text ``[PAD]`` or ``[MASK]`` gets word pieces, not those ids. A
caption longer than ``max_length`` is truncated and *counted* (`Encoded.truncated`), never
silently.

Training is not reproducible bit for bit (the library breaks ties between equally frequent pieces in
hash order), which is why a trained tokenizer is saved once (`save`, `load_or_train`) and then
identified by `content_hash`: train it on one process and let the others load the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from multimae.engine.files import write_text_atomic

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)  # their ids are 0..4 in a trained vocabulary
PAD_CANDIDATES: tuple[str, ...] = (PAD, "<pad>", "<|pad|>")  # looked for in a pretrained tokenizer
# Every ASCII character a lowercased caption can hold, so no plain ASCII word becomes [UNK].
ALPHABET: tuple[str, ...] = tuple(string.ascii_lowercase + string.digits + string.punctuation)
TOKENIZER_FILE = "tokenizer.json"  # the Hugging Face tokenizer itself; `content_hash` is its sha256
CONFIG_FILE = "multimae_text.json"  # what the wrapper adds: the padding token and how it was trained


@dataclass(frozen=True)
class Encoded:
    """Captions as a padded batch of token ids.

    Attributes:
        ids: (B, L) int64 token ids, ``pad_id`` after each caption's last token.
        valid: (B, L) bool, True at a caption's tokens, False exactly at padding.
        lengths: (B,) int64 number of tokens of each caption *before* truncation (> L when truncated).
        truncated: how many captions had more than L tokens and were cut to L.
    """

    ids: Tensor
    valid: Tensor
    lengths: Tensor
    truncated: int


def check_texts(texts: Iterable[object], what: str = "texts") -> Iterator[str]:
    """Yield the texts of ``texts``, raising a ValueError naming the index (``texts[3]``) of the
    first that is not a str or is empty / whitespace only."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{what}[{i}] is {type(text).__name__}, not str")
        if not text.strip():
            raise ValueError(f"{what}[{i}] is empty{' (whitespace only)' if text else ''}: a caption needs words")
        yield text


def _tokenizers():
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError("text modalities need Hugging Face tokenizers: pip install 'tokenizers>=0.15'") from None
    return tokenizers


def _find_pad(tokenizer, pad_token: str | None) -> str:
    candidates = (pad_token,) if pad_token is not None else PAD_CANDIDATES
    for token in candidates:
        if tokenizer.token_to_id(token) is not None:
            return token  # type: ignore[return-value]
    raise ValueError(f"the tokenizer has no padding token (looked for {', '.join(map(repr, candidates))}); "
                     "pass pad_token= naming one of its tokens")


class TextTokenizer:
    """Captions <-> (B, L) token ids: `encode`, `decode`, `save` / `load`, `content_hash`.

    Build one with `train`, `from_pretrained` or `load`; ``training`` records how a trained one was
    made (vocab size and min frequency asked for), so a cache can tell whether it still fits.
    """

    def __init__(self, tokenizer, pad_token: str | None = None, training: dict[str, int] | None = None) -> None:
        tokenizer.no_padding()  # padding and truncation are done (and counted) by `encode`
        tokenizer.no_truncation()
        tokenizer.encode_special_tokens = True  # "[PAD]" written in a caption is text, never the padding id
        self._tokenizer = tokenizer
        self.pad_token = _find_pad(tokenizer, pad_token)
        self.training = dict(training or {})

    # ------------------------------------------------------------------ building

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1) -> TextTokenizer:
        """A WordPiece tokenizer trained on ``texts`` (each a non-empty str, else a ValueError naming
        its index); the vocabulary holds `SPECIAL_TOKENS` (``[PAD]`` = 0), the ASCII `ALPHABET` and at
        most ``vocab_size`` entries in all."""
        if vocab_size < len(SPECIAL_TOKENS) + len(ALPHABET):
            raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(ALPHABET)} (special tokens "
                             f"and the ASCII alphabet), got {vocab_size}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        tk = _tokenizers()
        tokenizer = tk.Tokenizer(tk.models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = tk.decoders.WordPiece()
        trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                               special_tokens=list(SPECIAL_TOKENS), initial_alphabet=list(ALPHABET),
                                               show_progress=False)
        count = 0

        def counted() -> Iterator[str]:
            nonlocal count
            for text in check_texts(texts):
                count += 1
                yield text

        tokenizer.train_from_iterator(counted(), trainer=trainer)
        if count == 0:
            raise ValueError("no texts to train a tokenizer on")
        return cls(tokenizer, PAD, {"vocab_size": vocab_size, "min_frequency": min_frequency})

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, pad_token: str | None = None) -> TextTokenizer:
        """A tokenizer from a folder holding ``tokenizer.json`` (saved by `save` or by Hugging Face),
        a ``tokenizer.json`` file, or a hub name (``bert-base-uncased``: downloads, needs the network;
        refused at once when ``HF_HUB_OFFLINE`` is set).
        The padding token is ``pad_token``, or the first of `PAD_CANDIDATES` the vocabulary has."""
        path = Path(name_or_dir)
        if path.is_dir() or path.is_file():
            return cls.load(path, pad_token)
        where = f"cannot load tokenizer {str(name_or_dir)!r}: it is not a local folder or file"
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ValueError(f"{where}, and HF_HUB_OFFLINE is set (no hub downloads); give a folder holding "
                             f"{TOKENIZER_FILE}")
        tk = _tokenizers()
        try:
            tokenizer = tk.Tokenizer.from_pretrained(str(name_or_dir))
        except Exception as err:  # the library raises plain Exceptions for hub and network failures
            raise ValueError(f"{where}, and fetching it from the Hugging Face hub failed (offline, or no such "
                             f"name?): {err}") from None
        return cls(tokenizer, pad_token)

    @classmethod
    def load(cls, path: str | Path, pad_token: str | None = None) -> TextTokenizer:
        """The tokenizer saved in folder ``path`` (or the ``tokenizer.json`` file ``path``)."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{file}: no tokenizer file (a saved tokenizer is a folder holding {TOKENIZER_FILE})")
        config_file = file.parent / CONFIG_FILE
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        try:
            tokenizer = _tokenizers().Tokenizer.from_str(file.read_text(encoding="utf-8"))
        except Exception as err:  # the library's parse errors are plain Exceptions
            raise ValueError(f"{file}: not a tokenizer file ({err})") from None
        return cls(tokenizer, pad_token or config.get("pad_token"), config.get("training"))

    # ------------------------------------------------------------------ files

    def to_json(self) -> str:
        """The text of ``tokenizer.json``."""
        return self._tokenizer.to_str(pretty=True)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the saved ``tokenizer.json`` bytes: equal hashes, equal tokenizers."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write ``path/tokenizer.json`` and ``path/multimae_text.json`` (padding token, training
        settings, content hash), each atomically; returns the folder."""
        path = Path(path)
        write_text_atomic(path / TOKENIZER_FILE, self.to_json(), unique=True)
        config = {"pad_token": self.pad_token, "training": self.training, "content_hash": self.content_hash}
        write_text_atomic(path / CONFIG_FILE, json.dumps(config, indent=2) + "\n", unique=True)
        return path

    # ------------------------------------------------------------------ ids

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the ``num_channels`` of a ``tokens`` modality)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return int(self._tokenizer.token_to_id(self.pad_token))

    def encode(self, texts: Sequence[str], max_length: int) -> Encoded:
        """B captions -> `Encoded` with ids (B, max_length): word pieces, no special tokens, padded
        with `pad_id`; longer captions are cut to ``max_length`` and counted in ``truncated``.
        A text that is not a str, or is empty, raises a ValueError naming its index."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if isinstance(texts, str):
            raise ValueError("encode takes a sequence of captions, got one str (wrap it in a list)")
        texts = list(check_texts(texts))
        pieces = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.int64)
        lengths = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
        for row, p in enumerate(pieces):
            kept = p[:max_length]
            ids[row, :len(kept)] = torch.tensor(kept, dtype=torch.int64)
        valid = torch.arange(max_length)[None, :] < lengths.clamp_max(max_length)[:, None]  # (B, L)
        return Encoded(ids, valid, lengths, int((lengths > max_length).sum()))

    def decode(self, ids: Tensor | Sequence[Sequence[int]], valid: Tensor | None = None) -> list[str]:
        """(B, L) ids -> B strings, leaving out padding (`pad_id`, and where ``valid`` is False)."""
        rows = ids.tolist() if isinstance(ids, Tensor) else [list(r) for r in ids]
        keep = valid.tolist() if valid is not None else [[True] * len(r) for r in rows]
        kept = [[i for i, k in zip(r, v) if k and i != self.pad_id] for r, v in zip(rows, keep)]
        return self._tokenizer.decode_batch(kept, skip_special_tokens=False)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary entry of each id (WordPiece continuations start with ``##``)."""
        return [self._tokenizer.id_to_token(int(i)) or UNK for i in ids]

    def token_counts(self, texts: Iterable[str]) -> list[int]:
        """Tokens of each text (no special tokens, no limit): what a ``max_length`` must hold."""
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(check_texts(texts)), add_special_tokens=False)]

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, pad={self.pad_token!r}, hash={self.content_hash[:12]})"


def load_or_train(path: str | Path, texts: Callable[[], Iterable[str]], vocab_size: int = 1000,
                  min_frequency: int = 1) -> TextTokenizer:
    """The tokenizer cached in folder ``path``, or one trained on ``texts()`` and saved there.

    ``texts`` is called only when there is no cache. A cached tokenizer trained with other settings
    raises a ValueError naming both (delete the folder to retrain); one from `from_pretrained`
    (no training settings) is used as it is.
    """
    path = Path(path)
    if (path / TOKENIZER_FILE).is_file():
        cached = TextTokenizer.load(path)
        asked = {"vocab_size": vocab_size, "min_frequency": min_frequency}
        if cached.training and cached.training != asked:
            raise ValueError(f"{path}: the cached tokenizer was trained with {cached.training}, not {asked}; "
                             "delete the folder to train it again, or ask for the same settings")
        return cached
    tokenizer = TextTokenizer.train(texts(), vocab_size, min_frequency)
    tokenizer.save(path)
    return tokenizer
