"""SpeH: Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008), as the authors' trainSH/compressSH.

Assume the data is uniform on a box after PCA: the eigenfunctions of the graph Laplacian are then separable
1-D functions cos(k pi (x_j - min_j) / (max_j - min_j)) with eigenvalue proportional to (k / range_j)^2.
Fit: PCA to min(n_bits, d) directions (projection without centring, as the code), the box [min - eps,
max + eps] per direction, enumerate modes k = 1.. per direction, keep the n_bits with the smallest eigenvalues
(after the constant one). Bit = sign of the eigenfunction. Deterministic.
"""

import dataclasses
import math

import torch

from baselines._linear import centre, pca_directions
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize


class SpectralHashing(Method):
    name = "speh"
    paper = "Weiss, Torralba & Fergus, NIPS 2008"
    supervision = "none"
    input = "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass  # nothing to set: the box and the modes follow from the data

    def fit(self, x, y=None, context=FitContext()):
        n_pca = min(self.n_bits, x.shape[1])
        centred, _ = centre(x)
        self.pca_ = pca_directions(centred, n_pca, self.name)
        z = (x @ self.pca_).to(torch.float64)
        eps = torch.finfo(torch.float64).eps
        self.low_ = z.min(0).values - eps
        high = z.max(0).values + eps
        width = high - self.low_
        # Modes per direction: enough to fill n_bits with the longest side, proportionally fewer on shorter ones.
        max_mode = torch.ceil((self.n_bits + 1) * width / width.max()).long().tolist()
        modes = [(0, 0)] + [(j, k) for j in range(n_pca) for k in range(1, max_mode[j])]
        frequency = [0.0 if k == 0 else (k * math.pi / float(width[j])) ** 2 for j, k in modes]
        order = sorted(range(len(modes)), key=lambda i: frequency[i])  # stable, as MATLAB's sort
        chosen = [modes[i] for i in order[1 : self.n_bits + 1]]
        self.dims_ = torch.tensor([j for j, _ in chosen], device=x.device)
        self.omegas_ = torch.tensor(
            [k * math.pi / float(width[j]) for j, k in chosen], dtype=torch.float64, device=x.device
        )
        return self

    def encode(self, x):
        self.check_fitted("omegas_")
        z = (x @ self.pca_).to(torch.float64) - self.low_
        return binarize(torch.sin(z[:, self.dims_] * self.omegas_ + math.pi / 2))


@hookimpl
def bench_methods():
    return [SpectralHashing]
