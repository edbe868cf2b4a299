"""4M out of the box: one forward pass from fully given conditions to fully queried token maps.

Shapes: B batch, N_m tokens of modality m, V_m its vocabulary.

`predict_token_maps` is the argmax of one decoder pass over every position of each target map (4M's
one-step decoding; MaskGIT / ROAR samplers refine this over several steps). Sequences need
step-by-step decoding and are not predicted here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM


@torch.no_grad()
def predict_token_maps(model: FourM, conditions: Mapping[str, tuple[Tensor, Tensor | None]],
                       targets: Sequence[str]) -> dict[str, Tensor]:
    """``{target: (B, N) int64 ids}``: each target token map's argmax given ``conditions``
    ``{modality: (ids or data, valid or None)}`` (every valid token given)."""
    bad = [t for t in targets if t not in model.output_specs or model.output_specs[t].kind != "token_map"]
    if bad:
        raise ValueError(f"{bad}: not token-map outputs of this model ({list(model.output_specs)})")
    if not conditions:
        raise ValueError("give at least one condition")
    batch: dict[str, ModalityBatch] = {}
    B = next(iter(conditions.values()))[0].shape[0]
    device = next(iter(conditions.values()))[0].device
    for name, (data, valid) in conditions.items():
        if name not in model.input_specs:
            raise ValueError(f"{name!r} is not an input of this model ({list(model.input_specs)})")
        spec = model.input_specs[name]
        if valid is None and spec.kind == "tokens":
            valid = data != spec.pad_id
        elif valid is None:
            valid = torch.ones(B, model.encoder_embeddings[name].num_tokens(data), dtype=torch.bool, device=device)
        batch[name] = ModalityBatch(data, valid, None, None)
    slots = 0
    for name in targets:
        side = model.decoder_embeddings[name].side
        ones = torch.ones(B, side * side, dtype=torch.bool, device=device)
        batch[name] = ModalityBatch(torch.zeros(B, side * side, dtype=torch.long, device=device), ones, ones, ones)
        slots += side * side
    given = sum(int(r.encoded.sum(dim=1).max()) for n, r in batch.items() if n in model.input_specs)
    out = model(batch, num_encoder_tokens=max(given, 1), num_decoder_tokens=slots)
    return {name: out.logits[name].argmax(dim=-1).view(B, -1) for name in targets}
