"""`run_tokenize`: a data source pre-tokenised into webdataset shards (the format of
`multimae.data.token_shards`), resumable shard by shard and split over ranks.

Sample ``i`` of the source (its first ``limit`` samples) goes to shard ``i // shard_size``: shard
``s`` always holds samples ``[s * S, (s + 1) * S)``. A shard is written to ``<name>.tmp`` and renamed
when complete, then its record ``.parts/<name>.json`` (sample count, sha256) is written: a shard is
complete when both exist, so a killed run leaves nothing that looks complete. ``resume`` skips
complete shards and redoes the others; without it, a folder where this process already finished
shards is refused. The manifest is written first without shards (the plan: source, crops, seed,
tokenizer hashes, ...); a run whose plan differs from the folder's is refused, resumed or not.

Ranks (``rank`` / ``world_size``, else torchrun's ``RANK`` / ``WORLD_SIZE``): rank r writes shards
r, r + W, ... No process group is needed: each process, when its shards are done, looks at the
records of all shards and, if every one is there, completes the manifest (per shard its name, count
and sha256; the same content whoever writes it, each write atomic).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from multimae.data.codecs import BOXES
from multimae.data.sources import SampleSource, open_source
from multimae.data.token_shards import FORMAT, PARTS, TOKEN_MANIFEST, VERSION, ids_dtype, shard_name
from multimae.engine.distributed import resolve_rank
from multimae.engine.files import atomic_path, write_text_atomic
from multimae.pretokenize.crops import CropConfig, crop_view, map_size, plan_crops
from multimae.pretokenize.encode import encode_samples, stack_raw
from multimae.tokenizers.base import Tokenizer, load_tokenizer

PLAN_FIELDS = ("format", "version", "source", "crops", "tokenizers", "pixels", "shard_size", "batch_size",
               "num_samples", "num_shards")  # what a resumed run must agree with


@dataclass(frozen=True)
class TokenizeConfig:
    data: str  # world, a folder-layout root or tar shards (`multimae.data.sources.open_source`)
    out: str  # the token-shard folder
    tokenizers: Mapping[str, str]  # modality -> folder of a saved tokenizer
    pixels: tuple[str, ...] = ()  # pictures (values in [0, 1]: rgb) also kept as pixels at each crop (4M's RGB input)
    crops: CropConfig = field(default_factory=CropConfig)
    shard_size: int = 1000  # samples per shard
    image_size: int | None = None  # pixels maps are resized to (default: each tokenizer's training size)
    seed: int = 0  # the crops' seed
    resume: bool = False
    limit: int | None = None  # tokenise the first ``limit`` samples of the source
    split: str = "train"  # the split of a folder root, shard root or the world
    world_scenes: int = 1000  # world: scenes 0 .. world_scenes-1
    render_size: int | None = None  # world: render size (default: the largest image size)
    world_class_colors: float = 0.0  # world: chance that an object wears its class's colour (pre-training presets: 0.8)
    batch_size: int = 8  # samples encoded together (each with its K crops)
    rank: int | None = None  # this process's shards (default: $RANK, or 0)
    world_size: int | None = None  # number of processes (default: $WORLD_SIZE, or 1)
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.tokenizers:
            raise ValueError("give at least one tokenizer (modality -> folder)")
        for name in (*self.tokenizers, *self.pixels):
            if not name or "." in name or "/" in name:
                raise ValueError(f"modality {name!r}: a name without '.' or '/' (it names shard members)")
        for option in ("shard_size", "batch_size", "world_scenes", "image_size", "render_size", "limit"):
            value = getattr(self, option)
            if value is not None and value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        if (self.rank is None) != (self.world_size is None):
            raise ValueError("give both rank and world_size, or neither (then $RANK / $WORLD_SIZE are used)")


@dataclass
class TokenizeReport:
    """What `run_tokenize` did in this process."""

    rank: int
    world_size: int
    written: list[int]  # shards written by this call
    skipped: list[int]  # shards of this process that were already complete
    samples: int  # samples encoded by this call
    complete: bool  # every shard exists and the manifest says so
    manifest: Path


def load_tokenizers(folders: Mapping[str, str]) -> dict[str, Tokenizer]:
    """Each modality's saved tokenizer; a ValueError for a missing folder or one of another modality."""
    tokenizers = {}
    for modality, folder in folders.items():
        if not Path(folder).is_dir():
            raise ValueError(f"{modality}={folder}: no such tokenizer folder")
        tokenizer = load_tokenizer(folder)
        spec = getattr(tokenizer, "spec", None)  # map tokenizers know their modality
        if spec is not None and spec.name != modality:
            raise ValueError(f"{modality}={folder}: that is a {spec.name} tokenizer, not a {modality} one")
        tokenizers[modality] = tokenizer
    return tokenizers


def image_sizes(config: TokenizeConfig, tokenizers: Mapping[str, Tokenizer]) -> dict[str, int | None]:
    """Pixels each modality's crops are resized to: ``config.image_size``, else the ``data.image_size``
    of the tokenizer's training run; boxes: the coordinate bins of their sequence tokenizer; None for
    other sequences (text is not resized)."""
    from multimae.tokenizers.training import run_config_of

    sizes: dict[str, int | None] = {}
    for modality, tokenizer in tokenizers.items():
        if tokenizer.placement != "grid":
            sizes[modality] = getattr(tokenizer, "coord_bins", None) if modality in BOXES else None
            continue
        run = run_config_of(config.tokenizers[modality])
        size = config.image_size or (run.data.image_size if run is not None else None)
        if size is None:
            raise ValueError(f"{modality}: its tokenizer folder has no training config saying its image size; "
                             "give image_size (--image-size)")
        sizes[modality] = size
    return sizes


def pixel_sizes(config: TokenizeConfig, sizes: Mapping[str, int | None], render: int) -> dict[str, int]:
    """Pixels each kept picture is resized to: its tokenizer's size when it is tokenised too, else
    ``config.image_size``, else the render size."""
    return {m: sizes.get(m) or config.image_size or render for m in config.pixels}  # type: ignore[misc]


def make_plan(config: TokenizeConfig, source: SampleSource, tokenizers: Mapping[str, Tokenizer],
              sizes: Mapping[str, int | None], pixels: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The manifest without its shards. Sample 0's central crop is encoded once to learn each
    tokenizer's grid (and to fail early on a modality the data lacks, a size a tokenizer refuses, or
    a kept picture that is not one)."""
    from multimae.pretokenize.encode import pixel_bytes

    count = min(len(source.samples), config.limit or len(source.samples))  # type: ignore[arg-type]
    if count < 1:
        raise ValueError(f"{config.data}: no samples")
    first = source.samples[0]
    pixels = dict(pixels or {})
    crop0 = plan_crops(map_size(first, list(dict.fromkeys([*tokenizers, *pixels]))), CropConfig(), 0, 0)[0]
    view = crop_view(first, crop0, sizes)
    kept = {}
    for modality, picture in crop_view(first, crop0, pixels).items():
        probe = pixel_bytes(modality, picture)  # type: ignore[arg-type]
        kept[modality] = {"size": pixels[modality], "channels": int(probe.shape[0]), "dtype": "uint8"}
    entries = {}
    for modality, tokenizer in tokenizers.items():
        probe = tokenizer.encode(stack_raw([view[modality]]))  # type: ignore[arg-type]
        entries[modality] = {
            "content_hash": tokenizer.content_hash, "type": tokenizer.type_name, "vocab_size": tokenizer.vocab_size,
            "placement": probe.placement, "grid": list(probe.grid) if probe.grid else None,
            "num_tokens": probe.ids.shape[1] if probe.placement != "sequence" else None,  # a grid's, global tokens' T
            "image_size": None if modality in BOXES else sizes[modality], "dtype": ids_dtype(tokenizer.vocab_size).name,
            **({"coord_bins": sizes[modality]} if modality in BOXES else {})}
    return {
        "format": FORMAT, "version": VERSION,
        "source": {"kind": source.kind, "data": config.data, **source.record},
        "crops": {**config.crops.record(), "seed": config.seed, "first": "central square, unflipped"},
        "tokenizers": entries, **({"pixels": kept} if kept else {}), "shard_size": config.shard_size, "batch_size": config.batch_size,
        "num_samples": count, "num_shards": -(-count // config.shard_size), "shards": [], "complete": False,
    }


# --------------------------------------------------------------------------- shards

def _part(out: Path, shard: int) -> Path:
    return out / PARTS / f"{shard_name(shard).removesuffix('.tar')}.json"


def is_complete(out: Path, shard: int) -> bool:
    """The shard was renamed into place and its record written after it."""
    return (out / shard_name(shard)).is_file() and _part(out, shard).is_file()


def shard_range(plan: Mapping[str, Any], shard: int) -> range:
    """The source indices shard ``shard`` holds."""
    size = plan["shard_size"]
    return range(shard * size, min((shard + 1) * size, plan["num_samples"]))


def _batches(indices: range, size: int) -> Iterator[range]:
    for start in range(indices.start, indices.stop, size):
        yield range(start, min(start + size, indices.stop))


def write_token_shard(out: Path, shard: int, plan: Mapping[str, Any], source: SampleSource,
                      tokenizers: Mapping[str, Tokenizer], sizes: Mapping[str, int | None], config: TokenizeConfig,
                      bar: tqdm) -> None:
    """Encode the samples of shard ``shard`` into ``out/<name>`` (written as ``<name>.tmp``, renamed
    when complete), then write its record."""
    import webdataset as wds

    _part(out, shard).unlink(missing_ok=True)
    indices = shard_range(plan, shard)
    with atomic_path(out / shard_name(shard)) as tmp:
        with tmp.open("wb") as stream, wds.TarWriter(stream, user="", group="", mode=0o644, mtime=0) as sink:
            for batch in _batches(indices, config.batch_size):
                samples = [(i, source.samples[i]) for i in batch]
                for record in encode_samples(samples, tokenizers, sizes, config.crops, config.seed,
                                             plan.get("pixels") and {m: e["size"] for m, e in plan["pixels"].items()}):
                    sink.write(record)
                bar.update(len(batch))
    digest = hashlib.sha256((out / shard_name(shard)).read_bytes()).hexdigest()
    record = {"name": shard_name(shard), "samples": len(indices), "sha256": digest}
    write_text_atomic(_part(out, shard), json.dumps(record) + "\n")


def complete_manifest(out: Path, plan: Mapping[str, Any]) -> bool:
    """Write the full manifest if every shard is complete; True if it was written."""
    if not all(is_complete(out, s) for s in range(plan["num_shards"])):
        return False
    shards = [json.loads(_part(out, s).read_text()) for s in range(plan["num_shards"])]
    write_text_atomic(out / TOKEN_MANIFEST, json.dumps({**plan, "shards": shards, "complete": True}, indent=2) + "\n",
                      unique=True)
    return True


def _start(out: Path, plan: dict[str, Any], mine: list[int], resume: bool) -> None:
    """Write the plan, or check it against the folder's; refuse to redo finished shards without ``resume``."""
    path = out / TOKEN_MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in PLAN_FIELDS if old.get(k) != plan.get(k)]
        if changed:
            raise ValueError(f"{out} holds token shards of another run (it differs in {', '.join(changed)}); "
                             "choose another folder")
        done = [s for s in mine if is_complete(out, s)]
        if done and not resume:
            raise ValueError(f"{out} already holds {len(done)} finished shard(s) of this run: pass resume "
                             "(--resume) to finish the others")
        if old.get("complete"):
            return
    write_text_atomic(path, json.dumps(plan, indent=2) + "\n", unique=True)


def run_tokenize(config: TokenizeConfig) -> TokenizeReport:
    """Tokenise this process's shards of ``config`` (see the module docstring)."""
    rank, world, _ = resolve_rank(config.rank, config.world_size)
    out = Path(config.out)
    tokenizers = load_tokenizers(config.tokenizers)
    sizes = image_sizes(config, tokenizers)
    render = config.render_size or max([s for m, s in sizes.items() if s is not None and m not in BOXES], default=64)
    pixels = pixel_sizes(config, sizes, render)
    render = max([render, *pixels.values()])
    source = open_source(config.data, list(dict.fromkeys([*tokenizers, *pixels])), config.split, config.world_scenes,
                         render, config.world_class_colors)
    plan = make_plan(config, source, tokenizers, sizes, pixels)
    mine = list(range(rank, plan["num_shards"], world))
    _start(out, plan, mine, config.resume)
    skipped = [s for s in mine if is_complete(out, s)]
    todo = [s for s in mine if s not in skipped]
    total = sum(len(shard_range(plan, s)) for s in todo)
    desc = "tokenizing" + (f" (rank {rank}/{world})" if world > 1 else "")
    with tqdm(total=total, desc=desc, unit="sample", disable=not config.progress or rank != 0,
              dynamic_ncols=True) as bar:
        for shard in todo:
            write_token_shard(out, shard, plan, source, tokenizers, sizes, config, bar)
    complete = complete_manifest(out, plan)
    return TokenizeReport(rank, world, todo, skipped, total, complete, out / TOKEN_MANIFEST)
