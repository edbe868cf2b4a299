"""Linear probing of a frozen encoder (M3AE's evaluation) and the world facts it is scored on."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import tiny_config

from multimae.cli.main import main
from multimae.convert import save_multimae
from multimae.data.world import FACTS, scene_facts, visible_objects, world_sample
from multimae.data.world.classes import COLORS
from multimae.model import MultiMAE
from multimae.tasks.probe import ProbeSettings, accuracy, encoder_features, majority_accuracy, train_probe

WORDS = ("no", "one", "two", "three", "four", "five", "six")


@pytest.mark.parametrize("index", range(12))
def test_facts_are_what_the_caption_says(index):
    ws = world_sample("val", index, 64)
    facts = scene_facts(visible_objects(ws.scene, ws.rendering))
    assert set(facts) == set(FACTS) and all(0 <= facts[k] < FACTS[k] for k in FACTS)
    text = ws.caption
    others = re.search(r" and (\w+) other object", text)
    two = any(f" {rel} " in text for rel in ("left of", "right of", "in front of", "behind", "next to"))
    expected = 2 + WORDS.index(others.group(1)) if others else (2 if two else 1)
    assert facts["objects"] == expected, text
    first_phrase_colours = [c for c in COLORS if re.match(rf"^an? (\w+ )*{c} ", text)]
    assert list(COLORS)[facts["color"]] in first_phrase_colours, text
    assert facts["label"] == ws.label


def test_probe_learns_a_separable_target_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g)
    score = x[:, 3] + 0.5 * x[:, 7]
    x[:, 3] += 0.5 * score.sign()  # a margin around the boundary
    y = (score > 0).long()
    settings = ProbeSettings(epochs=30, batch_size=64)
    probe = train_probe(x[:300], y[:300], 2, settings)
    assert accuracy(probe, x[300:], y[300:]) > 0.95
    noise = torch.randint(0, 4, (400,), generator=g)
    chance = train_probe(x[:300], noise[:300], 4, settings)
    assert accuracy(chance, x[300:], noise[300:]) < 0.45
    assert majority_accuracy(torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0, 0])) == 0.25


def test_features_are_frozen_unmasked_and_pooled_as_asked():
    model = MultiMAE(tiny_config()).train()
    images = torch.rand(5, 3, 32, 32)
    glob, mean = encoder_features(model, images, "global", batch_size=2), encoder_features(model, images, "mean")
    assert glob.shape == mean.shape == (5, 32) and not torch.allclose(glob, mean)
    assert model.training  # mode restored
    with torch.no_grad():
        from multimae.modalities.prepare import prepare_batch

        rgb = prepare_batch({"rgb": images}, model.input_specs, {}).inputs["rgb"]
        enc = model.eval().backbone.forward_encoder({"rgb": rgb})
    torch.testing.assert_close(glob, enc.global_tokens[:, -1])
    with pytest.raises(ValueError, match="pooling"):
        encoder_features(model, images, "max")


def test_probe_command_reports_the_encoder_a_random_one_and_the_majority(tmp_path, capsys):
    path = save_multimae(MultiMAE(tiny_config()), tmp_path / "model.safetensors")
    out = tmp_path / "probe.json"
    code = main(["probe", "--checkpoint", str(path), "--train-scenes", "24", "--val-scenes", "12", "--epochs", "3",
                 "--target", "label,color", "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["encoder"]) == set(result["random_encoder"]) == {"label", "color"}
    assert all(0.0 <= v[s] <= 1.0 for v in result["encoder"].values() for s in ("train", "val"))
    assert 0.0 < result["most_frequent_class"]["label"] <= 1.0
    with pytest.raises(SystemExit, match="known targets are label, objects, color"):
        main(["probe", "--checkpoint", str(path), "--target", "shape"])
