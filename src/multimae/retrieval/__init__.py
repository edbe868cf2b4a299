"""Multimodal retrieval with 4M (its paper's "Multimodal retrieval"): a run predicts its global feature
tokens from any subset of inputs, its feature tokenizer decodes them to an embedding, and a gallery is
ranked by cosine similarity. One module per job:

| module | job |
|---|---|
| `embed.py` | the run's feature output; embeddings predicted from raw inputs, or from stored vectors; L2 norm |
| `index.py` | a gallery index: exact cosine top-k in torch (default) or faiss ``IndexFlatIP`` (optional extra) |
| `metrics.py` | recall@k given the gallery position of each query's true match |
| `gallery.py` | a folder / shard gallery or query set read in batches, embedded by the run |
| `picture.py` | a query and its top-k drawn |
"""

from multimae.retrieval.embed import EmbedSchedule, feature_output, normalize, predict_embeddings
from multimae.retrieval.index import BACKENDS, FaissIndex, TorchIndex, build_index
from multimae.retrieval.metrics import recall_at_k

__all__ = ["BACKENDS", "EmbedSchedule", "FaissIndex", "TorchIndex", "build_index", "feature_output", "normalize",
           "predict_embeddings", "recall_at_k"]
