"""`ModalitySpec`: the one place where a modality is described.

A *modality* is a kind of data (rgb, depth, semseg, ...). Everything the library does with a
modality (how its raw values are normalised, how it is cut into tokens, how a decoder predicts it,
which loss compares the prediction with the target) is read from its spec, so a user adds a new
modality by writing a spec, never by changing library code.

Raw data conventions (what readers and the procedural world produce, before `prepare`):

* ``dense``: float tensor ``(B, C, H, W)``; non-finite values (NaN) mark invalid pixels.
* ``categorical``: integer tensor ``(B, H, W)`` of class ids in ``[0, num_channels)``;
  ``ignore_index`` (if set) marks unlabelled pixels.

* ``tokens``: integer tensor ``(B, L)`` of token ids in ``[0, num_channels)`` (a caption, or
  later a tokenizer's codes); ``pad_id`` marks padding.
* ``vector``: float tensor ``(B, G, C)``: a few global feature vectors (an embedding).
* ``token_map``: integer tensor ``(B, N)`` of a tokenizer's codes over a square ``h x w`` grid,
  row-major (4M's ``tok_depth``, ...); each token covers ``stride`` x ``stride`` image pixels.

Every kind has a *placement*, where its tokens live (`ModalitySpec.placement`): ``grid`` (dense
and categorical maps, token maps: a 2-D grid of patches, its own size, positions on the image's common frame),
``sequence`` (tokens: 1-D positions, padded to a length) or ``global`` (vectors: learned
positions). The encoder concatenates any mix; an input adapter turns a prepared tensor into
``(B, N, D)`` tokens, and masking only needs each modality's token count.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Kind = Literal["dense", "categorical", "tokens", "vector", "token_map"]
Placement = Literal["grid", "sequence", "global"]
Positions = Literal["index", "visible", "learned"]
Loss = Literal["mse", "l1", "cross_entropy", "norm_pix_mse"]
Normalization = Literal["none", "imagenet", "robust_standardize", "unit_range"]
Display = Literal["rgb", "colormap", "palette", "normals", "instances", "text"]

KINDS: tuple[str, ...] = ("dense", "categorical", "tokens", "vector", "token_map")
POSITIONS: tuple[str, ...] = ("index", "visible", "learned")
_PLACEMENTS: dict[str, str] = {"dense": "grid", "categorical": "grid", "tokens": "sequence", "vector": "global",
                               "token_map": "grid"}
LOSSES: tuple[str, ...] = ("mse", "l1", "cross_entropy", "norm_pix_mse")
NORMALIZATIONS: tuple[str, ...] = ("none", "imagenet", "robust_standardize", "unit_range")
DISPLAYS: tuple[str, ...] = ("rgb", "colormap", "palette", "normals", "instances", "text")
# How a map is scored when predicted from the image alone (`multimae.tasks.pretrain.transfer_metrics`).
Metric = Literal["auto", "segmentation", "l1", "none"]
METRICS: tuple[str, ...] = ("auto", "segmentation", "l1", "none")
# How a map is stored in files (`multimae.data.codecs`): ``rgb8`` 8-bit colour picture <-> [0, 1];
# ``depth16`` 16-bit PNG of ``value * scale``, 0 = invalid (or float ``.npy``); ``unit_vectors8``
# 8-bit ``(n + 1) / 2`` camera-frame unit vectors (x right: its sign flips under a horizontal flip);
# ``class_ids`` 8/16-bit PNG of class ids; ``array`` as given; ``text`` UTF-8 text (a caption: token ids
# come from the run's tokenizer, `multimae.text`); ``box_text`` UTF-8 text of 2-D boxes serialised as 4M does,
# in pixels of the sample's maps (`multimae.data.boxes`: cropped, resized and mirrored with the maps);
# ``sequence_text`` UTF-8 text of a serialised sequence about the whole picture (metadata, a colour palette:
# kept as it is under crops and flips, as 4M-21 keeps them); ``vectors`` a float ``.npy`` of shape (G, C)
# (a feature embedding); ``auto``: class_ids, vectors or array by kind.
Encoding = Literal["auto", "rgb8", "depth16", "unit_vectors8", "class_ids", "array", "text", "box_text",
                   "sequence_text", "vectors"]
ENCODINGS: tuple[str, ...] = ("auto", "rgb8", "depth16", "unit_vectors8", "class_ids", "array", "text", "box_text",
                              "sequence_text", "vectors")
# Stored as UTF-8 text, tokenised into a ``tokens`` modality.
TEXT_ENCODINGS: tuple[str, ...] = ("text", "box_text", "sequence_text")


def default_display(categorical: bool, num_channels: int) -> str:
    """How a map is drawn when its spec does not say: class maps with a palette, 3-channel maps as
    colours, other dense maps (their first channel) with a colour map."""
    if categorical:
        return "palette"
    return "rgb" if num_channels == 3 else "colormap"


@dataclass(frozen=True)
class ModalitySpec:
    """Description of one modality.

    Attributes:
        name: unique name, used as the key of inputs, predictions, masks and state-dict entries.
        kind: ``"dense"`` (real-valued maps), ``"categorical"`` (class-id maps), ``"tokens"``
            (a sequence of token ids), ``"vector"`` (a few global feature vectors) or
            ``"token_map"`` (a tokenizer's codes on a grid, 4M's ``tok_*`` modalities).
        num_channels: channels of a dense map or of a vector, number of classes of a categorical
            map, or vocabulary size of a token sequence (the decoder then predicts that many
            logits per pixel or token; a token map's codebook size).
        normalization: how raw values become model values (see `multimae.modalities.normalize`):
            ``imagenet`` (rgb in [0, 1] -> ImageNet mean/std), ``robust_standardize`` (per sample,
            drop the top and bottom ``robust_trim`` of valid values, then standardise; invalid
            pixels -> 0 as input, excluded from the loss), ``unit_range`` ([0, 1] -> [-1, 1]),
            ``none``.
        loss: ``mse``, ``l1``, ``cross_entropy`` or ``norm_pix_mse`` (MSE against per-patch
            standardised targets, MAE's norm-pix loss).
        is_input: the modality can be given to the encoder.
        is_output: the modality can be predicted by a decoder.
        stride: the modality is consumed at ``image_size / stride`` resolution; its patches are
            ``patch_size / stride`` pixels, so by default every map shares one token grid. A token
            map's stride is the image pixels one token covers (grid side = image_size / stride).
        patch: patch side in pixels on the modality's own map, overriding ``patch_size / stride``:
            a map cut into larger patches has a coarser token grid (a 4x4 grid beside a 16x16
            image); positions of every grid lie on the image's common frame, so they align.
        source: for a token map, the modality its tokenizer reads (``tok_depth``: ``depth``: what
            token shards store it under); for output-only derived targets (``norm_rgb``), the modality whose data is the
            target and whose tokens are this decoder's queries; defaults to ``name``.
        class_emb_dim: width of the learned class embedding (categorical inputs).
        ignore_index: class id that marks unlabelled pixels (categorical), excluded from the loss.
        robust_trim: fraction of the lowest and of the highest valid values dropped by
            ``robust_standardize``.
        mean, std: per-channel statistics for ``imagenet``-style normalisation.
        display: how a picture of the modality is drawn (`multimae.viz.colormaps.draw`): ``rgb``
            (colours in [0, 1]), ``colormap`` (first channel, near = bright), ``palette`` (class
            ids), ``normals`` (unit vectors as ``(n + 1) / 2``) or ``instances`` (instance ids);
            None: `default_display` (see `drawn_as`).
        max_length: tokens of a ``tokens`` sequence (padded to this length) or of a ``vector``
            modality (at most); the size of its positional table.
        pad_id: the token id that marks padding in a ``tokens`` sequence (never attended to,
            never in the loss).
        positions: 1-D positions of a sequence: ``index`` (a token's position in the sequence,
            MAE-style) or ``visible`` (a running count over the tokens given to the encoder, as 4M
            does, so the visible tokens have dense positions 0, 1, 2, ...); for a 4M token map,
            ``learned`` replaces its fixed 2-D sin-cos table by a learned one (4M's global tokens).
        metric: how predictions from the image alone are scored (see `scored_by`): ``segmentation``
            (mIoU and pixel accuracy), ``l1`` (mean absolute error on valid pixels), ``none``, or
            ``auto`` (segmentation for categorical maps, none for dense ones).
        encoding: how the map is stored in files and read from them (see `stored_as` and the
            ``Encoding`` comment above); ``auto``: ``class_ids`` or ``array`` by kind.
    """

    name: str
    kind: Kind = "dense"
    num_channels: int = 3
    normalization: Normalization = "none"
    loss: Loss = "mse"
    is_input: bool = True
    is_output: bool = True
    stride: int = 1
    source: str | None = None
    class_emb_dim: int = 64
    ignore_index: int | None = None
    robust_trim: float = 0.1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    display: Display | None = None
    patch: int | None = None
    max_length: int = 0
    pad_id: int = 0
    positions: Positions = "index"
    metric: Metric = "auto"
    encoding: Encoding = "auto"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"modality name must be a non-empty identifier, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"modality {self.name!r}: loss must be one of {LOSSES}, got {self.loss!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"modality {self.name!r}: normalization must be one of {NORMALIZATIONS}, "
                f"got {self.normalization!r}"
            )
        if self.display is not None and self.display not in DISPLAYS:
            raise ValueError(f"modality {self.name!r}: display must be one of {DISPLAYS}, got {self.display!r}")
        if self.metric not in METRICS:
            raise ValueError(f"modality {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"modality {self.name!r}: encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if (self.metric == "segmentation" and self.kind != "categorical") or (
                self.metric == "l1" and self.kind != "dense"):
            raise ValueError(f"modality {self.name!r}: metric {self.metric!r} does not fit a {self.kind} map")
        if (self.encoding == "class_ids") != (self.kind == "categorical") and self.encoding not in ("auto",
                                                                                                 *TEXT_ENCODINGS):
            raise ValueError(f"modality {self.name!r}: encoding {self.encoding!r} does not fit a {self.kind} map")
        if (self.encoding == "vectors") != (self.kind == "vector") and self.encoding != "auto":
            raise ValueError(f"modality {self.name!r}: encoding {self.encoding!r} does not fit a {self.kind} modality "
                             "(vectors are stored as vectors)")
        if self.encoding in TEXT_ENCODINGS and self.kind != "tokens":
            raise ValueError(f"modality {self.name!r}: {self.encoding} text is tokenised into a tokens modality, not a "
                             f"{self.kind} one")
        if self.num_channels < 1:
            raise ValueError(f"modality {self.name!r}: num_channels must be >= 1, got {self.num_channels}")
        if self.stride < 1:
            raise ValueError(f"modality {self.name!r}: stride must be >= 1, got {self.stride}")
        if self.patch is not None and (self.placement != "grid" or self.patch < 1):
            raise ValueError(f"modality {self.name!r}: patch must be a positive size, for maps only, got {self.patch}")
        if self.placement != "grid" and self.max_length < 1:
            raise ValueError(f"modality {self.name!r}: a {self.kind} modality needs max_length >= 1")
        if self.positions not in POSITIONS:
            raise ValueError(f"modality {self.name!r}: positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.kind == "tokens" and not 0 <= self.pad_id < self.num_channels:
            raise ValueError(f"modality {self.name!r}: pad_id {self.pad_id} is not a token id of its "
                             f"vocabulary of {self.num_channels}")
        if not (self.is_input or self.is_output):
            raise ValueError(f"modality {self.name!r} is neither an input nor an output")
        if self.is_discrete != (self.loss == "cross_entropy"):
            raise ValueError(
                f"modality {self.name!r}: categorical and tokens modalities use the cross_entropy loss and "
                f"only they do (kind={self.kind!r}, loss={self.loss!r})"
            )
        if not 0.0 <= self.robust_trim < 0.5:
            raise ValueError(f"modality {self.name!r}: robust_trim must be in [0, 0.5), got {self.robust_trim}")
        if self.normalization == "imagenet":
            if self.mean is None or self.std is None:
                raise ValueError(f"modality {self.name!r}: imagenet normalisation needs mean and std")
            if len(self.mean) != self.num_channels or len(self.std) != self.num_channels:
                raise ValueError(
                    f"modality {self.name!r}: mean/std need {self.num_channels} values, "
                    f"got {len(self.mean)}/{len(self.std)}"
                )

    @property
    def source_name(self) -> str:
        """Name of the modality that provides this modality's data and decoder queries."""
        return self.source or self.name

    @property
    def is_categorical(self) -> bool:
        """A map of class ids."""
        return self.kind == "categorical"

    @property
    def is_discrete(self) -> bool:
        """Values are class or token ids (predicted as logits, compared by cross-entropy)."""
        return self.kind in ("categorical", "tokens", "token_map")

    @property
    def placement(self) -> str:
        """Where the modality's tokens live: ``grid``, ``sequence`` or ``global``."""
        return _PLACEMENTS[self.kind]

    @property
    def drawn_as(self) -> str:
        """How a picture of the modality is drawn: ``display``, else `default_display` (a token
        sequence: as ``text``, its words; a token map's codes: a colour per code, as ``instances``)."""
        if self.kind == "tokens" and not self.display:
            return "text"
        if self.kind == "token_map" and not self.display:
            return "instances"  # codes, one colour each (decoded by its tokenizer it is drawn as its source)
        return self.display or default_display(self.is_categorical, self.num_channels)

    @property
    def scored_by(self) -> str:
        """How predictions are scored: ``metric``, with ``auto`` resolved by kind."""
        if self.metric != "auto":
            return self.metric
        return "segmentation" if self.is_categorical else "none"

    @property
    def stored_as(self) -> str:
        """How the map is stored in files: ``encoding``, with ``auto`` resolved by kind."""
        if self.encoding != "auto":
            return self.encoding
        if self.kind == "vector":
            return "vectors"
        return "class_ids" if self.is_categorical else "array"

    def patch_size(self, model_patch_size: int) -> int:
        """Patch side in pixels on this modality's own map, for a model patch size ``P`` (1 for
        sequences and global tokens: one value per token)."""
        if self.placement != "grid" or self.kind == "token_map":
            return 1
        if self.patch is not None:
            return self.patch
        if model_patch_size % self.stride:
            raise ValueError(
                f"modality {self.name!r}: patch size {model_patch_size} is not divisible by its "
                f"stride {self.stride}"
            )
        return model_patch_size // self.stride

    def replace(self, **changes: object) -> ModalitySpec:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"modality {self.name!r}: unknown spec field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
