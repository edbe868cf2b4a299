"""A modality name appears in the modality registry (``src/multimae/modalities/``) and the built-in
world (``src/multimae/data/world/``), nowhere else: behaviour comes from a modality's spec.

The check reads every package module's tokens and flags each string literal that *is* a built-in
modality name (``"rgb"``, ``'depth'``, ...); docstrings, comments and longer strings are prose and
not flagged. The places where a name is the point are listed in ``ALLOWED`` with their reason.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
import torch

from multimae.modalities import ModalitySpec
from multimae.modalities.registry import BUILTIN_MODALITIES

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multimae"
EXEMPT_FOLDERS = ("modalities", "data/world")
# The built-ins, and the maps readers and the world produce that no model takes.
NAMES = frozenset(BUILTIN_MODALITIES) | {"instance", "caption"}

# (file under src/multimae, a piece of the line, why the name stays there).
ALLOWED: tuple[tuple[str, str, str], ...] = (
    # Not modality names: the same words mean something else there.
    ("config/finetune.py", "TaskKind = Literal[", "task kind 'depth' (an objective), not the modality"),
    ("config/finetune.py", "TASK_KINDS: tuple", "task kind 'depth' (an objective), not the modality"),
    ("config/finetune.py", 'self.kind in ("depth", "regression")', "task kind 'depth'"),
    ("config/finetune.py", 'self.task.kind in ("depth", "regression")', "task kind 'depth'"),
    ("config/finetune.py", '"depth": "berhu"', "task kind 'depth': its default loss"),
    ("tasks/finetune.py", "PRIMARY_METRIC = {", "task kind 'depth': its primary metric"),
    ("tasks/finetune.py", 'self.task.kind not in ("depth", "regression")', "task kind 'depth'"),
    ("tasks/finetune.py", 'if kind == "depth"', "task kind 'depth': its metrics (delta1, abs rel)"),
    ("tasks/finetune_model.py", "_ARCH_KEYS = (", "'depth' = number of encoder blocks"),
    ("convert/timm_vit.py", '"depth": config.depth', "'depth' = number of encoder blocks (timm kwarg)"),
    ("pseudolabel/hf.py", "DEPTH_OUTPUTS = (", "'depth' = a labeller output mode (depth vs disparity)"),
    ("pseudolabel/hf.py", 'return "depth" if getattr', "'depth' = a labeller output mode"),
    ("pseudolabel/hf.py", 'return "depth"', "'depth' = a labeller output mode"),
    ("pseudolabel/hf.py", 'if self.output == "disparity" else "depth"', "'depth' = a labeller output mode"),
    ("viz/colormaps.py", 'if display == "rgb"', "a display kind (ModalitySpec.display), not a modality"),
    ("viz/colormaps.py", 'if display == "normals"', "a display kind (ModalitySpec.display)"),
    ("viz/predictions.py", 'if display == "normals"', "a display kind (ModalitySpec.display)"),
    ("viz/reconstruction.py", 'spec.drawn_as == "rgb"', "a display kind (ModalitySpec.drawn_as)"),
    # 'palette' is also the display kind of class maps (a colour per class), beside 4M-21's colour-palette modality.
    ("viz/colormaps.py", 'spec.drawn_as == "palette"', "a display kind (ModalitySpec.drawn_as)"),
    ("inference/render.py", 'if display == "palette"', "a display kind (ModalitySpec.display)"),
    ("viz/colormaps.py", 'if display == "palette"', "a display kind (ModalitySpec.display)"),
    ("viz/fourm.py", 'if display == "palette"', "a display kind (ModalitySpec.display)"),
    ("viz/predictions.py", 'draw("palette"', "a display kind (ModalitySpec.display)"),
    ("viz/samples.py", 'display_of(m) == "palette"', "a display kind (ModalitySpec.drawn_as)"),
    ("data/manifest.py", '"palette": [list(c) for c in PALETTE]', "the manifest's class display colours"),
    ("data/jsonl.py", 'CAPTION_FIELD = "caption"', "a JSONL line's field name (file format), not the modality"),
    # Labellers: what a labeller produces is the point of it.
    ("pseudolabel/hf.py", 'modality = "depth"', "the DPT labeller produces depth"),
    ("pseudolabel/hf.py", 'modality = "semseg"', "the Mask2Former labeller produces semseg"),
    ("pseudolabel/registry.py", "DEFAULT_LABELERS = {", "the default labeller model of each labelled modality"),
    # Dataset importers: they know the files of one public dataset.
    ("data/importers/ade20k.py", "", "ADE20K importer: writes rgb and semseg files of that dataset"),
    ("data/importers/nyuv2.py", "", "NYUv2 importer: writes rgb, depth and semseg files of that dataset"),
    ("data/importers/imagenet.py", "", "ImageNet importer: writes the rgb files of that dataset"),
)


def _literal_hits(path: Path) -> list[tuple[int, str, str]]:
    """(line number, line, name) of each string literal in ``path`` that is a modality name."""
    text = path.read_text()
    lines = text.splitlines()
    hits = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str) and value in NAMES:
            hits.append((tok.start[0], lines[tok.start[0] - 1], value))
    return hits


def _allowed(rel: str, line: str) -> bool:
    return any(rel == f and piece in line for f, piece, _ in ALLOWED)


def _package_files() -> list[tuple[str, Path]]:
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not any(rel.startswith(f"{folder}/") for folder in EXEMPT_FOLDERS):
            files.append((rel, path))
    return files


def test_no_modality_names_outside_the_registry():
    found = [f"src/multimae/{rel}:{n}: {name!r} in {line.strip()}"
             for rel, path in _package_files() for n, line, name in _literal_hits(path) if not _allowed(rel, line)]
    assert not found, ("modality names outside modalities/ and data/world/ (read the behaviour from the spec or "
                       "the registry, or add the place to ALLOWED with its reason):\n" + "\n".join(found))


def test_every_allowed_place_is_still_used():
    """An entry whose code is gone is removed, so the list stays the list of real exceptions."""
    hits = {(rel, line) for rel, path in _package_files() for _, line, _ in _literal_hits(path)}
    stale = [(f, piece) for f, piece, _ in ALLOWED if not any(rel == f and piece in line for rel, line in hits)]
    assert not stale, f"ALLOWED entries that match nothing: {stale}"


def test_the_check_sees_names_and_not_prose(tmp_path):
    code = tmp_path / "code.py"
    code.write_text('"""Reads rgb."""\nif name == "depth":  # "semseg"\n    x = f"{name} rgb" + \'norm_rgb\'\n')
    assert [(n, name) for n, _, name in _literal_hits(code)] == [(2, "depth"), (3, "norm_rgb")]


def test_spec_metric_and_encoding_resolve_by_kind():
    dense, classes = ModalitySpec("height", num_channels=1), ModalitySpec("parts", kind="categorical",
                                                                          loss="cross_entropy")
    assert (dense.scored_by, dense.stored_as) == ("none", "array")
    assert (classes.scored_by, classes.stored_as) == ("segmentation", "class_ids")
    assert BUILTIN_MODALITIES["depth"].scored_by == "l1" and BUILTIN_MODALITIES["depth"].stored_as == "depth16"
    for bad in ({"metric": "segmentation"}, {"encoding": "class_ids"}, {"metric": "psnr"}, {"encoding": "jpeg"}):
        with pytest.raises(ValueError):
            dense.replace(**bad)


def test_transfer_metrics_are_keyed_by_the_output_names():
    """A user's modalities get the built-ins' metrics: segmentation for a class map, L1 where asked."""
    from conftest import make_inputs, tiny_config

    from multimae.model import MultiMAE
    from multimae.tasks.pretrain import transfer_metrics

    custom = {"height": ModalitySpec("height", num_channels=1, metric="l1", is_input=False),
              "parts": ModalitySpec("parts", kind="categorical", num_channels=5, loss="cross_entropy", stride=4,
                                    is_input=False)}
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(inputs=("rgb",), outputs=("rgb", "height", "parts"), custom_modalities=custom,
                                 modality_overrides={})).eval()
    raw = make_inputs()  # semseg ids are given at 1/4 resolution: made full resolution here (raw data)
    raw = {"rgb": raw["rgb"].sigmoid(), "height": raw["depth"].exp(),
           "parts": raw["semseg"].repeat_interleave(4, 1).repeat_interleave(4, 2)}
    out = transfer_metrics(lambda x: model(x).preds, model, [raw], object_classes=[1, 2])
    assert set(out) == {"parts_miou", "parts_acc", "parts_object_iou", "parts_object_acc", "height_l1"}
