"""The 3D augmentation: each batched op against the same operation written plainly for one volume at a time,
the random steps' parameters, and the `volume` sequence (shapes, range, seeding)."""
import math

import pytest
import torch
import torch.nn.functional as F

from common.augment import volume_ops as ops
from common.augment.images import Augmentation, build_augmentation
from common.augment.volumes import CROP_SCALE_3D, sample_resized_crop3d
from common.augment.names import SEQUENCES_3D

ATOL = 1e-5


def volumes(n=6, c=1, s=12, seed=0):
    """Random float volumes in [0, 1], smoothed a little so they are not pure noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, s, s, s, generator=g)
    return F.avg_pool3d(F.pad(x, (1,) * 6, mode="replicate"), 3, stride=1)


def assert_close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("s, size", [(12, 12), (12, 20), (16, 8)])  # same size, upsampling, downsampling
def test_resample3d_equals_interpolating_each_crop_then_rot90_then_flip(s, size):
    n = 4 * 3 * 8  # every number of quarter turns in every plane, with every set of flipped axes
    x = volumes(n, s=s)
    turns, plane = torch.arange(n) % 4, (torch.arange(n) // 4) % 3
    flips = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.bool).repeat(12, 1)
    flips = flips[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    boxes = sample_resized_crop3d(n, (s, s, s), torch.Generator().manual_seed(1))
    boxes[0] = torch.tensor([0, 0, 0, s, s, s])  # the whole volume
    boxes[1] = torch.tensor([s - 3, s - 2, 0, 3, 2, 5])  # a small box at the edge
    boxes[2] = torch.tensor([0, 3, 1, 1, 5, 4])  # one voxel deep
    y = ops.resample3d(x, boxes, size, turns, plane, flips)
    assert y.shape == (n, 1, size, size, size)
    for i, (z, t, l, d, h, w) in enumerate(boxes.tolist()):
        crop = F.interpolate(x[i:i + 1, :, z:z + d, t:t + h, l:l + w], size=(size,) * 3, mode="trilinear",
                             align_corners=False)
        turned = torch.rot90(crop, int(turns[i]), ops.PLANES[int(plane[i])])
        reference = turned.flip([2 + a for a in range(3) if flips[i, a]]) if flips[i].any() else turned
        assert_close(y[i:i + 1], reference)


def test_crop_boxes_fit_the_volume_and_keep_the_scale():
    g = torch.Generator().manual_seed(0)
    boxes = sample_resized_crop3d(2000, (28, 28, 28), g)
    starts, sides = boxes[:, :3], boxes[:, 3:]
    assert (starts >= 0).all() and (sides >= 1).all() and (starts + sides <= 28).all()
    fraction = sides.prod(1).float() / 28 ** 3
    low, high = CROP_SCALE_3D
    assert fraction.min() >= low * 0.8 and fraction.max() <= high  # rounding each side moves the volume a little
    assert len({tuple(b) for b in boxes.tolist()}) > 1900  # per-volume parameters


def test_intensity_ops_are_their_formulas_per_volume():
    x = volumes(4)
    scale, shift, gamma = torch.tensor([0.5, 1.0, 1.5, 1.2]), torch.tensor([0.1, 0.0, -0.2, 0.3]), torch.tensor([0.5, 1.0, 2.0, 1.3])
    y, z = ops.scale_shift(x, scale, shift), ops.adjust_gamma3d(x, gamma)
    for i in range(4):
        assert_close(y[i], (x[i] * scale[i] + shift[i]).clamp(0, 1))
        assert_close(z[i], x[i] ** gamma[i])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    std = torch.tensor([0.0, 0.1, 0.2, 0.05])
    w = ops.add_noise(x, std, noise)
    assert torch.equal(w[0], x[0].clamp(0, 1))
    for i in range(4):
        assert_close(w[i], (x[i] + std[i] * noise[i]).clamp(0, 1))


def test_gaussian_blur3d_equals_a_full_3d_gaussian_kernel_with_reflect_padding():
    x = volumes(4, c=2, s=10)  # 10 voxels: the 7-tap kernel reflects at both ends
    sigma, k = torch.tensor([0.5, 0.8, 1.0, 1.7]), 7
    y = ops.gaussian_blur3d(x, sigma, k)
    t = torch.arange(k, dtype=torch.float32) - k // 2
    for i in range(len(x)):
        g = torch.exp(-t ** 2 / (2 * float(sigma[i]) ** 2))
        kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
        kernel = (kernel / kernel.sum()).expand(2, 1, k, k, k)  # one per channel
        ref = F.conv3d(F.pad(x[i:i + 1], (k // 2,) * 6, mode="reflect"), kernel, groups=2)
        assert_close(y[i:i + 1], ref)
    assert_close(y.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=0.02)  # a blur keeps the mean roughly


def test_volume_sequence_gives_seeded_per_volume_views_of_the_network_size():
    x = volumes(6, s=28)
    aug = build_augmentation("volume", 20)
    assert aug.steps == SEQUENCES_3D["volume"] and aug.dims == 3
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 20, 20, 20) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and math.isfinite(float(a.sum()))
    same = aug(x[:1].expand(6, -1, -1, -1, -1).clone(), torch.Generator().manual_seed(0))
    assert len({round(float(v.sum()), 3) for v in same}) == 6  # one volume, six different views


def test_a_sequence_refuses_the_other_kind_of_batch():
    with pytest.raises(ValueError, match="takes 5-d batches"):
        Augmentation("volume", 28)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="takes 4-d batches"):
        Augmentation("novel", 28)(torch.rand(2, 1, 8, 8, 8))
