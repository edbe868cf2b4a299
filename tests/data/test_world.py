import hashlib
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from multimae.data.codecs import DEPTH_MAX
from multimae.data.collate import collate
from multimae.data.generated import WorldDataset
from multimae.data.transforms import RandomResizedCropFlip
from multimae.data.world import (
    BACKGROUND_CLASSES,
    CLASS_NAMES,
    LABEL_NAMES,
    NUM_CLASSES,
    OBJECT_CLASSES,
    PALETTE,
    render,
    sample_scene,
    scene_rng,
    world_sample,
)
from multimae.data.world.captions import visible_objects
from multimae.data.world.classes import CLASS_COLORS, COLORS
from multimae.data.world.render import camera_basis

HASH_CODE = """
import hashlib, sys
from multimae.data.world import world_sample
h = hashlib.sha256()
for i in range(3):
    r = world_sample("val", i, 24).rendering
    for a in (r.rgb, r.depth, r.normals, r.semseg, r.instance):
        h.update(a.tobytes())
print(h.hexdigest())
"""


def test_scenes_are_identical_in_another_process():
    h = hashlib.sha256()
    for i in range(3):
        r = world_sample("val", i, 24).rendering
        for a in (r.rgb, r.depth, r.normals, r.semseg, r.instance):
            h.update(a.tobytes())
    out = subprocess.run([sys.executable, "-c", HASH_CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == h.hexdigest()


def test_workers_give_the_same_batches_as_the_main_process():
    ds = WorldDataset("train", size=24, length=4, transform=RandomResizedCropFlip(16))
    main = list(DataLoader(ds, batch_size=2, collate_fn=collate))
    workers = list(DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=2))
    for a, b in zip(main, workers):
        assert a["caption"] == b["caption"]
        for k in ("rgb", "normals", "semseg", "instance", "label"):
            assert torch.equal(a[k], b[k])
        assert torch.equal(a["depth"].nan_to_num(-1), b["depth"].nan_to_num(-1))


def test_splits_are_disjoint():
    def signature(split, i):
        s = sample_scene(scene_rng(split, i))
        return (s.camera.position, s.half_x, s.half_z)

    seen = {split: {signature(split, i) for i in range(50)} for split in ("train", "val", "test")}
    assert all(len(v) == 50 for v in seen.values())
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    with pytest.raises(ValueError, match="split"):
        scene_rng("validation", 0)


def test_class_constants():
    assert CLASS_NAMES == BACKGROUND_CLASSES + OBJECT_CLASSES and NUM_CLASSES == len(CLASS_NAMES)
    assert len(PALETTE) == NUM_CLASSES and len(set(PALETTE)) == NUM_CLASSES
    assert LABEL_NAMES == OBJECT_CLASSES and len(OBJECT_CLASSES) >= 5


@pytest.mark.parametrize("index", range(4))
def test_outputs_are_aligned_and_bounded(index):
    ws = world_sample("train", index, 32)
    r = ws.rendering
    assert r.rgb.shape == (32, 32, 3) and r.rgb.dtype == np.uint8
    assert r.depth.shape == (32, 32) and np.isfinite(r.depth).all()
    assert r.depth.min() > 0 and r.depth.max() < DEPTH_MAX
    np.testing.assert_allclose(np.linalg.norm(r.normals, axis=-1), 1.0, atol=1e-4)
    assert r.semseg.min() >= 0 and r.semseg.max() < NUM_CLASSES
    objects = r.semseg >= len(BACKGROUND_CLASSES)
    assert np.array_equal(objects, r.instance > 0)  # every object pixel has an instance, and only those
    for inst in np.unique(r.instance[r.instance > 0]):
        assert len(np.unique(r.semseg[r.instance == inst])) == 1  # one class per instance
    # normals face the camera: the angle to the viewing ray is below 90 degrees
    size = 32
    u = ((np.arange(size) + 0.5) / size * 2 - 1) * math.tan(math.radians(ws.scene.camera.fov_deg) / 2)
    rays = np.stack(np.broadcast_arrays(u[None, :], u[:, None], np.ones((size, size))), -1)
    assert (np.einsum("hwc,hwc->hw", rays, r.normals) < 1e-3).all()


@pytest.mark.parametrize("index", range(3))
def test_depth_agrees_with_normals_on_the_floor(index):
    ws = world_sample("test", index, 40)
    r, cam = ws.rendering, ws.scene.camera
    size, tan_half = 40, math.tan(math.radians(cam.fov_deg) / 2)
    floor = r.semseg == CLASS_NAMES.index("floor")
    v, u = np.nonzero(floor)
    z = r.depth[floor].astype(np.float64)
    points = np.stack([((u + 0.5) / size * 2 - 1) * tan_half * z, ((v + 0.5) / size * 2 - 1) * tan_half * z, z], 1)
    normals = r.normals[floor].astype(np.float64)
    np.testing.assert_allclose(normals, normals[:1].repeat(len(normals), 0), atol=1e-5)  # a plane
    np.testing.assert_allclose(normals[0], camera_basis(cam) @ [0.0, 1.0, 0.0], atol=1e-5)
    # every floor point X satisfies n . X = -(camera height above the floor)
    np.testing.assert_allclose(points @ normals[0], -cam.position[1], atol=1e-3)


@pytest.mark.parametrize("index", range(12))
def test_captions_and_labels_are_true(index):
    ws = world_sample("train", index, 32)
    visible = visible_objects(ws.scene, ws.rendering)
    seen = {(v.obj.color_name, v.obj.shape) for v in visible}
    pattern = rf"\b({'|'.join(COLORS)}) ({'|'.join(OBJECT_CLASSES)})\b"
    mentioned = set(re.findall(pattern, ws.caption))
    assert mentioned and mentioned <= seen, ws.caption
    counts = np.bincount(ws.rendering.instance.ravel())
    largest = ws.scene.objects[int(np.argmax(counts[1:]))]
    assert LABEL_NAMES[ws.label] == largest.shape
    assert ws.caption.split(" on a ")[1].split()[0] in ("plain", "checkered", "striped", "mottled")


# The first train scenes of world-1 (objects as (shape, colour), vertical field of view): with
# class_colors = 0 (the default) the world must stay exactly this.
WORLD_1_TRAIN = [
    ([("cone", "cyan"), ("cube", "white"), ("cube", "pink"), ("sphere", "pink")], 63.175074),
    ([("cylinder", "purple"), ("cylinder", "white"), ("cone", "pink"), ("cylinder", "pink"), ("sphere", "orange"),
      ("capsule", "purple")], 43.533141),
    ([("cone", "purple")], 44.240821),
    ([("cylinder", "red")], 52.921243),
]


def test_default_world_is_unchanged():
    for i, (objects, fov) in enumerate(WORLD_1_TRAIN):
        for scene in (sample_scene(scene_rng("train", i)), sample_scene(scene_rng("train", i), 1.0, 0.0)):
            assert [(o.shape, o.color_name) for o in scene.objects] == objects
            assert scene.camera.fov_deg == pytest.approx(fov, abs=1e-6)


def test_class_colors_tie_colour_to_class():
    def objects(class_colors):
        return [o for i in range(60) for o in sample_scene(scene_rng("train", i), 1.0, class_colors).objects]

    always = objects(1.0)
    assert len(always) > 100 and all(o.color_name == CLASS_COLORS[o.shape] for o in always)
    half = objects(0.5)
    # drawn at random, an object still wears its class's colour 1 time in 10: 0.5 + 0.5 / 10 in all
    share = np.mean([o.color_name == CLASS_COLORS[o.shape] for o in half])
    assert 0.45 < share < 0.65
    never = objects(0.0)
    assert np.mean([o.color_name == CLASS_COLORS[o.shape] for o in never]) < 0.2
    assert [(o.shape, o.x, o.z, o.size) for o in always] == [(o.shape, o.x, o.z, o.size) for o in never]  # layout kept
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="class_colors"):
            sample_scene(scene_rng("train", 0), 1.0, bad)
    for i in range(5):  # captions name the colours the objects wear
        caption = world_sample("train", i, 32, class_colors=1.0).caption
        pairs = re.findall(rf"\b({'|'.join(COLORS)}) ({'|'.join(OBJECT_CLASSES)})\b", caption)
        assert pairs and all(color == CLASS_COLORS[shape] for color, shape in pairs), caption


def test_difficulty_controls_object_count():
    easy = [len(sample_scene(scene_rng("train", i), difficulty=0.0).objects) for i in range(20)]
    hard = [len(sample_scene(scene_rng("train", i), difficulty=1.0).objects) for i in range(20)]
    assert set(easy) == {1} and max(hard) > 3
    with pytest.raises(ValueError, match="difficulty"):
        sample_scene(scene_rng("train", 0), difficulty=2.0)


def test_antialiasing_only_changes_rgb():
    scene = sample_scene(scene_rng("train", 5))
    a, b = render(scene, 24, antialias=True), render(scene, 24, antialias=False)
    assert np.array_equal(a.depth, b.depth) and np.array_equal(a.semseg, b.semseg)
    assert not np.array_equal(a.rgb, b.rgb)


def test_dataset_sample_layout():
    ds = WorldDataset("val", size=24, length=3)
    s = ds[1]
    assert s["rgb"].shape == (3, 24, 24) and s["rgb"].dtype == torch.float32
    assert 0 <= s["rgb"].min() and s["rgb"].max() <= 1
    assert s["depth"].shape == (1, 24, 24) and s["normals"].shape == (3, 24, 24)
    assert s["semseg"].dtype == torch.int64 and s["instance"].shape == (24, 24)
    assert isinstance(s["label"], int) and isinstance(s["caption"], str)
    batch = collate([ds[0], ds[1]])
    assert batch["rgb"].shape == (2, 3, 24, 24) and batch["label"].shape == (2,)
    assert isinstance(batch["caption"], list) and len(batch["caption"]) == 2
    with pytest.raises(IndexError):
        ds[3]


def test_caption_attributes_read_back_what_the_scene_facts_say():
    """A true caption's attributes are the scene's facts: the largest object's colour and shape,
    the number of visible objects (as the caption counts them) and the floor's texture word."""
    from multimae.data.world import LABEL_NAMES, caption_attributes, scene_facts, visible_objects, world_sample
    from multimae.data.world.classes import COLORS, TEXTURE_WORDS

    checked = 0
    for i in range(40):
        ws = world_sample("val", i, 64, 1.0)
        visible = visible_objects(ws.scene, ws.rendering)
        said = caption_attributes(ws.caption)
        if not visible:
            assert said["objects"] == "0"
            continue
        facts = scene_facts(visible)
        assert said["color"] == list(COLORS)[facts["color"]]
        assert said["shape"] == LABEL_NAMES[facts["label"]] == visible[0].obj.shape
        assert said["objects"] == str(facts["objects"])
        assert said["floor"] == TEXTURE_WORDS[ws.scene.floor.kind]
        checked += 1
    assert checked > 30
    assert caption_attributes("a red") == {"color": "red", "shape": None, "objects": None, "floor": None}
