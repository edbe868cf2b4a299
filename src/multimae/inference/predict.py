"""Run a MultiMAE on your own inputs: any subset of its input modalities, any number of visible
tokens or an explicit mask, predictions given back in the units of the data.

Shapes: C channels, K classes, H W pixels (full image resolution), s a modality's stride,
h w token grid, N = h * w tokens per modality, P the model's patch size.

What comes in and what goes out:

* rgb is read in [0, 1] and normalised with the ImageNet mean / std; the rgb prediction is
  un-normalised back to [0, 1].
* depth is standardised per image (mean and spread of its central 80 % of valid values); the
  depth prediction is de-standardised with the *input* depth's statistics when depth is given,
  else it stays standardised (relative depth: the model cannot know the scale).
* semseg ids are sampled every s-th pixel and embedded; the prediction is returned as logits at
  H/s and as class ids at full resolution.
* norm_rgb is MAE's per-patch normalised target: every P x P patch of the (ImageNet-normalised)
  image standardised to zero mean and unit variance. Its raw prediction therefore has no colour
  and no brightness per patch: drawn as is it looks like noise with a checkerboard of patches.
  `Prediction.norm_rgb_view` puts the patch statistics back (from the input rgb at visible
  patches, from the rgb decoder's prediction at masked ones).

A fine-tuned model (`FineTuneModel`) sees every token of its inputs and predicts its head's
output: class probabilities (classifier), a class map (segmentation) or a dense map (DPT).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.engine.precision import autocast
from multimae.inference.captions import CaptionPrediction, caption_prediction, read_caption
from multimae.inference.inputs import Fit, fit_size, read_input
from multimae.losses.masked import patch_stats, token_mask_to_pixels
from multimae.model.finetune import FineTuneModel
from multimae.model.heads import ConvNeXtHeadConfig, LinearHeadConfig
from multimae.model.multimae import MultiMAE
from multimae.modalities import denormalize, prepare_batch, robust_stats
from multimae.modalities.spec import ModalitySpec
from multimae.text.tokenizer import TextTokenizer


@dataclass
class Prediction:
    """One sample's inputs, masks and predictions.

    Attributes:
        inputs: ``{input modality: raw value as used}`` (after fitting to the model): rgb (3, H, W)
            in [0, 1], depth (1, H, W) with NaN = invalid, semseg (H, W) int64 ids.
        masks: ``{input modality: (h, w) bool}``, True = masked (hidden from the encoder; the
            model predicts it). All False when nothing was masked.
        outputs: ``{output modality: prediction in data units}``: rgb (3, H, W) in about [0, 1]
            (not clipped); depth (1, H, W) in the input depth's units, or standardised without a
            depth input; categorical (H, W) int64 class ids; norm_rgb (3, H, W) per-patch
            standardised (the units it was trained in).
        logits: ``{categorical output: (K, H/s, W/s)}``.
        units: ``{output modality: what its values mean}``.
        norm_rgb_view: (3, H, W) in [0, 1], the norm_rgb prediction with patch statistics put back
            (see the module docstring); None when the model has no norm_rgb output.
        norm_pix: ``{output: its source modality}`` for the outputs trained against per-patch
            standardised targets (loss ``norm_pix_mse``: norm_rgb -> rgb); ``norm_rgb_view``
            shows the first.
        captions: ``{text output: CaptionPrediction}``: the words predicted at a given caption's
            ``[MASK]`` positions, or a whole caption when none was given (`multimae.inference.captions`).
        notes: sentences on how each input was read, sized and normalised, and on the masks.
        patch_size: P.
    """

    inputs: dict[str, Tensor]
    masks: dict[str, Tensor]
    outputs: dict[str, Tensor] = field(default_factory=dict)
    logits: dict[str, Tensor] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    norm_rgb_view: Tensor | None = None
    notes: list[str] = field(default_factory=list)
    patch_size: int = 16
    norm_pix: dict[str, str] = field(default_factory=dict)
    captions: dict[str, CaptionPrediction] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        H, W = self.size
        return H // self.patch_size, W // self.patch_size

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the maps: the inputs', or the predicted ones' when only a caption was given."""
        maps = [v for v in [*self.inputs.values(), *self.outputs.values()] if v.dim() >= 2]
        H, W = maps[0].shape[-2:]
        return int(H), int(W)

    def visible_counts(self) -> dict[str, int]:
        return {n: int((~m).sum()) for n, m in self.masks.items()}


def _normalisation_note(spec: ModalitySpec, raw: Tensor, model_input: Tensor) -> str:
    if spec.is_categorical:
        h, w = model_input.shape[-2:]
        if spec.stride == 1:
            return "class ids, embedded"
        return f"class ids, sampled every {spec.stride}th pixel to a {h}x{w} map and embedded ({spec.class_emb_dim}-d)"
    if spec.normalization == "imagenet":
        return f"[0, 1] then ImageNet mean {spec.mean} / std {spec.std}"
    if spec.normalization == "robust_standardize":
        mean, scale = robust_stats(raw[None], spec.robust_trim)
        return (f"standardised per image: (d - {float(mean[0]):.4g}) / {float(scale[0]):.4g} (mean and spread of the "
                f"central {100 - 200 * spec.robust_trim:.0f}% of valid values); invalid pixels -> 0")
    if spec.normalization == "unit_range":
        return "[0, 1] -> [-1, 1]"
    return "used as given (no normalisation)"


def _explicit_masks(mask: Mapping[str, Any], names: list[str], grid: tuple[int, int]) -> dict[str, Tensor]:
    """``{modality: (h, w) or (N,) bool / 0-1}`` -> ``{modality: (1, N) bool}``, True = masked."""
    missing = [n for n in names if n not in mask]
    extra = [n for n in mask if n not in names]
    if missing or extra:
        raise ValueError(f"the mask must cover exactly the given inputs {names}: missing {missing}, extra {extra}")
    h, w = grid
    out = {}
    for name in names:
        m = torch.as_tensor(np.asarray(mask[name]))
        if tuple(m.shape) not in ((h, w), (h * w,)):
            raise ValueError(f"mask of {name!r} must have shape ({h}, {w}) or ({h * w},), got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"mask of {name!r} must hold 0/1 or booleans (1 = masked)")
            m = m != 0
        out[name] = m.reshape(1, h * w)
    if all(bool(m.all()) for m in out.values()):
        raise ValueError("the mask hides every token: at least one must be visible")
    return out


def _masks(model: MultiMAE, inputs: Mapping[str, Tensor], num_visible: int | None, mask: Mapping[str, Any] | None,
           alpha: float, seed: int) -> tuple[dict[str, Tensor] | None, str]:
    layout = model.backbone.layout(inputs)
    total = layout.num_tokens
    if mask is not None and num_visible is not None:
        raise ValueError("give either num_visible or mask, not both")
    if mask is not None:
        return _explicit_masks(mask, list(layout.names), layout.grid), "masks: as given"
    if num_visible is None or num_visible == total:
        return None, f"masks: none, all {total} tokens visible"
    if not 1 <= num_visible <= total:
        raise ValueError(f"num_visible must be in [1, {total}] (tokens of the given inputs), got {num_visible}")
    g = torch.Generator().manual_seed(seed)
    masks = model.backbone.sample_masks(inputs, num_visible, alpha, g)
    return masks, f"masks: random, {num_visible} of {total} tokens visible, Dirichlet alpha {alpha}, seed {seed}"


def predict(
    model: MultiMAE | FineTuneModel,
    inputs: Mapping[str, Any],
    *,
    num_visible: int | None = None,
    mask: Mapping[str, Any] | None = None,
    alpha: float = 1.0,
    seed: int = 0,
    fit: Fit = "resize",
    precision: str = "fp32",
    tokenizers: Mapping[str, TextTokenizer] | None = None,
) -> Prediction:
    """Predict every output of ``model`` from ``inputs``.

    Args:
        model: a `MultiMAE` with decoders, or a `FineTuneModel` (its head's output is predicted
            from every token; no masking). See `multimae.inference.load_model`.
        inputs: ``{modality: file path, PIL image, numpy array or tensor}``, any non-empty subset
            of the model's inputs, aligned (see `multimae.inference.inputs` for what each accepts).
        num_visible: visible tokens over all given inputs, drawn at random (Dirichlet split over
            modalities with ``alpha``, uniform positions, ``seed``). None: nothing masked.
        mask: explicit ``{modality: (h, w) or (N,)}`` masks, 1 / True = masked, for every given input.
        fit: ``resize`` to the model's image size, ``crop`` (central square, then resize) or
            ``native`` (own size, a multiple of the patch size; positional tables are interpolated).
        precision: fp32 | bf16 | fp16, the forward pass's autocast (outputs are returned in fp32);
            `multimae.engine.precision.choose_precision` resolves ``auto``.
        tokenizers: ``{text modality: its tokenizer}``, for a model with captions: a caption input
            is text (``"a red cube [MASK] of a blue cone"``; ``[MASK]`` words are predicted; see
            `multimae.inference.captions`), a caption output comes back as words.
    """
    if isinstance(model, FineTuneModel):
        if num_visible is not None or mask is not None:
            raise ValueError("a fine-tuned model encodes every token of its inputs: masks apply to MultiMAE models")
    elif not isinstance(model, MultiMAE) or len(model.output_adapters) == 0:
        raise ValueError("this model has no decoders (an encoder only, e.g. converted timm weights): nothing to "
                         "predict; use model.forward_encoder for features")
    if not inputs:
        raise ValueError(f"no input given; the model accepts {list(model.input_specs)}")
    unknown = [n for n in inputs if n not in model.input_specs]
    if unknown:
        raise ValueError(f"the model does not take {unknown} as input; it accepts {list(model.input_specs)}")
    specs = {**model.input_specs, **(model.output_specs if isinstance(model, MultiMAE) else {})}
    texts = {n: s for n, s in specs.items() if s.stored_as == "text"}
    missing = [n for n in texts if n not in (tokenizers or {}) and (n in inputs or n in getattr(model, "output_specs", {}))]
    if missing:
        raise ValueError(f"{missing}: a text modality needs its tokenizer (a run's checkpoint holds it; for other "
                         "files pass one: --tokenizer NAME|DIR)")
    names = [n for n in model.input_specs if n in inputs and n not in texts]
    given = {n: read_caption(inputs[n], texts[n], tokenizers[n]) for n in model.input_specs  # type: ignore[index]
             if n in inputs and n in texts}
    read = {n: read_input(model.input_specs[n], inputs[n]) for n in names}
    cfg = model.backbone.config
    if names:
        raw, how_sized = fit_size({n: r.value for n, r in read.items()}, cfg.image_size, cfg.patch_size, fit)
    else:
        raw, how_sized = {}, f"no map given: maps are predicted at {cfg.image_size}×{cfg.image_size}"
    device = next(model.parameters()).device
    output_specs = model.output_specs if isinstance(model, MultiMAE) else {}
    batch = prepare_batch({n: v[None].to(device) for n, v in raw.items()}, model.input_specs, output_specs)
    notes = [f"{n}: {read[n].source}, {read[n].how}; "
             f"{_normalisation_note(model.input_specs[n], raw[n], batch.inputs[n][0])}" for n in names]
    notes += [f"{n}: {int(c.valid.sum())} word pieces, {int(c.hidden.sum())} of them [MASK] (predicted)"
              for n, c in given.items()]
    notes.append(f"size: {how_sized}")
    if isinstance(model, FineTuneModel):
        masks, how_masked = None, "masks: none (a fine-tuned model sees every token)"
    elif names:
        masks, how_masked = _masks(model, batch.inputs, num_visible, mask, alpha, seed)
    else:
        masks, how_masked = None, "masks: none"
    model_inputs = {**batch.inputs, **{n: c.ids[None].to(device) for n, c in given.items()}}
    valid = {n: c.valid[None].to(device) for n, c in given.items()} or None
    grid = (model.backbone.layout(batch.inputs).grid if names
            else (cfg.image_size // cfg.patch_size, cfg.image_size // cfg.patch_size))
    if given and (masks is not None or any(bool(c.hidden.any()) for c in given.values())):
        # the [MASK] words hidden (none may be), beside the maps' masks: the model takes masks for every input or none
        none = {n: torch.zeros(1, grid[0] * grid[1], dtype=torch.bool, device=device) for n in names}
        masks = {**(masks or none), **{n: c.hidden[None].to(device) for n, c in given.items()}}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(model, device.type, precision):
            out = (model(model_inputs) if isinstance(model, FineTuneModel)
                   else model(model_inputs, masks, valid=valid))
    finally:
        model.train(was_training)
    token_masks = {n: (masks[n][0] if masks is not None else torch.zeros(grid[0] * grid[1], dtype=torch.bool))
                   .reshape(grid).cpu() for n in names}
    counts = ", ".join(f"{n} {int((~m).sum())}" for n, m in token_masks.items())
    if names:
        notes.append(f"{how_masked} (visible per input: {counts} of {grid[0] * grid[1]} each)")
    result = Prediction({n: v for n, v in raw.items()}, token_masks, notes=notes, patch_size=cfg.patch_size)
    if isinstance(model, FineTuneModel):
        _head_output(model, out[0].float().cpu(), result)
        return result
    for name, pred in out.preds.items():
        if name in texts:
            source = model.output_specs[name].source_name
            result.captions[name] = caption_prediction(pred[0].float().cpu(), tokenizers[name],  # type: ignore[index]
                                                       given.get(source))
            result.units[name] = "word pieces (the tokenizer's vocabulary)"
            continue
        _un_normalise(model.output_specs[name], pred[0].float().cpu(), raw, result)
    result.norm_pix = {n: s.source_name for n, s in model.output_specs.items()
                       if s.loss == "norm_pix_mse" and n in result.outputs}
    if result.norm_pix:
        result.norm_rgb_view = _norm_rgb_view(model, next(iter(result.norm_pix)), result, out.preds, batch.inputs)
    return result


def top_classes(probabilities: Tensor, top: int = 5) -> str:
    """``"top classes 3 (0.412), 7 (0.201), ..."`` for a (K,) probability vector."""
    p, ids = probabilities.topk(min(top, probabilities.numel()))
    return "top classes " + ", ".join(f"{int(i)} ({float(v):.3f})" for v, i in zip(p, ids))


def _head_output(model: FineTuneModel, pred: Tensor, result: Prediction, top: int = 5) -> None:
    """A fine-tuning head's output into ``result``: class probabilities (+ the top classes in the
    notes), a class map, or a dense regression as predicted."""
    name, config = model.head_name, model.head_config
    if isinstance(config, LinearHeadConfig):
        result.logits[name] = pred
        result.outputs[name] = pred.softmax(0)
        result.units[name] = f"probabilities of {config.num_classes} classes (softmax of the logits)"
        result.notes.append(f"{name}: {top_classes(result.outputs[name], top)}")
    elif isinstance(config, ConvNeXtHeadConfig):
        result.logits[name] = pred
        result.outputs[name] = pred.argmax(0)
        result.units[name] = f"class ids (argmax of {config.num_classes} logits)"
    else:
        result.outputs[name] = pred
        result.units[name] = (f"{name} as the head predicts it ({pred.shape[0]} channel(s), in the units of its "
                              "fine-tuning targets)")


def _un_normalise(spec: ModalitySpec, pred: Tensor, raw: Mapping[str, Tensor], result: Prediction) -> None:
    """Put one output into ``result`` in data units, with a sentence on its units."""
    name = spec.name
    if spec.is_categorical:
        H, W = next(iter(raw.values())).shape[-2:]
        result.logits[name] = pred
        ids = pred.argmax(0)[None, None].float()
        result.outputs[name] = F.interpolate(ids, size=(H, W), mode="nearest")[0, 0].long()
        result.units[name] = f"class ids (argmax of {spec.num_channels} logits, nearest-upsampled x{spec.stride})"
    elif spec.loss == "norm_pix_mse":
        result.outputs[name] = pred
        P = result.patch_size
        result.units[name] = (f"per-patch standardised {spec.source_name} (each {P}x{P} patch zero-mean, "
                              "unit-variance: the norm-pix target it was trained on)")
    elif spec.normalization == "robust_standardize":
        if name in raw:
            mean, scale = robust_stats(raw[name][None].float(), spec.robust_trim)
            result.outputs[name] = pred * float(scale[0]) + float(mean[0])
            result.units[name] = f"{name} in the input's units (de-standardised with the input {name}'s statistics)"
        else:
            result.outputs[name] = pred
            result.units[name] = (f"standardised {name} (relative: zero mean, unit spread; give a {name} input "
                                  "to get its units)")
    elif spec.normalization in ("imagenet", "unit_range"):
        result.outputs[name] = denormalize(spec, pred[None])[0]
        result.units[name] = f"{name} in [0, 1] (un-normalised; not clipped)"
    else:
        result.outputs[name] = pred
        result.units[name] = f"{name} as the model predicts it (no normalisation to undo)"


def _patch_stats(x: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """`patch_stats` of (C, H, W), each spread over its patch's pixels as a (1, H, W) map."""
    mean, std = patch_stats(x[None], patch)  # (1, h, w, 1) each

    def up(t: Tensor) -> Tensor:
        return t[0, :, :, 0].repeat_interleave(patch, 0).repeat_interleave(patch, 1)[None]

    return up(mean), up(std)


def _norm_rgb_view(model: MultiMAE, name: str, result: Prediction, preds: Mapping[str, Tensor],
                   model_inputs: Mapping[str, Tensor]) -> Tensor:
    """The norm-pix output ``name`` (norm_rgb) with patch statistics put back, in [0, 1] (see the
    module docstring)."""
    spec = model.output_specs[name]
    source = model.output_specs.get(spec.source_name) or model.input_specs.get(spec.source_name)
    z = result.outputs[name]
    P, src = result.patch_size, spec.source_name
    src_pred = preds.get(spec.source_name)
    src_in = model_inputs.get(spec.source_name)
    if src_pred is None and src_in is None:
        lo = -F.max_pool2d(-z[None], P)[0].repeat_interleave(P, 1).repeat_interleave(P, 2)
        hi = F.max_pool2d(z[None], P)[0].repeat_interleave(P, 1).repeat_interleave(P, 2)
        result.notes.append(f"{name} view: each patch stretched to its own min-max (no {src} to take statistics from)")
        return ((z - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    mean, std = _patch_stats((src_pred if src_pred is not None else src_in)[0].float().cpu(), P)
    how = f"{src} prediction"
    if src_in is not None:
        in_mean, in_std = _patch_stats(src_in[0].float().cpu(), P)
        visible = ~token_mask_to_pixels(result.masks[spec.source_name].reshape(1, -1), result.grid, P).bool()
        mean, std = torch.where(visible, in_mean, mean), torch.where(visible, in_std, std)
        how = (f"input {src} at visible patches, {src} prediction at masked ones" if src_pred is not None
               else f"input {src} (no {src} decoder: masked patches too)")
    result.notes.append(f"{name} view: per-patch mean and spread put back from the {how}")
    view = z * std + mean
    assert source is not None
    return denormalize(source, view[None])[0].clamp(0, 1)
