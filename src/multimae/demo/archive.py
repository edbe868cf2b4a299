"""The page's download: a zip of the current inputs, masks and predictions.

Layout (``multimae predict`` files, plus the inputs as given):

* ``inputs/<name>.png`` each input in its stored encoding (8-bit RGB, 16-bit depth in
  millimetres, class-id PNG, ...), so ``multimae predict --<name> inputs/<name>.png --mask
  mask.npz`` reproduces the page; ``inputs/<name>.npy`` the raw values (NaN = invalid depth);
* ``mask.npz``: one (h, w) uint8 array per input, 1 = masked (what ``predict --mask`` reads);
* ``<output>.png`` / ``.npy`` (+ ``_logits.npy``), ``input_<name>.png`` (masked patches grey),
  ``figure.png`` and ``summary.json``, as `multimae.inference.save_prediction` writes them.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from multimae.data.codecs import class_map_dtype, encode_npy, encode_png, quantize_depth, quantize_normals
from multimae.inference import Prediction, save_prediction
from multimae.modalities.spec import ModalitySpec
from multimae.viz.colormaps import rgb_to_uint8


def stored_png(spec: ModalitySpec, value: Tensor) -> bytes | None:
    """An input's raw value in its stored encoding as PNG bytes; None when it has no PNG form
    (or, for depth, does not fit 16 bits)."""
    a = value.detach().cpu().numpy()
    stored = spec.stored_as
    if stored == "rgb8":
        return encode_png(rgb_to_uint8(value))
    if stored == "depth16":
        try:
            return encode_png(quantize_depth(a[0]))
        except ValueError:
            return None
    if stored == "class_ids":
        return encode_png(a.astype(class_map_dtype(spec.num_channels)))
    if stored == "unit_vectors8":
        return encode_png(quantize_normals(a.transpose(1, 2, 0)))
    return None


def prediction_zip(pred: Prediction, specs: dict[str, ModalitySpec],
                   palette: Sequence[Sequence[int]] | None, class_names: Sequence[str] | None) -> bytes:
    """The zip described above, as bytes."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="multimae-demo-") as tmp, zipfile.ZipFile(buf, "w") as zf:
        for path in save_prediction(pred, tmp, palette, class_names):
            zf.write(path, Path(path).name)
        for name, value in pred.inputs.items():
            zf.writestr(f"inputs/{name}.npy", encode_npy(value.numpy()))
            png = stored_png(specs[name], value)
            if png is not None:
                zf.writestr(f"inputs/{name}.png", png)
    return buf.getvalue()
