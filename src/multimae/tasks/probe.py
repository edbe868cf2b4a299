"""Linear probing (M3AE's and MAE's protocol): a frozen encoder, one linear classifier on top.

Shapes: N samples, D encoder width, K classes of a target.

The encoder sees the whole image (no masking); a sample's feature is its last global token
(``pooling="global"``) or the mean of its patch tokens (``"mean"``). Features are computed once.
The classifier is a BatchNorm without affine parameters followed by a linear layer (MAE's probe),
trained with SGD with momentum 0.9, no weight decay and a cosine schedule: torch has no LARS and
no well-kept library provides one for current torch, so this is SGD, not the papers' LARS.

On the built-in world the targets are facts that a caption states and an image shows
(`multimae.data.world.FACTS`: the largest object's class, how many objects are seen, the largest
object's colour), measured on train-split scenes and scored on val-split scenes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multimae.modalities.prepare import prepare_batch
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.encoder import MultiModalViT, encoder_of
from multimae.model.init import init_weights

POOLINGS = ("global", "mean")


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int = 90  # MAE's linear probe
    lr: float = 0.1
    batch_size: int = 256
    pooling: str = "global"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"probe epochs, batch size and lr must be positive, got {self.epochs}, "
                             f"{self.batch_size}, {self.lr}")


@torch.no_grad()
def encoder_features(model: nn.Module, images: Tensor, pooling: str = "global", batch_size: int = 128,
                     modality: str = DEFAULT_IMAGE_MODALITY) -> Tensor:
    """(N, 3, H, W) images in [0, 1] -> (N, D) features of ``model``'s encoder (eval mode, unmasked)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    encoder = encoder_of(model)
    if modality not in encoder.input_specs:
        raise ValueError(f"the encoder takes no {modality!r} input (inputs: {list(encoder.input_specs)})")
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = [pooled_features(encoder, {modality: images[start : start + batch_size].to(device)}, pooling)
           for start in range(0, images.shape[0], batch_size)]
    encoder.train(was_training)
    return torch.cat(out)


def pooled_features(encoder: nn.Module, raw: dict[str, Tensor], pooling: str = "global") -> Tensor:
    """``{input modality: raw batch}`` -> (B, D) float features of ``encoder`` given all of them
    unmasked: its last global token (``global``; the patch-token mean without one) or the patch-token
    mean (``mean``)."""
    prepared = prepare_batch(raw, {m: encoder.input_specs[m] for m in raw}, {}).inputs
    enc = encoder.forward_encoder(prepared)
    feats = enc.global_tokens[:, -1] if pooling == "global" and enc.num_global_tokens else enc.patch_tokens.mean(1)
    return feats.float().cpu()


class LinearProbe(nn.Module):
    """BatchNorm (no affine) + linear layer: (N, D) features -> (N, K) logits."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(x))


def train_probe(features: Tensor, labels: Tensor, num_classes: int, settings: ProbeSettings = ProbeSettings()
                ) -> LinearProbe:
    """A `LinearProbe` fitted to (N, D) ``features`` and (N,) int ``labels`` in [0, num_classes)."""
    if features.shape[0] != labels.shape[0] or features.shape[0] < 2:
        raise ValueError(f"need at least 2 samples with one label each, got {features.shape[0]} features "
                         f"and {labels.shape[0]} labels")
    g = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    probe = LinearProbe(features.shape[1], num_classes)
    opt = torch.optim.SGD(probe.parameters(), lr=settings.lr, momentum=0.9, weight_decay=0.0)
    N = features.shape[0]
    per_epoch = math.ceil(N / settings.batch_size)
    total = settings.epochs * per_epoch
    step = 0
    probe.train()
    for _ in range(settings.epochs):
        order = torch.randperm(N, generator=g)
        for start in range(0, N, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            for group in opt.param_groups:
                group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(probe(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()


@torch.no_grad()
def accuracy(probe: LinearProbe, features: Tensor, labels: Tensor) -> float:
    return float((probe(features).argmax(1) == labels).float().mean())


def majority_accuracy(train_labels: Tensor, labels: Tensor) -> float:
    """Accuracy of always answering the most frequent training class."""
    return float((labels == torch.bincount(train_labels).argmax()).float().mean())


def random_encoder_like(model: nn.Module, seed: int = 0) -> MultiModalViT:
    """A freshly initialised encoder with ``model``'s architecture (the probe's floor)."""
    encoder = encoder_of(model)
    torch.manual_seed(seed)
    fresh = MultiModalViT(encoder.config, encoder.input_specs)
    init_weights(fresh)
    return fresh.to(next(encoder.parameters()).device)


def world_scenes(split: str, count: int, size: int, progress: Callable[[int], None] | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], list[str]]:
    """(count, 3, size, size) images of ``split``'s first scenes, ``{fact: (count,) int64}`` and
    their captions."""
    from multimae.data.generated import decode_world_sample
    from multimae.data.world import scene_facts, visible_objects, world_sample

    images, facts, captions = [], [], []
    for i in range(count):
        ws = world_sample(split, i, size)
        images.append(decode_world_sample(ws, f"{i:08d}", (DEFAULT_IMAGE_MODALITY,))[DEFAULT_IMAGE_MODALITY])
        facts.append(scene_facts(visible_objects(ws.scene, ws.rendering)))
        captions.append(ws.caption)
        if progress is not None:
            progress(1)
    return torch.stack(images), {k: torch.tensor([f[k] for f in facts]) for k in facts[0]}, captions


def world_probe_data(split: str, count: int, size: int, progress: Callable[[int], None] | None = None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """(count, 3, size, size) images of ``split``'s first scenes and ``{fact: (count,) int64}``."""
    images, facts, _ = world_scenes(split, count, size, progress)
    return images, facts


def probe_encoder(model: nn.Module, train: tuple[Tensor, Mapping[str, Tensor]], val: tuple[Tensor, Mapping[str, Tensor]],
                  num_classes: Mapping[str, int], targets: Sequence[str], settings: ProbeSettings = ProbeSettings()
                  ) -> dict[str, dict[str, float]]:
    """``{target: {"train": accuracy, "val": accuracy}}`` of linear probes on ``model``'s features."""
    unknown = [t for t in targets if t not in num_classes or t not in train[1]]
    if unknown:
        raise ValueError(f"unknown probe target {unknown}; known: {sorted(num_classes)}")
    xs = {name: encoder_features(model, images, settings.pooling) for name, (images, _) in (("train", train), ("val", val))}
    out = {}
    for t in targets:
        probe = train_probe(xs["train"], train[1][t], num_classes[t], settings)
        out[t] = {"train": accuracy(probe, xs["train"], train[1][t]), "val": accuracy(probe, xs["val"], val[1][t])}
    return out
