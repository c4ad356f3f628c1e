"""LSH: random-projection locality-sensitive hashing (Charikar 2002; Gionis, Indyk & Motwani, VLDB 1999).

Each bit is the sign of a projection of the centred input on a Gaussian random direction,
b = sgn(W^T (x - mean)), W ~ N(0, 1) of shape (d, n_bits), as in the reference MATLAB baselines (HABIR).
It learns nothing but the mean, so results vary with the seed: report the mean over seeds.
"""

import dataclasses

import torch

from baselines._linear import ProjectionHash, centre
from bench.hookspecs import hookimpl
from bench.method import FitContext


class LSH(ProjectionHash):
    name = "lsh"
    paper = "Charikar, STOC 2002 (random projections)"
    supervision = "none"
    input = "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass  # nothing to set: the projections are N(0, 1) and the seed picks them

    def fit(self, x, y=None, context=FitContext()):
        _, self.mean_ = centre(x)
        w = torch.randn(x.shape[1], self.n_bits, generator=self.generator(), dtype=torch.float32)
        self.projection_ = w.to(x.device)
        return self


@hookimpl
def bench_methods():
    return [LSH]
