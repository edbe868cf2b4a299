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


def map_inputs(model: FourM) -> dict[str, str]:
    """``{stored modality: model input}`` for the maps this model reads: a raw-pixel input (4M's
    RGB) reads its picture as it is, a token map its source's tokens; pixels win where both exist."""
    by_source = {s.source_name: n for n, s in model.input_specs.items() if s.kind == "token_map"}
    by_source.update({s.name: n for n, s in model.input_specs.items() if s.kind == "dense"})
    return by_source


def _map_conditions(model: FourM, tokenizers: Mapping[str, Tokenizer], maps: Mapping[str, Tensor]
                    ) -> dict[str, tuple[Tensor, Tensor]]:
    """``{model input: (data, valid)}`` of raw maps ``{stored modality: (B, ...) raw}``: pixels
    normalised for a raw-pixel input, else tokenised by the map's tokenizer."""
    from multimae.generation import condition
    from multimae.modalities.prepare import prepare_dense

    by_source = map_inputs(model)
    unknown = [m for m in maps if m not in by_source]
    if unknown:
        raise ValueError(f"{unknown}: this 4M model reads the maps of {sorted(by_source)}")
    missing = [m for m in maps if m not in tokenizers and model.input_specs[by_source[m]].kind != "dense"]
    if missing:
        raise ValueError(f"no tokenizer for {missing} (the run keeps {sorted(tokenizers)})")
    conditions = {}
    for source, raw in maps.items():
        name = by_source[source]
        if model.input_specs[name].kind == "dense":
            record = condition(model, name, prepare_dense(model.input_specs[name], raw.to(model.mask_token.device)))
            conditions[name] = (record.data, record.valid)
            continue
        tokens = tokenizers[source].encode(raw)
        conditions[name] = (tokens.ids, tokens.valid)
    return conditions


@torch.no_grad()
def predict_sequences(model: FourM, tokenizers: Mapping[str, Tokenizer], maps: Mapping[str, Tensor],
                      max_new: int | None = None, targets: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{sequence output: B texts}``: every sequence output the tokenizers can decode (a caption; only
    ``targets`` when given), generated greedily (temperature 0, KV cache) from the raw maps
    ``{stored modality: (B, ...) raw}`` alone."""
    from multimae.generation import TargetSchedule, condition, generate

    conditions = {n: condition(model, n, ids, valid) for n, (ids, valid) in _map_conditions(model, tokenizers,
                                                                                           maps).items()}
    schedules = [TargetSchedule(n, "autoregressive", num_tokens=max_new, temperature=0.0)
                 for n, s in model.output_specs.items()
                 if s.kind == "tokens" and n in tokenizers and (targets is None or n in targets)]
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
                   if s.kind == "token_map" and s.source_name not in maps and s.source_name in tokenizers]
    ids = predict_token_maps(model, conditions, targets)
    decoded = {model.output_specs[n].source_name: tokenizers[model.output_specs[n].source_name].decode(i)
               for n, i in ids.items()}
    return decoded, ids


class MapScores:
    """Predicted raw maps scored against the raw ground truth (`multimae.data` conventions), accumulated
    over batches, in the units MultiMAE's transfer metrics use (`multimae.tasks.pretrain.transfer_metrics`):
    ``<m>_miou`` / ``_acc`` (and ``_object_iou``) for class maps, ``<m>_l1`` for dense maps scored by l1,
    compared after the truth's per-sample robust standardisation (the prediction mapped by the truth's
    statistics, so both are in its units); the maps named in ``angular`` (unit vectors, e.g. normals) by
    ``<m>_angle``, the mean angle in degrees between predicted and true vectors over the pixels whose
    truth is a finite non-zero vector. Modalities scored otherwise are skipped.

        scores = MapScores({"semseg": 9}, object_classes=[3, 4])
        scores.update({"semseg": predicted}, {"semseg": truth})   # (B, H, W) each; once per batch
        scores.result()                                           # {"semseg_miou": ..., ...}
    """

    def __init__(self, num_classes: Mapping[str, int] | None = None, object_classes: Sequence[int] | None = None,
                 angular: Sequence[str] = ()):
        self.num_classes = dict(num_classes or {})
        self.object_classes = list(object_classes or [])
        self.angular = tuple(angular)
        self.acc: dict[str, Any] = {}
        self.angles: dict[str, list[float]] = {}

    def update(self, predicted: Mapping[str, Tensor], truth: Mapping[str, Tensor]) -> None:
        """Add one batch: ``predicted`` ``{modality: raw map}``, each scored against ``truth[modality]``."""
        from multimae.modalities.normalize import robust_stats
        from multimae.modalities.registry import get_modality
        from multimae.tasks.metrics import ConfusionMatrix, masked_l1

        for name, pred in predicted.items():
            spec, t = get_modality(name), truth[name]
            if name in self.angular:  # (B, C, H, W) vectors
                t = t.float()
                ok = torch.isfinite(t).all(dim=1) & (t.nan_to_num().norm(dim=1) > 0)
                cos = torch.nn.functional.cosine_similarity(pred.float(), t.nan_to_num(), dim=1).clamp(-1, 1)
                total = self.angles.setdefault(name, [0.0, 0])
                total[0] += float(torch.rad2deg(torch.acos(cos))[ok].sum())
                total[1] += int(ok.sum())
            if spec.is_categorical:
                if name not in self.acc:
                    self.acc[name] = ConfusionMatrix(self.num_classes.get(name, spec.num_channels), spec.ignore_index)
                self.acc[name].update(pred.long(), t.long())
            elif spec.scored_by == "l1":
                t = t.float()
                if spec.normalization == "robust_standardize":
                    mean, scale = robust_stats(t, spec.robust_trim)
                    shift = (lambda x: (x - mean[:, None, None, None]) / scale[:, None, None, None])  # noqa: E731
                    t, p = shift(t), shift(pred.float())
                else:
                    p = pred.float()
                s, n = masked_l1(p, t)
                total = self.acc.setdefault(name, [0.0, 0])
                total[0], total[1] = total[0] + s, total[1] + n

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {f"{name}_angle": a[0] / max(a[1], 1) for name, a in self.angles.items()}
        for name, acc in self.acc.items():
            if isinstance(acc, list):
                out[f"{name}_l1"] = acc[0] / max(acc[1], 1)
            else:
                out[f"{name}_miou"] = acc.mean_iou()
                out[f"{name}_acc"] = acc.accuracy()
                if self.object_classes:
                    out[f"{name}_object_iou"] = acc.mean_iou(self.object_classes)
        return out


@torch.no_grad()
def score_from_image(model: FourM, tokenizers: Mapping[str, Tokenizer], raw_batches: Sequence[Mapping[str, Tensor]],
                     image: str, num_classes: Mapping[str, int] | None = None,
                     object_classes: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """One-pass predictions from the picture ``image`` alone, scored against the raw ground truth of
    ``raw_batches`` by `MapScores`.

    Returns ``{"model": ..., "tokenizer": ...}``: the model's scores, and those of the truth's own tokens
    decoded (the ceiling a model predicting these tokens can reach)."""
    scores = {"model": MapScores(num_classes, object_classes), "tokenizer": MapScores(num_classes, object_classes)}
    for raw in raw_batches:
        decoded, _ = predict_from_maps(model, tokenizers, {image: raw[image]})
        scores["model"].update(decoded, raw)
        scores["tokenizer"].update({m: tokenizers[m].decode(tokenizers[m].encode(raw[m])) for m in decoded}, raw)
    return {kind: s.result() for kind, s in scores.items()}
