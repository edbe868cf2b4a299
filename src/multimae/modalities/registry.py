"""The built-in modalities and how a set of names becomes a set of specs.

The built-ins are an immutable table; user modalities are passed explicitly (as specs, or as
dicts of spec fields in a config) rather than by mutating a global.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from multimae.modalities.spec import ModalitySpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BUILTINS = (
    ModalitySpec(
        name="rgb", kind="dense", num_channels=3, normalization="imagenet", loss="mse",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, encoding="rgb8",
    ),
    ModalitySpec(name="depth", kind="dense", num_channels=1, normalization="robust_standardize", loss="l1",
                 metric="l1", encoding="depth16"),
    ModalitySpec(
        name="semseg", kind="categorical", num_channels=133, loss="cross_entropy", stride=4,
        class_emb_dim=64,
    ),
    ModalitySpec(name="normals", kind="dense", num_channels=3, normalization="none", loss="l1", display="normals",
                 encoding="unit_vectors8"),
    # A sentence about the picture (M3AE). Its vocabulary size and padding id come from the run's
    # tokenizer (`multimae.text.batch.spec_for`); 32 word pieces hold every caption of the world.
    ModalitySpec(name="caption", kind="tokens", num_channels=1000, loss="cross_entropy", max_length=32, pad_id=0,
                 encoding="text"),
    # 4M's sequence modalities (4M's det, 4M-21's metadata and colour palette), stored as text and tokenised
    # by the run's sequence tokenizer (`multimae tokenizer train --sequences`). Boxes are in pixels of the
    # sample's maps and follow their crops and flips; metadata and palette describe the whole picture.
    # The built-in world writes all three (`multimae.data.world.sequences`): at most 6 boxes (31 ids
    # with [EOS]), 12 metadata fields (25 ids), 4 colours (13 ids).
    ModalitySpec(name="boxes", kind="tokens", num_channels=1000, loss="cross_entropy", max_length=32, pad_id=0,
                 encoding="box_text"),
    ModalitySpec(name="metadata", kind="tokens", num_channels=1000, loss="cross_entropy", max_length=32, pad_id=0,
                 encoding="sequence_text"),
    ModalitySpec(name="palette", kind="tokens", num_channels=1000, loss="cross_entropy", max_length=16, pad_id=0,
                 encoding="sequence_text"),
    # A global embedding of the picture (4M's DINOv2 / ImageBind features): one vector, made by a
    # feature labeler (`multimae pseudolabel`); the built-in world's comes from our own pre-trained
    # encoder (the `cpu` preset's width, 192). Another labeler's width is set by the data's manifest.
    ModalitySpec(name="feature", kind="vector", num_channels=192, max_length=1, loss="mse", encoding="vectors"),
    # 4M's token maps: a map tokenizer's codes (`multimae tokenizer train`, `multimae tokenize`), one per
    # 8 x 8 pixels (the world's 64 px images -> an 8 x 8 grid) and 1,000 codes (the tok-world presets'
    # FSQ levels 8-5-5-5); token shards set both from their tokenizer.
    *(ModalitySpec(name=f"tok_{m}", kind="token_map", num_channels=1000, loss="cross_entropy", stride=8, source=m)
      for m in ("rgb", "depth", "normals", "semseg")),
    # 4M's global tokens (its DINOv2 / ImageBind embedding tokens): the `feature` vector's tokenizer codes
    # (`tok-feature`: 4 ids of 1,000 codes), read and predicted like a token map on a square table of learned
    # positions (2 x 2; 32 px per token on the world's 64 px images: token shards set both from the tokenizer).
    # Retrieval predicts it from any inputs (`multimae.retrieval`).
    ModalitySpec(name="tok_feature", kind="token_map", num_channels=1000, loss="cross_entropy", stride=32,
                 source="feature", positions="learned"),
    ModalitySpec(
        name="norm_rgb", kind="dense", num_channels=3, normalization="imagenet", loss="norm_pix_mse",
        is_input=False, source="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD,
    ),
)

BUILTIN_MODALITIES: Mapping[str, ModalitySpec] = MappingProxyType({s.name: s for s in _BUILTINS})

# Defaults that name built-ins, read by configs and command lines instead of repeating the names.
DEFAULT_IMAGE_MODALITY = "rgb"  # the photograph: what labellers read, what transfer metrics start from
DEFAULT_TEXT_MODALITY = "caption"  # the sentence about the picture: what tokenizers are trained on
DEFAULT_MAP_MODALITY = "depth"  # the map a tokenizer run tokenises when its config names none
DEFAULT_FEATURE_MODALITY = "feature"  # the global embedding feature labelers write
DEFAULT_INPUTS: tuple[str, ...] = ("rgb", "depth", "semseg")  # a pre-training model's inputs
DEFAULT_OUTPUTS: tuple[str, ...] = ("rgb", "depth", "semseg", "norm_rgb")  # ... and its outputs
# A 4M model's modalities: every map as tokens, and the caption (read and predicted alike).
FOURM_MODALITIES: tuple[str, ...] = ("tok_rgb", "tok_depth", "tok_normals", "tok_semseg", "caption")
# The modality a dense fine-tuning task predicts when its config names none, by task kind.
DEFAULT_TASK_TARGETS: Mapping[str, str] = MappingProxyType(
    {"segmentation": "semseg", "depth": "depth", "regression": "normals"})
# Official 4M modality names (the part before "@<size>") that are ours under another name.
FOURM_NAMES: Mapping[str, str] = MappingProxyType({"tok_normal": "tok_normals", "det": "boxes",
                                                  "tok_dinov2_global": "tok_feature",
                                                  "color_palette": "palette"})
# Maps that readers and the built-in world produce but no model takes: how each is drawn.
_DATA_ONLY_DISPLAYS: Mapping[str, str] = MappingProxyType({"instance": "instances"})
# ... and how each is stored: instance ids (not checked against a class count).
_DATA_ONLY_ENCODINGS: Mapping[str, str] = MappingProxyType({"instance": "instance_ids"})


def get_modality(name: str, custom: Mapping[str, ModalitySpec] | None = None) -> ModalitySpec:
    """The spec named ``name``, looked up in ``custom`` first and then in the built-ins."""
    if custom and name in custom:
        return custom[name]
    try:
        return BUILTIN_MODALITIES[name]
    except KeyError:
        known = sorted(set(BUILTIN_MODALITIES) | set(custom or {}))
        raise ValueError(f"unknown modality {name!r}; known modalities: {known}") from None


def display_of(name: str, custom: Mapping[str, ModalitySpec] | None = None) -> str | None:
    """How a map of modality ``name`` is drawn: its spec's `ModalitySpec.drawn_as` (``custom``
    first, then the built-ins), or the way of a data-only map (instance ids); None for a name that
    neither knows (the caller then draws by `multimae.modalities.spec.default_display`)."""
    if custom and name in custom:
        return custom[name].drawn_as
    if name in BUILTIN_MODALITIES:
        return BUILTIN_MODALITIES[name].drawn_as
    return _DATA_ONLY_DISPLAYS.get(name)


def stored_modalities() -> dict[str, str]:
    """``{name: encoding}`` of every modality that data files hold, in the registry's order: the
    built-ins that are not derived from another (norm_rgb is made from rgb), by
    `ModalitySpec.stored_as`, then the data-only maps and text (``instance_ids``, ``text``). Token maps
    are not among them: they are made from maps by a tokenizer (token shards)."""
    stored = {n: s.stored_as for n, s in BUILTIN_MODALITIES.items() if s.source is None and s.kind != "token_map"}
    return {**stored, **_DATA_ONLY_ENCODINGS}


def spec_from_dict(fields: Mapping[str, Any]) -> ModalitySpec:
    """Build a spec from plain data (a YAML/JSON mapping), turning lists into tuples."""
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        return ModalitySpec(**clean)
    except TypeError as err:
        raise ValueError(f"invalid modality spec {dict(fields)!r}: {err}") from None


def resolve_modalities(
    names: Iterable[str],
    custom: Mapping[str, ModalitySpec] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ModalitySpec]:
    """Specs for ``names`` (in order), with per-modality field ``overrides`` applied.

    Example: ``resolve_modalities(["rgb", "semseg"], overrides={"semseg": {"num_channels": 40}})``.
    """
    specs: dict[str, ModalitySpec] = {}
    for name in names:
        spec = get_modality(name, custom)
        if overrides and name in overrides:
            spec = spec.replace(**overrides[name])
        specs[name] = spec
    unused = set(overrides or {}) - set(specs)
    if unused:
        raise ValueError(f"overrides given for modalities that are not used: {sorted(unused)}")
    return specs
