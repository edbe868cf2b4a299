import torch

from multimae.losses import MultiMAELoss, masked_cross_entropy, masked_regression_loss, patch_standardize, token_mask_to_pixels
from multimae.modalities import resolve_modalities

SPECS = resolve_modalities(["rgb", "depth", "semseg", "norm_rgb"], overrides={"semseg": {"num_channels": 5}})


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    preds = {
        "rgb": torch.randn(2, 3, 32, 32, generator=g),
        "norm_rgb": torch.randn(2, 3, 32, 32, generator=g),
        "depth": torch.randn(2, 1, 32, 32, generator=g),
        "semseg": torch.randn(2, 5, 8, 8, generator=g),
    }
    rgb = torch.randn(2, 3, 32, 32, generator=g)
    targets = {"rgb": rgb, "norm_rgb": rgb, "depth": torch.randn(2, 1, 32, 32, generator=g),
               "semseg": torch.randint(0, 5, (2, 8, 8), generator=g)}
    mask = torch.rand(2, 16, generator=g) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    masks = {k: mask for k in preds}
    return preds, targets, masks


def test_the_loss_ignores_visible_patches():
    preds, targets, masks = batch()
    loss = MultiMAELoss(SPECS, 8)
    before = loss(preds, targets, masks)
    changed = {k: v.clone() for k, v in targets.items()}
    changed["rgb"][:, :, :8, 8:16] += 5.0  # token 1: visible in every sample
    changed["norm_rgb"] = changed["rgb"]
    changed["depth"][:, :, :8, 8:16] -= 3.0
    changed["semseg"][:, :2, 2:4] = (changed["semseg"][:, :2, 2:4] + 1) % 5
    after = loss(preds, changed, masks)
    for k in before.per_task:
        torch.testing.assert_close(before.per_task[k], after.per_task[k])
    changed["depth"][:, :, :8, :8] -= 3.0  # token 0: masked
    assert not torch.allclose(loss(preds, changed, masks).per_task["depth"], before.per_task["depth"])
    # Option: count every patch.
    assert not torch.allclose(MultiMAELoss(SPECS, 8, loss_on_all_patches=True)(preds, changed, masks).per_task["rgb"], before.per_task["rgb"])


def test_reduction_is_a_mean_over_masked_pixels_per_sample_then_over_samples():
    pred = torch.zeros(2, 1, 4, 4)
    target = torch.ones(2, 1, 4, 4)
    target[1] = 3.0
    mask = torch.tensor([[True, False, False, False], [True, True, True, False]])  # 2x2 grid, patch 2
    loss = masked_regression_loss(pred, target, mask, (2, 2), 2, "l1")
    torch.testing.assert_close(loss, torch.tensor((1.0 + 3.0) / 2))  # each sample weighs the same
    torch.testing.assert_close(token_mask_to_pixels(mask, (2, 2), 2)[0, :2, :2], torch.ones(2, 2))


def test_invalid_depth_pixels_are_excluded_and_total_is_the_equal_weight_sum():
    preds, targets, masks = batch()
    loss = MultiMAELoss(SPECS, 8)
    depth = targets["depth"].clone()
    depth[:, :, :8, :8] = float("nan")
    out = loss(preds, {**targets, "depth": depth}, masks)
    assert torch.isfinite(out.per_task["depth"])
    torch.testing.assert_close(out.total, sum(out.per_task.values()))


def test_norm_pix_target_is_standardised_per_patch():
    x = torch.randn(1, 3, 16, 16) * 4 + 2
    y = patch_standardize(x, 8)
    patch = y[0, :, 8:, :8].reshape(-1)
    torch.testing.assert_close(patch.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(patch.std(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_no_masked_token_gives_zero_loss_and_finite_gradients():
    pred = torch.randn(2, 1, 8, 8, requires_grad=True)
    mask = torch.tensor([[True] * 4, [False] * 4])
    loss = masked_regression_loss(pred, torch.zeros(2, 1, 8, 8), mask, (2, 2), 4)
    torch.testing.assert_close(loss, pred[0].pow(2).mean())
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[1] == 0).all()
    nothing = masked_regression_loss(pred, torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, dtype=torch.bool), (2, 2), 4)
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_cross_entropy_skips_the_ignore_index():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 1], [2, 255]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss = masked_cross_entropy(logits, target, mask, (1, 1), 2, ignore_index=255)
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(loss, expected)
