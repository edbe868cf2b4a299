"""Labelling speed of the paper's two labelers at full size (random weights, no download).

Builds DPT-Hybrid (the architecture of Intel/dpt-hybrid-midas, 384 px) and Mask2Former with a
Swin-S backbone (the architecture of facebook/mask2former-swin-small-coco-panoptic, 133 classes,
shorter side 384 px), saves them to a temporary directory, loads them by path as the labelers do,
and times `Labeler.__call__` on 640 x 480 images. Prints images/s; never asserts.

    python benchmarks/bench_pseudolabel.py --device cpu --images 8 --batch-size 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(root: Path) -> dict[str, Path]:
    import transformers as tf

    bit = tf.BitConfig(global_padding="same", layer_type="bottleneck", depths=[3, 4, 9],
                       out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True)
    dpt = tf.DPTConfig(is_hybrid=True, backbone_config=bit, backbone_out_indices=[2, 5, 8, 11],
                       neck_hidden_sizes=[256, 512, 768, 768], backbone_featmap_shape=[1, 1024, 24, 24])
    tf.DPTForDepthEstimation(dpt).save_pretrained(root / "dpt")
    tf.DPTImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3
                         ).save_pretrained(root / "dpt")
    swin = tf.SwinConfig(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7,
                         out_features=["stage1", "stage2", "stage3", "stage4"])
    m2f = tf.Mask2FormerConfig(backbone_config=swin, num_labels=133, num_queries=100)
    tf.Mask2FormerForUniversalSegmentation(m2f).save_pretrained(root / "m2f")
    tf.Mask2FormerImageProcessor(size={"shortest_edge": 384, "longest_edge": 1333}).save_pretrained(root / "m2f")
    return {"dpt-hybrid": root / "dpt", "mask2former-coco-panoptic": root / "m2f"}


def main() -> None:
    from multimae.pseudolabel import build_labeler, get_labeler

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build(Path(tmp)).items():
            labeler = build_labeler(get_labeler(name).modality, name, str(path), device=args.device,
                                    batch_size=args.batch_size, precision=args.precision)
            labeler(images[: args.batch_size])  # load and warm up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            labeler(images)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            print(f"{name:<28} {args.device} {args.precision} batch {args.batch_size}: "
                  f"{args.images / wall:.2f} images/s ({wall:.1f} s for {args.images} images of 640x480)")


if __name__ == "__main__":
    main()
