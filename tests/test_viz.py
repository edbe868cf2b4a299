"""Reconstruction figures (`multimae.viz.reconstruction`) on a tiny model: shapes, subsets, determinism."""

import numpy as np
import pytest
import torch
from conftest import NUM_CLASSES, tiny_config

from multimae.model import MultiMAE
from multimae.viz import (
    cross_modal_figure,
    cross_modal_panels,
    masked_reconstruction_figure,
    masked_reconstruction_panels,
)
from multimae.viz.reconstruction import MASKED_COLOR

SIZE, PATCH, TILE = 32, 8, 128  # tiny_config: 32 px, 4x4 grid; tiles enlarged to 128 px
NAMES = [f"class {i}" for i in range(NUM_CLASSES)]
PALETTE = [(40 * i, 255 - 40 * i, 100) for i in range(NUM_CLASSES)]


def raw_batch(batch: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(batch, 1, SIZE, SIZE, generator=g) * 10
    depth[:, :, :4, :4] = float("nan")
    return {
        "rgb": torch.rand(batch, 3, SIZE, SIZE, generator=g),
        "depth": depth,
        "semseg": torch.randint(0, NUM_CLASSES, (batch, SIZE, SIZE), generator=g),
        "caption": ["a scene"] * batch,
    }


@pytest.fixture(scope="module")
def model() -> MultiMAE:
    torch.manual_seed(0)
    return MultiMAE(tiny_config())


def masked_panels(model, raw=None, seed=0, **kw):
    args = dict(num_visible=6, num_masks=2, generator=torch.Generator().manual_seed(seed), class_names=NAMES,
                palette=PALETTE, max_samples=2) | kw
    return masked_reconstruction_panels(model, raw_batch() if raw is None else raw, **args)


def block(tile: np.ndarray, token: int) -> np.ndarray:
    r, c = divmod(token, SIZE // PATCH)
    return tile[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH]


def test_masked_figure_layout_and_size(model):
    panels = masked_panels(model)
    assert panels.titles == [f"{m} {c}" for m in ("rgb", "depth", "semseg") for c in ("masked", "pred", "GT")]
    assert len(panels.rows) == 4 and panels.notes[1].startswith("sample 0, mask 2/2")  # rows of a sample adjacent
    assert all(t.shape == (SIZE, SIZE, 3) and t.dtype == np.uint8 for row in panels.rows for t in row)
    assert {n for n, _ in panels.legend} <= set(NAMES) and panels.legend
    fig = masked_reconstruction_figure(model, raw_batch(), num_visible=6, num_masks=2, max_samples=2,
                                       generator=torch.Generator().manual_seed(0))
    assert fig.width == 6 + 9 * (TILE + 6)
    assert fig.height > 4 * TILE
    with_raw = masked_panels(model, raw_predictions=True)
    assert "semseg raw pred" in with_raw.titles and len(with_raw.titles) == 12


def test_masked_input_tile_greys_masked_patches_and_prediction_keeps_visible_ones(model):
    panels = masked_panels(model, raw_predictions=True)
    for row, masks in zip(panels.rows, panels.masks):
        for m in ("rgb", "depth", "semseg"):
            columns = ("masked", "pred", "raw pred", "GT")
            masked, pasted, raw_pred, gt = (row[panels.titles.index(f"{m} {c}")] for c in columns)
            for token, hidden in enumerate(masks[m].tolist()):
                if hidden:
                    assert (block(masked, token) == MASKED_COLOR).all()
                    assert not np.array_equal(block(masked, token), block(gt, token))
                    assert np.array_equal(block(pasted, token), block(raw_pred, token))
                else:
                    assert np.array_equal(block(masked, token), block(gt, token))
                    assert np.array_equal(block(pasted, token), block(gt, token))
    assert sum(int((~m).sum()) for m in panels.masks[0].values()) == 6


def test_runs_for_subsets_of_inputs(model):
    raw = {k: v for k, v in raw_batch().items() if k in ("rgb", "depth")}
    panels = masked_panels(model, raw, num_visible=5)
    expected = ["rgb masked", "rgb pred", "rgb GT", "depth masked", "depth pred", "depth GT", "semseg pred"]
    assert panels.titles == expected
    assert set(panels.masks[0]) == {"rgb", "depth"}
    blocks = cross_modal_panels(model, raw, max_samples=1)
    assert list(blocks) == ["rgb", "depth"] and len(blocks["rgb"].rows) == 1
    only_semseg = masked_panels(model, {"semseg": raw_batch()["semseg"]}, num_visible=3)
    assert only_semseg.titles == ["rgb pred", "depth pred", "semseg masked", "semseg pred", "semseg GT"]
    with pytest.raises(ValueError, match="none of the model's inputs"):
        masked_panels(model, {"normals": torch.zeros(2, 3, SIZE, SIZE)})
    with pytest.raises(ValueError):
        masked_panels(model, num_visible=1000)


def test_model_with_only_rgb_input():
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(inputs=("rgb",), outputs=("rgb", "depth", "semseg")))
    panels = masked_panels(model, num_visible=4)
    assert panels.titles == ["rgb masked", "rgb pred", "rgb GT", "depth pred", "depth GT", "semseg pred", "semseg GT"]
    fig = cross_modal_figure(model, raw_batch(), class_names=NAMES, palette=PALETTE, max_samples=2)
    assert fig.width == 6 + 5 * (TILE + 6)  # input, then depth and semseg pred / GT


def test_cross_modal_blocks_show_the_source_and_every_output(model):
    blocks = cross_modal_panels(model, raw_batch(), class_names=NAMES, palette=PALETTE, max_samples=2)
    assert list(blocks) == ["rgb", "depth", "semseg"]
    for src, panels in blocks.items():
        others = [m for m in ("rgb", "depth", "semseg") if m != src]  # the source is given, not predicted
        assert panels.titles[0] == f"input: {src}" and len(panels.rows) == 2
        assert panels.titles[1:] == [f"{m} {c}" for m in others for c in ("pred", "GT")]
        other = blocks[others[0]]
        for row, other_row in zip(panels.rows, other.rows):  # the input is the source's ground truth
            assert np.array_equal(row[0], other_row[other.titles.index(f"{src} GT")])
    fig = cross_modal_figure(model, raw_batch(), class_names=NAMES, palette=PALETTE, max_samples=2)
    single = blocks["rgb"].render()
    assert fig.width == single.width == 6 + 5 * (TILE + 6)
    assert fig.height > 3 * 2 * TILE


def test_deterministic_given_the_generator(model):
    def png(seed):
        fig = masked_reconstruction_figure(model, raw_batch(), num_visible=6, num_masks=2,
                                           generator=torch.Generator().manual_seed(seed), max_samples=2)
        return np.asarray(fig)

    assert np.array_equal(png(3), png(3))
    assert not np.array_equal(png(3), png(4))
    a = np.asarray(cross_modal_figure(model, raw_batch(), max_samples=2))
    assert np.array_equal(a, np.asarray(cross_modal_figure(model, raw_batch(), max_samples=2)))


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_without_gradients_and_mode_restored(model, training):
    seen = []
    hook = model.backbone.encoder[0].register_forward_hook(
        lambda mod, args, out: seen.append((mod.training, torch.is_grad_enabled()))
    )
    model.train(training)
    try:
        masked_panels(model, num_masks=1)
        cross_modal_panels(model, raw_batch(), max_samples=1)
    finally:
        hook.remove()
    assert seen and all(s == (False, False) for s in seen)
    assert model.training == training and all(m.training == training for m in model.modules())
    assert torch.is_grad_enabled()
