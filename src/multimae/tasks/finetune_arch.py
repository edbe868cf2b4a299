"""The network a resolved fine-tuning config describes: its head and the `FineTuneModel`, built
from the config alone (run loading and the fine-tuning job both use it)."""

from __future__ import annotations

from multimae.config.finetune import FinetuneConfig
from multimae.model import FineTuneModel
from multimae.model.config import EncoderConfig
from multimae.model.fourm.config import FourMConfig
from multimae.model.fourm.embeddings import token_pixels
from multimae.model.heads import (
    ConvNeXtHeadConfig,
    DPTHeadConfig,
    HeadConfig,
    LinearHeadConfig,
    default_hooks,
)


def head_name(cfg: FinetuneConfig) -> str:
    """``output_adapters.<name>``: ``cls`` for classification, else the target modality (official names)."""
    return "cls" if cfg.task.kind == "classification" else cfg.task.target_name  # type: ignore[return-value]


def _token_pixels(cfg: FinetuneConfig, enc: EncoderConfig | FourMConfig) -> int:
    """Pixels per token side of the grid the head reads (a 4M encoder's token maps have their own)."""
    if not isinstance(enc, FourMConfig):
        return enc.patch_size
    cells = {token_pixels(s, enc.patch_size) for s in cfg.model.specs(cfg.head_modalities).values()}
    return cells.pop() if len(cells) == 1 else enc.patch_size


def head_config(cfg: FinetuneConfig, enc: EncoderConfig | FourMConfig) -> HeadConfig:
    """The head of ``cfg``'s task for encoder ``enc`` (the head section's defaults resolved)."""
    h, D, task = cfg.head, enc.dim, cfg.task
    if task.kind == "classification":
        if task.num_classes is None:
            raise ValueError("task.num_classes is not set and the data does not define classes")
        return LinearHeadConfig(dim=D, num_classes=task.num_classes, pooling=h.pooling)
    if task.kind == "segmentation":
        ppp = h.preds_per_patch or max(1, _token_pixels(cfg, enc) // 4) ** 2
        num_classes = task.num_classes or cfg.model.specs((task.target_name,))[task.target_name].num_channels  # type: ignore[index]
        return ConvNeXtHeadConfig(dim=D, num_classes=num_classes, modalities=cfg.head_modalities,
                                  embed_dim=h.embed_dim or ppp * max(1, D // 2), preds_per_patch=ppp, depth=h.depth)
    target = cfg.model.specs((task.target_name,))[task.target_name]  # type: ignore[index]
    return DPTHeadConfig(dim=D, num_channels=target.num_channels, modalities=cfg.head_modalities,
                         hooks=tuple(h.hooks) or default_hooks(enc.encoder_depth if isinstance(enc, FourMConfig) else enc.depth),
                         layer_dims=tuple(h.layer_dims) or (max(1, D // 8), max(1, D // 4), max(1, D // 2), D),
                         feature_dim=h.feature_dim or max(2, D // 3))


def build_model(cfg: FinetuneConfig) -> FineTuneModel:
    """The (randomly initialised) network a resolved config describes."""
    enc = cfg.model.encoder_config(cfg.data.image_size)
    specs = cfg.model.specs(tuple(cfg.task.inputs))
    return FineTuneModel(enc, specs, head_config(cfg, enc), head_name(cfg))
