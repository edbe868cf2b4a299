"""Initial weights from a timm ``VisionTransformer`` (one small mapping, kept apart so that a
general converter package can replace it).

Key mapping (timm -> multimae): ``patch_embed.proj.*`` -> ``input_adapters.<modality>.proj.*``;
``blocks.<i>.*`` -> ``encoder.<i>.*`` (same block layout); ``cls_token`` + the class position of
``pos_embed`` -> ``global_tokens``; the patch positions of ``pos_embed`` (1, 1 + h*w, D) ->
``input_adapters.<modality>.pos_emb`` (1, D, h, w) (kept frozen, as our tables are). The final
``norm`` / ``fc_norm`` and ``head`` are dropped: the encoder has no final norm, heads bring their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from multimae.model.config import EncoderConfig

TIMM_PREFIX = "timm:"


def is_timm_vit_state(state: Mapping[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state)


def timm_vit_to_multimae(state: Mapping[str, Tensor], modality: str = "rgb") -> dict[str, Tensor]:
    """A timm ViT state dict as multimae encoder weights (see the module docstring)."""
    unsupported = sorted({k.split(".")[2] for k in state if k.startswith("blocks.") and k.split(".")[2] in ("ls1", "ls2")}
                         | {k for k in state if k in ("reg_token", "dist_token")})
    if unsupported:
        raise ValueError(f"timm ViT features without a multimae counterpart: {unsupported}")
    out: dict[str, Tensor] = {}
    prefix = f"input_adapters.{modality}."
    out[prefix + "proj.weight"] = state["patch_embed.proj.weight"]
    if "patch_embed.proj.bias" in state:
        out[prefix + "proj.bias"] = state["patch_embed.proj.bias"]
    for key, value in state.items():
        if key.startswith("blocks."):
            out["encoder." + key[len("blocks."):]] = value
    pos = state.get("pos_embed")
    cls = state.get("cls_token")
    if pos is not None:
        D = pos.shape[-1]
        extra = 1 if cls is not None and pos.shape[1] != math.isqrt(pos.shape[1]) ** 2 else 0
        patches = pos[:, extra:]
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise ValueError(f"timm pos_embed {tuple(pos.shape)}: the patch positions do not form a square grid")
        out[prefix + "pos_emb"] = patches.reshape(1, side, side, D).permute(0, 3, 1, 2).contiguous()
        if cls is not None:
            cls = cls + (pos[:, :1] if extra else 0)
    if cls is not None:
        out["global_tokens"] = cls
    return out


def encoder_config_from_timm_state(state: Mapping[str, Tensor], num_heads: int | None = None) -> EncoderConfig:
    """The encoder a timm ViT state dict describes (``num_heads`` is not stored: default D / 64)."""
    w = state["patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    pos = state.get("pos_embed")
    grid = math.isqrt(pos.shape[1] - (1 if "cls_token" in state else 0)) if pos is not None else 14
    return EncoderConfig(
        dim=dim, depth=depth, num_heads=num_heads or max(1, dim // 64),
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim, qkv_bias="blocks.0.attn.qkv.bias" in state,
        num_global_tokens=1 if "cls_token" in state else 0, patch_size=patch, image_size=grid * patch,
    )


def load_timm_vit(source: str) -> tuple[dict[str, Tensor], int | None]:
    """(timm state dict, number of heads when known) from ``timm:<model name>`` (timm downloads the
    pretrained weights) or a weights file with timm key names."""
    if source.startswith(TIMM_PREFIX):
        import timm

        model = timm.create_model(source[len(TIMM_PREFIX):], pretrained=True, num_classes=0)
        return model.state_dict(), int(model.blocks[0].attn.num_heads)
    path = Path(source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state, None
