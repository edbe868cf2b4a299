"""The training loop: precision, accumulation, clipping, DDP or FSDP, schedule, logging, checkpoints.

The loop knows nothing about MultiMAE: a *task* maps ``(forward, raw batch, step, global batch,
rows)`` to a `LossOutput`, where ``rows`` are this micro-batch's rows of the step's global batch; a
*stream* yields this process's rows of each global micro-batch and has a resumable position.

``train.parallel``: ``ddp`` replicates the model on every process (DistributedDataParallel);
``fsdp`` shards it over the process group (`multimae.engine.fsdp`) and writes DCP checkpoints
beside the usual ones (`multimae.engine.sharded_checkpoint`). Both split the data the same way.
One process has no group (`init_distributed` makes none): ``fsdp`` then trains the model whole, as
``ddp`` does, and still writes DCP checkpoints, so a run keeps one checkpoint layout whatever its
number of processes. (A group of one, made by the caller, is sharded over: a GPU check does so.)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from multimae.config.schema import OptimConfig, TrainConfig
from multimae.data.collate import batch_to
from multimae.engine.checkpoint import (
    FileEntry, export_safetensors, latest_checkpoint, files_table, list_checkpoints, load_checkpoint, model_record,
    save_checkpoint,
)
from multimae.engine.distributed import DistInfo
from multimae.engine.fsdp import apply_fsdp, gathered, mixed_precision_policy, set_gradient_sync
from multimae.engine.logger import MetricLogger, drop_metrics_after
from multimae.engine.optim import lr_at, param_groups, set_lr
from multimae.engine.precision import PrecisionChoice, autocast, choose_precision
from multimae.engine.sharded_checkpoint import full_model_state, load_sharded, prune_sharded, save_sharded
from multimae.engine.threads import ThreadChoice, ThreadTuner, plan_threads, restart_rate
from multimae.losses import LossOutput
from multimae.modalities.spec import ModalitySpec


class Stream(Protocol):
    rows: slice

    def __next__(self) -> dict[str, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


Task = Callable[..., LossOutput]
_ADVICE = "Try a lower optim.lr, optim.clip_grad or train.precision=fp32."


class DivergenceError(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is left as it was."""


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        task: Task,
        stream: Stream,
        optim: OptimConfig,
        train: TrainConfig,
        global_batch: int,
        run_dir: Path,
        dist_info: DistInfo,
        device: torch.device,
        config: dict[str, Any] | None = None,
        on_validate: Callable[[int], dict[str, float]] | None = None,
        on_picture: Callable[[int], Path | None] | None = None,
        progress: bool = True,
        desc: str = "pretrain",
        precision: PrecisionChoice | None = None,
        extra_specs: Mapping[str, ModalitySpec] | None = None,
    ) -> None:
        """``precision``: `train.precision` resolved (`choose_precision`); by default resolved here
        with a generic matmul size. ``extra_specs``: specs of modalities the run prepares beyond the
        model's inputs and outputs (a fine-tuning target), stored with every checkpoint."""
        self.model, self.task, self.stream = model.to(device), task, stream
        self.optim_cfg, self.train_cfg = optim, train
        self.run_dir, self.dist, self.device = run_dir, dist_info, device
        self.config = config or {}
        self.extra_specs = dict(extra_specs or {})
        self.files: dict[str, FileEntry] = {}  # files that travel with every checkpoint (see `attach_file`)
        self.on_validate, self.on_picture = on_validate, on_picture
        self.progress = progress and dist_info.is_main
        self.desc = desc
        if global_batch % optim.accum_steps:
            raise ValueError(f"batch size {global_batch} is not divisible by optim.accum_steps={optim.accum_steps}")
        self.global_batch = global_batch
        self.micro_batch = global_batch // optim.accum_steps  # global rows per micro-step
        self.step = 0
        self.logger = MetricLogger(run_dir, enabled=dist_info.is_main)
        self.precision = precision or choose_precision(train.precision, device)
        self._note("precision", self.precision.reason, self.precision.as_dict())
        self.fsdp = train.parallel == "fsdp"  # DCP checkpoints; the model sharded when there are processes
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.parallel = self._parallelize()
        self.forward: Callable[..., Any] = self.ddp if self.ddp is not None else self.model
        if train.compile:
            self.forward = torch.compile(self.forward)
        skip = getattr(self.model, "no_weight_decay", lambda: set())()
        fused = device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(  # after sharding: it steps the shards
            param_groups(self.model, optim.weight_decay, skip, optim.layer_decay), lr=optim.warmup_lr, betas=optim.betas, fused=fused
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.precision == "fp16")
        self.peak_lr = optim.peak_lr(global_batch)
        self.warmup_steps = round(optim.warmup_fraction * train.steps)
        self.threads: ThreadChoice | None = None  # set by `fit`

    def _parallelize(self) -> dict[str, Any]:
        """Wrap the model as ``train.parallel`` says (DDP, FSDP, or nothing for one process); the
        choice, noted, as report.json records it."""
        world, kind = self.dist.world_size, self.device.type
        if self.fsdp:
            policy = mixed_precision_policy(self.precision.precision, kind)  # refuses fp16
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                record = {"parallel": "fsdp", "world_size": 1, "sharded": False}
                self._note("parallel", "fsdp with one process: nothing to shard, the model trains whole "
                           "(checkpoints still DCP + .pt)", record)
                return record
            units = apply_fsdp(self.model, kind, policy)  # over the group: one process too (benchmarks/gpu_fsdp_check.py)
            world = torch.distributed.get_world_size()
            dtype = "bf16" if policy.param_dtype == torch.bfloat16 else "fp32"  # of the gathered weights
            record = {"parallel": "fsdp", "world_size": world, "sharded": True, "units": len(units),
                      "param_dtype": dtype}
            self._note("parallel", f"fsdp over {world} processes: {len(units)} blocks + the root sharded, "
                       f"weights gathered in {dtype}, gradients reduced in fp32", record)
            return record
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if kind == "cuda" else None
            )
        return {"parallel": "ddp" if self.dist.enabled else "none", "world_size": world}

    def _note(self, what: str, reason: str, record: dict[str, Any]) -> None:
        """Say a set-up decision on the console and in metrics.jsonl (kind ``setup``)."""
        if self.dist.is_main:
            tqdm.write(f"{what}: {reason}")
            self.logger.log(self.step, {"setting": what, **record}, kind="setup")

    def setup_report(self) -> dict[str, Any]:
        """The set-up decisions for report.json: precision and threads, each with its reason."""
        return {"precision": self.precision.as_dict(), "threads": self.threads.as_dict() if self.threads else None,
                "parallel": self.parallel}

    def plan_threads(self) -> ThreadTuner | ThreadChoice:
        """`train.threads` for the steps left (tests replace this with a tuner of their own)."""
        return plan_threads(self.train_cfg.threads, self.device.type, self.dist.world_size,
                            self.train_cfg.steps - self.step)

    def _choose_threads(self, choice: ThreadChoice) -> None:
        self.threads = choice
        self._note("threads", choice.reason, choice.as_dict())

    # ------------------------------------------------------------------ state
    def record(self, with_config: bool = True) -> dict[str, Any]:
        """What every checkpoint and export of this run carries besides the weights (`model_record`);
        ``with_config``: the run's config too (a training checkpoint has it under ``config``)."""
        return model_record(self.model, self.config if with_config else None, self.extra_specs, self.files)

    def _loop_state(self) -> dict[str, Any]:
        """A checkpoint's entries besides the model and the optimizer."""
        return {
            **self.record(with_config=False),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "stream": self.stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config,
        }

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint of a model that is not sharded (``train.parallel=ddp``)."""
        return {**self._loop_state(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's contents: the model and optimizer from its DCP folder (in the
        run folder) when it names one (``sharded``), else from its entries."""
        if "sharded" in state:
            load_sharded(self.model, self.optimizer, self.run_dir / state["sharded"])
        elif self.parallel.get("sharded"):
            raise ValueError("this checkpoint was written by a train.parallel=ddp run (no sharded state): "
                             "continue it with train.parallel=ddp")
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.files = files_table(state.get("files"), "checkpoint")
        self.stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["torch_rng"])

    def resume(self, checkpoint: Path | dict[str, Any], trusted: bool = False) -> None:
        """Continue from a checkpoint file (read safely unless ``trusted``) or its loaded contents;
        metrics logged after its step (by a run stopped later) are dropped."""
        self.load_state_dict(checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, trusted))
        if self.dist.is_main:
            drop_metrics_after(self.run_dir, self.step)

    def save(self) -> Path | None:
        """Write the checkpoint of this step (every process calls it); its path on the main process."""
        if self.fsdp:
            return self._save_sharded()
        if not self.dist.is_main:
            return None
        return save_checkpoint(self.state_dict(), self.run_dir, self.step, self.train_cfg.keep_last)

    def _save_sharded(self) -> Path | None:
        """``checkpoint-<step>.dcp/`` (every rank's shards), then ``checkpoint-<step>.pt`` with the
        whole model (see `multimae.engine.sharded_checkpoint`); old ones pruned by ``keep_last``."""
        folder = save_sharded(self.model, self.optimizer, self.run_dir, self.step)
        model = full_model_state(self.model)
        if not self.dist.is_main:
            return None
        path = save_checkpoint({**self._loop_state(), "model": model, "sharded": folder.name}, self.run_dir,
                               self.step, self.train_cfg.keep_last)
        prune_sharded(self.run_dir, {int(p.stem.split("-")[1]) for p in list_checkpoints(self.run_dir)})
        return path

    def gathered(self) -> contextlib.AbstractContextManager[None]:
        """A block in which any one process may run the model alone (validation, pictures, a final
        report): under FSDP every process gathers the whole weights (`multimae.engine.fsdp.gathered`),
        so every process must enter it; otherwise nothing to do."""
        return gathered(self.model)

    # ------------------------------------------------------------------- loop
    def _micro_step(self, micro: int) -> LossOutput:
        raw = batch_to(next(self.stream), self.device, non_blocking=True)  # nested: batch[PRESENT_KEY]
        last = micro == self.optim_cfg.accum_steps - 1
        sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
        set_gradient_sync(self.model, last)  # FSDP's no_sync (nothing for a model that is not sharded)
        with sync:
            # This process's rows of the step's global batch: masks drawn for the whole step and
            # sliced, so neither accumulation nor the number of processes changes them.
            offset = micro * self.micro_batch
            rows = slice(offset + self.stream.rows.start, offset + self.stream.rows.stop)
            with autocast(self.model, self.device.type, self.precision.precision):
                losses = self.task(self.forward, raw, self.step, self.global_batch, rows)
            self.scaler.scale(losses.total / self.optim_cfg.accum_steps).backward()
        return losses

    def _reduce(self, values: Tensor) -> Tensor:
        if self.dist.enabled:
            torch.distributed.all_reduce(values)
            values = values / self.dist.world_size
        return values

    def train_step(self) -> dict[str, float]:
        """One optimiser step (all micro-steps); returns the step's mean losses over processes."""
        lr = lr_at(self.step, self.train_cfg.steps, self.peak_lr, self.warmup_steps,
                   self.optim_cfg.warmup_lr, self.optim_cfg.min_lr)
        set_lr(self.optimizer, lr)
        sums: dict[str, Tensor] = {}
        for micro in range(self.optim_cfg.accum_steps):
            losses = self._micro_step(micro)
            for k, v in {"loss": losses.total, **losses.per_task}.items():
                sums[k] = sums.get(k, 0) + v.detach().float() / self.optim_cfg.accum_steps
        keys = list(sums)
        values = self._reduce(torch.stack([sums[k] for k in keys]))
        logged = dict(zip(keys, values.tolist()))
        if not all(math.isfinite(v) for v in logged.values()):
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergenceError(f"non-finite loss at step {self.step}: {logged}; stopping ({self._kept()}). "
                                  f"{_ADVICE}")
        if self.optim_cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            logged["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if not self._weights_finite():  # a finite loss can still give non-finite weights (lr, optimiser state)
            raise DivergenceError(f"non-finite weights after step {self.step + 1} (lr {lr:.3g}, losses {logged}); "
                                  f"stopping without saving them ({self._kept()}). {_ADVICE}")
        self.step += 1
        logged["lr"] = lr
        return logged

    def _weights_finite(self) -> bool:
        """Whether every parameter is finite (one reduction, one synchronisation; under FSDP, of this
        process's shards, then summed over processes, so all agree)."""
        sums = [_local(p).detach().float().sum() for p in self.model.parameters()]
        total = torch.stack(sums).sum() if sums else torch.zeros((), device=self.device)
        if self.parallel.get("sharded"):
            torch.distributed.all_reduce(total)
        return bool(torch.isfinite(total))

    def _kept(self) -> str:
        """What is left on disk, for a divergence message."""
        last = latest_checkpoint(self.run_dir)
        if last is None:
            return f"no checkpoint was written in {self.run_dir}"
        return f"the last checkpoint, {last}, is intact"

    def fit(self) -> dict[str, float]:
        cfg = self.train_cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc, unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        start, start_step, last = time.perf_counter(), self.step, {}
        plan = self.plan_threads()
        tuner = plan if isinstance(plan, ThreadTuner) else None
        if tuner is None:
            self._choose_threads(plan)  # type: ignore[arg-type]
        elif self.dist.is_main:
            tqdm.write(f"threads: timing {' vs '.join(map(str, tuner.candidates))} over the first {tuner.steps_needed} steps")
        try:
            while self.step < cfg.steps:
                if tuner is not None:
                    tuner.before_step()
                    t0 = time.perf_counter()
                last = self.train_step()
                bar.update(1)
                if tuner is not None and (choice := tuner.after_step(time.perf_counter() - t0)) is not None:
                    self._choose_threads(choice)
                    restart_rate(bar)  # the ETA from the steps at the chosen thread count only
                    tuner = None
                done = self.step
                if done % cfg.log_every == 0 or done == cfg.steps:
                    elapsed = time.perf_counter() - start
                    last["img_per_s"] = (done - start_step) * self.global_batch / max(elapsed, 1e-9)
                    last["elapsed_s"] = elapsed
                    self.logger.log(done, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}", img_s=f"{last['img_per_s']:.0f}")
                if self.on_validate is not None and cfg.val_every and done % cfg.val_every == 0 and done < cfg.steps:
                    with self.gathered():
                        self.logger.log(done, self.on_validate(done), kind="val")
                if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
                    self.save()
                if self.on_picture is not None and cfg.vis_every and done % cfg.vis_every == 0 and done < cfg.steps:
                    with self.gathered():
                        self.on_picture(done)
        finally:
            bar.close()
        self.save()
        weights = full_model_state(self.model)  # under FSDP: gathered to the main process
        if self.dist.is_main:
            export_safetensors(self.model, self.run_dir / "model.safetensors", {"step": str(self.step)},
                               self.record(), state=weights)
        return last

    def run(self, checkpoint: Path | dict[str, Any] | None = None, source: Path | None = None) -> float:
        """Resume from ``checkpoint`` (a file or its loaded contents, read from ``source``) when
        given, then train to the end; returns the seconds spent training (resuming excluded)."""
        if checkpoint is not None:
            self.resume(checkpoint)
            if self.dist.is_main:
                where = source if source is not None else checkpoint if isinstance(checkpoint, Path) else "checkpoint"
                print(f"resumed from {where} at step {self.step}")
        self.model.train()
        start = time.perf_counter()
        self.fit()
        return time.perf_counter() - start

    def close(self) -> None:
        self.logger.close()


def _local(tensor: Tensor) -> Tensor:
    """This process's shard of a sharded (DTensor) parameter; the tensor itself otherwise."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor
