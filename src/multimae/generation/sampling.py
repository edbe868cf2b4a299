"""Turning logits into tokens: top-k / top-p filtering, temperature, draws, confidence.

Shapes: R rows (queried positions, flattened over the batch), V vocabulary, B batch, Q queried
positions per sample, K tokens kept per sample.

Draws come from an explicit `torch.Generator`; one ``torch.multinomial`` call over all R rows of a
pass, in row order (sample-major, then query order), which is the call 4M makes: seeded alike, both
draw the same tokens from the same probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ARGMAX_BELOW = 1e-10  # a temperature this close to 0 means argmax


def filter_logits(logits: Tensor, top_k: float = 0, top_p: float = 0.0) -> Tensor:
    """(R, V) logits with every token outside the top-k / top-p set at -inf (a new tensor).

    ``top_k``: k >= 1 tokens, or below 1 a fraction of V (4M reads any float as a fraction); 0 = off. ``top_p``: the smallest
    set of most likely tokens whose probability reaches ``top_p`` (the first token over it kept); 0 = off.
    """
    out = logits.clone()
    V = out.shape[-1]
    if top_k > 0:
        k = min(int(top_k) if top_k >= 1 else int(top_k * V), V)
        if k >= 1:
            kth = torch.topk(out, k, dim=-1).values[..., -1:]
            out = out.masked_fill(out < kth, float("-inf"))
    if top_p > 0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        over = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > top_p
        drop = torch.zeros_like(over)
        drop[..., 1:] = over[..., :-1]  # keep the first token that crosses top_p
        out = out.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return out


def sample(logits: Tensor, temperature: float, generator: torch.Generator | None = None, top_k: float = 0,
           top_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(tokens (R,) int64, confidence (R,) float)`` from (R, V) logits.

    Temperature ~0: the argmax, its confidence the softmax probability of the argmax (4M sets every
    confidence to 1 there, leaving MaskGIT's choice to ``topk``'s tie order). Otherwise filtered,
    divided by the temperature, one multinomial draw per row; confidence = the drawn token's probability.
    """
    if temperature < ARGMAX_BELOW:
        probs = logits.float().softmax(dim=-1)
        confidence, tokens = probs.max(dim=-1)
        return tokens, confidence
    probs = F.softmax(filter_logits(logits, top_k, top_p) / temperature, dim=-1)
    tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return tokens, probs.gather(1, tokens[:, None])[:, 0]


def most_confident(confidence: Tensor, num_select: int) -> Tensor:
    """(B, Q) confidences -> (B, K) indices of the ``num_select`` most confident per sample (``topk``)."""
    return torch.topk(confidence, num_select, dim=-1).indices
