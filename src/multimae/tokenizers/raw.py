"""`MapFormat`: what a map tokenizer accepts, how it normalises it, and how it compares maps.

Shapes: B samples, C channels, K classes, H W pixels.

Everything is read from the modality's spec (`ModalitySpec`): its kind (dense or categorical), its
channels or classes, its ``ignore_index``, its ``loss`` and how it is stored (`ModalitySpec.stored_as`),
never from its name. Raw values are those of `multimae.modalities.spec`:

================  ===========================  ================================  =======================
stored as         raw values                   invalid pixels                    normalised as
================  ===========================  ================================  =======================
``rgb8``          float (B, C, H, W) in [0, 1]  non-finite                        ``(x - 0.5) / 0.5``
``depth16``       float (B, C, H, W) >= 0       non-finite or 0                   ``log``, then fitted
                                                                                  mean / std
``unit_vectors8`` float (B, C, H, W), |x| <= 1  non-finite                        as they are; decoded
                                                                                  maps are unit vectors
``array``         float (B, C, H, W)            non-finite                        fitted mean / std
categorical       int (B, H, W) in [0, K)       ``ignore_index``                  one-hot (K channels)
================  ===========================  ================================  =======================

A dense map's network input has C + 1 channels: the normalised values (0 at invalid pixels) and the
validity mask. "Fitted" statistics come from training data (`fit_statistics`) and are saved with the
tokenizer, so a tokenizer always normalises the way it was trained.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.modalities.spec import ModalitySpec

# (mean, std) of encodings whose range is fixed; other dense encodings fit theirs (`fit_statistics`).
FIXED_STATISTICS: dict[str, tuple[float, float]] = {"rgb8": (0.5, 0.5), "unit_vectors8": (0.0, 1.0)}
LOG_ENCODINGS = ("depth16",)  # normalised as log values (positive, scale-like: depth)
ZERO_INVALID = ("depth16",)  # 0 marks an invalid pixel (as in the files)
UNIT_RANGE = ("rgb8",)  # raw values in [0, 1]
UNIT_VECTORS = ("unit_vectors8",)  # raw values are unit vectors
_RANGE_SLACK = 1e-4  # rounding allowed beyond [0, 1] / [-1, 1]


@dataclass(frozen=True)
class MapFormat:
    """How one map modality's raw values are checked, normalised, compared and decoded.

    Attributes:
        spec: the modality's spec (dense or categorical).
        mean, std: per-channel statistics of the (log) values of a dense map (`FIXED_STATISTICS` or
            fitted); empty for a categorical map.
    """

    spec: ModalitySpec
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.spec.kind not in ("dense", "categorical"):
            raise ValueError(f"modality {self.spec.name!r}: a map tokenizer takes dense or categorical maps, "
                             f"not a {self.spec.kind} modality")
        if self.dense:
            c = self.spec.num_channels
            if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
                raise ValueError(f"modality {self.spec.name!r}: mean and std need {c} values (std > 0), got "
                                 f"{self.mean} / {self.std}; fit them with fit_statistics")

    @classmethod
    def for_spec(cls, spec: ModalitySpec, mean: Iterable[float] = (), std: Iterable[float] = ()) -> MapFormat:
        """The format of ``spec``, with its encoding's fixed statistics when it has them."""
        if spec.kind == "dense" and spec.stored_as in FIXED_STATISTICS:
            m, s = FIXED_STATISTICS[spec.stored_as]
            return cls(spec, (m,) * spec.num_channels, (s,) * spec.num_channels)
        return cls(spec, tuple(mean), tuple(std))

    @property
    def dense(self) -> bool:
        return self.spec.kind == "dense"

    @property
    def in_channels(self) -> int:
        """Channels of the network input: C values + 1 validity mask, or K one-hot classes."""
        return self.spec.num_channels + 1 if self.dense else self.spec.num_channels

    @property
    def out_channels(self) -> int:
        """Channels the network predicts: C normalised values, or K class logits."""
        return self.spec.num_channels

    # ------------------------------------------------------------------ checks

    def check(self, raw: Tensor) -> None:
        """A ValueError naming the modality and the problem unless ``raw`` is a batch of raw maps."""
        name, k = self.spec.name, self.spec.num_channels
        if not isinstance(raw, Tensor):
            raise ValueError(f"{name}: expected a tensor, got {type(raw).__name__}")
        if not self.dense:
            if raw.dtype.is_floating_point or raw.dtype == torch.bool or raw.is_complex():
                raise ValueError(f"{name}: a categorical map holds integer class ids (B, H, W) in [0, {k}), got a "
                                 f"{raw.dtype} tensor; a colour picture or scores? convert class ids with .long() "
                                 f"(or take the argmax of scores) first")
            if raw.ndim != 3:
                raise ValueError(f"{name}: expected class ids of shape (B, H, W), got {tuple(raw.shape)}")
            ids = raw if self.spec.ignore_index is None else raw[raw != self.spec.ignore_index]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
                ignore = f" (or ignore_index {self.spec.ignore_index})" if self.spec.ignore_index is not None else ""
                raise ValueError(f"{name}: class ids must lie in [0, {k}){ignore}, got values in "
                                 f"[{int(ids.min())}, {int(ids.max())}]")
            return
        if not raw.dtype.is_floating_point:
            raise ValueError(f"{name}: a dense map holds float values (B, {k}, H, W), got a {raw.dtype} tensor "
                             "(8-bit pixels? divide by 255)")
        if raw.ndim != 4:
            raise ValueError(f"{name}: expected a map of shape (B, {k}, H, W), got {tuple(raw.shape)}")
        if raw.shape[1] != k:
            raise ValueError(f"{name}: expected {k} channel(s), got {raw.shape[1]} (shape {tuple(raw.shape)})")
        self._check_range(raw)

    def _check_range(self, raw: Tensor) -> None:
        name, how = self.spec.name, self.spec.stored_as
        finite = raw[torch.isfinite(raw)]
        if not finite.numel():
            return
        lo, hi = float(finite.min()), float(finite.max())
        if how in UNIT_RANGE and (lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK):
            raise ValueError(f"{name}: raw values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; the tokenizer "
                             "normalises by itself: pass raw values, not ImageNet-normalised ones")
        if how in UNIT_VECTORS and (lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK):
            raise ValueError(f"{name}: unit vectors have components in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                             "pass raw vectors, not (n + 1) / 2 pictures scaled to 255")
        if how in LOG_ENCODINGS and lo < 0:
            raise ValueError(f"{name}: values must be >= 0 (0 or NaN marks an invalid pixel), got a minimum "
                             f"of {lo:.3g}; pass raw values, not standardised ones")

    def check_size(self, raw: Tensor, factor: int) -> tuple[int, int]:
        """(H, W) of ``raw``; a ValueError unless both are multiples of ``factor`` (pixels per token)."""
        h, w = raw.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(f"{self.spec.name}: a map of {h}x{w} pixels does not split into {factor}x{factor} "
                             "pixel tokens; crop or resize it to a multiple")
        return h, w

    # ------------------------------------------------------------------ values

    def valid(self, raw: Tensor) -> Tensor:
        """(B, H, W) bool: pixels that carry a value."""
        if not self.dense:
            if self.spec.ignore_index is None:
                return torch.ones_like(raw, dtype=torch.bool)
            return raw != self.spec.ignore_index
        ok = torch.isfinite(raw).all(dim=1)
        if self.spec.stored_as in ZERO_INVALID:
            ok &= (raw > 0).all(dim=1)
        return ok

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1)
        return (torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape))

    def normalize(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """(values, valid): a dense map's normalised values (B, C, H, W), 0 at invalid pixels, or a
        categorical map's one-hot (B, K, H, W), 0 at ignored pixels; and valid (B, H, W)."""
        valid = self.valid(raw)
        if not self.dense:
            ids = torch.where(valid, raw, torch.zeros_like(raw))
            one_hot = F.one_hot(ids.long(), self.spec.num_channels).permute(0, 3, 1, 2).float()
            return one_hot * valid[:, None], valid
        x = raw.float()
        safe = torch.where(valid[:, None], x, torch.ones_like(x))
        if self.spec.stored_as in LOG_ENCODINGS:
            safe = safe.log()
        mean, std = self._stats(safe)
        return torch.where(valid[:, None], (safe - mean) / std, torch.zeros_like(safe)), valid

    def network_input(self, raw: Tensor) -> Tensor:
        """(B, in_channels, H, W) float: `normalize`'s values, plus the validity mask for a dense map."""
        values, valid = self.normalize(raw)
        return torch.cat([values, valid[:, None].float()], dim=1) if self.dense else values

    def finish(self, out: Tensor) -> Tensor:
        """Network output (B, out_channels, H, W) in normalised units, made ready for `denormalize`
        and the loss: unit vectors normalised to length 1, other maps as they are."""
        if self.dense and self.spec.stored_as in UNIT_VECTORS:
            return F.normalize(out, dim=1, eps=1e-6)
        return out

    def denormalize(self, out: Tensor) -> Tensor:
        """`finish`ed network output -> raw values: dense (B, C, H, W) float (colours clamped to
        [0, 1], depth positive), or categorical (B, H, W) int64 class ids (argmax)."""
        if not self.dense:
            return out.argmax(dim=1)
        mean, std = self._stats(out)
        x = out * std + mean
        if self.spec.stored_as in LOG_ENCODINGS:
            x = x.exp()
        if self.spec.stored_as in UNIT_RANGE:
            x = x.clamp(0, 1)
        return x

    # ------------------------------------------------------------------ training signal

    def loss(self, out: Tensor, raw: Tensor) -> Tensor:
        """Scalar reconstruction loss of `finish`ed output ``out`` against ``raw``, by the spec's
        ``loss``: cross-entropy over labelled pixels (categorical); L1 (``l1``) or MSE (otherwise) in
        normalised units over valid pixels, averaged over channels (dense)."""
        if not self.dense:
            ignore = -100 if self.spec.ignore_index is None else self.spec.ignore_index
            return F.cross_entropy(out, raw.long(), ignore_index=ignore)
        target, valid = self.normalize(raw)
        diff = out - target
        per_pixel = diff.abs() if self.spec.loss == "l1" else diff.square()
        weight = valid[:, None].float()
        return (per_pixel * weight).sum() / (weight.sum() * per_pixel.shape[1]).clamp_min(1.0)


def fit_statistics(spec: ModalitySpec, raw: Tensor) -> MapFormat:
    """The format of ``spec`` with mean / std fitted on raw maps (B, C, H, W) (log values for
    `LOG_ENCODINGS`) over valid pixels; fixed or categorical formats ignore ``raw``."""
    fixed = MapFormat.for_spec(spec, (0.0,) * spec.num_channels, (1.0,) * spec.num_channels)
    if not fixed.dense or spec.stored_as in FIXED_STATISTICS:
        return MapFormat.for_spec(spec) if fixed.dense else MapFormat(spec)
    fixed.check(raw)
    values, valid = fixed.normalize(raw)  # (log) values with mean 0, std 1: the raw statistics
    n = valid.sum()
    if int(n) < 2:
        raise ValueError(f"{spec.name}: too few valid pixels ({int(n)}) to fit normalisation statistics")
    w = valid[:, None].float()
    mean = (values * w).sum(dim=(0, 2, 3)) / n
    var = (((values - mean.view(1, -1, 1, 1)) ** 2) * w).sum(dim=(0, 2, 3)) / n
    std = var.sqrt().clamp_min(1e-6)
    return MapFormat(spec, tuple(float(m) for m in mean), tuple(float(s) for s in std))

