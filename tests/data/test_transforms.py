import torch

from deepautodnn.data.transforms import augment_batch, erase_batch


def test_augment_shifts_and_flips_within_bounds():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # an interior square never leaves the frame
    assert not torch.equal(out, x)
    ys = out[:, 0].sum(2).argmax(1)
    assert (ys >= 8).all() and (ys <= 12).all()


def test_random_erasing_zeroes_one_bounded_rectangle_per_chosen_image():
    x = torch.ones(400, 1, 28, 28)
    out = erase_batch(x, torch.Generator().manual_seed(0), prob=0.5)
    erased = (out == 0)[:, 0]  # (B, H, W)
    hit = erased.any((1, 2))
    assert 0.4 < hit.float().mean() < 0.6  # about `prob` of the images
    area = erased.sum((1, 2))[hit].float() / (28 * 28)
    assert area.min() > 0.005 and area.max() < 0.3  # the 2-25% area range, after rounding
    for mask in erased[hit][:50]:  # each erased region is one filled rectangle
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert torch.equal(erase_batch(x, torch.Generator().manual_seed(0), prob=0.0), x)
