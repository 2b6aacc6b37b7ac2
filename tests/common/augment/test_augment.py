"""Tests for common.augment.images / common.augment.image_ops against torchvision's functional ops.

Float ops are compared per image on fixed parameters with atol 1e-5. Luma equalisation
quantises Y to uint8 levels, so it is compared with torchvision ``equalize`` on those
levels (exact), and loosely with PIL's own uint8 YCbCr round trip (PIL truncates Y, Cb,
Cr and the returned RGB to integers, so it differs by a few levels).
"""

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from common.augment import image_ops as ops
from common.augment.images import Augmentation, build_augmentation, sample_jitter, sample_resized_crop
from common.augment.names import AUGMENTATIONS

ATOL = 1e-5


def images(n=8, c=3, h=28, w=28, seed=0):
    """Random float images in [0, 1], smoothed a little so they are not pure noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    return TF.gaussian_blur(x, [3, 3], [0.7, 0.7]).clamp(0, 1)


def uint8_images(n=8, c=3, h=28, w=28, seed=0):
    return (images(n, c, h, w, seed) * 255).round().to(torch.uint8)


def assert_close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


# ----------------------------------------------------------------- single ops


@pytest.mark.parametrize("c", [1, 3])
def test_hflip(c):
    x = images(c=c)
    mask = torch.tensor([True, False] * 4)
    y = ops.hflip(x, mask)
    for i in range(len(x)):
        assert torch.equal(y[i], TF.hflip(x[i]) if mask[i] else x[i])


@pytest.mark.parametrize("c,h,w,size", [(1, 28, 28, 28), (3, 28, 28, 28), (3, 20, 24, 24)])
def test_resized_crop_matches_torchvision(c, h, w, size):
    x = images(16, c, h, w)
    g = torch.Generator().manual_seed(1)
    boxes = sample_resized_crop(16, h, w, g)
    boxes[0] = torch.tensor([0, 0, h, w])  # full image
    boxes[1] = torch.tensor([h - 3, w - 2, 3, 2])  # tiny box in the corner
    boxes[2] = torch.tensor([0, 3, 1, 5])  # one-pixel-high box
    y = ops.resized_crop(x, boxes, size)
    assert y.shape == (16, c, size, size)
    for i, (t, l, bh, bw) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i], t, l, bh, bw, [size, size], antialias=True)
        assert_close(y[i], ref)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name,low,high", [
    ("brightness", 0.3, 1.7), ("contrast", 0.3, 1.7), ("saturation", 0.3, 1.7),
    ("hue", -0.5, 0.5)])
def test_colour_ops_match_torchvision(c, name, low, high):
    x = images(12, c)
    f = torch.linspace(low, high, 12)
    y = getattr(ops, f"adjust_{name}")(x, f)
    for i in range(len(x)):
        assert_close(y[i], getattr(TF, f"adjust_{name}")(x[i], float(f[i])))


def test_hsv_round_trip_on_edge_colours():
    """Grey pixels, primaries and secondaries (max == min, sector boundaries)."""
    cols = torch.tensor(list(itertools.product([0.0, 0.5, 1.0], repeat=3))).T  # (3, 27)
    x = cols.reshape(1, 3, 3, 9)
    for f in (-0.5, -0.1, 0.0, 1 / 6, 0.5):
        assert_close(ops.adjust_hue(x, torch.tensor([f])), TF.adjust_hue(x[0], f)[None])


@pytest.mark.parametrize("c", [1, 3])
def test_colour_jitter_order_matches_torchvision(c):
    perms = torch.tensor(list(itertools.permutations(range(4))))  # (24, 4)
    n = len(perms)
    x = images(n, c)
    g = torch.Generator().manual_seed(3)
    b, con, s, h, _ = sample_jitter(n, (0.5, 0.5, 0.5, 0.1), g)
    y = ops.color_jitter(x, b, con, s, h, perms)
    fns = [(TF.adjust_brightness, b), (TF.adjust_contrast, con),
           (TF.adjust_saturation, s), (TF.adjust_hue, h)]
    for i in range(n):
        ref = x[i]
        for j in perms[i].tolist():
            fn, factor = fns[j]
            ref = fn(ref, float(factor[i]))
        assert_close(y[i], ref)


def test_colour_jitter_order_matters_and_mask():
    x = images(2)
    one = torch.ones(2)
    args = (torch.full((2,), 1.5), torch.full((2,), 0.3), one, torch.full((2,), 0.2))
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    x2 = x[:1].expand(2, -1, -1, -1)
    y = ops.color_jitter(x2, *[a[:2] for a in args], order)
    assert (y[0] - y[1]).abs().max() > 1e-3
    mask = torch.tensor([True, False])
    y = ops.color_jitter(x, *args, order, mask=mask)
    assert torch.equal(y[1], x[1]) and not torch.equal(y[0], x[0])


@pytest.mark.parametrize("c", [1, 3])
def test_grayscale(c):
    x = images(6, c)
    mask = torch.tensor([True, False, True, True, False, False])
    y = ops.grayscale(x, mask)
    assert y.shape == x.shape
    for i in range(len(x)):
        ref = TF.rgb_to_grayscale(x[i], num_output_channels=c) if mask[i] else x[i]
        assert_close(y[i], ref)


@pytest.mark.parametrize("c", [1, 3])
def test_gaussian_blur_matches_torchvision(c):
    x = images(10, c, 28, 20)
    sigma = torch.linspace(0.1, 2.0, 10)
    y = ops.gaussian_blur(x, sigma, 9)
    for i in range(len(x)):
        assert_close(y[i], TF.gaussian_blur(x[i], [9, 9], [float(sigma[i])] * 2))


@pytest.mark.parametrize("c", [1, 3])
def test_sharpness_matches_torchvision(c):
    x = images(10, c)
    f = torch.linspace(0.0, 10.0, 10)
    y = ops.sharpness(x, f)
    for i in range(len(x)):
        assert_close(y[i], TF.adjust_sharpness(x[i], float(f[i])))


def test_equalize_grey_is_torchvision_equalize():
    u = uint8_images(8, 1)
    u[1] = 77  # one level: step == 0, identity
    u[2] = torch.where(u[2] > 128, 200, 10).to(torch.uint8)  # two levels
    u[3] = (u[3] // 64) * 10  # few, dark levels
    mask = torch.tensor([True] * 7 + [False])
    x = u.float() / 255
    y = ops.equalize_luma(x, mask)
    for i in range(7):
        assert_close(y[i], TF.equalize(u[i]).float() / 255, atol=1e-6)
    assert torch.equal(y[7], x[7])


def _equalize_rgb_reference(img):
    """Equalise round(255 Y) with torchvision, rebuild RGB from (Y', Cb, Cr)."""
    r, g, b = img
    y = 0.299 * r + 0.587 * g + 0.114 * b
    q = (y * 255).round().to(torch.uint8)
    ye = TF.equalize(q[None])[0].float() / 255
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    rgb = torch.stack([ye + 1.402 * cr, ye - 0.344136 * cb - 0.714136 * cr, ye + 1.772 * cb])
    return rgb.clamp(0, 1)


def test_equalize_rgb_matches_reference_and_pil():
    u = uint8_images(8, 3)
    x = u.float() / 255
    y = ops.equalize_luma(x, torch.ones(8, dtype=torch.bool))
    for i in range(len(x)):
        assert_close(y[i], _equalize_rgb_reference(x[i]))
        pil = Image.fromarray(u[i].permute(1, 2, 0).numpy(), "RGB").convert("YCbCr")
        yy, cb, cr = pil.split()
        ye = TF.equalize(torch.from_numpy(np.array(yy))[None])[0].numpy()
        back = Image.merge("YCbCr", [Image.fromarray(ye), cb, cr]).convert("RGB")
        ref = torch.from_numpy(np.array(back)).permute(2, 0, 1).float() / 255
        diff = (y[i] - ref).abs() * 255  # in uint8 levels
        assert diff.mean() < 4 and diff.max() < 16
    # the equalised luma of each image spans (nearly) the whole range
    luma = 0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]
    assert (luma.amax((1, 2)) - luma.amin((1, 2)) > 0.8).all()


# ------------------------------------------------------------------- samplers


def test_resized_crop_sampler_boxes_valid():
    g = torch.Generator().manual_seed(0)
    for h, w in [(28, 28), (20, 31)]:
        boxes = sample_resized_crop(4096, h, w, g)
        top, left, bh, bw = boxes.T
        assert boxes.dtype == torch.long
        assert (bh > 0).all() and (bw > 0).all() and (top >= 0).all() and (left >= 0).all()
        assert (top + bh <= h).all() and (left + bw <= w).all()
        assert len(set(map(tuple, boxes.tolist()))) > 500  # independent per sample
    # on a large image rounding is negligible: area and ratio in the sampled ranges
    top, left, bh, bw = sample_resized_crop(4096, 1000, 1000, g).T.double()
    area, ratio = bh * bw / 1e6, bw / bh
    assert area.min() >= 0.08 - 0.002 and area.max() <= 1.0
    assert ratio.min() >= 3 / 4 - 0.01 and ratio.max() <= 4 / 3 + 0.01
    assert area.min() < 0.1 and area.max() > 0.9  # covers the range


def test_resized_crop_sampler_fallback_is_centre_crop():
    for h, w in [(20, 40), (40, 20), (28, 28)]:
        boxes = sample_resized_crop(3, h, w, scale=(2.0, 3.0))  # never a valid try
        ref = T.RandomResizedCrop.get_params(torch.zeros(1, h, w), [2.0, 3.0], [3 / 4, 4 / 3])
        assert boxes.tolist() == [list(ref)] * 3


def test_jitter_sampler_ranges():
    b, c, s, h, order = sample_jitter(2000, (0.5, 0.2, 0.2, 0.1))
    assert 0.5 <= b.min() and b.max() <= 1.5 and 0.8 <= c.min() and c.max() <= 1.2
    assert -0.1 <= h.min() and h.max() <= 0.1 and h.min() < -0.09
    assert torch.equal(order.sort(1).values, torch.arange(4).expand(2000, 4))
    assert len(set(map(tuple, order.tolist()))) == 24


# ------------------------------------------------------------------ sequences


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("c", [1, 3])
def test_sequence_shape_range(name, c):
    x = images(32, c)
    aug = build_augmentation(name, 28)
    y = aug(x, torch.Generator().manual_seed(0))
    assert isinstance(aug, Augmentation)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    assert aug(x).shape == x.shape  # default generator


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_sequence_randomness(name):
    x = images(1, 3).expand(16, -1, -1, -1)
    aug = Augmentation(name, 28)
    g = torch.Generator().manual_seed(5)
    a, b = aug(x, g), aug(x, g)
    flat = a.flatten(1)
    dist = torch.cdist(flat, flat) + torch.eye(16)
    assert dist.min() > 1e-3  # every copy of the image got its own view
    assert not torch.equal(a, b)  # two calls: two different views
    again = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(again, a)  # same seed: same views


def test_sequences_differ_and_module_is_pure():
    x = images(8, 3)
    outs = [Augmentation(n, 28)(x, torch.Generator().manual_seed(0)) for n in AUGMENTATIONS]
    assert all(not torch.equal(p, q) for p, q in itertools.combinations(outs, 2))
    aug = Augmentation("novel", 28)
    assert not list(aug.parameters()) and not list(aug.buffers()) and not aug.state_dict()


@pytest.mark.parametrize("name, shape", [("natural", (64, 3, 28, 28)), ("volume", (16, 1, 16, 16, 16))])
def test_strength_scales_how_far_views_stray(name, shape):
    """--aug-strength: 1 is the published sequence; lower keeps views closer to their image, higher strays further
    (crop share and jitter/intensity ranges); the crop's smallest share follows 1 - s * (1 - published)."""
    coarse = torch.rand(*shape[:2], *[4] * (len(shape) - 2), generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bilinear" if len(shape) == 4 else "trilinear")
    distance = {}  # smooth images: a larger crop or shift moves a view further from its image
    for strength in (0.25, 1.0, 1.5):
        views = Augmentation(name, shape[-1], strength)(x, torch.Generator().manual_seed(1))
        distance[strength] = (views - x).abs().mean().item()
    assert distance[0.25] < distance[1.0] < distance[1.5], distance
    assert Augmentation(name, shape[-1], 1.0)(x, torch.Generator().manual_seed(1)).equal(
        Augmentation(name, shape[-1])(x, torch.Generator().manual_seed(1)))
    from common.augment.names import scaled_crop_scale
    assert scaled_crop_scale((0.08, 1.0), 0.25) == pytest.approx((0.77, 1.0))
    assert scaled_crop_scale((0.08, 1.0), 2.0) == (0.01, 1.0)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="natural.*simple.*novel.*greyscale"):
        Augmentation("strong", 28)
    with pytest.raises(ValueError):
        build_augmentation("", 28)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_sequence_on_cuda(name):
    x = images(64, 3).cuda()
    y = Augmentation(name, 28)(x, torch.Generator(device="cuda").manual_seed(0))
    assert y.device == x.device and y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
