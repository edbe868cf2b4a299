"""Time from a mask change on the demo page to every picture updated, measured in the browser.

    python benchmarks/bench_demo_latency.py --checkpoint runs/pretrain-... [--changes 20] [--visible 32]
        [--screenshot docs/demo.png]

Starts ``multimae demo`` on the checkpoint (a subprocess, on a free port of 127.0.0.1), opens the
page in Debian's headless chromium through playwright, loads a world scene, then toggles one
token at a time (cycling over the inputs) and records, per change, the page's own timing: from
the click to the last prediction picture decoded (`window.demo.timings`, see static/demo.js).
Prints the median, min and max. Never asserts on time; the machine's other load counts.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stride(n: int) -> int:
    """A step coprime with ``n``, so that ``k * step % n`` visits every cell before repeating."""
    return next(s for s in (5, 7, 11, 13, 3, 1) if math.gcd(s, n) == 1)


def measure_latency(page, changes: int = 20, timeout_ms: float = 60_000) -> list[float]:
    """Milliseconds from each of ``changes`` mask clicks to its pictures on ``page`` (a loaded demo
    page): one token toggled per change, cycling over the input tiles, one change at a time."""
    canvases = page.locator("#inputs .tile:not(.absent) canvas")
    count = canvases.count()
    if count == 0:
        raise RuntimeError("the page shows no input to mask")
    grid_h, grid_w = page.evaluate("() => window.demo.grid")
    cells = grid_h * grid_w
    step = _stride(cells)
    timings: list[float] = []
    for k in range(changes):
        canvas = canvases.nth(k % count)
        cell = (k // count) * step % cells
        box = canvas.bounding_box()
        x = box["x"] + (cell % grid_w + 0.5) * box["width"] / grid_w
        y = box["y"] + (cell // grid_w + 0.5) * box["height"] / grid_h
        before = page.evaluate("() => window.demo.timings.length")
        page.mouse.click(x, y)
        page.wait_for_function(f"() => window.demo.timings.length > {before} && !window.demo.busy", timeout=timeout_ms)
        timings.append(page.evaluate(f"() => window.demo.timings[{before}]"))
    return timings


def summary(timings: list[float]) -> str:
    return (f"mask change -> pictures updated: median {statistics.median(timings):.1f} ms over {len(timings)} changes "
            f"(min {min(timings):.1f}, max {max(timings):.1f})")


def _start_demo(checkpoint: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from multimae.cli.main import main; sys.exit(main())", "demo",
           "--checkpoint", checkpoint, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="")
        if "open http://" in line:
            break
    else:
        raise SystemExit(f"multimae demo exited ({proc.wait()}) before serving")
    for _ in range(100):  # the address is printed just before uvicorn binds
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("multimae demo did not start listening")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run folder or weights file (as multimae demo takes)")
    parser.add_argument("--changes", type=int, default=20, help="mask changes timed [20]")
    parser.add_argument("--split", default="val", help="world split of the scene [val]")
    parser.add_argument("--scene", type=int, default=3, help="world scene shown [3]")
    parser.add_argument("--visible", type=int, help="start from a random mask with this many visible tokens "
                        "(the page's Random N) [no mask]")
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet alpha of that mask [1.0]")
    parser.add_argument("--screenshot", type=Path, help="save the page after the changes, e.g. docs/demo.png")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no browser at {CHROMIUM}: apt-get install chromium")
    port = free_port()
    proc = _start_demo(args.checkpoint, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 980})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => window.demo.ready", timeout=60_000)
            page.fill("#scene-index", str(args.scene))
            page.select_option("#split", args.split)
            updates = page.evaluate("() => window.demo.updates")
            page.click("#load-scene")
            page.wait_for_function(f"() => window.demo.updates > {updates} && !window.demo.busy")
            if args.visible is not None:
                page.fill("#alpha", str(args.alpha))
                updates = page.evaluate("() => window.demo.updates")
                page.evaluate(f"() => {{ const s = document.getElementById('num-visible'); s.value = {args.visible}; "
                              "s.dispatchEvent(new Event('change')); }")
                page.wait_for_function(f"() => window.demo.updates > {updates} && !window.demo.busy")
            timings = measure_latency(page, args.changes)
            print(summary(timings))
            if args.screenshot:
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot), full_page=True)
                print(f"screenshot: {args.screenshot}")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
