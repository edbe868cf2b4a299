"""Text as a modality: the tokenizer saved with every run (`tokenizer`), captions that stay true
under augmentation (`flip`) and a batch's captions as token ids (`batch`)."""

from multimae.text.tokenizer import Encoded, TextTokenizer, check_texts, load_or_train

__all__ = ["Encoded", "TextTokenizer", "check_texts", "load_or_train"]
# `multimae.text.batch` (tokenize_batch, spec_for) is imported from there: it needs the data and
# modality packages, which the readers' flip (`multimae.text.flip`) must not pull in.
