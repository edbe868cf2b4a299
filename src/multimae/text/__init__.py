"""Text as a modality: the tokenizer saved with every run (`tokenizer`), captions that stay true
under augmentation (`flip`), a batch's captions as token ids (`batch`) and the tokenizer of a run
and its checkpoints (`run`)."""

from multimae.text.tokenizer import Encoded, TextTokenizer, check_texts, load_or_train

__all__ = ["Encoded", "TextTokenizer", "check_texts", "load_or_train"]
# `multimae.text.batch` (tokenize_batch, spec_for) and `multimae.text.run` (run_tokenizer,
# from_checkpoint) are imported from there: they need the data, modality and engine packages,
# which the readers' flip (`multimae.text.flip`) must not pull in.
