"""The manifest written next to generated data: what is there and how to decode it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multimae.data.codecs import DEPTH_SCALE, MAPS, SEQUENCES, STORED
from multimae.data.world import CLASS_NAMES, GENERATOR_VERSION, LABEL_NAMES, PALETTE, SEQUENCE_BINS
from multimae.engine.files import write_text_atomic

MANIFEST = "manifest.json"
# How the world's files of each encoding are written, as the manifest tells readers.
_ENTRIES: dict[str, dict[str, Any]] = {
    "depth16": {"encoding": "png16", "scale": DEPTH_SCALE, "units": "millimetres (value = depth * scale)",
                "invalid": 0},
    "unit_vectors8": {"encoding": "png8", "decode": "value / 127.5 - 1, renormalised",
                      "frame": "camera: x right, y down, z forward"},
    "class_ids": {"encoding": "png8 (png16 above 256 classes)"},
    "box_text": {"encoding": "text", "units": "pixels of the maps: v0=xmin v1=ymin v2=xmax v3=ymax (inclusive) name"},
    "sequence_text": {"encoding": "text", "bins": SEQUENCE_BINS},
}


def world_manifest(fmt: str, size: int, difficulty: float, class_colors: float = 0.0) -> dict[str, Any]:
    """The manifest of a fresh output directory (splits are added as they are written)."""
    return {
        "generator": "multimae.data.world",
        "generator_version": GENERATOR_VERSION,
        "format": fmt,
        "size": size,
        "difficulty": difficulty,
        "class_colors": class_colors,
        "classes": list(CLASS_NAMES),
        "num_classes": len(CLASS_NAMES),
        "palette": [list(c) for c in PALETTE],
        "label_names": list(LABEL_NAMES),
        **{m: dict(_ENTRIES[STORED[m]]) for m in MAPS if STORED[m] in _ENTRIES},  # depth, normals, semseg
        "sequences": {m: dict(_ENTRIES[STORED[m]]) for m in SEQUENCES},  # boxes, metadata, palette
        "splits": {},
    }


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of ``root`` (or of its parent, for a split folder), or None."""
    for path in (Path(root) / MANIFEST, Path(root).parent / MANIFEST):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
    return None


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace ``root/manifest.json`` atomically (a per-process temporary file, so that several
    processes writing at once never interleave)."""
    write_text_atomic(Path(root) / MANIFEST, json.dumps(manifest, indent=2) + "\n", unique=True)
