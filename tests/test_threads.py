import io
import json

import pytest
from tqdm import tqdm

from multimae.engine.precision import PrecisionChoice
from multimae.engine.threads import ThreadChoice, ThreadTuner, plan_threads, restart_rate

from test_engine import make_trainer


def run_tuner(tuner, seconds):
    """Drive ``tuner`` through its schedule with the given step times; returns the choice."""
    choice = None
    for s in seconds:
        tuner.before_step()
        choice = tuner.after_step(s)
    return choice


def test_the_tuner_times_each_thread_count_after_a_warm_up_step_and_keeps_the_faster():
    set_to = []
    tuner = ThreadTuner((2, 1), warmup=1, trials=2, set_threads=set_to.append)
    assert tuner.steps_needed == 6
    # 2 threads oversubscribed (a busy neighbour): 7 s; 1 thread: 1.15 s; warm-up steps ignored
    choice = run_tuner(tuner, [30.0, 7.0, 7.2, 9.0, 1.1, 1.2])
    assert set_to == [2, 2, 2, 1, 1, 1, 1]
    assert choice.threads == 1 and choice.step_s == pytest.approx({2: 7.1, 1: 1.15})
    assert choice.reason.startswith("1 thread: 1.15 s/step measured vs 7.1 s with 2")
    tuner.before_step()
    assert tuner.after_step(99.0) is None and set_to[-1] == 1  # done: nothing changes afterwards
    fast = run_tuner(ThreadTuner((2, 1), set_threads=set_to.append), [1.0, 0.5, 0.5, 1.0, 0.9, 0.9])
    assert fast.threads == 2 and set_to[-1] == 2
    assert fast.as_dict() == {"threads": 2, "reason": fast.reason, "step_s": {"2": 0.5, "1": 0.9}}


def test_auto_threads_are_measured_only_on_a_one_process_cpu_run():
    assert isinstance(plan_threads("auto", "cpu", 1, 1000, env={}, cores=2), ThreadTuner)
    fixed = {
        "train.threads=3": plan_threads(3, "cpu", 1, 1000, env={}, cores=2),
        "left as is on cuda": plan_threads("auto", "cuda", 1, 1000, env={}, cores=2),
        "(2 processes)": plan_threads("auto", "cpu", 2, 1000, env={}, cores=2),
        "OMP_NUM_THREADS=1 is set": plan_threads("auto", "cpu", 1, 1000, env={"OMP_NUM_THREADS": "1"}, cores=2),
        "one core": plan_threads("auto", "cpu", 1, 1000, env={}, cores=1),
        "too few steps left (10)": plan_threads("auto", "cpu", 1, 10, env={}, cores=2),
        "PyTorch's default": plan_threads(None, "cpu", 1, 1000, env={}, cores=2),
    }
    for reason, choice in fixed.items():
        assert isinstance(choice, ThreadChoice) and reason in choice.reason, reason


def test_the_eta_counts_only_the_steps_after_the_switch():
    now = [0.0]
    bar = tqdm(total=100, file=io.StringIO(), mininterval=0, miniters=1)
    bar._time = lambda: now[0]
    bar.reset(total=100)
    for _ in range(6):  # slow steps while measuring
        now[0] += 10.0
        bar.update(1)
    restart_rate(bar)
    for _ in range(5):  # 1 s steps at the chosen thread count
        now[0] += 1.0
        bar.update(1)
    d = bar.format_dict
    assert d["n"] == 11 and d["elapsed"] == pytest.approx(65.0)
    assert d["rate"] == pytest.approx(1.0)  # without the restart, the slow steps would still weigh in
    assert "01:29" in bar.format_meter(**d)  # 89 steps left at 1 step/s
    bar.close()


class ScriptedTuner(ThreadTuner):
    """Ignores the real step times (the test must not depend on this machine's speed)."""

    def __init__(self, seconds, set_threads):
        super().__init__((2, 1), set_threads=set_threads)
        self.script = iter(seconds)

    def after_step(self, seconds):
        return super().after_step(next(self.script))


def test_the_trainer_tunes_threads_in_the_first_steps_and_records_both_choices(tmp_path):
    trainer = make_trainer(tmp_path, steps=8)
    set_to = []
    trainer.plan_threads = lambda: ScriptedTuner([5.0, 4.0, 4.0, 3.0, 1.0, 1.0], set_to.append)
    trainer.fit()
    assert set_to == [2, 2, 2, 1, 1, 1, 1] and trainer.step == 8
    report = trainer.setup_report()
    assert report["threads"]["threads"] == 1 and report["threads"]["step_s"] == {"2": 4.0, "1": 1.0}
    assert report["precision"] == {"precision": "fp32", "requested": "fp32", "reason": "fp32: requested", "speedup": None}
    setup = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "setup"]
    assert [r["setting"] for r in setup] == ["precision", "threads"]
    assert setup[1]["step"] == 6 and setup[1]["threads"] == 1
    trainer.close()


def test_an_injected_precision_choice_drives_autocast_and_the_scaler(tmp_path):
    choice = PrecisionChoice("bf16", "auto", "bf16: amx_bf16, bf16 matmul 5x fp32 measured (8x32 @ 32x128)", 5.0)
    trainer = make_trainer(tmp_path, steps=2, precision="auto", choice=choice)
    assert trainer.precision is choice and not trainer.scaler.is_enabled()
    trainer.train_step()
    assert not trainer.model.backbone.encoder[0].attn.fused_attn  # the CPU bf16 path: explicit attention
    assert trainer.setup_report()["precision"]["reason"] == choice.reason
    trainer.close()
    fp16 = make_trainer(tmp_path / "b", steps=2, precision="auto", choice=PrecisionChoice("fp16", "auto", "fp16: test"))
    assert fp16.scaler.is_enabled()
    fp16.close()
