"""Bar charts of results over seeds (PIL only): one panel per metric, one bar per method with
its mean, the single runs as dots and the spread (mean +- sd) as a whisker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from multimae.viz.grid import BACKGROUND, TEXT, _font


@dataclass
class Panel:
    title: str  # e.g. "segmentation from depth: mIoU" (the default font has Latin glyphs only)
    labels: Sequence[str]  # one per bar
    runs: Sequence[Sequence[float]]  # per bar, the value of each seed
    higher_is_better: bool = True


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, sd


def bar_panels(panels: Sequence[Panel], colors: Sequence[Sequence[int]], columns: int = 3,
               size: tuple[int, int] = (300, 220)) -> Image.Image:
    """A grid of bar-chart panels (the y axis starts at 0 unless a value is negative)."""
    W, H = size
    rows = (len(panels) + columns - 1) // columns
    fig = Image.new("RGB", (columns * W, rows * H), BACKGROUND)
    draw = ImageDraw.Draw(fig)
    font, small = _font(13), _font(11)
    for i, p in enumerate(panels):
        x0, y0 = (i % columns) * W, (i // columns) * H
        top, bottom, left, right = y0 + 36, y0 + H - 30, x0 + 46, x0 + W - 12
        draw.text((x0 + W / 2, y0 + 10), p.title, fill=TEXT, font=font, anchor="mt")
        arrow = "higher is better" if p.higher_is_better else "lower is better"
        draw.text((x0 + W / 2, y0 + 24), arrow, fill=(110, 110, 110), font=small, anchor="mt")
        stats = [_mean_sd(r) for r in p.runs if r]
        flat = [v for r in p.runs for v in r] + [m + s for m, s in stats] or [0.0]
        lo, hi = min(0.0, min(flat)), max(flat) * 1.1 if max(flat) > 0 else 1.0
        scale = (bottom - top) / max(hi - lo, 1e-12)

        def y_of(v: float, _lo: float = lo, _s: float = scale, _b: int = bottom) -> float:
            return _b - (v - _lo) * _s

        draw.line([(left, top), (left, bottom), (right, bottom)], fill=TEXT)
        for tick in (lo, (lo + hi) / 2, hi):
            draw.text((left - 4, y_of(tick)), f"{tick:.3g}", fill=TEXT, font=small, anchor="rm")
        n = len(p.labels)
        slot = (right - left) / max(n, 1)
        for j, (label, values) in enumerate(zip(p.labels, p.runs)):
            cx = left + slot * (j + 0.5)
            color = tuple(int(c) for c in colors[j % len(colors)])
            if values:
                mean, sd = _mean_sd(values)
                draw.rectangle([cx - slot * 0.3, y_of(mean), cx + slot * 0.3, y_of(lo)], fill=color)
                draw.line([(cx, y_of(mean - sd)), (cx, y_of(mean + sd))], fill=TEXT, width=2)
                for v in values:
                    draw.ellipse([cx - 3, y_of(v) - 3, cx + 3, y_of(v) + 3], outline=TEXT, fill=BACKGROUND)
            draw.text((cx, bottom + 4), label, fill=TEXT, font=small, anchor="mt")
    return fig
