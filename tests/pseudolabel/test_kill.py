"""`kill -9` of a `pseudolabel --workers 1` run: its decode worker dies with it, and rerunning the
command finishes the job with outputs identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import multimae

from .conftest import world_photo

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SCRIPT = '''
import sys, time
from multimae.cli.main import main
from multimae.pseudolabel import Labeler, register_labeler

@register_labeler
class SlowBrightness(Labeler):
    """'depth' from brightness, slowly: a run lasts long enough to be killed."""
    name, modality, default_model = "test-slow-brightness", "depth", "none"

    def load(self):
        pass

    def predict(self, images):
        time.sleep(0.25)
        return [(256.0 - im.float().mean(0)).cpu().numpy() for im in images]

sys.exit(main(sys.argv[1:]))
'''


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_kill_9_leaves_no_orphan_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(24):
        Image.fromarray(world_photo(i, 32)).save(photos / f"s{i:02d}.png")
    script = tmp_path / "labeler_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(multimae.__file__).parents[1]), "OMP_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        return [sys.executable, str(script), "pseudolabel", "--images", str(photos), "--out", str(out), "--tasks",
                "depth", "--labeler", "depth=test-slow-brightness", "--device", "cpu", "--workers", "1",
                "--batch-size", "2", "--quiet"]

    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    run = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not (workers and list((out / "train" / "depth").glob("*.png"))):
        workers = workers or _children(run.pid)
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be killed"
    assert workers, "no decode worker seen"
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = len(list((out / "train" / "depth").glob("*.png")))
    assert 0 < done < 24
    # At once (the kernel kills them), not after torch's 5 s idle check, which a busy worker never reaches.
    deadline = time.monotonic() + 2
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), f"orphaned workers {workers} outlived their parent"

    subprocess.run(command(out), env=env, check=True, capture_output=True, timeout=300)
    assert not list(out.rglob("*.tmp"))
    assert _files(out) == _files(tmp_path / "whole")  # byte for byte
    m1 = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    m2 = json.loads((out / "manifest.json").read_text())
    assert m1["splits"] == m2["splits"] and m2["splits"]["train"]["complete"]
