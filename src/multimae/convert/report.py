"""What a conversion did: which tensors were mapped, dropped or left missing, and how the
architecture was inferred. Every converter returns one; ``multimae convert`` prints its summary."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConversionReport:
    """Attributes:
    source_format: what the input was recognised as (e.g. ``"official MultiMAE (MultiViT layout)"``).
    target_format: what was produced (``"multimae"``, ``"timm VisionTransformer"``).
    mapped: ``{source key: target key}`` for every tensor that was carried over (several source
        keys may map to one target key when a format stores one module under two names).
    dropped: ``{source key: reason}`` for source tensors that have no place in the target.
    missing: target keys no source tensor filled (they keep their initial values).
    inferred: ``{setting: "value (how it was found)"}`` for the architecture read off the tensors.
    notes: anything else a user should know (assumptions, semantic differences).
    """

    source_format: str
    target_format: str
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    inferred: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def infer(self, setting: str, value: Any, how: str) -> None:
        self.inferred[setting] = f"{value} ({how})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_format": self.source_format, "target_format": self.target_format, "mapped": self.mapped,
            "dropped": self.dropped, "missing": self.missing, "inferred": self.inferred, "notes": self.notes,
        }

    def summary(self) -> str:
        """A short human-readable account (keys grouped by module, block indices collapsed)."""
        lines = [f"{self.source_format} -> {self.target_format}"]
        if self.inferred:
            lines.append("architecture:")
            lines += [f"  {k}: {v}" for k, v in self.inferred.items()]
        lines.append(f"mapped: {len(self.mapped)} tensors")
        lines += [f"  {g}: {n}" for g, n in _groups(self.mapped).items()]
        lines.append(f"dropped: {len(self.dropped)} tensors")
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.dropped.items():
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            groups = ", ".join(f"{g} ({_count_and_names(ks)})" for g, ks in _by_group(keys).items())
            lines.append(f"  {groups}: {reason}")
        left = " (left at their initial values)" if self.missing else ""
        lines.append(f"missing: {len(self.missing)} tensors{left}")
        lines += [f"  {g}: {_count_and_names(ks)}" for g, ks in _by_group(self.missing).items()]
        if self.notes:
            lines.append("notes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


_INDEX = re.compile(r"\.\d+(?=\.|$)")
NAMED_UP_TO = 3  # groups of missing or dropped tensors this small list their keys


def _group(key: str) -> str:
    """``encoder.3.attn.qkv.weight`` -> ``encoder.*``; ``input_adapters.rgb.proj.weight`` ->
    ``input_adapters.rgb``; a top-level tensor is its own group."""
    parts = _INDEX.sub(".*", key).split(".")
    if len(parts) == 1:
        return parts[0]
    if parts[0] in ("input_adapters", "output_adapters") and len(parts) > 2:
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if parts[1] == "*" else parts[0]


def _groups(keys: Any) -> dict[str, int]:
    return dict(Counter(_group(k) for k in keys))


def _by_group(keys: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in keys:
        out.setdefault(_group(key), []).append(key)
    return out


def _count_and_names(keys: list[str]) -> str:
    """``3`` for a large group; ``1: encoder.0.attn.qkv.bias`` when it is small enough to name."""
    return f"{len(keys)}: {', '.join(keys)}" if len(keys) <= NAMED_UP_TO else str(len(keys))
