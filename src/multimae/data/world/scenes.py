"""Scene descriptions and their seeded sampling.

A `Scene` is plain data (camera, room, lights, objects); `sample_scene` draws one from a
`numpy.random.Generator`, and `scene_rng(split, index)` gives the generator of scene ``index`` of
``split``: the same on every machine and in every worker, with disjoint streams per split.

World frame: ``y`` up, the floor is the plane ``y = 0`` and the room is the box
``[-half_x, half_x] x [0, height] x [-half_z, half_z]``; every object rests on the floor and turns
about the vertical axis only, so every ray from the camera hits something at a bounded distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from multimae.data.world.classes import CLASS_COLORS, COLORS, MATERIALS, OBJECT_CLASSES, TEXTURES

WORLD_SEED = 0x4D4D4145  # "MMAE": changing it (or the sampling below) changes every scene
GENERATOR_VERSION = "world-1"
SPLITS: tuple[str, ...] = ("train", "val", "test", "text")  # text: scenes whose captions are a text-only corpus
MAX_OBJECTS = 6


def scene_rng(split: str, index: int) -> np.random.Generator:
    """The random generator of scene ``index`` of ``split`` (train / val / test / text)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    seq = np.random.SeedSequence(WORLD_SEED, spawn_key=(SPLITS.index(split), int(index)))
    return np.random.Generator(np.random.PCG64(seq))


@dataclass(frozen=True)
class Texture:
    """A procedural surface pattern mixing two sRGB colours.

    ``kind`` is one of `TEXTURES`; ``period`` is the pattern period in scene units; ``noise`` is a
    small periodic grid of values in [0, 1] for the ``noise`` kind (bilinearly interpolated).
    """

    kind: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    period: float = 1.0
    angle: float = 0.0
    noise: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SceneObject:
    """One object resting on the floor.

    ``size`` is the object's half-width (radius for round shapes); ``height`` its full height.
    """

    shape: str
    x: float
    z: float
    yaw: float
    size: float
    height: float
    color_name: str
    material: str

    @property
    def footprint(self) -> float:
        """Radius of the circle on the floor that contains the object."""
        return self.size * (math.sqrt(2.0) if self.shape in ("cube", "pyramid") else 1.0)

    @property
    def bounding_radius(self) -> float:
        return math.hypot(self.footprint, self.height / 2)

    @property
    def centre(self) -> tuple[float, float, float]:
        return (self.x, self.height / 2, self.z)


@dataclass(frozen=True)
class Light:
    position: tuple[float, float, float]
    intensity: float


@dataclass(frozen=True)
class Camera:
    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float  # vertical field of view


@dataclass(frozen=True)
class Scene:
    half_x: float
    half_z: float
    height: float
    floor: Texture
    wall: Texture
    ceiling: tuple[float, float, float]
    objects: tuple[SceneObject, ...]
    lights: tuple[Light, ...]
    ambient: float
    camera: Camera


def check_world_settings(difficulty: float, class_colors: float) -> None:
    """Raise ``ValueError`` unless both settings are in [0, 1]."""
    for name, value in (("difficulty", difficulty), ("class_colors", class_colors)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _color(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi, 3))  # type: ignore[return-value]


def _texture(rng: np.random.Generator, textured: bool, lo: float, hi: float) -> Texture:
    kind = _pick(rng, TEXTURES[1:]) if textured else "plain"
    color_a = _color(rng, lo, hi)
    shift = rng.uniform(0.12, 0.3) * rng.choice([-1.0, 1.0])
    color_b = tuple(float(np.clip(c + shift, 0.0, 1.0)) for c in color_a)
    noise = rng.uniform(0.0, 1.0, (16, 16)) if kind == "noise" else None
    return Texture(kind, color_a, color_b, float(rng.uniform(0.5, 1.5)), float(rng.uniform(0, math.pi)), noise)


def _objects(rng: np.random.Generator, count: int, shiny_p: float, class_colors: float,
             tint: np.random.Generator | None) -> tuple[SceneObject, ...]:
    """``tint`` draws which objects wear their class's colour (None when ``class_colors`` is 0)."""
    placed: list[SceneObject] = []
    for _ in range(count):
        shape = _pick(rng, OBJECT_CLASSES)
        size = float(rng.uniform(0.3, 1.0))
        height = {
            "sphere": 2 * size,
            "cube": 2 * size,
            "capsule": 2 * size + float(rng.uniform(0.5, 1.5)) * size,
        }.get(shape, float(rng.uniform(1.2, 2.6)) * size)
        color_name = _pick(rng, list(COLORS))
        if tint is not None and tint.uniform() < class_colors:
            color_name = CLASS_COLORS[shape]
        material = MATERIALS[1] if rng.uniform() < shiny_p else MATERIALS[0]
        yaw = float(rng.uniform(0, 2 * math.pi))
        for _attempt in range(30):
            x, z = (float(v) for v in rng.uniform(-2.6, 2.6, 2))
            candidate = SceneObject(shape, x, z, yaw, size, height, color_name, material)
            if all(math.hypot(x - o.x, z - o.z) > candidate.footprint + o.footprint + 0.05 for o in placed):
                placed.append(candidate)
                break
    return tuple(placed)


def _camera(rng: np.random.Generator, objects: tuple[SceneObject, ...], half_x: float, half_z: float,
            height: float) -> Camera:
    cx = float(np.mean([o.x for o in objects]))
    cz = float(np.mean([o.z for o in objects]))
    target = (cx + float(rng.normal(0, 0.3)), float(rng.uniform(0.2, 0.8)), cz + float(rng.normal(0, 0.3)))
    azimuth = float(rng.uniform(0, 2 * math.pi))
    elevation = math.radians(float(rng.uniform(15, 55)))
    distance = float(rng.uniform(5.0, 9.0))
    pos = np.array([
        target[0] + distance * math.cos(elevation) * math.cos(azimuth),
        target[1] + distance * math.sin(elevation),
        target[2] + distance * math.cos(elevation) * math.sin(azimuth),
    ])
    margin = 0.3
    pos = np.clip(pos, [-half_x + margin, 0.5, -half_z + margin], [half_x - margin, height - margin, half_z - margin])
    return Camera(tuple(float(v) for v in pos), target, float(rng.uniform(40, 65)))  # type: ignore[arg-type]


def sample_scene(rng: np.random.Generator, difficulty: float = 1.0, class_colors: float = 0.0) -> Scene:
    """Draw one scene. ``difficulty`` in [0, 1] scales the object count (1 to 1 + 5 * difficulty),
    the chance of textured floor and walls, the chance of shiny objects and of a second light, and
    lowers the ambient light. ``class_colors`` in [0, 1] is the chance that an object wears its
    class's colour (`CLASS_COLORS`) instead of one of all `COLORS` at random: at 0 (the default)
    only its shape tells an object's class. It changes object colours only, never the layout."""
    check_world_settings(difficulty, class_colors)
    half_x, half_z = (float(v) for v in rng.uniform(6.0, 9.0, 2))
    height = float(rng.uniform(4.0, 6.0))
    textured_p = 0.3 + 0.6 * difficulty
    floor = _texture(rng, rng.uniform() < textured_p, 0.25, 0.8)
    wall = _texture(rng, rng.uniform() < textured_p, 0.35, 0.9)
    ceiling = _color(rng, 0.7, 0.95)
    max_objects = 1 + round((MAX_OBJECTS - 1) * difficulty)
    # a separate stream for the colour choice: every other draw, so every scene's layout, stays the same
    tint = rng.spawn(1)[0] if class_colors > 0 else None
    objects = _objects(rng, int(rng.integers(1, max_objects + 1)), 0.15 + 0.5 * difficulty, class_colors, tint)
    num_lights = 2 if rng.uniform() < 0.2 + 0.6 * difficulty else 1
    lights = []
    for _ in range(num_lights):
        r, a = float(rng.uniform(1.0, 5.0)), float(rng.uniform(0, 2 * math.pi))
        y = float(rng.uniform(height * 0.6, height - 0.2))
        lights.append(Light((r * math.cos(a), y, r * math.sin(a)), float(rng.uniform(0.6, 1.0)) / num_lights ** 0.5))
    ambient = float(rng.uniform(0.3, 0.45)) - 0.15 * difficulty
    camera = _camera(rng, objects, half_x, half_z, height)
    return Scene(half_x, half_z, height, floor, wall, ceiling, objects, tuple(lights), ambient, camera)
