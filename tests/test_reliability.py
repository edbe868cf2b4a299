"""Nothing runs that should not, nothing the user has is lost: a pickle payload in every load path,
resumes that cannot be applied leave the run untouched, no command writes where its inputs or
another run are, and jobs killed with SIGKILL resume to the same bytes as uninterrupted ones."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from multimae.cli.main import main
from multimae.config import FinetuneConfig, RunConfig, load_config, to_yaml
from multimae.configs import preset_path
from multimae.engine.checkpoint import list_checkpoints
from multimae.engine.logger import read_metrics
from multimae.tasks.pretrain_job import run_pretraining

from test_finetune_cli import TINY as FINETUNE_TINY
from test_pretrain_cli import TINY

SRC = Path(__file__).resolve().parents[1] / "src"


class Payload:
    """Unpickling it creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pretrain_config(tmp_path: Path, *extra: str) -> RunConfig:
    return load_config(RunConfig, preset_path("cpu"), [*TINY, f"train.out_dir={tmp_path}", "train.name=run",
                                                        f"data.cache_dir={tmp_path / 'cache'}", *extra])


# ------------------------------------------------------------------ safe loading
@pytest.fixture
def payloads(tmp_path):
    """(marker, {place: path}): the payload as the checkpoint of a pre-training run folder, of a
    fine-tuning run folder, as such a checkpoint file, and as a bare file."""
    marker = tmp_path / "marker"
    pre, ft, loose = tmp_path / "pre", tmp_path / "ft", tmp_path / "loose"
    for folder in (pre, ft, loose):
        folder.mkdir()
    (pre / "config.yaml").write_text(to_yaml(pretrain_config(tmp_path)))
    (ft / "config.yaml").write_text(to_yaml(load_config(FinetuneConfig, preset_path("finetune-cpu"))))
    for path in (pre / "checkpoint-00000005.pt", ft / "checkpoint-00000005.pt", loose / "weights.pt"):
        torch.save({"model": Payload(marker), "config": {}}, path)
    places = {"pre run": pre, "pre checkpoint": pre / "checkpoint-00000005.pt",
              "ft run": ft, "ft checkpoint": ft / "checkpoint-00000005.pt", "bare file": loose / "weights.pt"}
    return marker, places


def test_the_payload_runs_when_unpickled_unsafely(payloads):
    marker, places = payloads
    torch.load(places["bare file"], weights_only=False)  # the test's premise: plain unpickling runs it
    assert marker.exists()


COMMANDS = {
    "predict": lambda src, tmp: ["predict", "--checkpoint", str(src), "--rgb", str(tmp / "photo.png"),
                                 "--out", str(tmp / "out")],
    "convert": lambda src, tmp: ["convert", str(src), str(tmp / "out.safetensors")],
    "visualize": lambda src, tmp: ["visualize", "--checkpoint", str(src), "--out", str(tmp / "out")],
    "evaluate": lambda src, tmp: ["evaluate", "--checkpoint", str(src)],
    "finetune --checkpoint": lambda src, tmp: ["finetune", "--quiet", "--checkpoint", str(src), *FINETUNE_TINY,
                                               f"train.out_dir={tmp / 'runs'}", "train.name=new"],
    "pretrain --resume": lambda src, tmp: ["pretrain", "--quiet", "--resume", str(src)],
    "finetune --resume": lambda src, tmp: ["finetune", "--quiet", "--resume", str(src)],
}
CASES = [
    ("predict", "pre run"), ("predict", "ft checkpoint"), ("predict", "bare file"),
    ("convert", "pre run"), ("convert", "ft run"), ("convert", "pre checkpoint"), ("convert", "bare file"),
    ("visualize", "pre run"), ("visualize", "pre checkpoint"), ("visualize", "bare file"),
    ("evaluate", "ft run"), ("evaluate", "ft checkpoint"), ("evaluate", "bare file"),
    ("finetune --checkpoint", "pre run"), ("finetune --checkpoint", "pre checkpoint"),
    ("finetune --checkpoint", "bare file"),
    ("pretrain --resume", "pre run"), ("pretrain --resume", "pre checkpoint"),
    ("finetune --resume", "ft run"), ("finetune --resume", "ft checkpoint"),
]


@pytest.mark.parametrize("command,place", CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_a_pickle_payload_never_runs(command, place, payloads, tmp_path):
    marker, places = payloads
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    before = snapshot(places[place] if places[place].is_dir() else places[place].parent)
    with pytest.raises(SystemExit) as err:
        main(COMMANDS[command](places[place], tmp_path))
    message = str(err.value.code)
    assert not marker.exists(), f"{command} ran the payload in {place}"
    assert message.startswith("error:") and "--trust" in message and "nothing was run" in message, message
    assert snapshot(places[place] if places[place].is_dir() else places[place].parent) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_trust_is_the_only_way_to_unpickle(payloads, tmp_path):
    marker, places = payloads
    with pytest.raises(SystemExit):  # unpickled, but not weights: still an error
        main(["convert", "--trust", str(places["bare file"]), str(tmp_path / "out.safetensors")])
    assert marker.exists()


# -------------------------------------------------------------- resume guards
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A pre-training run at step 4 (checkpoints 2 and 4) and a fine-tuning run folder's config."""
    tmp = tmp_path_factory.mktemp("runs")
    assert main(["pretrain", "--quiet", *TINY, f"train.out_dir={tmp}", "train.name=pre",
                 f"data.cache_dir={tmp / 'cache'}", "train.steps=4"]) == 0
    ft = tmp / "ft"
    ft.mkdir()
    (ft / "config.yaml").write_text(to_yaml(load_config(FinetuneConfig, preset_path("finetune-cpu"))))
    return tmp / "pre", ft


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor))


def test_our_checkpoints_hold_only_tensors_and_plain_data(runs):
    pre, _ = runs
    state = torch.load(list_checkpoints(pre)[-1], weights_only=True)  # no allow-list needed
    assert {"model", "optimizer", "scaler", "step", "stream", "torch_rng", "config"} <= set(state)
    assert _plain(state) and isinstance(state["torch_rng"], torch.Tensor) and isinstance(state["config"], dict)


REFUSED_RESUMES = [
    (["pretrain", "--resume", "{pre}", "model.encoder.depth=3"], "model.encoder.depth"),
    (["pretrain", "--resume", "{pre}", "masking.num_visible=4", "train.steps=9"], "masking.num_visible"),
    (["pretrain", "--resume", "{pre}", "train.steps=2"], "already at step 4"),
    (["pretrain", "--resume", "{pre}", "--config", "cpu"], "--config cpu cannot be combined"),
    (["pretrain", "--resume", "{pre}/nonexist"], "pre/nonexist: no such run folder"),
    (["pretrain", "--resume", "{ft}"], "this is a fine-tuning run"),
    (["finetune", "--resume", "{pre}"], "this is a pre-training run"),
    (["finetune", "--resume", "{ft}", "head.depth=2"], "head.depth"),
    (["finetune", "--checkpoint", "{ft}", "train.out_dir={pre}/..", "train.name=new"], "this is a fine-tuning run"),
    (["evaluate", "--checkpoint", "{pre}"], "this is a pre-training run"),
]


@pytest.mark.parametrize("argv,expected", REFUSED_RESUMES, ids=[e for _, e in REFUSED_RESUMES])
def test_a_refused_resume_names_the_problem_and_touches_nothing(argv, expected, runs):
    pre, ft = runs
    before = snapshot(pre.parent)
    with pytest.raises(SystemExit) as err:
        main([a.format(pre=pre, ft=ft) for a in argv])
    assert expected in str(err.value.code)
    assert snapshot(pre.parent) == before


def test_a_checkpoint_of_another_architecture_is_refused_before_config_yaml_is_written(runs):
    pre, _ = runs
    before = snapshot(pre)
    cfg = pretrain_config(pre.parent, "model.encoder.depth=2")  # the run has depth 1
    with pytest.raises(ValueError, match="model.encoder.depth"):
        run_pretraining(cfg, resume=pre, progress=False)
    assert snapshot(pre) == before


# ------------------------------------------------------- refusal to overwrite
def test_a_new_run_never_replaces_an_existing_folder(runs, tmp_path):
    pre, _ = runs
    finished = tmp_path / "done"  # a run whose checkpoints were deleted: its weights, report, metrics
    finished.mkdir()
    for name in ("config.yaml", "model.safetensors", "report.json", "metrics.jsonl", "reconstructions.png"):
        (finished / name).write_bytes((pre / name).read_bytes())
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    base = [*TINY, f"train.out_dir={tmp_path}", f"data.cache_dir={pre.parent / 'cache'}", "train.steps=1"]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match="already holds a run: pass --resume .* --overwrite"):
        main(["pretrain", "--quiet", *base, "train.name=done"])
    with pytest.raises(SystemExit, match="holds files that are not a run's"):
        main(["pretrain", "--quiet", "--overwrite", *base, "train.name=notes"])
    assert snapshot(tmp_path) == before
    assert main(["pretrain", "--quiet", "--overwrite", *base, "train.name=done"]) == 0  # told to
    assert [r["step"] for r in read_metrics(finished, "train")] == [1]  # a fresh log, not appended


def test_no_command_writes_where_its_inputs_or_another_run_are(runs, tmp_path, capsys):
    pre, _ = runs
    d = tmp_path / "d"
    d.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "rgb.png")
    np.save(d / "depth.npy", np.ones((32, 32), np.float32))
    before, runs_before = snapshot(d), snapshot(pre)
    refused = [
        (["predict", "--checkpoint", str(pre), "--rgb", str(d / "rgb.png"), "--depth", str(d / "depth.npy"),
          "--out", str(d)], "holds the input"),
        (["predict", "--checkpoint", str(pre), "--rgb", str(d / "rgb.png"), "--out", str(pre)], "is a run folder"),
        (["visualize", "--checkpoint", str(pre), "--out", str(pre)], "is a run folder"),
        (["convert", str(pre), str(pre / "model.safetensors")], "is a file of the run"),
        (["convert", str(d / "rgb.png"), str(d / "rgb.png")], "is an input"),
        (["evaluate", "--checkpoint", str(pre), "--out", str(pre / "report.json")], "is a file of the run"),
        (["data", "generate", "--out", str(pre), "--count", "2", "--quiet"], "holds no manifest.json"),
        (["data", "generate", "--out", str(d), "--count", "2", "--quiet"], "holds no manifest.json"),
    ]
    for argv, expected in refused:
        try:  # refused before any work (exit status 2, the message on stderr) or during it (SystemExit)
            code, message = main(argv), capsys.readouterr().err
        except SystemExit as stop:
            code, message = 1, str(stop)
        assert code != 0 and re.search(expected, message), (argv, message)
    assert snapshot(d) == before and snapshot(pre) == runs_before


def test_generate_refuses_a_count_below_what_the_folder_holds(tmp_path):
    for fmt in ("folder", "shards"):
        out = tmp_path / fmt
        assert main(["data", "generate", "--out", str(out), "--count", "5", "--size", "16", "--format", fmt,
                     "--shard-size", "2", "--quiet"]) == 0
        before = snapshot(out)
        with pytest.raises(SystemExit, match="--count 3"):
            main(["data", "generate", "--out", str(out), "--count", "3", "--size", "16", "--format", fmt,
                  "--shard-size", "2", "--quiet"])
        assert snapshot(out) == before


# ------------------------------------------------------------------ kill -9
def _spawn(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    code = "import sys; from multimae.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode() if proc.stderr else ""
    return False


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"kind": "train"') if path.exists() else 0


def test_pretrain_killed_at_random_steps_resumes_to_the_same_weights(tmp_path):
    args = [*TINY, f"train.out_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", "train.steps=8",
            "train.val_every=100", "train.ckpt_every=3", "train.keep_last=1"]
    assert main(["pretrain", "--quiet", *args, "train.name=whole"]) == 0
    run = tmp_path / "killed"
    rng = random.Random(14)
    kills = [1, *sorted(rng.sample(range(2, 8), 2))]  # the first before any checkpoint, then at random
    killed = 0
    for i, at in enumerate(kills):
        argv = ["pretrain", "--quiet", *args, "train.name=killed"] if i == 0 else ["pretrain", "--quiet", "--resume", str(run)]
        killed += _kill_when(_spawn(argv), lambda at=at: _steps_logged(run) >= at)
        if i == 0:
            assert not list_checkpoints(run)  # killed before its first checkpoint
    assert killed == len(kills)
    assert main(["pretrain", "--quiet", "--resume", str(run)]) == 0
    whole, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(run / "model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    losses = [[r["loss"] for r in read_metrics(r, "train")] for r in (tmp_path / "whole", run)]
    assert losses[0] == losses[1] and len(losses[0]) == 8  # each step logged once, as uninterrupted


@pytest.mark.parametrize("fmt", ["folder", "shards"])
def test_data_generate_killed_resumes_to_the_same_files(fmt, tmp_path):
    args = ["--count", "24", "--size", "32", "--format", fmt, "--shard-size", "4", "--quiet"]
    assert main(["data", "generate", "--out", str(tmp_path / "whole"), *args]) == 0
    out = tmp_path / "killed"
    pattern = "train/caption/*/*.txt" if fmt == "folder" else "train/shard-*.tar"
    marks = [3, 7] if fmt == "folder" else [1, 3]
    killed = sum(_kill_when(_spawn(["data", "generate", "--out", str(out), *args]),
                            lambda m=m: len(list(out.glob(pattern))) >= m) for m in marks)
    assert killed == len(marks)
    assert main(["data", "generate", "--out", str(out), *args]) == 0
    whole, resumed = snapshot(tmp_path / "whole"), snapshot(out)
    assert whole.keys() == resumed.keys() and all(whole[k] == resumed[k] for k in whole)
    assert json.loads(resumed["manifest.json"])["splits"]["train"]["complete"]
