"""Official M3AE (young-geng/m3ae_public) and its MAE-JAX checkpoints -> our `MultiMAE`.

The JAX models are the M3AE configuration of our core: an encoder over [cls, image patches, text
tokens] and one joint decoder (`multimae.model.joint_decoder.JointDecoder`) with the full set of
decoders, so a converted file reconstructs masked patches and words (the official repository
never released its decoders as PyTorch: m3ae_public #10). An MAE-JAX tree (no text) becomes an
image-only model with the same decoder.

What differs, and how the conversion bridges it:
- Flax ``Dense`` kernels are ``(in, out)``: transposed to ``nn.Linear``'s ``(out, in)``; the patch
  embedding is a Dense over patches flattened as (row, column, channel): reshaped to a convolution;
  the image head predicts the same (row, column, channel) order: its rows are permuted to ours
  (channel, row, column).
- Flax ``nn.gelu`` is the tanh approximation: the model is built with ``act="gelu_tanh"``; Flax
  ``LayerNorm`` has eps 1e-6, as ours.
- The encoder's final LayerNorm becomes the decoder's ``context_norm`` (our encoder has none; the
  decoder normalises what it reads). Features of our encoder are therefore the official ones
  before that norm.
- The image type embedding is added to every image token: folded into the patch embedding's bias.
- Positions: the official 2-D sin-cos table puts the column coordinate in its first half (its
  meshgrid takes x first): the encoder's stored table is written in that order and the decoder is
  built with ``pos_2d="columns_first"``. The 1-D text table is the same as ours.
- Images: the official data pipeline normalises with the CC12M mean / std by default
  (``image_normalization="cc12m"``): the rgb spec carries those statistics. Pass ``image_mean`` /
  ``image_std`` for a model trained with ImageNet's.
- Not in the weights: the head counts (the official sizes: 6 / 12 / 16 / 16 for widths 384 / 768 /
  1024 / 1280, decoder 16), the image size (256, the official default) and the text length (64,
  its ``tokenizer_max_length``); the vocabulary is BERT's (``bert-base-uncased``, pad id 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from multimae.convert.flax_io import find_params, flatten, read_flax_file
from multimae.convert.report import ConversionReport
from multimae.layers.pos_embed import build_2d_sincos_pos_embed
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY, DEFAULT_TEXT_MODALITY
from multimae.model.config import DecoderConfig, EncoderConfig, MultiMAEConfig
from multimae.model.multimae import MultiMAE

SOURCE_FORMAT = "official M3AE / MAE (JAX, Flax parameter tree)"
OFFICIAL_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16}  # get_transformer_by_config: small, base, large, huge
OFFICIAL_DECODER_HEADS = 16
CC12M_MEAN = (0.5762, 0.5503, 0.5213)
CC12M_STD = (0.3207, 0.3169, 0.3307)
DEFAULT_IMAGE_SIZE = 256
DEFAULT_TEXT_LENGTH = 64
BERT_PAD_ID = 0
_BLOCK = re.compile(r"^(encoder|decoder)/Block_(\d+)/")


def looks_like_m3ae(flat: Mapping[str, np.ndarray]) -> bool:
    return "cls_token" in flat and "image_embedding/kernel" in flat and any(k.startswith("encoder/Block_0/") for k in flat)


def _depth(flat: Mapping[str, np.ndarray], part: str) -> int:
    ids = {int(m.group(2)) for k in flat if (m := _BLOCK.match(k)) and m.group(1) == part}
    if ids != set(range(len(ids))):
        raise ValueError(f"{part} blocks are not numbered 0..n-1: {sorted(ids)}")
    return len(ids)


def _heads(width: int, given: int | None, table: Mapping[int, int] | int, part: str,
           report: ConversionReport) -> int:
    if given is not None:
        heads, how = given, "given"
    else:
        heads = table if isinstance(table, int) else table.get(width, 0)
        how = "not stored in the weights: the official configuration of this width"
        if not heads or width % heads:
            raise ValueError(f"{part} width {width} is not an official M3AE size; pass its number of heads "
                             "(CLI: --num-heads / --decoder-num-heads)")
    if width % heads:
        raise ValueError(f"{part} width {width} is not divisible by {heads} heads")
    report.infer(f"{part} heads", heads, how)
    return heads


def _linear(flat: Mapping[str, np.ndarray], src: str) -> tuple[Tensor, Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(flat[f"{src}/kernel"].T)).float(),
            torch.from_numpy(np.asarray(flat[f"{src}/bias"])).float())


def _vector(flat: Mapping[str, np.ndarray], key: str) -> Tensor:
    return torch.from_numpy(np.asarray(flat[key])).float()


def m3ae_to_multimae(
    flat: Mapping[str, np.ndarray],
    *,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    text_length: int = DEFAULT_TEXT_LENGTH,
    image_mean: Sequence[float] = CC12M_MEAN,
    image_std: Sequence[float] = CC12M_STD,
) -> tuple[MultiMAE, ConversionReport]:
    """Our model from a flat official parameter tree (``{"encoder/Block_0/...": array}``, see
    `multimae.convert.flax_io.flatten`), and what the conversion did."""
    report = ConversionReport(SOURCE_FORMAT, "multimae")
    if not looks_like_m3ae(flat):
        raise ValueError("not an M3AE / MAE JAX parameter tree: expected cls_token, image_embedding and "
                         f"encoder/Block_<i> (found {sorted(flat)[:6]})")
    unsupported = [k for k in flat if re.match(r"decoder_(image|text)_output/(Dense_[1-9]|LayerNorm)", k)]
    if unsupported:
        raise ValueError(f"output heads with output_head_depth > 0 are not supported ({unsupported[:3]})")
    image, text = DEFAULT_IMAGE_MODALITY, DEFAULT_TEXT_MODALITY
    has_text = "text_embedding/embedding" in flat
    D = int(flat["cls_token"].shape[-1])
    E = int(flat["decoder_input_projection/kernel"].shape[1])
    patch_in = int(flat["image_embedding/kernel"].shape[0])
    P = int(round((patch_in / 3) ** 0.5))
    if 3 * P * P != patch_in:
        raise ValueError(f"image_embedding/kernel takes {patch_in} values per patch, not 3 x P x P")
    out_dim = int(flat["decoder_image_output/Dense_0/kernel"].shape[1])
    if out_dim != patch_in:
        raise ValueError(f"the image head predicts {out_dim} values per patch, not its {patch_in} pixels "
                         "(a discretized-image model, predicting VQGAN codes, is not supported)")
    if image_size % P:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {P}")
    depth, dec_depth = _depth(flat, "encoder"), _depth(flat, "decoder")
    ratio = flat["encoder/Block_0/TransformerMLP_0/fc1/kernel"].shape[1] / D
    dec_ratio = flat["decoder/Block_0/TransformerMLP_0/fc1/kernel"].shape[1] / E
    heads = _heads(D, num_heads, OFFICIAL_HEADS, "encoder", report)
    dec_heads = _heads(E, decoder_num_heads, OFFICIAL_DECODER_HEADS, "decoder", report)
    for setting, value, how in [
        ("encoder width", D, "cls_token"), ("encoder depth", depth, "encoder/Block_<i>"),
        ("decoder width", E, "decoder_input_projection"), ("decoder depth", dec_depth, "decoder/Block_<i>"),
        ("patch size", P, "image_embedding kernel"), ("modalities", f"{image}{' + ' + text if has_text else ''}",
                                                        "text_embedding present" if has_text else "no text_embedding"),
        ("image size", image_size, "not stored: the official default unless given"),
    ]:
        report.infer(setting, value, how)
    overrides: dict[str, dict[str, object]] = {image: {"mean": tuple(image_mean), "std": tuple(image_std)}}
    mods: tuple[str, ...] = (image,)
    if has_text:
        V = int(flat["text_embedding/embedding"].shape[0])
        overrides[text] = {"num_channels": V, "pad_id": BERT_PAD_ID, "max_length": text_length}
        mods = (image, text)
        report.infer("text vocabulary", V, "text_embedding")
        report.infer("text length", text_length, "not stored: the official tokenizer_max_length unless given")
    cfg = MultiMAEConfig(
        encoder=EncoderConfig(dim=D, depth=depth, num_heads=heads, mlp_ratio=ratio, qkv_bias=True, num_global_tokens=1,
                              patch_size=P, image_size=image_size, act="gelu_tanh"),
        decoder=DecoderConfig(dim=E, depth=dec_depth, num_heads=dec_heads, mlp_ratio=dec_ratio, kind="joint",
                              act="gelu_tanh", pos_2d="columns_first"),
        inputs=mods, outputs=mods, modality_overrides=overrides,
    )
    model = MultiMAE(cfg)
    dec = f"output_adapters.{model.decoder_key[image]}"
    ours: dict[str, Tensor] = {}

    def put(target: str, value: Tensor, *sources: str) -> None:
        ours[target] = value
        for s in sources:
            report.mapped[s] = target

    # encoder inputs
    kernel = torch.from_numpy(np.asarray(flat["image_embedding/kernel"])).float()  # (P*P*3, D), (row, col, channel)
    put(f"input_adapters.{image}.proj.weight", kernel.reshape(P, P, 3, D).permute(3, 2, 0, 1).contiguous(),
        "image_embedding/kernel")
    bias = _vector(flat, "image_embedding/bias")
    if "encoder_image_type_embedding" in flat:
        bias = bias + _vector(flat, "encoder_image_type_embedding").reshape(D)
        report.mapped["encoder_image_type_embedding"] = f"input_adapters.{image}.proj.bias (added)"
    put(f"input_adapters.{image}.proj.bias", bias, "image_embedding/bias")
    grid = image_size // P
    ours[f"input_adapters.{image}.pos_emb"] = build_2d_sincos_pos_embed(D, grid, grid, columns_first=True)
    report.notes.append("positions: the fixed sin-cos tables are the official ones (columns first in 2-D)")
    put("global_tokens", _vector(flat, "cls_token").reshape(1, 1, D), "cls_token")
    if has_text:
        put(f"input_adapters.{text}.token_emb.weight", _vector(flat, "text_embedding/embedding"), "text_embedding/embedding")
        if "encoder_text_type_embedding" in flat:
            put(f"input_adapters.{text}.mod_emb", _vector(flat, "encoder_text_type_embedding").reshape(1, 1, D),
                "encoder_text_type_embedding")
        else:
            ours[f"input_adapters.{text}.mod_emb"] = torch.zeros(1, 1, D)

    # transformer blocks
    def blocks(part: str, prefix: str, count: int) -> None:
        for i in range(count):
            src, dst = f"{part}/Block_{i}", f"{prefix}{i}"
            for a, b in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
                put(f"{dst}.{b}.weight", _vector(flat, f"{src}/{a}/scale"), f"{src}/{a}/scale")
                put(f"{dst}.{b}.bias", _vector(flat, f"{src}/{a}/bias"), f"{src}/{a}/bias")
            for a, b in (("Attention_0/Dense_0", "attn.qkv"), ("Attention_0/Dense_1", "attn.proj"),
                         ("TransformerMLP_0/fc1", "mlp.fc1"), ("TransformerMLP_0/fc2", "mlp.fc2")):
                w, bias_ = _linear(flat, f"{src}/{a}")
                put(f"{dst}.{b}.weight", w, f"{src}/{a}/kernel")
                put(f"{dst}.{b}.bias", bias_, f"{src}/{a}/bias")

    blocks("encoder", "encoder.", depth)
    blocks("decoder", f"{dec}.blocks.", dec_depth)
    for src, dst in (("encoder/LayerNorm_0", f"{dec}.context_norm"), ("decoder/LayerNorm_0", f"{dec}.norm")):
        put(f"{dst}.weight", _vector(flat, f"{src}/scale"), f"{src}/scale")
        put(f"{dst}.bias", _vector(flat, f"{src}/bias"), f"{src}/bias")

    # decoder
    w, b = _linear(flat, "decoder_input_projection")
    put(f"{dec}.proj_context.weight", w, "decoder_input_projection/kernel")
    put(f"{dec}.proj_context.bias", b, "decoder_input_projection/bias")
    names = [(image, "image")] + ([(text, "text")] if has_text else [])
    for ours_name, theirs in names:
        put(f"{dec}.mask_tokens.{ours_name}", _vector(flat, f"{theirs}_mask_embedding").reshape(1, 1, E),
            f"{theirs}_mask_embedding")
        key = f"decoder_{theirs}_type_embedding"
        if key in flat:
            put(f"{dec}.type_embeddings.{ours_name}", _vector(flat, key).reshape(1, 1, E), key)
        else:
            ours[f"{dec}.type_embeddings.{ours_name}"] = torch.zeros(1, 1, E)
    w, b = _linear(flat, "decoder_image_output/Dense_0")  # (P*P*3, E) rows (row, col, channel) -> (channel, row, col)
    put(f"{dec}.heads.{image}.weight", w.reshape(P, P, 3, E).permute(2, 0, 1, 3).reshape(3 * P * P, E),
        "decoder_image_output/Dense_0/kernel")
    put(f"{dec}.heads.{image}.bias", b.reshape(P, P, 3).permute(2, 0, 1).reshape(-1), "decoder_image_output/Dense_0/bias")
    if has_text:
        w, b = _linear(flat, "decoder_text_output/Dense_0")
        put(f"{dec}.heads.{text}.weight", w, "decoder_text_output/Dense_0/kernel")
        put(f"{dec}.heads.{text}.bias", b, "decoder_text_output/Dense_0/bias")

    for key in flat:
        if key not in report.mapped:
            report.dropped[key] = "no place in the model"
    state = model.state_dict()
    wrong = {k: (tuple(v.shape), tuple(state[k].shape)) for k, v in ours.items() if k in state and v.shape != state[k].shape}
    if wrong:
        raise ValueError(f"shapes do not fit the inferred architecture: {wrong}")
    missing, unexpected = model.load_state_dict(ours, strict=False)
    report.missing = sorted(k for k in missing if not k.endswith(".pos_emb"))
    if unexpected:
        raise ValueError(f"converter bug: unexpected keys {unexpected}")
    report.notes += [
        "activations: Flax's tanh GELU (act=gelu_tanh); LayerNorm eps 1e-6",
        f"images: normalised with mean {tuple(image_mean)} / std {tuple(image_std)} (the official default: CC12M's)",
        "the encoder's final LayerNorm is the decoder's context_norm: encoder features are before that norm",
    ]
    if has_text:
        report.notes.append("captions: the official vocabulary is bert-base-uncased (pad id 0); tokenise with it")
    return model.eval(), report


def read_m3ae_jax(path: str, **kwargs: object) -> tuple[MultiMAE, ConversionReport]:
    """`m3ae_to_multimae` of a ``.msgpack`` or ``.pkl`` JAX checkpoint file."""
    tree = find_params(read_flax_file(path), "encoder", str(path))
    return m3ae_to_multimae(flatten(tree), **kwargs)  # type: ignore[arg-type]
