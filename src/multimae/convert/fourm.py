"""Official 4M checkpoints (apple/ml-4m, the Hugging Face hub's safetensors layout) as our `FourM`.

The architecture is read off the tensors: width (``mask_token``), depths (block indices), MLP
kind (``mlp.fc3`` = SwiGLU) and width, biases, QK-norm, register tokens, and per modality its
embedding kind and size. Official modality names carry a resolution (``tok_depth@224``); ours
drop it and use the registry's name (`multimae.modalities.registry.FOURM_NAMES`). What the tensors
cannot say is assumed and reported: the number of heads (4M's heads are 64 wide), raw images
having 3 channels, and that a sequence's positional table (512 rows in every official model) is
its max_length.

Dropped on the way: the zero ``bias`` buffers of the no-bias LayerNorms (checked to be zero), and
duplicates of tied tensors (a decoder's ``mod_emb`` is the encoder's; ``to_logits`` is the decoder
``token_emb`` when the checkpoint ties them: otherwise the model is built untied).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from multimae.convert.report import ConversionReport
from multimae.layers.pos_embed import build_2d_sincos_pos_embed
from multimae.modalities.registry import BUILTIN_MODALITIES, FOURM_NAMES
from multimae.modalities.spec import ModalitySpec
from multimae.model.fourm.config import FourMConfig
from multimae.model.fourm.model import FourM

FOURM_HEAD_DIM = 64  # every official 4M size: 384/6, 512/8, 768/12, 1024/16, 2048/32
SEQUENCE_TABLE_ROWS = 512
_RESOLUTION = re.compile(r"@(\d+)$")


def is_fourm_state(state: Mapping[str, Any]) -> bool:
    """A 4M state dict: encoder and decoder embeddings and the decoder's context projection."""
    return "decoder_proj_context.weight" in state and any(k.startswith("encoder_embeddings.") for k in state)


def our_name(official: str) -> str:
    """``tok_normal@224`` -> ``tok_normals``: the resolution dropped, renamed by the registry's table."""
    base = _RESOLUTION.sub("", official)
    base = FOURM_NAMES.get(base, base)
    clean = re.sub(r"\W", "_", base)
    return clean


def _modalities(state: Mapping[str, Tensor], part: str) -> list[str]:
    prefix = f"{part}_embeddings."
    return list(dict.fromkeys(k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)))


def _is_learned(state: Mapping[str, Tensor], prefix: str, keys: list[str], side: int) -> bool:
    """A grid's table is learned when its values are not the sin-cos table; for tensors without values
    (a meta-device key table), when it is listed before ``mod_emb`` (parameters precede buffers)."""
    pos = state[prefix + "pos_emb"]
    if pos.is_meta:
        return keys.index(prefix + "pos_emb") < keys.index(prefix + "mod_emb")
    table = build_2d_sincos_pos_embed(pos.shape[-1], side, side).flatten(2).transpose(1, 2)
    return not torch.allclose(pos.float(), table, atol=1e-4)


def _spec(official: str, state: Mapping[str, Tensor], keys: list[str], dim: int, report: ConversionReport,
          image_size: int | None, patch_size: int | None) -> tuple[ModalitySpec, int | None, int | None]:
    """Our spec of one official modality (from its encoder or decoder embedding tensors), and the
    image and patch size it shows (raw pixels fix both)."""
    name = our_name(official)
    match = _RESOLUTION.search(official)
    resolution = int(match.group(1)) if match else None
    prefix = next(f"{p}_embeddings.{official}." for p in ("encoder", "decoder")
                  if f"{p}_embeddings.{official}.pos_emb" in state)
    rows = state[prefix + "pos_emb"].shape[1]
    base = BUILTIN_MODALITIES.get(name)
    fields: dict[str, Any]
    if prefix + "proj.weight" in state:  # raw pixels
        channels = base.num_channels if base is not None else 3
        patch = math.isqrt(state[prefix + "proj.weight"].shape[1] // channels)
        side = math.isqrt(rows)
        if patch * patch * channels != state[prefix + "proj.weight"].shape[1] or side * side != rows:
            raise ValueError(f"4M {official}: a patch projection {tuple(state[prefix + 'proj.weight'].shape)} and "
                             f"{rows} positions are not square patches of {channels} channels")
        report.infer(f"{name}.patch_size", patch, f"{official} projection of {channels}-channel patches")
        fields = {"kind": "dense", "num_channels": channels}
        return _make(name, base, fields), side * patch, patch
    if prefix + "emb_proj.weight" in state:  # a sequence of feature vectors (T5 caption embeddings)
        fields = {"kind": "vector", "num_channels": state[prefix + "emb_proj.weight"].shape[1], "max_length": rows,
                  "loss": "mse", "is_output": False}
        return _make(name, base, fields), image_size, patch_size
    vocab = state[prefix + "token_emb.weight"].shape[0]
    side = math.isqrt(rows)
    if rows == SEQUENCE_TABLE_ROWS or side * side != rows:
        fields = {"kind": "tokens", "num_channels": vocab, "max_length": rows, "loss": "cross_entropy",
                  "positions": "visible", "pad_id": 0}
        return _make(name, base, fields), image_size, patch_size
    frame = resolution or image_size
    if frame is None or frame % side:
        raise ValueError(f"4M {official}: a {side} x {side} token map, but no image size to lay it on "
                         f"(name it {official}@<size>)")
    fields = {"kind": "token_map", "num_channels": vocab, "stride": frame // side, "loss": "cross_entropy",
              "positions": "learned" if _is_learned(state, prefix, keys, side) else "index"}
    report.infer(f"{name}.grid", f"{side}x{side}", f"{official} positions, {frame // side} px per token")
    return _make(name, base, fields), frame, patch_size


def _make(name: str, base: ModalitySpec | None, fields: dict[str, Any]) -> ModalitySpec:
    if base is not None and base.kind == fields["kind"]:
        return base.replace(**{k: v for k, v in fields.items() if k != "kind"})
    defaults = {"loss": "cross_entropy" if fields["kind"] in ("tokens", "token_map") else "mse"}
    return ModalitySpec(name=name, **{**defaults, **fields})


def infer_fourm_config(state: Mapping[str, Tensor], num_heads: int | None = None,
                       report: ConversionReport | None = None) -> tuple[FourMConfig, dict[str, str]]:
    """Our `FourMConfig` for an official 4M state dict, and ``{official modality: ours}``."""
    report = report or ConversionReport("official 4M", "multimae 4M")
    keys = list(state)
    dim = state["mask_token"].shape[-1]
    depth = {p: len({int(k.split(".")[1]) for k in keys if k.startswith(f"{p}.")}) for p in ("encoder", "decoder")}
    swiglu = "encoder.0.mlp.fc3.weight" in state
    hidden = state["encoder.0.mlp.fc1.weight"].shape[0]
    ratio = hidden / dim
    if swiglu:
        ratio = next((r for r in (4.0, hidden * 1.5 / dim) if int(2 * int(dim * r) / 3) == hidden), None)
        if ratio is None:
            raise ValueError(f"4M: a gated MLP of {hidden} units at width {dim} fits no mlp_ratio")
    heads = num_heads or max(1, dim // FOURM_HEAD_DIM)
    report.infer("dim", dim, "mask_token")
    report.infer("depths", f"{depth['encoder']} + {depth['decoder']}", "block indices")
    report.infer("mlp", f"{'swiglu' if swiglu else 'gelu'}, ratio {ratio:g}", "mlp.fc1 / mlp.fc3")
    report.infer("num_heads", heads, "given" if num_heads else f"assumed: {FOURM_HEAD_DIM}-wide heads, as every 4M size")
    names: dict[str, str] = {}
    specs: dict[str, ModalitySpec] = {}
    image_size = patch_size = None
    official = list(dict.fromkeys(_modalities(state, "encoder") + _modalities(state, "decoder")))
    for mod in sorted(official, key=lambda m: f"encoder_embeddings.{m}.proj.weight" not in state):  # raw images first
        spec, image_size, patch_size = _spec(mod, state, keys, dim, report, image_size, patch_size)
        if spec.name in specs:
            raise ValueError(f"4M modalities {[m for m, n in names.items() if n == spec.name] + [mod]} both become "
                             f"{spec.name!r}")
        names[mod], specs[spec.name] = spec.name, spec
    if image_size is None:
        raise ValueError("4M: no modality tells the image size (no raw image, no <name>@<size>)")
    config = FourMConfig(
        dim=dim, encoder_depth=depth["encoder"], decoder_depth=depth["decoder"], num_heads=heads, mlp_ratio=ratio,
        mlp="swiglu" if swiglu else "gelu", bias="encoder.0.attn.qkv.bias" in state,
        qk_norm="encoder.0.attn.q_norm.weight" in state,
        num_register_tokens=state["register_tokens"].shape[1] if "register_tokens" in state else 0,
        patch_size=patch_size or 16, image_size=image_size,
        inputs=tuple(names[m] for m in _modalities(state, "encoder")),
        outputs=tuple(names[m] for m in _modalities(state, "decoder")),
        tie_output=_tied(state), custom_modalities=specs)
    return config, names


def _tied(state: Mapping[str, Tensor]) -> bool:
    """Whether every decoder's ``to_logits`` equals its ``token_emb`` (a training checkpoint; the hub's
    ``FM`` wrapper keeps them apart). Tensors without values are taken as tied (4M's default)."""
    for key, t in state.items():
        if key.endswith(".to_logits.weight") and not t.is_meta:
            emb = state[key.replace("to_logits", "token_emb")]
            if not torch.equal(t, emb):
                return False
    return True


def map_fourm_keys(state: Mapping[str, Tensor], model: FourM, names: Mapping[str, str],
                   report: ConversionReport) -> dict[str, Tensor]:
    """Our state dict from the official one (filling ``report.mapped`` / ``dropped`` / ``missing``)."""
    ours = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = names[parts[1]]
        target = ".".join(parts)
        if target not in ours:
            if target.endswith(".bias") and target[: -len("bias")] + "weight" in ours:
                if not tensor.is_meta and bool(tensor.abs().max() > 0):
                    raise ValueError(f"4M {key}: a non-zero bias where our no-bias norm has none")
                report.dropped[key] = "the zero bias buffer of a no-bias LayerNorm"
                continue
            raise ValueError(f"4M {key}: no place for it in our model (unexpected official key)")
        if tuple(ours[target].shape) != tuple(tensor.shape):
            raise ValueError(f"4M {key}: shape {tuple(tensor.shape)}, ours {target} is {tuple(ours[target].shape)}")
        report.mapped[key] = target
        out[target] = tensor
    report.missing = [k for k in ours if k not in out]
    return out


def fourm_to_ours(state: Mapping[str, Tensor], num_heads: int | None = None) -> tuple[FourM, ConversionReport]:
    """Our `FourM` (eval mode) holding an official 4M state dict's weights, and the conversion report."""
    if not is_fourm_state(state):
        raise ValueError("not a 4M state dict (no decoder_proj_context / encoder_embeddings keys)")
    report = ConversionReport("official 4M (apple/ml-4m)", "multimae 4M")
    config, names = infer_fourm_config(state, num_heads, report)
    meta = any(t.is_meta for t in state.values())
    with torch.device("meta") if meta else torch.device("cpu"):
        model = FourM(config)
    weights = map_fourm_keys(state, model, names, report)
    if report.missing:
        raise ValueError(f"4M: the checkpoint does not fill {report.missing}")
    if not meta:
        model.load_state_dict(weights, strict=True)
    report.notes.append("modalities: " + ", ".join(f"{o} -> {n}" for o, n in names.items()))
    return model.eval(), report
