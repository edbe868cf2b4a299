from collections import Counter

import pytest
from torch.utils.data import DataLoader

from multimae.data.collate import collate
from multimae.data.shards import ShardDataset
from multimae.data.transforms import RandomResizedCropFlip

ALL_KEYS = {f"{i:08d}" for i in range(20)}


def _keys(ds, workers):
    if workers == 0:
        return [s["key"] for s in ds]
    loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate)
    return [k for batch in loader for k in batch["key"]]


@pytest.mark.parametrize("world_size,workers", [(1, 0), (2, 0), (2, 2), (3, 2), (7, 0)])
def test_every_sample_once_per_epoch(shard_root, world_size, workers):
    # 5 shards: (3 ranks x 2 workers) and 7 ranks exceed the shard count and split within shards
    keys = []
    for rank in range(world_size):
        keys += _keys(ShardDataset(shard_root / "train", ("rgb",), rank=rank, world_size=world_size), workers)
    counts = Counter(keys)
    assert set(counts) == ALL_KEYS and set(counts.values()) == {1}


def test_shuffle_is_seeded_per_epoch(shard_root):
    ds = ShardDataset(shard_root / "train", ("rgb",), shuffle=True, buffer_size=6, seed=1)
    first = [s["key"] for s in ds]
    again = [s["key"] for s in ds]
    ds.set_epoch(1)
    second = [s["key"] for s in ds]
    assert first == again and set(first) == set(second) == ALL_KEYS and first != second


def test_resume_position(shard_root):
    ds = ShardDataset(shard_root / "train", ("rgb",), shuffle=True, seed=2, rank=0, world_size=2)
    full = [s["key"] for s in ds]
    ds.set_position(0, consumed=6)  # 6 samples over 2 ranks: each skips 3
    assert [s["key"] for s in ds] == full[3:]


def test_augmented_stream_is_deterministic(shard_root):
    ds = ShardDataset(shard_root / "train", ("rgb", "depth", "normals", "semseg"),
                      transform=RandomResizedCropFlip(16))
    a = next(iter(ds))
    b = next(iter(ds))
    assert a["rgb"].shape == (3, 16, 16) and (a["rgb"] == b["rgb"]).all()


def test_missing_modality_and_no_shards(shard_root, tmp_path):
    with pytest.raises(ValueError, match="no shards"):
        ShardDataset(tmp_path)
    ds = ShardDataset(shard_root / "train", ("rgb",))
    with pytest.raises(ValueError, match=r"shard-000000\.tar:00000000: missing modalities \['rgb'\]"):
        ds.decode("00000000", {"depth.png": b""}, f"{shard_root / 'train' / 'shard-000000.tar'}:")
