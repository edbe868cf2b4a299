"""Weight initialisation of a from-scratch MultiMAE (the official scheme).

Applied to the whole model: every Linear gets xavier-uniform weights and zero bias, with the
fan computed per projection for fused q/k/v (``qkv``: out / 3) and k/v (``kv``: out / 2) layers;
every LayerNorm weight 1, bias 0; patch projections (``proj`` convolutions of input adapters)
xavier-uniform on the weight viewed as (out, in * kh * kw). Embeddings, tokens and positional
tables keep the initialisation their modules gave them.
"""

from __future__ import annotations

import math

from torch import nn


def init_weights(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out_f, in_f = module.weight.shape
            if name.endswith("qkv"):
                bound = math.sqrt(6.0 / (out_f / 3 + in_f))
                nn.init.uniform_(module.weight, -bound, bound)
            elif name.endswith("kv"):
                bound = math.sqrt(6.0 / (out_f / 2 + in_f))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) and "input_adapters" in name.split(".") and name.endswith("proj"):
            weight = module.weight.data
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02)
