"""The demo page in a real headless Chromium (Debian's ``chromium``, driven by playwright): load it,
pick a scene, paint masks, see every prediction change, edit, upload, read the error messages,
time mask changes; screenshots go to ``test-artifacts/`` (git-ignored).

Skipped, saying why, only where playwright or the browser is missing (.ci/run installs both).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the demo extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the demo extra (uvicorn) is not installed")
pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")

import uvicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from multimae.demo import DemoSession, create_app  # noqa: E402

from .conftest import png_bytes  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
BENCH = ROOT / "benchmarks" / "bench_demo_latency.py"

if not CHROMIUM.exists():
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium; .ci/run does)", allow_module_level=True)


def _bench():
    """benchmarks/bench_demo_latency.py: the measurement the lead runs on the default run."""
    spec = importlib.util.spec_from_file_location("bench_demo_latency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Served:
    """``session``'s app on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, session: DemoSession) -> None:
        self.session = session
        self.port = _bench().free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def served(session):
    with Served(session) as s:
        yield s


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(served.url)
    page.wait_for_function("() => window.demo && window.demo.ready", timeout=30_000)
    yield page
    page.close()
    assert not errors, errors  # no uncaught JavaScript error


def outputs(page) -> dict[str, str]:
    return page.evaluate("() => Object.fromEntries([...document.querySelectorAll('#outputs .tile')]"
                         ".map(t => [t.dataset.modality, t.querySelector('img').src]))")


def wait_update(page, before: int) -> None:
    page.wait_for_function(f"() => window.demo.updates > {before} && !window.demo.busy", timeout=30_000)


def click_cell(page, name: str, row: int, col: int, grid: int = 4) -> None:
    box = page.locator(f"#inputs canvas[data-modality={name}]").bounding_box()
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / grid, box["y"] + (row + 0.5) * box["height"] / grid)


def test_load_pick_a_scene_paint_masks_and_every_prediction_changes(page, served):
    names = [s for s in served.session.specs]
    assert page.locator("#inputs canvas").count() == len(names)
    first = outputs(page)
    assert set(first) == set(served.session.model.output_specs) and all(v.startswith("data:image/png") for v in first.values())
    assert "world val scene 0" in page.locator("#inputs .tile .source").first.inner_text()  # the page loads scene 0
    page.screenshot(path=str(ARTIFACTS / "demo-loaded.png"), full_page=True)

    page.uncheck("#paste")  # the predictions as such (pasted: the input at visible tokens, checked below)
    # An untrained model's class maps (argmax) rarely move with one token: their logits are compared.
    dense = [n for n, s in served.session.model.output_specs.items() if not s.is_categorical]
    logits = {n: v.clone() for n, v in served.session.prediction.logits.items()}
    assert dense and logits

    def every_prediction_changed(before_pictures, before_logits):
        now = outputs(page)
        assert all(now[n] != before_pictures[n] for n in dense), "every dense prediction's picture follows"
        assert all(not torch.equal(served.session.prediction.logits[n], v) for n, v in before_logits.items())
        return now, {n: v.clone() for n, v in served.session.prediction.logits.items()}

    before = page.evaluate("() => window.demo.updates")
    page.fill("#scene-index", "5")
    page.click("#load-scene")
    wait_update(page, before)
    scene5, logits = every_prediction_changed(first, logits)
    assert "world val scene 5" in page.locator("#inputs .tile .source").first.inner_text()

    before = page.evaluate("() => window.demo.updates")
    click_cell(page, names[0], 1, 1)
    wait_update(page, before)
    assert served.session.masks[names[0]][1, 1] and int(served.session.masks[names[0]].sum()) == 1
    every_prediction_changed(scene5, logits)
    page.check("#paste")  # nothing of names[1] is masked: its pasted prediction is its input
    page.wait_for_function("() => !window.demo.busy")
    pasted = outputs(page)[names[1]]
    assert pasted == served.session.state()["inputs"][names[1]]["picture"] != served.session.state()["outputs"][names[1]]

    # Drag along the top row of the second input: four tokens hidden by one stroke.
    box = page.locator(f"#inputs canvas[data-modality={names[1]}]").bounding_box()
    y = box["y"] + box["height"] / 8
    page.mouse.move(box["x"] + 5, y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(box["x"] + k * box["width"] / 8 - 5, y)
    page.mouse.up()
    page.wait_for_function("() => !window.demo.busy")
    page.wait_for_function(f"() => document.querySelector('.tile[data-modality={names[1]}] .visible')"
                           ".textContent.startsWith('12 /')")
    assert served.session.masks[names[1]][0].all() and not served.session.masks[names[1]][1:].any()

    # The per-tile buttons and random N.
    before = page.evaluate("() => window.demo.updates")
    page.locator(f".tile[data-modality={names[2]}] button[data-act=all]").click()
    wait_update(page, before)
    assert served.session.masks[names[2]].all()
    page.fill("#alpha", "0.5")
    page.evaluate("() => { const s = document.getElementById('num-visible'); s.value = 7; "
                  "s.dispatchEvent(new Event('change')); }")
    page.wait_for_function("() => document.getElementById('visible-count').textContent.startsWith('7 of 48')")
    assert sum(int((~m).sum()) for m in served.session.masks.values()) == 7
    page.screenshot(path=str(ARTIFACTS / "demo-masked.png"), full_page=True)


def test_requests_made_while_one_runs_are_queued_and_the_page_ends_as_the_server(page, served, monkeypatch):
    names = list(served.session.specs)
    commit = served.session._commit

    def slow_commit(*args):  # every change takes 0.3 s on the server: the clicks below overlap them
        time.sleep(0.3)
        commit(*args)

    before = page.evaluate("() => window.demo.updates")
    page.click("#random-scene")
    wait_update(page, before)
    for name in (names[0], names[2]):  # a known start for the clicks below: every token hidden
        before = page.evaluate("() => window.demo.updates")
        page.locator(f".tile[data-modality={name}] button[data-act=none]").click()
        wait_update(page, before)
    monkeypatch.setattr(served.session, "_commit", slow_commit)
    # no waiting from here on: a mask click, an edit and mask clicks while the earlier requests run
    click_cell(page, names[0], 0, 0)
    page.check("input[name=tool][value=patch]")
    click_cell(page, names[1], 3, 3)
    page.check("input[name=tool][value=mask]")
    click_cell(page, names[2], 2, 1)
    click_cell(page, names[2], 0, 3)
    click_cell(page, names[0], 1, 0)
    page.wait_for_function("() => !window.demo.busy", timeout=30_000)
    state = served.session.state()
    shown = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('#inputs .tile')]"
                          ".map(t => [t.dataset.modality, t.querySelector('.visible').textContent]))")
    assert shown == {n: f"{v['visible']} / 16 visible" for n, v in state["inputs"].items()}
    assert served.session.masks[names[2]][2, 1] and served.session.masks[names[2]][0, 3]  # no click lost
    assert served.session.masks[names[0]][0, 0] and served.session.masks[names[0]][1, 0]
    assert int(served.session.masks[names[0]].sum()) == 2 and int(served.session.masks[names[2]].sum()) == 2
    assert served.session.sources[names[0]].startswith("world val scene ")
    assert not torch.equal(served.session.inputs[names[1]], served.session.original[names[1]])  # the edit ran


def test_editing_recolours_a_patch_and_paints_a_class(page, served):
    session = served.session
    colour_name = next(n for n, s in session.specs.items() if s.stored_as == "rgb8")
    class_name = next(n for n, s in session.specs.items() if s.is_categorical)
    page.check("input[name=tool][value=patch]")
    page.locator(f".tile[data-modality={colour_name}] .edit-value").fill("#00ff00")
    before_out = outputs(page)
    before = page.evaluate("() => window.demo.updates")
    click_cell(page, colour_name, 2, 3)
    wait_update(page, before)
    patch = session.inputs[colour_name][:, 16:24, 24:32]
    assert torch.allclose(patch, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand_as(patch))
    assert outputs(page) != before_out

    page.check("input[name=tool][value=brush]")
    page.locator(f".tile[data-modality={class_name}] select.edit-value").select_option("4")
    page.fill("#brush-radius", "3")
    before = page.evaluate("() => window.demo.updates")
    click_cell(page, class_name, 0, 0)
    wait_update(page, before)
    assert int(session.inputs[class_name][4, 4]) == 4
    before = page.evaluate("() => window.demo.updates")
    page.click("#reset-inputs")
    wait_update(page, before)
    assert torch.equal(session.inputs[class_name], session.original[class_name])


def test_uploads_and_their_error_messages(page, served, tmp_path):
    session = served.session
    colour_name = next(n for n, s in session.specs.items() if s.stored_as == "rgb8")
    depth_name = next(n for n, s in session.specs.items() if s.stored_as == "depth16")
    photo = tmp_path / "my photo.png"
    photo.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    before = page.evaluate("() => window.demo.updates")
    page.set_input_files(f"input[type=file][data-modality={colour_name}]", str(photo))
    wait_update(page, before)
    assert "my photo.png" in page.locator(f".tile[data-modality={colour_name}] .source").inner_text()
    assert session.sources[colour_name].startswith("upload 'my photo.png'")

    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    page.set_input_files(f"input[type=file][data-modality={colour_name}]", str(text))
    page.wait_for_selector("#message.error:not([hidden])")
    assert "not an image" in page.inner_text("#message")

    eight_bit = tmp_path / "depth8.png"
    eight_bit.write_bytes(png_bytes(np.full((32, 32), 100, np.uint8)))
    page.set_input_files(f"input[type=file][data-modality={depth_name}]", str(eight_bit))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('16-bit')")
    page.screenshot(path=str(ARTIFACTS / "demo-error.png"), full_page=True)
    assert session.sources[colour_name].startswith("upload 'my photo.png'")  # the refused uploads changed nothing

    # Removing every input, then uploading one: predictions of everything from it alone.
    before = page.evaluate("() => window.demo.updates")
    page.click("#clear-inputs")
    wait_update(page, before)
    assert session.inputs == {} and page.locator("#inputs .tile.absent").count() == len(session.specs)
    before = page.evaluate("() => window.demo.updates")
    page.set_input_files(f"input[type=file][data-modality={colour_name}]", str(photo))
    wait_update(page, before)
    assert list(session.inputs) == [colour_name] and set(outputs(page)) == set(session.model.output_specs)
    assert all(v.startswith("data:image/png") for v in outputs(page).values())


def test_mask_change_latency_median_over_20_changes(page, served, capsys):
    timings = _bench().measure_latency(page, changes=20)
    assert len(timings) == 20 and all(t > 0 for t in timings)
    median = statistics.median(timings)
    record = {"model": "tiny test MultiMAE (32 px, 4x4 tokens, 2 blocks)", "changes": 20, "median_ms": median,
              "min_ms": min(timings), "max_ms": max(timings), "timings_ms": timings,
              "note": "CPU shared with other processes; not a benchmark of the default run"}
    (ARTIFACTS / "demo_latency.json").write_text(json.dumps(record, indent=1))
    with capsys.disabled():
        print(f"\ndemo latency (tiny model, browser): {_bench().summary(timings)}")


def test_a_family_without_a_view_says_so_on_the_page(browser, tiny_fourm):
    with Served(DemoSession(tiny_fourm, "4m")) as served:
        page = browser.new_page()
        page.goto(served.url)
        page.wait_for_function("() => window.demo && window.demo.ready")
        assert "no view for the 4m family yet" in page.inner_text("#message")
        assert page.locator("#view-multimae").is_hidden()
        page.screenshot(path=str(ARTIFACTS / "demo-4m.png"))
        page.close()



def test_the_m3ae_view_masks_a_word_by_its_chip_and_the_predictions_follow(browser, m3ae_session):
    with Served(m3ae_session) as served:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(served.url)
        page.wait_for_function("() => window.demo && window.demo.ready && window.demo.updates > 0 && !window.demo.busy",
                               timeout=30_000)
        assert page.locator("#view-multimae").is_visible() and page.locator("#message").is_hidden()
        name = m3ae_session.info()["texts"][0]["name"]
        box = page.locator(f"fieldset.text[data-modality={name}]")
        words = m3ae_session.state()["texts"][name]["words"]
        assert box.locator(".chip").count() == len(words) and box.locator("textarea").input_value() == " ".join(words)
        image = m3ae_session.info()["inputs"][0]["name"]
        updates = page.evaluate("() => window.demo.updates")
        for row in range(2):  # hide half the image: its prediction there shows what the caption says
            for col in range(4):
                click_cell(page, image, row, col)
        wait_update(page, updates)
        assert m3ae_session.state()["inputs"][image]["visible"] == 8
        before = outputs(page)
        assert before and all(before.values())

        updates = page.evaluate("() => window.demo.updates")
        box.locator(".chip").nth(1).click()
        wait_update(page, updates)
        chip = box.locator(".chip").nth(1)
        assert "masked" in chip.get_attribute("class") and chip.inner_text().startswith("[MASK]")
        predicted = chip.locator(".predicted").inner_text()
        assert predicted and predicted == m3ae_session.state()["texts"][name]["predicted"][1]
        assert "with the predicted words" in box.locator(".predicted-text").inner_text()
        after = outputs(page)
        assert set(after) == set(before) and after != before  # the image prediction follows the caption

        updates = page.evaluate("() => window.demo.updates")
        box.locator(".chip").nth(2).click()  # two quick clicks: both words end up masked
        box.locator(".chip").nth(3).click()
        page.wait_for_function(f"() => window.demo.updates > {updates} + 1 && !window.demo.busy", timeout=30_000)
        assert m3ae_session.state()["texts"][name]["masked"][1:4] == [1, 1, 1]
        assert box.locator(".chip.masked .predicted").count() == 3
        page.screenshot(path=str(ARTIFACTS / "demo-m3ae.png"), full_page=True)

        updates = page.evaluate("() => window.demo.updates")
        box.locator("textarea").fill("   ")
        box.locator("textarea").press("Enter")
        page.wait_for_function("() => !document.getElementById('message').hidden")
        assert "empty" in page.inner_text("#message")
        assert box.locator(".chip").count() == len(words)  # the state as it was

        box.locator("textarea").fill("a red cube left of a [MASK] sphere")
        box.locator("textarea").press("Enter")
        wait_update(page, updates)
        assert box.locator(".chip").count() == 8 and box.locator(".chip.masked").count() == 1
        assert page.locator("#message").is_hidden()

        updates = page.evaluate("() => window.demo.updates")
        box.locator("button[data-act=remove]").click()
        wait_update(page, updates)
        assert "from the other inputs alone" in box.locator(".predicted-text").inner_text()
        assert box.locator(".chip").count() == 0
        page.screenshot(path=str(ARTIFACTS / "demo-m3ae-from-image.png"), full_page=True)
        page.close()
        assert not errors, errors
