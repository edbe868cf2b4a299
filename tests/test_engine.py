import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multimae.config import LossConfig, MaskingConfig, OptimConfig, TrainConfig
from multimae.data.stream import PoolStream
from multimae.engine.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from multimae.engine.distributed import DistInfo, resolve_device
from multimae.engine.optim import lr_at, param_groups
from multimae.engine.trainer import DivergenceError, Trainer
from multimae.model import MultiMAE
from multimae.model.state_keys import checkpoint_names
from multimae.tasks.pretrain import PretrainTask

from conftest import assert_same_training, tiny_config

BATCH = 8


def synthetic_pool(n: int = 32, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "depth": torch.randint(500, 9000, (n, 1, size, size), generator=g, dtype=torch.int32).to(torch.uint16),
        "semseg": torch.randint(0, 5, (n, size, size), generator=g, dtype=torch.uint8),
    }


def make_trainer(run_dir, steps=6, rank=0, world=1, precision="fp32", lr=1e-3, accum=1, compile=False, choice=None):
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    task = PretrainTask(model, MaskingConfig(num_visible=8), LossConfig(), seed=0)
    stream = PoolStream(synthetic_pool(), BATCH // accum, seed=0, rank=rank, world_size=world)
    train = TrainConfig(steps=steps, precision=precision, ckpt_every=0, log_every=1, keep_last=2, compile=compile)
    optim = OptimConfig(lr=lr, warmup_fraction=0.34, accum_steps=accum)
    return Trainer(model, task, stream, optim, train, BATCH, run_dir, DistInfo(rank, world),
                   torch.device("cpu"), progress=False, precision=choice)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedule_warms_up_then_decays_to_min():
    assert lr_at(0, 100, 1e-3, 10, warmup_lr=1e-6) == pytest.approx(1e-6)
    assert lr_at(10, 100, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(55, 100, 1e-3, 10) == pytest.approx(0.5e-3)
    assert lr_at(100, 100, 1e-3, 10, min_lr=1e-5) == pytest.approx(1e-5)


def test_weight_decay_skips_norms_biases_tokens_and_embeddings():
    model = MultiMAE(tiny_config())
    decay, no_decay = param_groups(model, 0.05, model.no_weight_decay())
    names = checkpoint_names(model)  # official names
    no = {names[id(p)] for p in no_decay["params"]}
    yes = {names[id(p)] for p in decay["params"]}
    assert "global_tokens" in no and "encoder.0.norm1.weight" in no and "encoder.0.attn.qkv.bias" in no
    assert "output_adapters.rgb.mask_token" in no and "output_adapters.rgb.task_embeddings.depth" in no
    assert "encoder.0.attn.qkv.weight" in yes and "input_adapters.semseg.class_emb.weight" in yes
    assert not any(n.endswith("pos_emb") for n in yes | no)  # frozen: not optimised at all


def test_model_no_weight_decay_names_tokens_and_embeddings():
    model = MultiMAE(tiny_config())
    skip = model.no_weight_decay()
    assert {"global_tokens", "output_adapters.rgb.mask_token", "output_adapters.depth.task_embeddings.rgb"} <= skip


def test_resuming_after_n_steps_equals_an_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "a")
    for _ in range(6):
        straight.train_step()
    first = make_trainer(tmp_path / "b")
    for _ in range(3):
        first.train_step()
    first.save()
    resumed = make_trainer(tmp_path / "c")
    resumed.resume(latest_checkpoint(tmp_path / "b"))
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    a, c = params(straight.model), params(resumed.model)
    for k in a:
        assert torch.equal(a[k], c[k]), k


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000002.pt", "checkpoint-00000003.pt"]
    # A write interrupted by a crash leaves only a temporary file, which is never picked up.
    (tmp_path / ".checkpoint-00000004.pt.tmp123").write_bytes(b"\x80truncated")
    (tmp_path / "checkpoint-00000005.pt.partial").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000003.pt"


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps=4)
    trainer.train_step()
    saved = trainer.save()
    before = saved.read_bytes()
    with torch.no_grad():
        trainer.model.output_adapters["rgb"].out_proj.bias.fill_(math.nan)
    with pytest.raises(DivergenceError, match="non-finite loss at step 1"):
        trainer.fit()
    assert latest_checkpoint(tmp_path) == saved and saved.read_bytes() == before


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        trainer = make_trainer(Path(out).parent / f"r{rank}", rank=rank, world=world)
        for _ in range(3):
            trainer.train_step()
        if rank == 0:
            torch.save(params(trainer.model), out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    single = make_trainer(tmp_path / "single")
    for _ in range(3):
        single.train_step()
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    assert_same_training(params(single.model), torch.load(out))


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    full, accumulated = make_trainer(tmp_path / "full"), make_trainer(tmp_path / "acc", accum=2)
    for _ in range(3):
        full.train_step()
        accumulated.train_step()
    assert_same_training(params(full.model), params(accumulated.model))


def test_a_compiled_forward_trains_like_the_eager_one(tmp_path):
    eager = make_trainer(tmp_path / "eager", steps=2)
    eager.fit()
    compiled = make_trainer(tmp_path / "compiled", steps=2, compile=True)
    assert compiled.forward is not compiled.model  # the loop calls the compiled module
    compiled.fit()
    assert_same_training(params(eager.model), params(compiled.model))


def test_each_local_process_gets_its_own_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
