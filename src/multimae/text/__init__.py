"""Text as a modality: the tokenizer saved with every run (`tokenizer`) and captions that stay true
under augmentation (`flip`)."""

from multimae.text.tokenizer import Encoded, TextTokenizer, check_texts, load_or_train

__all__ = ["Encoded", "TextTokenizer", "check_texts", "load_or_train"]
