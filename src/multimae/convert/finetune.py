"""Official fine-tuning checkpoints (MultiViT + one head) -> our `FineTuneModel`, and its
serialisation in our own files.

An official fine-tuned checkpoint holds the encoder (official layout, see `official`) and one
head under ``output_adapters.<name>``: a linear classifier (``norm``, ``head``), a ConvNeXt
segmentation head (``proj_dec``, ``blocks``, ``final_layer``) or a DPT head (``act_*``,
``scratch``, ``head``; its reassemble and projection tensors are stored twice, under alias names,
which map onto one tensor each). Head sizes are read from the tensors
(`multimae.model.heads.head_config_from_state_dict`); what the weights do not store is taken from
the official training arguments when the checkpoint has them, else from the official defaults,
and reported:

* which modalities' tokens a dense head reads (the official ``decoder_main_tasks``, default rgb):
  their number is the head's input width / the encoder width;
* the encoder blocks the DPT head reads (official: 2, 5, 8, 11 of 12: `default_hooks`);
* the classifier's pooling (official default: mean over all tokens, the global one included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from multimae.convert.official import (
    SOURCE_FORMAT, SPATIAL_DECODER_KEYS, build_model, child_names, hints_from_args, infer_config, load_matching,
    note_positional_tables,
)
from multimae.convert.report import ConversionReport
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.config import MultiMAEConfig
from multimae.model.fourm.config import FourMConfig
from multimae.model.finetune import FineTuneModel
from multimae.model.heads import (
    DPT_KEY_ALIASES, ConvNeXtHeadConfig, DPTHeadConfig, HeadConfig, LinearHeadConfig, canonical_dpt_state,
    default_hooks, head_config_from_state_dict,
)

HEAD_KINDS: dict[str, type] = {"linear": LinearHeadConfig, "convnext": ConvNeXtHeadConfig, "dpt": DPTHeadConfig}


def head_names(state: Mapping[str, Tensor]) -> list[str]:
    """Output adapters that are not MultiMAE decoders (fine-tuning heads)."""
    names = child_names(state, "output_adapters.")
    return [n for n in names if not all(f"output_adapters.{n}.{k}" in state for k in SPATIAL_DECODER_KEYS)]


def _head_input_width(state: Mapping[str, Tensor], prefix: str) -> int | None:
    for key in ("proj_dec.weight", "act_1_postprocess.0.weight", "act_postprocess.0.0.weight"):
        if prefix + key in state:
            return int(state[prefix + key].shape[1])
    return None


def _main_tasks(args: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = args.get("decoder_main_tasks")
    if isinstance(value, str):
        return tuple(t for t in value.split("-") if t)
    if isinstance(value, (list, tuple)) and value:
        return tuple(str(t) for t in value)
    return None


def infer_head(
    state: Mapping[str, Tensor],
    name: str,
    inputs: Sequence[str],
    enc_dim: int,
    enc_depth: int,
    report: ConversionReport,
    *,
    args: Mapping[str, Any] | None = None,
    head_modalities: Sequence[str] | None = None,
    hooks: Sequence[int] | None = None,
) -> HeadConfig:
    """The config of the head under ``output_adapters.<name>``, with the unstored settings reported."""
    args = args or {}
    prefix = f"output_adapters.{name}."
    width = _head_input_width(state, prefix)
    image = DEFAULT_IMAGE_MODALITY  # the official fine-tuning heads read the rgb tokens unless told otherwise
    modalities: tuple[str, ...] = (image,)
    if width is not None:
        if width % enc_dim:
            raise ValueError(f"head {name!r} takes {width} features, not a multiple of the encoder width {enc_dim}")
        count = width // enc_dim
        if head_modalities is not None:
            modalities, how = tuple(head_modalities), "given"
        elif _main_tasks(args) is not None:
            modalities, how = _main_tasks(args), "from the checkpoint's decoder_main_tasks"  # type: ignore[assignment]
        else:
            modalities = (image,) if count == 1 and image in inputs else tuple(inputs[:count])
            how = (f"not stored in the weights: official default ({image})" if modalities == (image,)
                   else "not stored in the weights: the first inputs")
        if len(modalities) != count or any(m not in inputs for m in modalities):
            raise ValueError(f"head {name!r} reads {count} modalities' tokens; {list(modalities)} does not fit the "
                             f"inputs {list(inputs)}")
        report.infer(f"{name} head reads", ", ".join(modalities), how)
    block_hooks = tuple(hooks) if hooks is not None else default_hooks(enc_depth) if enc_depth >= 4 else (0, 1, 2, 3)
    config = head_config_from_state_dict(state, prefix, modalities, block_hooks)
    if isinstance(config, DPTHeadConfig):
        report.infer(f"{name} head hooks", list(config.hooks),
                     "given" if hooks is not None else "not stored in the weights: official 2, 5, 8, 11 of 12 blocks")
    if isinstance(config, LinearHeadConfig):
        mean = args.get("use_mean_pooling", True)
        config = dataclasses.replace(config, pooling="mean" if mean else "global")
        report.infer(f"{name} head pooling", config.pooling,
                     "from the checkpoint's use_mean_pooling" if "use_mean_pooling" in args
                     else "not stored in the weights: official default (mean of all tokens)")
    kind = next(k for k, t in HEAD_KINDS.items() if isinstance(config, t))
    report.infer(f"{name} head", kind, f"output_adapters.{name} tensors")
    return config


def finetune_to_model(
    state: Mapping[str, Tensor],
    *,
    num_heads: int | None = None,
    args: Mapping[str, Any] | None = None,
    head_modalities: Sequence[str] | None = None,
    hooks: Sequence[int] | None = None,
    input_order: Sequence[str] | None = None,
) -> tuple[FineTuneModel, ConversionReport]:
    """Our `FineTuneModel` for an official fine-tuned checkpoint, loaded (every key accounted for)."""
    args = args or {}
    names = head_names(state)
    if len(names) != 1:
        raise ValueError(f"expected one fine-tuning head among output_adapters, found {names}")
    name = names[0]
    report = ConversionReport(f"{SOURCE_FORMAT} with a fine-tuning head", "multimae (FineTuneModel)")
    encoder_state = {k: v for k, v in state.items() if not k.startswith("output_adapters.")}
    cfg = infer_config(encoder_state, num_heads=num_heads, hints=hints_from_args(args), report=report,
                       input_order=input_order)
    head = infer_head(state, name, cfg.inputs, cfg.encoder.dim, cfg.encoder.depth, report, args=args,
                      head_modalities=head_modalities, hooks=hooks)
    model = build_finetune(cfg, head, name, state)
    prefix = f"output_adapters.{name}."
    canonical = canonical_dpt_state(state, prefix) if isinstance(head, DPTHeadConfig) else dict(state)
    load_matching(model, canonical, report, "not part of the model")
    for key in state:
        alias = next((a for a in DPT_KEY_ALIASES if key.startswith(prefix + a)), None)
        if alias is not None and isinstance(head, DPTHeadConfig):
            report.mapped[key] = prefix + DPT_KEY_ALIASES[alias] + key[len(prefix + alias):]
    note_positional_tables(model, report)
    if report.dropped or report.missing:
        raise ValueError(f"fine-tuned checkpoint does not match the inferred model: unused "
                         f"{list(report.dropped)[:5]}, missing {report.missing[:5]}")
    return model.eval(), report


def build_finetune(encoder: MultiMAEConfig, head: HeadConfig, head_name: str,
                   state: Mapping[str, Tensor] | None = None) -> FineTuneModel:
    """``FineTuneModel`` for an encoder config (a `MultiMAEConfig` without outputs) and a head."""
    specs = encoder.modality_specs()

    def make() -> FineTuneModel:
        return FineTuneModel(encoder.encoder, {n: specs[n] for n in encoder.inputs}, head, head_name)

    return build_model(make, state or {})  # type: ignore[return-value]


def head_to_dict(model: FineTuneModel) -> dict[str, Any]:
    """What our files store about the head: its name, kind and config."""
    config = model.head_config
    kind = next(k for k, t in HEAD_KINDS.items() if isinstance(config, t))
    return {"name": model.head_name, "kind": kind, "config": dataclasses.asdict(config)}


def head_from_dict(data: Mapping[str, Any]) -> tuple[str, HeadConfig]:
    """(head name, head config) from `head_to_dict`'s output."""
    kind = data.get("kind")
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; known: {sorted(HEAD_KINDS)}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()}
    return str(data["name"]), HEAD_KINDS[kind](**fields)


def encoder_config(model: FineTuneModel) -> MultiMAEConfig | FourMConfig:
    """The encoder part of a `FineTuneModel` as a `MultiMAEConfig` without outputs (a `FourMConfig`
    without outputs for a 4M encoder)."""
    from multimae.modalities.registry import BUILTIN_MODALITIES

    overrides: dict[str, dict[str, Any]] = {}
    custom = {}
    for name, spec in model.input_specs.items():
        builtin = BUILTIN_MODALITIES.get(name)
        if builtin is None:
            custom[name] = spec
            continue
        changed = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                   if getattr(spec, f.name) != getattr(builtin, f.name)}
        if changed:
            overrides[name] = changed
    config = model.backbone.config
    if isinstance(config, FourMConfig):
        return dataclasses.replace(config, inputs=tuple(model.input_specs), outputs=(), modality_overrides=overrides,
                                   custom_modalities=custom)
    return MultiMAEConfig(encoder=config, inputs=tuple(model.input_specs), outputs=(),
                          modality_overrides=overrides, custom_modalities=custom)

