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
