"""The official 4M golden fixture (`shared/reference/fourm/golden`): its files and its batch as our records."""

from __future__ import annotations

import torch

from conftest import SHARED
from multimae.convert.fourm import our_name
from multimae.modalities.batch import ModalityBatch

GOLDEN = SHARED / "reference" / "fourm" / "golden"
PRESENT = (GOLDEN / "weights.safetensors").exists()
MODALITIES = ("caption", "rgb@64", "tok_depth@64", "tok_semseg@64")  # the fixture's in_domains, in order
OUTPUTS = ("caption", "tok_depth@64", "tok_semseg@64")


def load_golden(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(GOLDEN / name)


def official_record(tensors: dict[str, torch.Tensor], prefix: str, target: bool = True) -> ModalityBatch:
    """One official mod dict entry (``<prefix>.tensor / input_mask / target_mask``) as our record:
    hidden = input_mask, target = not target_mask (or no target)."""
    given = tensors[f"{prefix}.input_mask"]
    return ModalityBatch(tensors[f"{prefix}.tensor"], torch.ones_like(given), given,
                         ~tensors[f"{prefix}.target_mask"] if target else None)


def official_batch(inputs: dict[str, torch.Tensor], prefix: str = "") -> dict[str, ModalityBatch]:
    """The fixture's mod dicts as our records."""
    return {our_name(mod): official_record(inputs, f"{prefix}{mod}") for mod in MODALITIES}
