"""The 4M model: one encoder-decoder from a random subset of tokens to another (Mizrahi et al. 2023).

Shapes: B batch, N_m tokens of modality m, S encoder slots (``num_encoder_tokens``, plus R
register tokens), T decoder slots (``num_decoder_tokens``), D width, V_m vocabulary of m.

Stages (`FourM.forward`, each a method):

1. ``embed_inputs``: each input modality's ``(x, emb)`` (`multimae.model.fourm.embeddings`).
2. ``select``: per sample, the given tokens first (in the model's modality order, then position),
   cut to S slots; padding slots hold zeros and are never attended to.
3. ``encode``: ``x + emb`` through pre-norm blocks and a final norm.
4. ``embed_targets`` + ``select``: each output modality's decoder slots (mask token + emb for
   token maps; teacher-forced shifted tokens for sequences), the targets first, cut to T slots.
5. ``decode``: self-attention within a modality only (all of a token map's slots see each other,
   a sequence's slots see the earlier ones), cross-attention to every encoder slot holding a token,
   with context = projection(encoder output) + the encoder tokens' emb; final norm.
6. ``loss``: each output's logits (tied to its decoder token embedding) against its labels;
   cross-entropy per modality, then the mean over the output modalities in the batch ('mod', 4M's
   default: a modality without targets counts as 0) or weighted by tokens x vocabulary ('token').

The batch is a ``{modality: ModalityBatch}`` (`multimae.modalities.batch`): which tokens are given
(``encoded``) and which predicted (``counted``) comes with the data, from the data pipeline's mask
sampler, so the model is deterministic given its batch. State-dict names follow the official 4M
(`multimae.convert.fourm` maps official checkpoints: modality names, no-bias norms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from multimae.layers.cross_attention import additive_mask
from multimae.layers.decoder_block import DecoderBlock
from multimae.layers.gated_mlp import GatedMlp
from multimae.modalities.batch import ModalityBatch
from multimae.modalities.spec import ModalitySpec
from multimae.model.fourm.config import FourMConfig
from multimae.model.fourm.embeddings import (
    DecoderEmbedding, EncoderEmbedding, build_decoder_embedding, build_encoder_embedding,
)


@dataclass
class Slots:
    """Tokens of several modalities gathered into a fixed number of slots per sample.

    Attributes:
        x, emb: (B, S, D) content and position + modality embedding (zeros on padding).
        keep: (B, S) bool, True = a real token (not padding).
        modality: (B, S) long, index of the slot's modality in ``names`` (-1 on padding).
        position: (B, S) long, the token's index within its modality (-1 on padding).
        names: the modalities, in concatenation order.
        extra: other (B, S) per-slot tensors gathered alongside (labels).
    """

    x: Tensor
    emb: Tensor
    keep: Tensor
    modality: Tensor
    position: Tensor
    names: tuple[str, ...]
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class FourMOutput:
    """Attributes:
    loss: () float, the reduced loss (see `FourM` stage 6).
    losses: ``{output: () float}`` cross-entropy per output modality in the batch (0 without targets).
    logits: ``{output: (T_m, V_m)}`` on the modality's target slots, sample-major, ascending position.
    labels: ``{output: (T_m,)}`` int64 target ids of those rows.
    samples, positions: ``{output: (T_m,)}`` int64 sample index and position of each row (for a
        sequence: the position of the slot, whose label is the token after it).
    encoder: the encoder slots (``x`` holds the encoder output after its final norm).
    decoder: the decoder slots (``x`` holds the decoder output after its final norm).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    logits: dict[str, Tensor]
    labels: dict[str, Tensor]
    samples: dict[str, Tensor]
    positions: dict[str, Tensor]
    encoder: Slots
    decoder: Slots


def select_slots(parts: Mapping[str, tuple[Tensor, Tensor, Tensor]], num_slots: int, what: str,
                 extra: Mapping[str, Mapping[str, Tensor]] | None = None) -> Slots:
    """Gather ``{name: (x (B, N, D), emb (B, N, D), keep (B, N) bool)}`` into ``num_slots`` slots per
    sample: kept tokens first, in concatenation order. More kept tokens than slots is an error
    (the official code drops them silently)."""
    names = tuple(parts)
    x = torch.cat([p[0] for p in parts.values()], dim=1)
    emb = torch.cat([p[1] for p in parts.values()], dim=1)
    keep = torch.cat([p[2] for p in parts.values()], dim=1)
    B, N, D = x.shape
    counts = keep.sum(dim=1)
    if int(counts.max()) > num_slots:
        raise ValueError(f"{what}: a sample has {int(counts.max())} tokens for {num_slots} slots; raise "
                         f"num_{what}_tokens or lower the budget")
    mod = torch.cat([torch.full((B, p[2].shape[1]), i, dtype=torch.long, device=x.device)
                     for i, p in enumerate(parts.values())], dim=1)
    pos = torch.cat([torch.arange(p[2].shape[1], device=x.device).expand(B, -1) for p in parts.values()], dim=1)
    if N < num_slots:  # fewer tokens than slots: pad the concatenation itself
        pad = num_slots - N
        x, emb = F.pad(x, (0, 0, 0, pad)), F.pad(emb, (0, 0, 0, pad))
        keep, mod, pos = F.pad(keep, (0, pad)), F.pad(mod, (0, pad)), F.pad(pos, (0, pad))
    order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)[:, :num_slots]  # (B, S) kept first
    keep = keep.gather(1, order)
    idx = order.unsqueeze(-1).expand(-1, -1, D)
    x = x.gather(1, idx) * keep.unsqueeze(-1)
    emb = emb.gather(1, idx) * keep.unsqueeze(-1)
    mod = mod.gather(1, order).masked_fill(~keep, -1)
    pos = pos.gather(1, order).masked_fill(~keep, -1)
    gathered = {}
    for key, per_mod in (extra or {}).items():
        t = torch.cat([per_mod[n] for n in names], dim=1)
        t = F.pad(t, (0, max(0, num_slots - N)))
        gathered[key] = t.gather(1, order) * keep
    return Slots(x, emb, keep, mod, pos, names, gathered)


def trunk_layers(config: FourMConfig) -> tuple[Callable[[int], nn.Module], type[nn.Module], type[nn.Module] | None]:
    """(norm layer, activation, MLP class or None for timm's) of 4M's blocks."""
    norm = partial(nn.LayerNorm, eps=1e-6, bias=config.bias)
    act, mlp = (nn.SiLU, GatedMlp) if config.mlp == "swiglu" else (nn.GELU, None)
    return norm, act, mlp


def encoder_trunk(config: FourMConfig) -> tuple[nn.ModuleList, nn.Module]:
    """(the encoder blocks, the final norm) of ``config``: timm pre-norm blocks with 4M's MLP."""
    norm, act, mlp = trunk_layers(config)
    block_mlp = {"mlp_layer": mlp} if mlp is not None else {}
    rates = torch.linspace(0, config.drop_path_rate, config.encoder_depth, device="cpu").tolist()
    blocks = nn.ModuleList([
        Block(config.dim, config.num_heads, config.mlp_ratio, qkv_bias=config.bias, qk_norm=config.qk_norm,
              proj_bias=config.bias, drop_path=rate, act_layer=act, norm_layer=norm, **block_mlp)
        for rate in rates])
    return blocks, norm(config.dim)


def run_encoder(blocks: nn.ModuleList, norm: nn.Module, x: Tensor, keep: Tensor, registers: Tensor | None = None,
                return_layers: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
    """``(out, intermediates)``: ``x`` (B, S, D) (content + embedding) through ``blocks`` and ``norm``,
    slots where ``keep`` (B, S) is False never attended to; ``registers`` (1, R, D) are prepended (and
    kept in ``out``, (B, R + S, D)). ``intermediates``: the outputs (before the norm) of the blocks
    listed in ``return_layers`` (negative indices count from the end)."""
    if registers is not None:
        B = x.shape[0]
        x = torch.cat([registers.to(x.dtype).expand(B, -1, -1), x], dim=1)
        keep = torch.cat([keep.new_ones(B, registers.shape[1]), keep], dim=1)
    mask = additive_mask(keep[:, None, None, :], x.dtype)  # (B, 1, 1, S): padding is never a key
    wanted = {i % len(blocks) for i in return_layers}
    intermediates = []
    for i, block in enumerate(blocks):
        x = block(x, attn_mask=mask)
        if i in wanted:
            intermediates.append(x)
    return norm(x), intermediates


class FourM(nn.Module):
    """4M: ``encoder_embeddings``, ``encoder`` blocks, ``encoder_norm``, ``decoder_proj_context``,
    ``decoder_embeddings``, ``decoder`` blocks, ``decoder_norm``, ``mask_token`` (official names)."""

    def __init__(self, config: FourMConfig) -> None:
        super().__init__()
        specs = config.modality_specs()
        if not config.outputs:
            raise ValueError("a 4M model needs at least one output modality (an encoder alone is FourMEncoder)")
        self.config = config
        self.input_specs: dict[str, ModalitySpec] = {n: specs[n] for n in config.inputs}
        self.output_specs: dict[str, ModalitySpec] = {n: specs[n] for n in config.outputs}
        D, size, patch = config.dim, config.image_size, config.patch_size
        self.encoder_embeddings = nn.ModuleDict(
            {n: build_encoder_embedding(s, D, size, patch) for n, s in self.input_specs.items()})
        self.decoder_embeddings = nn.ModuleDict(
            {n: build_decoder_embedding(s, D, size, patch, config.tie_output) for n, s in self.output_specs.items()})
        for name, dec in self.decoder_embeddings.items():
            if name in self.encoder_embeddings:
                dec.share_modality_embedding(self.encoder_embeddings[name].mod_emb)
        self.encoder, self.encoder_norm = encoder_trunk(config)
        self.decoder_proj_context = nn.Linear(D, D)  # with a bias in every 4M variant
        norm, act, mlp = trunk_layers(config)
        dec_mlp = {"mlp_layer": mlp} if mlp is not None else {}
        self.decoder = nn.ModuleList([
            DecoderBlock(D, config.num_heads, config.mlp_ratio, bias=config.bias, qk_norm=config.qk_norm,
                         act_layer=act, norm_layer=norm, **dec_mlp)
            for _ in range(config.decoder_depth)])
        self.decoder_norm = norm(D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, D))
        init_fourm_weights(self, config.encoder_token_std)

    # ------------------------------------------------------------------ stages
    def _encoder_embedding(self, name: str) -> EncoderEmbedding:
        return self.encoder_embeddings[name]  # type: ignore[return-value]

    def _decoder_embedding(self, name: str) -> DecoderEmbedding:
        return self.decoder_embeddings[name]  # type: ignore[return-value]

    def embed_inputs(self, batch: Mapping[str, ModalityBatch]) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """``{input: (x, emb, encoded)}`` for the model's inputs in ``batch``, in the model's order."""
        parts = {}
        for name in self.input_specs:
            if name in batch:
                record = batch[name]
                encoded = record.encoded
                x, emb = self._encoder_embedding(name)(record.data, encoded)
                parts[name] = (x, emb, encoded.to(x.device))
        return parts

    def embed_targets(self, batch: Mapping[str, ModalityBatch]) -> tuple[dict[str, tuple[Tensor, Tensor, Tensor]],
                                                                          dict[str, Tensor]]:
        """``({output: (query, emb, counted)}, {output: labels})`` for the outputs in ``batch``."""
        parts, labels = {}, {}
        for name in self.output_specs:
            if name in batch:
                record = batch[name]
                x, emb, ids, counted = self._decoder_embedding(name)(record.data, record.counted)
                if x is None:
                    x = self.mask_token.to(emb.dtype).expand_as(emb)
                parts[name] = (x, emb, counted.to(emb.device))
                labels[name] = ids
        return parts, labels

    def encode(self, slots: Slots) -> Tensor:
        """(B, R + S, D) encoder output (after the final norm) of the selected input tokens, after the
        R register tokens."""
        registers = self.register_tokens if self.config.num_register_tokens else None
        return run_encoder(self.encoder, self.encoder_norm, slots.x + slots.emb, slots.keep, registers)[0]

    def context(self, encoded: Tensor, slots: Slots) -> tuple[Tensor, Tensor]:
        """``(context (B, S, D), keep (B, S))``: the projected encoder output plus the inputs' emb."""
        emb, keep = slots.emb, slots.keep
        R = encoded.shape[1] - emb.shape[1]  # register tokens: no emb, always kept
        if R:
            emb = torch.cat([emb.new_zeros(emb.shape[0], R, emb.shape[2]), emb], dim=1)
            keep = torch.cat([keep.new_ones(keep.shape[0], R), keep], dim=1)
        return self.decoder_proj_context(encoded) + emb, keep

    def self_attention_mask(self, slots: Slots) -> Tensor:
        """(B, 1, T, T) additive mask: a slot attends to slots of its own modality only, all of them
        for a token map, the earlier ones (and itself) for a sequence."""
        mod = slots.modality
        same = mod.unsqueeze(2) == mod.unsqueeze(1)  # (B, T, T)
        causal_mods = torch.tensor([self._decoder_embedding(n).causal for n in slots.names] + [False],
                                   device=mod.device)[mod]  # (B, T): -1 (padding) reads the last entry
        T = mod.shape[1]
        lower = torch.ones(T, T, dtype=torch.bool, device=mod.device).tril()
        allowed = same & (~causal_mods.unsqueeze(2) | lower)
        return additive_mask(allowed.unsqueeze(1), slots.emb.dtype)

    def decode(self, slots: Slots, context: Tensor, context_keep: Tensor) -> Tensor:
        """(B, T, D) decoder output (after the final norm)."""
        y = slots.x + slots.emb
        mask = self.self_attention_mask(slots)
        for block in self.decoder:
            y = block(y, context, mask, context_keep)
        return self.decoder_norm(y)

    def predictions(self, y: Tensor, slots: Slots) -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``{output: (logits (T_m, V_m), labels, samples, positions (T_m,))}`` over the target slots."""
        B, T = slots.keep.shape
        sample_ids = torch.arange(B, device=y.device).unsqueeze(1).expand(B, T)
        out = {}
        for i, name in enumerate(slots.names):
            rows = slots.modality == i
            out[name] = (self._decoder_embedding(name).logits(y[rows]), slots.extra["labels"][rows],
                         sample_ids[rows], slots.position[rows])
        return out

    def loss(self, logits: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, {output: cross-entropy})``: reduced as the config says (see stage 6)."""
        # an output without targets in the batch: 0, still part of the graph (a batch may have no target at all)
        losses = {n: F.cross_entropy(logits[n].float(), labels[n]) if labels[n].numel()
                  else logits[n].float().sum() * 0.0 for n in logits}
        if self.config.loss_reduction == "mod":
            return torch.stack(list(losses.values())).mean(), losses
        weights = {n: logits[n].numel() for n in logits}
        total = sum(losses[n] * weights[n] for n in losses) / max(sum(weights.values()), 1)
        return total, losses  # type: ignore[return-value]

    def forward(self, batch: Mapping[str, ModalityBatch], num_encoder_tokens: int | None = None,
                num_decoder_tokens: int | None = None) -> FourMOutput:
        """Encode the given tokens of ``batch``, decode its targets, and compute the loss.

        ``num_encoder_tokens`` / ``num_decoder_tokens``: slots per sample (default: the config's).
        """
        enc_parts = self.embed_inputs(batch)
        if not enc_parts:
            raise ValueError(f"no input modality of this model in the batch ({sorted(batch)}); it reads "
                             f"{list(self.input_specs)}")
        dec_parts, labels = self.embed_targets(batch)
        if not dec_parts:
            raise ValueError(f"no output modality of this model in the batch ({sorted(batch)}); it predicts "
                             f"{list(self.output_specs)}")
        enc = select_slots(enc_parts, num_encoder_tokens or self.config.num_encoder_tokens, "encoder")
        encoded = self.encode(enc)
        context, keep = self.context(encoded, enc)
        dec = select_slots(dec_parts, num_decoder_tokens or self.config.num_decoder_tokens, "decoder",
                           {"labels": labels})
        y = self.decode(dec, context, keep)
        preds = self.predictions(y, dec)
        logits = {n: p[0] for n, p in preds.items()}
        labels = {n: p[1] for n, p in preds.items()}
        total, losses = self.loss(logits, labels)
        return FourMOutput(
            total, losses, logits, labels, {n: p[2] for n, p in preds.items()}, {n: p[3] for n, p in preds.items()},
            encoder=Slots(encoded, enc.emb, enc.keep, enc.modality, enc.position, enc.names),
            decoder=Slots(y, dec.emb, dec.keep, dec.modality, dec.position, dec.names, dec.extra))

    def no_weight_decay(self) -> set[str]:
        """Modality embeddings, learned position tables, the mask token and register tokens."""
        return {n for n, _ in self.named_parameters() if n.endswith(("mod_emb", "pos_emb", "mask_token", "register_tokens"))}


ENCODER_EMBEDDINGS = "encoder_embeddings"  # the attribute holding the encoder's embeddings (FourM, FourMEncoder)


def init_fourm_weights(model: nn.Module, encoder_token_std: float = 0.02) -> None:
    """4M's initialisation: modality embeddings, mask and register tokens normal(0.02); every Linear
    xavier-uniform (a fused qkv / kv weight as separate q, k, v / k, v matrices) with zero bias; every
    Embedding normal(0.02) (the encoder's token embeddings normal(``encoder_token_std``)); LayerNorms 1
    and 0. Modules are visited in order, so a tied output projection (visited after its token
    embedding) leaves that table xavier-initialised, as in 4M."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.shape
            if name.endswith("qkv"):
                fan_out //= 3
            elif name.endswith("kv"):
                fan_out //= 2
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            encoder = name.startswith(f"{ENCODER_EMBEDDINGS}.")
            nn.init.normal_(module.weight, std=encoder_token_std if encoder else 0.02)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.endswith(("mod_emb", "mask_token", "register_tokens")):
            nn.init.normal_(p, std=0.02)


def init_token_embeddings_from_codes(model: nn.Module, codes: Mapping[str, Tensor], std: float) -> list[str]:
    """Draw each named encoder token table from its tokenizer's code vectors instead of i.i.d. noise:
    row v = (c_v - mean c) @ R, R a (d, dim) standard-normal projection, scaled so the table's entries
    have standard deviation ``std``. Codes that are near in the tokenizer's latent space start near in
    the encoder, so what the model learns about one code carries over to its neighbours.

    Args:
        codes: {input modality: (vocab_size, d) code vectors} (`Tokenizer.code_vectors`).
    Returns: the modalities whose tables were drawn. A ValueError names a modality with no token
    table or a vocabulary that differs from its codes.
    """
    tables = getattr(model, ENCODER_EMBEDDINGS)
    drawn = []
    for name, vectors in codes.items():
        table = getattr(tables[name], "token_emb", None) if name in tables else None
        if not isinstance(table, nn.Embedding):
            raise ValueError(f"{name}: not an encoder input read through a token table")
        if vectors.dim() != 2 or vectors.shape[0] != table.num_embeddings:
            raise ValueError(f"{name}: {tuple(vectors.shape)} code vectors for a table of "
                             f"{table.num_embeddings} tokens")
        centred = vectors.float() - vectors.float().mean(0)
        rows = centred @ torch.randn(vectors.shape[1], table.embedding_dim)
        with torch.no_grad():
            table.weight.copy_(rows * (std / rows.std().clamp_min(1e-12)))
        drawn.append(name)
    return drawn
