"""`multimae demo`: a local web page to paint masks, edit inputs and watch every prediction follow.

    from multimae.demo import DemoSession, create_app
    app = create_app(DemoSession(model, "my-run"))      # serve with uvicorn

`session` holds the model's state (inputs, masks, prediction), `uploads` reads uploaded files,
`edits` writes a value into a patch or a brush stroke, `archive` writes the download, `family`
tells the model families apart, `app` is the HTTP API (FastAPI) and `static/` the page (plain
JavaScript, no build step, nothing fetched from elsewhere). See docs/demo.md.
"""

from multimae.demo.family import VIEWS, model_family
from multimae.demo.session import DemoError, DemoLimits, DemoSession

__all__ = ["VIEWS", "DemoError", "DemoLimits", "DemoSession", "create_app", "model_family"]


def __getattr__(name: str):  # the app needs the `demo` extra (fastapi); the session does not
    if name == "create_app":
        from multimae.demo.app import create_app

        return create_app
    raise AttributeError(name)
