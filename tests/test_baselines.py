"""LSH, PCAH and ITQ against independent implementations on the digits data."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from baselines.itq import ITQ
from baselines.lsh import LSH
from baselines.pcah import PCAH
from bench.data import PROTOCOLS, load_split
from bench.metrics import evaluate

DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


@pytest.fixture(scope="module")
def split():
    return load_split(DIGITS, "pixels", "cpu")


def hamming(codes):
    c = codes.numpy().astype(np.int64)
    return (c.shape[1] - c @ c.T) // 2


def test_pcah_ranks_like_sklearn_pca(split):
    x = split.x_train.numpy().astype(np.float64)
    pca = PCA(n_components=16, svd_solver="full").fit(x)
    theirs = torch.from_numpy(np.where(pca.transform(split.x_query.numpy()) >= 0, 1, -1))
    ours = PCAH(16).fit(split.x_train).encode(split.x_query)
    # Each principal direction is defined up to its sign; flipping a bit everywhere keeps every distance.
    assert np.array_equal(hamming(ours), hamming(theirs))


def numpy_itq(x_train, x, n_bits, n_iter, seed):
    """A line-by-line transliteration of the authors' MATLAB ITQ (trainITQ/compressITQ)."""
    mean = x_train.mean(0)
    xc = x_train - mean
    eigval, eigvec = np.linalg.eigh(np.cov(xc, rowvar=False))
    pc = eigvec[:, ::-1][:, :n_bits]
    v = xc @ pc
    r = torch.linalg.qr(
        torch.randn(n_bits, n_bits, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ).Q.numpy()
    for _ in range(n_iter + 1):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        ub, _, uat = np.linalg.svd(b.T @ v)
        r = uat.T @ ub.T
    return np.where((x - mean) @ pc @ r >= 0, 1, -1)


@pytest.mark.parametrize("n_bits", [8, 32])
def test_itq_matches_the_reference_algorithm(split, n_bits):
    x_train = split.x_train.numpy().astype(np.float64)
    theirs = torch.from_numpy(numpy_itq(x_train, split.x_query.numpy().astype(np.float64), n_bits, 50, seed=4))
    ours = ITQ(n_bits, seed=4).fit(split.x_train).encode(split.x_query)
    agree = np.mean(hamming(ours) == hamming(theirs))
    assert agree > 0.99  # float32 vs float64 projections can flip a bit of a point lying on a hyperplane


def test_itq_rotation_lowers_the_quantization_loss(split):
    fitted = ITQ(32, seed=0).fit(split.x_train)
    v = (split.x_train - fitted.mean_) @ fitted.pca_
    loss = lambda r: float(((torch.where(v @ r >= 0, 1.0, -1.0) - v @ r) ** 2).sum())  # noqa: E731
    assert loss(fitted.rotation_) < 0.9 * loss(torch.eye(32))
    assert torch.allclose(fitted.rotation_ @ fitted.rotation_.T, torch.eye(32), atol=1e-4)


def test_lsh_is_the_sign_of_gaussian_projections(split):
    x = split.x_train
    w = torch.randn(x.shape[1], 24, generator=torch.Generator().manual_seed(9))
    expected = torch.where((split.x_query - x.mean(0)) @ w >= 0, 1, -1).to(torch.int8)
    assert torch.equal(LSH(24, seed=9).fit(x).encode(split.x_query), expected)


def test_digits_regression_values(split):
    """Hand-checked values on the embedded data set (ITQ > LSH at every length, PCAH falls with length)."""

    def score(cls, bits, seed=0):
        m = cls(bits, seed=seed).fit(split.x_train)
        return evaluate(m.encode(split.x_query), m.encode(split.x_database), split.y_query, split.y_database)["map"]

    assert score(PCAH, 16) > score(PCAH, 48)
    for bits in (16, 32):
        assert score(ITQ, bits) > max(score(LSH, bits, s) for s in range(3))
    assert score(ITQ, 16) == pytest.approx(0.6341, abs=2e-3)
