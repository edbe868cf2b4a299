"""Reader of image-caption pairs listed in a JSON Lines file.

Each non-blank line is one JSON object, ``{"image": "<path>", "caption": "<text>"}``: the image
path is absolute or relative to the JSONL file's folder; an image may appear on several lines
(several captions). The field names are ``image_field`` / ``caption_field``. Items are sample dicts
in the folder reader's form: the image modality (`DEFAULT_IMAGE_MODALITY`: ``(3, H, W)`` float in
[0, 1], read by `multimae.data.codecs.read_image`), the text modality (`DEFAULT_TEXT_MODALITY`:
str, stripped) and ``key``, the line number as 8 digits.

Bad input raises a ValueError naming the file and line (``pairs.jsonl:7: ...``): a line that is
not UTF-8 or not a JSON object, a missing or non-string field, an empty caption or one longer than
`multimae.data.codecs.MAX_TEXT_CHARS` (all found when the file is opened), a missing or undecodable image (found when the item is read). ``on_error="skip"``
logs and counts them in ``num_skipped`` instead (a bad image: the next readable item is returned,
as `multimae.data.folder.FolderDataset` does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from multimae.data.codecs import check_text, decode_modality, read_file
from multimae.data.indexed import IndexedSamples
from multimae.data.transforms import Transform
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY, DEFAULT_TEXT_MODALITY

IMAGE_FIELD = "image"  # the default field names of a line: words of the file format, not modality names
CAPTION_FIELD = "caption"


@dataclass(frozen=True)
class Pair:
    """One line of the file: its number (1-based), the image's path and the caption."""

    line: int
    image: Path
    caption: str


def parse_line(raw: bytes, where: str, folder: Path, image_field: str, caption_field: str,
               text_modality: str) -> tuple[Path, str]:
    """(image path, caption) of one JSONL line; a ValueError starting with ``where`` when it is bad."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not UTF-8 text (byte {err.start} of the line)") from None
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object with {image_field!r} and {caption_field!r}, "
                         f"got {type(entry).__name__}")
    for field in (image_field, caption_field):
        if not isinstance(entry.get(field), str):
            problem = "missing" if field not in entry else f"a {type(entry[field]).__name__}, not a string"
            raise ValueError(f"{where}: field {field!r} is {problem}")
    image = Path(entry[image_field])
    return (image if image.is_absolute() else folder / image), check_text(entry[caption_field], where, text_modality)


class JsonlDataset(IndexedSamples):
    """Image-caption pairs from a JSON Lines file (see the module docstring for the format).

    ``captions`` holds every caption in item order without reading an image (tokenizer training).
    """

    def __init__(self, path: str | Path, image_field: str = IMAGE_FIELD, caption_field: str = CAPTION_FIELD,
                 image_modality: str = DEFAULT_IMAGE_MODALITY, text_modality: str = DEFAULT_TEXT_MODALITY,
                 transform: Transform | None = None, on_error: str = "raise", seed: int = 0) -> None:
        super().__init__(transform, on_error, seed)
        self.path = Path(path)
        self.image_modality, self.text_modality = image_modality, text_modality
        self.pairs = self._parse(read_file(self.path), image_field, caption_field)
        if not self.pairs:
            raise ValueError(f"{self.path}: no image-caption pairs (expected lines like "
                             f'{{"{image_field}": "a.jpg", "{caption_field}": "a red cube"}})')

    def _parse(self, data: bytes, image_field: str, caption_field: str) -> list[Pair]:
        pairs = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                image, text = parse_line(raw, f"{self.path}:{number}", self.path.parent, image_field, caption_field,
                                         self.text_modality)
            except ValueError as err:
                self.skip(err)
                continue
            pairs.append(Pair(number, image, text))
        return pairs

    @property
    def captions(self) -> list[str]:
        return [p.caption for p in self.pairs]

    @property
    def keys(self) -> list[str]:
        """The items' keys (line numbers as 8 digits), as `multimae.data.folder.FolderDataset.keys`;
        setting a subset keeps only those items (held-out splits)."""
        return [f"{p.line:08d}" for p in self.pairs]

    @keys.setter
    def keys(self, keys: list[str]) -> None:
        wanted = set(keys)
        self.pairs = [p for p in self.pairs if f"{p.line:08d}" in wanted]

    def __len__(self) -> int:
        return len(self.pairs)

    def where(self) -> str:
        return str(self.path)

    def load(self, index: int) -> dict[str, object]:
        """Item ``index`` without augmentation; raises a ValueError naming the line and the image."""
        pair = self.pairs[index]
        try:
            image = decode_modality(self.image_modality, read_file(pair.image), str(pair.image))
        except ValueError as err:
            raise ValueError(f"{self.path}:{pair.line}: {err}") from None
        return {self.image_modality: image, self.text_modality: pair.caption, "key": f"{pair.line:08d}"}

