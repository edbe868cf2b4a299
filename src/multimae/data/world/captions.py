"""Scene labels and one-sentence captions that are true of the rendered image.

Both are computed from what the camera sees (the instance map), not from the scene list, so an
object that is occluded or out of view is never mentioned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multimae.data.world.classes import COLORS, OBJECT_CLASSES, TEXTURE_WORDS
from multimae.data.world.render import Rendering
from multimae.data.world.scenes import Scene, SceneObject

SMALL, LARGE = 0.5, 0.8  # object half-widths below / above which captions say "small" / "large"
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class VisibleObject:
    """An object seen in the image: its scene entry, pixel count, mean column and mean depth."""

    obj: SceneObject
    pixels: int
    column: float
    depth: float


def visible_objects(scene: Scene, rendering: Rendering, min_fraction: float = 0.002) -> list[VisibleObject]:
    """Objects covering at least ``min_fraction`` of the image (and 3 pixels), largest first."""
    inst = rendering.instance.ravel()
    num_pixels = inst.size
    counts = np.bincount(inst, minlength=len(scene.objects) + 1)
    cols = np.bincount(inst, weights=np.tile(np.arange(rendering.instance.shape[1]), rendering.instance.shape[0]),
                       minlength=len(counts))
    depths = np.bincount(inst, weights=rendering.depth.ravel().astype(np.float64), minlength=len(counts))
    threshold = max(3, min_fraction * num_pixels)
    seen = [
        VisibleObject(obj, int(counts[k + 1]), cols[k + 1] / counts[k + 1], depths[k + 1] / counts[k + 1])
        for k, obj in enumerate(scene.objects)
        if counts[k + 1] >= threshold
    ]
    return sorted(seen, key=lambda v: -v.pixels)


def scene_label(visible: list[VisibleObject]) -> int:
    """Index into `LABEL_NAMES` of the largest visible object (by pixels)."""
    if not visible:
        raise ValueError("a scene with no visible object has no label")
    return OBJECT_CLASSES.index(visible[0].obj.shape)


# Facts about a scene that its caption states and its image shows (linear-probe targets), with
# the number of classes of each: the label (largest object's class), how many objects are seen
# (0-6, as the caption counts them), and the named colour of the largest object.
FACTS: dict[str, int] = {"label": len(OBJECT_CLASSES), "objects": len(_NUMBERS), "color": len(COLORS)}


def scene_facts(visible: list[VisibleObject]) -> dict[str, int]:
    """``{fact: class index}`` for each of `FACTS` (``visible`` as `visible_objects` returns it)."""
    if not visible:
        raise ValueError("a scene with no visible object has no facts")
    return {"label": scene_label(visible), "objects": min(len(visible), len(_NUMBERS) - 1),
            "color": list(COLORS).index(visible[0].obj.color_name)}


def object_phrase(obj: SceneObject) -> str:
    """"a small shiny red cube": size word (if not medium), material (if shiny), colour, shape."""
    words = []
    if obj.size < SMALL:
        words.append("small")
    elif obj.size > LARGE:
        words.append("large")
    if obj.material == "shiny":
        words.append("shiny")
    words += [obj.color_name, obj.shape]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def _relation(a: VisibleObject, b: VisibleObject, width: int) -> str:
    if abs(a.column - b.column) > 0.08 * width:
        return "left of" if a.column < b.column else "right of"
    if abs(a.depth - b.depth) > 0.5:
        return "in front of" if a.depth < b.depth else "behind"
    return "next to"


def caption(scene: Scene, visible: list[VisibleObject], width: int) -> str:
    """One English sentence, e.g. "a small red cube left of a large blue sphere on a checkered floor"."""
    if not visible:
        text = "an empty room"
    elif len(visible) == 1:
        text = object_phrase(visible[0].obj)
    else:
        a, b = visible[0], visible[1]
        text = f"{object_phrase(a.obj)} {_relation(a, b, width)} {object_phrase(b.obj)}"
        rest = len(visible) - 2
        if rest:
            text += f" and {_NUMBERS[rest]} other object{'s' if rest > 1 else ''}"
    text += f" on a {TEXTURE_WORDS[scene.floor.kind]} floor"
    if scene.wall.kind != "plain":
        text += f" by a {TEXTURE_WORDS[scene.wall.kind]} wall"
    return text


# What a caption says, read back from its words (`caption_attributes`): the first-named (largest
# visible) object's colour and shape, the number of objects, and the floor.
CAPTION_ATTRIBUTES: tuple[str, ...] = ("color", "shape", "objects", "floor")


def caption_attributes(text: str) -> dict[str, str | None]:
    """``{attribute: value or None}`` of `CAPTION_ATTRIBUTES` read from a caption in the world's
    grammar (`caption`); a generated caption that does not say one gives None for it."""
    words = text.lower().replace(",", " ").split()
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in OBJECT_CLASSES), None)
    floor = next((words[i - 1] for i in range(1, len(words)) if words[i] == "floor"), None)
    if "empty" in words:
        count: str | None = "0"
    elif shape is None:
        count = None
    else:
        named = sum(w in OBJECT_CLASSES for w in words)
        others = next((_NUMBERS.index(words[i - 1]) for i in range(1, len(words))
                       if words[i] in ("other", "others") and words[i - 1] in _NUMBERS), 0)
        count = str(named + others)
    return {"color": color, "shape": shape, "objects": count, "floor": floor}
