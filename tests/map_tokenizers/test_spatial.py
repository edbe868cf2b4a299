"""Map tokenizers: shapes and dtypes, clear errors on bad input, bit-exact save / load, training."""

from __future__ import annotations

import json

import pytest
import torch

from multimae.modalities.registry import BUILTIN_MODALITIES
from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    MapTokenizerConfig,
    QuantizerConfig,
    SpatialTokenizer,
    fit_statistics,
    load_tokenizer,
)

SIZE = 16  # pixels; widths of two stages -> 4 px per token, a 4x4 grid
K = 5  # classes of a categorical map
# Every built-in map the data holds, plus a user dense modality described only by its spec.
MAP_SPECS = [s.replace(num_channels=K) if s.kind == "categorical" else s
             for s in BUILTIN_MODALITIES.values() if s.kind in ("dense", "categorical") and s.source is None]
USER_SPEC = ModalitySpec(name="heat", kind="dense", num_channels=2, loss="l1")
ALL_SPECS = [*MAP_SPECS, USER_SPEC]


def tiny(kind: str = "fsq") -> MapTokenizerConfig:
    return MapTokenizerConfig(widths=(8, 8), quantizer=QuantizerConfig(kind=kind, levels=(5, 3, 3), codebook_size=16,
                                                                       dim=4, kmeans_init=False))


def raw_batch(spec: ModalitySpec, batch: int = 3, seed: int = 0) -> torch.Tensor:
    """Raw values as the world produces them (rgb in [0, 1], depth > 0 with invalid pixels, unit normals)."""
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "categorical":
        return torch.randint(0, spec.num_channels, (batch, SIZE, SIZE), generator=g)
    x = torch.rand(batch, spec.num_channels, SIZE, SIZE, generator=g)
    if spec.stored_as == "depth16":
        x = 0.5 + 4 * x
        x[:, :, :2, :2] = float("nan")
    elif spec.stored_as == "unit_vectors8":
        x = torch.nn.functional.normalize(x - 0.5, dim=1)
    elif spec.stored_as == "array":
        x = 10 * x - 3
    return x


def make(spec: ModalitySpec, kind: str = "fsq", seed: int = 0) -> SpatialTokenizer:
    torch.manual_seed(seed)
    return SpatialTokenizer(fit_statistics(spec, raw_batch(spec, 4, seed=99)), tiny(kind))


def spec_named(name: str) -> ModalitySpec:
    return next(s for s in ALL_SPECS if s.name == name)


@pytest.mark.parametrize("kind", ["fsq", "vq"])
@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_encode_decode_shapes_and_dtypes(spec, kind):
    tok = make(spec, kind)
    raw = raw_batch(spec)
    tokens = tok.encode(raw)
    assert tokens.placement == tok.placement == "grid"
    assert tokens.grid == (SIZE // 4, SIZE // 4)
    assert tokens.ids.shape == tokens.valid.shape == (3, 16)
    assert tokens.ids.dtype == torch.int64 and tokens.valid.dtype == torch.bool
    assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < tok.vocab_size
    assert tok.vocab_size == (45 if kind == "fsq" else 16)
    out = tok.decode(tokens)
    assert out.shape == raw.shape
    if spec.kind == "categorical":
        assert out.dtype == torch.int64 and 0 <= int(out.min()) and int(out.max()) < K
    else:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # (B, h, w) ids decode the same as TokenIds
    assert torch.equal(tok.decode(tokens.grid_ids), out)


def test_decoded_values_keep_the_modality_range():
    rgb = make(spec_named("rgb")).decode(torch.randint(0, 45, (2, 4, 4)))
    assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    normals = make(spec_named("normals")).decode(torch.randint(0, 45, (2, 4, 4)))
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, SIZE, SIZE))
    depth = make(spec_named("depth")).decode(torch.randint(0, 45, (2, 4, 4)))
    assert float(depth.min()) > 0


def test_a_cell_of_invalid_pixels_is_an_invalid_token():
    spec = spec_named("depth")
    raw = raw_batch(spec)  # the top-left 2x2 pixels of each sample are NaN: a part of cell (0, 0)
    raw[0, :, :4, :4] = 0.0  # 0 is invalid too: the whole first cell of sample 0
    tokens = make(spec).encode(raw)
    assert not tokens.valid[0, 0] and tokens.valid[0, 1:].all()
    assert tokens.valid[1:].all()


def test_encoding_does_not_change_the_tokenizer():
    tok = make(spec_named("rgb"), "vq")
    before = tok.content_hash
    tok.encode(raw_batch(spec_named("rgb")))
    assert tok.content_hash == before


def test_decode_of_encode_is_the_eval_reconstruction():
    spec = spec_named("depth")
    tok = make(spec)
    raw = raw_batch(spec)
    tok.net.eval()
    with torch.no_grad():
        out, ids, _ = tok.reconstruct(raw)
    tokens = tok.encode(raw)
    assert torch.equal(tokens.grid_ids, ids)
    torch.testing.assert_close(tok.decode(tokens), tok.format.denormalize(out))


# ----------------------------------------------------------------------------- bad inputs

def test_a_float_class_map_is_refused_by_name():
    spec = spec_named("semseg")
    tok = make(spec)
    with pytest.raises(ValueError, match=r"semseg: a categorical map holds integer class ids .*float32"):
        tok.encode(raw_batch(spec).float())
    with pytest.raises(ValueError, match=r"semseg: expected class ids of shape \(B, H, W\), got \(3, 1, 16, 16\)"):
        tok.encode(raw_batch(spec)[:, None])
    with pytest.raises(ValueError, match=r"semseg: class ids must lie in \[0, 5\), got values in \[0, 7\]"):
        tok.encode(raw_batch(spec).clamp_max(4).index_fill_(1, torch.tensor([0]), 7))


def test_wrong_channels_dtype_shape_and_size_are_named():
    spec = spec_named("rgb")
    tok = make(spec)
    with pytest.raises(ValueError, match=r"rgb: expected 3 channel\(s\), got 1"):
        tok.encode(torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"rgb: a dense map holds float values .*torch.uint8 tensor"):
        tok.encode((torch.rand(2, 3, SIZE, SIZE) * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"rgb: expected a map of shape \(B, 3, H, W\), got \(3, 16, 16\)"):
        tok.encode(torch.rand(3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"rgb: a map of 18x16 pixels does not split into 4x4"):
        tok.encode(torch.rand(1, 3, 18, SIZE))


def test_normalised_input_is_refused_not_tokenised():
    """4M issue 22: ImageNet-normalised colours given to a tokenizer that normalises by itself."""
    rgb = raw_batch(spec_named("rgb"))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"rgb: raw values must lie in \[0, 1\].*not ImageNet-normalised"):
        make(spec_named("rgb")).encode((rgb - mean) / std)
    depth = raw_batch(spec_named("depth"))
    with pytest.raises(ValueError, match=r"depth: values must be >= 0"):
        make(spec_named("depth")).encode(depth - depth.nanmean())
    with pytest.raises(ValueError, match=r"normals: unit vectors have components in \[-1, 1\]"):
        make(spec_named("normals")).encode(raw_batch(spec_named("normals")) * 255)


def test_out_of_range_ids_are_refused_by_decode():
    tok = make(spec_named("depth"))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 45\).*got values in \[45, 45\]"):
        tok.decode(torch.full((1, 4, 4), 45))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 45\).*\[-1, -1\]"):
        tok.decode(torch.full((1, 16), -1))
    with pytest.raises(ValueError, match="token ids must be an integer tensor"):
        tok.decode(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="12 ids per sample are not a square grid"):
        tok.decode(torch.zeros(1, 12, dtype=torch.int64))


def test_a_sequence_modality_has_no_map_tokenizer():
    caption = next(s for s in BUILTIN_MODALITIES.values() if s.kind == "tokens")
    with pytest.raises(ValueError, match="a map tokenizer takes dense or categorical maps, not a tokens"):
        SpatialTokenizer.create(caption, tiny())


# ----------------------------------------------------------------------------- files

@pytest.mark.parametrize("kind", ["fsq", "vq"])
@pytest.mark.parametrize("name", ["depth", "semseg", "heat"])
def test_save_load_is_bit_exact(tmp_path, name, kind):
    spec = spec_named(name)
    tok = make(spec, kind)
    raw = raw_batch(spec)
    if kind == "vq":  # one training forward: k-means-free init, EMA updates, buffers that must travel
        tok.net.train()
        tok.reconstruct(raw)
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    back = load_tokenizer(tmp_path / "tok")
    assert isinstance(back, SpatialTokenizer) and back.spec == spec
    assert back.content_hash == tok.content_hash == json.loads((tmp_path / "tok" / CONFIG_FILE).read_text())["content_hash"]
    a, b = tok.encode(raw), back.encode(raw)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.valid, b.valid)
    assert torch.equal(tok.decode(a), back.decode(b))


def test_the_hash_tells_tokenizers_apart_and_a_changed_file_is_refused(tmp_path):
    spec = spec_named("rgb")
    a, b = make(spec, seed=0), make(spec, seed=1)
    assert a.content_hash != b.content_hash and len(a.content_hash) == 64
    a.save(tmp_path / "a")
    record = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    record["config"]["std"] = [0.25, 0.5, 0.5]  # someone edits the normalisation
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"not the recorded \w+ \(a changed or damaged file\)"):
        load_tokenizer(tmp_path / "a")
    with pytest.raises(ValueError, match="no multimae_tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("kind", ["fsq", "vq"])
@pytest.mark.parametrize("name", ["rgb", "semseg"])
def test_a_few_steps_reduce_the_loss(name, kind):
    spec = spec_named(name)
    tok = make(spec, kind)
    raw = raw_batch(spec, batch=8)
    if spec.kind == "categorical":  # one class per 4x4 cell: what a 4x4 grid of tokens can hold
        raw = raw[:, ::4, ::4].repeat_interleave(4, 1).repeat_interleave(4, 2)
    opt = torch.optim.Adam(tok.net.parameters(), lr=3e-3)
    tok.net.train()
    losses = []
    for _ in range(30):
        _, _, loss = tok.reconstruct(raw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
