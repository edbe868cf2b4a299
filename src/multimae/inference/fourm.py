"""4M out of the box: one forward pass from fully given conditions to fully queried token maps.

Shapes: B batch, N_m tokens of modality m, V_m its vocabulary.

`predict_token_maps` is the argmax of one decoder pass over every position of each target map (4M's
one-step decoding; `multimae.generation`'s MaskGIT / ROAR samplers refine this over several steps).
`predict_sequences` decodes the sequence outputs (a caption) greedily, token by token
(`multimae.generation.autoregressive`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM
from multimae.tokenizers.base import Tokenizer


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


def _map_conditions(model: FourM, tokenizers: Mapping[str, Tokenizer], maps: Mapping[str, Tensor]
                    ) -> dict[str, tuple[Tensor, Tensor]]:
    """``{model token map: (ids, valid)}`` of raw maps ``{stored modality: (B, ...) raw}``, tokenised."""
    by_source = {s.source_name: n for n, s in model.input_specs.items() if s.kind == "token_map"}
    unknown = [m for m in maps if m not in by_source]
    if unknown:
        raise ValueError(f"{unknown}: this 4M model reads the token maps of {sorted(by_source)}")
    missing = [m for m in maps if m not in tokenizers]
    if missing:
        raise ValueError(f"no tokenizer for {missing} (the run keeps {sorted(tokenizers)})")
    conditions = {}
    for source, raw in maps.items():
        tokens = tokenizers[source].encode(raw)
        conditions[by_source[source]] = (tokens.ids, tokens.valid)
    return conditions


@torch.no_grad()
def predict_sequences(model: FourM, tokenizers: Mapping[str, Tokenizer], maps: Mapping[str, Tensor],
                      max_new: int | None = None) -> dict[str, list[str]]:
    """``{sequence output: B texts}``: every sequence output the tokenizers can decode (a caption), generated
    greedily (temperature 0, KV cache) from the raw maps ``{stored modality: (B, ...) raw}`` alone."""
    from multimae.generation import TargetSchedule, condition, generate

    conditions = {n: condition(model, n, ids, valid) for n, (ids, valid) in _map_conditions(model, tokenizers,
                                                                                           maps).items()}
    schedules = [TargetSchedule(n, "autoregressive", num_tokens=max_new, temperature=0.0)
                 for n, s in model.output_specs.items() if s.kind == "tokens" and n in tokenizers]
    if not schedules:
        return {}
    out = generate(model, conditions, schedules, chained=False)
    return {s.target: tokenizers[s.target].decode(out[s.target].data.cpu()) for s in schedules}


@torch.no_grad()
def predict_from_maps(model: FourM, tokenizers: Mapping[str, Tokenizer], maps: Mapping[str, Tensor],
                      targets: Sequence[str] | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(decoded, ids)``: raw maps ``{stored modality: (B, ...) raw}`` (an rgb picture in [0, 1], ...) encoded
    by their tokenizers into the model's token maps, every other token-map output predicted in one pass
    (`predict_token_maps`) and decoded: ``decoded`` ``{stored modality: raw map}``, ``ids`` ``{output: (B, N)}``."""
    conditions = _map_conditions(model, tokenizers, maps)
    if targets is None:
        targets = [n for n, s in model.output_specs.items()
                   if s.kind == "token_map" and n not in conditions and s.source_name in tokenizers]
    ids = predict_token_maps(model, conditions, targets)
    decoded = {model.output_specs[n].source_name: tokenizers[model.output_specs[n].source_name].decode(i)
               for n, i in ids.items()}
    return decoded, ids


@torch.no_grad()
def score_from_image(model: FourM, tokenizers: Mapping[str, Tokenizer], raw_batches: Sequence[Mapping[str, Tensor]],
                     image: str, num_classes: Mapping[str, int] | None = None,
                     object_classes: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """One-pass predictions from the picture ``image`` alone, scored against the raw ground truth of
    ``raw_batches`` (`multimae.data` conventions), in the units MultiMAE's transfer metrics use
    (`multimae.tasks.pretrain.transfer_metrics`): ``<m>_miou`` / ``_acc`` (and ``_object_*``) for class
    maps, ``<m>_l1`` for dense maps scored by l1, compared after the truth's per-sample robust
    standardisation (the prediction mapped by the truth's statistics, so both are in its units).

    Returns ``{"model": ..., "tokenizer": ...}``: the model's scores, and those of the truth's own tokens
    decoded (the ceiling a model predicting these tokens can reach)."""
    from multimae.modalities.normalize import robust_stats
    from multimae.modalities.registry import get_modality
    from multimae.tasks.metrics import ConfusionMatrix, masked_l1

    scores: dict[str, dict[str, Any]] = {"model": {}, "tokenizer": {}}
    for raw in raw_batches:
        decoded, _ = predict_from_maps(model, tokenizers, {image: raw[image]})
        ceiling = {m: tokenizers[m].decode(tokenizers[m].encode(raw[m])) for m in decoded}
        for kind, maps in (("model", decoded), ("tokenizer", ceiling)):
            for name, pred in maps.items():
                spec, truth = get_modality(name), raw[name]
                acc = scores[kind].setdefault(name, None)
                if spec.is_categorical:
                    K = (num_classes or {}).get(name, spec.num_channels)
                    acc = acc or ConfusionMatrix(K, spec.ignore_index)
                    acc.update(pred.long(), truth.long())
                elif spec.scored_by == "l1":
                    acc = acc or [0.0, 0]
                    t = truth.float()
                    if spec.normalization == "robust_standardize":
                        mean, scale = robust_stats(t, spec.robust_trim)
                        shift = (lambda x: (x - mean[:, None, None, None]) / scale[:, None, None, None])  # noqa: E731
                        t, p = shift(t), shift(pred.float())
                    else:
                        p = pred.float()
                    s, n = masked_l1(p, t)
                    acc[0], acc[1] = acc[0] + s, acc[1] + n
                else:
                    continue
                scores[kind][name] = acc
    out: dict[str, dict[str, float]] = {}
    for kind, per in scores.items():
        out[kind] = {}
        for name, acc in per.items():
            if isinstance(acc, list):
                out[kind][f"{name}_l1"] = acc[0] / max(acc[1], 1)
            elif acc is not None:
                out[kind][f"{name}_miou"] = acc.mean_iou()
                out[kind][f"{name}_acc"] = acc.accuracy()
                if object_classes:
                    out[kind][f"{name}_object_iou"] = acc.mean_iou(object_classes)
    return out
