"""Incremental decoding of a sequence with cached keys and values (the decoder's KV cache).

Shapes: B batch, M context tokens, n new ids this call, t ids decoded before it, H heads, hd head
width, D width.

Per decoder block the cache holds the cross-attention keys / values of the encoder context (computed
once: the context does not change while a sequence is decoded) and the self-attention keys / values
of every id fed so far. Each call feeds only the new ids; their queries attend to the cached keys and
to each other causally. The arithmetic is the decoder block's (`multimae.layers.decoder_block`), with
the same parameters, so the logits equal a full recomputation (`passes.sequence_logits`) up to float
rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.generation.passes import Context
from multimae.layers.cross_attention import additive_mask
from multimae.model.fourm import FourM


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, D) -> (B, H, N, hd)."""
    B, N, D = x.shape
    return x.reshape(B, N, num_heads, D // num_heads).transpose(1, 2)


class SequenceDecoderCache:
    """Decode one sequence target of ``model`` against ``context``, a few ids per `feed` call."""

    def __init__(self, model: FourM, target: str, context: Context) -> None:
        self.model, self.target = model, target
        self.embedding = model.decoder_embeddings[target]
        self.cross: list[tuple[Tensor, Tensor]] = []
        for block in model.decoder:
            attn = block.cross_attn
            kv = attn.kv(block.context_norm(context.tokens))  # (B, M, 2D)
            k, v = kv.chunk(2, dim=-1)
            self.cross.append((attn.k_norm(_heads(k, attn.num_heads)), _heads(v, attn.num_heads)))
        self.cross_mask = additive_mask(context.keep[:, None, None, :], context.tokens.dtype)  # (B, 1, 1, M)
        self.past: list[tuple[Tensor, Tensor] | None] = [None] * len(model.decoder)
        self.length = 0  # ids fed so far (t)

    def _self_attention(self, i: int, h: Tensor) -> Tensor:
        attn = self.model.decoder[i].self_attn
        B, n, D = h.shape
        q, k, v = attn.qkv(h).reshape(B, n, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(q), attn.k_norm(k)  # each (B, H, n, hd)
        if self.past[i] is not None:
            k, v = torch.cat([self.past[i][0], k], dim=2), torch.cat([self.past[i][1], v], dim=2)
        self.past[i] = (k, v)
        t = k.shape[2] - n
        allowed = torch.ones(n, t + n, dtype=torch.bool, device=h.device).tril(t)  # row j sees keys <= t + j
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(allowed, q.dtype))
        return attn.proj(attn.norm(out.transpose(1, 2).reshape(B, n, D)))

    def _cross_attention(self, i: int, h: Tensor) -> Tensor:
        attn = self.model.decoder[i].cross_attn
        B, n, D = h.shape
        q = attn.q_norm(_heads(attn.q(h), attn.num_heads))
        k, v = self.cross[i]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.cross_mask)
        return attn.proj(out.transpose(1, 2).reshape(B, n, D))

    def feed(self, ids: Tensor) -> Tensor:
        """Feed (B, n) ids at the next ranks; (B, n, V) logits after each of them."""
        x = self.embedding.embed_generated(ids, self.length)
        for i, block in enumerate(self.model.decoder):
            x = x + self._self_attention(i, block.norm1(x))
            x = x + self._cross_attention(i, block.query_norm(x))
            x = x + block.mlp(block.norm2(x))
        self.length += ids.shape[1]
        return self.embedding.logits(self.model.decoder_norm(x)).float()
