import math

import pytest
import torch

from multimae.modalities import (
    BUILTIN_MODALITIES, ModalitySpec, get_modality, prepare_batch, resolve_modalities, robust_standardize,
    spec_from_dict,
)


def test_builtins_describe_the_paper_modalities():
    rgb, depth, semseg = (BUILTIN_MODALITIES[n] for n in ("rgb", "depth", "semseg"))
    assert (rgb.num_channels, rgb.loss, rgb.normalization) == (3, "mse", "imagenet")
    assert (depth.num_channels, depth.loss, depth.normalization) == (1, "l1", "robust_standardize")
    assert (semseg.kind, semseg.stride, semseg.class_emb_dim, semseg.patch_size(16)) == ("categorical", 4, 64, 4)
    assert BUILTIN_MODALITIES["normals"].num_channels == 3
    norm_rgb = BUILTIN_MODALITIES["norm_rgb"]
    assert not norm_rgb.is_input and norm_rgb.is_output and norm_rgb.source_name == "rgb"
    assert norm_rgb.loss == "norm_pix_mse"


def test_unknown_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown modality 'thermal'"):
        get_modality("thermal")


def test_overrides_and_custom_specs():
    thermal = ModalitySpec(name="thermal", num_channels=1, loss="l1")
    specs = resolve_modalities(["rgb", "thermal", "semseg"], {"thermal": thermal}, {"semseg": {"num_channels": 40}})
    assert list(specs) == ["rgb", "thermal", "semseg"]
    assert specs["semseg"].num_channels == 40 and specs["thermal"] is thermal
    with pytest.raises(ValueError, match="not used"):
        resolve_modalities(["rgb"], overrides={"depth": {"num_channels": 2}})
    with pytest.raises(ValueError, match="unknown spec field"):
        resolve_modalities(["rgb"], overrides={"rgb": {"channels": 2}})
    assert spec_from_dict({"name": "edges", "num_channels": 1, "mean": [0.5], "std": [0.2]}).mean == (0.5,)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"kind": "voxels"}, "kind must be one of"),
        ({"loss": "huber"}, "loss must be one of"),
        ({"kind": "categorical", "loss": "mse"}, "cross_entropy"),
        ({"is_input": False, "is_output": False}, "neither an input nor an output"),
        ({"normalization": "imagenet"}, "needs mean and std"),
        ({"num_channels": 0}, "num_channels"),
    ],
)
def test_invalid_specs_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        ModalitySpec(name="x", **fields)


def test_robust_standardize_on_a_known_array():
    # 10 values 0..9: the kept slice [1, 9) is 1..8, mean 4.5, unbiased var 6.
    x = torch.arange(10.0).reshape(1, 1, 2, 5)
    out = robust_standardize(x)
    expected = (torch.arange(10.0) - 4.5) / math.sqrt(6.0 + 1e-6)
    torch.testing.assert_close(out.flatten(), expected)


def test_robust_standardize_ignores_invalid_pixels():
    valid = torch.arange(10.0)
    x = torch.cat([valid, torch.full((6,), float("nan"))]).reshape(1, 1, 4, 4)
    out = robust_standardize(x).flatten()
    torch.testing.assert_close(out[:10], (valid - 4.5) / math.sqrt(6.0 + 1e-6))
    assert torch.isnan(out[10:]).all()
    # Outliers beyond the trimmed 10 % do not move the statistics.
    y = x.clone().flatten()
    y[0], y[9] = -1e6, 1e6
    torch.testing.assert_close(robust_standardize(y.reshape(1, 1, 4, 4)).flatten()[1:9], out[1:9])


def test_prepare_batch_normalises_downsamples_and_masks_invalid_depth():
    specs = resolve_modalities(["rgb", "depth", "semseg", "norm_rgb"], overrides={"semseg": {"num_channels": 4}})
    inputs_specs = {n: specs[n] for n in ("rgb", "depth", "semseg")}
    depth = torch.rand(2, 1, 8, 8) + 1
    depth[0, 0, 0, 0] = float("nan")
    semseg = torch.arange(64).reshape(1, 8, 8).repeat(2, 1, 1) % 4
    raw = {"rgb": torch.full((2, 3, 8, 8), 0.5), "depth": depth, "semseg": semseg}
    batch = prepare_batch(raw, inputs_specs, specs)
    torch.testing.assert_close(batch.inputs["rgb"][0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    assert batch.inputs["depth"][0, 0, 0, 0] == 0 and torch.isnan(batch.targets["depth"][0, 0, 0, 0])
    assert batch.inputs["semseg"].shape == (2, 2, 2)
    assert torch.equal(batch.inputs["semseg"][0], semseg[0, ::4, ::4])
    assert batch.targets["norm_rgb"] is batch.targets["rgb"]
    with pytest.raises(ValueError, match=r"class id out of range: found ids in \[1, 4\], the modality has 4 classes"):
        prepare_batch({"semseg": semseg + 1}, {"semseg": specs["semseg"]}, {})
    with pytest.raises(ValueError, match=r"expected a raw \(B, 1, H, W\)"):
        prepare_batch({"depth": torch.rand(2, 3, 8, 8)}, {"depth": specs["depth"]}, {})


def test_how_a_modality_is_drawn_comes_from_its_spec():
    from multimae.modalities.registry import display_of

    drawn = {n: s.drawn_as for n, s in BUILTIN_MODALITIES.items()}
    assert drawn == {"rgb": "rgb", "depth": "colormap", "semseg": "palette", "normals": "normals", "norm_rgb": "rgb",
                     "caption": "text", "feature": "colormap",  # a vector: a strip of its values
                     "boxes": "text", "metadata": "text", "palette": "text",  # serialised sequences: their words
                     **{f"tok_{m}": "instances" for m in ("rgb", "depth", "normals", "semseg", "feature")}}  # per code
    thermal = ModalitySpec(name="thermal", num_channels=1)
    assert thermal.drawn_as == "colormap" and thermal.replace(display="rgb").drawn_as == "rgb"
    assert display_of("thermal", {"thermal": thermal}) == "colormap" and display_of("thermal") is None
    assert display_of("instance") == "instances"
    with pytest.raises(ValueError, match="display must be one of"):
        ModalitySpec(name="x", display="sepia")
