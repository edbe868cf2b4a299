"""A 4M encoder as a fine-tuning backbone: `FourMEncoder` computes what 4M's encoder computes, and
`multimae finetune --checkpoint <4m run>` trains a head on it from RGB (and RGB + depth) given as
token maps of the 4M run's tokenizers, keeps those tokenizers, resumes and evaluates."""

from __future__ import annotations

import json

import pytest
import torch

from multimae.cli.main import main
from multimae.config import load_config
from multimae.config.finetune import FinetuneConfig
from multimae.engine.checkpoint import build_model_from_checkpoint, latest_checkpoint, read_checkpoint
from multimae.engine.optim import param_groups
from multimae.modalities.batch import ModalityBatch
from multimae.model import FineTuneModel
from multimae.model.fourm import FourM, fourm_config
from multimae.model.fourm.encoder import FourMEncoder
from multimae.model.heads import ConvNeXtHeadConfig
from multimae.tasks.finetune_arch import build_model
from multimae.tasks.finetune_model import load_encoder_weights, resolve
from multimae.tasks.loading import load_finetuned

TINY = ["data.image_size=16", "data.batch_size=4", "data.num_workers=0", "data.world_train_scenes=16",
        "data.world_val_scenes=8", "train.log_every=1", "train.val_every=2", "train.ckpt_every=2",
        "train.precision=fp32", "train.threads=1", "head.embed_dim=16", "head.depth=1"]


def _tiny_fourm(**kw) -> FourM:
    torch.manual_seed(0)
    config = fourm_config("tiny", dim=32, encoder_depth=2, decoder_depth=1, num_heads=2, image_size=32,
                          patch_size=8, inputs=("rgb", "tok_depth", "caption"), outputs=("tok_normals",),
                          modality_overrides={"tok_depth": {"num_channels": 50, "stride": 8},
                                              "tok_normals": {"num_channels": 30, "stride": 8},
                                              "caption": {"num_channels": 40, "max_length": 12}}, **kw)
    return FourM(config).eval()


@pytest.mark.parametrize("registers", [0, 2])
def test_the_encoder_alone_computes_what_4m_encodes(registers):
    """Every token given: FourMEncoder's tokens equal 4M's encoder output (registers moved last), and a
    caption's padding is not attended to."""
    model = _tiny_fourm(num_register_tokens=registers)
    specs = model.input_specs
    backbone = FourMEncoder(model.config, specs)
    result = backbone.load_state_dict({k: v for k, v in model.state_dict().items()
                                       if k.startswith(("encoder", "register_tokens"))}, strict=False)
    assert not result.missing_keys, result.missing_keys
    B = 3
    g = torch.Generator().manual_seed(1)
    rgb = torch.randn(B, 3, 32, 32, generator=g)
    depth = torch.randint(0, 50, (B, 16), generator=g)
    caption = torch.randint(4, 40, (B, 12), generator=g)
    caption[:, 7:] = specs["caption"].pad_id
    ones = torch.ones(B, 16, dtype=torch.bool)
    batch = {"rgb": ModalityBatch(rgb, ones), "tok_depth": ModalityBatch(depth, ones),
             "caption": ModalityBatch(caption, caption != specs["caption"].pad_id),
             "tok_normals": ModalityBatch(torch.zeros(B, 16, dtype=torch.long), ones, ones, ones)}  # a target
    out = model(batch, num_encoder_tokens=16 + 16 + 7, num_decoder_tokens=16)
    reference = out.encoder.x  # (B, R + 39, D): registers first, then the given tokens in order
    enc = backbone.forward_encoder({"rgb": rgb, "tok_depth": depth, "caption": caption}, return_layers=(-1,))
    assert enc.tokens.shape == (B, 16 + 16 + 12 + registers, 32) and enc.num_global_tokens == registers
    assert enc.layout.names == ("rgb", "tok_depth", "caption") and enc.layout.grid == (4, 4)
    tokens = enc.tokens[:, : 16 + 16 + 7]
    torch.testing.assert_close(tokens, reference[:, registers:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.global_tokens, reference[:, :registers], atol=1e-5, rtol=1e-5)
    assert enc.valid["caption"][:, :7].all() and not enc.valid["caption"][:, 7:].any()
    assert torch.allclose(backbone.encoder_norm(enc.intermediates[0]), enc.tokens, atol=1e-6)


def test_a_fine_tuning_model_on_a_4m_encoder_keeps_its_names_and_lr_layers():
    model = _tiny_fourm()
    specs = {n: model.input_specs[n] for n in ("rgb", "tok_depth")}
    head = ConvNeXtHeadConfig(dim=32, num_classes=5, modalities=("rgb",), embed_dim=16, preds_per_patch=4, depth=1)
    ft = FineTuneModel(model.config, specs, head, "semseg")
    keys = set(ft.state_dict())
    assert "encoder_embeddings.tok_depth.token_emb.weight" in keys and "encoder_norm.weight" in keys
    assert not any(k.startswith("backbone.") for k in keys)
    logits = ft({"rgb": torch.randn(2, 3, 32, 32), "tok_depth": torch.randint(0, 50, (2, 16))})
    assert logits.shape == (2, 5, 32, 32)
    groups = param_groups(ft, 0.05, ft.no_weight_decay(), layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(ft.named_parameters())
    assert scale[id(named["backbone.encoder_embeddings.rgb.proj.weight"])] == 0.5 ** 3  # 2 blocks + 1
    assert scale[id(named["backbone.encoder.1.attn.qkv.weight"])] == 0.5
    assert all(scale[id(p)] == 1.0 for n, p in named.items() if n.startswith(("output_adapters.", "backbone.encoder_norm")))


def _finetune(tmp_path, run, name, inputs, *extra):
    return main(["finetune", "--quiet", "--task", "segmentation", "--inputs", inputs, "--checkpoint", str(run), *TINY,
                 f"train.out_dir={tmp_path}", f"train.name={name}", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_finetune_a_4m_run_from_rgb_and_depth_tokens(tmp_path, trained_run, capsys):
    assert _finetune(tmp_path, trained_run, "ft", "rgb,depth", "train.steps=4") == 0
    out = capsys.readouterr().out
    assert "initial weights: 4M" in out
    assert "rgb -> tok_rgb" in out and "depth -> tok_depth" in out
    run = tmp_path / "ft"
    model, cfg = load_finetuned(run)
    assert cfg.model.family == "4m" and cfg.task.inputs == ("tok_rgb", "tok_depth")
    assert isinstance(model.backbone, FourMEncoder) and model.backbone.patch_size == 4
    ckpt = read_checkpoint(latest_checkpoint(run))
    assert ckpt.kind == "finetune"
    assert {k.split("/")[1] for k in ckpt.files if k.startswith("tokenizer/")} == {"rgb", "depth"}
    for entry in ckpt.files.values():
        assert (run / entry.path).is_file()
    report = json.loads((run / "report.json").read_text())
    assert 0.0 <= report["val"]["miou"] <= 1.0 and report["inputs"] == ["tok_rgb", "tok_depth"]
    assert (run / "predictions.png").stat().st_size > 0
    assert main(["evaluate", "--checkpoint", str(run), "--quiet", "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["miou"] == pytest.approx(report["val"]["miou"])


def test_the_fine_tuning_model_starts_from_the_4m_encoder(trained_run):
    """Every encoder tensor of the 4M run is the fine-tuning model's initial value, decoder tensors
    are left out, and the run's token vocabularies and grids carry over."""
    cfg = load_config(FinetuneConfig, None, ["task.kind=segmentation", "task.inputs=[rgb, depth]",
                                             f"init.checkpoint={trained_run}", "data.image_size=16"])
    cfg, state, _ = resolve(cfg)
    model = build_model(cfg)
    assert load_encoder_weights(model, state) == []
    pre = build_model_from_checkpoint(trained_run)
    own = model.state_dict()
    encoder = [k for k in pre.state_dict() if k.startswith(("encoder.", "encoder_norm.", "encoder_embeddings.tok_"))]
    assert len(encoder) > 10 and all(torch.equal(own[k], pre.state_dict()[k]) for k in encoder)
    assert not any(k.startswith(("decoder", "mask_token", "encoder_embeddings.caption")) for k in own)
    assert model.input_specs["tok_rgb"] == pre.input_specs["tok_rgb"]


def test_a_4m_fine_tuning_run_resumes_to_the_same_weights(tmp_path, trained_run):
    assert _finetune(tmp_path, trained_run, "a", "rgb", "train.steps=4") == 0
    run = tmp_path / "a"
    last = latest_checkpoint(run)
    whole = torch.load(last, weights_only=True)["model"]
    last.unlink()  # as if it had stopped after step 2
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    again = torch.load(latest_checkpoint(run), weights_only=True)
    assert again["step"] == 4 and whole.keys() == again["model"].keys()
    assert all(torch.equal(whole[k], again["model"][k]) for k in whole)


def test_token_map_inputs_without_a_4m_run_name_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="need the tokenizers of a 4M run: set init.checkpoint"):
        main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "tok_rgb", "--checkpoint", "scratch",
              "model.family=4m", "model.encoder={dim: 32, encoder_depth: 1, num_heads: 2, patch_size: 4}",
              "model.modality_overrides={tok_rgb: {stride: 4, num_channels: 45}}", *TINY, "train.steps=1",
              f"train.out_dir={tmp_path}", "train.name=x", f"data.cache_dir={tmp_path / 'cache'}"])


def test_predict_on_a_fine_tuned_4m_encoder_says_what_to_use_instead(tmp_path, trained_run):
    from PIL import Image

    assert _finetune(tmp_path, trained_run, "p", "rgb", "train.steps=1") == 0
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit, match="does not predict from pictures here yet"):
        main(["predict", "--checkpoint", str(tmp_path / "p"), "--rgb", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
