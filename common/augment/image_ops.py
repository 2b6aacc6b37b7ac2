"""Batched, per-sample image operations on (N, C, H, W) float tensors in [0, 1].

Every op takes explicit per-sample parameter tensors and matches the corresponding
``torchvision.transforms.functional`` op on float images (see tests/common/augment/test_augment.py).
C is 1 (grey) or 3 (RGB); colour-only ops are identities on grey images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _col(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting against images."""
    return v.view(-1, 1, 1, 1)


def _select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample choice: a where mask (N,) else b."""
    return torch.where(_col(mask), a, b)


def _blend(a: Tensor, b: Tensor, ratio: Tensor) -> Tensor:
    """torchvision ``_blend`` with a per-sample ratio (N,)."""
    r = _col(ratio).to(a.dtype)
    return (r * a + (1.0 - r) * b).clamp(0.0, 1.0)


# ----------------------------------------------------------------- geometry


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Flip the samples where mask (N,) bool is set."""
    return _select(mask, x.flip(-1), x)


def resized_crop(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop boxes (N, 4) = top, left, height, width and resize each to (size, size).

    Bilinear, source coordinates as ``interpolate(align_corners=False)`` clamped to the
    box; equals torchvision ``resized_crop(..., antialias=True)`` for boxes no larger
    than the output (upsampling). Larger boxes are sampled without antialiasing.
    """
    h, w = x.shape[-2:]
    b = boxes.to(device=x.device, dtype=torch.float32)
    top, left, bh, bw = b.unbind(1)  # (N,) each
    o = torch.arange(size, device=x.device, dtype=torch.float32) + 0.5  # (S,)

    def axis(start: Tensor, extent: Tensor, full: int) -> Tensor:  # -> (N, S) in [-1, 1]
        src = o * (extent / size)[:, None] - 0.5
        src = torch.minimum(src.clamp(min=0.0), (extent - 1)[:, None])
        return (start[:, None] + src) * (2.0 / max(full - 1, 1)) - 1.0

    gy, gx = axis(top, bh, h), axis(left, bw, w)  # (N, S)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)  # (N, C, S, S)


# ------------------------------------------------------------------- colour


def luma_tv(x: Tensor) -> Tensor:
    """torchvision rgb_to_grayscale weights: (N, 3, H, W) -> (N, 1, H, W); grey passes."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (_col(factor).to(x.dtype) * x).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = luma_tv(x).mean(dim=(-3, -2, -1), keepdim=True)  # (N, 1, 1, 1)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else _blend(x, luma_tv(x), factor)


def rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """torchvision ``_rgb2hsv`` batched: (N, 3, H, W) -> h, s, v each (N, H, W) in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    cr = maxc - minc
    tiny = torch.finfo(x.dtype).tiny  # stands in for torchvision's "1 where max == min"
    s = cr / maxc.clamp(min=tiny)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / cr.clamp(min=tiny).unsqueeze(1)).unbind(1)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Inverse of ``rgb_to_hsv``: h, s, v (N, H, W) -> (N, 3, H, W).

    Closed form c = v (1 - s clamp(min(k, 4 - k), 0, 1)), k = (n + 6h) mod 6, n = 5, 3, 1;
    equal to torchvision's sector table p, q, t up to float rounding.
    """
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)  # (N, 3, H, W)
    weight = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    v = v.unsqueeze(1)
    return v - (v * s.unsqueeze(1)) * weight


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate hue by factor (N,) in [-0.5, 0.5]; identity on grey images."""
    if x.shape[1] == 1:
        return x
    h, s, v = rgb_to_hsv(x)
    h = (h + factor.to(x.dtype).view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(h, s, v)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor,
                 hue: Tensor, order: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ColorJitter with per-sample factors (N,) and op order (N, 4).

    order[n] is a permutation of 0..3 = brightness, contrast, saturation, hue; at stage
    k each sample gets op order[n, k] (ops run on the sub-batch that has them).
    Samples with mask (N,) False are unchanged.
    """
    factors = (brightness, contrast, saturation, hue)
    n_ops = 4 if x.shape[1] == 3 else 2  # saturation and hue are no-ops on grey
    active = torch.ones_like(order[:, 0], dtype=torch.bool) if mask is None else mask
    out = x.clone()
    for k in range(4):
        for j in range(n_ops):
            idx = ((order[:, k] == j) & active).nonzero().squeeze(1)  # (M,)
            if idx.numel():
                out[idx] = _JITTER_OPS[j](out[idx], factors[j][idx])
    return out


def grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """torchvision rgb_to_grayscale(num_output_channels=3) where mask (N,) is set."""
    if x.shape[1] == 1:
        return x
    return _select(mask, luma_tv(x).expand_as(x), x)


# ------------------------------------------------------------------ filters


def gaussian_kernels(sigma: Tensor, kernel_size: int, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian kernels, sigma (N,) -> (N, kernel_size)."""
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, dtype=dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (t / sigma.to(dtype)[:, None]).pow(2))
    return pdf / pdf.sum(1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int = 9) -> Tensor:
    """Separable per-sample Gaussian blur with reflect padding (one grouped conv per axis)."""
    n, c, h, w = x.shape
    k = gaussian_kernels(sigma, kernel_size, x.dtype).repeat_interleave(c, 0)  # (N*C, K)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)  # along W
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)  # along H
    return y.view(n, c, h, w)


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision adjust_sharpness with a per-sample factor (N,).

    The degenerate image is the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 on the interior
    (computed as box sum + 4 centre), border pixels kept.
    """
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:
        return x
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]  # (N, C, H-2, W)
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (N, C, H-2, W-2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (box + 4.0 * x[..., 1:-1, 1:-1]) / 13.0
    return _blend(x, degenerate, factor)


# ------------------------------------------------------------- equalisation


def equalize_levels(q: Tensor) -> Tensor:
    """torchvision ``equalize`` per row: q (N, P) long levels 0..255 -> (N, P) long."""
    n = q.shape[0]
    hist = torch.zeros(n, 256, dtype=torch.long, device=q.device)
    hist.scatter_add_(1, q, torch.ones_like(q))  # (N, 256)
    last = hist.gather(1, q.amax(1, keepdim=True))  # count of the last non-zero bin
    step = (q.shape[1] - last) // 255  # (N, 1)
    lut = (hist.cumsum(1) + step // 2) // step.clamp(min=1)
    lut = torch.cat((torch.zeros_like(lut[:, :1]), lut[:, :-1]), 1).clamp(0, 255)
    identity = torch.arange(256, device=q.device).expand(n, 256)
    return torch.where(step > 0, lut, identity).gather(1, q)


def equalize_luma(x: Tensor, mask: Tensor) -> Tensor:
    """Histogram-equalise Y of PIL's YCbCr (Y quantised to 0..255), keep Cb/Cr.

    Grey input: exactly ``equalize`` of round(255 x) / 255. Unmasked samples unchanged.
    """
    n, c, h, w = x.shape
    if c == 1:
        y = x
    else:
        r, g, b = x.unbind(1)
        y = (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)  # (N, 1, H, W)
    q = (y * 255.0).round().clamp(0, 255).long().view(n, -1)
    y_eq = equalize_levels(q).view(n, 1, h, w).to(x.dtype) / 255.0
    if c == 1:
        return _select(mask, y_eq, x)
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b  # Cb - 0.5, (N, H, W)
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b  # Cr - 0.5
    y_eq = y_eq.squeeze(1)
    rgb = torch.stack((y_eq + 1.402 * cr, y_eq - 0.344136 * cb - 0.714136 * cr,
                       y_eq + 1.772 * cb), 1)
    return _select(mask, rgb.clamp(0.0, 1.0), x)
