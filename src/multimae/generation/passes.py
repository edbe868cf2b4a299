"""One model pass of generation: encode the state, query a target's positions, combine guided passes.

Shapes: B batch, S encoder slots (the most given tokens of any sample; may be 0), D width, Q queried
positions, V the target's vocabulary, n ids of a sequence prefix.

The encoder gets exactly as many slots as the fullest sample needs (4M's generation does the same),
so a state with nothing given encodes to an empty context: cross-attention to no token adds 0.
Logits come back in fp32 under any autocast (guidance combines them and the samplers draw from them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM, Slots, select_slots


@dataclass
class Context:
    """The encoded state: ``tokens`` (B, S(+R), D) projected encoder output + emb, ``keep`` (B, S(+R)) bool."""

    tokens: Tensor
    keep: Tensor


def encode_state(model: FourM, state: Mapping[str, ModalityBatch]) -> Context:
    """Encode every given token of ``state`` (its inputs of the model) into the decoder's context."""
    parts = model.embed_inputs(state)
    if parts:
        num = int(sum(p[2].sum(dim=1) for p in parts.values()).max())  # the fullest sample's given tokens
        slots = select_slots(parts, num, "encoder")
    else:  # no input modality at all: register tokens only (or nothing)
        B = next(iter(state.values())).data.shape[0]
        D, device = model.config.dim, model.mask_token.device
        empty = torch.zeros(B, 0, D, device=device, dtype=model.mask_token.dtype)
        slots = Slots(empty, empty, torch.zeros(B, 0, dtype=torch.bool, device=device),
                      torch.zeros(B, 0, dtype=torch.long, device=device), torch.zeros(B, 0, dtype=torch.long,
                                                                                       device=device), ())
    tokens, keep = model.context(model.encode(slots), slots)
    return Context(tokens, keep)


def token_map_logits(model: FourM, target: str, positions: Tensor, context: Context) -> Tensor:
    """(B, Q, V) logits of the token map ``target`` at ``positions`` (B, Q): each queried by the mask
    token + its position + modality embedding, all queries of a sample attending to each other."""
    dec = model.decoder_embeddings[target]
    table = (dec.pos_emb + dec.mod_emb)[0]  # (N, D)
    emb = table[positions].to(context.tokens.dtype)  # (B, Q, D)
    B, Q = positions.shape
    slots = Slots(model.mask_token.to(emb.dtype).expand(B, Q, -1), emb, torch.ones(B, Q, dtype=torch.bool,
                  device=emb.device), torch.zeros(B, Q, dtype=torch.long, device=emb.device), positions, (target,))
    return dec.logits(model.decode(slots, context.tokens, context.keep)).float()


def sequence_logits(model: FourM, target: str, prefix: Tensor, context: Context) -> Tensor:
    """(B, n, V) logits after each id of ``prefix`` (B, n) (its first id the opening sentinel), the
    whole prefix recomputed with causal self-attention (the reference for the KV cache)."""
    dec = model.decoder_embeddings[target]
    x = dec.embed_generated(prefix, 0)
    B, n, _ = x.shape
    device = x.device
    slots = Slots(x, torch.zeros_like(x), torch.ones(B, n, dtype=torch.bool, device=device),
                  torch.zeros(B, n, dtype=torch.long, device=device), torch.arange(n, device=device).expand(B, n),
                  (target,))
    return dec.logits(model.decode(slots, context.tokens, context.keep)).float()
