"""Pseudo-labelling: turn a folder of photos (or tar shards) into multi-modal training data with
off-the-shelf networks, as the paper did (Sec. 3.4: depth from a DPT-Hybrid, 133-class COCO
semantic segmentation from Mask2Former).

`Labeler` is the interface (one modality, images in, one map per image out, at the image's
size); `register_labeler` adds one under a name; `run_pseudolabel` labels a folder or shards
resumably, over several processes if asked. The built-in labelers (`multimae.pseudolabel.hf`)
need Hugging Face transformers: ``pip install 'multimae[pseudolabel]'``.
"""

from multimae.pseudolabel.base import InputSize, Labeler
from multimae.pseudolabel.registry import (
    DEFAULT_LABELERS,
    build_labeler,
    get_labeler,
    list_labelers,
    register_labeler,
)
from multimae.pseudolabel.job import LabelReport, PseudolabelConfig, run_pseudolabel

__all__ = [
    "DEFAULT_LABELERS", "InputSize", "LabelReport", "Labeler", "PseudolabelConfig", "build_labeler", "get_labeler",
    "list_labelers", "register_labeler", "run_pseudolabel",
]
