"""The registry of named labelers: the built-in ones (`multimae.pseudolabel.hf`) and any added
with `register_labeler`, looked up by name or by the modality they produce."""

from __future__ import annotations

from typing import Any

from multimae.pseudolabel import features, hf
from multimae.modalities.registry import DEFAULT_FEATURE_MODALITY
from multimae.pseudolabel.base import LABELED_MODALITIES, Labeler

_REGISTRY: dict[str, type[Labeler]] = {}
DEFAULT_LABELERS = {"depth": "dpt-hybrid", "semseg": "mask2former-coco-panoptic"}  # the default tasks
# ... and the labelers of modalities that are labelled only when asked for (--tasks)
ON_REQUEST_LABELERS = {DEFAULT_FEATURE_MODALITY: features.HFFeatureLabeler.name}
NO_NORMALS = (
    "no built-in normals labeler: transformers has no surface-normal model for general scenes (its only one, "
    "Sapiens2, is trained on people). Add one with a small class: subclass multimae.pseudolabel.Labeler with "
    "modality = 'normals', decorate it with @register_labeler, then pass --import YOUR_MODULE --labeler normals=NAME"
)


def register_labeler(cls: type[Labeler]) -> type[Labeler]:
    """Class decorator adding a labeler under its ``name``."""
    if not cls.name or cls.modality not in LABELED_MODALITIES:
        raise ValueError(f"{cls.__name__} needs a name and a modality in {LABELED_MODALITIES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a labeler named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


for _builtin in (*hf.LABELERS, *features.LABELERS):
    register_labeler(_builtin)


def list_labelers() -> dict[str, type[Labeler]]:
    return dict(sorted(_REGISTRY.items()))


def get_labeler(name: str) -> type[Labeler]:
    labelers = list_labelers()
    if name not in labelers:
        raise ValueError(f"unknown labeler {name!r}; known: {', '.join(labelers)}")
    return labelers[name]


def default_labeler(modality: str) -> str:
    defaults = {**DEFAULT_LABELERS, **ON_REQUEST_LABELERS}
    if modality in LABELED_MODALITIES and modality not in defaults:  # normals: no built-in model
        raise ValueError(NO_NORMALS)
    if modality not in defaults:
        raise ValueError(f"cannot pseudo-label {modality!r}: labelled modalities are {LABELED_MODALITIES}")
    return defaults[modality]


def build_labeler(modality: str, name: str | None = None, model: str | None = None, **kwargs: Any) -> Labeler:
    """The labeler ``name`` (default: the modality's default) for ``modality``, not yet loaded."""
    cls = get_labeler(name or default_labeler(modality))
    if cls.modality != modality:
        raise ValueError(f"labeler {cls.name!r} produces {cls.modality!r}, not {modality!r}")
    return cls(model, **kwargs)
