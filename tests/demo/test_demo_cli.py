"""`multimae demo`: its options, the address it prints, the host it binds by default, clear errors."""

from __future__ import annotations

import pytest

pytest.importorskip("uvicorn", reason="the demo extra (uvicorn) is not installed")

from multimae.cli.main import main  # noqa: E402


@pytest.fixture
def served(monkeypatch):
    """uvicorn.run recorded instead of run."""
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_demo_binds_this_machine_by_default_and_prints_the_address(demo_checkpoint, served, capsys):
    assert main(["demo", "--checkpoint", str(demo_checkpoint)]) == 0
    (app, kw), = served
    assert kw["host"] == "127.0.0.1" and kw["port"] == 7860
    out = capsys.readouterr().out
    assert "multimae model from" in out and "http://127.0.0.1:7860/" in out and "warning" not in out
    assert {r.path for r in app.routes} >= {"/", "/api/info", "/api/scene", "/api/masks", "/api/download"}


def test_demo_on_another_host_and_port_warns(demo_checkpoint, served, capsys):
    assert main(["demo", "--checkpoint", str(demo_checkpoint), "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert served[0][1] == {"host": "0.0.0.0", "port": 8123, "log_level": "warning"}
    out = capsys.readouterr().out
    assert "http://0.0.0.0:8123/" in out and "other machines can reach" in out


@pytest.mark.parametrize("args, words", [
    (["--port", "0"], "--port must be in"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
])
def test_demo_refuses_bad_options(demo_checkpoint, served, capsys, args, words):
    assert main(["demo", "--checkpoint", str(demo_checkpoint), *args]) == 2
    assert words in capsys.readouterr().err and not served


def test_demo_refuses_a_missing_or_broken_checkpoint(tmp_path, served, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in capsys.readouterr().err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")
    assert main(["demo", "--checkpoint", str(broken)]) == 2
    assert "cannot read this checkpoint" in capsys.readouterr().err and not served


def test_demo_of_an_m3ae_run_loads_its_tokenizer(m3ae_run, served, capsys):
    TestClient = pytest.importorskip("fastapi.testclient").TestClient

    assert main(["demo", "--checkpoint", str(m3ae_run)]) == 0
    (app, _), = served
    out = capsys.readouterr().out
    assert "m3ae model from" in out and "no view" not in out
    state = TestClient(app).post("/api/scene", json={"split": "val", "index": 1}).json()
    assert state["texts"] and state["captions"]  # the caption read with the run's tokenizer
    assert {r.path for r in app.routes} >= {"/api/texts/{name}", "/api/texts/{name}/masks"}
