import torch

from multimae.data.pool import load_or_render_pool


def test_pools_are_cached_per_world(tmp_path):
    args = dict(split="val", count=3, size=16, modalities=("rgb", "semseg"), workers=0, cache_dir=tmp_path,
                progress=False)
    shape_only = load_or_render_pool(**args)
    coloured = load_or_render_pool(**args, class_colors=1.0)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # one cache file per world
    assert not torch.equal(shape_only["rgb"], coloured["rgb"])
    assert torch.equal(shape_only["semseg"], coloured["semseg"])  # the same scenes in other colours
    again = load_or_render_pool(**args, class_colors=1.0)
    assert all(torch.equal(again[k], coloured[k]) for k in coloured)
