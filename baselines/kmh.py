"""KMH: K-means Hashing (He, Wen & Sun, CVPR 2013), after the authors' demo code.

The code is a product of M = n_bits / b subspace codes of b bits. Per subspace, 2^b centres indexed by b-bit
codes are learned by affinity-preserving k-means: alternate (E) assign each point to its nearest centre and
(M) minimise E_quan + 2 lambda E_aff over the centres, where
  E_quan = mean ||x - c(x)||^2,   E_aff = sum_ij (n_i n_j / n^2) (||c_i - c_j|| - d_h(i, j))^2,
  d_h(i, j) = 2 s sqrt(Hamming(i, j)),
so that Euclidean distances between centres follow the Hamming distances of their indices. Subspaces come from
a PCA of the whole data whose eigen-directions are dealt to subspaces balancing the products of their
eigenvalues (OPQ's parametric solution); each subspace starts as PCA hashing (centres at +-s on its first b
axes, s fitted to the data). A point's code: the index bits of its nearest centre in each subspace.
"""

import dataclasses
import itertools

import torch

from baselines._linear import centre, pca_directions
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, setting


def balanced_partition(eigenvalues: torch.Tensor, n_parts: int) -> list[list[int]]:
    """Deal eigen-directions (largest first) to the part with the smallest sum of log-eigenvalues that still
    has room, so every part gets d / n_parts directions and a similar share of the variance."""
    size = len(eigenvalues) // n_parts
    logs = torch.log(eigenvalues.clamp(min=1e-12)).tolist()
    parts, totals = [[] for _ in range(n_parts)], [0.0] * n_parts
    for i in range(len(eigenvalues)):
        open_parts = [p for p in range(n_parts) if len(parts[p]) < size]
        p = min(open_parts, key=lambda q: totals[q])
        parts[p].append(i)
        totals[p] += logs[i]
    return parts


class KMH(Method):
    name = "kmh"
    paper = "He, Wen & Sun, CVPR 2013"
    supervision = "none"
    input = "vectors"
    smoke = {"n_iter": 3}

    @dataclasses.dataclass(frozen=True)
    class Config:
        bits_per_subspace: int = 4  # b; the authors recommend 4 (or 8) for GIST-like features
        n_iter: int = 50  # "50 to 200, usually 50 is enough" (demo)
        lam: float = setting(10.0, at_least=0)  # weight of the affinity error (demo)

    def fit(self, x, y=None, context=FitContext()):
        b = self.config.bits_per_subspace
        if self.n_bits % b:
            raise BenchError(f"{self.name}: n_bits ({self.n_bits}) must be a multiple of bits_per_subspace ({b})")
        n_sub = self.n_bits // b
        d = x.shape[1] - x.shape[1] % n_sub  # drop the weakest directions so that d divides evenly
        if d // n_sub < b:
            raise BenchError(f"{self.name}: {self.n_bits} bits need at least {n_sub * b} input dimensions")
        centred, self.mean_ = centre(x)
        directions = pca_directions(centred, d, self.name).to(torch.float64)
        z = centred.to(torch.float64) @ directions
        variances = z.var(0)
        parts = balanced_partition(variances, n_sub)
        self.rotations_ = [directions[:, p] for p in parts]
        codes = torch.tensor(list(itertools.product([0, 1], repeat=b)), dtype=torch.float64, device=x.device)
        hamming = torch.cdist(codes, codes, p=1)
        self.centres_ = [self._fit_subspace(z[:, p], codes, hamming) for p in parts]
        self.index_bits_ = codes
        return self

    def _fit_subspace(self, z, codes, hamming):
        b, n = codes.shape[1], z.shape[0]
        s = float(z[:, :b].abs().mean())  # PCA-hashing start: centres at +-s on the first b axes
        centres = torch.zeros(codes.shape[0], z.shape[1], dtype=torch.float64, device=z.device)
        centres[:, :b] = s * (2 * codes - 1)
        target = 2 * s * hamming.sqrt()
        for _ in range(self.config.n_iter):
            assign = torch.cdist(z, centres).argmin(1)  # E-step
            counts = torch.bincount(assign, minlength=len(centres)).to(torch.float64)
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            weights = counts[:, None] * counts[None, :] / n**2
            centres = centres.clone().requires_grad_(True)
            optimiser = torch.optim.LBFGS([centres], max_iter=20, line_search_fn="strong_wolfe")

            def cost():  # LBFGS calls it within this iteration, on this iteration's values
                optimiser.zero_grad()
                # mean ||x - c(x)||^2 written with cluster sums (the ||x||^2 part is constant)
                quan = ((counts * (centres**2).sum(1)).sum() - 2 * (sums * centres).sum()) / n
                gaps = torch.cdist(centres, centres) + torch.eye(len(counts), dtype=torch.float64, device=z.device)
                aff = (weights * (gaps - torch.eye(len(counts), device=z.device) - target) ** 2).sum()
                loss = quan + 2 * self.config.lam * aff
                loss.backward()
                return loss

            optimiser.step(cost)
            centres = centres.detach()
            if not torch.isfinite(centres).all():  # codes come from an argmin, which would hide a NaN
                raise BenchError(f"{self.name}: the centre optimisation diverged (non-finite centres)")
        return centres

    def encode(self, x):
        self.check_fitted("centres_")
        z = (x - self.mean_).to(torch.float64)
        bits = [self.index_bits_[torch.cdist(z @ r, c).argmin(1)] for r, c in zip(self.rotations_, self.centres_)]
        return (torch.cat(bits, 1) * 2 - 1).to(torch.int8)


@hookimpl
def bench_methods():
    return [KMH]
