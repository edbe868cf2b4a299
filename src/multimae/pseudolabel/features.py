"""Feature labelers: a global embedding per image, the ``vector`` modality 4M predicts for
retrieval (its DINOv2 / ImageBind global features).

Each returns, per image, a float32 ``(1, C)`` array: one vector of the backbone's width.

- `HFFeatureLabeler` (``hf-features``): any Hugging Face vision backbone loaded with ``AutoModel``
  by hub name or from a local directory (DINOv2 by default, as 4M); the vector is the model's
  ``pooler_output`` when it has one (DINOv2: the normalised class token), else its class token or
  the mean of its last hidden states (setting ``pooling``).
- `EncoderFeatureLabeler` (``encoder``): our own pre-trained encoder (a run folder or checkpoint
  of `multimae pretrain` or `multimae finetune`): the image alone, every patch visible, at the
  model's image size; the vector is its last global token (or the mean of its patch tokens). What
  the built-in world uses, so that nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from multimae.modalities.registry import DEFAULT_FEATURE_MODALITY, DEFAULT_IMAGE_MODALITY
from multimae.pseudolabel.base import InputSize, Labeler, resize_images, run_fixed_batches
from multimae.pseudolabel.hf import HFLabeler

HF_POOLINGS = ("auto", "cls", "mean")
ENCODER_POOLINGS = ("global", "mean")


def _pooling(name: str, settings: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    pooling = settings.pop("pooling", known[0])
    if pooling not in known:
        raise ValueError(f"labeler {name!r}: pooling must be one of {known}, got {pooling!r}")
    if settings:
        raise ValueError(f"labeler {name!r}: unknown settings {sorted(settings)} (known: pooling)")
    return {"pooling": pooling}


class FeatureLabeler(Labeler):
    """Common part of the feature labelers (their width, `feature_dim`, is known once loaded)."""

    modality = DEFAULT_FEATURE_MODALITY
    per_pixel = False


class HFFeatureLabeler(HFLabeler, FeatureLabeler):
    """Any transformers vision backbone (``AutoModel``). Settings: ``resolution``, ``pooling``
    (``auto``: ``pooler_output`` when the model gives one, else the class token; ``cls``; ``mean``)."""

    name = "hf-features"
    default_model = "facebook/dinov2-base"
    description = "global features of any transformers vision backbone (DINOv2-B by default, as 4M)"
    auto_class = "AutoModel"

    def check_more_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return _pooling(self.name, settings, HF_POOLINGS)

    @property
    def feature_dim(self) -> int | None:
        if not hasattr(self, "model"):
            return None
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])

    def forward(self, batch: Tensor) -> Tensor:
        out = self.model(pixel_values=batch)
        pooling = self.settings["pooling"]
        pooled = getattr(out, "pooler_output", None)
        if pooling == "auto" and pooled is not None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # convolutional backbones: (B, C, h, w)
            return hidden.mean((2, 3))
        return hidden[:, 0] if pooling in ("auto", "cls") else hidden.mean(1)

    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        vectors = run_fixed_batches(self.prepare(images), self.forward, self.batch_size)
        return [v.float()[None].cpu().numpy() for v in vectors]


class EncoderFeatureLabeler(FeatureLabeler):
    """Our own encoder: ``model`` is a run folder or checkpoint. Setting ``pooling``: ``global``
    (its last global token; the patch-token mean for an encoder without one) or ``mean``."""

    name = "encoder"
    default_model = None
    description = "global features of a multimae run's encoder (give --model RUN)"

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return _pooling(self.name, settings, ENCODER_POOLINGS)

    def load(self) -> None:
        from multimae.tasks.loading import load_run_model
        from multimae.model.encoder import encoder_of

        try:
            self.model = load_run_model(self.model_name).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ValueError(f"labeler {self.name!r}: cannot load {self.model_name} as a multimae run: {err}") from err
        self.encoder = encoder_of(self.model)
        if DEFAULT_IMAGE_MODALITY not in self.encoder.input_specs:
            raise ValueError(f"labeler {self.name!r}: the encoder of {self.model_name} takes no "
                             f"{DEFAULT_IMAGE_MODALITY} input (inputs: {list(self.encoder.input_specs)})")
        side = int(self.encoder.config.image_size)
        self.input_size = InputSize(fixed=(side, side))

    @property
    def feature_dim(self) -> int | None:
        return int(self.encoder.config.dim) if hasattr(self, "encoder") else None

    def forward(self, batch: Tensor) -> Tensor:
        from multimae.tasks.probe import encoder_features

        return encoder_features(self.model, batch, self.settings["pooling"], batch_size=len(batch))

    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        resized = [x.float() / 255.0 for x in resize_images(images, self.input_size)]
        vectors = run_fixed_batches(resized, self.forward, self.batch_size)
        return [v.float()[None].cpu().numpy() for v in vectors]


LABELERS: tuple[type[Labeler], ...] = (HFFeatureLabeler, EncoderFeatureLabeler)
