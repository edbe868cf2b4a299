"""The demo's HTTP API (FastAPI) and its page, both served from the package.

Endpoints (JSON unless said; every refusal is a 4xx with ``{"error": message}``):

    GET    /                      the page (static/index.html); /static/* its script and style
    GET    /api/info              family, modalities, classes, world splits, limits
    GET    /api/state             pictures (PNG data URLs), masks, notes of the current state
    POST   /api/scene             {"split": "val", "index": 3 | null (random)}
    POST   /api/inputs/{name}     multipart field "file": set one input from an upload
    DELETE /api/inputs/{name}     stop giving one input;  DELETE /api/inputs: every input
    POST   /api/masks             {"masks": {name: [[0/1, ...], ...]}} (1 = masked)
    POST   /api/masks/random      {"num_visible": N, "alpha": 1.0, "seed": null}
    POST   /api/edit              {"name", "value": [...], "patch": [row, col] | "brush": [x, y, r]}
    POST   /api/reset             inputs back to as loaded (masks kept)
    POST   /api/texts/{name}      {"text": "a red cube ..."}: give a text input (M3AE's caption), no word masked
    POST   /api/texts/{name}/masks  {"masked": [0/1 per word]}: the words given as [MASK] (predicted)
    GET    /api/download          zip of inputs, masks (mask.npz) and predictions

Every changing request answers with the new state. No request names a file on the server: uploads
are bytes, the page's files are the package's own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from multimae.demo.session import DemoError, DemoSession

STATIC = Path(str(resources.files("multimae.demo") / "static"))
MULTIPART_OVERHEAD = 64 * 1024  # bytes a multipart request may carry beyond the file itself


class SceneRequest(BaseModel):
    split: str = "val"
    index: int | None = None  # None: a random scene


class MasksRequest(BaseModel):
    masks: dict[str, list[list[int]]]


class RandomMasksRequest(BaseModel):
    num_visible: int
    alpha: float = 1.0
    seed: int | None = None


class TextRequest(BaseModel):
    text: str = Field(max_length=100_000)  # the session's own limit (DemoLimits.max_text_chars) is checked too


class WordMasksRequest(BaseModel):
    masked: list[int] = Field(max_length=10_000)


class EditRequest(BaseModel):
    name: str
    value: list[float] = Field(min_length=1, max_length=16)
    patch: tuple[int, int] | None = None  # (row, col) of a token
    brush: tuple[float, float, float] | None = None  # (x, y, radius) in pixels of the model's image


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def create_app(session: DemoSession) -> FastAPI:
    """The app serving ``session``: the page and the API above (no OpenAPI pages: they load scripts
    from a CDN)."""
    app = FastAPI(title="multimae demo", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    max_request = session.limits.uploads.max_bytes + MULTIPART_OVERHEAD

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is None and request.method == "POST" and request.url.path.startswith("/api/inputs/"):
            return _error(411, "an upload must say its size (Content-Length): uploads are limited to "
                          f"{session.limits.uploads.max_bytes} bytes")
        if length is not None and length.isdigit() and int(length) > max_request:
            return _error(413, f"request of {length} bytes, more than the upload limit of "
                          f"{session.limits.uploads.max_bytes} bytes")
        return await call_next(request)

    @app.exception_handler(DemoError)
    async def demo_error(_: Request, err: DemoError) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return session.info()

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return session.state()

    @app.post("/api/scene")
    def scene(body: SceneRequest) -> dict[str, Any]:
        return session.load_scene(body.split, body.index)

    @app.post("/api/inputs/{name}")
    async def upload(name: str, file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read(session.limits.uploads.max_bytes + 1)
        return await run_in_threadpool(session.upload, name, data, Path(file.filename or "").name)

    @app.delete("/api/inputs/{name}")
    def remove(name: str) -> dict[str, Any]:
        return session.remove(name)

    @app.delete("/api/inputs")
    def remove_all() -> dict[str, Any]:
        return session.remove(None)

    @app.post("/api/masks")
    def masks(body: MasksRequest) -> dict[str, Any]:
        return session.set_masks(body.masks)

    @app.post("/api/masks/random")
    def random_masks(body: RandomMasksRequest) -> dict[str, Any]:
        return session.random_masks(body.num_visible, body.alpha, body.seed)

    @app.post("/api/edit")
    def edit(body: EditRequest) -> dict[str, Any]:
        return session.edit(body.name, body.value, patch=body.patch, brush=body.brush)

    @app.post("/api/reset")
    def reset() -> dict[str, Any]:
        return session.reset()

    @app.post("/api/texts/{name}")
    def text(name: str, body: TextRequest) -> dict[str, Any]:
        return session.set_text(name, body.text)

    @app.post("/api/texts/{name}/masks")
    def word_masks(name: str, body: WordMasksRequest) -> dict[str, Any]:
        return session.set_word_masks(name, body.masked)

    @app.get("/api/download")
    def download() -> Response:
        return Response(session.download(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="multimae-demo.zip"'})

    return app
