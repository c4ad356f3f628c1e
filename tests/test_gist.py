"""Our GIST: shape, invariances, orientation selectivity, a fixed-image regression value, the cached view."""

import dataclasses
import math

import pytest
import torch
from conftest import needs_cuda

import bench.gist
from bench.data import PROTOCOLS, Images, _gist_features, load_digits, load_split
from bench.gist import gabor_bank, gist

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
    # Values from this implementation (LMgist's parameters): a change here means the descriptor changed. The
    # relative tolerance admits float32 FFT rounding of other libraries and devices (~1e-6), not a changed filter.
    assert g[0, [0, 100, 200, 300, 400, 511]].tolist() == pytest.approx(
        [0.0787804, 0.0413783, 0.288504, 0.00394802, 0.00968982, 0.0224082], rel=1e-3
    )
    assert float(g.sum()) == pytest.approx(31.9666, rel=1e-4)


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


def some_digits(root, download) -> Images:
    """The first 200 of scikit-learn's digits: a dataset whose GIST a test computes in a second."""
    every = load_digits(root, download)
    return Images(every.x[:200], every.y[:200])


SOME_DIGITS = dataclasses.replace(
    next(p for p in PROTOCOLS if p.name == "digits"), name="some-digits", loader=some_digits, query_per_class=2
)


def test_gist_view_is_the_gist_of_each_image_computed_once_and_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path))
    split = load_split(SOME_DIGITS, "gist", "cpu")
    assert split.x_query.shape == (20, 512) and split.x_database.shape == (180, 512)
    images = torch.from_numpy(some_digits(None, False).x)
    assert torch.allclose(split.x_query, gist(images[split.indices["query"]]), atol=1e-6)
    [path] = (tmp_path / "features").glob("some_digits-200-gist-*.pt")

    def no_recomputing(*args, **kwargs):
        raise AssertionError("GIST computed again although it is cached on disk")

    monkeypatch.setattr(bench.gist, "gist", no_recomputing)
    from_disk = _gist_features.__wrapped__(SOME_DIGITS, str(tmp_path), False, "cpu")  # past the in-process cache
    assert torch.equal(from_disk, torch.load(path)) and from_disk.shape == (200, 512)


@needs_cuda
def test_cuda_equals_cpu():
    x = torch.randint(0, 256, (6, 3, N, N), dtype=torch.uint8)
    assert torch.allclose(gist(x.cuda()).cpu(), gist(x), atol=1e-4)
