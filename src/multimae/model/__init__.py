"""Adapters, encoder, decoders and the composed MultiMAE."""

from multimae.model.config import MODEL_SIZES, DecoderConfig, EncoderConfig, MultiMAEConfig, model_config
from multimae.model.encoder import EncoderOutput, MultiModalViT, TokenLayout
from multimae.model.finetune import FineTuneModel
from multimae.model.multimae import MultiMAE, MultiMAEOutput

Model = MultiMAE | FineTuneModel  # what a checkpoint of ours rebuilds: an encoder composed with decoders or a head

__all__ = [
    "MODEL_SIZES", "DecoderConfig", "EncoderConfig", "EncoderOutput", "FineTuneModel", "Model", "MultiMAE", "MultiMAEConfig",
    "MultiMAEOutput", "MultiModalViT", "TokenLayout", "model_config",
]
