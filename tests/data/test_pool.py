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


def test_a_pool_carries_the_captions_of_its_scenes(tmp_path):
    from multimae.data.pool import pool_to_raw
    from multimae.data.world import world_sample
    from multimae.modalities.registry import DEFAULT_TEXT_MODALITY as TEXT

    args = dict(split="val", count=4, size=16, modalities=("rgb", TEXT), workers=0, cache_dir=tmp_path, progress=False)
    pool = load_or_render_pool(**args)
    assert pool[TEXT] == [world_sample("val", i, 16).caption for i in range(4)]
    assert load_or_render_pool(**args)[TEXT] == pool[TEXT]  # read back from the cache
    raw = pool_to_raw(pool, torch.tensor([2, 0]))
    assert raw[TEXT] == [pool[TEXT][2], pool[TEXT][0]] and raw["rgb"].shape == (2, 3, 16, 16)
