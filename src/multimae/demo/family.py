"""Which model family a loaded checkpoint is, and which families the page has a view for."""

from __future__ import annotations

from torch import nn

from multimae.model.finetune import FineTuneModel
from multimae.model.fourm import FourM
from multimae.model.multimae import MultiMAE

# Families whose view the page has; the others are named, and the page says their view is not there yet.
VIEWS: tuple[str, ...] = ("multimae", "m3ae")

DESCRIPTIONS = {
    "multimae": "MultiMAE: masked reconstruction and cross-modal prediction",
    "m3ae": "M3AE: an image and a caption, one joint decoder",
    "4m": "4M: token maps and captions, generation by conditions and targets",
    "finetuned": "a fine-tuned model (an encoder with one head, no masking)",
    "encoder": "an encoder without decoders (nothing to predict)",
}


def model_family(model: nn.Module) -> str:
    """``multimae`` | ``m3ae`` (a text modality or a joint decoder) | ``4m`` | ``finetuned`` | ``encoder``."""
    if isinstance(model, FourM):
        return "4m"
    if isinstance(model, FineTuneModel):
        return "finetuned"
    if not isinstance(model, MultiMAE):
        raise ValueError(f"not a model of this library: {type(model).__name__}")
    if len(model.output_adapters) == 0:
        return "encoder"
    specs = [*model.input_specs.values(), *model.output_specs.values()]
    if model.model_config.decoder.kind == "joint" or any(s.stored_as == "text" for s in specs):
        return "m3ae"
    return "multimae"
