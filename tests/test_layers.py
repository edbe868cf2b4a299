import math

import torch

from multimae.layers import CrossAttention, build_2d_sincos_pos_embed, resize_pos_embed


def test_sincos_table_puts_rows_first_and_columns_second():
    D, h, w = 16, 3, 5
    table = build_2d_sincos_pos_embed(D, h, w)
    assert table.shape == (1, D, h, w)
    Q = D // 4
    omega = torch.tensor([1.0 / 10000 ** (k / Q) for k in range(Q)])
    r, c = 2, 4
    expected = torch.cat([torch.sin(r * omega), torch.cos(r * omega), torch.sin(c * omega), torch.cos(c * omega)])
    torch.testing.assert_close(table[0, :, r, c], expected)
    # The first half varies only along rows, the second only along columns.
    assert torch.equal(table[0, : D // 2, :, 0:1].expand(-1, -1, w), table[0, : D // 2])
    assert torch.equal(table[0, D // 2 :, 0:1, :].expand(-1, h, -1), table[0, D // 2 :])


def test_resizing_is_exact_at_the_stored_size_and_smooth_otherwise():
    table = build_2d_sincos_pos_embed(32, 4, 4)
    assert resize_pos_embed(table, 4, 4) is table
    big = resize_pos_embed(table, 8, 6)
    assert big.shape == (1, 32, 8, 6)
    # Corners stay close to the stored corners, and values stay in the sin/cos range.
    assert (big[0, :, 0, 0] - table[0, :, 0, 0]).abs().max() < 0.6
    assert big.abs().max() < 1.2


def test_cross_attention_padding_equals_dropping_the_padded_tokens():
    torch.manual_seed(0)
    attn = CrossAttention(16, num_heads=4)
    x, ctx = torch.randn(1, 5, 16), torch.randn(1, 7, 16)
    keep = torch.tensor([[True] * 4 + [False] * 3])
    padded = attn(x, ctx, keep)
    trimmed = attn(x, ctx[:, :4])
    torch.testing.assert_close(padded, trimmed)
    # Reference: softmax(q k^T / sqrt(d)) v per head.
    q = attn.q(x).view(1, 5, 4, 4).transpose(1, 2)
    k, v = attn.kv(ctx).view(1, 7, 2, 4, 4).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) / math.sqrt(4)).softmax(-1) @ v
    torch.testing.assert_close(attn(x, ctx), attn.proj(ref.transpose(1, 2).reshape(1, 5, 16)))
