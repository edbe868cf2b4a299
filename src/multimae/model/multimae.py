"""The composed MultiMAE: multi-modal encoder + one shallow decoder per output modality.

Shapes: B batch, N_m tokens of modality m, C channels, H W pixels of a modality's own map.

Usage::

    model = MultiMAE(model_config("tiny", encoder={"image_size": 64, "patch_size": 8}))
    masks = model.backbone.sample_masks(inputs, num_visible=32, generator=g)   # or your own masks
    out = model(inputs, masks)           # out.preds["depth"]: (B, 1, 64, 64)

or, with typed records (`multimae.modalities.batch.ModalityBatch`: data, valid, hidden, target)::

    out = model.forward_batch({"rgb": ModalityBatch(rgb, valid, hidden, target), ...})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from multimae.modalities.batch import ModalityBatch
from multimae.modalities.spec import ModalitySpec
from multimae.model.adapters import OutputSide, build_output_side
from multimae.model.config import MultiMAEConfig
from multimae.model.decoder import CrossAttentionDecoder, Decoder
from multimae.model.encoder import EncoderOutput, MultiModalViT
from multimae.model.init import init_weights
from multimae.model.joint_decoder import JointDecoder
from multimae.model.state_keys import lift_child_keys


@dataclass
class MultiMAEOutput:
    """Attributes:
    preds: ``{output modality: (B, C, H, W)}`` float; class logits for categorical outputs, at
        the modality's own resolution (image size / stride); ``(B, L, C)`` for a sequence.
    masks: ``{output modality: (B, N) bool}``, True = counted in the loss (a valid target token):
        by default the hidden tokens of the output's source; an output whose source modality
        was not given is predicted everywhere it is valid. Derived outputs (norm_rgb) share the
        mask of their source (rgb).
    encoder: the encoder's output (visible tokens, their ids, the token layout).
    valid: ``{output modality: (B, N) bool}``, True = the target token exists, for outputs where
        some do not (padding, samples lacking the modality); absent = all exist.
    """

    preds: dict[str, Tensor]
    masks: dict[str, Tensor]
    encoder: EncoderOutput
    valid: dict[str, Tensor] = field(default_factory=dict)


class MultiMAE(nn.Module):
    """Multi-modal multi-task masked autoencoder (paper Sec. 3): an encoder composed with decoders.

    ``backbone`` is the `MultiModalViT` encoder; ``output_adapters`` holds the decoders behind
    the `Decoder` interface: by default a `CrossAttentionDecoder` per output (MultiMAE), or with
    ``decoder.kind: joint`` one `JointDecoder` over all outputs (M3AE), held under the outputs'
    names joined by "+" (``output_adapters.rgb+caption.*``). The state dict has the official key
    names (``input_adapters.*``, ``encoder.*``, ``global_tokens``, ``output_adapters.<modality>.*``:
    the backbone's entries are listed without its prefix, `multimae.model.state_keys`).
    """

    def __init__(self, config: MultiMAEConfig, decoders: Mapping[str, Decoder] | None = None) -> None:
        """``decoders``: ``{output modality: decoder}`` replacing the default cross-attention
        decoders (each must serve its key's modality)."""
        super().__init__()
        specs = config.modality_specs()
        self.backbone = MultiModalViT(config.encoder, {n: specs[n] for n in config.inputs})
        self.model_config = config
        self.output_specs = {n: specs[n] for n in config.outputs}
        enc = config.encoder
        # Each output's decoder side (query shapes, assembly): what the model needs of an output
        # whatever decoder serves it.
        self.output_sides: dict[str, OutputSide] = {
            n: build_output_side(spec, enc.patch_size, enc.image_size) for n, spec in self.output_specs.items()}
        chosen = dict(decoders or {})
        wrong = [n for n, d in chosen.items() if n not in self.output_specs or n not in d.modalities]
        if wrong:
            raise ValueError(f"decoders given for {wrong}: each key must be an output the decoder serves")
        rest = {n: s for n, s in self.output_specs.items() if n not in chosen}
        if config.decoder.kind == "joint" and rest:
            joint = JointDecoder(rest, config.decoder, enc.dim, enc.patch_size, enc.image_size)
            chosen |= dict.fromkeys(rest, joint)
        for name, spec in rest.items():
            chosen.setdefault(name, CrossAttentionDecoder(
                spec, config.decoder, enc.dim, config.inputs, enc.patch_size, enc.image_size))
        # Each decoder once, under its output's name (official keys) or, serving several, under
        # their names joined by "+"; `decoder_key` finds it from an output.
        self.decoder_key = {n: "+".join(d.modalities) for n, d in chosen.items()}
        self.output_adapters = nn.ModuleDict({self.decoder_key[n]: chosen[n] for n in self.output_specs})
        lift_child_keys(self, "backbone")
        init_weights(self)

    @property
    def input_specs(self) -> dict[str, ModalitySpec]:
        """The input modalities the encoder accepts, in its order."""
        return self.backbone.input_specs

    def no_weight_decay(self) -> set[str]:
        """State-dict names of the encoder's tokens and tables and the decoders' mask tokens and
        modality embeddings."""
        return self.backbone.no_weight_decay() | {
            n for n in self.state_dict()
            if n.endswith("mask_token") or any(f".{t}." in n for t in ("task_embeddings", "mask_tokens", "type_embeddings"))
        }

    def output_masks(
        self,
        enc: EncoderOutput,
        masks: Mapping[str, Tensor] | None,
        targets: Mapping[str, Tensor] | None = None,
        valid: Mapping[str, Tensor] | None = None,
        names: Sequence[str] | None = None,
    ) -> dict[str, Tensor]:
        """Per-output loss masks (True = counted): ``targets[source]`` when given, else the hidden
        input tokens of the source (MultiMAE), else every token; always restricted to valid tokens."""
        B = enc.tokens.shape[0]
        device = enc.tokens.device
        out = {}
        for name in self.output_specs if names is None else names:
            src = self.output_specs[name].source_name
            _, n = self.output_sides[name].query_shape(enc.layout)
            if targets is not None and src in targets:
                m = targets[src].bool().to(device)
            elif src in enc.layout.names:
                m = masks[src].bool() if masks is not None else torch.zeros(B, n, dtype=torch.bool, device=device)
            else:
                m = torch.ones(B, n, dtype=torch.bool, device=device)
            if valid is not None and src in valid:
                m = m & valid[src].to(m.device)
            out[name] = m
        return out

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        outputs: Sequence[str] | None = None,
        targets: Mapping[str, Tensor] | None = None,
        valid: Mapping[str, Tensor] | None = None,
    ) -> MultiMAEOutput:
        """Encode the visible tokens of ``inputs`` and decode every (or each listed) output.

        Args:
            inputs: ``{modality: prepared tensor}``, any non-empty subset of the model's inputs.
            masks: ``{input modality: (B, N_m) bool}``, True = hidden; None = nothing hidden.
            outputs: decoders to run (default: all).
            targets: ``{modality: (B, N_m) bool}``, True = predicted and counted, for targets
                that are not simply the hidden tokens (4M: disjoint input and target sets).
            valid: ``{modality: (B, N_m) or (B,) bool}``, True = the token (or the sample's whole
                modality, as `PreparedBatch.present` gives it) exists: a sample lacking a modality
                is never encoded there and never counted there.
        """
        names = list(self.output_specs) if outputs is None else list(outputs)
        unknown = [n for n in names if n not in self.output_specs]
        if unknown:
            raise ValueError(f"unknown output modality {unknown}; this model predicts {list(self.output_specs)}")
        if valid and any(v.dim() == 1 for v in valid.values()):
            valid = self.spread_presence(inputs, valid)
        enc_valid = {k: v for k, v in (valid or {}).items() if k in self.input_specs and k in inputs}
        enc = self.backbone.forward_encoder(inputs, masks, valid=enc_valid or None)
        preds: dict[str, Tensor] = {}
        for n in names:
            if n not in preds:
                preds.update(self.output_adapters[self.decoder_key[n]].decode(enc))  # type: ignore[operator]
        preds = {n: preds[n] for n in names}
        all_valid = dict(valid or {}) | enc.valid
        out_valid = {n: all_valid[self.output_specs[n].source_name] for n in names
                     if self.output_specs[n].source_name in all_valid}
        return MultiMAEOutput(preds, self.output_masks(enc, masks, targets, all_valid or None, names), enc, out_valid)

    def spread_presence(self, inputs: Mapping[str, Tensor], valid: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``valid`` with per-sample flags (B,) spread over the modality's tokens (B, N_m): the
        input's tokens, or the queries of the outputs it is the source of; (B, N_m) entries kept."""
        layout = self.backbone.layout(inputs)
        out = {}
        for name, v in valid.items():
            v = v.bool()
            if v.dim() == 1:
                if name in layout.names:
                    n = layout.counts[layout.names.index(name)]
                else:
                    side = next((self.output_sides[o] for o, s in self.output_specs.items() if s.source_name == name), None)
                    if side is None:
                        continue  # neither an input given nor the source of an output: nothing to mark
                    n = side.query_shape(layout)[1]
                v = v[:, None].expand(v.shape[0], n)
            out[name] = v
        return out

    def forward_batch(self, batch: Mapping[str, ModalityBatch], outputs: Sequence[str] | None = None) -> MultiMAEOutput:
        """`forward` over typed records: inputs = the records of input modalities, hidden masks,
        target masks and validity as the records say (a record without ``hidden`` is fully given;
        one without ``target`` leaves MultiMAE's default: the hidden tokens are the targets)."""
        inputs = {n: r.data for n, r in batch.items() if n in self.input_specs}
        given = [n for n in inputs if batch[n].hidden is not None]
        masks = None
        if given:
            masks = {n: batch[n].hidden if batch[n].hidden is not None else torch.zeros_like(batch[n].valid)
                     for n in inputs}
        targets = {n: r.target for n, r in batch.items() if r.target is not None}
        valid = {n: r.valid for n, r in batch.items()}
        return self(inputs, masks, outputs, targets or None, valid)
