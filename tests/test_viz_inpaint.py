"""The in-paint picture (`multimae.viz.inpaint`): the regenerated tokens' cells tinted, nothing else."""

import numpy as np
import pytest
import torch

from multimae.viz.inpaint import InPainted, inpaint_figure, regenerated_overlay


def test_the_inpaint_overlay_tints_exactly_the_regenerated_cells():
    picture = np.full((8, 8, 3), 100, dtype=np.uint8)
    keep = torch.ones(16, dtype=torch.bool)
    keep[5] = False  # cell (1, 1): pixels 2..3 x 2..3
    out = regenerated_overlay(picture, keep, (4, 4))
    changed = (out != picture).any(axis=2)
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:4, 2:4] = True
    assert np.array_equal(changed, expected)
    with pytest.raises(ValueError, match="does not tile the 3x3 token grid"):
        regenerated_overlay(picture, torch.ones(9, dtype=torch.bool), (3, 3))
    fig = inpaint_figure({"x": InPainted([picture], [picture], [out], keep[None], (4, 4))})
    assert fig.width > 4 * 160  # four columns
