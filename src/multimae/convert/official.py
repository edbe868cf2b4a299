"""The official MultiMAE / MultiViT checkpoint layout (EPFL-VILAB/MultiMAE): architecture
inference and loading.

Our `MultiMAE` uses the official key names, so the tensors map one to one; the work is reading the
architecture off the tensors:

===========================  ===============================================================
setting                      read from
===========================  ===============================================================
encoder width D, tokens G    ``global_tokens`` (1, G, D)
encoder depth, MLP ratio     number of ``encoder.<i>`` blocks; ``encoder.0.mlp.fc1`` (D*r, D)
inputs and their order       ``input_adapters.<name>.*`` in state-dict order
patch size P                 kernel of the dense input projections (``proj.weight`` (D, C, P, P))
semseg stride, classes       its projection kernel P / stride; ``class_emb.weight`` (K, E)
image size                   positional table ``pos_emb`` (1, D, h, w): h * P
outputs, decoder width/depth ``output_adapters.<name>``: ``mask_token`` (1, 1, E), blocks
output channels              ``out_proj.weight`` (C * (P / stride)^2, E)
===========================  ===============================================================

The number of attention heads is not stored in the weights. It is taken, in this order, from an
explicit argument, from the official training arguments saved in the checkpoint, or from the
official convention (encoder: 64-wide heads, as in every official size; decoder: 8 heads, the
official pre-training default); the report says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from multimae.convert.report import ConversionReport
from multimae.layers.pos_embed import build_2d_sincos_pos_embed
from multimae.model.config import DecoderConfig, EncoderConfig, MultiMAEConfig
from multimae.model.multimae import MultiMAE
from multimae.modalities.registry import BUILTIN_MODALITIES
from multimae.modalities.spec import ModalitySpec

ModelT = TypeVar("ModelT", bound=torch.nn.Module)
SOURCE_FORMAT = "official MultiMAE (MultiViT key layout)"
ENCODER_HEAD_DIM = 64  # every official encoder size (tiny 192/3 ... large 1024/16)
DECODER_HEADS = 8  # official pre-training default (decoder_num_heads)
SPATIAL_DECODER_KEYS = ("mask_token", "pos_emb", "decoder.q.weight", "out_proj.weight", "proj_context.weight")
# Official encoder constructor names -> number of heads (for checkpoints that carry `args.model`).
_OFFICIAL_HEADS = {"tiny": 3, "small": 6, "base": 12, "large": 16}


def sub_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def child_names(state: Mapping[str, Tensor], prefix: str) -> list[str]:
    """Names of the direct children under ``prefix``, in state-dict order."""
    return list(dict.fromkeys(k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)))


def num_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of numbered children ``<prefix><i>.*`` (checks they are 0..n-1)."""
    found = sorted({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    if found != list(range(len(found))):
        raise ValueError(f"blocks under {prefix!r} are not numbered 0..n-1: {found}")
    return len(found)


def _require(state: Mapping[str, Tensor], keys: tuple[str, ...], where: str) -> None:
    absent = [k for k in keys if k not in state]
    if absent:
        raise ValueError(f"{where}: expected tensors {absent} are absent; not the official layout")


def hints_from_args(args: Mapping[str, Any]) -> dict[str, int]:
    """Head counts from the official training arguments stored in a checkpoint (``ckpt["args"]``)."""
    hints: dict[str, int] = {}
    model = str(args.get("model", ""))
    for size, heads in _OFFICIAL_HEADS.items():
        if model.endswith(f"_{size}"):
            hints["num_heads"] = heads
    if isinstance(args.get("decoder_num_heads"), int):
        hints["decoder_num_heads"] = int(args["decoder_num_heads"])
    return hints


def _heads(dim: int, given: int | None, hint: int | None, convention: int, what: str, by_dim: bool,
           report: ConversionReport) -> int:
    if given is not None:
        heads, how = given, "given"
    elif hint is not None:
        heads, how = hint, "from the checkpoint's training arguments"
    else:
        heads = dim // convention if by_dim else convention
        how = (f"not stored in the weights: official convention of {convention}-wide heads" if by_dim
               else f"not stored in the weights: official default of {convention} heads")
        if heads < 1 or dim % heads:
            raise ValueError(
                f"{what} width {dim} does not fit the official head convention; pass the number of heads "
                f"({'num_heads' if what == 'encoder' else 'decoder_num_heads'})"
            )
    if dim % heads:
        option = "--num-heads" if what == "encoder" else "--decoder-num-heads"
        raise ValueError(f"{what} width {dim} is not divisible by {heads} heads (CLI: {option})")
    report.infer(f"{what} heads", heads, how)
    return heads


# ------------------------------------------------------------------------------ modalities


def _modality(name: str, kind: str, channels: int, stride: int, report: ConversionReport, **extra: Any
              ) -> tuple[dict[str, Any] | None, ModalitySpec | None]:
    """(overrides of a built-in spec, or a custom spec) for a modality found in a checkpoint."""
    builtin = BUILTIN_MODALITIES.get(name)
    if builtin is None:
        spec = ModalitySpec(name=name, kind=kind, num_channels=channels, stride=stride,  # type: ignore[arg-type]
                            loss="cross_entropy" if kind == "categorical" else "mse", **extra)
        report.notes.append(
            f"modality {name!r} is not built in: described as {kind}, {channels} "
            f"{'classes' if kind == 'categorical' else 'channels'}, no normalisation (feed it as the model expects)"
        )
        return None, spec
    if builtin.kind != kind:
        raise ValueError(f"checkpoint modality {name!r} is {kind}, but the built-in {name!r} is {builtin.kind}")
    wanted = {"num_channels": channels, "stride": stride, **extra}
    overrides = {k: v for k, v in wanted.items() if getattr(builtin, k) != v}
    return overrides or None, None


def _ordered(names: list[str], keys_sorted: bool, given: Sequence[str] | None = None) -> list[str]:
    """``given`` (checked to name exactly ``names``), else ``names`` as found, or, when the file
    sorted its keys (safetensors), built-ins first in registry order (rgb, depth, semseg, ...; the
    official order), then the others."""
    if given is not None:
        if sorted(given) != sorted(names):
            raise ValueError(f"input order {list(given)} must name each of the checkpoint's inputs {sorted(names)} once")
        return list(given)
    if not keys_sorted:
        return names
    builtin = [n for n in BUILTIN_MODALITIES if n in names]
    return builtin + [n for n in names if n not in builtin]


def _pos_grid(pos: Tensor, where: str) -> int:
    if pos.dim() != 4 or pos.shape[0] != 1:
        raise ValueError(f"{where}.pos_emb: expected shape (1, D, h, w), got {tuple(pos.shape)}")
    h, w = pos.shape[-2:]
    if h != w:
        raise ValueError(f"{where}.pos_emb: non-square positional table {h}x{w} is not supported")
    return int(h)


# ------------------------------------------------------------------------------ inference


def infer_config(
    state: Mapping[str, Tensor],
    *,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    hints: Mapping[str, int] | None = None,
    report: ConversionReport | None = None,
    input_order: Sequence[str] | None = None,
) -> MultiMAEConfig:
    """The `MultiMAEConfig` of an official-layout state dict (see the module docstring);
    ``input_order`` overrides the order of the inputs (see `_ordered`).

    Only the spatial (pre-training) decoders among ``output_adapters`` become outputs; other
    output adapters (fine-tuning heads) are left to the caller.
    """
    hints = hints or {}
    rep = report if report is not None else ConversionReport(SOURCE_FORMAT, "multimae")
    _require(state, ("global_tokens", "encoder.0.norm1.weight", "encoder.0.attn.qkv.weight",
                     "encoder.0.mlp.fc1.weight"), "encoder")
    tokens = state["global_tokens"]
    if tokens.dim() != 3:
        raise ValueError(f"global_tokens: expected shape (1, G, D), got {tuple(tokens.shape)}")
    D, G = int(tokens.shape[2]), int(tokens.shape[1])
    depth = num_blocks(state, "encoder.")
    rep.infer("encoder width", D, "global_tokens")
    rep.infer("encoder depth", depth, "encoder.<i> blocks")
    rep.infer("global tokens", G, "global_tokens")
    heads = _heads(D, num_heads, hints.get("num_heads"), ENCODER_HEAD_DIM, "encoder", True, rep)

    keys_sorted = list(state) == sorted(state)
    inputs = _ordered(child_names(state, "input_adapters."), keys_sorted, input_order)
    if not inputs:
        raise ValueError("no input_adapters.* tensors: not an official MultiMAE / MultiViT checkpoint")
    adapters = {n: sub_state(state, f"input_adapters.{n}.") for n in inputs}
    P, grid = _patch_and_grid(adapters, rep)

    decoders = {n: sub_state(state, f"output_adapters.{n}.")
                for n in _ordered(child_names(state, "output_adapters."), keys_sorted)}
    spatial = {n: a for n, a in decoders.items() if all(k in a for k in SPATIAL_DECODER_KEYS)}
    dec_cfg = _decoder_config(spatial, inputs, D, decoder_num_heads, hints, rep) if spatial else DecoderConfig()
    out_channels = _output_channels(spatial, adapters, P, grid)
    overrides, custom = _modality_specs(adapters, out_channels, P, rep)
    order = ("as given" if input_order is not None else
             "built-in order: the file stores its keys sorted, so the original order is unknown (set it with "
             "--inputs / input_order)" if keys_sorted else "checkpoint order")
    rep.infer("inputs", ", ".join(inputs), f"input_adapters, {order}")
    rep.infer("outputs", ", ".join(spatial) or "none", "output_adapters with a MultiMAE decoder")

    encoder = EncoderConfig(dim=D, depth=depth, num_heads=heads,
                            mlp_ratio=state["encoder.0.mlp.fc1.weight"].shape[0] / D,
                            qkv_bias="encoder.0.attn.qkv.bias" in state, num_global_tokens=G,
                            patch_size=P, image_size=grid * P)
    return MultiMAEConfig(encoder=encoder, decoder=dec_cfg, inputs=tuple(inputs), outputs=tuple(spatial),
                          modality_overrides=overrides, custom_modalities=custom)


def _patch_and_grid(adapters: Mapping[str, Mapping[str, Tensor]], rep: ConversionReport) -> tuple[int, int]:
    """(patch size P, side of the square token grid) from the input adapters."""
    dense_kernels = {n: int(a["proj.weight"].shape[-1]) for n, a in adapters.items() if "class_emb.weight" not in a}
    if len(set(dense_kernels.values())) > 1:
        raise ValueError(f"dense inputs with different patch sizes are not supported: {dense_kernels}")
    if dense_kernels:
        P = next(iter(dense_kernels.values()))
        rep.infer("patch size", P, f"input_adapters.{next(iter(dense_kernels))}.proj kernel")
    else:
        name = next(iter(adapters))
        stride = BUILTIN_MODALITIES[name].stride if name in BUILTIN_MODALITIES else 1
        P = int(adapters[name]["proj.weight"].shape[-1]) * stride
        rep.infer("patch size", P, f"{name} projection kernel x its assumed stride {stride} (no dense input)")
    grids = {n: _pos_grid(a["pos_emb"], f"input_adapters.{n}") for n, a in adapters.items()}
    if len(set(grids.values())) > 1:
        raise ValueError(f"input positional tables have different grids: {grids}")
    grid = next(iter(grids.values()))
    rep.infer("image size", grid * P, f"{grid}x{grid} positional grid x patch {P}")
    for name, a in adapters.items():
        kernel = int(a["proj.weight"].shape[-1])
        if P % kernel:
            raise ValueError(f"input_adapters.{name}.proj kernel {kernel} does not divide the patch size {P}")
    return P, grid


def _output_channels(spatial: Mapping[str, Mapping[str, Tensor]], adapters: Mapping[str, Mapping[str, Tensor]],
                     P: int, grid: int) -> dict[str, tuple[int, int]]:
    """``{output: (channels, stride)}`` from each decoder's ``out_proj`` (C * (P / stride)^2 outputs)."""
    out = {}
    for name, a in spatial.items():
        stride = BUILTIN_MODALITIES[name].stride if name in BUILTIN_MODALITIES else 1
        if "class_emb.weight" in adapters.get(name, {}):  # a categorical input: its stride is known
            stride = P // int(adapters[name]["proj.weight"].shape[-1])
        per_token = int(a["out_proj.weight"].shape[0])
        Pm = P // stride
        if P % stride or per_token % (Pm * Pm):
            raise ValueError(f"output_adapters.{name}.out_proj: {per_token} outputs per token do not fit "
                             f"patch {P} at stride {stride}")
        out[name] = (per_token // (Pm * Pm), stride)
        if _pos_grid(a["pos_emb"], f"output_adapters.{name}") != grid:
            raise ValueError(f"output_adapters.{name}.pos_emb grid differs from the inputs' {grid}x{grid}")
    return out


def _modality_specs(adapters: Mapping[str, Mapping[str, Tensor]], out_channels: Mapping[str, tuple[int, int]],
                    P: int, rep: ConversionReport) -> tuple[dict[str, dict[str, Any]], dict[str, ModalitySpec]]:
    """(overrides of built-in specs, custom specs) for every input and output modality."""
    overrides: dict[str, dict[str, Any]] = {}
    custom: dict[str, ModalitySpec] = {}

    def add(name: str, result: tuple[dict[str, Any] | None, ModalitySpec | None]) -> None:
        if result[0]:
            overrides[name] = {**overrides.get(name, {}), **result[0]}
        if result[1] is not None:
            custom[name] = result[1]

    for name, a in adapters.items():
        stride = P // int(a["proj.weight"].shape[-1])
        if "class_emb.weight" in a:
            rows, E = a["class_emb.weight"].shape
            classes, ignore = int(rows), None
            if name in out_channels:
                K = out_channels[name][0]
                if rows == K + 1:
                    classes, ignore = K, K
                    rep.notes.append(f"{name}: the class embedding has a padding row; id {K} marks unlabelled pixels")
                elif rows != K:
                    raise ValueError(f"{name}: class embedding has {rows} rows but the decoder predicts {K} classes")
            rep.infer(f"{name} classes", classes, f"input_adapters.{name}.class_emb")
            add(name, _modality(name, "categorical", classes, stride, rep, class_emb_dim=int(E), ignore_index=ignore))
        else:
            channels = int(a["proj.weight"].shape[1])
            if name in out_channels and out_channels[name][0] != channels:
                raise ValueError(f"{name}: the input has {channels} channels but its decoder predicts "
                                 f"{out_channels[name][0]}")
            add(name, _modality(name, "dense", channels, stride, rep))
    for name, (channels, stride) in out_channels.items():
        if name not in adapters:
            builtin = BUILTIN_MODALITIES.get(name)
            kind = "categorical" if builtin is not None and builtin.is_categorical else "dense"
            add(name, _modality(name, kind, channels, stride, rep))
    return overrides, custom


def _decoder_config(spatial: Mapping[str, Mapping[str, Tensor]], inputs: list[str], enc_dim: int,
                    decoder_num_heads: int | None, hints: Mapping[str, int], rep: ConversionReport) -> DecoderConfig:
    """One `DecoderConfig` shared by every decoder (they must agree)."""
    found = {}
    for name, a in spatial.items():
        E = int(a["mask_token"].shape[-1])
        depth = num_blocks(a, "decoder_transformer.")
        ratio = a["mlp.fc1.weight"].shape[0] / E
        if depth and a["decoder_transformer.0.mlp.fc1.weight"].shape[0] / E != ratio:
            raise ValueError(f"output_adapters.{name}: different MLP ratios in the decoder are not supported")
        if a["proj_context.weight"].shape[1] != enc_dim:
            raise ValueError(f"output_adapters.{name}.proj_context expects width {a['proj_context.weight'].shape[1]}, "
                             f"the encoder has {enc_dim}")
        context = child_names(a, "task_embeddings.")
        if set(context) != set(inputs):
            raise ValueError(f"output_adapters.{name}: context modalities {context} differ from the inputs {inputs}; "
                             "only decoders that know every input are supported")
        found[name] = (E, depth, ratio, "decoder.q.bias" in a)
    if len(set(found.values())) > 1:
        raise ValueError(f"decoders of different sizes are not supported: {found}")
    E, depth, ratio, bias = next(iter(found.values()))
    rep.infer("decoder width", E, "mask_token")
    rep.infer("decoder depth", depth, "decoder_transformer.<i> blocks")
    heads = _heads(E, decoder_num_heads, hints.get("decoder_num_heads"), DECODER_HEADS, "decoder", False, rep)
    return DecoderConfig(dim=E, depth=depth, num_heads=heads, mlp_ratio=ratio, qkv_bias=bias)


# ------------------------------------------------------------------------------ loading


def build_model(make: Callable[[], ModelT], state: Mapping[str, Tensor]) -> ModelT:
    """``make()``; when ``state`` holds every one of the model's tensors, the model is built
    without initialising its weights (they are all about to be overwritten: seconds saved for a
    ViT-B)."""
    with torch.device("meta"):
        model = make()
    if set(model.state_dict()) <= set(state):
        return model.to_empty(device="cpu")
    return make()


def load_matching(model: torch.nn.Module, state: Mapping[str, Tensor], report: ConversionReport,
                  unused_reason: str) -> None:
    """Copy every tensor of ``state`` whose key the model has (shapes checked); the others go to
    ``report.dropped`` with ``unused_reason``; model keys left unfilled go to ``report.missing``."""
    target = model.state_dict()
    usable = {}
    for key, value in state.items():
        if key not in target:
            report.dropped.setdefault(key, unused_reason)
            continue
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} does not match the inferred model's "
                             f"{tuple(target[key].shape)}")
        usable[key] = value
        report.mapped.setdefault(key, key)
    model.load_state_dict(usable, strict=False)
    report.missing.extend(k for k in target if k not in usable and k not in report.missing)


def note_positional_tables(model: torch.nn.Module, report: ConversionReport) -> None:
    """Say whether the loaded positional tables are the fixed sin-cos ones or learned values."""
    learned = []
    for name, param in model.named_parameters():
        if name.endswith("pos_emb"):
            D, h, w = param.shape[1:]
            if not torch.allclose(param.detach().float(), build_2d_sincos_pos_embed(D, h, w), atol=1e-4):
                learned.append(name)
    if learned:
        report.notes.append(f"positional tables that are not the sin-cos table of their grid (learned, or resized "
                            f"from another grid as the official fine-tuning does): {learned}")


def official_to_multimae(
    state: Mapping[str, Tensor],
    *,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    args: Mapping[str, Any] | None = None,
    input_order: Sequence[str] | None = None,
) -> tuple[MultiMAE, ConversionReport]:
    """Build our `MultiMAE` for an official-layout state dict and load it (shapes checked).

    Args:
        state: official key layout (pre-training MultiMAE, or MultiViT with fine-tuning heads).
        num_heads, decoder_num_heads: override the head counts (not stored in the weights).
        args: the official training arguments (``ckpt["args"]``), used for head counts.
        input_order: the order of the input modalities (see `infer_config`).
    """
    report = ConversionReport(SOURCE_FORMAT, "multimae")
    cfg = infer_config(state, num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                       hints=hints_from_args(args or {}), report=report, input_order=input_order)
    model = build_model(lambda: MultiMAE(cfg), state)
    load_matching(model, state, report, "not part of a pre-training MultiMAE (fine-tuning head)")
    note_positional_tables(model, report)
    report.notes.append(
        "positional tables are resized at run time for other input sizes as the official code does "
        "(bicubic for patched inputs, bilinear for semseg and in the decoders)"
    )
    return model.eval(), report
