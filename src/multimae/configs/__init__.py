"""Shipped run presets (YAML). `preset_path("cpu")` -> the file of a named preset."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """A preset name (``cpu``, ``paper-vitb``) or a path to a YAML file."""
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    path = Path(name_or_path)
    if path.exists():
        return path
    raise ValueError(f"config {name_or_path!r} is neither a preset ({', '.join(preset_names())}) nor a file")
