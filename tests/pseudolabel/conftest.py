"""Tiny random-weight networks of the real transformers classes, saved with ``save_pretrained``
and loaded by path as a user would load a downloaded checkpoint; photos rendered by the world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.data.world import world_sample

transformers = pytest.importorskip("transformers")


def _save(path: Path, model, processor) -> Path:
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_dpt_hybrid(path: Path) -> Path:
    """DPT-Hybrid (BiT + ViT) at 64 px: the class of Intel/dpt-hybrid-midas."""
    bit = transformers.BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
                                 out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True,
                                 hidden_sizes=[8, 16, 32], num_groups=2)
    config = transformers.DPTConfig(
        is_hybrid=True, backbone_config=bit, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=37, image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, backbone_featmap_shape=[1, 32, 4, 4],
        reassemble_factors=[1, 1, 1, 0.5])
    processor = transformers.DPTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3,
                                               image_std=[0.5] * 3)
    return _save(path, transformers.DPTForDepthEstimation(config), processor)


def tiny_depth_anything(path: Path) -> Path:
    """Depth Anything (DINOv2 backbone), shorter side 56 px, multiples of 14."""
    dino = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                                     image_size=28, patch_size=14, reshape_hidden_states=False,
                                     out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.DepthAnythingConfig(backbone_config=dino, neck_hidden_sizes=[16, 16, 32, 32],
                                              fusion_hidden_size=16, head_hidden_size=8, reassemble_hidden_size=32,
                                              patch_size=14)
    processor = transformers.DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                                               ensure_multiple_of=14)
    return _save(path, transformers.DepthAnythingForDepthEstimation(config), processor)


def tiny_mask2former(path: Path) -> Path:
    """Mask2Former (Swin backbone) with the 133 COCO-panoptic classes, shorter side 64 px."""
    swin = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 2, 2], window_size=2,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=swin, num_labels=133, num_queries=8, hidden_dim=32, mask_feature_size=32, feature_size=32,
        encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=32, dim_feedforward=32, num_attention_heads=2,
        common_stride=4)
    processor = transformers.Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    return _save(path, transformers.Mask2FormerForUniversalSegmentation(config), processor)


def tiny_segformer(path: Path, num_labels: int = 150) -> Path:
    config = transformers.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                          num_attention_heads=[1, 2], decoder_hidden_size=16, num_labels=num_labels,
                                          patch_sizes=[7, 3], strides=[4, 2])
    processor = transformers.SegformerImageProcessor(size={"height": 64, "width": 64})
    return _save(path, transformers.SegformerForSemanticSegmentation(config), processor)


def tiny_upernet(path: Path) -> Path:
    convnext = transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=convnext, hidden_size=16, num_labels=150,
                                        auxiliary_in_channels=24, auxiliary_channels=8, pool_scales=[1, 2])
    processor = transformers.SegformerImageProcessor(size={"height": 64, "width": 64})
    return _save(path, transformers.UperNetForSemanticSegmentation(config), processor)


TINY = {
    "dpt-hybrid": tiny_dpt_hybrid,
    "depth-anything-small": tiny_depth_anything,
    "mask2former-coco-panoptic": tiny_mask2former,
    "segformer-ade20k": tiny_segformer,
    "upernet-ade20k": tiny_upernet,
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{labeler name: directory of a tiny random-weight model of that labeler's class}."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for i, (name, build) in enumerate(TINY.items()):
        torch.manual_seed(i)
        out[name] = build(root / name)
    return out


def world_photo(index: int, size: int = 48) -> np.ndarray:
    """A rendered scene as an RGB photo ``(size, size, 3)`` uint8."""
    return world_sample("train", index, size).rendering.rgb


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Six photos of various kinds, one corrupt file and one text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(world_photo(i)).save(folder / f"scene{i}.png")
    Image.fromarray(world_photo(3)).save(folder / "scene3.jpg", quality=90)
    odd = np.asarray(Image.fromarray(world_photo(4, 64)).resize((50, 37)))  # odd size, not square
    Image.fromarray(odd).save(folder / "odd.jpg", quality=90)
    Image.fromarray(world_photo(5)).convert("L").save(folder / "gray.png")  # must be re-encoded as RGB
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder
