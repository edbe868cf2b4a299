"""Checkpoints and exported model files carry everything needed to rebuild the model and its data
preparation (config, resolved modality specs, head, files table), and one reader rebuilds them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from multimae.cli.main import main
from multimae.config import RunConfig
from multimae.config.loader import to_plain
from multimae.config.schema import ModelSection
from multimae.convert import load_any, save_multimae
from multimae.engine.checkpoint import (
    FORMAT_VERSION,
    attach_file,
    build_model_from_checkpoint,
    export_safetensors,
    list_checkpoints,
    model_record,
    read_checkpoint,
    save_checkpoint,
)
from multimae.modalities.spec import ModalitySpec
from multimae.model import FineTuneModel, MultiMAE
from multimae.model.heads import ConvNeXtHeadConfig
from multimae.tasks.loading import load_pretrained

from conftest import NUM_CLASSES, make_inputs, tiny_config

THERMAL = ModalitySpec(name="thermal", num_channels=2, normalization="robust_standardize", loss="l1", robust_trim=0.05)


def custom_model() -> MultiMAE:
    """rgb + semseg (5 classes, an override) + a user modality in; rgb, semseg, thermal out."""
    torch.manual_seed(3)
    cfg = tiny_config(inputs=("rgb", "semseg", "thermal"), outputs=("rgb", "semseg", "thermal"),
                      custom_modalities={"thermal": THERMAL})
    return MultiMAE(cfg).eval()


def custom_inputs() -> dict[str, torch.Tensor]:
    inputs = make_inputs(batch=2)
    g = torch.Generator().manual_seed(9)
    return {"rgb": inputs["rgb"], "semseg": inputs["semseg"], "thermal": torch.randn(2, 2, 32, 32, generator=g)}


def assert_identical(model: MultiMAE, rebuilt: torch.nn.Module) -> None:
    """Same keys, bit-identical tensors, same specs and the same outputs on fixed inputs and masks."""
    assert type(rebuilt) is type(model)
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert list(theirs) == list(ours)
    for key, value in ours.items():
        assert theirs[key].dtype == value.dtype and torch.equal(theirs[key], value), key
    assert rebuilt.input_specs == model.input_specs
    inputs = {k: v for k, v in custom_inputs().items() if k in model.input_specs}
    if isinstance(model, MultiMAE):
        assert rebuilt.output_specs == model.output_specs
        masks = model.backbone.sample_masks(inputs, num_visible=5, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = model(inputs, masks), rebuilt(inputs, masks)
        assert set(a.preds) == set(b.preds)
        for name in a.preds:
            assert torch.equal(a.preds[name], b.preds[name]), name
    else:
        with torch.no_grad():
            assert torch.equal(model(inputs), rebuilt(inputs))


def write_training_checkpoint(model: MultiMAE, run_dir, **extra):
    state = {**model_record(model), "model": model.state_dict(), "step": 7, "optimizer": {"state": {}}, **extra}
    return save_checkpoint(state, run_dir, 7, keep_last=1)


@pytest.mark.parametrize("writer", ["checkpoint", "export", "save_multimae"])
def test_every_file_we_write_rebuilds_an_identical_model_with_a_custom_modality_and_an_override(writer, tmp_path):
    model = custom_model()
    if writer == "checkpoint":
        path = write_training_checkpoint(model, tmp_path)
    elif writer == "export":
        path = tmp_path / "model.safetensors"
        export_safetensors(model, path)
    else:
        path = save_multimae(model, tmp_path / "m.safetensors")
    ckpt = read_checkpoint(path)
    assert (ckpt.format, ckpt.kind, ckpt.version) == ("multimae", "pretrain", FORMAT_VERSION)
    assert ckpt.specs == {**model.input_specs, **model.output_specs}  # every field, resolved
    assert ckpt.specs["thermal"] == THERMAL and ckpt.specs["semseg"].num_channels == NUM_CLASSES
    assert ckpt.specs["semseg"].is_categorical and ckpt.specs["rgb"].mean == (0.485, 0.456, 0.406)
    assert ckpt.config() == model.model_config and ckpt.files == {}
    if writer == "checkpoint":
        assert ckpt.trainer["step"] == 7 and "optimizer" in ckpt.trainer
    else:
        assert ckpt.trainer == {}
    assert_identical(model, build_model_from_checkpoint(path))
    assert_identical(model, build_model_from_checkpoint(ckpt))
    assert_identical(model, load_any(path)[0])  # the converter's entry point reads ours the same way


def test_the_stored_specs_win_over_what_the_config_and_the_registry_say(tmp_path):
    """A model trained with depth of 2 channels (an override since lost from the config) rebuilds
    with its stored spec: the same weights load and give the same outputs."""
    torch.manual_seed(0)
    override = {"depth": {"num_channels": 2, "robust_trim": 0.2}}
    model = MultiMAE(tiny_config(inputs=("rgb", "depth"), outputs=("depth",), modality_overrides=override)).eval()
    path = write_training_checkpoint(model, tmp_path)
    state = torch.load(path, weights_only=True)
    state["model_config"]["modality_overrides"] = {}  # the config now resolves depth to the built-in spec
    torch.save(state, path)
    ckpt = read_checkpoint(path)
    assert ckpt.config().modality_specs()["depth"] == model.input_specs["depth"]
    assert ckpt.modality_specs()["depth"].robust_trim == 0.2
    rebuilt = build_model_from_checkpoint(ckpt)
    assert rebuilt.input_specs["depth"].num_channels == 2 and rebuilt.output_specs["depth"].robust_trim == 0.2
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours) and list(ours) == list(theirs)
    inputs = {"rgb": make_inputs()["rgb"], "depth": torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(2))}
    masks = model.backbone.sample_masks(inputs, num_visible=6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(inputs, masks).preds["depth"], rebuilt(inputs, masks).preds["depth"])


def test_new_spec_fields_round_trip_without_code_for_them(tmp_path):
    """Specs are stored field by field from the dataclass: each field's value comes back."""
    model = custom_model()
    path = tmp_path / "m.safetensors"
    export_safetensors(model, path)
    with safe_open(str(path), framework="pt") as f:
        stored = json.loads(f.metadata()["specs"])
    assert set(stored["thermal"]) == {f.name for f in dataclasses.fields(ModalitySpec)}
    assert stored["thermal"]["robust_trim"] == 0.05 and stored["rgb"]["std"] == [0.229, 0.224, 0.225]


def test_a_fine_tuned_model_and_its_target_spec_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(inputs=("rgb", "thermal"), outputs=(), custom_modalities={"thermal": THERMAL},
                      modality_overrides={})
    specs = cfg.modality_specs()
    head = ConvNeXtHeadConfig(dim=32, num_classes=NUM_CLASSES, modalities=("rgb",), embed_dim=32, preds_per_patch=4)
    model = FineTuneModel(cfg.encoder, specs, head, "semseg").eval()
    target = ModalitySpec(name="semseg", kind="categorical", num_channels=NUM_CLASSES, loss="cross_entropy",
                          stride=4, ignore_index=255)
    path = tmp_path / "ft.safetensors"
    export_safetensors(model, path, record=model_record(model, extra_specs={"semseg": target}))
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "finetune" and ckpt.head["name"] == "semseg" and ckpt.head["kind"] == "convnext"
    assert ckpt.specs == {"rgb": specs["rgb"], "thermal": THERMAL, "semseg": target}
    assert ckpt.modality_specs()["semseg"].ignore_index == 255  # the target's preparation travels too
    rebuilt = build_model_from_checkpoint(ckpt)
    assert rebuilt.head_config == head
    assert_identical(model, rebuilt)


def test_old_format_files_without_specs_still_load(tmp_path):
    """Version 1: a training checkpoint with only the run config, a converted file with only the
    model config, a run's export with only config.yaml beside it."""
    torch.manual_seed(0)
    section = ModelSection(size="tiny", encoder=dict(dim=32, depth=1, num_heads=2, image_size=32, patch_size=8),
                           decoder=dict(dim=16, depth=1, num_heads=2), inputs=("rgb", "depth"), outputs=("rgb",),
                           modality_overrides={"depth": {"robust_trim": 0.25}})
    model = MultiMAE(section.build()).eval()
    run = tmp_path / "run"
    old = {"model": model.state_dict(), "step": 2, "config": to_plain(RunConfig(model=section))}
    path = save_checkpoint(old, run, 2, keep_last=1)
    ckpt = read_checkpoint(path)
    assert (ckpt.version, ckpt.kind, ckpt.specs) == (1, "pretrain", {})
    assert ckpt.modality_specs()["depth"].robust_trim == 0.25  # resolved from the config, as before
    assert_identical(model, build_model_from_checkpoint(path))
    loaded, cfg = load_pretrained(run)
    assert cfg.model == section
    assert_identical(model, loaded)
    converted = tmp_path / "v1.safetensors"
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(converted), metadata={"format": "multimae", "model_config": json.dumps(model.model_config.to_dict())})
    assert read_checkpoint(converted).version == 1
    assert_identical(model, build_model_from_checkpoint(converted))
    (run / "config.yaml").write_text(json.dumps(to_plain(RunConfig(model=section))))  # YAML reads JSON
    save_file(tensors, str(run / "model.safetensors"), metadata={"step": "2"})
    assert_identical(model, build_model_from_checkpoint(run))


def test_files_travel_with_their_hash_and_a_changed_or_missing_one_is_named(tmp_path):
    model = custom_model()
    for path in (write_training_checkpoint(model, tmp_path / "run"), save_multimae(model, tmp_path / "m.safetensors")):
        vocab = tmp_path / "vocab.json"
        vocab.write_text('{"a": 1}')
        entry = attach_file(path, "tokenizer", vocab, relative=f"tok-{path.suffix[1:]}/vocab.json")
        assert (path.parent / entry.path).read_text() == '{"a": 1}' and len(entry.sha256) == 64
        ckpt = read_checkpoint(path)
        assert ckpt.files == {"tokenizer": entry}
        assert ckpt.file("tokenizer").read_text() == '{"a": 1}'
        assert_identical(model, build_model_from_checkpoint(ckpt))  # the weights are unchanged
        (path.parent / entry.path).write_text('{"a": 2}')
        with pytest.raises(ValueError, match=r"file 'tokenizer' \(.*vocab.json\) has SHA-256 .* not the recorded"):
            read_checkpoint(path)
        (path.parent / entry.path).unlink()
        with pytest.raises(ValueError, match=r"file 'tokenizer' .*vocab.json.* is missing"):
            read_checkpoint(path)
    with pytest.raises(ValueError, match="relative to the checkpoint's folder"):
        attach_file(tmp_path / "m.safetensors", "x", vocab, relative="../x")


def test_a_foreign_file_is_not_read_as_ours(tmp_path):
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="not a multimae checkpoint"):
        read_checkpoint(tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "nothing.pt")


def test_a_pretraining_run_writes_specs_into_every_checkpoint_and_its_export(tmp_path):
    from test_pretrain_cli import TINY

    args = [*TINY, f"train.out_dir={tmp_path}", "train.name=run", f"data.cache_dir={tmp_path / 'cache'}",
            "model.inputs=[rgb,depth]", "model.outputs=[rgb,depth]", "model.modality_overrides={depth: {robust_trim: 0.2}}"]
    assert main(["pretrain", "--quiet", *args, "train.steps=2"]) == 0
    run = tmp_path / "run"
    last = read_checkpoint(list_checkpoints(run)[-1])
    export = read_checkpoint(run / "model.safetensors")
    for ckpt in (last, export):
        assert ckpt.version == FORMAT_VERSION and ckpt.kind == "pretrain"
        assert set(ckpt.specs) == {"rgb", "depth"} and ckpt.specs["depth"].robust_trim == 0.2
        assert ckpt.run_config["model"]["modality_overrides"] == {"depth": {"robust_trim": 0.2}}
    assert last.trainer["step"] == 2 and export.trainer == {}
    a, b = build_model_from_checkpoint(last), build_model_from_checkpoint(export)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # A resume reads the new format, and a file attached to the checkpoint travels on to the next ones.
    (tmp_path / "vocab.txt").write_text("a b c")
    entry = attach_file(list_checkpoints(run)[-1], "tokenizer", tmp_path / "vocab.txt")
    assert main(["pretrain", "--quiet", "--resume", str(run), "train.steps=3"]) == 0
    resumed = read_checkpoint(list_checkpoints(run)[-1])
    assert resumed.trainer["step"] == 3 and resumed.files == {"tokenizer": entry}
    assert read_checkpoint(run).files == {"tokenizer": entry} and read_checkpoint(run).trainer == {}


def test_a_newer_format_or_a_spec_that_does_not_build_is_refused_by_name(tmp_path):
    model = custom_model()
    path = write_training_checkpoint(model, tmp_path)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(ValueError, match=f"checkpoint format {FORMAT_VERSION + 1}, newer than"):
        read_checkpoint(path)
    state["specs"]["thermal"]["colour"] = "red"  # a field this version does not know
    torch.save(state, path)
    with pytest.raises(ValueError, match="stored modality spec does not build.*colour"):
        read_checkpoint(path)


def test_an_old_fine_tuning_run_export_rebuilds_from_its_config_yaml(tmp_path):
    """Version 1 fine-tuning export: weights with only ``step`` metadata, config.yaml beside."""
    from multimae.config import load_config, to_yaml
    from multimae.config.finetune import FinetuneConfig
    from multimae.tasks.finetune_arch import build_model
    from multimae.tasks.loading import load_finetuned

    cfg = load_config(FinetuneConfig, None, ["model.encoder={dim: 32, depth: 4, num_heads: 2, patch_size: 8}",
                                             "data.image_size=32", "task.kind=segmentation", "head.embed_dim=32",
                                             "model.modality_overrides={semseg: {num_channels: 7}}"])
    run = tmp_path / "ft"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"),
              metadata={"step": "3"})
    ckpt = read_checkpoint(run)
    assert (ckpt.version, ckpt.kind, ckpt.head["kind"]) == (1, "finetune", "convnext")
    assert ckpt.head["config"]["num_classes"] == 7
    assert_identical(model, build_model_from_checkpoint(ckpt))
    loaded, again = load_finetuned(run)
    assert again == cfg
    assert_identical(model, loaded)
    with pytest.raises(ValueError, match="fine-tuning run, not a pre-training run"):
        load_pretrained(run / "model.safetensors")
