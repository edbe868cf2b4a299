"""Tokenizers: every modality as discrete tokens (4M), trained here and saved as files.

`Tokenizer` is the interface (`encode` raw -> `TokenIds`, `decode`, `vocab_size`, `placement`,
`save` / `load_tokenizer`, `content_hash`); `SpatialTokenizer` maps a dense or categorical map to a
grid of ids; `SequenceTokenizer` texts (captions, boxes, metadata) to padded ids in 4M's layout;
`VectorTokenizer` a global feature vector to a few ids. Training, metrics and the baseline are in `multimae.tokenizers.training`,
`multimae.tokenizers.metrics` and `multimae.tokenizers.baseline`.
"""

from multimae.tokenizers.base import CONFIG_FILE, WEIGHTS_FILE, Tokenizer, TokenIds, load_tokenizer
from multimae.tokenizers.network import MapTokenizerConfig
from multimae.tokenizers.quantizers import QuantizerConfig
from multimae.tokenizers.raw import MapFormat, fit_statistics
from multimae.tokenizers.sequence import SequenceTokenizer
from multimae.tokenizers.spatial import SpatialTokenizer
from multimae.tokenizers.vector import VectorTokenizer, VectorTokenizerConfig

__all__ = [
    "CONFIG_FILE", "WEIGHTS_FILE", "MapFormat", "MapTokenizerConfig", "QuantizerConfig", "SequenceTokenizer",
    "SpatialTokenizer", "TokenIds", "Tokenizer", "VectorTokenizer", "VectorTokenizerConfig", "fit_statistics",
    "load_tokenizer",
]
