"""Our GIST: shape, invariances, orientation selectivity, a fixed-image regression value, the cached view."""
import math

import pytest
import torch

from bench.data import PROTOCOLS, load_split
from bench.gist import gabor_bank, gist
from conftest import needs_cuda

N = 32


def pattern():
    """A fixed test image: two gratings (3 cycles along x, 5 along y)."""
    xs = torch.arange(N, dtype=torch.float32)
    img = 128 + 60 * torch.sin(2 * math.pi * 3 * xs / N)[None, :] + 40 * torch.cos(2 * math.pi * 5 * xs / N)[:, None]
    return img.round().to(torch.uint8)[None, None].expand(1, 3, N, N)


def stripes(vertical: bool):
    xs = torch.arange(N, dtype=torch.float32)
    img = (128 + 100 * torch.sin(2 * math.pi * 4 * xs / N))[None, :].expand(N, N)
    img = img if vertical else img.T
    return img.round().to(torch.uint8)[None, None].expand(1, 3, N, N)


def test_shape_and_regression_value():
    g = gist(pattern())
    assert g.shape == (1, 512) and torch.isfinite(g).all() and (g >= 0).all()
    # Values from this implementation (LMgist's parameters); a change here means the descriptor changed.
    assert g[0, [0, 100, 200, 300, 400, 511]].tolist() == pytest.approx(
        [0.07878, 0.041378, 0.288504, 0.003948, 0.00969, 0.022408], abs=2e-5)
    assert float(g.sum()) == pytest.approx(31.9666, abs=1e-3)


def test_brightness_and_contrast_do_not_matter():
    x = torch.randint(50, 150, (4, 3, N, N), dtype=torch.int32)
    assert torch.allclose(gist(x.to(torch.uint8)), gist((2 * x - 60).to(torch.uint8)), atol=1e-5)


def test_grey_is_the_mean_of_the_channels():
    x = torch.randint(0, 256, (3, 1, N, N), dtype=torch.uint8)
    assert torch.allclose(gist(x), gist(x.expand(3, 3, N, N)), atol=1e-6)


def test_each_scale_responds_most_to_the_orientation_of_the_stripes():
    per_orientation = lambda img: gist(img).view(4, 8, 16).mean(-1).argmax(-1).tolist()  # noqa: E731
    assert per_orientation(stripes(vertical=True)) == [0, 0, 0, 0]  # theta = 0 filters: frequency along x
    assert per_orientation(stripes(vertical=False)) == [4, 4, 4, 4]  # theta = pi/2 filters


def test_gabor_bank_tiles_the_spectrum():
    bank = gabor_bank((8, 8, 8, 8), 96)
    assert bank.shape == (32, 96, 96) and float(bank.max()) == pytest.approx(1.0, abs=0.05)
    f = torch.fft.fftfreq(96) * 96
    radius = torch.sqrt(f[None, :] ** 2 + f[:, None] ** 2)
    for k in range(32):
        peak = radius.flatten()[bank[k].flatten().argmax()]
        assert float(peak) == pytest.approx(96 * 0.3 / 1.85 ** (k // 8), abs=1.5)  # each scale's centre frequency


def test_other_sizes_are_resized_and_batches_change_nothing():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(gist(x, batch_size=2), gist(x), atol=1e-6)
    assert gist(x).shape == (5, 512)


def test_gist_view_is_cached_and_selectable(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path))
    usps = next(p for p in PROTOCOLS if p.name == "digits")
    split = load_split(usps, "gist", "cpu")
    assert split.x_query.shape == (100, 512) and split.x_database.shape == (1697, 512)
    assert len(list((tmp_path / "features").glob("load_digits-1797-gist-*.pt"))) == 1


@needs_cuda
def test_cuda_equals_cpu():
    x = torch.randint(0, 256, (6, 3, N, N), dtype=torch.uint8)
    assert torch.allclose(gist(x.cuda()).cpu(), gist(x), atol=1e-4)
