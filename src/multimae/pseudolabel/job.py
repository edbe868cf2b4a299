"""A pseudo-labelling run: configuration, the slice of the data this process labels, and the
manifest that records which model produced which modality.

Output (``out``):

- from a folder of images: ``out/<split>/rgb/[<class>/]<name>.<ext>`` (the image, its bytes kept
  when the pipeline reads them as they are, else a PNG) and ``out/<split>/<modality>/[<class>/]
  <name>.png`` per labelled modality -- the layout `multimae.data.FolderDataset` reads;
- from tar shards: ``out/<split>/<shard name>.tar`` with ``rgb`` and label members added -- the
  layout `multimae.data.ShardDataset` reads;
- ``out/manifest.json``: encodings, classes, and per modality the labeler, model (hub name or
  local path), revision and settings; per split the sample count, unreadable images and whether
  the split is complete.

Several processes (``torchrun``, or ``rank`` / ``world_size`` given explicitly, e.g. one job per
node) each label the slice ``rank::world_size`` of the sorted images (or shards). No process
group is needed: each writes ``out/.pseudolabel/<split>-rank<r>-of-<w>.json`` when done, and
whichever process finds all of them complete merges them into the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from multimae.data.manifest import MANIFEST, read_manifest, write_manifest
from multimae.engine.distributed import resolve_device, resolve_rank
from multimae.engine.files import write_text_atomic
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY, get_modality
from multimae.pseudolabel.base import LABELED_MODALITIES, Labeler
from multimae.pseudolabel.registry import DEFAULT_LABELERS, build_labeler, default_labeler
from multimae.pseudolabel.sources import discover_images
from multimae.pseudolabel.store import encoding_entries
from multimae.pseudolabel.writers import (
    FolderTarget,
    Progress,
    label_folder,
    label_shards,
)

GENERATOR = "multimae.pseudolabel"
PARTS = ".pseudolabel"


@dataclass(frozen=True)
class PseudolabelConfig:
    """One labelling run. Dicts are keyed by modality (``depth``, ``semseg``, ``normals``)."""

    out: str  # output root (the data pipeline's ``data.root``)
    images: str | None = None  # a folder of images (flat, or one level of class folders)
    shards: str | None = None  # or tar shards: a directory of *.tar, a glob, or one file
    tasks: tuple[str, ...] = tuple(DEFAULT_LABELERS)  # modalities to label: those with a built-in labeller
    labelers: dict[str, str] = field(default_factory=dict)  # registry name (default: DEFAULT_LABELERS)
    models: dict[str, str] = field(default_factory=dict)  # hub name or local directory (default: the labeler's)
    revisions: dict[str, str] = field(default_factory=dict)  # hub revision (branch, tag or commit)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # labeler settings
    split: str = "train"  # written under out/<split>/
    batch_size: int = 8  # images per forward pass (the same in every pass, see base)
    device: str = "auto"  # auto (cuda:LOCAL_RANK when available) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast); auto: see `label_precision`
    workers: int = 2  # image-decoding processes (0: in the main process)
    rgb: str = "copy"  # folder output: copy the images, or symlink to them
    rank: int | None = None  # this process's slice (default: $RANK, or 0)
    world_size: int | None = None  # number of slices (default: $WORLD_SIZE, or 1)
    max_images: int | None = None  # read at most this many images still to do, then stop (rerun to continue)
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.images is None) == (self.shards is None):
            raise ValueError("give exactly one source: images (a folder) or shards")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct modalities, got {self.tasks}")
        for task in self.tasks:
            if task not in LABELED_MODALITIES:
                raise ValueError(f"cannot pseudo-label {task!r}: labelled modalities are {LABELED_MODALITIES}")
        for name in ("labelers", "models", "revisions", "settings"):
            stray = set(getattr(self, name)) - set(self.tasks)
            if stray:
                raise ValueError(f"{name} given for {sorted(stray)}, which are not among the tasks {self.tasks}")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {self.batch_size}, {self.workers}")
        if self.rgb not in ("copy", "symlink"):
            raise ValueError(f"rgb must be 'copy' or 'symlink', got {self.rgb!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if not self.split or "/" in self.split or self.split.startswith("."):
            raise ValueError(f"split must be a plain folder name, got {self.split!r}")
        if (self.rank is None) != (self.world_size is None):
            raise ValueError("give both rank and world_size, or neither (then $RANK / $WORLD_SIZE are used)")


@dataclass
class LabelReport:
    """The outcome of `run_pseudolabel` for this process."""

    rank: int
    world_size: int
    progress: Progress
    manifest: Path
    split_complete: bool  # every process has finished and the manifest says so


def label_precision(config: PseudolabelConfig, device: torch.device) -> str:
    """``config.precision`` resolved: ``auto`` keeps the precision of labels already in ``out`` (a
    resumed run stays consistent on any machine), else `choose_precision` decides for ``device``."""
    from multimae.engine.precision import choose_precision

    if config.precision == "auto" and (Path(config.out) / MANIFEST).is_file():
        earlier = {info.get("precision") for m, info in read_manifest(Path(config.out)).get("labelers", {}).items()
                   if m in config.tasks}
        if len(earlier) == 1 and None not in earlier:
            print(f"precision: {next(iter(earlier))}, as the labels already in {config.out}")
            return str(next(iter(earlier)))
    choice = choose_precision(config.precision, device)
    print(f"precision: {choice.reason}")
    return choice.precision


def build_labelers(config: PseudolabelConfig, device: torch.device) -> dict[str, Labeler]:
    """The labelers of ``config.tasks``, not yet loaded."""
    for m in config.tasks:  # a modality without a default labeller (normals) needs one named, before any work
        if m not in config.labelers:
            default_labeler(m)
    precision = label_precision(config, device)
    return {
        m: build_labeler(m, config.labelers.get(m) or default_labeler(m), config.models.get(m),
                         revision=config.revisions.get(m), device=device, batch_size=config.batch_size,
                         precision=precision, **config.settings.get(m, {}))
        for m in config.tasks
    }


# --------------------------------------------------------------------------- manifest

def _identity(info: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change between runs labelling the same modality of the same output."""
    return {k: info.get(k) for k in ("labeler", "model", "revision", "settings", "precision")}


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and next(folder.rglob("*.png"), None) is not None


def prepare_manifest(root: Path, fmt: str, split: str, labelers: Mapping[str, Labeler]) -> dict[str, Any]:
    """Check ``labelers`` against what ``root`` already holds, record them, write the manifest."""
    manifest = read_manifest(root) if (root / MANIFEST).is_file() else None
    if manifest is None:
        manifest = {"generator": GENERATOR, "format": fmt}
    if manifest.get("format", fmt) != fmt:
        raise ValueError(f"{root / MANIFEST}: holds {manifest.get('format')} data; this run writes {fmt}")
    recorded = manifest.setdefault("labelers", {})
    for modality, labeler in labelers.items():
        info = labeler.info()
        old = recorded.get(modality)
        if old is not None and _identity(old) != _identity(info):
            raise ValueError(
                f"{root}: its {modality} labels were made by {_identity(old)}, this run uses {_identity(info)}; "
                "use the same labeler, model and settings to resume, or another --out")
        if old is None and (modality in manifest or (fmt == "folder" and _has_files(root / split / modality))):
            raise ValueError(f"{root}: already holds {modality} data that multimae pseudolabel did not make; "
                             "choose another --out")
        recorded[modality] = info
        manifest.update(encoding_entries(modality, labeler.num_classes))
        if labeler.feature_dim is not None:
            manifest[modality]["num_channels"] = labeler.feature_dim
        if get_modality(modality).is_categorical:
            manifest["num_classes"] = labeler.num_classes
            manifest["classes"] = list(labeler.class_names)
    splits = manifest.setdefault("splits", {})
    splits[split] = {**splits.get(split, {}), "complete": False}
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, manifest)
    return manifest


def _part_path(root: Path, split: str, rank: int, world: int) -> Path:
    return root / PARTS / f"{split}-rank{rank:05d}-of-{world:05d}.json"


def merge_parts(root: Path, split: str, world: int) -> bool:
    """Record the split in the manifest if all ``world`` processes are done; True if recorded."""
    parts = [_part_path(root, split, r, world) for r in range(world)]
    if not all(p.is_file() for p in parts):
        return False
    done = [json.loads(p.read_text()) for p in parts]
    if not all(d["complete"] for d in done):
        return False
    manifest = read_manifest(root) or {}
    entry: dict[str, Any] = {
        "count": sum(d["done"] for d in done),
        "skipped": sorted(s for d in done for s in d["skipped"]),
        "complete": True,
        "processes": world,
    }
    if manifest.get("format") == "shards":
        entry["shards"] = sorted((s for d in done for s in d["shards"]), key=lambda s: s["path"])
    manifest.setdefault("splits", {})[split] = entry
    write_manifest(root, manifest)
    return True


# --------------------------------------------------------------------------- the run

def run_pseudolabel(config: PseudolabelConfig, labelers: Mapping[str, Labeler] | None = None) -> LabelReport:
    """Label this process's slice of ``config``'s images (resuming what is already there).

    ``labelers`` replaces the ones built from ``config`` (keyed by modality; its keys then are
    the tasks): the Python way to use a labeler object of one's own.
    """
    rank, world, local_rank = resolve_rank(config.rank, config.world_size)
    root, fmt = Path(config.out), "folder" if config.images is not None else "shards"
    split_dir = root / config.split
    # The inputs are scanned before any model is loaded (or downloaded): a wrong path fails at once.
    if fmt == "folder":
        items = discover_images(config.images)[rank::world]  # type: ignore[arg-type]
    else:
        from multimae.data.shards import list_shards

        shards = list_shards(config.shards)[rank::world]  # type: ignore[arg-type]
    if labelers is None:
        labelers = build_labelers(config, resolve_device(config.device, local_rank, key="--device"))
    for modality, labeler in labelers.items():
        if labeler.modality != modality:
            raise ValueError(f"labeler {labeler.name!r} produces {labeler.modality!r}, not {modality!r}")
        labeler.ensure_loaded()
    prepare_manifest(root, fmt, config.split, labelers)
    part = _part_path(root, config.split, rank, world)
    part.unlink(missing_ok=True)
    desc = f"labelling {config.split}" + (f" (rank {rank}/{world})" if world > 1 else "")
    show = config.progress and rank == 0
    if fmt == "folder":
        in_place = Path(config.images).resolve() == (split_dir / DEFAULT_IMAGE_MODALITY).resolve()  # type: ignore[arg-type]
        target = FolderTarget(split_dir, "none" if in_place else config.rgb)
        progress = label_folder(items, target, labelers, config.batch_size, config.workers, config.max_images,
                                show, desc)
    else:
        progress = label_shards(shards, split_dir, labelers, config.batch_size, config.workers, config.max_images,
                                show, desc)
    write_text_atomic(part, json.dumps(asdict(progress), indent=1) + "\n", unique=True)
    merged = merge_parts(root, config.split, world)
    return LabelReport(rank, world, progress, root / MANIFEST, merged)
