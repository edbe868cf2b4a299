import dataclasses
import math
import re

import numpy as np
import pytest

from multimae.data.boxes import Box, parse_boxes
from multimae.data.world import (
    CLASS_NAMES,
    METADATA_FIELDS,
    OBJECT_CLASSES,
    SEQUENCE_WORDS,
    Rendering,
    boxes_text,
    metadata_text,
    palette_text,
    parse_metadata,
    parse_palette,
    visible_objects,
    world_sample,
    world_sequences,
)
from multimae.data.world.metadata import metadata_values
from multimae.data.world.palette import dominant_colors
from multimae.data.world.scenes import SceneObject

SCENES = [world_sample("train", i, 48) for i in range(4)]
FLOOR, WALL = CLASS_NAMES.index("floor"), CLASS_NAMES.index("wall")


def _object(shape: str) -> SceneObject:
    return SceneObject(shape, 0.0, 0.0, 0.0, 0.5, 1.0, "red", "matte")


def _rendering(instance: np.ndarray, depth: np.ndarray | None = None, rgb: np.ndarray | None = None,
               normals: np.ndarray | None = None, shapes: tuple[str, ...] = ()) -> Rendering:
    """A rendering whose semseg follows ``instance`` (room = floor; object k+1 = shapes[k])."""
    h, w = instance.shape
    classes = np.array([FLOOR] + [CLASS_NAMES.index(s) for s in shapes])
    return Rendering(
        rgb=np.full((h, w, 3), 128, np.uint8) if rgb is None else rgb,
        depth=np.ones((h, w), np.float32) if depth is None else depth,
        normals=np.tile(np.array([0, -1, 0], np.float32), (h, w, 1)) if normals is None else normals,
        semseg=classes[instance],
        instance=instance,
    )


def _scene(shapes: tuple[str, ...]):
    return dataclasses.replace(SCENES[0].scene, objects=tuple(_object(s) for s in shapes))


def _pixel_boxes(ws) -> set[Box]:
    """The pixel box of each visible object, straight from the instance map."""
    out = set()
    for v in visible_objects(ws.scene, ws.rendering):
        k = next(i for i, o in enumerate(ws.scene.objects) if o is v.obj)
        ys, xs = np.nonzero(ws.rendering.instance == k + 1)
        out.add(Box(xs.min(), ys.min(), xs.max(), ys.max(), v.obj.shape))
    return out


@pytest.mark.parametrize("ws", SCENES)
def test_boxes_at_pixel_bins_are_the_visible_objects_pixel_boxes(ws):
    size = ws.rendering.instance.shape[0]
    boxes = parse_boxes(boxes_text(ws.scene, ws.rendering, bins=size))
    assert len(boxes) == len(visible_objects(ws.scene, ws.rendering)) >= 1
    assert set(boxes) == _pixel_boxes(ws)
    dist = [math.hypot(b.xmin, b.ymin) for b in boxes]
    assert dist == sorted(dist)


@pytest.mark.parametrize("ws", SCENES[:2])
def test_boxes_at_fewer_bins_are_the_pixel_boxes_scaled_down(ws):
    size = ws.rendering.instance.shape[0]
    coarse = set(parse_boxes(boxes_text(ws.scene, ws.rendering, bins=size // 4)))
    assert coarse == {Box(b.xmin // 4, b.ymin // 4, b.xmax // 4, b.ymax // 4, b.name) for b in _pixel_boxes(ws)}
    for b in parse_boxes(boxes_text(ws.scene, ws.rendering, bins=size // 4)):
        assert 0 <= b.xmin <= b.xmax < size // 4 and 0 <= b.ymin <= b.ymax < size // 4


def test_boxes_of_a_handcrafted_instance_map():
    inst = np.zeros((20, 20), np.int64)
    inst[2:6, 10:15] = 1    # cube: x 10..14, y 2..5
    inst[12:19, 1:4] = 2    # second (identical) cube: x 1..3, y 12..18
    inst[8:10, 8:12] = 3    # cone: x 8..11, y 8..9
    inst[0, 0:2] = 4        # sphere of 2 pixels: below the visibility threshold (3 pixels), so no box
    scene = _scene(("cube", "cube", "cone", "sphere"))
    text = boxes_text(scene, _rendering(inst, shapes=("cube", "cube", "cone", "sphere")), bins=20)
    # (xmin, ymin) distances to the origin: 10.2, 11.3, 12.0
    assert text == "v0=10 v1=2 v2=14 v3=5 cube v0=8 v1=8 v2=11 v3=9 cone v0=1 v1=12 v2=3 v3=18 cube"
    assert boxes_text(scene, _rendering(np.zeros((20, 20), np.int64)), bins=20) == ""


@pytest.mark.parametrize("bins", [48, 20])
def test_every_visible_object_lies_in_a_box_of_its_shape(bins):
    ws = SCENES[1]
    size = ws.rendering.instance.shape[0]
    boxes = parse_boxes(boxes_text(ws.scene, ws.rendering, bins))
    for v in visible_objects(ws.scene, ws.rendering):
        k = next(i for i, o in enumerate(ws.scene.objects) if o is v.obj)
        ys, xs = np.nonzero(ws.rendering.instance == k + 1)
        bx, by = xs * bins // size, ys * bins // size  # the pixels' bins
        assert any(b.name == v.obj.shape and bx.min() >= b.xmin and bx.max() <= b.xmax
                   and by.min() >= b.ymin and by.max() <= b.ymax for b in boxes)


def test_metadata_of_an_all_floor_image():
    bins = 64
    got = parse_metadata(metadata_text(_scene(()), _rendering(np.zeros((16, 16), np.int64)), bins))
    assert list(got) == [f.name for f in METADATA_FIELDS]
    assert got["walkability"] == bins - 1
    assert got["objectness"] == got["objects"] == got["shapes"] == got["occlusion"] == 0
    assert got["classes"] == 1
    # flat grey 128: no contrast, saturation, colourfulness, entropy or normal variance
    assert got["contrast"] == got["saturation"] == got["colorfulness"] == got["entropy"] == got["complexity"] == 0
    assert got["brightness"] == math.floor((128 - 40) / 180 * bins)


def test_metadata_values_of_a_handcrafted_rendering():
    inst = np.zeros((8, 8), np.int64)
    inst[2:6, 0:4] = 1                              # near cube, 16 px
    inst[2:6, 4:7] = 2                              # farther sphere right of it, 12 px
    depth = np.where(inst == 1, 2.0, 5.0).astype(np.float32)
    normals = np.zeros((8, 8, 3), np.float32)
    normals[:4, :, 2], normals[4:, :, 2] = 1.0, -1.0  # opposite halves: mean normal 0
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)
    rgb[:, 4:] = (0, 0, 255)
    r = _rendering(inst, depth, rgb, normals, shapes=("cube", "sphere"))
    v = metadata_values(_scene(("cube", "sphere")), r)
    assert v["objects"] == v["shapes"] == 2 and v["classes"] == 3
    assert v["objectness"] == 28 / 64 and v["walkability"] == 36 / 64
    # outlines: cube 8 (top, bottom rows) + 2 (by the sphere); sphere 6 + 2 + 2; occluded: the sphere's
    # 4 pixels next to the nearer cube
    assert v["occlusion"] == pytest.approx(4 / 20)
    assert v["complexity"] == pytest.approx(1.0)
    grey = np.array([0.299 * 255] * 32 + [0.114 * 255] * 32)
    assert v["brightness"] == pytest.approx(grey.mean()) and v["contrast"] == pytest.approx(grey.std())
    assert v["saturation"] == 1.0
    assert v["entropy"] == pytest.approx(1.0)  # two grey levels, half the pixels each
    rg, yb = np.array([255.0] * 32 + [0.0] * 32), np.array([127.5] * 32 + [-255.0] * 32)
    expected = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert v["colorfulness"] == pytest.approx(expected)


@pytest.mark.parametrize("bins", [1, 7, 64])
def test_metadata_round_trip_and_range(bins):
    for ws in SCENES:
        text = metadata_text(ws.scene, ws.rendering, bins)
        got = parse_metadata(text)
        assert list(got) == [f.name for f in METADATA_FIELDS]
        assert " ".join(f"{k} v0={b}" for k, b in got.items()) == text
        assert all(0 <= b < bins for b in got.values())
        assert got["objects"] == min(len(visible_objects(ws.scene, ws.rendering)), bins - 1)


def test_palette_of_flat_colours_in_share_order():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :6] = (255, 0, 0)   # 3/4 red
    rgb[:, 6:] = (0, 0, 255)   # 1/4 blue
    assert parse_palette(palette_text(rgb, bins=256)) == [(255, 0, 0), (0, 0, 255)]
    assert palette_text(rgb, bins=64) == "v1=63 v2=0 v3=0 v1=0 v2=0 v3=63"
    assert parse_palette(palette_text(rgb, colors=1, bins=256)) == [(191, 0, 63)]  # the mean colour
    three = np.zeros((10, 10, 3), np.uint8)
    three[:5] = (10, 200, 30)
    three[5:8] = (250, 250, 250)
    three[8:] = (40, 40, 40)
    colors, shares = dominant_colors(three, 4)
    assert colors.tolist() == [[10, 200, 30], [250, 250, 250], [40, 40, 40]]
    assert shares.tolist() == [0.5, 0.3, 0.2]


def test_palette_of_world_images():
    for ws in SCENES:
        colors, shares = dominant_colors(ws.rendering.rgb, 4)
        assert len(colors) == 4 and np.all(np.diff(shares) <= 0) and shares.sum() == pytest.approx(1.0)
        parsed = parse_palette(palette_text(ws.rendering.rgb, 4, 64))
        assert len(parsed) == 4 and all(0 <= c < 64 for rgb in parsed for c in rgb)


def test_sequences_are_deterministic_and_use_known_words():
    a = world_sequences(world_sample("train", 2, 48))
    assert a == world_sequences(world_sample("train", 2, 48))
    assert set(a) == {"boxes", "metadata", "palette"}
    words = {w for text in a.values() for w in text.split() if not re.fullmatch(r"v[0-3]=\d+", w)}
    assert words <= set(SEQUENCE_WORDS)
    assert set(OBJECT_CLASSES) <= set(SEQUENCE_WORDS)
    assert len(set(SEQUENCE_WORDS)) == len(SEQUENCE_WORDS)
    assert all(w.isascii() and w.isalpha() and w.islower() for w in SEQUENCE_WORDS)


def test_bad_inputs_raise():
    ws = SCENES[0]
    for call in (lambda: boxes_text(ws.scene, ws.rendering, 0), lambda: metadata_text(ws.scene, ws.rendering, 0),
                 lambda: palette_text(ws.rendering.rgb, 4, 0), lambda: world_sequences(ws, bins=0)):
        with pytest.raises(ValueError, match="bins"):
            call()
    with pytest.raises(ValueError, match="uint8"):
        palette_text(ws.rendering.rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(48, 48\)"):
        palette_text(ws.rendering.rgb[..., 0])
    with pytest.raises(ValueError, match="colors"):
        palette_text(ws.rendering.rgb, colors=0)
