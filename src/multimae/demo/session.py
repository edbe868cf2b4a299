"""One demo's state: the model, the inputs as given (fitted to the model's size, edits applied),
the per-modality token masks and the prediction they give. Every change re-runs the model; a
change the model refuses (every token hidden, a bad value) leaves the state as it was.

Shapes: C channels, H W the model's image size, h w its token grid (H / P, W / P), P the patch
size, K classes. Masks are (h, w) bool, True = masked (hidden from the encoder, predicted).

Nothing here names a modality: what each input is, how it is drawn and edited comes from the
model's `ModalitySpec`s; a world scene gives the model's inputs that the built-in world renders.

Text inputs (a spec ``stored_as == "text"``: M3AE's caption) are held apart from the maps, as
words with a mask per word (True = the word is given as ``[MASK]`` and predicted); the maps'
token masks never cover them.
"""

from __future__ import annotations

import base64
import io
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from multimae.data.codecs import TEXT as WORLD_TEXTS
from multimae.data.generated import WORLD_MODALITIES, WorldDataset
from multimae.data.world import CLASS_NAMES, NUM_CLASSES, PALETTE, SPLITS
from multimae.demo.archive import prediction_zip
from multimae.demo.edits import apply_edit, brush_region, editor_of, patch_region
from multimae.demo.family import DESCRIPTIONS, VIEWS, model_family
from multimae.demo.uploads import UPLOADABLE, UploadError, UploadLimits, read_upload
from multimae.inference import Prediction, PredictionPictures, predict, prediction_pictures
from multimae.inference.captions import MASK_WORD
from multimae.viz.colormaps import distinct_colors
from multimae.inference.inputs import fit_size
from multimae.masking import sample_masks
from multimae.modalities.spec import ModalitySpec
from multimae.text.tokenizer import TextTokenizer

WORLD_SCENES = 100_000  # scene indices offered by the page (any index >= 0 is a scene)


class DemoError(ValueError):
    """A request the demo refuses; ``status`` is its HTTP status (4xx), the message says why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DemoLimits:
    uploads: UploadLimits = field(default_factory=UploadLimits)
    max_brush_radius: int = 64  # pixels of the model's image
    max_text_chars: int = 2000  # longest caption accepted (the model's max_length in pieces is checked too)


def png_data_url(picture: np.ndarray) -> str:
    """uint8 (H, W, 3) -> ``data:image/png;base64,...``."""
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _palette(num_classes: int) -> tuple[Sequence[Sequence[int]] | None, list[str]]:
    """The built-in world's colours and names for a model with the world's class count."""
    if num_classes == NUM_CLASSES:
        return PALETTE, list(CLASS_NAMES)
    return None, [str(i) for i in range(num_classes)]


class DemoSession:
    """The state behind the page; thread-safe (the server answers requests on several threads).

    Args:
        model: a loaded model (`multimae.convert.load_any`); families without a view are named
            by `info` and refuse the other requests (409).
        checkpoint: what the page calls the model (the run folder or file name).
        limits: upload and edit limits.
        seed: seed of random scene indices and of random masks drawn without a seed.
        tokenizers: ``{text modality: its tokenizer}`` for a model with text (`multimae.tasks.loading.load_tokenizers`).
    """

    def __init__(self, model: nn.Module, checkpoint: str, limits: DemoLimits | None = None, seed: int = 0,
                 tokenizers: Mapping[str, TextTokenizer] | None = None) -> None:
        self.model = model.eval()
        self.family = model_family(model)
        self.checkpoint = checkpoint
        self.limits = limits or DemoLimits()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.inputs: dict[str, Tensor] = {}  # raw values at the model's size, edits applied
        self.original: dict[str, Tensor] = {}  # ... as loaded (reset brings them back)
        self.sizes: dict[str, tuple[int, int]] = {}  # (H, W) of each input as given (uploads: their own)
        self.sources: dict[str, str] = {}  # where each input came from, in words
        self.masks: dict[str, np.ndarray] = {}  # (h, w) bool, True = masked
        self.words: dict[str, list[str]] = {}  # each given text input's words (whitespace-split)
        self.word_masks: dict[str, list[bool]] = {}  # ... one per word, True = given as [MASK] (predicted)
        self.tokenizers = dict(tokenizers or {})
        self.prediction: Prediction | None = None
        self._pictures: PredictionPictures | None = None
        self.elapsed_ms = 0.0  # model + pictures of the last change
        specs = getattr(model, "input_specs", {})
        self.specs: dict[str, ModalitySpec] = {n: s for n, s in specs.items() if s.stored_as != "text"}  # maps
        self.text_specs: dict[str, ModalitySpec] = {n: s for n, s in specs.items() if s.stored_as == "text"}
        self.text_outputs = [n for n, s in getattr(model, "output_specs", {}).items() if s.stored_as == "text"]
        classes = max([s.num_channels for s in self.specs.values() if s.is_categorical]
                      + [s.num_channels for s in getattr(model, "output_specs", {}).values() if s.is_categorical],
                      default=0)
        self.palette, self.class_names = _palette(classes)

    # ------------------------------------------------------------------ what the page needs to know

    @property
    def available(self) -> bool:
        return self.family in VIEWS

    @property
    def image_size(self) -> int:
        return self.model.backbone.config.image_size if self.available else 0

    @property
    def patch_size(self) -> int:
        return self.model.backbone.config.patch_size if self.available else 0

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size if self.available else 0
        return n, n

    def info(self) -> dict[str, Any]:
        """The model's family and modalities, the world's splits, the limits: what the page is built from."""
        out: dict[str, Any] = {
            "family": self.family, "description": DESCRIPTIONS[self.family], "checkpoint": self.checkpoint,
            "view_available": self.available, "views": list(VIEWS),
        }
        if not self.available:
            out["message"] = (f"This is {DESCRIPTIONS[self.family]}. The page has no view for the {self.family} "
                              f"family yet (views: {', '.join(VIEWS)}).")
            out["inputs"] = [{"name": n} for n in self.specs]
            return out
        palette = self.class_colors()
        out.update(
            image_size=self.image_size, patch_size=self.patch_size, grid=list(self.grid),
            inputs=[{"name": n, "channels": s.num_channels, "categorical": s.is_categorical, "drawn_as": s.drawn_as,
                     "editor": editor_of(s), "upload": UPLOADABLE.get(s.stored_as), "from_world": n in WORLD_MODALITIES}
                    for n, s in self.specs.items()],
            outputs=[{"name": n, "drawn_as": s.drawn_as, "categorical": s.is_categorical}
                     for n, s in self.model.output_specs.items() if n not in self.text_outputs],
            texts=[{"name": n, "max_length": s.max_length, "from_world": n in WORLD_TEXTS,
                    "outputs": [o for o in self.text_outputs if self.model.output_specs[o].source_name == n]}
                   for n, s in self.text_specs.items()],
            classes=[{"id": i, "name": name, "color": [int(c) for c in palette[i]]}
                     for i, name in enumerate(self.class_names)],
            world={"splits": list(SPLITS), "scenes": WORLD_SCENES},
            limits={"max_upload_bytes": self.limits.uploads.max_bytes, "max_side": self.limits.uploads.max_side,
                    "max_brush_radius": self.limits.max_brush_radius},
        )
        return out

    def class_colors(self) -> np.ndarray:
        """(K, 3) uint8: the colours class ids are drawn in (the pictures' palette)."""
        if self.palette is not None:
            return np.asarray(self.palette, dtype=np.uint8)
        return distinct_colors(max(len(self.class_names), 1))

    def _need_view(self) -> None:
        if not self.available:
            raise DemoError(f"the page has no view for {self.family} models yet (views: {', '.join(VIEWS)})", 409)

    # ------------------------------------------------------------------ changes

    def load_scene(self, split: str, index: int | None) -> dict[str, Any]:
        """Scene ``index`` of the built-in world's ``split`` (a random one for None), at the model's
        size, for every model input the world renders; masks: none."""
        self._need_view()
        if split not in SPLITS:
            raise DemoError(f"unknown split {split!r}; splits are {list(SPLITS)}")
        names = tuple(n for n in self.specs if n in WORLD_MODALITIES)
        texts = tuple(n for n in self.text_specs if n in WORLD_TEXTS)
        if not names and not texts:
            raise DemoError(f"the built-in world renders none of this model's inputs {list(self.specs)}")
        with self._lock:
            if index is None:
                index = self._rng.randrange(WORLD_SCENES)
            if not 0 <= index < WORLD_SCENES:
                raise DemoError(f"scene index must be in [0, {WORLD_SCENES}), got {index}")
            sample = WorldDataset(split, size=self.image_size, length=WORLD_SCENES, modalities=names)[index]
            inputs = {n: sample[n] for n in names}
            words = {n: str(sample[n]).split() for n in texts}
            for n, v in inputs.items():
                spec = self.specs[n]
                if spec.is_categorical and int(v.max()) >= spec.num_channels:
                    raise DemoError(f"scene {index}: {n} has class id {int(v.max())}, beyond this model's "
                                    f"{spec.num_channels} classes (the world has {NUM_CLASSES})")
            masks = {n: np.zeros(self.grid, dtype=bool) for n in names}
            self._commit(inputs, masks, words, {n: [False] * len(w) for n, w in words.items()})
            self.original = {n: v.clone() for n, v in inputs.items()}
            self.sizes = {n: (self.image_size, self.image_size) for n in names}
            self.sources = {n: f"world {split} scene {index}" for n in (*names, *texts)}
            return self._state()

    def upload(self, name: str, data: bytes, filename: str) -> dict[str, Any]:
        """Set input ``name`` from uploaded bytes (resized to the model's size; its mask: none).
        Inputs are aligned pixel for pixel: an upload must have the size of the other inputs."""
        self._need_view()
        spec = self._spec(name)
        try:
            raw = read_upload(spec, data, filename, self.limits.uploads, self.patch_size)
        except UploadError as err:
            raise DemoError(str(err), err.status) from None
        size = (int(raw.value.shape[-2]), int(raw.value.shape[-1]))
        with self._lock:
            others = {n: s for n, s in self.sizes.items() if n != name}
            if others and set(others.values()) != {size}:
                listed = ", ".join(f"{n} {w}×{h}" for n, (h, w) in others.items())
                raise DemoError(f"{name} upload {filename!r} is {size[1]}×{size[0]} but the other inputs are {listed} "
                                "(W×H): inputs must be aligned pixel for pixel; upload that size or remove the others")
            fitted, _ = fit_size({name: raw.value}, self.image_size, self.patch_size, "resize")
            inputs = {**self.inputs, name: fitted[name]}
            masks = {**self.masks, name: np.zeros(self.grid, dtype=bool)}
            self._commit(self._ordered(inputs), self._ordered(masks))
            self.original[name] = fitted[name].clone()
            self.sizes[name] = size
            self.sources[name] = f"upload {filename!r}: {raw.how}"
            return self._state()

    def remove(self, name: str | None) -> dict[str, Any]:
        """Stop giving input ``name`` (every input for None); a text input removed is predicted whole
        from the other inputs (M3AE's caption from the image alone)."""
        self._need_view()
        with self._lock:
            if name is None:
                names = [*self.inputs, *self.words]
            elif name in self.text_specs:
                names = [name]
            else:
                names = [self._spec(name).name]
            inputs = {n: v for n, v in self.inputs.items() if n not in names}
            masks = {n: m for n, m in self.masks.items() if n not in names}
            words = {n: w for n, w in self.words.items() if n not in names}
            self._commit(inputs, masks, words, {n: m for n, m in self.word_masks.items() if n in words})
            for table in (self.original, self.sizes, self.sources):
                for n in names:
                    table.pop(n, None)
            return self._state()

    def set_masks(self, masks: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the masks of the named inputs: (h, w) nested lists of 0 / 1 (1 = masked)."""
        self._need_view()
        with self._lock:
            new = dict(self.masks)
            for name, value in masks.items():
                if name not in self.inputs:
                    raise DemoError(f"mask given for {name!r}, which is not a current input {list(self.inputs)}")
                try:
                    m = np.asarray(value)
                except ValueError:
                    m = np.zeros(0)
                if m.shape != self.grid or not np.isin(m, (0, 1)).all():
                    raise DemoError(f"mask of {name!r} must be a {self.grid[0]}×{self.grid[1]} grid of 0 / 1")
                new[name] = m.astype(bool)
            self._commit(self.inputs, new)
            return self._state()

    def random_masks(self, num_visible: int, alpha: float, seed: int | None) -> dict[str, Any]:
        """``num_visible`` tokens over all inputs visible, split over the inputs by a Dirichlet(``alpha``)."""
        self._need_view()
        if not alpha > 0:
            raise DemoError(f"alpha must be > 0, got {alpha}")
        with self._lock:
            if not self.inputs:
                raise DemoError("no input yet: pick a scene or upload an image first", 409)
            total = len(self.inputs) * self.grid[0] * self.grid[1]
            if not 1 <= num_visible <= total:
                raise DemoError(f"visible tokens must be in [1, {total}] (tokens of the current inputs), "
                                f"got {num_visible}")
            seed = self._rng.randrange(2**31) if seed is None else seed
            h, w = self.grid
            drawn = sample_masks(dict.fromkeys(self.inputs, h * w), 1, num_visible, alpha,
                                 torch.Generator().manual_seed(seed))
            self._commit(self.inputs, {n: m.reshape(h, w).numpy() for n, m in drawn.items()})
            return self._state()

    def edit(self, name: str, value: Sequence[float], *, patch: tuple[int, int] | None = None,
             brush: tuple[float, float, float] | None = None) -> dict[str, Any]:
        """Write ``value`` (C numbers in the input's raw units: a class id, an RGB colour in [0, 1],
        a depth) into input ``name``: the whole token ``patch`` = (row, col), or a disc ``brush`` =
        (x, y, radius) in pixels of the model's image."""
        self._need_view()
        spec = self._spec(name)
        if (patch is None) == (brush is None):
            raise DemoError("an edit is either a patch (row, col) or a brush (x, y, radius)")
        with self._lock:
            if name not in self.inputs:
                raise DemoError(f"{name} is not a current input {list(self.inputs)}", 409)
            try:
                where = (patch_region(*patch, self.image_size, self.patch_size) if patch is not None
                         else brush_region(*brush, self.image_size, self.limits.max_brush_radius))  # type: ignore[misc]
                new = apply_edit(spec, self.inputs[name], value, where)
            except ValueError as err:
                raise DemoError(str(err)) from None
            self._commit({**self.inputs, name: new}, self.masks)
            return self._state()

    def set_text(self, name: str, text: str) -> dict[str, Any]:
        """Give text input ``name`` as ``text`` (typed); no word masked. A word written ``[MASK]`` is
        masked from the start."""
        self._need_view()
        self._text_spec(name)
        if len(text) > self.limits.max_text_chars:
            raise DemoError(f"{name}: the text has {len(text)} characters, more than the limit of "
                            f"{self.limits.max_text_chars}")
        words = text.split()
        if not words:
            raise DemoError(f"{name}: the text is empty: type some words, or remove {name} to have it predicted "
                            "from the other inputs")
        with self._lock:
            hidden = [w == MASK_WORD for w in words]
            self._commit(self.inputs, self.masks, {**self.words, name: words}, {**self.word_masks, name: hidden})
            self.sources[name] = "typed"
            return self._state()

    def set_word_masks(self, name: str, masked: Sequence[int]) -> dict[str, Any]:
        """Mask the words of text input ``name``: one 0 / 1 per word (1 = given as ``[MASK]``, predicted)."""
        self._need_view()
        self._text_spec(name)
        with self._lock:
            if name not in self.words:
                raise DemoError(f"{name} is not given: load a scene or type a text first", 409)
            words = self.words[name]
            if len(masked) != len(words) or any(m not in (0, 1) for m in masked):
                raise DemoError(f"the word mask of {name} must be {len(words)} values 0 / 1 (one per word), "
                                f"got {len(masked)}")
            hidden = [bool(m) or w == MASK_WORD for m, w in zip(masked, words)]
            self._commit(self.inputs, self.masks, self.words, {**self.word_masks, name: hidden})
            return self._state()

    def reset(self) -> dict[str, Any]:
        """Every input back to as loaded (edits undone); masks kept."""
        self._need_view()
        with self._lock:
            self._commit({n: v.clone() for n, v in self.original.items()}, self.masks, self.words, self.word_masks)
            return self._state()

    def download(self) -> bytes:
        """A zip of the inputs, masks and predictions (`multimae.demo.archive`)."""
        self._need_view()
        with self._lock:
            if self.prediction is None:
                raise DemoError("nothing to download yet: pick a scene or upload an image first", 409)
            return prediction_zip(self.prediction, self.specs, self.palette, self.class_names)

    def state(self) -> dict[str, Any]:
        self._need_view()
        with self._lock:
            return self._state()

    # ------------------------------------------------------------------ internals

    def _spec(self, name: str) -> ModalitySpec:
        if name in self.text_specs:
            raise DemoError(f"{name} is a text input: give it as words (POST /api/texts/{name}), not as a picture")
        if name not in self.specs:
            raise DemoError(f"{name!r} is not an input of this model; its inputs are {list(self.specs)}", 404)
        return self.specs[name]

    def _text_spec(self, name: str) -> ModalitySpec:
        if name not in self.text_specs:
            raise DemoError(f"{name!r} is not a text input of this model; its text inputs are "
                            f"{list(self.text_specs)}", 404)
        return self.text_specs[name]

    def _ordered(self, table: Mapping[str, Any]) -> dict[str, Any]:
        return {n: table[n] for n in self.specs if n in table}

    def _commit(self, inputs: dict[str, Tensor], masks: dict[str, np.ndarray],
                words: dict[str, list[str]] | None = None, word_masks: dict[str, list[bool]] | None = None) -> None:
        """Run the model on ``inputs`` / ``masks`` (and the text inputs' ``words`` with their
        ``word_masks``; None: as they are) and, when it accepts them, make them the state."""
        words = self.words if words is None else words
        word_masks = self.word_masks if word_masks is None else word_masks
        start = time.perf_counter()
        pred = None
        texts = {n: " ".join(MASK_WORD if hide else w for w, hide in zip(ws, word_masks[n])) for n, ws in words.items()}
        if inputs or texts:
            try:
                pred = predict(self.model, {**inputs, **texts}, mask=masks if inputs else None,
                               tokenizers=self.tokenizers)
            except ValueError as err:
                raise DemoError(str(err)) from None
        self.inputs, self.masks, self.prediction = inputs, masks, pred
        self.words, self.word_masks = dict(words), dict(word_masks)
        self._pictures = prediction_pictures(pred, self.palette) if pred is not None else None
        self.elapsed_ms = (time.perf_counter() - start) * 1000

    def _state(self) -> dict[str, Any]:
        """What the page draws: every picture as a PNG data URL, the masks, how inputs were read."""
        pics = self._pictures
        inputs = {}
        for n, v in self.inputs.items():
            finite = v[torch.isfinite(v)] if v.is_floating_point() else v
            inputs[n] = {"picture": png_data_url(pics.inputs[n]) if pics else None, "source": self.sources.get(n, ""),
                         "size": list(self.sizes.get(n, (0, 0))),
                         "range": [float(finite.min()), float(finite.max())] if finite.numel() else None,
                         "visible": int((~self.masks[n]).sum())}
        pred = self.prediction
        return {
            "inputs": inputs,
            "texts": self._texts_state(),
            "captions": {n: {"given": c.given, "text": c.text, "marked": c.marked, "words": c.words}
                         for n, c in (pred.captions.items() if pred else ())},
            "masks": {n: m.astype(int).tolist() for n, m in self.masks.items()},
            "outputs": {n: png_data_url(p) for n, p in pics.outputs.items()} if pics else {},
            "pasted": {n: png_data_url(p) for n, p in pics.pasted.items()} if pics else {},
            "units": pred.units if pred else {},
            "notes": pred.notes if pred else [],
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


    def _texts_state(self) -> dict[str, Any]:
        """Each given text input: its words, their masks and the word piece predicted at each masked
        word (the k-th masked word is the k-th predicted position: one [MASK] each)."""
        out = {}
        captions = self.prediction.captions if self.prediction else {}
        for n, words in self.words.items():
            hidden = self.word_masks[n]
            outputs = [o for o in self.text_outputs if self.model.output_specs[o].source_name == n]
            predicted_words = iter(captions[outputs[0]].words if outputs and outputs[0] in captions else [])
            out[n] = {"words": words, "masked": [int(h) for h in hidden], "source": self.sources.get(n, ""),
                      "predicted": [next(predicted_words, None) if h else None for h in hidden]}
        return out
