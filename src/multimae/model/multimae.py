"""The composed MultiMAE: multi-modal encoder + one shallow decoder per output modality.

Shapes: B batch, N_m tokens of modality m, C channels, H W pixels of a modality's own map.

Usage::

    model = MultiMAE(model_config("tiny", encoder={"image_size": 64, "patch_size": 8}))
    masks = model.sample_masks(inputs, num_visible=32, generator=g)   # or your own masks
    out = model(inputs, masks)           # out.preds["depth"]: (B, 1, 64, 64)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multimae.model.config import MultiMAEConfig
from multimae.model.decoder import SpatialDecoder
from multimae.model.encoder import EncoderOutput, MultiModalViT
from multimae.model.init import init_weights


@dataclass
class MultiMAEOutput:
    """Attributes:
    preds: ``{output modality: (B, C, H, W)}`` float; class logits for categorical outputs, at
        the modality's own resolution (image size / stride).
    masks: ``{output modality: (B, N) bool}``, True = masked (predicted from context, counted in
        the loss); an output whose source modality was not given is fully masked. Derived
        outputs (norm_rgb) share the mask of their source (rgb).
    encoder: the encoder's output (visible tokens, their ids, the token layout).
    """

    preds: dict[str, Tensor]
    masks: dict[str, Tensor]
    encoder: EncoderOutput


class MultiMAE(MultiModalViT):
    """Multi-modal multi-task masked autoencoder (paper Sec. 3).

    The state dict has the official key names (``input_adapters.*``, ``encoder.*``,
    ``global_tokens``, ``output_adapters.<modality>.*``).
    """

    def __init__(self, config: MultiMAEConfig) -> None:
        specs = config.modality_specs()
        super().__init__(config.encoder, {n: specs[n] for n in config.inputs})
        self.model_config = config
        self.output_specs = {n: specs[n] for n in config.outputs}
        enc = config.encoder
        self.output_adapters = nn.ModuleDict(
            {
                name: SpatialDecoder(spec, config.decoder, enc.dim, config.inputs, enc.patch_size, enc.image_size)
                for name, spec in self.output_specs.items()
            }
        )
        init_weights(self)

    def no_weight_decay(self) -> set[str]:
        """Encoder tokens and tables plus the decoders' mask tokens and modality embeddings."""
        return super().no_weight_decay() | {
            n for n, _ in self.named_parameters() if n.endswith("mask_token") or ".task_embeddings." in n
        }

    def output_masks(self, enc: EncoderOutput, masks: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Per-output masks (True = predicted), derived from the input masks."""
        B = enc.tokens.shape[0]
        n = enc.layout.grid[0] * enc.layout.grid[1]
        out = {}
        for name, spec in self.output_specs.items():
            src = spec.source_name
            if src in enc.layout.names:
                out[name] = masks[src].bool() if masks is not None else torch.zeros(B, n, dtype=torch.bool, device=enc.tokens.device)
            else:
                out[name] = torch.ones(B, n, dtype=torch.bool, device=enc.tokens.device)
        return out

    def forward(  # type: ignore[override]
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> MultiMAEOutput:
        """Encode the visible tokens of ``inputs`` and decode every (or each listed) output.

        Args:
            inputs: ``{modality: prepared tensor}``, any non-empty subset of the model's inputs.
            masks: ``{input modality: (B, N_m) bool}``, True = masked; None = nothing masked.
            outputs: decoders to run (default: all).
        """
        names = list(self.output_adapters) if outputs is None else list(outputs)
        unknown = [n for n in names if n not in self.output_adapters]
        if unknown:
            raise ValueError(f"unknown output modality {unknown}; this model predicts {list(self.output_adapters)}")
        enc = self.forward_encoder(inputs, masks)
        preds = {n: self.output_adapters[n](enc) for n in names}
        all_masks = self.output_masks(enc, masks)
        return MultiMAEOutput(preds, {n: all_masks[n] for n in names}, enc)
