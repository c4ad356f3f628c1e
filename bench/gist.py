"""Our GIST descriptor (Oliva & Torralba, IJCV 2001), following the authors' LMgist.m step by step, in torch.

The 512-d GIST the hashing papers use for 32x32 CIFAR-10 images: 4 scales x 8 orientations x a 4x4 grid.
Per image:
1. grey = mean of the colour channels; resized (bilinear) to ``image_size`` if it is not already that size;
   intensities rescaled to [0, 255] (x - min, then 255 x / max): so GIST ignores brightness and contrast;
2. prefilter (``fc_prefilt`` = 4 cycles/image): log(1 + x), 5-pixel symmetric padding, whitening by
   subtracting a Gaussian low-pass, then local contrast normalisation x / (0.2 + local std);
3. symmetric padding by ``boundary`` pixels, then the energy |ifft(fft(x) G)| of each Gabor transfer function G
   of LMgist's createGabor bank (orientations per scale 8,8,8,8), cropped back;
4. mean of each response over a 4x4 grid of blocks -> 32 filters x 16 blocks = 512 values.
Features are ordered filter-major (filter 1's 16 blocks first); the order does not matter to any method here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GIST_PARAMS = {"orientations": (8, 8, 8, 8), "blocks": 4, "fc_prefilt": 4.0, "boundary": 32, "image_size": 32}


def _frequency_grid(n: int, device):
    """MATLAB's [fx, fy] = meshgrid(-n/2:n/2-1): fx varies along columns, fy along rows."""
    f = torch.arange(-n // 2, n // 2, dtype=torch.float64, device=device)
    return f[None, :].expand(n, n), f[:, None].expand(n, n)


def gabor_bank(orientations, n: int, device="cpu") -> torch.Tensor:
    """(n_filters, n, n) transfer functions in FFT layout (zero frequency at [0, 0]), as LMgist's createGabor."""
    fx, fy = _frequency_grid(n, device)
    fr = torch.fft.fftshift(torch.sqrt(fx**2 + fy**2))
    t = torch.fft.fftshift(torch.atan2(fy, fx))
    filters = []
    for scale, n_orient in enumerate(orientations):
        for j in range(n_orient):
            sigma_r, f0 = 0.35, 0.3 / 1.85**scale
            sigma_t, theta = 16 * n_orient**2 / 32**2, math.pi / n_orient * j
            tr = t + theta
            tr = tr + 2 * math.pi * (tr < -math.pi) - 2 * math.pi * (tr > math.pi)
            filters.append(torch.exp(-10 * sigma_r * (fr / n / f0 - 1) ** 2 - 2 * sigma_t * math.pi * tr**2))
    return torch.stack(filters).to(torch.float32)


def _pad_symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """MATLAB padarray(x, [p p], 'symmetric') on the last two dims (the edge pixel is repeated); p <= size."""
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)


def prefilter(x: torch.Tensor, fc: float) -> torch.Tensor:
    """LMgist's prefilt on (b, h, w) images in [0, 255]; square inputs."""
    w = 5
    s1 = fc / math.sqrt(math.log(2))
    x = _pad_symmetric(torch.log(x + 1), w)
    n = x.shape[-1]
    fx, fy = _frequency_grid(n, x.device)
    gf = torch.fft.fftshift(torch.exp(-(fx**2 + fy**2) / s1**2)).to(torch.float32)
    out = x - torch.fft.ifft2(torch.fft.fft2(x) * gf).real
    local_std = torch.sqrt(torch.fft.ifft2(torch.fft.fft2(out**2) * gf).abs())
    out = out / (0.2 + local_std)
    return out[..., w : n - w, w : n - w]


def gist(
    images: torch.Tensor,
    orientations=GIST_PARAMS["orientations"],
    blocks=GIST_PARAMS["blocks"],
    fc_prefilt=GIST_PARAMS["fc_prefilt"],
    boundary=GIST_PARAMS["boundary"],
    image_size=GIST_PARAMS["image_size"],
    batch_size: int = 256,
) -> torch.Tensor:
    """GIST of uint8 images (n, c, h, w) on their device, in batches: float32 (n, n_filters * blocks**2)."""
    n_pad = image_size + 2 * boundary
    bank = gabor_bank(orientations, n_pad, images.device)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(torch.float32).mean(1)
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(x[:, None], size=(image_size, image_size), mode="bilinear", antialias=True)[:, 0]
        x = x - x.amin((1, 2), keepdim=True)
        x = 255 * x / x.amax((1, 2), keepdim=True).clamp(min=1e-12)  # a flat image stays 0 (LMgist: NaN)
        x = prefilter(x, fc_prefilt)
        spectrum = torch.fft.fft2(_pad_symmetric(x, boundary))
        energy = torch.fft.ifft2(spectrum[:, None] * bank[None]).abs()
        energy = energy[..., boundary : boundary + image_size, boundary : boundary + image_size]
        out.append(F.avg_pool2d(energy, image_size // blocks).flatten(1))
    return torch.cat(out)
