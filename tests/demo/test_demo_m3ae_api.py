"""The M3AE view's API on a tiny M3AE run (its own tokenizer): a world scene gives the image and
its caption, words are masked one by one and predicted, a typed caption replaces the scene's, the
caption is generated from the image alone, and bad texts are refused with a 4xx JSON message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the demo extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from multimae.data import WorldDataset  # noqa: E402
from multimae.modalities.registry import DEFAULT_TEXT_MODALITY as TEXT  # noqa: E402
from multimae.demo import DemoLimits, DemoSession, create_app  # noqa: E402

from .test_demo_api import refused  # noqa: E402


@pytest.fixture
def client(m3ae_session):
    return TestClient(create_app(m3ae_session))


@pytest.fixture
def scene(client):
    response = client.post("/api/scene", json={"split": "val", "index": 3})
    assert response.status_code == 200, response.text
    return response.json()


def image_names(info) -> list[str]:
    return [i["name"] for i in info["inputs"]]


def test_info_has_the_image_inputs_and_the_text_input_apart(client, m3ae_model):
    info = client.get("/api/info").json()
    assert info["family"] == "m3ae" and info["view_available"] is True
    assert TEXT not in image_names(info) and image_names(info)
    assert [t["name"] for t in info["texts"]] == [TEXT]
    text = info["texts"][0]
    assert text["from_world"] is True and text["max_length"] == m3ae_model.input_specs[TEXT].max_length
    assert text["outputs"] == [TEXT] and TEXT not in [o["name"] for o in info["outputs"]]


def test_a_scene_gives_the_image_and_its_caption_and_a_masked_word_is_predicted(client, scene):
    caption = WorldDataset("val", size=32, length=10, modalities=())[3][TEXT]
    words = caption.split()
    text = scene["texts"][TEXT]
    assert text["words"] == words and text["masked"] == [0] * len(words)
    assert text["predicted"] == [None] * len(words) and text["source"] == "world val scene 3"
    assert scene["captions"][TEXT]["given"] == caption and scene["captions"][TEXT]["words"] == []
    image = next(iter(scene["outputs"]))

    masked = [0] * len(words)
    masked[1] = 1
    state = client.post(f"/api/texts/{TEXT}/masks", json={"masked": masked}).json()
    text = state["texts"][TEXT]
    assert text["masked"] == masked and text["words"] == words
    assert text["predicted"][1] and [p for i, p in enumerate(text["predicted"]) if i != 1] == [None] * (len(words) - 1)
    assert state["captions"][TEXT]["given"].split()[1] == "[MASK]"
    assert state["captions"][TEXT]["words"] == [text["predicted"][1]]
    assert state["outputs"][image] != scene["outputs"][image]  # the image prediction follows the caption
    assert any("1 of them [MASK]" in note for note in state["notes"])

    # The image's token masks work as in the MultiMAE view, the word masks stay.
    grid = np.zeros((4, 4), dtype=int)
    grid[:2] = 1
    state = client.post("/api/masks", json={"masks": {image: grid.tolist()}}).json()
    assert state["texts"][TEXT]["masked"] == masked and state["masks"][image] == grid.tolist()


def test_a_typed_caption_every_word_masked_and_the_caption_from_the_image_alone(client, scene):
    state = client.post(f"/api/texts/{TEXT}", json={"text": "  a red cube   [MASK] of a zzqx cone "}).json()
    text = state["texts"][TEXT]
    assert text["words"] == ["a", "red", "cube", "[MASK]", "of", "a", "zzqx", "cone"]  # unknown words are fine
    assert text["masked"] == [0, 0, 0, 1, 0, 0, 0, 0] and text["source"] == "typed" and text["predicted"][3]

    state = client.post(f"/api/texts/{TEXT}/masks", json={"masked": [1] * 8}).json()
    assert all(state["texts"][TEXT]["predicted"]) and len(state["captions"][TEXT]["words"]) == 8

    state = client.delete(f"/api/inputs/{TEXT}").json()  # no caption given: generated from the image
    assert TEXT not in state["texts"] and state["captions"][TEXT]["given"] is None
    assert state["captions"][TEXT]["text"] == " ".join(state["captions"][TEXT]["text"].split())
    assert state["outputs"] and state["inputs"]

    image = next(iter(state["inputs"]))
    state = client.delete(f"/api/inputs/{image}").json()
    assert not state["inputs"] and not state["captions"]  # nothing given: nothing predicted
    state = client.post(f"/api/texts/{TEXT}", json={"text": "a blue sphere"}).json()  # the caption alone
    assert state["texts"][TEXT]["words"] == ["a", "blue", "sphere"] and state["outputs"]  # the image from it


def test_bad_texts_and_word_masks_are_refused_with_a_message(client, m3ae_session, m3ae_model):
    refused(client.post(f"/api/texts/{TEXT}/masks", json={"masked": [1]}), 409, "not given")
    refused(client.post(f"/api/texts/{TEXT}", json={"text": "   "}), 422, "empty")
    refused(client.post("/api/texts/nothing", json={"text": "a"}), 404, "not a text input")
    image = m3ae_session.info()["inputs"][0]["name"]
    refused(client.post(f"/api/texts/{image}", json={"text": "a"}), 404, "not a text input")
    refused(client.post(f"/api/texts/{TEXT}", json={}), 422, "text")
    refused(client.post("/api/edit", json={"name": TEXT, "value": [1], "patch": [0, 0]}), 422, "text input")
    refused(client.post(f"/api/inputs/{TEXT}", files={"file": ("c.png", b"x")}), 422, "text input")
    too_long = " ".join(["red"] * (m3ae_model.input_specs[TEXT].max_length + 1))
    refused(client.post(f"/api/texts/{TEXT}", json={"text": too_long}), 422, "shorten it")
    refused(client.post(f"/api/texts/{TEXT}", json={"text": "a" * 3000}), 422, "characters")
    state = client.post("/api/scene", json={"split": "val", "index": 0}).json()
    n = len(state["texts"][TEXT]["words"])
    refused(client.post(f"/api/texts/{TEXT}/masks", json={"masked": [1] * (n + 1)}), 422, f"{n} values")
    refused(client.post(f"/api/texts/{TEXT}/masks", json={"masked": [2] * n}), 422, "0 / 1")
    assert client.get("/api/state").json()["texts"][TEXT]["masked"] == [0] * n  # the state as it was


def test_a_model_with_text_but_no_tokenizer_says_so(m3ae_model, m3ae_run):
    client = TestClient(create_app(DemoSession(m3ae_model, m3ae_run.name, DemoLimits())))
    refused(client.post("/api/scene", json={"split": "val", "index": 0}), 422, "tokenizer")


def test_the_download_of_an_m3ae_state(client, scene):
    response = client.get("/api/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
