"""Units of resumable experiments: computed once, kept as JSON, read back; mean ± sd."""

from __future__ import annotations

import json

import pytest

from multimae.engine.experiment import mean_sd, run_unit


def test_a_unit_is_computed_once_and_read_back(tmp_path):
    calls = []

    def fn():
        calls.append(1)
        return {"score": 0.5}

    path = tmp_path / "results" / "arm-s0.json"
    first = run_unit(path, fn, command="python x.py")
    assert first["unit"] == "arm-s0" and first["score"] == 0.5 and first["command"] == "python x.py"
    assert first["unit_wall_s"] >= 0 and json.loads(path.read_text()) == first
    assert run_unit(path, fn) == first and len(calls) == 1
    assert [p.name for p in path.parent.iterdir()] == ["arm-s0.json"]  # no temporary file left


def test_a_failed_unit_leaves_nothing(tmp_path):
    def fn():
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        run_unit(tmp_path / "u.json", fn)
    assert list(tmp_path.iterdir()) == []


def test_mean_sd():
    assert mean_sd([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))
    assert mean_sd([0.7]) == (0.7, 0.0)


def test_a_run_resumes_from_its_checkpoint_or_starts_again(tmp_path):
    from multimae.engine.checkpoint import checkpoint_path, save_checkpoint
    from multimae.engine.experiment import resume_or_restart

    started = tmp_path / "started"
    (started / "logs").mkdir(parents=True)
    assert resume_or_restart(started) is None and not started.exists()  # no checkpoint yet: cleared
    assert resume_or_restart(tmp_path / "never") is None
    done = tmp_path / "done"
    save_checkpoint({"step": 5}, done, 5, keep_last=1)
    assert resume_or_restart(done) == done and checkpoint_path(done, 5).exists()  # kept
