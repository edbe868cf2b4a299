"""The encoder half of a 4M model as a fine-tuning backbone (4M's transfer setting: the encoder of a
pre-trained 4M with a task head, its inputs given whole).

Shapes: B batch, N_m tokens of input m, N = sum of N_m, R register tokens, D width.

It speaks the backbone protocol of `multimae.model.FineTuneModel` (``forward_encoder`` returning an
`EncoderOutput`, ``input_specs``, ``patch_size``: pixels per token side, ``config.dim``, ``no_weight_decay``),
so the fine-tuning heads read its tokens as they read `MultiModalViT`'s. State-dict names are those
of `FourM` (``encoder_embeddings.<m>.*``, ``encoder.<i>.*``, ``encoder_norm.*``, ``register_tokens``),
so a 4M checkpoint's encoder loads by name.

Token-map inputs (``tok_*``) take the ids of a tokenizer; `multimae.tasks.finetune` encodes them
from their source maps with the pre-training run's tokenizers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from multimae.modalities.spec import ModalitySpec
from multimae.model.encoder import EncoderOutput, TokenLayout
from multimae.model.fourm.config import FOURM_INPUT_KINDS, FourMConfig
from multimae.model.fourm.embeddings import EncoderEmbedding, build_encoder_embedding, token_pixels
from multimae.model.fourm.model import encoder_trunk, run_encoder


class FourMEncoder(nn.Module):
    """4M's ``encoder_embeddings``, ``encoder`` blocks and ``encoder_norm`` over every token of the
    given inputs (no masking, no token budget)."""

    def __init__(self, config: FourMConfig, input_specs: Mapping[str, ModalitySpec]) -> None:
        super().__init__()
        wrong = {n: s.kind for n, s in input_specs.items() if s.kind not in FOURM_INPUT_KINDS}
        if wrong:
            raise ValueError(f"a 4M encoder reads raw images, token maps or token sequences ({FOURM_INPUT_KINDS}); "
                             f"got {wrong}")
        self.config = config
        self._specs = dict(input_specs)
        cells = {token_pixels(s, config.patch_size) for s in input_specs.values() if s.placement == "grid"}
        if len(cells) > 1:
            raise ValueError(f"the inputs {list(input_specs)} lie on grids of {sorted(cells)}-pixel tokens: a "
                             "fine-tuning head reads one token grid")
        self.patch_size = cells.pop() if cells else config.patch_size  # pixels per token side of the grid
        D, size, patch = config.dim, config.image_size, config.patch_size
        self.encoder_embeddings = nn.ModuleDict(
            {n: build_encoder_embedding(s, D, size, patch) for n, s in input_specs.items()})
        self.encoder, self.encoder_norm = encoder_trunk(config)
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, D))

    @property
    def input_specs(self) -> dict[str, ModalitySpec]:
        return self._specs

    @property
    def depth(self) -> int:
        return self.config.encoder_depth

    def _embedding(self, name: str) -> EncoderEmbedding:
        return self.encoder_embeddings[name]  # type: ignore[return-value]

    def layout(self, inputs: Mapping[str, Tensor]) -> TokenLayout:
        """Which of the model's inputs are given (in its order), their token counts and grids."""
        unknown = [n for n in inputs if n not in self._specs]
        if unknown:
            raise ValueError(f"{unknown} are not inputs of this encoder ({list(self._specs)})")
        names = tuple(n for n in self._specs if n in inputs)
        if not names:
            raise ValueError(f"give at least one of the encoder's inputs {list(self._specs)}")
        counts, grids = [], []
        for name in names:
            emb = self._embedding(name)
            counts.append(emb.num_tokens(inputs[name]))
            side = getattr(emb, "side", None)
            grids.append((side, side) if self._specs[name].placement == "grid" and side else None)
        size = self.config.image_size
        return TokenLayout(names, tuple(counts), tuple(grids), (size, size))

    def forward_encoder(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None,
                        return_layers: Sequence[int] = ()) -> EncoderOutput:
        """Encode every token of ``inputs`` ``{modality: prepared tensor}`` (images (B, C, H, W) float,
        token maps (B, N_m) ids, sequences (B, L) ids; a sequence's padding is not attended to).

        Returns the `EncoderOutput` heads read: ``tokens`` (B, N + R, D) after the final norm, the
        register tokens last (as global tokens); ``intermediates`` the listed blocks' outputs (before
        the norm) in the same order."""
        if masks is not None:
            raise ValueError("a 4M fine-tuning encoder encodes every token of its inputs (no masks)")
        layout = self.layout(inputs)
        B = next(iter(inputs.values())).shape[0]
        xs, keeps = [], []
        for name, count in zip(layout.names, layout.counts):
            spec, data = self._specs[name], inputs[name]
            keep = (data != spec.pad_id) if spec.kind == "tokens" else torch.ones(B, count, dtype=torch.bool,
                                                                                 device=data.device)
            x, emb = self._embedding(name)(data, keep)
            xs.append((x + emb) * keep.unsqueeze(-1))
            keeps.append(keep)
        x, keep = torch.cat(xs, dim=1), torch.cat(keeps, dim=1)
        registers = self.register_tokens if self.config.num_register_tokens else None
        out, layers = run_encoder(self.encoder, self.encoder_norm, x, keep, registers, return_layers)
        R = self.config.num_register_tokens
        last = (lambda t: torch.cat([t[:, R:], t[:, :R]], dim=1)) if R else (lambda t: t)  # noqa: E731
        N = x.shape[1]
        ids = torch.arange(N, device=x.device).expand(B, N)
        invalid = {n: k for n, k in zip(layout.names, keeps) if not bool(k.all())}
        return EncoderOutput(last(out), ids, None, layout, R, [last(t) for t in layers], invalid)

    def no_weight_decay(self) -> set[str]:
        """Modality embeddings, learned position tables and register tokens."""
        return {n for n, _ in self.named_parameters() if n.endswith(("mod_emb", "pos_emb", "register_tokens"))}
