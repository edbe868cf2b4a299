"""One M3AE pre-training step next to one MultiMAE step of the same encoder, in one process.

M3AE: rgb patches + a caption of ``--text-length`` tokens (vocabulary ``--vocab``, BERT's by
default) in the encoder, mask ratios 0.75 / 0.75 per sample, one joint decoder over every image
and text position (M3AE's ViT-B decoder: 512 wide, 8 blocks, 16 heads unless changed), MSE on
masked patches and cross-entropy on masked words. MultiMAE: rgb + depth + semseg, ``--num-visible``
visible tokens, one cross-attention decoder per output. Steps alternate between the two models so
that both see the machine's load of the moment; the ratio is what to read.

    .venv/bin/python benchmarks/bench_m3ae_step.py                     # ViT-B/16, 224 px, 196 + 64 tokens
    .venv/bin/python benchmarks/bench_m3ae_step.py --size tiny --depth 6 --image-size 64 --patch-size 8 --num-visible 32 \
        --batch 32 --decoder-dim 128 --decoder-depth 2 --decoder-heads 4 --vocab 228 --text-length 32   # the m3ae-cpu model
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_pretrain_step import make_batch, matmul_peak, step_plan
from torch.utils.flop_counter import FlopCounterMode

from multimae.engine.precision import autocast, set_fused_attention, small_check
from multimae.losses import MultiMAELoss
from multimae.masking.samplers import FixedRatioMasking
from multimae.modalities.spec import ModalitySpec
from multimae.model import MultiMAE, model_config

TEXT = "caption"  # the benchmark's own text modality


def build(args: argparse.Namespace) -> dict:
    """``{name: (model, loss, inputs, targets, draw)}`` for M3AE and MultiMAE."""
    torch.manual_seed(0)
    encoder = {"image_size": args.image_size, "patch_size": args.patch_size, **({"depth": args.depth} if args.depth else {})}
    text = ModalitySpec(name=TEXT, kind="tokens", num_channels=args.vocab, loss="cross_entropy",
                        max_length=args.text_length, pad_id=0)
    m3ae_cfg = model_config(args.size, encoder=encoder, inputs=("rgb", TEXT), outputs=("rgb", TEXT),
                            custom_modalities={TEXT: text},
                            decoder={"dim": args.decoder_dim, "depth": args.decoder_depth,
                                     "num_heads": args.decoder_heads, "kind": "joint"})
    mae_cfg = model_config(args.size, encoder=encoder, modality_overrides={"semseg": {"num_channels": args.num_classes}})
    m3ae, mae = MultiMAE(m3ae_cfg), MultiMAE(mae_cfg)
    g = torch.Generator().manual_seed(0)
    images = make_batch(args.batch, args.image_size, args.num_classes)
    ids = torch.randint(1, args.vocab, (args.batch, args.text_length), generator=g)
    lengths = torch.randint(args.text_length // 4, args.text_length + 1, (args.batch,), generator=g)
    ids[torch.arange(args.text_length)[None] >= lengths[:, None]] = 0  # padded captions of varied length
    grid = (args.image_size // args.patch_size) ** 2
    sampler = FixedRatioMasking({"rgb": 0.75, TEXT: 0.75})
    m3ae_inputs = {"rgb": images["rgb"], TEXT: ids}

    def m3ae_draw():
        d = sampler({"rgb": grid, TEXT: args.text_length}, args.batch, g, {TEXT: ids != 0})
        return d.hidden, d.target

    def mae_draw():
        return mae.backbone.sample_masks(images, args.num_visible, generator=g), None

    return {
        "m3ae": (m3ae, MultiMAELoss(m3ae.output_specs, args.patch_size), m3ae_inputs, m3ae_inputs, m3ae_draw),
        "multimae": (mae, MultiMAELoss(mae.output_specs, args.patch_size), images,
                     {**images, "norm_rgb": images["rgb"]}, mae_draw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base")
    parser.add_argument("--depth", type=int, help="encoder blocks (default: the size's)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--decoder-dim", type=int, default=512)
    parser.add_argument("--decoder-depth", type=int, default=8)
    parser.add_argument("--decoder-heads", type=int, default=16)
    parser.add_argument("--num-visible", type=int, default=98)
    parser.add_argument("--num-classes", type=int, default=133)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--slow-bf16", action="store_true", help="where bf16 is emulated, time one bf16 step anyway")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    small = small_check()
    emulated = small.bf16_s > small.fp32_s
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, small.shape[0] if emulated else 2048)}
    print(f"threads={args.threads}  matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} "
          f"GFLOP/s{' (bf16 is emulated here: ' + small.describe() + ')' if emulated else ''}")
    runs = build(args)
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
            for n, (m, *_) in runs.items()}
    grid = (args.image_size // args.patch_size) ** 2
    print(f"model {args.size}, {args.image_size} px, patch {args.patch_size}, batch {args.batch}: M3AE {grid} image + "
          f"{args.text_length} text tokens (25 % visible), decoder {args.decoder_dim}x{args.decoder_depth}; "
          f"MultiMAE 3 x {grid} tokens, {args.num_visible} visible")

    def step(name: str, precision: str) -> None:
        model, loss_fn, inputs, targets, draw = runs[name]
        hidden, target = draw()
        with autocast(model, "cpu", precision):
            out = model(inputs, hidden, targets=target)
            loss = loss_fn(out.preds, targets, out.masks, out.valid).total
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    flops = {}
    for name, (model, loss_fn, inputs, targets, draw) in runs.items():
        counter = FlopCounterMode(display=False)
        with counter:
            hidden, target = draw()
            set_fused_attention(model, False)
            out = model(inputs, hidden, targets=target)
            loss_fn(out.preds, targets, out.masks, out.valid).total.backward()
        opts[name].zero_grad(set_to_none=True)
        flops[name] = counter.get_total_flops()
    for precision in args.precision:
        plan = step_plan(precision, emulated, args)
        if plan is None:
            continue
        warmup, steps = plan
        for _ in range(warmup):
            for name in runs:
                step(name, precision)
        times: dict[str, list[float]] = {n: [] for n in runs}
        for _ in range(steps):
            for name in runs:  # alternate
                t = time.perf_counter()
                step(name, precision)
                times[name].append(time.perf_counter() - t)
        med = {n: statistics.median(ts) for n, ts in times.items()}
        for name in runs:
            print(f"{precision} {name}: step {med[name]:.3f} s, {args.batch / med[name]:.2f} images/s, "
                  f"{flops[name] / 1e9:.1f} GFLOP/step, {100 * flops[name] / med[name] / peaks[precision]:.0f} % of the "
                  f"{precision} matmul peak")
        print(f"{precision}: M3AE / MultiMAE step time {med['m3ae'] / med['multimae']:.2f}")


if __name__ == "__main__":
    main()
