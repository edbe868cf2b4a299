"""Pictures of what a MultiMAE predicts (paper Figs. 1, 3 and 4).

Shapes: B batch, C channels, K classes, H W full image resolution, s a modality's stride,
h w token grid, N = h * w tokens per modality, P model patch size (full resolution).

* `masked_reconstruction_figure`: random multi-modal masks; for every modality the masked input
  (visible patches, masked ones grey), the prediction pasted into the masked patches (visible
  patches keep the real input, as in the paper), optionally the raw prediction, and the ground truth.
* `cross_modal_figure`: the model sees one input modality, fully visible, and predicts all outputs
  ("single-modality-to-all"); one block per source modality, ground truth beside each prediction.

Both take a *raw* batch (conventions of `multimae.modalities.spec`), prepare it as training does,
run under ``torch.no_grad`` in eval mode (the model's previous mode is restored) and are
deterministic given the generator. Every modality is drawn at full image resolution: predictions
of strided modalities (semseg logits at H/4) are upsampled nearest, class maps come from the raw
full-resolution ids. Single-channel dense maps (depth) are standardised per sample, so each sample
uses one colour range (the ground truth's 2nd-98th percentile) for every tile of that modality.
Output-only derived targets (``norm_rgb``, whose data is another modality's) are not drawn.
The `*_panels` functions return the tiles unassembled (for tests, logging or other layouts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from multimae.data.collate import PRESENT_KEY, batch_rows, batch_to
from multimae.losses.masked import token_mask_to_pixels
from multimae.modalities import denormalize, prepare_batch
from multimae.viz.colormaps import distinct_colors, draw
from multimae.viz.grid import BACKGROUND, image_grid
from multimae.viz.words import PiecesOf, caption_lines, join_pieces

if TYPE_CHECKING:  # the model (and timm) is not imported by `multimae.viz` itself
    from multimae.masking.samplers import MaskSampler
    from multimae.model.multimae import MultiMAE

MASKED_COLOR = (222, 222, 222)  # masked patches in the masked-input tiles
MIN_TILE = 128  # small images are enlarged by an integer factor to at least this width


@dataclass
class Panels:
    """An unassembled figure: ``rows`` of uint8 ``(H, W, 3)`` tiles at image resolution under
    ``titles``, a ``note`` per row, a ``legend`` of (class name, colour) for the classes drawn and,
    per row, the token ``masks`` used (``{input modality: (N,) bool}``, True = masked; empty when
    nothing was masked)."""

    titles: list[str]
    rows: list[list[np.ndarray]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    legend: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)
    masks: list[dict[str, Tensor]] = field(default_factory=list)

    def render(self, tile: int | None = None) -> Image.Image:
        """The figure; ``tile`` defaults to the image width enlarged to at least `MIN_TILE` px."""
        return image_grid(self.rows, self.titles, self.notes, self.legend or None, tile=tile or _tile_width(self))


# ---------------------------------------------------------------------------------- helpers


class _Painter:
    """Display values at full resolution and their colours, for one prepared batch."""

    def __init__(self, model: MultiMAE, raw: Mapping[str, object], max_samples: int,
                 class_names: Sequence[str] | None, palette: Sequence[Sequence[int]] | None) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        device = next(model.parameters()).device
        self.raw = {k: v[:max_samples].to(device) for k, v in raw.items() if isinstance(v, Tensor)}
        # Modalities drawn: the model's inputs and outputs, less derived targets (norm_rgb).
        specs = {**model.input_specs, **{n: s for n, s in model.output_specs.items() if s.source_name == n}}
        rows = slice(0, max_samples)
        present = batch_to(batch_rows(raw.get(PRESENT_KEY) or {}, rows), device)  # type: ignore[arg-type]
        self.batch = prepare_batch(self.raw, model.input_specs, specs, present=present)
        if not self.batch.inputs:
            raise ValueError(f"the raw batch has none of the model's inputs {list(model.input_specs)}; "
                             f"it has {sorted(self.raw)}")
        # Token sequences (captions) are written under a row, not drawn as tiles.
        self.texts = [n for n, s in specs.items() if s.kind == "tokens"]
        self.specs = specs
        self.inputs = list(self.batch.inputs)  # present inputs, model order
        self.outputs = [n for n in model.output_specs if n in specs]
        self.patch = model.backbone.config.patch_size
        self.grid = model.backbone.layout(self.batch.inputs).grid
        self.size = (self.grid[0] * self.patch, self.grid[1] * self.patch)  # (H, W)
        self.num_samples = next(iter(self.batch.inputs.values())).shape[0]
        num_classes = max([s.num_channels for s in specs.values() if s.is_categorical], default=0)
        self.palette = np.asarray(palette if palette is not None else distinct_colors(num_classes), dtype=np.uint8)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.classes_drawn: set[int] = set()
        self.truth = {n: self._truth(n) for n in specs if n in self.batch.targets and n not in self.texts}
        self.ranges = self._ranges()

    def _full(self, x: Tensor) -> Tensor:
        """(B, C, h', w') or (B, h', w') -> full resolution, nearest."""
        if tuple(x.shape[-2:]) == self.size:
            return x
        if x.dim() == 3:
            return F.interpolate(x[:, None].float(), size=self.size, mode="nearest")[:, 0].to(x.dtype)
        return F.interpolate(x.float(), size=self.size, mode="nearest")

    def _truth(self, name: str) -> Tensor:
        """Ground truth in display units at full resolution: class ids from the raw map; dense
        values normalised as the model's targets are (NaN = invalid)."""
        spec = self.specs[name]
        if spec.is_categorical:
            return self._full(self.raw[name].long()).cpu()
        return self._full(self.batch.targets[name].float()).cpu()

    def prediction(self, name: str, pred: Tensor) -> Tensor:
        """Model output -> display values: class ids (B, H, W) or dense (B, C, H, W), on the CPU."""
        if self.specs[name].is_categorical:
            return self._full(pred.argmax(dim=1)).cpu()
        return self._full(pred.float()).cpu()

    def _ranges(self) -> dict[str, list[tuple[float, float] | None]]:
        """Per sample colour range of dense maps drawn with a colour map (depth): the ground
        truth's 2nd-98th percentile of the first channel; None for a sample without valid values."""
        out: dict[str, list[tuple[float, float] | None]] = {}
        for name, gt in self.truth.items():
            if self.specs[name].drawn_as != "colormap":
                continue
            valid = [g[torch.isfinite(g)].double().numpy() for g in gt[:, 0]]
            out[name] = [(float(np.percentile(v, 2)), float(np.percentile(v, 98))) if v.size else None for v in valid]
        return out

    def picture(self, name: str, value: Tensor, b: int) -> np.ndarray:
        """Display values of sample ``b`` (C, H, W) or class ids (H, W) -> uint8 (H, W, 3), drawn
        as the spec says; colours are first put back into data units (un-normalised)."""
        spec = self.specs[name]
        if spec.is_categorical:
            self.classes_drawn.update(int(i) for i in torch.unique(value))
        elif spec.drawn_as == "rgb":
            value = denormalize(spec, value[None])[0]
        lo_hi = self.ranges[name][b] if name in self.ranges else None  # None: the map's own range
        return draw(spec.drawn_as, value, self.palette, lo_hi)

    def pixel_mask(self, mask: Tensor) -> Tensor:
        """(B, N) token mask -> (B, H, W) bool at full resolution."""
        return token_mask_to_pixels(mask.cpu(), self.grid, self.patch).bool()

    def legend(self) -> list[tuple[str, tuple[int, int, int]]]:
        ids = sorted(i for i in self.classes_drawn if 0 <= i < min(len(self.palette), len(self.class_names)))
        return [(self.class_names[i], tuple(int(c) for c in self.palette[i])) for i in ids]  # type: ignore[misc]


def _paste(pred: Tensor, truth: Tensor, pixels: Tensor) -> Tensor:
    """Prediction at masked pixels (``pixels`` (H, W) True), the real input elsewhere."""
    return torch.where(pixels if truth.dim() == 2 else pixels[None], pred, truth)


def _grey_out(picture: np.ndarray, pixels: Tensor) -> np.ndarray:
    out = picture.copy()
    out[pixels.numpy()] = MASKED_COLOR
    return out


def _tile_width(panels: Panels) -> int:
    width = panels.rows[0][0].shape[1] if panels.rows else MIN_TILE
    return width * max(1, math.ceil(MIN_TILE / width))


def _stack(images: Sequence[Image.Image], gap: int = 10) -> Image.Image:
    """Images one under the other on the figure background."""
    fig = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    BACKGROUND)
    y = 0
    for im in images:
        fig.paste(im, (0, y))
        y += im.height + gap
    return fig


class _EvalMode:
    """``with _EvalMode(model):`` eval mode and no gradients inside, the previous mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.was_training, self.no_grad = model, model.training, torch.no_grad()

    def __enter__(self) -> None:
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
        self.no_grad.__exit__(*exc)


# ------------------------------------------------------------------------ masked reconstruction


def masked_reconstruction_panels(
    model: MultiMAE,
    raw: Mapping[str, object],
    *,
    num_visible: int,
    num_masks: int = 3,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    max_samples: int = 4,
    raw_predictions: bool = False,
    sampler: MaskSampler | None = None,
    pieces: PiecesOf | None = None,
) -> Panels:
    """Tiles of `masked_reconstruction_figure` (same arguments); row ``k * S + b`` is mask ``k``
    of sample ``b`` (S samples drawn)."""
    if num_masks < 1:
        raise ValueError(f"num_masks must be >= 1, got {num_masks}")
    with _EvalMode(model):
        p = _Painter(model, raw, max_samples, class_names, palette)
        names = [n for n in p.specs if (n in p.inputs or n in p.outputs) and n not in p.texts]
        runs = []  # per mask: (token masks, predictions, display predictions, pixel masks)
        encoder = model.backbone
        for _ in range(num_masks):
            if sampler is None:
                masks = encoder.sample_masks(p.batch.inputs, num_visible, alpha, generator)
            else:
                counts, B = encoder.num_tokens(p.batch.inputs), p.num_samples
                masks = sampler(counts, B, generator, encoder.token_validity(p.batch.inputs) or None).hidden
            out = model(p.batch.inputs, masks, outputs=p.outputs)
            preds = {n: p.prediction(n, out.preds[n]) for n in p.outputs if n not in p.texts}
            pixels = {n: p.pixel_mask(m) for n, m in masks.items() if n not in p.texts}
            runs.append((masks, out.preds, preds, pixels))
        panels = Panels(_masked_titles(p, names, raw_predictions))
        exists = encoder.token_validity(p.batch.inputs)  # padding of captions: not counted
        for b in range(p.num_samples):
            for k, (masks, out_preds, preds, pixels) in enumerate(runs):
                panels.rows.append(_masked_row(p, names, b, preds, pixels, raw_predictions))
                real = {n: exists[n][b].cpu() if n in exists else torch.ones_like(m[b].cpu()) for n, m in masks.items()}
                visible = ", ".join(f"{n} {int((real[n] & ~m[b].cpu()).sum())}/{int(real[n].sum())}"
                                    for n, m in masks.items())
                note = f"sample {b}, mask {k + 1}/{num_masks}: visible tokens {visible}"
                for n in (t for t in p.texts if pieces and t in pieces and t in p.batch.inputs and t in out_preds):
                    lines = caption_lines(pieces[n], p.batch.inputs[n][b].cpu(), real[n], masks[n][b].cpu(),
                                          out_preds[n][b].argmax(-1).cpu())
                    note += "\n" + lines.note(n)
                panels.notes.append(note)
                panels.masks.append({n: m[b].cpu() for n, m in masks.items()})
        panels.legend = p.legend()
    return panels


def _masked_titles(p: _Painter, names: Sequence[str], raw_predictions: bool) -> list[str]:
    titles = []
    for n in names:
        titles += [f"{n} masked"] if n in p.inputs else []
        titles += [f"{n} pred"] if n in p.outputs else []
        titles += [f"{n} raw pred"] if n in p.outputs and n in p.inputs and raw_predictions else []
        titles += [f"{n} GT"] if n in p.truth else []
    return titles


def _masked_row(p: _Painter, names: Sequence[str], b: int, preds: Mapping[str, Tensor],
                pixels: Mapping[str, Tensor], raw_predictions: bool) -> list[np.ndarray]:
    """Tiles of sample ``b`` under one mask, in the order of `_masked_titles`."""
    row = []
    for n in names:
        gt = p.truth[n][b] if n in p.truth else None
        if n in p.inputs:  # present inputs always have ground truth: it is their data
            row.append(_grey_out(p.picture(n, gt, b), pixels[n][b]))
        if n in p.outputs:
            pasted = n in p.inputs and gt is not None
            row.append(p.picture(n, _paste(preds[n][b], gt, pixels[n][b]) if pasted else preds[n][b], b))
            if n in p.inputs and raw_predictions:
                row.append(p.picture(n, preds[n][b], b))
        if gt is not None:
            row.append(p.picture(n, gt, b))
    return row


def masked_reconstruction_figure(
    model: MultiMAE,
    raw: Mapping[str, object],
    *,
    num_visible: int,
    num_masks: int = 3,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    max_samples: int = 4,
    raw_predictions: bool = False,
    tile: int | None = None,
    sampler: MaskSampler | None = None,
    pieces: PiecesOf | None = None,
) -> Image.Image:
    """Masked multi-modal reconstructions (paper Figs. 1 and 3).

    For each of the first ``max_samples`` samples and each of ``num_masks`` masks drawn with
    ``model.backbone.sample_masks(inputs, num_visible, alpha, generator)`` (one call per mask, on the whole
    batch), a row with, for every modality: the masked input (masked patches grey), the prediction
    with the real input kept at visible patches, the raw prediction (if ``raw_predictions``) and
    the ground truth. Outputs whose modality is not among the inputs show the full prediction.
    Rows of one sample are adjacent.

    Args:
        model: a `MultiMAE`; its mode is restored afterwards.
        raw: raw batch ``{modality: tensor}`` (rgb (B, 3, H, W) in [0, 1], depth (B, 1, H, W) with
            NaN = invalid, semseg (B, H, W) int64 at full resolution); any non-empty subset of the
            model's inputs; other entries (captions, unused modalities) are ignored.
        num_visible: visible tokens per sample, over all input modalities.
        alpha: Dirichlet concentration(s) of the per-modality token budgets.
        generator: drives the masks; the figure is a function of its state.
        class_names, palette: names and uint8 colours of the classes (default: numbered, distinct
            colours); the legend lists the classes drawn.
        tile: width of a tile in pixels (default: the image enlarged to at least 128 px).
        sampler: draws the masks instead (``sampler(num_tokens, B, generator, valid).hidden``,
            e.g. M3AE's fixed ratios); ``num_visible`` and ``alpha`` are then unused.
        pieces: ``{text modality: ids -> word pieces}`` (`TextTokenizer.pieces`): each row's note
            then shows the caption as given (hidden pieces ___), as predicted and its truth.
    """
    panels = masked_reconstruction_panels(
        model, raw, num_visible=num_visible, num_masks=num_masks, alpha=alpha, generator=generator,
        class_names=class_names, palette=palette, max_samples=max_samples, raw_predictions=raw_predictions,
        sampler=sampler, pieces=pieces,
    )
    return panels.render(tile)


# ---------------------------------------------------------------------------------- cross-modal


def cross_modal_panels(
    model: MultiMAE,
    raw: Mapping[str, object],
    *,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    max_samples: int = 4,
    pieces: PiecesOf | None = None,
) -> dict[str, Panels]:
    """Tiles of `cross_modal_figure`: ``{source modality: Panels}``, one row per sample with
    ``[source input, pred and GT of each other output]``. The source itself is not predicted: it
    is fully visible, and visible patches are never trained to be reconstructed (the loss counts
    masked patches only). A caption (with ``pieces``) is written under the row: as the source,
    or as predicted (every position from the source alone) beside its truth."""
    with _EvalMode(model):
        p = _Painter(model, raw, max_samples, class_names, palette)
        blocks = {}
        for src in p.inputs:
            targets = [n for n in p.outputs if model.output_specs[n].source_name != src]
            maps = [n for n in targets if n not in p.texts]
            titles = [] if src in p.texts else [f"input: {src}"]
            for n in maps:
                titles += [f"{n} pred"] + ([f"{n} GT"] if n in p.truth else [])
            if not titles:
                continue
            panels = Panels(titles)
            out = model({src: p.batch.inputs[src]}, None, outputs=targets)
            preds = {n: p.prediction(n, out.preds[n]) for n in maps}
            for b in range(p.num_samples):
                row = [] if src in p.texts else [p.picture(src, p.truth[src][b], b)]
                for n in maps:
                    row.append(p.picture(n, preds[n][b], b))
                    if n in p.truth:
                        row.append(p.picture(n, p.truth[n][b], b))
                panels.rows.append(row)
                note = f"sample {b}: every output predicted from {src} alone"
                note += _caption_notes(p, pieces, b, src, out.preds)
                panels.notes.append(note)
                panels.masks.append({})
            blocks[src] = panels
        legend = p.legend()
    for panels in blocks.values():
        panels.legend = legend
    return blocks


def _caption_notes(p: _Painter, pieces: PiecesOf | None, b: int,
                   src: str, preds: Mapping[str, Tensor]) -> str:
    """Lines of sample ``b``'s captions: the source caption, or each predicted one and its truth."""
    lines = ""
    for n in p.texts:
        if not pieces or n not in pieces or n not in p.batch.targets:
            continue
        truth = p.batch.targets[n][b]
        real = truth != p.specs[n].pad_id
        if n == src:
            lines += f"\n{n}: {join_pieces(pieces[n](truth[real].tolist()))}"
        elif n in preds:
            guess = preds[n][b].argmax(-1)
            lines += (f"\n{n} pred: {join_pieces(pieces[n](guess[guess != p.specs[n].pad_id].tolist()))}"
                      f"\n{n} GT: {join_pieces(pieces[n](truth[real].tolist()))}")
    return lines


def cross_modal_figure(
    model: MultiMAE,
    raw: Mapping[str, object],
    *,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    max_samples: int = 4,
    tile: int | None = None,
    pieces: PiecesOf | None = None,
) -> Image.Image:
    """Single-modality-to-all predictions (paper Fig. 4).

    For each input modality present in ``raw``, the model is given only that modality, fully
    visible (``model({m: x}, masks=None)``), and predicts every output; one block per source
    modality, each row a sample: the input, then each output's prediction beside its ground truth.
    The class legend is drawn once, under the last block. Arguments as in
    `masked_reconstruction_figure`.
    """
    blocks = list(cross_modal_panels(model, raw, class_names=class_names, palette=palette,
                                     max_samples=max_samples, pieces=pieces).values())
    width = tile or _tile_width(blocks[0])
    images = [Panels(b.titles, b.rows, b.notes).render(width) for b in blocks[:-1]] + [blocks[-1].render(width)]
    return _stack(images)
