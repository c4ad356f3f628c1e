"""SpH: Spherical Hashing (Heo, Lee, He, Chang & Yoon, CVPR 2012).

Each bit is a hypersphere (pivot c_k, radius r_k): bit k = +1 iff ||x - c_k|| <= r_k. Training balances the
bits and makes them pairwise independent: radii are the median distances (each sphere holds half the data),
and pivots move under pairwise forces f_ij = (o_ij - n/4) / (n/4) (c_i - c_j) / 2, o_ij = points inside both
spheres i and j, averaged over the bits, until mean |o_ij - n/4| <= eps_mean n/4 and std <= eps_std n/4.
Pivots start as means of a few random training points; training uses a random subset, as the paper does.
Ranked by plain Hamming distance by default, as third-party code evaluates it; ``distance=spherical`` ranks by
the paper's spherical Hamming distance |a xor b| / |a and b| instead (the evaluator's alternative distance).
"""

import dataclasses
from typing import Literal

import torch

from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting


class SphericalHashing(Method):
    name = "sph"
    paper = "Heo et al., CVPR 2012"
    supervision = "none"
    input = "vectors"
    smoke = {"max_iter": 5}

    @dataclasses.dataclass(frozen=True)
    class Config:
        n_train: int = 10000  # training subset, as the paper samples one for speed
        init_points: int = 5  # each pivot starts as the mean of this many random points
        eps_mean: float = setting(0.10, at_least=0)  # stop when mean |o_ij - n/4| <= 10% of n/4 (the paper's epsilon_m)
        eps_std: float = setting(0.15, at_least=0)  # ... and their std <= 15% of n/4 (epsilon_s)
        max_iter: int = 100  # safety bound on the force iterations
        distance: Literal["hamming", "spherical"] = "hamming"  # ranking distance (the paper proposes spherical)

    @property
    def ranking_distance(self) -> str:
        return self.config.distance

    def fit(self, x, y=None, context=FitContext()):
        g = self.generator()
        subset = torch.randperm(x.shape[0], generator=g)[: self.config.n_train].to(x.device)
        data = x[subset].to(torch.float64)
        n, k = data.shape[0], self.n_bits
        starts = torch.randint(0, n, (k, self.config.init_points), generator=g).to(x.device)
        centres = data[starts].mean(1)
        quarter = n / 4
        for _ in range(self.config.max_iter):
            dist = torch.cdist(data, centres)
            radii = dist.median(0).values
            inside = (dist <= radii).to(torch.float64)
            overlap = inside.T @ inside
            off = ~torch.eye(k, dtype=torch.bool, device=x.device)
            error = (overlap - quarter)[off]
            if k == 1 or (
                error.abs().mean() <= self.config.eps_mean * quarter and error.std() <= self.config.eps_std * quarter
            ):
                break
            alpha = torch.where(off, (overlap - quarter) / quarter / 2, 0.0)
            force = alpha.sum(1, keepdim=True) * centres - alpha @ centres  # sum_j alpha_ij (c_i - c_j)
            centres = centres + force / k
        self.centres_ = centres
        self.radii_ = torch.cdist(data, centres).median(0).values
        return self

    def encode(self, x):
        self.check_fitted("centres_")
        return binarize(self.radii_ - torch.cdist(x.to(torch.float64), self.centres_))


@hookimpl
def bench_methods():
    return [SphericalHashing]
