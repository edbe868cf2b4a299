"""The multi-modal ViT encoder: per-modality adapters, one shared pre-norm Transformer.

Shapes: B batch, M modalities, N = sum of N_m tokens over the given modalities, V visible tokens
per sample (the longest row when samples differ), G global tokens, D width, h w token grid.

The given modalities may have any mix of placements (grids of their own sizes, padded sequences,
a few global tokens: see `multimae.model.adapters`); their tokens are concatenated in the model's
input order. A token is encoded when it is valid (it exists: not padding, the sample has the
modality) and not hidden by the mask.

State-dict layout (identical to the official MultiMAE, so official checkpoints load by name):
``input_adapters.<modality>.*``, ``encoder.<i>.*`` (timm ``Block``s), ``global_tokens``.
There is no final norm after the last block (official architecture): consumers normalise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from multimae.masking.dirichlet import sample_masks
from multimae.model.adapters import InputAdapter, build_input_adapter
from multimae.model.config import EncoderConfig, activation
from multimae.modalities.spec import ModalitySpec


@dataclass(frozen=True)
class TokenLayout:
    """Where each modality's tokens sit in the concatenated sequence (before masking)."""

    names: tuple[str, ...]  # modalities present, in the model's input order
    counts: tuple[int, ...]  # N_m for each
    grids: tuple[tuple[int, int] | None, ...]  # (h_m, w_m) of each grid modality, None off a grid
    frame: tuple[int, int] | None = None  # (H, W) full-resolution image size the grids lie on

    @property
    def num_tokens(self) -> int:
        return sum(self.counts)

    @property
    def grid(self) -> tuple[int, int]:
        """The (h, w) token grid of the grid modalities (what dense heads read); they must share it."""
        grids = {g for g in self.grids if g is not None}
        if len(grids) != 1:
            raise ValueError(f"no single token grid: the inputs {list(self.names)} have grids {list(self.grids)}")
        return grids.pop()

    def span(self, name: str) -> tuple[int, int]:
        """[start, end) of ``name``'s tokens in the concatenation."""
        start = 0
        for n, c in zip(self.names, self.counts):
            if n == name:
                return start, start + c
            start += c
        raise KeyError(name)


@dataclass
class EncoderOutput:
    """What the encoder hands to decoders and heads.

    Attributes:
        tokens: (B, V + G, D) float. Encoded visible tokens in ascending order of their index in
            the concatenation (padding slots, if any, at the end of a row), then the G global tokens.
        visible_ids: (B, V) int64. Index in the concatenation of each of the V token slots.
        padding: (B, V) bool, True at padding slots (samples with fewer visible tokens than the
            longest row); None when every sample has V visible tokens.
        layout: which modalities were given, their token counts and the token grid.
        num_global_tokens: G.
        intermediates: outputs of the blocks listed in ``return_layers`` (same layout as tokens).
        valid: ``{modality: (B, N_m) bool}``, True = the token exists, for the given modalities
            where some tokens do not (padding, samples lacking the modality).
    """

    tokens: Tensor
    visible_ids: Tensor
    padding: Tensor | None
    layout: TokenLayout
    num_global_tokens: int
    intermediates: list[Tensor] = field(default_factory=list)
    valid: dict[str, Tensor] = field(default_factory=dict)

    @property
    def patch_tokens(self) -> Tensor:
        """(B, V, D) the encoded visible patch tokens."""
        return self.tokens[:, : self.tokens.shape[1] - self.num_global_tokens]

    @property
    def global_tokens(self) -> Tensor:
        """(B, G, D)."""
        return self.tokens[:, self.tokens.shape[1] - self.num_global_tokens :]

    @property
    def is_complete(self) -> bool:
        """True when every token of every given modality was encoded (no masking)."""
        return self.padding is None and self.visible_ids.shape[1] == self.layout.num_tokens

    def modality_tokens(self, tokens: Tensor | None = None) -> dict[str, Tensor]:
        """Unmasked encodings split per modality: ``{name: (B, N_m, D)}``.

        ``tokens`` defaults to the final output; pass an entry of ``intermediates`` for another layer.
        """
        if not self.is_complete:
            raise ValueError("modality_tokens() needs an unmasked encoding (call the encoder without masks)")
        x = self.tokens if tokens is None else tokens
        out, start = {}, 0
        for name, count in zip(self.layout.names, self.layout.counts):
            out[name] = x[:, start : start + count]
            start += count
        return out


class MultiModalViT(nn.Module):
    """Encoder for any non-empty subset of its input modalities, with or without masking."""

    def __init__(self, config: EncoderConfig, input_specs: Mapping[str, ModalitySpec]) -> None:
        super().__init__()
        if not input_specs:
            raise ValueError("the encoder needs at least one input modality")
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not divisible by patch_size {config.patch_size}"
            )
        if config.num_heads < 1 or config.dim % config.num_heads:
            raise ValueError(f"encoder dim {config.dim} is not divisible by num_heads {config.num_heads}")
        self.config = config
        self.input_specs = dict(input_specs)
        self.input_adapters = nn.ModuleDict(
            {
                name: build_input_adapter(spec, config.dim, config.patch_size, config.image_size)
                for name, spec in input_specs.items()
            }
        )
        self.global_tokens = nn.Parameter(torch.zeros(1, config.num_global_tokens, config.dim))
        trunc_normal_(self.global_tokens, std=0.02, a=-2.0, b=2.0)
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        self.encoder = nn.Sequential(
            *[
                Block(
                    dim=config.dim,
                    num_heads=config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    drop_path=rate,
                    act_layer=activation(config.act),
                )
                for rate in rates
            ]
        )

    # ------------------------------------------------------------------ inputs
    @property
    def patch_size(self) -> int:
        """Pixels per token side of the token grid."""
        return self.config.patch_size

    def _present(self, inputs: Mapping[str, Tensor]) -> list[str]:
        if not inputs:
            raise ValueError(f"no input modality given; this model accepts {list(self.input_adapters)}")
        unknown = [n for n in inputs if n not in self.input_adapters]
        if unknown:
            raise ValueError(
                f"unknown input modality {unknown}; this model accepts {list(self.input_adapters)}"
            )
        return [n for n in self.input_adapters if n in inputs]  # model order, not dict order

    def _adapter(self, name: str) -> InputAdapter:
        return self.input_adapters[name]  # type: ignore[return-value]

    def layout(self, inputs: Mapping[str, Tensor]) -> TokenLayout:
        """Token layout of ``inputs`` (checks that all maps lie on one image frame)."""
        names = self._present(inputs)
        batch = {inputs[n].shape[0] for n in names}
        if len(batch) > 1:
            raise ValueError(f"input modalities have different batch sizes: { {n: inputs[n].shape[0] for n in names} }")
        grids = tuple(self._adapter(n).token_grid(inputs[n]) for n in names)
        frames = {n: self._adapter(n).frame(inputs[n]) for n in names}
        frame_set = {f for f in frames.values() if f is not None}
        if len(frame_set) > 1:
            detail = ", ".join(f"{n}: {tuple(inputs[n].shape)} -> image {f}" for n, f in frames.items() if f)
            raise ValueError(f"input maps do not lie on one image (size at full resolution: {detail})")
        counts = tuple(self._adapter(n).num_tokens(inputs[n]) for n in names)
        return TokenLayout(tuple(names), counts, grids, next(iter(frame_set), None))

    def num_tokens(self, inputs: Mapping[str, Tensor]) -> dict[str, int]:
        """``{name: N_m}`` for the given inputs (what `sample_masks` needs)."""
        lay = self.layout(inputs)
        return dict(zip(lay.names, lay.counts))

    def sample_masks(
        self,
        inputs: Mapping[str, Tensor],
        num_visible: int,
        alpha: float | Sequence[float] = 1.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Random Dirichlet masks for ``inputs`` (see `multimae.masking.sample_masks`)."""
        counts = self.num_tokens(inputs)
        B = next(iter(inputs.values())).shape[0]
        device = next(iter(inputs.values())).device
        if generator is not None and generator.device != device:
            masks = sample_masks(counts, B, num_visible, alpha, generator, generator.device)
            return {k: v.to(device) for k, v in masks.items()}
        return sample_masks(counts, B, num_visible, alpha, generator, device)

    def _check_masks(self, layout: TokenLayout, masks: Mapping[str, Tensor], batch: int, what: str) -> None:
        unknown = [n for n in masks if n not in layout.names]
        if unknown:
            raise ValueError(f"{what} given for modalities that are not inputs: {unknown}")
        for name, count in zip(layout.names, layout.counts):
            m = masks.get(name)
            if m is not None and tuple(m.shape) != (batch, count):
                raise ValueError(f"{what[:-1]} of {name!r} must have shape {(batch, count)}, got {tuple(m.shape)}")

    def token_validity(self, inputs: Mapping[str, Tensor], valid: Mapping[str, Tensor] | None = None,
                       layout: TokenLayout | None = None) -> dict[str, Tensor]:
        """``{input: (B, N_m) bool}``: tokens that exist: ``valid`` where given, else what the data
        says (padding of a sequence); modalities whose tokens all exist are left out."""
        layout = layout or self.layout(inputs)
        B = next(iter(inputs.values())).shape[0]
        if valid:
            self._check_masks(layout, valid, B, "valid masks")
        out = {}
        for name in layout.names:
            v = valid.get(name) if valid else None
            own = self._adapter(name).default_valid(inputs[name])
            if v is not None and own is not None:
                v = v.bool() & own.to(v.device)
            v = own if v is None else v.bool()
            if v is not None and not bool(v.all()):
                out[name] = v
        return out

    # ----------------------------------------------------------------- forward
    def forward_encoder(
        self,
        inputs: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        return_layers: Sequence[int] = (),
        valid: Mapping[str, Tensor] | None = None,
    ) -> EncoderOutput:
        """Encode the visible tokens of ``inputs``.

        Args:
            inputs: ``{modality: prepared tensor}``; dense (B, C, H, W), categorical (B, H/s, W/s),
                tokens (B, L) ids, vectors (B, G, C).
            masks: ``{modality: (B, N_m) bool}``, True = hidden (not encoded). None encodes every
                valid token (the fine-tuning / inference encoder). Samples may keep different numbers
                of tokens: shorter rows are padded and the padding is excluded from attention.
            return_layers: indices of blocks whose outputs are kept in ``intermediates``.
            valid: ``{modality: (B, N_m) bool}``, True = the token exists (see `token_validity`);
                invalid tokens are never encoded. A sequence's padding is found from its ids.
        """
        layout = self.layout(inputs)
        B = next(iter(inputs.values())).shape[0]
        invalid = self.token_validity(inputs, valid, layout)
        if masks is not None:
            self._check_masks(layout, masks, B, "masks")
            missing = [n for n in layout.names if n not in masks]
            if missing:
                raise ValueError(f"masks given for {list(masks)} but not for input {missing[0]!r}")
        hidden: dict[str, Tensor] = {}
        if masks is not None or invalid:
            for name, count in zip(layout.names, layout.counts):
                h = masks[name].bool() if masks is not None else torch.zeros(B, count, dtype=torch.bool)
                if name in invalid:
                    h = h.to(invalid[name].device) | ~invalid[name]
                hidden[name] = h
        parts = []
        for name in layout.names:
            encoded = ~hidden[name] if name in hidden else None
            parts.append(self._adapter(name)(inputs[name], encoded))
        tokens = torch.cat(parts, dim=1)  # (B, N, D)
        B, N, D = tokens.shape
        padding = None
        if not hidden:
            ids = torch.arange(N, device=tokens.device).expand(B, N)
            x = tokens
        else:
            mask = torch.cat([hidden[n].to(tokens.device) for n in layout.names], dim=1)
            num_vis = (~mask).sum(dim=1)  # (B,)
            V = int(num_vis.max())
            if V == 0:
                raise ValueError("every token is masked: the encoder needs at least one visible token")
            ids = mask.to(torch.uint8).argsort(dim=1, stable=True)[:, :V]  # visible first, in order
            if bool((num_vis != V).any()):
                padding = torch.arange(V, device=tokens.device).unsqueeze(0) >= num_vis.unsqueeze(1)
            x = tokens.gather(1, ids.unsqueeze(-1).expand(B, V, D))
        G = self.global_tokens.shape[1]
        x = torch.cat([x, self.global_tokens.expand(B, G, D).to(x.dtype)], dim=1)
        attn_mask = None
        if padding is not None:
            keep = torch.cat([~padding, padding.new_ones(B, G)], dim=1)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, V + G), True = attend
        wanted = {i % len(self.encoder) for i in return_layers}
        intermediates = []
        for i, block in enumerate(self.encoder):
            x = block(x, attn_mask=attn_mask)
            if i in wanted:
                intermediates.append(x)
        return EncoderOutput(x, ids, padding, layout, G, intermediates, invalid)

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> EncoderOutput:
        return self.forward_encoder(inputs, masks)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (tokens, positional tables)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_emb", "mod_emb", "global_tokens"))}


def encoder_of(model: nn.Module) -> MultiModalViT:
    """The `MultiModalViT` of ``model``: the model itself, or the ``backbone`` a composed model
    (`MultiMAE`, `FineTuneModel`) holds."""
    encoder = model if isinstance(model, MultiModalViT) else getattr(model, "backbone", None)
    if not isinstance(encoder, MultiModalViT):
        raise TypeError(f"{type(model).__name__} holds no multi-modal ViT encoder")
    return encoder
