"""``train.parallel=fsdp``: FSDP2 against DDP, DCP checkpoints and resume, the export, the config.

Two gloo processes on the CPU (`spawn_local`), the tiny MultiMAE of `conftest.tiny_config`. The
2-process runs happen once per module (`runs`): DDP and FSDP from the same init and data, 4 steps
with a checkpoint at step 2; FSDP again with gradient accumulation; each test reads what it needs.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from multimae.config import LossConfig, MaskingConfig, OptimConfig, TrainConfig
from multimae.config.loader import build_dataclass
from multimae.data.stream import PoolStream
from multimae.engine.checkpoint import (
    build_model_from_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from multimae.engine.distributed import DistInfo, init_distributed, spawn_local
from multimae.engine.fsdp import apply_fsdp, fsdp_units, is_sharded, mixed_precision_policy
from multimae.engine.sharded_checkpoint import list_sharded, prune_sharded, sharded_path
from multimae.engine.trainer import Trainer
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask
from multimae.tasks.runs import check_resume_changes

from conftest import assert_same_training, make_inputs, tiny_config

BATCH = 8
STEPS = 4
LOSS_TOL = {"rel": 1e-5, "abs": 1e-6}  # FSDP's reduce-scatter sums in another order than DDP's all-reduce


def pool(n: int = 32, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "depth": torch.randint(500, 9000, (n, 1, size, size), generator=g, dtype=torch.int32).to(torch.uint16),
        "semseg": torch.randint(0, 5, (n, size, size), generator=g, dtype=torch.uint8),
    }


def make_trainer(run_dir: Path, parallel: str, info: DistInfo, accum: int = 1, keep_last: int = 3,
                 ckpt_every: int = 2, precision: str = "fp32") -> Trainer:
    """A 4-step run, clipped (the tiny model's gradient norm is ~20, so clipping changes every step),
    a checkpoint at step 2 (and at the end), validation at step 2."""
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    task = PretrainTask(model, MaskingConfig(num_visible=8), LossConfig(), seed=0)
    stream = PoolStream(pool(), BATCH // accum, seed=0, rank=info.rank, world_size=info.world_size)
    train = TrainConfig(steps=STEPS, precision=precision, ckpt_every=ckpt_every, val_every=2, log_every=1, keep_last=keep_last,
                        parallel=parallel, threads=1)
    optim = OptimConfig(lr=1e-3, warmup_fraction=0.25, accum_steps=accum, clip_grad=1.0)
    return Trainer(model, task, stream, optim, train, BATCH, run_dir, info, torch.device("cpu"), progress=False)


def probing(model, seen: list) -> Callable[[int], dict[str, float]]:
    """An ``on_validate`` run by the main process alone (the others return nothing): a forward of
    fixed inputs, its result also appended to ``seen``."""
    def validate(step: int) -> dict[str, float]:
        result = {}
        if torch.distributed.get_rank() == 0:
            with torch.no_grad():
                result = {"probe": float(sum(p.float().square().mean() for p in model(make_inputs(2)).preds.values()))}
        seen.append(result)
        return result

    return validate


def fit_logging(trainer: Trainer) -> list[dict[str, float]]:
    """``trainer.fit()``, returning every step's logged values but the timings (losses, grad_norm, lr)."""
    logs, step = [], trainer.train_step
    trainer.train_step = lambda: logs.append(step()) or logs[-1]
    trainer.fit()
    return [{k: v for k, v in log.items() if k not in ("img_per_s", "elapsed_s")} for log in logs]


def _first_runs(out: str) -> None:
    """(One process of the group.) DDP, FSDP and FSDP with accumulation from the same init and data;
    checkpoints of the FSDP run only (the DDP run writes its last one and its export). Also both in
    bf16, FSDP with the GPU's policy (bf16 weights gathered, fp32 reduction) forced on the CPU."""
    import multimae.engine.trainer

    gpu_policy = mixed_precision_policy("bf16", "cuda")
    multimae.engine.trainer.mixed_precision_policy = lambda precision, device: (
        gpu_policy if precision == "bf16" else mixed_precision_policy(precision, device))
    info = init_distributed(torch.device("cpu"))
    out_dir, found = Path(out), {}
    runs = (("ddp", "ddp", 1, "fp32"), ("fsdp", "fsdp", 1, "fp32"), ("ddp_bf16", "ddp", 1, "bf16"),
            ("fsdp_bf16", "fsdp", 1, "bf16"), ("fsdp_accum", "fsdp", 2, "fp32"))
    for name, parallel, accum, precision in runs:
        validations: list[dict[str, float]] = []
        trainer = make_trainer(out_dir / name, parallel, info, accum, ckpt_every=2 if name == "fsdp" else 0,
                               precision=precision)
        trainer.on_validate = probing(trainer.model, validations)
        if name not in ("ddp", "fsdp"):  # the steps alone: no checkpoint, no export
            logs = [{k: v for k, v in trainer.train_step().items()} for _ in range(STEPS)]
        else:
            logs = fit_logging(trainer)
        with trainer.gathered():
            gathered_dtype = trainer.model.get_parameter("output_adapters.rgb.out_proj.weight").dtype
        found[name] = {"logs": logs, "validations": validations, "sharded": is_sharded(trainer.model),
                       "gathered_dtype": gathered_dtype}
        # Every parameter gathered by hand (DTensor.full_tensor), independently of the export's get_model_state_dict.
        found[name]["weights"] = {k: v.full_tensor() if hasattr(v, "full_tensor") else v.detach().clone()
                                  for k, v in trainer.model.state_dict().items()}
    found["fsdp_accum"] |= checks_on_shards(trainer, info)
    found["fourm"] = {"whole": fourm_losses(sharded=False), "sharded": fourm_losses(sharded=True)}
    if info.is_main:
        torch.save(found, out_dir / "found.pt")


def checks_on_shards(trainer: Trainer, info: DistInfo) -> dict:
    """On a sharded trainer after its run: (1) the first micro-step of an accumulated step reduces
    no gradient (each shard's ``.grad`` stays unset); (2) a NaN in one rank's shard alone makes every
    rank's finite-weights check fail."""
    trainer._micro_step(0)
    no_sync = all(p.grad is None for p in trainer.model.parameters())
    with torch.no_grad():
        if info.rank == 1:
            shard = next(p.to_local() for p in trainer.model.parameters() if p.to_local().numel())
            shard.view(-1)[0] = float("nan")
    seen = [None] * info.world_size
    torch.distributed.all_gather_object(seen, trainer._weights_finite())
    return {"no_sync": no_sync, "finite_seen": seen}


def fourm_losses(sharded: bool) -> tuple[list[float], int]:
    """(losses of 3 clipped AdamW steps, units sharded) of the tiny 4M of `tests/fourm`, in a plain
    loop on the model alone (the 4M run through the trainer: `tests/fourm/test_run.py`), every rank
    on the same batches."""
    from fourm.test_model import batch, tiny

    model = tiny().train()
    units = apply_fsdp(model, "cpu") if sharded else []
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for seed in range(3):
        out = model(batch(seed))
        losses.append(float(out.loss))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return losses, len(units)


def _resumed(run_dir: str) -> None:
    """(One process of a fresh group.) The FSDP run continued from its latest checkpoint."""
    info = init_distributed(torch.device("cpu"))
    trainer = make_trainer(Path(run_dir), "fsdp", info)
    trainer.resume(latest_checkpoint(Path(run_dir)))
    found = {"step": trainer.step, "logs": fit_logging(trainer)}
    found["weights"] = {k: v.full_tensor() for k, v in trainer.model.state_dict().items()}
    if info.is_main:
        torch.save(found, Path(run_dir) / "found.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    spawn_local(2, _first_runs, str(out))
    return out


def found(out: Path) -> dict:
    return torch.load(out / "found.pt", weights_only=False)


def assert_same_logs(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b) == STEPS
    for step, (x, y) in enumerate(zip(a, b)):
        assert set(x) == set(y), step
        for k in x:
            assert y[k] == pytest.approx(x[k], **LOSS_TOL), (step, k)


def test_fsdp_trains_as_ddp_does_from_the_same_init_and_data(runs):
    ddp, fsdp = found(runs)["ddp"], found(runs)["fsdp"]
    assert fsdp["sharded"] and not ddp["sharded"]
    assert ddp["logs"][0]["grad_norm"] > 1.0  # the clip is active, so a wrong global norm changes the weights
    assert_same_logs(ddp["logs"], fsdp["logs"])  # loss, every task's loss, grad_norm, lr
    assert ddp["logs"][0]["loss"] != ddp["logs"][-1]["loss"]  # it trained
    assert_same_training(ddp["weights"], fsdp["weights"])
    # A validation that runs the model on the main process alone (inside `gathered`) neither hangs nor differs.
    assert len(fsdp["validations"]) == len(ddp["validations"]) == 1
    assert fsdp["validations"][0]["probe"] == pytest.approx(ddp["validations"][0]["probe"], **LOSS_TOL)


def test_fsdp_with_bf16_weights_gathered_trains_as_ddp_with_bf16_autocast(runs):
    """The GPU's bf16 policy (run here on the CPU): losses as DDP's under bf16 autocast to bf16's
    precision (measured: at most 7e-4 relative over the 4 steps), fp32 master weights."""
    ddp, fsdp = found(runs)["ddp_bf16"], found(runs)["fsdp_bf16"]
    assert fsdp["gathered_dtype"] == torch.bfloat16 and found(runs)["fsdp"]["gathered_dtype"] == torch.float32
    assert fsdp["weights"]["encoder.0.attn.qkv.weight"].dtype == torch.float32  # the shards stay fp32
    for a, b in zip(ddp["logs"], fsdp["logs"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=5e-3)
    assert fsdp["logs"][-1]["loss"] != ddp["logs"][-1]["loss"]  # bf16 weights, not only bf16 matmuls
    torch.testing.assert_close(fsdp["weights"], ddp["weights"], atol=1e-2, rtol=0)


def test_fsdp_gradient_accumulation_equals_the_full_batch_and_skips_the_reduction(runs):
    ddp, accum = found(runs)["ddp"], found(runs)["fsdp_accum"]
    assert_same_logs(ddp["logs"], accum["logs"])
    assert_same_training(ddp["weights"], accum["weights"])
    assert accum["no_sync"]  # micro-steps before the last keep their gradients unreduced (FSDP's no_sync)


def test_a_nan_in_one_shard_fails_the_finite_weights_check_on_every_rank(runs):
    assert found(runs)["fsdp_accum"]["finite_seen"] == [False, False]


def test_fsdp_checkpoints_are_a_dcp_folder_beside_a_whole_model_pt(runs):
    run = runs / "fsdp"
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000002.pt", "checkpoint-00000004.pt"]
    assert [p.name for p in list_sharded(run)] == ["checkpoint-00000002.dcp", "checkpoint-00000004.dcp"]
    assert sorted(p.name for p in sharded_path(run, 4).iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    ckpt = read_checkpoint(latest_checkpoint(run))
    assert ckpt.trainer["sharded"] == "checkpoint-00000004.dcp" and "optimizer" not in ckpt.trainer
    assert ckpt.trainer["step"] == STEPS


def test_the_fsdp_export_is_a_ddp_export_and_loads_into_a_plain_model(runs):
    weights = found(runs)["fsdp"]["weights"]  # gathered by hand from the sharded model
    plain = build_model_from_checkpoint(runs / "fsdp")  # the run folder's model.safetensors
    assert not is_sharded(plain) and isinstance(plain, MultiMAE)
    state = plain.state_dict()
    assert list(state) == list(weights)
    for k in weights:
        assert torch.equal(state[k], weights[k]), k
    # The latest checkpoint-*.pt holds the same whole model.
    pt = read_checkpoint(latest_checkpoint(runs / "fsdp")).state
    assert all(torch.equal(pt[k], weights[k]) for k in weights)
    # Same file layout as a DDP run's export: keys, shapes, dtypes and metadata entries.
    ddp_file, fsdp_file = runs / "ddp" / "model.safetensors", runs / "fsdp" / "model.safetensors"
    a, b = load_file(ddp_file), load_file(fsdp_file)
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    with safe_open(str(ddp_file), "pt") as f, safe_open(str(fsdp_file), "pt") as g:
        assert set(f.metadata()) == set(g.metadata())
    assert_same_training(a, b)


def test_an_fsdp_run_resumed_in_a_fresh_group_continues_as_the_uninterrupted_one(runs, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(runs / "fsdp", run)  # the DCP folder is named relative to the run folder: it moves with it
    (run / "checkpoint-00000004.pt").unlink()
    (run / "model.safetensors").unlink()
    shutil.rmtree(sharded_path(run, 4))
    spawn_local(2, _resumed, str(run))
    again, straight = found(run), found(runs)["fsdp"]
    assert again["step"] == 2
    assert again["logs"] == straight["logs"][2:]  # same group size, same reduction order: exactly equal
    for k, v in straight["weights"].items():
        assert torch.equal(again["weights"][k], v), k


def test_an_fsdp_checkpoint_of_two_processes_resumes_in_one(runs, tmp_path):
    """DCP reshards on load: the 2-process shards load into one process's whole model."""
    run = tmp_path / "one"
    shutil.copytree(runs / "fsdp", run)
    for p in (run / "checkpoint-00000004.pt", run / "model.safetensors"):
        p.unlink()
    shutil.rmtree(sharded_path(run, 4))
    trainer = make_trainer(run, "fsdp", DistInfo())
    trainer.resume(latest_checkpoint(run))
    assert trainer.step == 2 and not is_sharded(trainer.model)
    logs = fit_logging(trainer)
    straight = found(runs)["fsdp"]
    for x, y in zip(logs, straight["logs"][2:]):
        assert x["loss"] == pytest.approx(y["loss"], **LOSS_TOL)
    assert_same_training(straight["weights"], trainer.model.state_dict())


def test_one_process_fsdp_trains_whole_and_keeps_dcp_checkpoints(tmp_path):
    """One process: nothing sharded, DCP checkpoints all the same; keep_last prunes the folders with the
    files; a crashed save's .tmp folder is never read and is removed by the next save."""
    trainer = make_trainer(tmp_path, "fsdp", DistInfo(), keep_last=1)
    assert not is_sharded(trainer.model) and trainer.parallel == {"parallel": "fsdp", "world_size": 1, "sharded": False}
    trainer.train_step()
    trainer.save()
    crashed = tmp_path / "checkpoint-00000002.dcp.tmp"
    crashed.mkdir()
    (crashed / "__0_0.distcp").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000001.pt"
    assert [p.name for p in list_sharded(tmp_path)] == ["checkpoint-00000001.dcp"]
    trainer.train_step()
    trainer.save()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000002.pt"]
    assert [p.name for p in list_sharded(tmp_path)] == ["checkpoint-00000002.dcp"]  # step 1's pruned
    assert not crashed.exists()
    # Resumed (no process group: DCP reads without one), it continues as the uninterrupted run.
    resumed = make_trainer(tmp_path / "again", "fsdp", DistInfo())
    shutil.copytree(sharded_path(tmp_path, 2), sharded_path(resumed.run_dir, 2))
    resumed.resume(latest_checkpoint(tmp_path))
    trainer.train_step(), resumed.train_step()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_a_checkpoint_whose_dcp_folder_is_missing_is_refused(tmp_path):
    trainer = make_trainer(tmp_path, "fsdp", DistInfo())
    trainer.train_step()
    trainer.save()
    shutil.rmtree(sharded_path(tmp_path, 1))
    with pytest.raises(ValueError, match="checkpoint-00000001.dcp: the sharded model and optimizer state"):
        make_trainer(tmp_path, "fsdp", DistInfo()).resume(latest_checkpoint(tmp_path))


def test_prune_keeps_the_kept_steps_and_removes_temporary_folders(tmp_path):
    for name in ("checkpoint-00000001.dcp", "checkpoint-00000002.dcp", "checkpoint-00000003.dcp.tmp", "other.dcp"):
        (tmp_path / name).mkdir()
    prune_sharded(tmp_path, {2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000002.dcp", "other.dcp"]


def test_fsdp_units_are_every_transformer_block_and_the_classes_a_model_lists():
    model = MultiMAE(tiny_config())
    units = fsdp_units(model)
    # 2 encoder blocks + 1 decoder block per output (rgb, depth, semseg, norm_rgb)
    assert len(units) == 2 + 4 and all(type(u).__name__ == "Block" for u in units)
    joint = MultiMAE(tiny_config(decoder={"dim": 16, "depth": 2, "num_heads": 2, "kind": "joint"}))
    assert len(fsdp_units(joint)) == 2 + 2  # M3AE-style: one joint decoder of 2 blocks

    class Listed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.body = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2))

        def fsdp_units(self):
            return (torch.nn.Sequential,)

    assert [type(u) for u in fsdp_units(Listed())] == [torch.nn.Sequential]


def test_fsdp_shards_4m_encoder_and_decoder_blocks_and_trains_as_the_whole_model(runs):
    from fourm.test_model import tiny

    assert [type(u).__name__ for u in fsdp_units(tiny())] == ["Block", "DecoderBlock", "DecoderBlock"]
    (whole, none), (sharded, units) = found(runs)["fourm"]["whole"], found(runs)["fourm"]["sharded"]
    assert none == 0 and units == 3
    assert sharded == pytest.approx(whole, **LOSS_TOL) and whole[0] != whole[-1]


@pytest.mark.parametrize(("overrides", "named"), [
    ({"parallel": "zero"}, "train.parallel"),
    ({"parallel": "fsdp", "precision": "fp16"}, "train.precision=fp16"),
    ({"parallel": "fsdp", "compile": True}, "train.compile"),
])
def test_a_bad_parallel_setting_is_refused_naming_the_key(overrides, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")) as err:
        build_dataclass(TrainConfig, overrides, "train")
    assert "train.parallel" in str(err.value)


def test_a_resume_may_not_switch_between_ddp_and_fsdp():
    with pytest.raises(ValueError, match=r"cannot change train\.parallel \('ddp' in the run, 'fsdp' asked\)"):
        check_resume_changes("run", {"train": {"parallel": "ddp"}}, {"train": {"parallel": "fsdp"}})


def test_a_group_of_one_process_is_sharded_over_and_trains_as_the_whole_model(tmp_path):
    """What benchmarks/gpu_fsdp_check.py does on a GPU, here with gloo: a process group of one, made
    by the caller, is sharded over (every block a unit) and trains as the unsharded model does."""
    whole = make_trainer(tmp_path / "whole", "fsdp", DistInfo())
    logs = [whole.train_step()["loss"] for _ in range(2)]
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        one = make_trainer(tmp_path / "one", "fsdp", DistInfo())
        assert is_sharded(one.model) and one.parallel["world_size"] == 1 and one.parallel["units"] == 6
        assert [one.train_step()["loss"] for _ in range(2)] == pytest.approx(logs, **LOSS_TOL)
        assert_same_training(whole.model.state_dict(), {k: v.full_tensor() for k, v in one.model.state_dict().items()})
        weight = "output_adapters.rgb.out_proj.weight"
        with one.gathered():  # whole tensors, not shards: any one process may run the model
            assert not hasattr(one.model.get_parameter(weight), "to_local")
        assert hasattr(one.model.get_parameter(weight), "to_local")
    finally:
        torch.distributed.destroy_process_group()
