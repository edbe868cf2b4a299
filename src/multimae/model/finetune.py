"""An encoder with one fine-tuning head (the official ``MultiViT`` layout).

Shapes: B batch, K classes or output channels, H W image pixels.

The model is composed of the encoder (``backbone``: a `MultiModalViT` for an `EncoderConfig`, the
encoder of a 4M model, `FourMEncoder`, for a `FourMConfig`) and the head. State-dict keys: the
encoder's without the ``backbone.`` prefix (``input_adapters.*``, ``encoder.*``, ``global_tokens``;
4M's ``encoder_embeddings.*``, ``encoder.*``, ``encoder_norm.*``) and the head's under
``output_adapters.<head name>.*`` (official names: ``cls``, ``semseg``, ``depth``), so official
fine-tuned checkpoints load by name.

Usage::

    head = ConvNeXtHeadConfig(dim=192, num_classes=9, modalities=("rgb",), embed_dim=384, preds_per_patch=4)
    model = FineTuneModel(cfg.encoder, specs, head, "semseg")
    logits = model({"rgb": rgb, "depth": depth})     # (B, 9, H, W); any subset containing rgb
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from multimae.modalities.spec import ModalitySpec
from multimae.model.config import EncoderConfig
from multimae.model.encoder import MultiModalViT
from multimae.model.fourm.config import FourMConfig
from multimae.model.fourm.encoder import FourMEncoder
from multimae.model.heads import DPTHeadConfig, HeadConfig, build_head
from multimae.model.fourm.model import init_fourm_weights
from multimae.model.init import init_weights
from multimae.model.state_keys import lift_child_keys


class FineTuneModel(nn.Module):
    """Encodes every token of the given inputs (no masking) and applies the head."""

    def __init__(self, encoder: EncoderConfig | FourMConfig, input_specs: Mapping[str, ModalitySpec], head: HeadConfig,
                 head_name: str) -> None:
        super().__init__()
        fourm = isinstance(encoder, FourMConfig)
        self.backbone: MultiModalViT | FourMEncoder = (FourMEncoder if fourm else MultiModalViT)(encoder, input_specs)  # type: ignore[arg-type]
        depth = encoder.encoder_depth if fourm else encoder.depth  # type: ignore[union-attr]
        if head.dim != encoder.dim:
            raise ValueError(f"the head expects {head.dim}-wide tokens but the encoder is {encoder.dim} wide")
        read = getattr(head, "modalities", ())
        unknown = [m for m in read if m not in input_specs]
        if unknown:
            raise ValueError(f"the head reads {unknown} tokens, which are not inputs of the model {list(input_specs)}")
        if isinstance(head, DPTHeadConfig) and max(head.hooks) >= depth:
            raise ValueError(f"DPT hooks {head.hooks} reach past the encoder's {depth} blocks")
        self.head_name = head_name
        self.head_config = head
        self.output_adapters = nn.ModuleDict({head_name: build_head(head)})
        lift_child_keys(self, "backbone")
        if fourm:  # each part as its family initialises it (MultiMAE's scheme would touch 4M's bias-free norms)
            init_fourm_weights(self.backbone, encoder.encoder_token_std)  # type: ignore[union-attr]
            init_weights(self.output_adapters)
        else:
            init_weights(self)

    @property
    def input_specs(self) -> dict[str, ModalitySpec]:
        """The input modalities the encoder accepts, in its order."""
        return self.backbone.input_specs

    def no_weight_decay(self) -> set[str]:
        """State-dict names of the encoder's tokens and positional tables."""
        return self.backbone.no_weight_decay()

    @property
    def head(self) -> nn.Module:
        return self.output_adapters[self.head_name]

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``inputs``: ``{modality: prepared tensor}``, any subset of the inputs that holds the
        modalities the head reads. Returns logits (B, K) or dense predictions (B, K, H, W)."""
        enc = self.backbone.forward_encoder(inputs, return_layers=getattr(self.head, "return_layers", ()))
        h, w = enc.layout.grid
        P = self.backbone.patch_size
        return self.head(enc, (h * P, w * P))
