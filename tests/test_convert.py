"""Checkpoint conversion: official key tables, the golden fixture through the converter, timm
round trips and numerics, MAE files, recognisable errors and the `multimae convert` command."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import timm
import torch
from safetensors.torch import load_file

from multimae.cli.main import main
from multimae.convert import (
    TIMM_ARCH, ConversionReport, convert_file, load_any, multimae_to_timm, read_checkpoint, save_multimae,
    timm_to_multimae,
)
from multimae.losses import MultiMAELoss
from multimae.model import FineTuneModel, MultiMAE
from multimae.model.heads import DPT_KEY_ALIASES, ConvNeXtHeadConfig, DPTHeadConfig, LinearHeadConfig

from conftest import GOLDEN, SHARED, tiny_config

OFFICIAL_KEYS = SHARED / "reference" / "official_keys"
needs_keys = pytest.mark.skipif(not OFFICIAL_KEYS.exists(), reason="shared/reference/official_keys is not beside the checkout")
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="shared/reference/golden is not beside the checkout")
MODALITIES = ("rgb", "depth", "semseg")


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of an official key table, in the official state-dict order."""
    shapes = {}
    for line in (OFFICIAL_KEYS / f"{name}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def pretrain_state():
    return random_state(official_shapes("pretrain_multimae_base_rgb-depth-semseg"))


# ------------------------------------------------------------------------------ official layout


@needs_keys
def test_official_pretrain_checkpoint_maps_every_key_and_infers_vitb(pretrain_state):
    model, report = load_any(pretrain_state)
    assert report.dropped == {} and report.missing == []
    assert set(report.mapped) == set(pretrain_state)
    cfg = model.model_config
    enc, dec = cfg.encoder, cfg.decoder
    assert (enc.dim, enc.depth, enc.num_heads, enc.patch_size, enc.image_size, enc.num_global_tokens) == (
        768, 12, 12, 16, 224, 1)
    assert (dec.dim, dec.depth, dec.num_heads) == (256, 2, 8)
    assert cfg.inputs == ("rgb", "depth", "semseg") and cfg.outputs == ("rgb", "depth", "semseg", "norm_rgb")
    assert model.input_specs["semseg"].num_channels == 133 and model.output_specs["semseg"].num_channels == 133
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in pretrain_state.items())
    assert "official convention" in report.inferred["encoder heads"]
    assert "mapped: 351 tensors" in report.summary()


@needs_keys
def test_official_mae_and_encoder_only_checkpoints(pretrain_state):
    """The MAE ViT-B in MultiViT format: rgb adapter + encoder (+ anything else is listed as dropped)."""
    state = {k: v for k, v in pretrain_state.items() if k.startswith(("global_tokens", "encoder.", "input_adapters.rgb."))}
    model, report = load_any(state)
    assert model.model_config.inputs == ("rgb",) and model.model_config.outputs == ()
    assert set(report.mapped) == set(state) and not report.missing
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert model.backbone.forward_encoder({"rgb": x}).tokens.shape == (1, 197, 768)


def finetune_state(table: str) -> dict[str, torch.Tensor]:
    """Random weights under every key of an official fine-tuning table; the DPT alias keys hold
    the same tensors as their canonical names (one module registered twice, officially)."""
    state = random_state(official_shapes(table))
    for alias, canonical in DPT_KEY_ALIASES.items():
        for key in [k for k in state if k.startswith(f"output_adapters.depth.{alias}")]:
            state[key] = state[key.replace(alias, canonical, 1)]
    return state


@needs_keys
@pytest.mark.parametrize("table, head", [
    ("finetune_cls_linear_rgb_in1k", LinearHeadConfig(dim=768, num_classes=1000, pooling="mean")),
    ("finetune_depth_dpt_rgb_nyu", DPTHeadConfig(dim=768, num_channels=1, modalities=("rgb",), hooks=(2, 5, 8, 11),
                                                 layer_dims=(96, 192, 384, 768), feature_dim=256)),
    ("finetune_semseg_convnext_rgb-depth_nyu", ConvNeXtHeadConfig(dim=768, num_classes=40, modalities=("rgb",),
                                                                  embed_dim=6144, preds_per_patch=16, depth=4)),
])
def test_official_finetune_checkpoints_map_every_key_to_encoder_and_head(table, head):
    state = finetune_state(table)
    model, report = load_any(state)
    assert isinstance(model, FineTuneModel) and model.head_config == head
    assert set(report.mapped) == set(state) and not report.dropped and not report.missing
    ours = model.state_dict()
    assert all(torch.equal(ours[report.mapped[k]], v) for k, v in state.items())  # aliases onto one tensor
    grid = state["input_adapters.rgb.pos_emb"].shape[-1]
    assert model.backbone.config.image_size == grid * 16 and model.backbone.config.num_heads == 12
    assert tuple(model.input_specs) == tuple(n for n in ("rgb", "depth") if f"input_adapters.{n}.proj.weight" in state)
    assert "not stored in the weights" in " ".join(report.inferred.values())


def test_fine_tuned_models_round_trip_through_our_files(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(encoder=dict(dim=32, depth=4, num_heads=2, image_size=32, patch_size=8), outputs=())
    specs = cfg.modality_specs()
    head = DPTHeadConfig(dim=32, num_channels=1, modalities=("rgb", "depth"), hooks=(0, 1, 2, 3),
                         layer_dims=(8, 8, 16, 16), feature_dim=8)
    model = FineTuneModel(cfg.encoder, {n: specs[n] for n in cfg.inputs}, head, "depth").eval()
    loaded, _ = load_any(save_multimae(model, tmp_path / "ft.safetensors"))
    assert isinstance(loaded, FineTuneModel) and loaded.head_config == head and loaded.head_name == "depth"
    x = {"rgb": torch.randn(1, 3, 32, 32), "depth": torch.randn(1, 1, 32, 32)}
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # The same head read back from an official-layout state dict, told what the weights do not store.
    official, report = load_any(model.state_dict(), num_heads=2, head_modalities=("rgb", "depth"), hooks=(0, 1, 2, 3))
    assert official.head_config == head and report.inferred["depth head hooks"].endswith("(given)")
    with pytest.raises(ValueError, match="reads 2 modalities"):
        load_any(model.state_dict(), num_heads=2, head_modalities=("rgb",))
    # The command line says the same with --head-reads and --dpt-hooks.
    torch.save({"model": model.state_dict()}, tmp_path / "official-ft.pth")
    assert main(["convert", str(tmp_path / "official-ft.pth"), str(tmp_path / "ours-ft.safetensors"), "--num-heads", "2",
                 "--head-reads", "rgb,depth", "--dpt-hooks", "0,1,2,3"]) == 0
    assert load_any(tmp_path / "ours-ft.safetensors")[0].head_config == head
    with pytest.raises(SystemExit, match="dpt-hooks expects"):
        main(["convert", str(tmp_path / "official-ft.pth"), str(tmp_path / "x.safetensors"), "--dpt-hooks", "a,b"])


def _tolerances() -> dict[str, dict[str, float]]:
    """``{"outputs/tokens" | "losses" | "grads": {"atol": .., "rtol": ..}}`` from SPEC.json's text."""
    spec = json.loads((GOLDEN / "SPEC.json").read_text())["suggested_tolerances_for_reimplementations"]
    out = {}
    for what, text in spec.items():
        found = dict(re.findall(r"(atol|rtol) ([0-9.e-]+)", text))
        out[what] = {"atol": float(found.get("atol", 0)), "rtol": float(found.get("rtol", 0))}
    return out


@needs_golden
@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_golden_fixture_through_the_converter(tmp_path, container):
    """Official weights -> converted file -> loaded model: official predictions, losses, encoder outputs."""
    spec = json.loads((GOLDEN / "SPEC.json").read_text())["config"]
    tol = _tolerances()
    weights = load_file(GOLDEN / "weights.safetensors")
    src = GOLDEN / "weights.safetensors"
    if container == "pth":  # the official .pth layout: weights under "model", training args beside them
        src = tmp_path / "official.pth"
        args = argparse.Namespace(model="pretrain_multimae_tiny_fixture", decoder_num_heads=spec["decoder_num_heads"])
        torch.save({"model": weights, "args": args, "epoch": 0}, src)
    out = tmp_path / "ours.safetensors"
    report = convert_file(src, out, num_heads=spec["num_heads"], decoder_num_heads=None if container == "pth"
                          else spec["decoder_num_heads"])
    assert not report.dropped and not report.missing and len(report.mapped) == len(weights)
    model, again = load_any(out)
    assert again.source_format == "multimae"
    cfg = model.model_config
    assert (cfg.encoder.dim, cfg.encoder.depth, cfg.encoder.patch_size, cfg.encoder.image_size) == (
        spec["dim_tokens"], spec["depth"], spec["patch_size"], spec["image_size"])
    assert (cfg.decoder.dim, cfg.decoder.depth, cfg.decoder.num_heads) == (
        spec["decoder_dim"], spec["decoder_depth"], spec["decoder_num_heads"])
    assert model.output_specs["semseg"].num_channels == spec["semseg_num_classes"]
    if container == "pth":
        assert "training arguments" in report.inferred["decoder heads"]

    data = load_file(GOLDEN / "inputs.safetensors")
    ref = load_file(GOLDEN / "fixture_masked.safetensors")
    inputs = {k: data[k] for k in MODALITIES}
    with torch.no_grad():
        out_ = model(inputs, {k: data[f"mask_main_{k}"] for k in MODALITIES})
        losses = MultiMAELoss(model.output_specs, spec["patch_size"])(out_.preds, {**inputs, "norm_rgb": inputs["rgb"]},
                                                                       out_.masks)
        layers = model.backbone.forward_encoder(inputs, return_layers=range(spec["depth"])).intermediates
    for k, pred in out_.preds.items():
        torch.testing.assert_close(pred, ref[f"pred_{k}"], **tol["outputs/tokens"])
    torch.testing.assert_close(out_.encoder.tokens, ref["encoder_visible_sorted"], **tol["outputs/tokens"])
    for k, v in losses.per_task.items():
        torch.testing.assert_close(v, ref[f"loss_{k}"], atol=0, rtol=tol["losses"]["rtol"])
    unmasked = load_file(GOLDEN / "fixture_unmasked.safetensors")
    torch.testing.assert_close(torch.stack(layers), unmasked["encoder_all_layers"], **tol["outputs/tokens"])


@needs_golden
def test_wrong_head_count_is_reported_not_silent():
    """Heads are not in the weights: without them the convention is used, and the report says so."""
    _, report = load_any(load_file(GOLDEN / "weights.safetensors"))
    assert "not stored in the weights" in report.inferred["encoder heads"]
    assert report.inferred["encoder heads"].startswith("2 ")  # 128 wide / 64


def test_our_own_model_round_trips_through_save_multimae(tmp_path):
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    path = save_multimae(model, tmp_path / "m.safetensors")
    loaded, report = load_any(path)
    assert loaded.model_config == model.model_config and report.source_format == "multimae"
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items())


def test_custom_modality_and_semseg_padding_row_are_inferred():
    torch.manual_seed(0)
    cfg = tiny_config(inputs=("rgb", "semseg"), outputs=("rgb", "semseg"),
                      modality_overrides={"semseg": {"num_channels": 5, "ignore_index": 5}})
    state = MultiMAE(cfg).state_dict()
    assert state["input_adapters.semseg.class_emb.weight"].shape[0] == 6
    thermal = torch.randn(32, 1, 8, 8)
    state = {**state, "input_adapters.thermal.proj.weight": thermal, "input_adapters.thermal.proj.bias": torch.zeros(32),
             "input_adapters.thermal.pos_emb": state["input_adapters.rgb.pos_emb"].clone()}
    for name in list(state):  # decoders must know every input: give them a thermal embedding
        if name.endswith("task_embeddings.rgb"):
            state[name[: -len("rgb")] + "thermal"] = torch.zeros_like(state[name])
    model, report = load_any(state, num_heads=2, decoder_num_heads=2)
    assert model.input_specs["semseg"].num_channels == 5 and model.input_specs["semseg"].ignore_index == 5
    assert model.input_specs["thermal"].num_channels == 1 and "not built in" in " ".join(report.notes)
    assert not report.missing and not report.dropped


def test_unrecognised_checkpoints_and_refused_pickles_give_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unrecognised checkpoint"):
        load_any({"backbone.stem.weight": torch.zeros(3)})
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, bad)
    with pytest.raises(SystemExit, match="unrecognised checkpoint"):
        main(["convert", str(bad), str(tmp_path / "out.safetensors")])
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": MultiMAE(tiny_config()).state_dict(), "extra": ConversionReport("a", "b")}, pickled)
    with pytest.raises(ValueError, match="trusted=True"):
        read_checkpoint(pickled)
    assert read_checkpoint(pickled, trusted=True).format == "official"
    with pytest.raises(ValueError, match="looks like a 'official' checkpoint, not 'timm'"):
        load_any(MultiMAE(tiny_config()).state_dict(), fmt="timm")


def test_encoder_width_off_convention_asks_for_heads():
    cfg = tiny_config(encoder=dict(dim=36, depth=1, num_heads=3, image_size=32, patch_size=8))
    state = MultiMAE(cfg).state_dict()
    with pytest.raises(ValueError, match="num_heads"):
        load_any(state)
    assert load_any(state, num_heads=3, decoder_num_heads=2)[0].backbone.config.num_heads == 3


# ------------------------------------------------------------------------------ timm


def _tiny(G: int = 1) -> MultiMAE:
    torch.manual_seed(G)
    return MultiMAE(tiny_config(encoder=dict(dim=32, depth=2, num_heads=2, image_size=32, patch_size=8,
                                             num_global_tokens=G))).eval()


@pytest.mark.parametrize("G", [1, 2, 0])
def test_ours_to_timm_computes_the_same_tokens_and_round_trips_exactly(G):
    model = _tiny(G)
    state, kwargs, report = multimae_to_timm(model)
    vit = timm.create_model(TIMM_ARCH, pretrained=False, **kwargs).eval()
    vit.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model.backbone.forward_encoder({"rgb": x}).tokens  # [patches, global]
        theirs = vit.forward_features(x)  # [global, patches]
    torch.testing.assert_close(theirs, torch.cat([ours[:, 16:], ours[:, :16]], dim=1), atol=1e-5, rtol=1e-4)
    back, back_report = timm_to_multimae(state, num_heads=2)
    ours_state = model.state_dict()
    assert set(back.state_dict()) == {k for k in ours_state if k.startswith(("input_adapters.rgb.", "encoder.", "global"))}
    assert all(torch.equal(v, ours_state[k]) for k, v in back.state_dict().items())
    assert not back_report.dropped and not back_report.missing
    assert any("depth" in k for k in report.dropped)  # other modalities are listed, not silently lost


def test_timm_export_file_loads_in_timm_by_file_and_reads_back(tmp_path):
    model = _tiny()
    out = tmp_path / "vit.safetensors"
    report = convert_file(save_multimae(model, tmp_path / "m.safetensors"), out, dst_format="timm")
    assert "pretrained_cfg_overlay" in report.summary()
    kwargs = json.loads(read_checkpoint(out).metadata["timm_kwargs"])
    vit = timm.create_model(TIMM_ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), **kwargs).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(x)[:, 1:], model.backbone.forward_encoder({"rgb": x}).tokens[:, :-1],
                                   atol=1e-5, rtol=1e-4)
    back, rep = load_any(out)  # the head count comes back from the file's metadata
    assert back.backbone.config.num_heads == 2 and "metadata" in rep.inferred["encoder heads"]


def test_standard_timm_vit_imports_with_class_position_folded_in():
    """A timm ViT with a class-token position and a final norm: our encoder = its blocks' output."""
    torch.manual_seed(0)
    vit = timm.create_model(TIMM_ARCH, pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=2,
                            num_heads=1, num_classes=7).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()
    model, report = timm_to_multimae(vit.state_dict())
    assert model.backbone.config.num_heads == 1 and model.backbone.config.image_size == 32
    assert {"norm.weight", "head.weight"} <= set(report.dropped)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(x))))
        ours = model.backbone.forward_encoder({"rgb": x}).tokens
    torch.testing.assert_close(ours, torch.cat([ref[:, 1:], ref[:, :1]], dim=1), atol=1e-5, rtol=1e-4)


def test_mae_checkpoint_drops_its_decoder_and_unsupported_variants_are_refused():
    state = timm.create_model(TIMM_ARCH, pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=1,
                              num_heads=1, num_classes=0).state_dict()
    mae = {**state, "mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64),
           "decoder_pos_embed": torch.zeros(1, 17, 32), "decoder_blocks.0.norm1.weight": torch.zeros(32),
           "decoder_norm.weight": torch.zeros(32), "decoder_pred.weight": torch.zeros(192, 32)}
    model, report = load_any(mae)
    assert report.source_format.startswith("MAE")
    assert all(report.dropped[k] == "MAE pixel decoder" for k in mae if k.startswith("decoder_") or k == "mask_token")
    layerscale = timm.create_model(TIMM_ARCH, pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=1,
                                   num_heads=1, init_values=1e-5).state_dict()
    with pytest.raises(ValueError, match="LayerScale"):
        timm_to_multimae(layerscale)


def test_convert_cli_official_to_ours_to_timm(tmp_path, capsys):
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    official = tmp_path / "official.pth"
    torch.save({"model": model.state_dict()}, official)
    ours = tmp_path / "ours.safetensors"
    assert main(["convert", str(official), str(ours), "--from", "official", "--num-heads", "2",
                 "--decoder-num-heads", "2", "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "mapped: 183 tensors" in out and "dropped: 0 tensors" in out and "missing: 0 tensors" in out
    assert json.loads((tmp_path / "r.json").read_text())["inferred"]["encoder heads"].startswith("2 (given)")
    vit = tmp_path / "vit.safetensors"
    assert main(["convert", str(ours), str(vit), "--to", "timm"]) == 0
    assert "timm.create_model" in capsys.readouterr().out
    assert set(load_file(vit)) >= {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.mlp.fc2.bias"}
    with pytest.raises(SystemExit, match="not 'timm'"):
        main(["convert", str(official), str(tmp_path / "x.safetensors"), "--from", "timm"])


@needs_golden
def test_a_pretraining_checkpoint_without_some_decoders_keeps_the_others_exact():
    """The released pre-training checkpoint has no norm_rgb decoder: the others are unaffected."""
    spec = json.loads((GOLDEN / "SPEC.json").read_text())["config"]
    weights = {k: v for k, v in load_file(GOLDEN / "weights.safetensors").items()
               if not k.startswith("output_adapters.norm_rgb.")}
    model, report = load_any(weights, num_heads=spec["num_heads"], decoder_num_heads=spec["decoder_num_heads"])
    assert model.model_config.outputs == ("rgb", "depth", "semseg") and not report.missing
    data = load_file(GOLDEN / "inputs.safetensors")
    ref = load_file(GOLDEN / "fixture_masked.safetensors")
    with torch.no_grad():
        preds = model({k: data[k] for k in MODALITIES}, {k: data[f"mask_main_{k}"] for k in MODALITIES}).preds
    for k, pred in preds.items():
        torch.testing.assert_close(pred, ref[f"pred_{k}"], **_tolerances()["outputs/tokens"])
