"""Labelers built on Hugging Face transformers: depth (DPT, Depth Anything, any depth-estimation
model), semantic segmentation (SegFormer, UperNet, any semantic-segmentation model) and
Mask2Former / MaskFormer universal segmentation reduced to per-pixel classes.

Each loads its network and image processor by hub name (online) or from a local directory with
``from_pretrained``; the processor's configuration gives the input size and normalisation, while
resizing and post-processing are done here (see `multimae.pseudolabel.base`). transformers is
imported only when a labeler loads, so the rest of multimae works without it.

Shapes: B batch, Q queries, K classes, H W image pixels, h w model-input pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from multimae.pseudolabel.base import (
    InputSize,
    Labeler,
    interpolation_mode,
    resize_argmax,
    resize_images,
    resize_map,
    run_fixed_batches,
)

INSTALL_HINT = "pip install 'multimae[pseudolabel]'"


def import_transformers() -> Any:
    """The transformers module, or an ImportError saying which extra installs it."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"the built-in pseudo-labelers need Hugging Face transformers: {INSTALL_HINT}") from err
    return transformers


def _size_field(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value else None


def processor_input_size(processor: Any, multiple: int = 1, resolution: int | None = None) -> InputSize:
    """The input geometry an image processor's configuration asks for.

    ``{height, width}`` gives a fixed size, or, with ``keep_aspect_ratio``, the shorter side at
    ``min(height, width)``; ``{shortest_edge[, longest_edge]}`` keeps the aspect ratio. Sides are
    multiples of ``multiple``, of the processor's ``ensure_multiple_of`` and of its
    ``size_divisor``. ``resolution`` replaces the shorter (or fixed square) side.
    """
    size = processor.size
    m = math.lcm(multiple, getattr(processor, "ensure_multiple_of", None) or 1,
                 getattr(processor, "size_divisor", None) or 1)
    if isinstance(size, int):
        size = {"shortest_edge": size}
    height, width = _size_field(size, "height"), _size_field(size, "width")
    short, long_max = _size_field(size, "shortest_edge"), _size_field(size, "longest_edge")
    if height and width:
        if getattr(processor, "keep_aspect_ratio", False):
            return InputSize(short=resolution or min(height, width), multiple=m)
        if resolution:
            height = width = resolution
        return InputSize(fixed=(max(m, round(height / m) * m), max(m, round(width / m) * m)), multiple=m)
    if short:
        if resolution:
            long_max = round(long_max * resolution / short) if long_max else None
            short = resolution
        return InputSize(short=short, long_max=long_max, multiple=m)
    raise ValueError(f"cannot tell the model input size from the image processor's size {size}; set 'resolution'")


class HFLabeler(Labeler):
    """Shared loading and input preparation of the transformers labelers."""

    auto_class: ClassVar[str] = ""  # the transformers Auto class that loads the network

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        resolution = settings.pop("resolution", None)
        if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
            raise ValueError(f"labeler {self.name!r}: resolution must be a positive integer, got {resolution!r}")
        rest = self.check_more_settings(settings)
        return {"resolution": resolution, **rest}

    def check_more_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        if settings:
            raise ValueError(f"labeler {self.name!r}: unknown settings {sorted(settings)} (known: resolution)")
        return {}

    def load(self) -> None:
        tf = import_transformers()
        local = Path(self.model_name).expanduser().is_dir()
        source = str(Path(self.model_name).expanduser().resolve()) if local else self.model_name
        kwargs = {"revision": self.revision} if self.revision and not local else {}
        try:
            self.processor = tf.AutoImageProcessor.from_pretrained(source, **kwargs)
            self.model = getattr(tf, self.auto_class).from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            where = "local directory" if local else "hub model (neither a local directory nor reachable?)"
            raise ValueError(f"labeler {self.name!r}: cannot load {source} as a {where}: {err}") from err
        self.model.to(self.device).eval()
        if local:
            self.model_name = source
        else:
            self.revision = getattr(self.model.config, "_commit_hash", None) or self.revision
        self.input_size = self.make_input_size()
        p = self.processor
        self.resize_mode = interpolation_mode(getattr(p, "resample", None))
        scale = float(p.rescale_factor) if getattr(p, "do_rescale", True) else 1.0
        mean = p.image_mean if getattr(p, "do_normalize", True) else 0.0
        std = p.image_std if getattr(p, "do_normalize", True) else 1.0
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).reshape(-1, 1, 1)

    def make_input_size(self) -> InputSize:
        return processor_input_size(self.processor, resolution=self.settings["resolution"])

    def prepare(self, images: list[Tensor]) -> list[Tensor]:
        """uint8 ``(3, H, W)`` -> normalised float ``(3, h, w)`` at the model's input size."""
        resized = resize_images(images, self.input_size, self.resize_mode)
        return [(x.float() * self.scale - self.mean) / self.std for x in resized]

    def info(self) -> dict[str, Any]:
        info = super().info()
        if hasattr(self, "model"):
            import transformers

            info.update(model_class=type(self.model).__name__, transformers_version=transformers.__version__,
                        input_size={k: v for k, v in vars(self.input_size).items() if v is not None})
        return info


# --------------------------------------------------------------------------- depth

DEPTH_OUTPUTS = ("auto", "disparity", "depth")


def disparity_to_depth(disparity: Tensor, max_ratio: float) -> Tensor:
    """Relative inverse depth (larger = nearer) -> depth-like ``1 / d`` (larger = farther).

    ``d`` is floored at ``max(d) / max_ratio``, so the far range (sky, ``d <= 0``) is capped at
    ``max_ratio`` times the nearest depth; non-finite values and maps without a positive value
    become NaN (invalid).
    """
    finite = torch.isfinite(disparity)
    if not finite.any() or disparity[finite].max() <= 0:
        return torch.full_like(disparity, float("nan"))
    floor = disparity[finite].max() / max_ratio
    return torch.where(finite, 1.0 / disparity.clamp_min(floor), torch.nan)


def positive_depth(depth: Tensor) -> Tensor:
    """Depth predictions with non-positive or non-finite values marked invalid (NaN)."""
    return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.nan)


class DepthLabeler(HFLabeler):
    """Any transformers depth-estimation model (``AutoModelForDepthEstimation``).

    Settings: ``output`` -- what the network predicts: ``disparity`` (relative inverse depth, as
    MiDaS DPT and relative Depth Anything), ``depth`` (metric or relative depth), or ``auto`` (from
    the model type); ``max_depth_ratio`` -- far cap when converting disparity (default 100);
    ``resolution`` -- model input size (shorter side; default: the processor's).
    The output is depth-like (larger = farther): disparity is inverted.
    """

    name = "hf-depth"
    modality = "depth"
    description = "any transformers depth-estimation model (give --model)"
    auto_class = "AutoModelForDepthEstimation"

    def check_more_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        output = settings.pop("output", "auto")
        ratio = float(settings.pop("max_depth_ratio", 100.0))
        if settings:
            raise ValueError(f"labeler {self.name!r}: unknown settings {sorted(settings)} "
                             "(known: output, max_depth_ratio, resolution)")
        if output not in DEPTH_OUTPUTS:
            raise ValueError(f"labeler {self.name!r}: output must be one of {DEPTH_OUTPUTS}, got {output!r}")
        if not ratio > 1:
            raise ValueError(f"labeler {self.name!r}: max_depth_ratio must be > 1, got {ratio}")
        return {"output": output, "max_depth_ratio": ratio}

    def load(self) -> None:
        super().load()
        self.output = self.settings["output"]
        if self.output == "auto":
            self.output = self.predicted_quantity()

    def predicted_quantity(self) -> str:
        config = self.model.config
        if config.model_type == "dpt":
            return "disparity"  # MiDaS-style relative inverse depth
        if config.model_type == "depth_anything":
            return "depth" if getattr(config, "depth_estimation_type", "relative") == "metric" else "disparity"
        if config.model_type in ("zoedepth", "depth_pro", "glpn", "prompt_depth_anything"):
            return "depth"
        raise ValueError(f"labeler {self.name!r}: does {config.model_type!r} predict depth or disparity? "
                         "Set output=depth or output=disparity")

    def make_input_size(self) -> InputSize:
        config, resolution = self.model.config, self.settings["resolution"]
        hybrid = getattr(config, "is_hybrid", False)
        if config.model_type == "dpt" and (hybrid or getattr(config, "backbone_config", None) is None):
            # DPT on a ViT (or the hybrid ViT): square inputs, sides a multiple of 32 (its fusion
            # stages halve the patch grid); the hybrid needs exactly its configured size.
            if hybrid:
                side = int(config.image_size)
                if resolution not in (None, side):
                    raise ValueError(f"labeler {self.name!r}: DPT-Hybrid takes exactly {side} px inputs, "
                                     f"not resolution={resolution}")
                size = InputSize(fixed=(side, side), multiple=32)
            else:
                base = processor_input_size(self.processor, multiple=32, resolution=resolution)
                side = base.fixed[0] if base.fixed else base.short
                size = InputSize(fixed=(side, side), multiple=32)  # type: ignore[arg-type]
            return size
        return processor_input_size(self.processor, resolution=resolution)

    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        inputs = self.prepare(images)
        preds = run_fixed_batches(inputs, lambda b: self.model(pixel_values=b).predicted_depth, self.batch_size)
        out = []
        for im, pred in zip(images, preds):
            pred = resize_map(pred.float()[None], tuple(im.shape[-2:]))[0]
            if self.output == "disparity":
                depth = disparity_to_depth(pred, self.settings["max_depth_ratio"])
            else:
                depth = positive_depth(pred)
            out.append(depth.cpu().numpy().astype(np.float32))
        return out

    def info(self) -> dict[str, Any]:
        info = super().info()
        if hasattr(self, "output"):
            info["predicts"] = self.output
            info["stored"] = "1 / disparity (capped at max_depth_ratio)" if self.output == "disparity" else "depth"
        return info


class DPTHybrid(DepthLabeler):
    name = "dpt-hybrid"
    default_model = "Intel/dpt-hybrid-midas"
    description = "MiDaS v3 DPT-Hybrid (relative inverse depth, 384 px); the paper used an Omnidata DPT-Hybrid"


class DPTLarge(DepthLabeler):
    name = "dpt-large"
    default_model = "Intel/dpt-large"
    description = "MiDaS v3 DPT-Large (relative inverse depth, 384 px)"


class DepthAnythingSmall(DepthLabeler):
    name = "depth-anything-small"
    default_model = "depth-anything/Depth-Anything-V2-Small-hf"
    description = "Depth Anything V2 small (relative inverse depth, shorter side 518 px)"


class DepthAnythingBase(DepthLabeler):
    name = "depth-anything-base"
    default_model = "depth-anything/Depth-Anything-V2-Base-hf"
    description = "Depth Anything V2 base (relative inverse depth, shorter side 518 px)"


class DepthAnythingLarge(DepthLabeler):
    name = "depth-anything-large"
    default_model = "depth-anything/Depth-Anything-V2-Large-hf"
    description = "Depth Anything V2 large (relative inverse depth, shorter side 518 px)"


# --------------------------------------------------------------------------- semantic segmentation

class ClassLabeler(HFLabeler):
    """Common part of the semseg labelers: classes come from the model's ``id2label``."""

    modality = "semseg"

    @property
    def num_classes(self) -> int | None:
        return int(self.model.config.num_labels) if hasattr(self, "model") else None

    @property
    def class_names(self) -> tuple[str, ...]:
        if not hasattr(self, "model"):
            return ()
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        return tuple(id2label.get(i, str(i)) for i in range(self.model.config.num_labels))


class SemanticLabeler(ClassLabeler):
    """Any transformers semantic-segmentation model (``AutoModelForSemanticSegmentation``): the
    per-class logits are resized to the image and the argmax taken. Setting: ``resolution``."""

    name = "hf-semseg"
    description = "any transformers semantic-segmentation model (give --model)"
    auto_class = "AutoModelForSemanticSegmentation"

    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        inputs = self.prepare(images)
        logits = run_fixed_batches(inputs, lambda b: self.model(pixel_values=b).logits, self.batch_size)
        return [resize_argmax(lg.float(), tuple(im.shape[-2:])).cpu().numpy() for im, lg in zip(images, logits)]


class SegformerADE(SemanticLabeler):
    name = "segformer-ade20k"
    default_model = "nvidia/segformer-b5-finetuned-ade-640-640"
    description = "SegFormer-B5 on ADE20K (150 classes, 640 px)"


class UperNetADE(SemanticLabeler):
    name = "upernet-ade20k"
    default_model = "openmmlab/upernet-convnext-small"
    description = "UperNet ConvNeXt-S on ADE20K (150 classes, 512 px)"


class Mask2FormerSemantic(ClassLabeler):
    """Mask2Former (or MaskFormer) universal segmentation reduced to semantic classes.

    Per pixel, each class scores ``sum_q softmax(class logits_q)[class] * sigmoid(mask_q)`` over
    the queries (the "no object" class dropped), with the mask logits upsampled to the input size
    first; the label is the argmax at the image's size. On COCO panoptic this gives the paper's 133
    classes (80 things + 53 stuff), numbered 0..132 in the model's ``id2label`` order, every pixel
    labelled. Setting: ``resolution`` (shorter side).
    """

    name = "mask2former-coco-panoptic"
    default_model = "facebook/mask2former-swin-small-coco-panoptic"
    description = "Mask2Former Swin-S on COCO panoptic -> 133 semantic classes (as the paper)"
    auto_class = "AutoModelForUniversalSegmentation"

    def forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(pixel_values=batch)
        return out.class_queries_logits, out.masks_queries_logits  # (B, Q, K + 1), (B, Q, h/4, w/4)

    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        inputs = self.prepare(images)
        results = run_fixed_batches(inputs, self.forward, self.batch_size)
        out = []
        for im, x, (cls_logits, mask_logits) in zip(images, inputs, results):
            probs = cls_logits.float().softmax(-1)[:, :-1]  # (Q, K)
            masks = resize_map(mask_logits.float(), tuple(x.shape[-2:])).sigmoid()  # (Q, h, w)
            scores = torch.einsum("qk,qhw->khw", probs, masks)
            out.append(resize_argmax(scores, tuple(im.shape[-2:])).cpu().numpy())
        return out


# the built-in labelers, registered by name in `multimae.pseudolabel.registry`
LABELERS = (DepthLabeler, DPTHybrid, DPTLarge, DepthAnythingSmall, DepthAnythingBase, DepthAnythingLarge,
            SemanticLabeler, SegformerADE, UperNetADE, Mask2FormerSemantic)
