"""The demo's HTTP API through FastAPI's test client: every endpoint, every refused input (a 4xx
with a JSON message, never a traceback), and a download that `multimae predict --mask` reproduces."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the demo extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from multimae.cli.main import main  # noqa: E402
from multimae.data.world import NUM_CLASSES  # noqa: E402
from multimae.demo import DemoLimits, DemoSession, create_app  # noqa: E402
from multimae.demo.app import STATIC  # noqa: E402
from multimae.demo.uploads import UploadLimits  # noqa: E402

from .conftest import decode_picture, png_bytes  # noqa: E402


@pytest.fixture
def client(session):
    return TestClient(create_app(session))


@pytest.fixture
def scene(client):
    response = client.post("/api/scene", json={"split": "val", "index": 3})
    assert response.status_code == 200
    return response.json()


def refused(response, status: int, *words: str) -> str:
    """The refusal's message, checked to be JSON with ``status`` and to contain ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert "Traceback" not in message
    for word in words:
        assert word in message, message
    return message


def masks_of(state) -> dict[str, np.ndarray]:
    return {n: np.array(m) for n, m in state["masks"].items()}


# ------------------------------------------------------------------------------------ page and info

def test_the_page_and_its_files_come_from_the_package_and_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/demo.js">' in page.text and "<canvas" not in page.text  # canvases made by the script
    for name in ("demo.js", "demo.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.text) > 500
    for path in STATIC.iterdir():  # no CDN, no external fonts or scripts
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", path.read_text()), path.name
        assert "@import" not in path.read_text() and "fonts.googleapis" not in path.read_text()
    refused(client.get("/static/../app.py"), 404)
    refused(client.get("/api/nothing"), 404)


def test_info_describes_the_model_from_its_specs(client, demo_model):
    info = client.get("/api/info").json()
    assert info["family"] == "multimae" and info["view_available"] is True
    assert [i["name"] for i in info["inputs"]] == list(demo_model.input_specs)
    assert [o["name"] for o in info["outputs"]] == list(demo_model.output_specs)
    assert info["image_size"] == 32 and info["patch_size"] == 8 and info["grid"] == [4, 4]
    assert len(info["classes"]) == NUM_CLASSES and all(len(c["color"]) == 3 for c in info["classes"])
    editors = {i["name"]: i["editor"] for i in info["inputs"]}
    assert sorted(editors.values()) == ["class", "color", "value"]  # one of each for the world's inputs
    assert "val" in info["world"]["splits"] and info["limits"]["max_upload_bytes"] == UploadLimits().max_bytes


def test_state_before_any_input_is_empty_and_download_is_refused(client):
    state = client.get("/api/state").json()
    assert state["inputs"] == {} and state["outputs"] == {}
    refused(client.get("/api/download"), 409, "nothing to download")
    refused(client.post("/api/masks/random", json={"num_visible": 3}), 409, "no input")


# ------------------------------------------------------------------------------------ scenes

def test_a_scene_gives_every_input_and_every_prediction_at_the_models_size(client, scene, demo_model):
    assert list(scene["inputs"]) == list(demo_model.input_specs)
    assert list(scene["outputs"]) == list(demo_model.output_specs)
    for value in [*(i["picture"] for i in scene["inputs"].values()), *scene["outputs"].values()]:
        assert decode_picture(value).shape == (32, 32, 3)
    assert all(not m.any() for m in masks_of(scene).values())
    assert all(i["source"] == "world val scene 3" and i["visible"] == 16 for i in scene["inputs"].values())
    again = client.post("/api/scene", json={"split": "val", "index": 3}).json()
    assert again["outputs"] == scene["outputs"]  # the same scene, the same prediction
    other = client.post("/api/scene", json={"split": "val", "index": None}).json()  # a random one
    assert other["inputs"]["rgb"]["source"].startswith("world val scene ") and other["outputs"] != scene["outputs"]
    assert client.get("/api/state").json()["outputs"] == other["outputs"]


@pytest.mark.parametrize("body, words", [
    ({"split": "nope", "index": 0}, ["unknown split"]),
    ({"split": "val", "index": -1}, ["scene index"]),
    ({"split": "val", "index": "three"}, ["invalid request", "index"]),
])
def test_bad_scene_requests_are_refused(client, body, words):
    refused(client.post("/api/scene", json=body), 422, *words)


def test_malformed_json_is_a_422_not_a_traceback(client):
    response = client.post("/api/scene", content=b"{not json", headers={"content-type": "application/json"})
    refused(response, 422, "invalid request")


# ------------------------------------------------------------------------------------ masks

def test_painting_a_mask_changes_every_prediction(client, scene):
    masks = {n: m.tolist() for n, m in masks_of(scene).items()}
    masks["rgb"] = np.ones((4, 4), int).tolist()  # every rgb token hidden
    masks["depth"][0][:2] = [1, 1]
    state = client.post("/api/masks", json={"masks": masks}).json()
    assert state["inputs"]["rgb"]["visible"] == 0 and state["inputs"]["depth"]["visible"] == 14
    assert masks_of(state)["depth"][0, :2].all() and not masks_of(state)["semseg"].any()
    for name in scene["outputs"]:
        assert state["outputs"][name] != scene["outputs"][name], name
    # Only some inputs named: the others keep their masks.
    partial = client.post("/api/masks", json={"masks": {"semseg": np.eye(4, dtype=int).tolist()}}).json()
    assert partial["inputs"]["rgb"]["visible"] == 0 and partial["inputs"]["semseg"]["visible"] == 12
    assert partial["pasted"].keys() == {"rgb", "depth", "semseg"}


@pytest.mark.parametrize("masks, words", [
    ({"rgb": [[1] * 4] * 4, "depth": [[1] * 4] * 4, "semseg": [[1] * 4] * 4}, ["hides every token"]),
    ({"rgb": [[0] * 3] * 4}, ["4×4 grid"]),
    ({"rgb": [[2] * 4] * 4}, ["0 / 1"]),
    ({"caption": [[0] * 4] * 4}, ["not a current input"]),
])
def test_bad_masks_are_refused_and_leave_the_state_as_it_was(client, scene, masks, words):
    refused(client.post("/api/masks", json={"masks": masks}), 422, *words)
    assert client.get("/api/state").json()["outputs"] == scene["outputs"]


def test_random_masks_keep_n_visible_tokens_split_by_the_dirichlet(client, scene):
    state = client.post("/api/masks/random", json={"num_visible": 20, "alpha": 1.0, "seed": 3}).json()
    assert sum(i["visible"] for i in state["inputs"].values()) == 20
    same = client.post("/api/masks/random", json={"num_visible": 20, "alpha": 1.0, "seed": 3}).json()
    assert same["masks"] == state["masks"]
    drawn = client.post("/api/masks/random", json={"num_visible": 5, "alpha": 0.2}).json()  # seed drawn
    assert sum(i["visible"] for i in drawn["inputs"].values()) == 5
    refused(client.post("/api/masks/random", json={"num_visible": 0}), 422, "in [1, 48]")
    refused(client.post("/api/masks/random", json={"num_visible": 49}), 422, "in [1, 48]")
    refused(client.post("/api/masks/random", json={"num_visible": 5, "alpha": 0}), 422, "alpha")


# ------------------------------------------------------------------------------------ edits

def test_recolouring_a_patch_paints_the_input_and_changes_the_predictions(client, scene):
    state = client.post("/api/edit", json={"name": "rgb", "value": [1, 0, 0], "patch": [1, 2]}).json()
    picture = decode_picture(state["inputs"]["rgb"]["picture"])
    assert (picture[8:16, 16:24] == [255, 0, 0]).all()
    before = decode_picture(scene["inputs"]["rgb"]["picture"])
    assert (picture[:8] == before[:8]).all()  # nothing else touched
    assert state["outputs"]["depth"] != scene["outputs"]["depth"]  # the other modalities follow


def test_painting_a_class_and_drawing_depth(client, session, scene):
    client.post("/api/edit", json={"name": "semseg", "value": [5], "brush": [16, 16, 4]})
    ids = session.inputs["semseg"]
    assert int(ids[16, 16]) == 5 and int((ids == 5).sum()) >= 40 and int(ids[0, 0]) == int(session.original["semseg"][0, 0])
    client.post("/api/edit", json={"name": "depth", "value": [1.25], "patch": [0, 0]})
    assert torch.all(session.inputs["depth"][0, :8, :8] == 1.25)
    state = client.post("/api/reset").json()  # edits undone, masks kept
    assert torch.equal(session.inputs["semseg"], session.original["semseg"]) and state["outputs"] == scene["outputs"]


@pytest.mark.parametrize("body, words", [
    ({"name": "semseg", "value": [NUM_CLASSES], "patch": [0, 0]}, ["class id", f"[0, {NUM_CLASSES})"]),
    ({"name": "semseg", "value": [1.5], "patch": [0, 0]}, ["integer"]),
    ({"name": "rgb", "value": [2, 0, 0], "patch": [0, 0]}, ["[0, 1]"]),
    ({"name": "rgb", "value": [1, 0], "patch": [0, 0]}, ["3 finite number"]),
    ({"name": "rgb", "value": [1, 0, 0], "patch": [4, 0]}, ["outside the 4×4 token grid"]),
    ({"name": "rgb", "value": [1, 0, 0]}, ["either a patch"]),
    ({"name": "rgb", "value": [1, 0, 0], "patch": [0, 0], "brush": [1, 1, 1]}, ["either a patch"]),
    ({"name": "depth", "value": [1.0], "brush": [40, 1, 2]}, ["centre must lie"]),
    ({"name": "depth", "value": [1.0], "brush": [1, 1, 1000]}, ["radius"]),
])
def test_bad_edits_are_refused(client, scene, body, words):
    refused(client.post("/api/edit", json=body), 422, *words)
    assert client.get("/api/state").json()["inputs"]["rgb"]["picture"] == scene["inputs"]["rgb"]["picture"]


def test_an_edit_of_an_unknown_modality_is_a_404(client, scene):
    refused(client.post("/api/edit", json={"name": "caption", "value": [1], "patch": [0, 0]}), 404, "not an input")


# ------------------------------------------------------------------------------------ uploads

def upload(client, name, data, filename="file.png"):
    return client.post(f"/api/inputs/{name}", files={"file": (filename, data, "application/octet-stream")})


def test_uploads_for_any_subset_of_the_inputs(client, tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    state = upload(client, "rgb", png_bytes(photo), "photo.png").json()
    assert list(state["inputs"]) == ["rgb"] and set(state["outputs"]) == {"rgb", "depth", "semseg", "norm_rgb"}
    assert "photo.png" in state["inputs"]["rgb"]["source"] and state["inputs"]["rgb"]["size"] == [48, 48]
    depth = rng.integers(500, 5000, (48, 48)).astype(np.uint16)
    state = upload(client, "depth", png_bytes(depth), "depth.png").json()
    assert list(state["inputs"]) == ["rgb", "depth"] and "16-bit" in state["inputs"]["depth"]["source"]
    assert state["inputs"]["depth"]["range"][0] >= 0.5 and state["inputs"]["depth"]["range"][1] <= 5.0
    ids = rng.integers(0, NUM_CLASSES, (48, 48)).astype(np.uint8)
    state = upload(client, "semseg", png_bytes(ids), "ids.png").json()
    assert list(state["inputs"]) == ["rgb", "depth", "semseg"]
    state = client.delete("/api/inputs/depth").json()
    assert list(state["inputs"]) == ["rgb", "semseg"] and "depth" in state["outputs"]  # predicted from the others
    assert client.delete("/api/inputs").json()["inputs"] == {}


def test_the_client_file_name_is_only_quoted_never_opened(client, tmp_path, session):
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))  # black: not what is uploaded
    white = np.full((32, 32, 3), 255, np.uint8)
    state = upload(client, "rgb", png_bytes(white), str(elsewhere)).json()
    assert (decode_picture(state["inputs"]["rgb"]["picture"]) == 255).all()
    assert str(tmp_path) not in state["inputs"]["rgb"]["source"] and "elsewhere.png" in state["inputs"]["rgb"]["source"]


def test_bad_uploads_get_a_4xx_and_a_message(client, scene):
    rng = np.random.default_rng(1)
    refused(upload(client, "rgb", b"hello, not an image", "notes.txt"), 415, "not an image")
    refused(upload(client, "rgb", b"", "empty.png"), 415, "empty")
    refused(upload(client, "rgb", png_bytes(np.zeros((40, 40, 3), np.uint8))), 422, "40×40", "aligned")
    refused(upload(client, "depth", png_bytes(rng.integers(1, 255, (32, 32)).astype(np.uint8))), 422, "8-bit", "16-bit")
    beyond = np.full((32, 32), NUM_CLASSES + 3, np.uint8)
    refused(upload(client, "semseg", png_bytes(beyond)), 422, f"class id {NUM_CLASSES + 3}", f"{NUM_CLASSES} classes")
    refused(upload(client, "semseg", png_bytes(np.zeros((32, 32, 3), np.uint8))), 422, "single-channel")
    refused(upload(client, "rgb", png_bytes(np.zeros((4, 4, 3), np.uint8))), 422, "smaller than one 8×8 patch")
    refused(upload(client, "caption", png_bytes(np.zeros((32, 32, 3), np.uint8))), 404, "not an input")
    assert client.get("/api/state").json()["outputs"] == scene["outputs"]  # nothing changed


def test_an_upload_without_its_file_field_is_a_422(client):
    refused(client.post("/api/inputs/rgb", data={"other": "x"}), 422, "invalid request", "file")
    refused(client.post("/api/inputs/rgb", json={"file": "/etc/passwd"}), 422, "invalid request")


def test_huge_uploads_are_refused_before_they_are_decoded(demo_model):
    limits = DemoLimits(uploads=UploadLimits(max_bytes=20_000, max_side=256))
    client = TestClient(create_app(DemoSession(demo_model, "tiny", limits)))
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~120 kB as PNG
    refused(upload(client, "rgb", png_bytes(noise)), 413, "limit")
    middling = png_bytes(np.random.default_rng(1).integers(0, 256, (110, 110, 3), dtype=np.uint8))
    assert 20_000 < len(middling) < 20_000 + 64 * 1024  # past the request check, caught when read
    refused(upload(client, "rgb", middling), 413, "larger than the upload limit of 20000 bytes")
    def chunks():  # a streamed body has no Content-Length: refused before it is read
        yield b"x" * 1000

    streamed = client.post("/api/inputs/rgb", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    refused(streamed, 411, "Content-Length")
    big = png_bytes(np.zeros((300, 300, 3), np.uint8))  # small file, too many pixels
    assert len(big) < 20_000
    refused(upload(client, "rgb", big), 422, "300×300", "256 on a side")


# ------------------------------------------------------------------------------------ download

def test_the_download_is_reproduced_by_multimae_predict(client, scene, demo_checkpoint, tmp_path):
    client.post("/api/masks/random", json={"num_visible": 17, "seed": 0})
    client.post("/api/edit", json={"name": "rgb", "value": [0, 1, 0], "patch": [0, 0]})
    response = client.get("/api/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    for name in ("rgb", "depth", "semseg"):
        assert {f"inputs/{name}.png", f"inputs/{name}.npy", f"input_{name}.png", f"{name}.png", f"{name}.npy"} <= names
    assert {"mask.npz", "figure.png", "summary.json", "norm_rgb.png", "semseg_logits.npy"} <= names
    archive.extractall(tmp_path / "zip")
    got = tmp_path / "zip"
    with np.load(got / "mask.npz") as m:
        assert sum(int((m[k] == 0).sum()) for k in m.files) == 17
    out = tmp_path / "again"
    assert main(["predict", "--checkpoint", str(demo_checkpoint), "--precision", "fp32", "--mask", str(got / "mask.npz"),
                 *(a for n in ("rgb", "depth", "semseg") for a in (f"--{n}", str(got / "inputs" / f"{n}.png"))),
                 "--out", str(out)]) == 0
    for name in ("rgb", "semseg", "norm_rgb"):
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), np.load(got / f"{name}.npy"), atol=1e-4, err_msg=name)
    # depth went through 16-bit millimetres: within half a millimetre of the page's input
    np.testing.assert_allclose(np.load(out / "depth.npy"), np.load(got / "depth.npy"), atol=2e-3)


# ------------------------------------------------------------------------------------ other families

def test_a_family_without_a_view_is_named_and_its_requests_refused(tiny_fourm):
    client = TestClient(create_app(DemoSession(tiny_fourm, "4m")))
    info = client.get("/api/info").json()
    assert info["family"] == "4m" and info["view_available"] is False and "no view for the 4m" in info["message"]
    assert client.get("/").status_code == 200
    refused(client.post("/api/scene", json={"split": "val", "index": 0}), 409, "no view for 4m")
    refused(client.get("/api/state"), 409, "no view")
    refused(client.post("/api/texts/caption", json={"text": "a red cube"}), 409, "no view")


def test_model_family_of_each_kind_of_model(demo_model, tiny_fourm, m3ae_model):
    from multimae.demo import model_family

    assert model_family(tiny_fourm) == "4m" and model_family(demo_model) == "multimae"
    assert model_family(m3ae_model) == "m3ae"
    with pytest.raises(ValueError, match="not a model"):
        model_family(torch.nn.Linear(2, 2))
