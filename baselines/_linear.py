"""What the linear-projection baselines (LSH, PCAH, ITQ) share: centring, PCA, and sign-of-projection codes."""

import torch

from bench.deep import sign
from bench.errors import BenchError
from bench.method import Method, binarize


class ProjectionHash(Method):
    """Codes b = sgn(P^T (x - mean)); a subclass's fit() sets ``mean_`` and ``projection_`` (d, n_bits)."""

    def encode(self, x):
        self.check_fitted("projection_")
        return binarize((x - self.mean_) @ self.projection_)


def centre(x: torch.Tensor):
    """(x - mean, mean): the hashing baselines centre with the training mean ("VERY IMPORTANT" in the reference
    MATLAB code), so that sign() splits every direction near its middle."""
    mean = x.mean(0, keepdim=True)
    return x - mean, mean


def pca_directions(x_centred: torch.Tensor, n_components: int, method_name: str) -> torch.Tensor:
    """(d, n_components) top eigenvectors of the covariance, largest eigenvalue first (float64 eigh for accuracy)."""
    d = x_centred.shape[1]
    if n_components > d:
        raise BenchError(f"{method_name} needs n_bits <= the input dimension ({d}); got {n_components}")
    x64 = x_centred.to(torch.float64)
    cov = x64.T @ x64 / max(1, x64.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vectors[:, -n_components:].flip(1).to(x_centred.dtype)


def itq_rotation(v: torch.Tensor, n_iter: int, generator: torch.Generator) -> torch.Tensor:
    """ITQ's orthogonal rotation R minimising ||sgn(V R) - V R||_F^2 (Gong & Lazebnik 2011): alternate
    B = sgn(V R) and the Procrustes solution of C = B^T V = U S W^T, R = W U^T, from a random orthogonal start.
    Runs n_iter + 1 updates, as the authors' MATLAB loop 0..n_iter. float64 (n, k) in, (k, k) out."""
    k = v.shape[1]
    rotation = torch.linalg.qr(torch.randn(k, k, generator=generator, dtype=torch.float64)).Q.to(v.device)
    for _ in range(n_iter + 1):
        b = sign(v @ rotation).to(torch.float64)
        u, _, wt = torch.linalg.svd(b.T @ v)
        rotation = wt.T @ u.T
    return rotation
