"""timm ``VisionTransformer`` (and MAE) weights <-> our RGB encoder.

Key table (timm -> ours; ``<i>`` a block index, ``<rest>`` one of norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2 with .weight / .bias):

======================================  =================================================
timm / MAE                              multimae
======================================  =================================================
``patch_embed.proj.{weight,bias}``      ``input_adapters.rgb.proj.{weight,bias}``
``pos_embed`` patch part (1, N, D)      ``input_adapters.rgb.pos_emb`` (1, D, h, w)
``cls_token`` (+ its ``pos_embed``)     ``global_tokens[:, :1]``
``reg_token`` (+ its ``pos_embed``)     ``global_tokens[:, 1:]``
``blocks.<i>.<rest>``                   ``encoder.<i>.<rest>``
``norm``, ``fc_norm``, ``head``         dropped (our encoder has no final norm, like the
                                        official MultiMAE; heads are task-specific)
MAE ``decoder_*``, ``mask_token``       dropped (MAE's pixel decoder)
======================================  =================================================

Export: our encoder is a timm ViT built with ``no_embed_class=True`` (positions are added to
patch tokens only; the global token carries none, as ours), ``final_norm=False`` (no final norm)
and ``class_token`` / ``reg_tokens`` for our global tokens. timm puts these prefix tokens *first*,
ours come *last*; attention does not depend on token order, so the outputs are the same tokens in
another order. `timm_kwargs` gives the ``timm.create_model`` arguments.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multimae.convert.official import ENCODER_HEAD_DIM, num_blocks
from multimae.convert.report import ConversionReport
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.config import EncoderConfig, MultiMAEConfig
from multimae.model.encoder import encoder_of
from multimae.model.multimae import MultiMAE

SOURCE_FORMAT = "timm VisionTransformer"
TIMM_ARCH = "vit_base_patch16_224"  # any ViT name works: the keyword arguments set every size
BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")
# Tensors of other ViT variants whose computation our encoder does not have.
_UNSUPPORTED = {
    r"\.ls[12]\.gamma$|\.gamma_[12]$": "LayerScale (init_values)",
    r"\.attn\.[qk]_norm\.": "query/key normalisation (qk_norm)",
    r"^norm_pre\.": "a norm before the blocks (pre_norm)",
    r"^patch_embed\.norm\.": "a norm in the patch embedding",
    r"^dist_token$": "a distillation token (DeiT)",
    r"\.attn\.[qv]_bias$": "separate q/v biases (BEiT)",
    r"\.attn_pool\.": "attention pooling (MAP head)",
}
# Tensors dropped on import, with the reason.
_DROPPED = (
    (r"^norm\.", "final norm: our encoder, like the official MultiMAE, has none (consumers normalise)"),
    (r"^fc_norm\.|^head\.|^head_dist\.", "classification head"),
    (r"^decoder_|^mask_token$", "MAE pixel decoder"),
)


def _check_supported(state: Mapping[str, Tensor]) -> None:
    for key in state:
        for pattern, what in _UNSUPPORTED.items():
            if re.search(pattern, key):
                raise ValueError(f"unsupported ViT variant: {key} belongs to {what}, which our encoder does not have")


def timm_kwargs(config: EncoderConfig) -> dict[str, Any]:
    """``timm.create_model`` keyword arguments under which a timm ViT computes our RGB encoder."""
    G = config.num_global_tokens
    return {
        "img_size": config.image_size, "patch_size": config.patch_size, "embed_dim": config.dim,
        "depth": config.depth, "num_heads": config.num_heads, "mlp_ratio": config.mlp_ratio,
        "qkv_bias": config.qkv_bias, "class_token": G > 0, "reg_tokens": max(G - 1, 0),
        "no_embed_class": True, "final_norm": False, "global_pool": "token" if G > 0 else "avg",
        "num_classes": 0,
    }


def multimae_to_timm(model: nn.Module, modality: str = DEFAULT_IMAGE_MODALITY
                     ) -> tuple[dict[str, Tensor], dict[str, Any], ConversionReport]:
    """(timm state dict, ``timm.create_model`` kwargs, report) for the encoder with one dense input.

    ``timm.create_model(TIMM_ARCH, **kwargs)`` loads the state dict strictly; its
    ``forward_features`` returns ``[global tokens, patch tokens]`` where ours returns
    ``[patch tokens, global tokens]`` (same values).
    """
    report = ConversionReport("multimae", SOURCE_FORMAT)
    encoder = encoder_of(model)
    if modality not in encoder.input_specs:
        raise ValueError(f"the model has no {modality!r} input to export (inputs: {list(encoder.input_specs)})")
    spec = encoder.input_specs[modality]
    if spec.is_categorical or spec.stride != 1:
        raise ValueError(f"{modality!r} is not a dense stride-1 input; a timm ViT takes images")
    cfg = encoder.config
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}  # official names
    out: dict[str, Tensor] = {}

    def put(src: str, dst: str, value: Tensor) -> None:
        out[dst] = value.contiguous()
        report.mapped[src] = dst

    prefix = f"input_adapters.{modality}."
    put(prefix + "proj.weight", "patch_embed.proj.weight", state[prefix + "proj.weight"])
    put(prefix + "proj.bias", "patch_embed.proj.bias", state[prefix + "proj.bias"])
    put(prefix + "pos_emb", "pos_embed", state[prefix + "pos_emb"].flatten(2).transpose(1, 2))
    tokens = state["global_tokens"]
    if tokens.shape[1] > 0:
        put("global_tokens", "cls_token", tokens[:, :1])
    if tokens.shape[1] > 1:
        out["reg_token"] = tokens[:, 1:].contiguous()
        report.notes.append("global tokens 2.. became timm register tokens (reg_token)")
    for key, value in state.items():
        if key.startswith("encoder."):
            put(key, "blocks." + key[len("encoder."):], value)
        elif key not in report.mapped and key != "global_tokens":
            report.dropped[key] = "not part of a timm ViT (other modalities, decoders)"
    kwargs = timm_kwargs(cfg)
    if spec.num_channels != 3:
        kwargs["in_chans"] = spec.num_channels
    report.infer("timm.create_model", TIMM_ARCH, json.dumps(kwargs))
    report.notes.append("timm puts the class/register tokens first, ours last: same values, other order")
    report.notes.append(f"inputs are {modality} normalised as ours ({spec.normalization})")
    return out, kwargs, report


def _split_pos_embed(pos: Tensor, num_prefix: int, report: ConversionReport) -> tuple[Tensor, Tensor | None, int]:
    """(patch part (1, N, D), prefix part (1, num_prefix, D) or None, grid side)."""
    L = pos.shape[1]
    for prefix in (0, num_prefix) if num_prefix else (0,):
        side = math.isqrt(L - prefix)
        if side * side == L - prefix:
            if prefix:
                report.notes.append("the positional embeddings of the class/register tokens were added to those "
                                    "tokens (ours carry no position)")
                return pos[:, prefix:], pos[:, :prefix], side
            return pos, None, side
    raise ValueError(f"pos_embed of length {L} is not a square grid (with or without {num_prefix} prefix tokens)")


def timm_to_multimae(
    state: Mapping[str, Tensor],
    *,
    num_heads: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[MultiMAE, ConversionReport]:
    """Our RGB-only encoder (a `MultiMAE` without decoders) from timm / MAE ViT weights.

    The number of heads comes from ``num_heads``, else from ``metadata["timm_kwargs"]`` (files we
    exported), else the 64-wide-head convention of ViT-Ti/S/B/L.
    """
    report = ConversionReport(SOURCE_FORMAT if not any(k.startswith("decoder_") for k in state)
                              else "MAE (facebookresearch/mae) ViT", "multimae")
    _check_supported(state)
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise ValueError(f"{key} is absent: not a timm VisionTransformer state dict")
    proj = state["patch_embed.proj.weight"]
    if proj.dim() != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ValueError(f"patch_embed.proj.weight: expected a square convolution kernel, got {tuple(proj.shape)}")
    D, C, P = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[-1])
    cls = state.get("cls_token")
    reg = state.get("reg_token")
    prefix = [t for t in (cls, reg) if t is not None]
    G = sum(int(t.shape[1]) for t in prefix)
    patch_pos, prefix_pos, side = _split_pos_embed(state["pos_embed"], G, report)
    depth = num_blocks(state, "blocks.")
    exported = json.loads(metadata["timm_kwargs"]) if metadata and "timm_kwargs" in metadata else {}
    if num_heads is None and "num_heads" in exported:
        num_heads, how = int(exported["num_heads"]), "from the file's timm_kwargs metadata"
    elif num_heads is None:
        num_heads = D // ENCODER_HEAD_DIM
        how = f"not stored in the weights: convention of {ENCODER_HEAD_DIM}-wide heads"
        if num_heads < 1 or D % num_heads:
            raise ValueError(f"width {D} does not fit the {ENCODER_HEAD_DIM}-wide head convention; pass num_heads")
    else:
        how = "given"
    if D % num_heads:
        raise ValueError(f"encoder width {D} is not divisible by num_heads={num_heads} (CLI: --num-heads)")
    report.infer("encoder width", D, "patch_embed.proj")
    report.infer("encoder depth", depth, "blocks.<i>")
    report.infer("encoder heads", num_heads, how)
    report.infer("patch size", P, "patch_embed.proj kernel")
    report.infer("image size", side * P, f"{side}x{side} positional grid")
    report.infer("global tokens", G, "cls_token / reg_token")
    image = DEFAULT_IMAGE_MODALITY  # a timm ViT is an image encoder
    overrides = {image: {"num_channels": C}} if C != 3 else {}
    cfg = MultiMAEConfig(
        encoder=EncoderConfig(dim=D, depth=depth, num_heads=num_heads,
                              mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / D,
                              qkv_bias="blocks.0.attn.qkv.bias" in state, num_global_tokens=G,
                              patch_size=P, image_size=side * P),
        inputs=(image,), outputs=(), modality_overrides=overrides,
    )
    model = MultiMAE(cfg)
    ours: dict[str, Tensor] = {}
    ours["input_adapters.rgb.proj.weight"] = proj
    report.mapped["patch_embed.proj.weight"] = "input_adapters.rgb.proj.weight"
    if "patch_embed.proj.bias" in state:
        ours["input_adapters.rgb.proj.bias"] = state["patch_embed.proj.bias"]
        report.mapped["patch_embed.proj.bias"] = "input_adapters.rgb.proj.bias"
    ours["input_adapters.rgb.pos_emb"] = patch_pos.transpose(1, 2).reshape(1, D, side, side)
    report.mapped["pos_embed"] = "input_adapters.rgb.pos_emb"
    if prefix:
        tokens = [t.clone() for t in prefix]
        if prefix_pos is not None:
            start = 0
            for t in tokens:
                t += prefix_pos[:, start:start + t.shape[1]]
                start += t.shape[1]
        ours["global_tokens"] = tokens[0] if len(tokens) == 1 else torch.cat(tokens, dim=1)
        for name in ("cls_token", "reg_token"):
            if name in state:
                report.mapped[name] = "global_tokens"
    else:
        ours["global_tokens"] = torch.zeros(1, 0, D)
    for key, value in state.items():
        if key in report.mapped:
            continue
        m = _BLOCK.match(key)
        if m and m.group(2) in BLOCK_PARTS:
            ours[f"encoder.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = value
            report.mapped[key] = f"encoder.{m.group(1)}.{m.group(2)}.{m.group(3)}"
            continue
        reason = next((r for p, r in _DROPPED if re.search(p, key)), None)
        if reason is None:
            raise ValueError(f"{key}: a tensor this converter does not know; refusing to guess")
        report.dropped[key] = reason
    target = model.state_dict()
    for key, value in ours.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not match the inferred "
                             f"{tuple(target[key].shape)}")
    model.load_state_dict(ours, strict=False)
    report.missing = [k for k in target if k not in ours]
    if "norm.weight" in state:
        report.notes.append("timm applies its final norm in forward_features; our encoder outputs the tokens "
                            "before it (norm dropped)")
    return model.eval(), report


TIMM_PREFIX = "timm:"


def read_timm_source(source: str) -> tuple[dict[str, Tensor], int | None]:
    """(timm ViT state dict, number of heads when known) from ``timm:<model name>`` (timm builds the
    model and downloads its pretrained weights) or a weights file with timm key names."""
    if source.startswith(TIMM_PREFIX):
        import timm

        name = source[len(TIMM_PREFIX):]
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('.')[0][:8]}*")[:5]
            similar = f" (similar: {', '.join(close)})" if close else ""
            raise ValueError(f"{source}: timm has no model {name!r}{similar}")
        vit = timm.create_model(name, pretrained=True, num_classes=0)
        return vit.state_dict(), int(vit.blocks[0].attn.num_heads)
    from multimae.convert.io import read_checkpoint

    ckpt = read_checkpoint(source)
    if ckpt.format != "timm":
        raise ValueError(f"{source}: not timm ViT weights (found the {ckpt.format} layout)")
    return ckpt.state, None
