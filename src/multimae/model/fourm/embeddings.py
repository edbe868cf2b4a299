"""4M's embeddings: per modality, token content ``x`` and its position + modality embedding ``emb``.

Shapes: B batch, N tokens of the modality (h * w for a grid, L for a sequence), D width, V
vocabulary (codebook) size, C image channels, P patch side.

4M keeps ``x`` and ``emb`` apart because the decoder's context adds ``emb`` back after projecting
the encoder's output, and the decoder's image-like queries are a mask token plus ``emb`` alone.
Which embedding a modality gets is read from its spec's kind, here and nowhere else
(`build_encoder_embedding`, `build_decoder_embedding`):

* ``dense`` (raw pixels, encoder only): a bias-free linear map of each P x P patch flattened in
  (row, column, channel) order, tokens row-major; ``emb`` = 2-D sin-cos + modality embedding.
* ``token_map``: a token embedding of each code; ``emb`` = 2-D sin-cos of its own grid (a learned
  table with the spec's ``positions: learned``, 4M's global tokens) + modality.
* ``tokens`` (sequences): a token embedding; in the encoder ``emb`` = the 1-D sin-cos of the
  token's rank among the *given* tokens + modality (modality alone on tokens not given); in the
  decoder, of its rank among the *target* tokens.
* ``vector`` (a sequence of feature vectors, 4M-21's T5 caption embeddings; encoder only): a linear
  map with bias of each vector, positions as a sequence's.

Positional tables are fixed buffers kept in the state dict (as official checkpoints do). A
decoder embedding shares its modality embedding with the encoder's (one parameter) and, with
``tie_output``, its output projection with its token embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multimae.layers.pos_embed import build_1d_sincos_pos_embed, build_2d_sincos_pos_embed
from multimae.modalities.spec import ModalitySpec


def _grid_table(dim: int, side: int) -> Tensor:
    """(1, side * side, D) 2-D sin-cos of a square grid, row-major (rows in the first half)."""
    return build_2d_sincos_pos_embed(dim, side, side).flatten(2).transpose(1, 2).contiguous()


def _grid_positions(module: nn.Module, spec: ModalitySpec, dim: int, side: int) -> None:
    """Give ``module`` its ``pos_emb``: the fixed sin-cos buffer, or a learned table (normal(0.02))."""
    if spec.positions == "learned":
        module.pos_emb = nn.Parameter(torch.zeros(1, side * side, dim))
        nn.init.normal_(module.pos_emb, std=0.02)
    else:
        module.register_buffer("pos_emb", _grid_table(dim, side))


def _rank(mask: Tensor) -> Tensor:
    """(B, N) long: each True entry's rank among the True entries of its row (0, 1, ...), 0 elsewhere."""
    return ((mask.long().cumsum(dim=1) - 1) * mask).clamp_min(0)


def token_pixels(spec: ModalitySpec, patch_size: int) -> int:
    """Pixels per token side of a grid modality: the patch of raw pixels, a token map's stride."""
    return patch_size if spec.kind == "dense" else spec.stride


def grid_side(spec: ModalitySpec, image_size: int, patch_size: int) -> int:
    """Tokens per side of a grid modality: the image's patches for raw pixels, image / stride for a token map."""
    cell = token_pixels(spec, patch_size)
    if image_size % cell:
        raise ValueError(f"{spec.name}: image_size {image_size} is not a multiple of its {cell}-pixel tokens")
    return image_size // cell


class EncoderEmbedding(nn.Module):
    """Prepared data -> ``(x, emb)``, each (B, N, D)."""

    spec: ModalitySpec
    mod_emb: nn.Parameter

    def num_tokens(self, data: Tensor) -> int:
        raise NotImplementedError

    def forward(self, data: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        """``encoded`` (B, N) bool: the tokens given to the encoder (sequences' positions count them)."""
        raise NotImplementedError


class PatchEmbedding(EncoderEmbedding):
    """Raw pixels (B, C, H, W) -> N = (H / P) * (W / P) tokens."""

    def __init__(self, spec: ModalitySpec, dim: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.spec, self.patch = spec, patch_size
        self.side = grid_side(spec, image_size, patch_size)
        self.proj = nn.Linear(patch_size * patch_size * spec.num_channels, dim, bias=False)
        self.register_buffer("pos_emb", _grid_table(dim, self.side))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))

    def _check(self, x: Tensor) -> None:
        C, S = self.spec.num_channels, self.side * self.patch
        if x.dim() != 4 or tuple(x.shape[1:]) != (C, S, S) or not x.is_floating_point():
            raise ValueError(f"{self.spec.name}: expected a float (B, {C}, {S}, {S}) image, got {x.dtype} "
                             f"{tuple(x.shape)}")

    def num_tokens(self, data: Tensor) -> int:
        self._check(data)
        return self.side * self.side

    def forward(self, data: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        self._check(data)
        B, C, H, W = data.shape
        P = self.patch
        patches = data.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, P * P * C)
        x = self.proj(patches.to(self.proj.weight.dtype))
        return x, (self.pos_emb + self.mod_emb).to(x.dtype).expand(B, -1, -1)


class TokenMapEmbedding(EncoderEmbedding):
    """A token map's codes (B, N) (or (B, h, w)) -> N tokens."""

    def __init__(self, spec: ModalitySpec, dim: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.side = grid_side(spec, image_size, patch_size)
        _grid_positions(self, spec, dim, self.side)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = nn.Embedding(spec.num_channels, dim)

    def ids(self, data: Tensor) -> Tensor:
        """(B, N) int64 codes, checked."""
        name, N, V = self.spec.name, self.side * self.side, self.spec.num_channels
        if data.is_floating_point() or data.dtype == torch.bool or data.dim() not in (2, 3):
            raise ValueError(f"{name}: expected (B, N) integer token ids, got {data.dtype} {tuple(data.shape)}")
        ids = data.reshape(data.shape[0], -1).long()
        if ids.shape[1] != N:
            raise ValueError(f"{name}: expected {N} tokens ({self.side} x {self.side} grid), got {ids.shape[1]}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
            raise ValueError(f"{name}: token id out of range: found [{int(ids.min())}, {int(ids.max())}], "
                             f"the codebook has {V}")
        return ids

    def num_tokens(self, data: Tensor) -> int:
        return self.side * self.side

    def forward(self, data: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        x = self.token_emb(self.ids(data))
        return x, (self.pos_emb + self.mod_emb).to(x.dtype).expand(x.shape[0], -1, -1)


def _sequence_ids(spec: ModalitySpec, data: Tensor) -> Tensor:
    if data.dim() != 2 or data.is_floating_point() or data.dtype == torch.bool:
        raise ValueError(f"{spec.name}: expected (B, L) integer token ids, got {data.dtype} {tuple(data.shape)}")
    if data.shape[1] > spec.max_length:
        raise ValueError(f"{spec.name}: {data.shape[1]} tokens, more than max_length {spec.max_length}")
    ids = data.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= spec.num_channels):
        raise ValueError(f"{spec.name}: token id out of range: found [{int(ids.min())}, {int(ids.max())}], "
                         f"the vocabulary has {spec.num_channels}")
    return ids


class SequenceEmbedding(EncoderEmbedding):
    """A sequence's ids (B, L) -> L tokens; positions count the given tokens."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.token_emb = nn.Embedding(spec.num_channels, dim, padding_idx=spec.pad_id)
        self.register_buffer("pos_emb", build_1d_sincos_pos_embed(dim, spec.max_length))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))

    def num_tokens(self, data: Tensor) -> int:
        return _sequence_ids(self.spec, data).shape[1]

    def forward(self, data: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        x = self.token_emb(_sequence_ids(self.spec, data))
        pos = self.pos_emb[0][_rank(encoded)] * encoded.unsqueeze(-1)  # (B, L, D), 0 where not given
        return x, (pos + self.mod_emb).to(x.dtype)


class VectorSequenceEmbedding(EncoderEmbedding):
    """A sequence of feature vectors (B, L, C) -> L tokens; positions count the given vectors."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.emb_proj = nn.Linear(spec.num_channels, dim)
        self.register_buffer("pos_emb", build_1d_sincos_pos_embed(dim, spec.max_length))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))

    def num_tokens(self, data: Tensor) -> int:
        C, L = self.spec.num_channels, self.spec.max_length
        if data.dim() != 3 or data.shape[2] != C or data.shape[1] > L or not data.is_floating_point():
            raise ValueError(f"{self.spec.name}: expected a float (B, L <= {L}, {C}) tensor, got {data.dtype} "
                             f"{tuple(data.shape)}")
        return data.shape[1]

    def forward(self, data: Tensor, encoded: Tensor) -> tuple[Tensor, Tensor]:
        self.num_tokens(data)
        x = self.emb_proj(data.to(self.emb_proj.weight.dtype))
        pos = self.pos_emb[0][_rank(encoded)] * encoded.unsqueeze(-1)
        return x, (pos + self.mod_emb).to(x.dtype)


class DecoderEmbedding(nn.Module):
    """An output modality's decoder side: queries, labels and logits.

    ``forward(data, target) -> (x, emb, labels, valid)``, each over the modality's N decoder slots:
    x (B, N, D) query content (None: the model's mask token), emb (B, N, D), labels (B, N) int64
    and valid (B, N) bool (the slot is a target). ``logits(y)``: (T, D) -> (T, V).
    """

    spec: ModalitySpec
    causal: bool  # slots attend to earlier slots of the modality only (sequences) or to all of them

    def __init__(self, spec: ModalitySpec, dim: int, tie_output: bool) -> None:
        super().__init__()
        self.spec = spec
        self.token_emb = nn.Embedding(spec.num_channels, dim)
        self.to_logits = nn.Linear(dim, spec.num_channels, bias=False)
        if tie_output:
            self.to_logits.weight = self.token_emb.weight
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))

    def share_modality_embedding(self, mod_emb: nn.Parameter) -> None:
        """Use the encoder's modality embedding of the same modality (4M shares them)."""
        self.mod_emb = mod_emb

    def logits(self, y: Tensor) -> Tensor:
        return self.to_logits(y)


class TokenMapDecoderEmbedding(DecoderEmbedding):
    """Every target position of a token map is queried by the mask token + its position + modality."""

    causal = False

    def __init__(self, spec: ModalitySpec, dim: int, image_size: int, patch_size: int, tie_output: bool) -> None:
        super().__init__(spec, dim, tie_output)
        self.side = grid_side(spec, image_size, patch_size)
        _grid_positions(self, spec, dim, self.side)

    def forward(self, data: Tensor, target: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        ids = data.reshape(data.shape[0], -1).long()
        if ids.shape[1] != self.side * self.side:
            raise ValueError(f"{self.spec.name}: expected {self.side * self.side} tokens, got {ids.shape[1]}")
        emb = (self.pos_emb + self.mod_emb).to(self.token_emb.weight.dtype).expand(ids.shape[0], -1, -1)
        return None, emb, ids, target


class SequenceDecoderEmbedding(DecoderEmbedding):
    """Teacher forcing over a sequence's target positions: slot p reads token p and predicts token
    p + 1; it is a target when both p and p + 1 are. Positions count target tokens (0 at the first);
    ranks beyond max_length restart at 0 (4M's)."""

    causal = True

    def __init__(self, spec: ModalitySpec, dim: int, tie_output: bool) -> None:
        super().__init__(spec, dim, tie_output)
        self.register_buffer("pos_emb", build_1d_sincos_pos_embed(dim, spec.max_length))

    def forward(self, data: Tensor, target: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        ids = _sequence_ids(self.spec, data)
        rank = _rank(target)
        rank = rank.masked_fill(rank >= self.spec.max_length, 0)
        pos = self.pos_emb[0][rank] * target.unsqueeze(-1)
        x = self.token_emb(ids[:, :-1])
        emb = (pos[:, :-1] + self.mod_emb).to(x.dtype)
        return x, emb, ids[:, 1:], target[:, :-1] & target[:, 1:]

    def embed_generated(self, ids: Tensor, start: int) -> Tensor:
        """(B, n) ids fed to the decoder at target ranks ``start`` .. ``start + n - 1`` -> (B, n, D)
        ``token_emb + pos + mod`` (what `forward` gives those slots; generation decodes with it)."""
        rank = torch.arange(start, start + ids.shape[1], device=ids.device)
        rank = rank.masked_fill(rank >= self.spec.max_length, 0)
        x = self.token_emb(ids.long())
        return x + (self.pos_emb[0][rank] + self.mod_emb).to(x.dtype)


def build_encoder_embedding(spec: ModalitySpec, dim: int, image_size: int, patch_size: int) -> EncoderEmbedding:
    """The encoder embedding of ``spec``'s kind."""
    if spec.kind == "dense":
        return PatchEmbedding(spec, dim, image_size, patch_size)
    if spec.kind == "token_map":
        return TokenMapEmbedding(spec, dim, image_size, patch_size)
    if spec.kind == "tokens":
        return SequenceEmbedding(spec, dim)
    if spec.kind == "vector":
        return VectorSequenceEmbedding(spec, dim)
    raise ValueError(f"{spec.name}: 4M has no encoder embedding for a {spec.kind} modality")


def build_decoder_embedding(spec: ModalitySpec, dim: int, image_size: int, patch_size: int,
                            tie_output: bool = True) -> DecoderEmbedding:
    """The decoder embedding of ``spec``'s kind."""
    if spec.kind == "token_map":
        return TokenMapDecoderEmbedding(spec, dim, image_size, patch_size, tie_output)
    if spec.kind == "tokens":
        return SequenceDecoderEmbedding(spec, dim, tie_output)
    raise ValueError(f"{spec.name}: 4M predicts token maps and sequences, not a {spec.kind} modality")
