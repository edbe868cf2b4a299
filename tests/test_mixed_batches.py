"""Mixed batches: samples lacking a modality, from the readers through collate to prepare_batch,
and the weighted interleave of several sources."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import DataLoader

from multimae.config.schema import LossConfig, MaskingConfig
from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.collate import PRESENT_KEY, batch_rows, batch_to, collate
from multimae.data.folder import FolderDataset
from multimae.data.generated import encode_world_sample
from multimae.data.mixture import WeightedInterleave
from multimae.data.shards import ShardDataset, write_shard
from multimae.data.stream import LoaderStream
from multimae.data.transforms import RandomResizedCropFlip, Resize
from multimae.data.world import world_sample
from multimae.data.writer import GenerateConfig, generate
from multimae.modalities import ModalitySpec, prepare_batch, robust_standardize
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask

H = W = 8
DEPTH = ModalitySpec(name="depth", kind="dense", num_channels=1, normalization="robust_standardize", loss="l1")
RGB = ModalitySpec(name="rgb", kind="dense", num_channels=3, normalization="unit_range", loss="mse")
SEG = ModalitySpec(name="semseg", kind="categorical", num_channels=5, loss="cross_entropy", ignore_index=255)
SEG_NO_IGNORE = ModalitySpec(name="semseg", kind="categorical", num_channels=5, loss="cross_entropy")


def _full(i: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(i)
    return {"rgb": torch.rand(3, H, W, generator=g), "depth": 1 + torch.rand(1, H, W, generator=g),
            "semseg": torch.randint(0, 5, (H, W), generator=g), "label": i, "key": f"{i:08d}"}


def _without(sample: dict[str, object], *names: str) -> dict[str, object]:
    return {k: v for k, v in sample.items() if k not in names}


# ------------------------------------------------------------------------------------ collate
def test_collate_fills_a_missing_float_map_with_nan_and_records_presence():
    batch = collate([_full(0), _without(_full(1), "depth"), _full(2)])
    depth = batch["depth"]
    assert depth.shape == (3, 1, H, W) and depth.dtype == torch.float32
    assert torch.isnan(depth[1]).all() and torch.isfinite(depth[[0, 2]]).all()
    assert torch.equal(depth[0], _full(0)["depth"])
    assert set(batch[PRESENT_KEY]) == {"depth"}  # only keys some sample lacks
    assert batch[PRESENT_KEY]["depth"].tolist() == [True, False, True]
    assert batch[PRESENT_KEY]["depth"].dtype == torch.bool


def test_collate_of_complete_samples_has_no_presence_record():
    batch = collate([_full(0), _full(1)])
    assert PRESENT_KEY not in batch and batch["label"].tolist() == [0, 1]


def test_collate_integer_map_placeholder_is_zero_with_the_dtype_of_the_others():
    batch = collate([_without(_full(0), "semseg"), _full(1)])
    seg = batch["semseg"]
    assert seg.dtype == torch.int64 and seg.shape == (2, H, W)
    assert (seg[0] == 0).all() and torch.equal(seg[1], _full(1)["semseg"])
    assert batch[PRESENT_KEY]["semseg"].tolist() == [False, True]


def test_collate_missing_integer_raises_naming_it():
    with pytest.raises(ValueError, match=r"integer 'label': sample\(s\) \[1\] lack it"):
        collate([_full(0), _without(_full(1), "label")])


def test_collate_missing_string_is_none_and_key_no_sample_has_is_absent():
    batch = collate([_without(_full(0), "key"), _without(_full(1), "depth")])
    assert batch["key"] == [None, "00000001"]
    batch = collate([_without(_full(0), "depth"), _without(_full(1), "depth")])
    assert "depth" not in batch and PRESENT_KEY not in batch


def test_collate_text_only_sample_beside_image_samples():
    tokens = torch.tensor([5, 6, 7, 0])
    text_only = {"tokens": tokens, "key": "t"}
    batch = collate([_without(_full(0), "label"), text_only, _without(_full(1), "label")])
    assert torch.isnan(batch["rgb"][1]).all() and (batch["semseg"][1] == 0).all()
    assert torch.equal(batch["tokens"][1], tokens) and (batch["tokens"][[0, 2]] == 0).all()
    assert batch[PRESENT_KEY]["rgb"].tolist() == [True, False, True]
    assert batch[PRESENT_KEY]["tokens"].tolist() == [False, True, False]
    assert batch["key"] == ["00000000", "t", "00000001"]


def test_collate_refuses_a_tensor_of_another_shape_and_a_sample_holding_the_presence_key():
    odd = _full(1)
    odd["depth"] = torch.ones(1, H, W + 1)
    with pytest.raises(ValueError, match="cannot stack 'depth'"):
        collate([_full(0), odd])
    with pytest.raises(ValueError, match="may not hold the key 'present'"):
        collate([{**_full(0), PRESENT_KEY: {}}])


def test_batch_to_moves_the_nested_presence_record():
    batch = batch_to(collate([_full(0), _without(_full(1), "depth")]), "meta")
    assert batch["depth"].device.type == "meta" and batch[PRESENT_KEY]["depth"].device.type == "meta"
    assert batch["key"] == ["00000000", "00000001"]


def test_batch_rows_slices_nested_presence_and_lists():
    rows = batch_rows(collate([_full(0), _without(_full(1), "depth"), _full(2)]), slice(1, 3))
    assert rows["depth"].shape == (2, 1, H, W) and torch.isnan(rows["depth"][0]).all()
    assert rows[PRESENT_KEY]["depth"].tolist() == [False, True] and rows["key"] == ["00000001", "00000002"]


# ------------------------------------------------------------------------------- augmentation
def test_sample_transforms_apply_to_the_maps_present_and_pass_map_free_samples():
    g = torch.Generator().manual_seed(0)
    out = RandomResizedCropFlip(size=4)(_without(_full(0), "depth"), g)
    assert out["rgb"].shape == (3, 4, 4) and out["semseg"].shape == (4, 4) and "depth" not in out
    text_only = {"tokens": torch.arange(4), "key": "t"}
    assert RandomResizedCropFlip(size=4)(text_only, g)["tokens"].tolist() == [0, 1, 2, 3]
    assert Resize(4)(text_only)["key"] == "t"


def test_batch_augment_keeps_placeholders_and_the_presence_record():
    batch = collate([_full(0), _without(_full(1), "depth")])
    out = BatchRandomResizedCropFlip(size=4)(batch, torch.Generator().manual_seed(0))
    assert torch.isnan(out["depth"][1]).all() and torch.isfinite(out["depth"][0]).all()
    assert out[PRESENT_KEY]["depth"].tolist() == [True, False]


# ------------------------------------------------------------------------------------ readers
@pytest.fixture
def folder_without_one_depth(tmp_path):
    generate(tmp_path, GenerateConfig(count=3, size=16, fmt="folder"), progress=False)
    victim = next((tmp_path / "train" / "depth").rglob("00000001.png"))
    victim.unlink()
    return tmp_path


def test_folder_reader_strict_by_default_names_the_option(folder_without_one_depth):
    with pytest.raises(ValueError, match=r"missing here.*allow_missing=True"):
        FolderDataset(folder_without_one_depth, "train", ("rgb", "depth"))


def test_folder_reader_allow_missing_reads_the_partial_sample(folder_without_one_depth):
    ds = FolderDataset(folder_without_one_depth, "train", ("rgb", "depth"), allow_missing=True,
                       transform=Resize(8))
    assert len(ds) == 3
    samples = [ds[i] for i in range(3)]
    lacking = [s["key"].endswith("00000001") for s in samples]  # keys are class/name
    assert sum(lacking) == 1
    assert [("depth" in s) for s in samples] == [not x for x in lacking]
    assert all(s["rgb"].shape == (3, 8, 8) for s in samples)
    batch = collate(samples)
    assert batch[PRESENT_KEY]["depth"].tolist() == [not x for x in lacking]
    assert torch.isnan(batch["depth"][lacking.index(True)]).all()


def test_shard_round_trip_with_a_missing_modality(tmp_path):
    files = [encode_world_sample(world_sample("train", i, 16)) for i in range(3)]
    del files[1]["depth.png"]
    write_shard(tmp_path / "shard-000000.tar", [(f"{i:08d}", f) for i, f in enumerate(files)])
    strict = ShardDataset(tmp_path, ("rgb", "depth"))
    with pytest.raises(ValueError, match=r"00000001: missing modalities \['depth'\].*allow_missing=True"):
        list(strict)
    samples = list(ShardDataset(tmp_path, ("rgb", "depth"), allow_missing=True))
    assert [s["key"] for s in samples] == ["00000000", "00000001", "00000002"]
    assert [("depth" in s) for s in samples] == [True, False, True]
    assert samples[1]["rgb"].shape == (3, 16, 16)
    none_left = ShardDataset(tmp_path, ("depth",), allow_missing=True)
    with pytest.raises(ValueError, match="missing modalities"):  # a sample with none of them is still an error
        list(none_left)


def test_loader_stream_keeps_the_presence_record(tmp_path):
    files = [encode_world_sample(world_sample("train", i, 16)) for i in range(4)]
    del files[2]["depth.png"]
    write_shard(tmp_path / "shard-000000.tar", [(f"{i:08d}", f) for i, f in enumerate(files)])
    ds = ShardDataset(tmp_path, ("rgb", "depth"), allow_missing=True)
    batch = next(LoaderStream(ds, batch_size=4, num_workers=0))
    assert batch[PRESENT_KEY]["depth"].tolist() == [True, True, False, True]
    assert "key" not in batch and torch.isnan(batch["depth"][2]).all()


# ------------------------------------------------------------------------------ prepare_batch
def test_prepare_batch_present_flags_and_blank_targets():
    batch = collate([_full(0), _without(_full(1), "depth", "semseg"), _full(2)])
    specs = {"rgb": RGB, "depth": DEPTH, "semseg": SEG}
    out = prepare_batch(batch, specs, specs)
    assert set(out.present) == {"depth", "semseg"}
    assert out.present["depth"].tolist() == [True, False, True]
    assert torch.isnan(out.targets["depth"][1]).all() and torch.isfinite(out.targets["depth"][[0, 2]]).all()
    assert (out.targets["semseg"][1] == 255).all() and (out.targets["semseg"][0] != 255).all()
    assert (out.inputs["depth"][1] == 0).all() and (out.inputs["semseg"][1] == 0).all()
    assert torch.isfinite(out.inputs["depth"]).all()
    # the samples that have the data are prepared as in a complete batch
    alone = prepare_batch(collate([_full(0), _full(2)]), specs, specs)
    assert alone.present == {}
    assert torch.allclose(out.targets["depth"][[0, 2]], alone.targets["depth"])
    assert torch.equal(out.inputs["semseg"][[0, 2]], alone.inputs["semseg"])


def test_prepare_batch_explicit_presence_blanks_real_data():
    batch = collate([_full(0), _full(1)])
    present = {"depth": torch.tensor([False, True]), "semseg": torch.tensor([True, False])}
    out = prepare_batch(batch, {"depth": DEPTH, "semseg": SEG_NO_IGNORE}, {"depth": DEPTH, "semseg": SEG_NO_IGNORE},
                        present=present)
    assert torch.isnan(out.targets["depth"][0]).all() and (out.inputs["depth"][0] == 0).all()
    assert (out.targets["semseg"][1] == 0).all()  # no ignore_index: the placeholder, flagged absent
    assert out.present["semseg"].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"present\['depth'\] has 3 entries"):
        prepare_batch(batch, {"depth": DEPTH}, {}, present={"depth": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool tensor"):
        prepare_batch(batch, {"depth": DEPTH}, {}, present={"depth": torch.ones(2)})


def test_pretraining_loss_of_a_mixed_batch_is_finite_with_gradients():
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    task = PretrainTask(model, MaskingConfig(num_visible=8), LossConfig(), seed=0)
    samples = []
    for i in range(4):
        g = torch.Generator().manual_seed(i)
        sample = {"rgb": torch.rand(3, 32, 32, generator=g), "depth": 1 + torch.rand(1, 32, 32, generator=g),
                  "semseg": torch.randint(0, 5, (32, 32), generator=g)}
        samples.append(_without(sample, "depth") if i == 1 else sample)
    raw = batch_to(collate(samples), "cpu")
    losses = task(model, raw, step=0, global_batch=4, rows=slice(0, 4))
    losses.total.backward()
    assert torch.isfinite(losses.total) and torch.isfinite(losses.per_task["depth"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_robust_normalisation_of_an_all_nan_sample_gives_no_nan_inputs():
    raw = torch.rand(2, 1, H, W) + 1
    raw[1] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = robust_standardize(raw)
        out = prepare_batch({"depth": raw}, {"depth": DEPTH}, {"depth": DEPTH})
    assert torch.isnan(z[1]).all() and torch.isfinite(z[0]).all()
    assert torch.isfinite(out.inputs["depth"]).all() and (out.inputs["depth"][1] == 0).all()
    assert abs(float(z[0].mean())) < 0.5


# ---------------------------------------------------------------------------- weighted mixture
class _Source(torch.utils.data.Dataset):
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n, self.epochs = name, n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"source": self.name, "index": i}

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_weighted_interleave_proportions_3_to_1():
    mix = WeightedInterleave([_Source("a", 50), _Source("b", 7)], [3.0, 1.0], seed=0, length=4000)
    counts = Counter(s["source"] for s in mix)
    assert sum(counts.values()) == 4000
    # binomial sd for p = 0.75, n = 4000 is about 27: 5 sd
    assert abs(counts["a"] - 3000) < 140, counts


def test_weighted_interleave_is_reproducible_and_differs_by_seed_and_epoch():
    def draw(seed: int, epoch: int = 0) -> list[tuple[str, int]]:
        mix = WeightedInterleave([_Source("a", 5), _Source("b", 3)], [1, 1], seed=seed, length=40)
        mix.set_epoch(epoch)
        return [(s["source"], s["index"]) for s in mix]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2) and draw(1) != draw(1, epoch=1)


def test_weighted_interleave_cycles_sources_with_new_passes():
    small = _Source("b", 3)
    mix = WeightedInterleave([_Source("a", 100), small], [1, 1], seed=0, length=200)
    seen = [s["index"] for s in mix if s["source"] == "b"]
    assert len(seen) > 6 and set(seen) == {0, 1, 2}
    assert sorted(seen[:3]) == [0, 1, 2]  # each pass is a permutation of the source
    assert small.epochs[:3] == [0, 1, 2]


def test_weighted_interleave_stop_ends_at_the_first_exhausted_source():
    mix = WeightedInterleave([_Source("a", 1000), _Source("b", 2)], [1, 1], seed=0, exhausted="stop")
    samples = list(mix)
    assert sum(s["source"] == "b" for s in samples) == 2 and len(samples) < 1000


def test_weighted_interleave_resumes_exactly_and_mixes_iterables():
    def make() -> WeightedInterleave:
        return WeightedInterleave([_Source("a", 9), [{"source": "it", "index": i} for i in range(4)]],
                                  [2, 1], seed=3, length=30)

    full = [(s["source"], s["index"]) for s in make()]
    resumed = make()
    resumed.set_position(0, 11)
    assert [(s["source"], s["index"]) for s in resumed] == full[11:]
    assert {s for s, _ in full} == {"a", "it"}


def test_weighted_interleave_in_dataloader_workers_and_collate():
    mix = WeightedInterleave([[_full(i) for i in range(4)], [_without(_full(i), "depth") for i in range(4)]],
                             [1, 1], seed=0, length=8)
    batches = list(DataLoader(mix, batch_size=4, collate_fn=collate))
    assert len(batches) == 2
    present = torch.cat([b.get(PRESENT_KEY, {}).get("depth", torch.ones(4, dtype=torch.bool)) for b in batches])
    assert 0 < int(present.sum()) < 8


def test_weighted_interleave_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one weight per source"):
        WeightedInterleave([[{}]], [1, 2])
    with pytest.raises(ValueError, match="not all 0"):
        WeightedInterleave([[{}], [{}]], [0, 0])
    with pytest.raises(ValueError, match="exhausted must be"):
        WeightedInterleave([[{}]], [1], exhausted="wrap")  # type: ignore[arg-type]
    assert math.isclose(float(WeightedInterleave([[{}], [{}]], [3, 1]).probs[0]), 0.75)
