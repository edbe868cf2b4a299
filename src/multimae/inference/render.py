"""Pictures and files of a `Prediction`: one viewable PNG per map, the arrays as ``.npy``, a
side-by-side figure and a JSON summary of how inputs were read and what outputs mean.

Pictures: rgb as is (clipped to [0, 1]); depth colour-mapped (near = bright) over the input
depth's 2nd-98th percentile when there is one, else the prediction's own; class maps with a
palette; normals as ``(n + 1) / 2``; norm_rgb as `Prediction.norm_rgb_view` (and, in the files,
also as predicted: the standardised values drawn linearly, which is what looks "corrupted").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from multimae.inference.predict import Prediction, top_classes
from multimae.losses.masked import token_mask_to_pixels
from multimae.modalities.registry import display_of
from multimae.modalities.spec import default_display
from multimae.viz.colormaps import distinct_colors, draw, rgb_to_uint8
from multimae.viz.grid import image_grid
from multimae.viz.reconstruction import MASKED_COLOR, MIN_TILE

BLANK = (255, 255, 255)


class _Painter:
    """Colours for the maps of one prediction (shared ranges and palette)."""

    def __init__(self, pred: Prediction, palette: Sequence[Sequence[int]] | None) -> None:
        self.pred = pred
        classes = max([int(v.shape[0]) for v in pred.logits.values() if v.dim() == 3]
                      + [int(v.max()) + 1 for v in pred.inputs.values() if not v.is_floating_point()], default=0)
        self.palette = np.asarray(palette if palette is not None else distinct_colors(max(classes, 1)), dtype=np.uint8)
        self.classes_drawn: set[int] = set()
        # Maps whose spec draws them with a colour map (depth) use their input's 2nd-98th percentile.
        self.ranges = {name: _percentiles(value) for name, value in pred.inputs.items()
                       if display_of(name) == "colormap"}

    def picture(self, name: str, value: Tensor) -> np.ndarray:
        """(C, H, W) float or (H, W) ids -> uint8 (H, W, 3)."""
        display = _display(name, value)
        if display == "palette":
            self.classes_drawn.update(int(i) for i in torch.unique(value))
        return draw(display, value, self.palette, self.ranges.get(name))

    def output_picture(self, name: str) -> np.ndarray:
        if self.pred.norm_rgb_view is not None and name == next(iter(self.pred.norm_pix), None):
            return rgb_to_uint8(self.pred.norm_rgb_view)
        return self.picture(name, self.pred.outputs[name])

    def pixels(self, name: str) -> Tensor:
        """(H, W) bool, True at masked pixels of input ``name``."""
        m = self.pred.masks[name].reshape(1, -1)
        return token_mask_to_pixels(m, self.pred.grid, self.pred.patch_size)[0].bool()

    def masked_input(self, name: str) -> np.ndarray:
        out = self.picture(name, self.pred.inputs[name]).copy()
        out[self.pixels(name).numpy()] = MASKED_COLOR
        return out

    def pasted(self, name: str) -> np.ndarray:
        """The prediction at masked patches, the input at visible ones."""
        pixels = self.pixels(name)
        value, truth = self.pred.outputs[name], self.pred.inputs[name]
        mixed = torch.where(pixels if truth.dim() == 2 else pixels[None], value, torch.nan_to_num(truth))
        return self.picture(name, mixed)


@dataclasses.dataclass
class PredictionPictures:
    """The pictures of one prediction, uint8 (H, W, 3) each, drawn with shared colours (a depth
    prediction over its input's range, one palette for every class map).

    Attributes:
        inputs: ``{input: the input as given}`` (not greyed: the caller draws its mask).
        outputs: ``{map output: the prediction}`` (norm_rgb with patch statistics put back).
        pasted: ``{input that is also an output: the prediction at masked patches, the input at
            visible ones}``.
        palette: (K, 3) uint8, the colours of class ids.
    """

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    pasted: dict[str, np.ndarray]
    palette: np.ndarray


def prediction_pictures(pred: Prediction, palette: Sequence[Sequence[int]] | None = None) -> PredictionPictures:
    """Every picture of ``pred``, as `prediction_figure` draws them, one array each (for pages and
    other layouts than the figure's)."""
    p = _Painter(pred, palette)
    maps = [n for n, v in pred.outputs.items() if _is_map(v)]
    return PredictionPictures(
        inputs={n: p.picture(n, v) for n, v in pred.inputs.items()},
        outputs={n: p.output_picture(n) for n in maps},
        pasted={n: p.pasted(n) for n in pred.inputs if n in maps},
        palette=p.palette,
    )


def _display(name: str, value: Tensor) -> str:
    """How a map is drawn: as its modality's spec says, else by its values (`default_display`)."""
    return display_of(name) or default_display(not value.is_floating_point(), int(value.shape[0]))


def _percentiles(value: Tensor) -> tuple[float, float]:
    valid = value[torch.isfinite(value)].double().numpy()
    return float(np.percentile(valid, 2)), float(np.percentile(valid, 98))


def _is_map(value: Tensor) -> bool:
    """A picture-like output: (H, W) ids or (C, H, W) values (not a vector of class scores)."""
    return value.dim() >= 2


def _columns(pred: Prediction) -> list[str]:
    """Inputs in model order with their outputs; norm-pix outputs (norm_rgb) right after their source."""
    names = list(pred.inputs)
    for name in pred.outputs:
        if name in names or not _is_map(pred.outputs[name]):
            continue
        if pred.norm_pix.get(name) in names:
            names.insert(names.index(pred.norm_pix[name]) + 1, name)
        else:
            names.append(name)
    return names


def prediction_figure(pred: Prediction, palette: Sequence[Sequence[int]] | None = None,
                      class_names: Sequence[str] | None = None, tile: int | None = None) -> Image.Image:
    """Side by side, one column per modality: the input (masked patches grey), the prediction and,
    when something was masked, the prediction with the visible input patches pasted back."""
    p = _Painter(pred, palette)
    names = _columns(pred)
    H, W = pred.size
    blank = np.full((H, W, 3), BLANK, dtype=np.uint8)
    masked_any = any(bool(m.any()) for m in pred.masks.values())
    rows = [[p.masked_input(n) if n in pred.inputs else blank for n in names],
            [p.output_picture(n) if n in pred.outputs and _is_map(pred.outputs[n]) else blank for n in names]]
    notes = ["inputs (grey: masked patches); visible tokens: "
             + ", ".join(f"{n} {c}" for n, c in pred.visible_counts().items()),
             "predictions" + "".join(f" ({n} with patch statistics put back)" for n in list(pred.norm_pix)[:1])
             + "".join(f"; {n}: {top_classes(v)}" for n, v in pred.outputs.items() if not _is_map(v))]
    if masked_any:
        rows.append([p.pasted(n) if n in pred.inputs and n in pred.outputs and _is_map(pred.outputs[n]) else blank
                     for n in names])
        notes.append("predictions at masked patches, the input at visible ones")
    for name, c in pred.captions.items():  # under the last row
        notes[-1] += (f"\n{name} given: {c.given}\n{name} predicted [in brackets]: {c.marked}" if c.given is not None
                      else f"\n{name} predicted from the other inputs alone: {c.text}")
    known = list(class_names) if class_names is not None else []
    legend = [(known[i] if i < len(known) else str(i), tuple(int(c) for c in p.palette[i]))
              for i in sorted(p.classes_drawn) if 0 <= i < len(p.palette)]
    width = tile or W * max(1, -(-MIN_TILE // W))
    return image_grid(rows, names, notes, legend[:40] or None, tile=width)


def save_prediction(pred: Prediction, out_dir: str | Path, palette: Sequence[Sequence[int]] | None = None,
                    class_names: Sequence[str] | None = None) -> list[Path]:
    """Write ``<output>.npy`` and ``<output>.png`` for every output (categorical outputs also
    ``<output>_logits.npy``; norm_rgb also ``norm_rgb_as_predicted.png``), ``input_<name>.png``,
    ``mask.npz`` (reusable with ``--mask``), ``figure.png`` and ``summary.json``. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = _Painter(pred, palette)
    written: list[Path] = []

    def png(name: str, image: np.ndarray) -> None:
        Image.fromarray(image).save(out / f"{name}.png")
        written.append(out / f"{name}.png")

    def npy(name: str, value: Tensor) -> None:
        np.save(out / f"{name}.npy", value.numpy())
        written.append(out / f"{name}.npy")

    for name in pred.outputs:
        npy(name, pred.outputs[name])
        if _is_map(pred.outputs[name]):
            png(name, p.output_picture(name))
        if name in pred.logits:
            npy(f"{name}_logits", pred.logits[name])
        if name in pred.norm_pix:
            png(f"{name}_as_predicted", rgb_to_uint8((pred.outputs[name] / 6 + 0.5).clamp(0, 1)))
    for name in pred.inputs:
        png(f"input_{name}", p.masked_input(name))
    np.savez(out / "mask.npz", **{n: m.numpy().astype(np.uint8) for n, m in pred.masks.items()})
    written.append(out / "mask.npz")
    prediction_figure(pred, palette, class_names).save(out / "figure.png")
    written.append(out / "figure.png")
    for name, c in pred.captions.items():
        (out / f"{name}.txt").write_text(c.text + "\n")
        written.append(out / f"{name}.txt")
    summary = {
        "inputs": list(pred.inputs), "outputs": list(pred.outputs), "notes": pred.notes, "units": pred.units,
        "captions": {n: dataclasses.asdict(c) for n, c in pred.captions.items()},
        "visible_tokens": pred.visible_counts(), "grid": list(pred.grid), "patch_size": pred.patch_size,
        "files": [f.name for f in written] + ["summary.json"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    written.append(out / "summary.json")
    return written
