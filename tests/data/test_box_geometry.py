"""Boxes through crops, resizes and flips (`transform_boxes`, the pre-tokenizer's `crop_view`), checked
against the boxes of the transformed instance map, and the checks of stored box text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multimae.data import WorldDataset
from multimae.data.boxes import Box, boxes_of_instances, check_boxes_text, parse_boxes, transform_boxes
from multimae.data.world import visible_objects, world_sample
from multimae.pretokenize import CropConfig, crop_view, plan_crops

SIZE = 48
SCENES = range(12)


def _scene(index: int) -> tuple[dict[str, object], dict[int, str]]:
    """World scene ``index`` with its instance map and boxes named ``<shape>#<object>`` (unique names,
    so each box can be matched with its object after a transform)."""
    ws = world_sample("train", index, SIZE)
    number = {id(o): k + 1 for k, o in enumerate(ws.scene.objects)}
    visible = visible_objects(ws.scene, ws.rendering)
    names = {number[id(v.obj)]: f"{v.obj.shape}#{number[id(v.obj)]}" for v in visible}
    boxes = boxes_of_instances(ws.rendering.instance, names, SIZE)
    text = " ".join(f"v0={b.xmin} v1={b.ymin} v2={b.xmax} v3={b.ymax} {b.name}" for b in boxes)
    return {"instance": torch.from_numpy(ws.rendering.instance.astype(np.int64)), "boxes": text, "key": str(index)}, names


def _view(sample: dict[str, object], crop: np.ndarray, bins: int) -> tuple[dict[str, Box], dict[str, Box]]:
    """(boxes moved through ``crop``, boxes of the instance map seen through it), by name."""
    view = crop_view(sample, crop, {"instance": bins, "boxes": bins})
    return {b.name: b for b in parse_boxes(str(view["boxes"]))}, view["instance"]


def test_the_whole_picture_at_its_own_size_keeps_every_box():
    for index in SCENES:
        sample, _ = _scene(index)
        moved, _ = _view(sample, np.array([0, 0, SIZE, SIZE, 0]), SIZE)
        assert sorted(moved.values(), key=str) == sorted(parse_boxes(str(sample["boxes"])), key=str)


def test_a_flip_gives_the_boxes_of_the_mirrored_instance_map():
    for index in SCENES:
        sample, names = _scene(index)
        moved, instance = _view(sample, np.array([0, 0, SIZE, SIZE, 1]), SIZE)
        truth = {b.name: b for b in boxes_of_instances(instance.numpy(), names, SIZE)}
        assert moved == truth and len(truth) >= 1


@pytest.mark.parametrize("bins", [SIZE, 32])
def test_crops_keep_every_visible_object_inside_its_moved_box(bins):
    """Clipping a box to a crop can only make it larger than the box of the object's pixels inside
    the crop (an object seen in two parts), never smaller; an object the crop still shows keeps its box
    and one it cuts away loses it."""
    crops = CropConfig(num_crops=5, scale=(0.2, 1.0))
    kept = dropped = 0
    excess = []  # bins each moved edge lies outside the object's pixels
    for index in SCENES:
        sample, names = _scene(index)
        for crop in plan_crops((SIZE, SIZE), crops, seed=1, index=index):
            moved, instance = _view(sample, crop, bins)
            truth = {b.name: b for b in boxes_of_instances(instance.numpy(), names, bins)}
            assert set(truth) <= set(moved)
            for name, t in truth.items():
                m = moved[name]
                assert m.xmin <= t.xmin and m.ymin <= t.ymin and m.xmax >= t.xmax and m.ymax >= t.ymax, (index, crop)
                assert 0 <= m.xmin and m.xmax < bins and 0 <= m.ymin and m.ymax < bins
                excess += [t.xmin - m.xmin, t.ymin - m.ymin, m.xmax - t.xmax, m.ymax - t.ymax]
            kept += len(truth)
            dropped += len(names) - len(moved)
    assert kept > 100 and dropped > 0
    assert np.median(excess) <= 1 and np.mean(np.array(excess) <= 1) > 0.9  # the cases of two parts are few


def test_transform_boxes_by_hand():
    box = Box(10, 4, 19, 7, "cube")
    # Crop x 10..29, y 0..19 resized to 10 bins: x 10..19 -> bins 0..4, y 4..7 -> bins 2..3.
    assert transform_boxes([box], (0, 10, 20, 20), 10) == [Box(0, 2, 4, 3, "cube")]
    assert transform_boxes([box], (0, 10, 20, 20), 10, flipped=True) == [Box(5, 2, 9, 3, "cube")]
    assert transform_boxes([box], (0, 20, 20, 20), 10) == []  # cut away
    assert transform_boxes([box], (0, 19, 20, 20), 10) == [Box(0, 2, 0, 3, "cube")]  # one column left
    near, far = Box(30, 30, 35, 35, "cone"), Box(0, 0, 3, 3, "sphere")
    assert [b.name for b in transform_boxes([near, far], (0, 0, 40, 40), 40, flipped=True)] == ["cone", "sphere"]


def test_stored_box_text_is_checked():
    assert check_boxes_text("", "x") == []
    assert check_boxes_text("v0=1 v1=2 v2=3 v3=4 cube", "x", (8, 8)) == [Box(1, 2, 3, 4, "cube")]
    with pytest.raises(ValueError, match="f.txt: not a list of boxes"):
        check_boxes_text("v0=1 v1=2 v2=3 cube", "f.txt")
    with pytest.raises(ValueError, match="min after its max"):
        check_boxes_text("v0=5 v1=2 v2=3 v3=4 cube", "f.txt")
    with pytest.raises(ValueError, match="reaches outside the 8x6 \\(WxH\\) maps"):
        check_boxes_text("v0=1 v1=2 v2=3 v3=6 cube", "f.txt", (6, 8))


def test_boxes_without_maps_are_refused():
    with pytest.raises(ValueError, match="tokenize them together with a map modality"):
        crop_view({"boxes": "v0=1 v1=2 v2=3 v3=4 cube", "key": "k"}, np.zeros(5, np.int64), {"boxes": 8})


def test_the_world_dataset_gives_its_sequences_on_request():
    world = WorldDataset("train", size=SIZE, length=2, modalities=("rgb", "boxes", "metadata", "palette"))
    sample = world[0]
    ws = world_sample("train", 0, SIZE)
    assert parse_boxes(str(sample["boxes"])) == check_boxes_text(str(sample["boxes"]), "x", (SIZE, SIZE))
    assert parse_boxes(str(sample["boxes"])) and str(sample["metadata"]).startswith("objects v0=")
    assert len(str(sample["palette"]).split()) == 12 and sample["caption"] == ws.caption
    assert "boxes" not in WorldDataset("train", size=SIZE, length=2)[0]  # maps only by default
    with pytest.raises(ValueError, match="the world has no modality \\['heat'\\]"):
        WorldDataset("train", size=SIZE, length=2, modalities=("heat",))


def test_box_scores_by_hand():
    from multimae.data.boxes import box_scores

    truth = [[Box(0, 0, 9, 9, "cube"), Box(20, 20, 29, 29, "cone")], [Box(5, 5, 6, 6, "sphere")]]
    assert box_scores(truth, truth) == {"recall_iou": 1.0, "recall_50": 1.0, "precision_iou": 1.0, "count_acc": 1.0,
                                        "boxes_predicted": 3.0, "boxes_true": 3.0}
    half = [[Box(0, 0, 4, 9, "cube"), Box(20, 20, 29, 29, "sphere")], []]  # half a cube; a sphere for the cone
    scores = box_scores(half, truth)
    assert scores["recall_iou"] == pytest.approx(0.5 / 3) and scores["recall_50"] == pytest.approx(1 / 3)
    assert scores["precision_iou"] == pytest.approx(0.25) and scores["count_acc"] == 0.5
    with pytest.raises(ValueError, match="2 predicted scenes for 1 true"):
        box_scores(truth, truth[:1])
