"""A benchmark of this checkout side by side with another commit, in one run: the speed ratio.

Exports the other commit's ``src/`` (``git archive``) to a temporary folder, then runs
``bench_pretrain_step.py`` (this checkout's script, for both) alternately against each package,
``--rounds`` times, and prints the median step time of each and their ratio. Alternating rounds
share the machine's load of the moment, so the ratio means something even on a busy machine;
the absolute times do not.

    .venv/bin/python benchmarks/bench_against.py --ref HEAD~1 -- --size tiny --image-size 64 --patch-size 8 --num-visible 32 --batch 16
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"^(fp32|bf16): step ([0-9.]+) s", re.M)


def export_src(ref: str, dest: Path) -> Path:
    """``ref``'s ``src/`` folder extracted under ``dest``; returns its path."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_once(src: Path, bench_args: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pretrain_step.py"), *bench_args],
                         check=True, capture_output=True, text=True, env=env).stdout
    return {m.group(1): float(m.group(2)) for m in STEP.finditer(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD~1", help="the commit to compare with (default: the previous one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("bench_args", nargs="*", help="arguments of bench_pretrain_step.py (after --)")
    args = parser.parse_args()
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.ref], check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"{args.ref} ({sha})": export_src(args.ref, Path(tmp)), "this checkout": ROOT / "src"}
        times: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for r in range(args.rounds):
            for name, src in trees.items():
                for precision, t in run_once(src, args.bench_args).items():
                    times[name].setdefault(precision, []).append(t)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {p} {v[-1]:.3f} s" for name, d in times.items() for p, v in d.items()), flush=True)
    (old, new) = times.values()
    for precision in new:
        a, b = statistics.median(old[precision]), statistics.median(new[precision])
        print(f"{precision}: {list(trees)[0]} median {a:.3f} s, this checkout median {b:.3f} s, "
              f"ratio new/old {b / a:.3f} ({args.rounds} alternating rounds)")


if __name__ == "__main__":
    main()
